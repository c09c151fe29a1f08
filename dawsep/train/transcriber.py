"""Piano transcriber: an Onsets-and-Frames-style network, waveform in, key posteriors out.

``PianoTranscriber(audio)`` maps mono audio ``(B, T)`` at ``sample_rate`` to five tensors in
[0, 1]: ``onset``, ``frame``, ``offset``, ``velocity`` ``(B, F, 88)`` and ``pedal`` ``(B, F, 1)``,
with ``F = T // hop`` (``T >= hop``); frame ``f`` covers samples ``[f*hop, (f+1)*hop)``, exactly
as ``TranscriptionDataset.frame_labels`` labels them. The forward is pure (no randomness in eval,
no state), with dynamic batch and length, so it exports to ONNX as is (``dawsep/train/export/transcriber.py``).

Choices, and why:

* **16 kHz, hop 320 (20 ms, 50 frames/s).** 8 kHz of bandwidth holds every piano fundamental
  (A0 27.5 Hz .. C8 4186 Hz) and the first partials that identify the top octave; 16 kHz is the
  rate Onsets and Frames used. 20 ms frames put the onset quantisation error at <= 10 ms, well
  inside the 50 ms note-F1 tolerance, at 2/3 of the frame rate (and sequential GRU steps) of a
  16 ms hop. 320 divides 16000, so 1 s is exactly 50 frames. The runtime resamples to this rate.
* **Log-mel front-end inside the graph**: a 2048-point Hann STFT (7.8 Hz bins, so the bass
  region is resolved) -> power -> 229 mel bands, 30 Hz - 8 kHz (O&F's setting) -> ``log(x + 1e-8)``
  (an -80 dB floor under a full-scale sine) -> per-band BatchNorm. The STFT is the project's
  ``dawsep.train.stft.STFT``: in ONNX a two-stage matmul DFT (opset 17, legacy exporter, see
  ENVIRONMENT.md), in eager torch ``torch.stft`` (an FFT, far cheaper for CPU training); the two
  agree to float rounding, and the export parity test pins them together.
* **Shared acoustic trunk** (3 conv layers + a dense projection: a slimmer O&F acoustic stack,
  once instead of per head, since it is most of the training cost on CPU), then **bidirectional
  GRUs over time** per head: onset, offset, frame (fed the trunk plus the *detached* onset and
  offset posteriors, as in O&F, so frame errors do not push the onset detector around), and one
  small GRU shared by velocity and pedal (both are loudness/sustain cues). GRU rather than LSTM:
  3/4 of the weights and time. Every head's linear read-out also sees its GRU's input (a skip
  connection; see ``PianoTranscriber.__init__`` for the measurement that asked for it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from dawsep.train.stft import STFT

N_KEYS = 88
MIN_PITCH = 21  # A0; key k is MIDI pitch MIN_PITCH + k
OUTPUTS = ("onset", "frame", "offset", "velocity", "pedal")


@dataclass(frozen=True)
class TranscriberConfig:
    """Everything that defines the architecture (stored in checkpoints and ONNX metadata)."""

    sample_rate: int = 16000
    hop: int = 320
    n_fft: int = 2048
    n_mels: int = 229
    fmin: float = 30.0
    fmax: float = 8000.0
    conv1: int = 16          # channels of the first two 3x3 convs
    conv2: int = 32          # channels of the third
    d_model: int = 256       # trunk output per frame
    rnn: int = 128           # hidden size per direction: onset, offset, frame GRUs
    rnn_aux: int = 64        # hidden size per direction: the velocity + pedal GRU
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TranscriberConfig":
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise ValueError(f"unknown TranscriberConfig keys {sorted(bad)}; allowed: {sorted(known)}")
        return cls(**d)

    def n_frames(self, samples: int) -> int:
        """Frames the model emits for ``samples`` input samples: ``samples // hop``."""
        return int(samples) // self.hop


# ---------------------------------------------------------------- front-end ----

def _hz_to_mel(f):
    """Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    return np.where(f < 1000.0, f * 3.0 / 200.0,
                    15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) * 27.0 / np.log(6.4))


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular filters with peak 1, ``(n_mels, n_fft // 2 + 1)`` float64.

    Peak-1 rather than area-normalised: after ``log`` a per-band scale is only an offset that the
    input BatchNorm removes, and peak-1 keeps the ``1e-8`` floor at the same level in every band.
    """
    fft_f = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = mel_f[:-2, None], mel_f[1:-1, None], mel_f[2:, None]
    w = np.minimum((fft_f[None] - lo) / (mid - lo), (hi - fft_f[None]) / (hi - mid))
    return np.maximum(w, 0.0)


def framed_power(stft: STFT, audio: torch.Tensor, hop: int, k0: int, scale: float) -> torch.Tensor:
    """``(B, T)`` -> ``(B, T // hop, K - k0)`` power of STFT bins ``k0..``, frame ``f`` centred on
    sample ``f*hop + hop/2`` over zero padding (the framing every transcriber front-end shares)."""
    # STFT centres its frame j on input sample j*hop; after hop/2 leading zeros, its frame
    # f+1 is centred on our f*hop + hop/2.
    x = nn.functional.pad(audio, (hop // 2, 0))[:, None]
    X = stft(x)[:, 0, :, k0:, 1: 1 + audio.shape[-1] // hop] * scale  # (B, 2, K, F)
    return X.pow(2).sum(1).transpose(1, 2)


class LogMel(nn.Module):
    """``(B, T)`` audio -> ``(B, F, n_mels)`` log-mel power, ``F = T // hop`` (``T >= hop``).

    The window of frame ``f`` is centred on the middle of its hop, sample ``f*hop + hop/2``, over
    zero padding (not reflection: any length >= hop works, and a chunk's edge frames only see
    silence, which overlap-discard drops anyway). The STFT is ``dawsep.train.stft.STFT``: FFT in
    eager torch, a two-stage matmul DFT with tables generated in-graph when traced for ONNX (a stored table
    would be 2*K*n_fft floats, 17 MB, twice the rest of the model).
    """

    def __init__(self, cfg: TranscriberConfig):
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop
        if cfg.hop % 2 or not 0 < cfg.hop <= cfg.n_fft // 2:
            raise ValueError(f"hop must be even and at most n_fft/2 (got hop {cfg.hop}, n_fft {cfg.n_fft})")
        mel = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        if (mel.sum(axis=1) == 0).any():
            raise ValueError("a mel band covers no FFT bin: use fewer bands or a larger n_fft")
        used = np.flatnonzero(mel.sum(axis=0) > 0)
        self.k0, self.k1 = int(used[0]), int(used[-1]) + 1  # only the bins some band uses
        # Unnormalised Hann DFT / sum(window): a sine of amplitude a has |X| = a/2 at any n_fft,
        # so the log floor means the same level in every configuration.
        self.scale = 2.0 / cfg.n_fft
        self.stft = STFT(cfg.n_fft, cfg.hop, n_bins=self.k1)
        self.register_buffer("mel", torch.tensor(mel[:, self.k0:self.k1].T, dtype=torch.float32),
                             persistent=False)  # (K, n_mels)

    def power(self, audio: torch.Tensor, use_fft: bool | None = None) -> torch.Tensor:
        """``(B, T)`` -> ``(B, F, K)`` STFT power of the bins the mel bands use.

        ``use_fft`` None: FFT in eager torch, matmul DFT when exporting (True/False force one).
        """
        stft = self.stft if use_fft is None else STFT(self.n_fft, self.hop, n_bins=self.k1, use_fft=use_fft)
        return framed_power(stft, audio, self.hop, self.k0, self.scale)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.log(self.power(audio) @ self.mel + 1e-8)


# ------------------------------------------------------------------- model ----

class _BiGRU(nn.Module):
    """``(B, F, in)`` -> ``(B, F, 2*hidden)``."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.rnn = nn.GRU(d_in, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class PianoTranscriber(nn.Module):
    """Onsets-and-Frames-style transcriber; see the module docstring.

    ``forward(audio (B, T))`` -> ``(onset, frame, offset, velocity, pedal)`` probabilities,
    ``(B, F, 88)`` x4 and ``(B, F, 1)``, ``F = T // cfg.hop``. ``logits(audio)`` gives the same as
    a dict of pre-sigmoid tensors, for the losses.
    """

    def __init__(self, cfg: TranscriberConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TranscriberConfig()
        c1, c2, m = cfg.conv1, cfg.conv2, cfg.n_mels
        self.frontend = LogMel(cfg)
        self.norm = nn.BatchNorm1d(m)

        def block(ci, co):
            return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]

        # Pooling only along frequency, so every frame keeps its own output. Pooling after the
        # first conv (O&F pools after the second) and 16/32 channels: the trunk is most of a
        # training step on CPU, and this cut it ~2.5x (measured, batch 8 x 5 s, 2 threads).
        self.conv = nn.Sequential(*block(1, c1), nn.MaxPool2d((1, 2)), *block(c1, c1), *block(c1, c2),
                                  nn.MaxPool2d((1, 2)), nn.Dropout(cfg.dropout))
        self.proj = nn.Sequential(nn.Linear(c2 * (m // 4), cfg.d_model), nn.ReLU(), nn.Dropout(cfg.dropout))
        d, h, ha = cfg.d_model, cfg.rnn, cfg.rnn_aux
        # Each head reads its GRU's output *and* the GRU's input (a skip): without the skip the
        # heads sat at the per-key prior for 3000+ steps (measured: frame F1 0.00 at step 3000),
        # while a linear read-out of the same trunk learns frames within 200 steps; with it the
        # GRUs only have to add temporal context.
        self.onset_rnn, self.onset_fc = _BiGRU(d, h), nn.Linear(d + 2 * h, N_KEYS)
        self.offset_rnn, self.offset_fc = _BiGRU(d, h), nn.Linear(d + 2 * h, N_KEYS)
        self.frame_rnn, self.frame_fc = _BiGRU(d + 2 * N_KEYS, h), nn.Linear(d + 2 * N_KEYS + 2 * h, N_KEYS)
        self.aux_rnn = _BiGRU(d, ha)
        self.velocity_fc, self.pedal_fc = nn.Linear(d + 2 * ha, N_KEYS), nn.Linear(d + 2 * ha, 1)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, F, d_model)`` acoustic features."""
        x = self.norm(self.frontend(audio).transpose(1, 2))  # (B, M, F)
        x = self.conv(x.transpose(1, 2)[:, None])              # (B, C, F, M/4)
        b, c, f, m = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(b, f, c * m))

    def logits(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-sigmoid outputs, keyed by ``OUTPUTS``."""
        x = self.features(audio)

        def skip(rnn, inp):
            return torch.cat([inp, rnn(inp)], dim=-1)

        onset = self.onset_fc(skip(self.onset_rnn, x))
        offset = self.offset_fc(skip(self.offset_rnn, x))
        # O&F: the frame stack sees onset/offset posteriors but does not train them.
        cond = torch.cat([x, torch.sigmoid(onset).detach(), torch.sigmoid(offset).detach()], dim=-1)
        frame = self.frame_fc(skip(self.frame_rnn, cond))
        # Velocity and pedal read the trunk but do not train it: with their gradients (the pedal
        # BCE is ~50x the note losses) in the shared trunk, Adam's per-weight scale followed them and
        # the note heads stayed at the prior (measured: frame loss flat for 450 steps with all heads,
        # falling from step 250 with the frame head alone).
        aux = skip(self.aux_rnn, x.detach())
        return {"onset": onset, "frame": frame, "offset": offset,
                "velocity": self.velocity_fc(aux), "pedal": self.pedal_fc(aux)}

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lg = self.logits(audio)
        return tuple(torch.sigmoid(lg[k]) for k in OUTPUTS)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_second(cfg: TranscriberConfig) -> float:
    """Rough multiply-accumulates per second of audio in the ONNX graph (for sizing only)."""
    fps = cfg.sample_rate / cfg.hop
    k = cfg.n_fft // 2 + 1
    m, c1, c2 = cfg.n_mels, cfg.conv1, cfg.conv2
    conv = 9 * (c1 * m + (c1 * c1 + c1 * c2) * (m // 2))
    gru = lambda i, h: 2 * 3 * (i + h) * h  # noqa: E731
    rnn = 2 * gru(cfg.d_model, cfg.rnn) + gru(cfg.d_model + 2 * N_KEYS, cfg.rnn) + gru(cfg.d_model, cfg.rnn_aux)
    d, h, ha = cfg.d_model, cfg.rnn, cfg.rnn_aux
    heads = N_KEYS * (2 * (d + 2 * h) + (d + 2 * N_KEYS + 2 * h)) + (N_KEYS + 1) * (d + 2 * ha)
    per_frame = 2 * k * cfg.n_fft + k * m + conv + c2 * (m // 4) * cfg.d_model + rnn + heads
    return fps * per_frame


__all__ = ["MIN_PITCH", "N_KEYS", "OUTPUTS", "LogMel", "PianoTranscriber", "TranscriberConfig",
           "count_parameters", "macs_per_second", "mel_filters"]
