"""Owns the separator architectures and their registry (:data:`ARCHS`, :func:`build`):
spectrogram-masking U-Nets and Open-Unmix on :class:`~dawsep.train.mask_separator.MaskSeparator`'s
front and back end (STFT, compressed input, masks, iSTFT: described there), the waveform models of
:mod:`dawsep.train.waveform`, and the conditioned LaSAFT U-Net of :mod:`dawsep.train.lasaft`.
"""
from __future__ import annotations

import torch
from torch import nn

from dawsep.train.lasaft import LaSAFTNet
from dawsep.train.mask_separator import TFC, MaskSeparator, bn_act
from dawsep.train.waveform import ConvTasNet, Demucs


# ---------------------------------------------------------------- Jansson U-Net (seed 004)
class UNetMask(MaskSeparator):
    """Jansson et al. 2017 spectrogram U-Net: 5x5 stride-2 conv encoder (BN, leaky ReLU),
    5x5 stride-2 transposed-conv decoder (BN, ReLU) with concatenated skips, one shared trunk
    and a 1x1 head giving all stems' complex masks. The baseline."""

    arch = "unet"

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 192, 256), **spec):
        super().__init__(**spec)
        self._config.update(channels=list(channels))
        depth = len(channels)
        if self.n_bins % (1 << depth):
            raise ValueError(f"n_bins {self.n_bins} must be divisible by 2**{depth}")
        self.frame_multiple = 1 << depth
        self.enc = nn.ModuleList()
        c_in = 4
        for c in channels:
            self.enc.append(nn.Sequential(nn.Conv2d(c_in, c, 5, 2, 2), *bn_act(c, nn.LeakyReLU(0.2))))
            c_in = c
        self.dec = nn.ModuleList()
        outs = list(channels[-2::-1]) + [channels[0]]
        for i, c in enumerate(outs):
            c_in = channels[-1] if i == 0 else 2 * outs[i - 1]  # previous output ++ its skip
            self.dec.append(nn.Sequential(nn.ConvTranspose2d(c_in, c, 5, 2, 2, output_padding=1),
                                          *bn_act(c, nn.ReLU())))
        self.head = nn.Conv2d(channels[0] + 4, self.n_stems * self.mask_parts, 1)
        self._head_init(self.head)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for layer in self.enc:
            h = layer(h)
            skips.append(h)
        skips.pop()  # the deepest output is the decoder's input, not a skip
        for layer in self.dec:
            h = layer(h)
            if skips:
                h = torch.cat([h, skips.pop()], 1)
        return self.head(torch.cat([h, x], 1))


# ---------------------------------------------------------------- TFC-TDF U-Net (seed 003)
class TDF(nn.Module):
    """Time-distributed fully-connected bottleneck over frequency (seed 003 code):
    ``F -> F/bf -> F`` per channel and frame, BN + ReLU after each linear. ``[B, C, N, F]``."""

    def __init__(self, channels: int, f: int, bf: int = 8, min_units: int = 16):
        super().__init__()
        u = max(f // bf, min_units)
        self.net = nn.Sequential(nn.Linear(f, u, bias=False), *bn_act(channels, nn.ReLU()),
                                 nn.Linear(u, f, bias=False), *bn_act(channels, nn.ReLU()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TFCTDF(nn.Module):
    """TFC then a residual TDF: ``x = tfc(x); x + tdf(x)``. ``[B, c_in, N, F] -> [B, c, N, F]``."""

    def __init__(self, c_in: int, c: int, f: int, layers: int, bf: int):
        super().__init__()
        self.tfc = TFC(c_in, c, layers)
        self.tdf = TDF(c, f, bf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tfc(x)
        return x + self.tdf(x)


class TFCTDFUNet(MaskSeparator):
    """TFC-TDF U-Net (Choi et al. 2020; KUIELab MDX-Net): TFC-TDF blocks at every scale, 2x2
    stride-2 conv down / transposed-conv up, concatenated skips, 1x1 multi-head output (every
    stem's complex mask from the shared decoder; per-stem output channels).

    ``fold`` moves groups of adjacent frequency bins into channels before the trunk (and back
    after the head): on 2 CPU cores the full-resolution level dominates the cost; folding 4 bins
    (86 Hz) cuts it 4x while the head still predicts a mask for every bin. Measured on the
    shared 2-core box (batch 4 x 5.9 s): fold 2 / 24 channels 2.5 s per step, fold 4 / 32
    channels 1.4 s, at 1.0 M and 1.9 M parameters.
    """

    arch = "tfctdf"

    def __init__(self, channels: tuple[int, ...] = (32, 48, 64, 96, 128), layers: int = 2, bf: int = 8,
                 fold: int = 4, **spec):
        super().__init__(**spec)
        self._config.update(channels=list(channels), layers=layers, bf=bf, fold=fold)
        depth = len(channels) - 1  # the last entry is the bottleneck
        f = self.n_bins // fold
        if self.n_bins % fold or f % (1 << depth):
            raise ValueError(f"n_bins {self.n_bins} / fold {fold} must be divisible by 2**{depth}")
        self.fold, self.frame_multiple = fold, 1 << depth
        self.first = nn.Sequential(nn.Conv2d(4 * fold, channels[0], 1, bias=False), *bn_act(channels[0], nn.ReLU()))
        self.enc, self.down, self.up, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(depth):
            c, c_next, fi = channels[i], channels[i + 1], f >> i
            self.enc.append(TFCTDF(c, c, fi, layers, bf))
            self.down.append(nn.Sequential(nn.Conv2d(c, c_next, 2, 2, bias=False), *bn_act(c_next, nn.ReLU())))
        self.mid = TFCTDF(channels[-1], channels[-1], f >> depth, layers, bf)
        for i in reversed(range(depth)):
            c, c_next, fi = channels[i], channels[i + 1], f >> i
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c_next, c, 2, 2, bias=False), *bn_act(c, nn.ReLU())))
            self.dec.append(TFCTDF(2 * c, c, fi, layers, bf))
        self.head = nn.Conv2d(channels[0], self.n_stems * self.mask_parts * fold, 1)
        self._head_init(self.head)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n, f = x.shape
        # [B, 4, N, F] -> [B, 4*fold, N, F/fold]: channel (c, j) holds bin fold*q + j.
        h = x.reshape(b, c, n, f // self.fold, self.fold).permute(0, 1, 4, 2, 3).reshape(b, c * self.fold, n, -1)
        h = self.first(h)
        skips = []
        for enc, down in zip(self.enc, self.down):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.mid(h)
        for up, dec in zip(self.up, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], 1))
        m = self.head(h)  # [B, S*4*fold, N, F/fold]
        o = m.shape[1] // self.fold
        return m.reshape(b, o, self.fold, n, -1).permute(0, 1, 3, 4, 2).reshape(b, o, n, f)


# ---------------------------------------------------------------- Open-Unmix (seed 004)
class OpenUnmix(MaskSeparator):
    """Open-Unmix (Stöter et al. 2019) on this front end: per-frame magnitude spectrogram of both
    channels -> learned per-bin input scaling -> ``fc1`` compression of the frequency axis to
    ``hidden`` units (BN, tanh) -> three LSTM layers over time (bidirectional, ``hidden/2`` per
    direction; or unidirectional with ``hidden`` units, a causal network: the runtime still runs it
    chunk by chunk without carrying LSTM state, so it declares the same latency as the
    bidirectional one) -> skip-concatenation -> ``fc2`` (BN, ReLU) -> ``fc3`` back to every
    bin, per stem and channel -> mask.

    One shared model for all stems (Open-Unmix trains one per target; the shared trunk with a
    per-stem head fits the CPU budget and lets the softmax mask keep stems summing to the mix).
    The input is the front end's compressed magnitude ``|X/rms|^0.3`` rather than the raw
    magnitude: the learned scaling then starts from a well-conditioned range.
    """

    arch = "umx"

    def __init__(self, hidden: int = 256, layers: int = 3, bidirectional: bool = True, **spec):
        spec.setdefault("mask", "softmax")
        super().__init__(**spec)
        self._config.update(hidden=hidden, layers=layers, bidirectional=bidirectional)
        f = self.n_bins
        self.input_mean = nn.Parameter(torch.zeros(2 * f))
        self.input_scale = nn.Parameter(torch.ones(2 * f))
        self.fc1 = nn.Linear(2 * f, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = nn.LSTM(hidden, hidden // 2 if bidirectional else hidden, num_layers=layers,
                            bidirectional=bidirectional, batch_first=True)
        self.fc2 = nn.Linear(2 * hidden, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, self.n_stems * self.mask_parts * f)
        nn.init.normal_(self.fc3.weight, std=1e-3)
        nn.init.zeros_(self.fc3.bias)
        if self.mask == "complex":
            with torch.no_grad():
                self.fc3.bias.view(self.n_stems, 2, 2, f)[:, :, 0] = 1.0 / self.n_stems

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, f = x.shape
        mag = (x[:, 0::2].pow(2) + x[:, 1::2].pow(2) + 1e-8).sqrt()  # [B, 2, N, F]
        h = mag.transpose(1, 2).reshape(b, n, 2 * f)
        h = (h + self.input_mean) * self.input_scale
        h = torch.tanh(self.bn1(self.fc1(h).transpose(1, 2)).transpose(1, 2))  # [B, N, H]
        r, _ = self.lstm(h)
        h = torch.cat([h, r], -1)
        h = torch.relu(self.bn2(self.fc2(h).transpose(1, 2)).transpose(1, 2))
        m = self.fc3(h)  # [B, N, S*parts*F]
        return m.reshape(b, n, -1, f).transpose(1, 2)  # [B, S*parts, N, F]


ARCHS = {"unet": UNetMask, "tfctdf": TFCTDFUNet, "umx": OpenUnmix, "convtasnet": ConvTasNet,
         "demucs": Demucs, "lasaft": LaSAFTNet}


def build(config: dict) -> nn.Module:
    """A separator from ``model.config()`` (as stored in checkpoints)."""
    cfg = dict(config)
    arch = cfg.pop("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {sorted(ARCHS)}")
    if isinstance(cfg.get("channels"), list):  # JSON turned the tuple into a list
        cfg["channels"] = tuple(cfg["channels"])
    if issubclass(ARCHS[arch], MaskSeparator):
        cfg.setdefault("consistent", False)  # configs written before the option had no projection
    return ARCHS[arch](**cfg)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
