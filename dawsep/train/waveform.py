"""Waveform-domain separators: ``mix [B, 2, T] -> stems [B, 5, 2, T]`` with no spectrogram.

- :class:`ConvTasNet`: Luo & Mesgarani's Conv-TasNet adapted to stereo music as in the Demucs
  paper (seed 001): a learned encoder (strided conv + ReLU), a temporal convolutional network
  (stacks of dilated depthwise-separable blocks with global layer norm, PReLU, residual and skip
  paths) that predicts a sigmoid mask per stem over the encoder's features, and a learned
  transposed-conv decoder per masked representation. Trained with an L1 loss on the waveform.
- :class:`Demucs`: the Demucs (v2) waveform U-Net (seed 001): strided conv encoder with 1x1 GLU
  blocks, a bidirectional LSTM bottleneck, a transposed-conv decoder with GLU blocks and additive
  skips, every stem from the last layer. Trained with an L1 loss on the waveform.

Both are shrunk to the 2-core CPU budget; the sizes and how far below the papers they are sit in
``docs/separation.md``. Both normalise the input by its statistics and undo it at the output
(loudness-invariant, as Demucs does), pad the length internally to what their strides need and
crop back, so any length in gives the same length out; ``forward`` is pure and exports to ONNX
with dynamic batch and length.

They carry the attributes the shared training loop and evaluation read from every separator
(``n_fft``/``hop``/``n_bins``: the loss and oracle STFT; ``frame_multiple``, ``efficient_length``,
``config``), so nothing downstream special-cases the domain.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from dawsep.train.data.score import SAMPLE_RATE, STEMS


class WaveSeparator(nn.Module):
    """Shared plumbing of the waveform models (no trunk of its own)."""

    arch = "wave"
    full_band = True  # a waveform model has no frequency cut-off

    def __init__(self, n_stems: int = len(STEMS), n_fft: int = 2048, hop: int = 1024, n_bins: int = 768):
        super().__init__()
        self.n_stems, self.stems, self.sample_rate = n_stems, tuple(STEMS[:n_stems]), SAMPLE_RATE
        # The STFT the training loss (mse_mag) and the IRM oracle use, same as the mask models'.
        self.n_fft, self.hop, self.n_bins = n_fft, hop, n_bins
        self.frame_multiple = 1
        self._config = {"n_stems": n_stems, "n_fft": n_fft, "hop": hop, "n_bins": n_bins}

    def config(self) -> dict:
        return {"arch": self.arch, **self._config}

    def efficient_length(self, samples: int) -> int:
        m = self.length_multiple
        return max(m, samples // m * m)

    @staticmethod
    def _normalise(mix: torch.Tensor):
        mono = mix.mean(1, keepdim=True)
        mean = mono.mean(-1, keepdim=True)
        std = (mono - mean).pow(2).mean(-1, keepdim=True).add(1e-10).sqrt() + 1e-5
        return (mix - mean) / std, mean, std


class _GLN(nn.GroupNorm):
    """Global layer norm (over channels and time, per item): GroupNorm with one group."""

    def __init__(self, channels: int):
        super().__init__(1, channels, eps=1e-8)


class _TCNBlock(nn.Module):
    """1x1 conv -> PReLU -> gLN -> dilated depthwise conv -> PReLU -> gLN -> residual and skip 1x1s."""

    def __init__(self, b: int, h: int, skip: int, kernel: int, dilation: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(b, h, 1), nn.PReLU(), _GLN(h),
            nn.Conv1d(h, h, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2, groups=h),
            nn.PReLU(), _GLN(h))
        self.res = nn.Conv1d(h, b, 1)
        self.skip = nn.Conv1d(h, skip, 1)

    def forward(self, x: torch.Tensor):
        y = self.net(x)
        return x + self.res(y), self.skip(y)


class ConvTasNet(WaveSeparator):
    """Conv-TasNet for stereo music. Paper sizes (N=256, L=20, B=256, H=512, X=8, R=4 at 44.1 kHz in
    the Demucs paper's adaptation) cost minutes per step on 2 cores; defaults here are about 40x
    smaller in compute: N=128 filters of L=128 samples (stride 64), B=64, H=128, X=7, R=2.
    Receptive field: ``R * (P-1) * (2^X - 1) + 1`` encoder frames (0.74 s at the defaults).
    """

    arch = "convtasnet"

    def __init__(self, filters: int = 128, kernel: int = 128, bottleneck: int = 64, hidden: int = 128,
                 skip: int = 64, conv_kernel: int = 3, blocks: int = 7, repeats: int = 2, **base):
        super().__init__(**base)
        if kernel % 2:
            raise ValueError(f"kernel {kernel} must be even (stride = kernel / 2)")
        self._config.update(filters=filters, kernel=kernel, bottleneck=bottleneck, hidden=hidden, skip=skip,
                            conv_kernel=conv_kernel, blocks=blocks, repeats=repeats)
        self.kernel, self.stride, self.filters = kernel, kernel // 2, filters
        self.length_multiple = self.stride
        self.encoder = nn.Conv1d(2, filters, kernel, self.stride, bias=False)
        self.norm = _GLN(filters)
        self.bottleneck = nn.Conv1d(filters, bottleneck, 1)
        self.tcn = nn.ModuleList(_TCNBlock(bottleneck, hidden, skip, conv_kernel, 2 ** x)
                                 for _ in range(repeats) for x in range(blocks))
        self.mask = nn.Sequential(nn.PReLU(), nn.Conv1d(skip, self.n_stems * filters, 1))
        self.decoder = nn.ConvTranspose1d(filters, 2, kernel, self.stride, bias=False)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``mix [B, 2, T]`` -> ``stems [B, n_stems, 2, T]``."""
        b, _, t = mix.shape
        x, mean, std = self._normalise(mix)
        # Pad so the frames cover every sample: stride-multiple length plus one frame of overlap.
        pad = (-t) % self.stride
        x = F.pad(x, (self.stride, pad + self.stride))
        w = torch.relu(self.encoder(x))  # [B, N, K]
        h = self.bottleneck(self.norm(w))
        skips = 0
        for block in self.tcn:
            h, s = block(h)
            skips = skips + s
        m = torch.sigmoid(self.mask(skips)).reshape(b, self.n_stems, self.filters, -1)
        y = self.decoder((m * w[:, None]).flatten(0, 1))  # [B*S, 2, T']
        y = y[..., self.stride: self.stride + t].reshape(b, self.n_stems, 2, t)
        return y * std[:, None] + mean[:, None] / self.n_stems


class Demucs(WaveSeparator):
    """Demucs v2 waveform U-Net. Paper: 6 layers from 64 (or 48) channels, kernel 8 / stride 4,
    2-layer BiLSTM, input upsampled 2x. Here: ``depth`` 5 from ``channels`` 16 (x2 per layer),
    no upsampling, "same" padding (kernel 8, stride 4, padding 2) so every length that is a
    multiple of ``4^depth`` maps exactly, without Demucs' valid-length cropping.
    """

    arch = "demucs"

    def __init__(self, channels: int = 16, depth: int = 5, growth: int = 2, kernel: int = 8, stride: int = 4,
                 lstm_layers: int = 2, **base):
        super().__init__(**base)
        if kernel != 2 * stride:
            raise ValueError(f"kernel {kernel} must be 2 * stride {stride} for exact lengths")
        self._config.update(channels=channels, depth=depth, growth=growth, kernel=kernel, stride=stride,
                            lstm_layers=lstm_layers)
        self.length_multiple = stride ** depth
        pad = (kernel - stride) // 2
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        c_in, widths = 2, []
        for i in range(depth):
            c = channels * growth ** i
            self.encoder.append(nn.Sequential(nn.Conv1d(c_in, c, kernel, stride, pad), nn.ReLU(),
                                              nn.Conv1d(c, 2 * c, 1), nn.GLU(1)))
            widths.append((c_in, c))
            c_in = c
        for i, (c_out, c) in enumerate(reversed(widths)):
            last = i == depth - 1
            self.decoder.append(nn.Sequential(
                nn.Conv1d(c, 2 * c, 3, 1, 1), nn.GLU(1),
                nn.ConvTranspose1d(c, self.n_stems * 2 if last else c_out, kernel, stride, pad),
                *([] if last else [nn.ReLU()])))
        self.lstm = nn.LSTM(c_in, c_in, num_layers=lstm_layers, bidirectional=True, batch_first=True)
        self.lstm_out = nn.Linear(2 * c_in, c_in)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``mix [B, 2, T]`` -> ``stems [B, n_stems, 2, T]``."""
        b, _, t = mix.shape
        x, mean, std = self._normalise(mix)
        x = F.pad(x, (0, (-t) % self.length_multiple))
        skips = []
        for enc in self.encoder:
            x = enc(x)
            skips.append(x)
        r, _ = self.lstm(x.transpose(1, 2))
        x = self.lstm_out(r).transpose(1, 2)
        for dec in self.decoder:
            x = dec(x + skips.pop())
        y = x[..., :t].reshape(b, self.n_stems, 2, t)
        return y * std[:, None] + mean[:, None] / self.n_stems
