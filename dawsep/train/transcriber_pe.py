"""A pitch-equivariant piano transcriber: log-frequency front end, harmonic stacking, convolutions
shared across pitch, and one small recurrent network run on every key with shared weights.

Why this shape (issue 19): pitch is a shift along log-frequency, so a model whose weights are
shared across that axis learns a note once instead of 88 times (Basic Pitch reaches note F1 0.87 on
unseen pianos with 17 k parameters this way). On a 2-core CPU that matters more than capacity.

``PitchTranscriber(audio)`` has the contract of ``transcriber.PianoTranscriber``: mono audio
``(B, T)`` at ``sample_rate`` -> ``onset``, ``frame``, ``offset``, ``velocity`` ``(B, F, 88)`` and
``pedal`` ``(B, F, 1)`` in [0, 1], ``F = T // hop``, frame ``f`` covering samples
``[f*hop, (f+1)*hop)``; pure forward, dynamic batch and length (exports to ONNX as is).

Layers:

* **Log-frequency spectrum in the graph**: the shared STFT (``transcriber.framed_power``), then a
  fixed filterbank onto ``bins_per_semitone`` bins per semitone from ``low_margin`` semitones
  below A0 to ``high_margin`` above C8 (interpolated where FFT bins are coarser than the grid,
  triangular averages where they are finer; zero above Nyquist) -> ``log(power + 1e-8)`` ->
  one BatchNorm *scalar* (per-bin statistics would break the equivariance).
* **Harmonic stacking** (HCQT): channel ``h`` is the spectrum shifted down by
  ``round(12 * log2(h) * bins_per_semitone)`` bins, so at every bin the convolutions see the
  energy at that pitch's sub-harmonic and first harmonics side by side.
* **Convolutions shared across pitch**: a 3x3 layer on the fine grid, a stride-``bins_per_semitone``
  layer to one bin per semitone, an octave-wide (``octave_kernel`` semitones) layer for chord and
  partial context, a 3-frame layer. No pooling in time: every frame keeps its output.
* **Per-key temporal model**: every key's feature sequence runs through one stack of residual
  dilated convolutions along time (weights shared by every key; +-1.2 s of context), and heads
  shared by every key read its output and input. The frame stack also sees the (detached)
  onset/offset posteriors, as in Onsets and Frames. A per-key BiGRU did the same job at 4x the CPU
  time of a training step (measured: 704 sequences of 250 frames are sequential work for a GRU).
* **Harmonic mixing** (``harmonic_mixing``, grown in session 11): after the note stack each key
  also reads the note features of the keys 12, 19 and 24 semitones away, both ways.
* **Pedal**: mean and max over keys of the key features -> a small BiGRU -> one logit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from dawsep.train.stft import STFT
from dawsep.train.transcriber import MIN_PITCH, N_KEYS, OUTPUTS, framed_power


@dataclass(frozen=True)
class PitchTranscriberConfig:
    """Everything that defines the architecture (stored in checkpoints and ONNX metadata)."""

    arch: str = "pitch"
    sample_rate: int = 16000
    hop: int = 320
    n_fft: int = 2048
    bins_per_semitone: int = 3
    low_margin: int = 12            # semitones below A0 (room for the sub-harmonic channel)
    high_margin: int = 12           # semitones above C8
    harmonics: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    conv: int = 16                  # channels of the two 3x3 layers
    key_channels: int = 24          # channels per key after the semitone stride
    octave_kernel: int = 13         # semitones seen by the octave-wide layer (odd)
    temporal: int = 32              # channels of the per-key temporal stacks
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)   # note stack: +-62 frames (1.2 s) of context
    frame_dilations: tuple[int, ...] = (1, 4, 16)
    rnn_pedal: int = 32
    dropout: float = 0.1
    # The velocity head also reads the chunk's mean and max note features. Training excerpts are
    # peak-normalised and then gained by -18..0 dB, so a key-frame's level alone says little about
    # how hard the key was struck; beside the chunk's level it does. Off in the first shipped
    # models (their velocity was nearly constant: std 2.9 MIDI units against 19.3 on valid).
    velocity_context: bool = False
    # It also reads the raw log level of each key's harmonics (the normalised spectrum the
    # convolutions start from, max over the key's bins) beside the same minus the chunk's maximum:
    # how loud the note is, absolutely and against the loudest in the chunk. The trunk's features,
    # trained for onsets and frames, keep little of either (with velocity_context alone the
    # estimates still spread 2.6 MIDI units within a song against the reference's 12.9).
    velocity_level: bool = False
    # After the note stack, every key also reads the note features of the keys an octave, a
    # twelfth and two octaves away (both ways; :data:`HARMONIC_OFFSETS`): 65 % of the false notes
    # on clean valid piano were such harmonics of a struck note, and the layers before see only
    # +-6 semitones of features (the harmonic stack sees spectra, not what was decided there).
    harmonic_mixing: bool = False
    #: fields that, switched on, only add parameters initialised so the outputs do not change: a
    #: checkpoint without them can start a run with them (``--init-from run/last.pt``)
    GROWABLE: ClassVar[tuple[str, ...]] = ("velocity_context", "velocity_level", "harmonic_mixing")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("harmonics", "dilations", "frame_dilations"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PitchTranscriberConfig":
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise ValueError(f"unknown PitchTranscriberConfig keys {sorted(bad)}; allowed: {sorted(known)}")
        d = dict(d)
        for k, typ in (("harmonics", float), ("dilations", int), ("frame_dilations", int)):
            if k in d:
                d[k] = tuple(typ(v) for v in d[k])
        return cls(**d)

    def n_frames(self, samples: int) -> int:
        """Frames the model emits for ``samples`` input samples: ``samples // hop``."""
        return int(samples) // self.hop

    @property
    def n_semitones(self) -> int:
        return self.low_margin + N_KEYS + self.high_margin


def log_frequency_filters(cfg: PitchTranscriberConfig) -> np.ndarray:
    """``(n_fft//2 + 1, n_bins)`` float64: FFT power -> log-frequency bins, each column sums to 1
    (or is zero above Nyquist). Bin ``j`` is centred on MIDI pitch
    ``MIN_PITCH - low_margin + j / bins_per_semitone``."""
    bps = cfg.bins_per_semitone
    n_bins = cfg.n_semitones * bps
    midi = MIN_PITCH - cfg.low_margin + np.arange(n_bins) / bps - (bps - 1) / (2 * bps)
    fc = 440.0 * 2 ** ((midi - 69) / 12)
    k = np.arange(cfg.n_fft // 2 + 1)
    fk = k * cfg.sample_rate / cfg.n_fft
    w = np.zeros((len(k), n_bins))
    half = 1.0 / (12 * bps)  # octaves from a bin centre to its neighbour's
    for j, f in enumerate(fc):
        if f >= cfg.sample_rate / 2 - fk[1]:
            continue
        tri = np.maximum(0.0, 1.0 - np.abs(np.log2(np.maximum(fk, 1e-9) / f)) / half)
        tri[0] = 0.0
        if tri.sum() >= 1.0:
            w[:, j] = tri / tri.sum()
        else:  # FFT bins coarser than the grid: interpolate the power at f
            x = f / fk[1]
            i = int(np.floor(x))
            w[i, j], w[i + 1, j] = 1.0 - (x - i), x - i
    return w


class LogFrequency(nn.Module):
    """``(B, T)`` -> ``(B, F, n_bins)`` log power on the log-frequency grid."""

    def __init__(self, cfg: PitchTranscriberConfig):
        super().__init__()
        if cfg.hop % 2 or not 0 < cfg.hop <= cfg.n_fft // 2:
            raise ValueError(f"hop must be even and at most n_fft/2 (got hop {cfg.hop}, n_fft {cfg.n_fft})")
        w = log_frequency_filters(cfg)
        used = np.flatnonzero(w.sum(axis=1) > 0)
        self.k0, self.k1 = int(used[0]), int(used[-1]) + 1
        self.hop, self.scale = cfg.hop, 2.0 / cfg.n_fft  # a sine of amplitude a has |X| = a/2
        self.stft = STFT(cfg.n_fft, cfg.hop, n_bins=self.k1)
        self.register_buffer("filters", torch.tensor(w[self.k0:self.k1], dtype=torch.float32), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.log(framed_power(self.stft, audio, self.hop, self.k0, self.scale) @ self.filters + 1e-8)


class _TemporalBlock(nn.Module):
    """``(B, C, F, 88)`` -> same: a residual dilated convolution along time, shared by every key."""

    def __init__(self, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (3, 1), padding=(dilation, 0), dilation=(dilation, 1), bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(torch.relu(self.norm(self.conv(x))))


#: semitones between a key and the keys ``harmonic_mixing`` reads (octave, twelfth, two octaves)
HARMONIC_OFFSETS = (-24, -19, -12, 12, 19, 24)


def shift_pitch(x: torch.Tensor, s: int) -> torch.Tensor:
    """``(..., N)`` -> same along the last (pitch) axis, entry ``j`` holding entry ``j + s`` (zero
    beyond either end)."""
    n = x.shape[-1]
    if s >= 0:
        return nn.functional.pad(x[..., s:], (0, s))
    return nn.functional.pad(x[..., : n + s], (-s, 0))


class _KeyMixing(nn.Module):
    """``(B, C, F, 88)`` -> same: ``x + out(relu(mix([x, x at each key + offset])))``. ``out``
    starts at zero, so a model grown with it computes what it did before."""

    def __init__(self, channels: int, offsets: tuple[int, ...] = HARMONIC_OFFSETS):
        super().__init__()
        self.offsets = tuple(offsets)
        self.mix = nn.Conv2d(channels * (len(self.offsets) + 1), channels, 1)
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x] + [shift_pitch(x, s) for s in self.offsets]
        return x + self.out(torch.relu(self.mix(torch.cat(parts, dim=1))))


class PitchTranscriber(nn.Module):
    """See the module docstring. ``forward`` -> probabilities in ``OUTPUTS`` order; ``logits`` ->
    the pre-sigmoid dict the losses use."""

    def __init__(self, cfg: PitchTranscriberConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PitchTranscriberConfig()
        bps = cfg.bins_per_semitone
        if cfg.octave_kernel % 2 == 0:
            raise ValueError("octave_kernel must be odd")
        self.frontend = LogFrequency(cfg)
        self.norm = nn.BatchNorm2d(1)
        self.shifts = [int(round(12 * np.log2(h) * bps)) for h in cfg.harmonics]
        c, kc = cfg.conv, cfg.key_channels
        # Cost per (frame, bin) is what a CPU step pays for: one 3x3 layer at the fine grid, then
        # a stride to one bin per semitone, an octave-wide layer along pitch only and a 3-frame
        # layer along time only (a (3, octave) kernel cost 3x as much for the same receptive field).
        self.conv = nn.Sequential(
            nn.Conv2d(len(cfg.harmonics), c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, (1, bps), stride=(1, bps), bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, kc, (1, cfg.octave_kernel), padding=(0, cfg.octave_kernel // 2), bias=False),
            nn.BatchNorm2d(kc), nn.ReLU(),
            nn.Conv2d(kc, kc, (3, 1), padding=(1, 0), bias=False), nn.BatchNorm2d(kc), nn.ReLU(),
            nn.Dropout(cfg.dropout),
        )
        h, hp = cfg.temporal, cfg.rnn_pedal
        self.note_in = nn.Conv2d(kc, h, 1)
        self.note_tcn = nn.ModuleList(_TemporalBlock(h, d, cfg.dropout) for d in cfg.dilations)
        if cfg.harmonic_mixing:
            self.key_mixing = _KeyMixing(h)
        self.onset_fc, self.offset_fc, self.velocity_fc = (nn.Conv2d(h + kc, 1, 1) for _ in range(3))
        if cfg.velocity_context:  # zero at first: a model grown from one without it starts unchanged
            self.velocity_ctx = nn.Conv2d(2 * (h + kc), 1, 1, bias=False)
            nn.init.zeros_(self.velocity_ctx.weight)
        if cfg.velocity_level:  # the same
            self.velocity_lvl = nn.Conv2d(2 * len(cfg.harmonics), 1, 1, bias=False)
            nn.init.zeros_(self.velocity_lvl.weight)
        self.frame_in = nn.Conv2d(h + kc + 2, h, 1)
        self.frame_tcn = nn.ModuleList(_TemporalBlock(h, d, cfg.dropout) for d in cfg.frame_dilations)
        self.frame_fc = nn.Conv2d(h + kc + 2, 1, 1)
        self.pedal_rnn = nn.GRU(2 * kc, hp, batch_first=True, bidirectional=True)
        self.pedal_fc = nn.Linear(2 * kc + 2 * hp, 1)

    def stacked(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, H, F, n_bins)`` harmonic stack of the normalised log spectrum."""
        x = self.norm(self.frontend(audio)[:, None])  # (B, 1, F, N)
        # channel h at bin j holds bin j + s (the h-th harmonic of bin j)
        return torch.cat([shift_pitch(x, s) for s in self.shifts], dim=1)

    def key_features(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, key_channels, F, 88)``: one feature sequence per key."""
        return self._keys(self.conv(self.stacked(audio)))

    def _keys(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., n_semitones)`` -> ``(..., 88)``: the piano's keys."""
        lo = self.cfg.low_margin
        return y[..., lo: lo + N_KEYS]

    def logits(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-sigmoid outputs, keyed by ``OUTPUTS``: ``(B, F, 88)`` and pedal ``(B, F, 1)``."""
        stack = self.stacked(audio)  # (B, H, F, n_bins)
        k = self._keys(self.conv(stack))  # (B, C, F, 88)
        x = self.note_in(k)
        for blk in self.note_tcn:
            x = blk(x)
        if self.cfg.harmonic_mixing:
            x = self.key_mixing(x)
        note = torch.cat([k, x], dim=1)  # each head reads the temporal stack and its input (skip)
        onset, offset = self.onset_fc(note), self.offset_fc(note)
        velocity = self.velocity_fc(note.detach())  # velocity must not pull the note features around
        if self.cfg.velocity_context:  # + a linear read of the chunk's level, (B, 1, 1, 1) broadcast
            n = note.detach()
            level = torch.cat([n.mean(dim=(2, 3), keepdim=True), n.amax(dim=(2, 3), keepdim=True)], 1)
            velocity = velocity + self.velocity_ctx(level)
        if self.cfg.velocity_level:
            bps = self.cfg.bins_per_semitone
            raw = stack.detach()
            raw = self._keys(raw.reshape(*raw.shape[:-1], raw.shape[-1] // bps, bps).amax(dim=-1))  # (B, H, F, 88)
            rel = raw - raw.amax(dim=(2, 3), keepdim=True)  # against the chunk's loudest, per harmonic
            velocity = velocity + self.velocity_lvl(torch.cat([raw, rel], 1))
        cond = torch.cat([k, x, torch.sigmoid(onset).detach(), torch.sigmoid(offset).detach()], dim=1)
        y = self.frame_in(cond)
        for blk in self.frame_tcn:
            y = blk(y)
        frame = self.frame_fc(torch.cat([cond[:, : k.shape[1]], y, cond[:, -2:]], dim=1))
        pooled = torch.cat([k.mean(dim=3), k.amax(dim=3)], dim=1).transpose(1, 2).detach()  # (B, F, 2C)
        pedal = self.pedal_fc(torch.cat([pooled, self.pedal_rnn(pooled)[0]], dim=-1))
        return {"onset": onset[:, 0], "frame": frame[:, 0], "offset": offset[:, 0],
                "velocity": velocity[:, 0], "pedal": pedal}

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lg = self.logits(audio)
        return tuple(torch.sigmoid(lg[k]) for k in OUTPUTS)
