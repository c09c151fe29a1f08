"""Spectrogram-masking separators: ``mix [B, 2, T] -> stems [B, 5, 2, T]`` (stereo, 44.1 kHz).

Both architectures share one front/back end (:class:`MaskSeparator`):

1. STFT of each channel (in-graph convolutions, :mod:`dawsep.train.stft`), first ``n_bins`` bins
   only: the frequency cut-off keeps compute small; stems are zero above it.
2. Network input: the complex spectrogram of both channels as 4 real channels, scaled by the
   mixture RMS (loudness-invariant) and magnitude-compressed ``|X|^0.3`` keeping the phase (the
   raw spectrum spans 60+ dB; compression lets quiet bins matter).
3. A trunk (the architecture) predicts a complex ratio mask per stem and channel; the stem
   spectrogram is ``mask * X`` (complex product: the mask can fix phase a little, unlike a
   magnitude mask), then iSTFT back to exactly ``T`` samples.
4. ``mask="softmax"`` instead predicts real ratio masks, softmax over the stems per channel, bin
   and frame (Spleeter/Open-Unmix style: bounded, summing to 1, mixture phase). It cannot beat
   the IRM but learns much faster from scratch, which matters on a CPU budget (measured: see
   ``docs/BENCHMARKS.md``).
   ``mask="sigmoid"``: real masks in [0, 1] per stem, each independent of the others (mixture
   phase; the stems need not sum to the mix). The conditioned model (:mod:`dawsep.train.lasaft`)
   uses it: a stem computed alone must equal the same stem computed with the others.
5. ``full_band=True`` (set when exporting a trained model) keeps the bins above the cut-off
   instead of zeroing them: each stem gets the mask of the highest modelled bin there, so
   cymbals keep their air and, with masks summing to one, the stems sum to the whole mixture.
   The weights are the same; only the output above the cut-off changes.
6. Mixture consistency (``consistent=True``, complex masks): the masks are projected to sum to 1 over stems
   (``m - mean(m) + 1/S``), so the stems sum to the mixture below the cut-off by construction.
   Without it, L1 training first drives the hard stems (guitar, other, drums) to silence, the
   median-seeking safe bet: measured at step 750, SDR fell *below* the ``mix/5`` starting point.

``forward`` is pure (no randomness, no state changes in eval mode) and shape-generic: batch and
length are dynamic in the ONNX export; the frame axis is zero-padded inside to a multiple of the
trunk's ``2**depth`` and cropped back. Trunk tensors are ``[B, C, N(time), F(freq)]`` so the TDF
linear layers act on the last axis.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from dawsep.train.data.score import SAMPLE_RATE, STEMS
from dawsep.train.stft import ISTFT, STFT
from dawsep.train.waveform import ConvTasNet, Demucs

MASK_PARTS = {"complex": 4, "softmax": 2, "sigmoid": 2}  # per stem: (left, right) x (real, imag) | (left, right)


class MaskSeparator(nn.Module):
    """Common STFT -> trunk -> complex mask -> iSTFT wrapper; subclasses build ``self.trunk``.

    ``self.trunk``: ``[B, 4, N, F] -> [B, n_stems * 4, N, F]`` for ``N`` a multiple of
    ``self.frame_multiple``.
    """

    arch = "base"

    def __init__(self, n_fft: int = 2048, hop: int = 1024, n_bins: int = 768, n_stems: int = len(STEMS),
                 compress: float = 0.3, consistent: bool = True, mask: str = "complex", full_band: bool = False):
        super().__init__()
        if mask not in MASK_PARTS:
            raise ValueError(f"mask {mask!r}: allowed {sorted(MASK_PARTS)}")
        self.mask, self.mask_parts = mask, MASK_PARTS[mask]
        self.n_fft, self.hop, self.n_bins, self.n_stems, self.compress = n_fft, hop, n_bins, n_stems, compress
        self.consistent = consistent
        # 1/S on the real part: what each stem's mask becomes after removing the across-stem mean.
        self.register_buffer("unit_mask", torch.tensor([1.0 / n_stems, 0.0]).view(1, 1, 1, 2, 1, 1), persistent=False)
        self.sample_rate = SAMPLE_RATE
        self.stems = tuple(STEMS[:n_stems])
        self.full_band = full_band
        out_bins = n_fft // 2 + 1 if full_band else n_bins
        self.stft = STFT(n_fft, hop, out_bins)
        self.istft = ISTFT(n_fft, hop, out_bins)
        self.frame_multiple = 1
        self._config = {"n_fft": n_fft, "hop": hop, "n_bins": n_bins, "n_stems": n_stems, "compress": compress,
                        "consistent": consistent, "mask": mask, "full_band": full_band}

    def config(self) -> dict:
        """JSON-able constructor arguments (checkpoints store it, :func:`build` inverts it)."""
        return {"arch": self.arch, **self._config}

    def efficient_length(self, samples: int) -> int:
        """Largest length <= ``samples`` (at least one block) whose frame count needs no padding."""
        m = self.frame_multiple
        frames = max(m, (samples // self.hop + 2) // m * m)
        return (frames - 2) * self.hop if frames > 2 else 1

    def _head_init(self, head: nn.Conv2d, n_out: int | None = None) -> None:
        """Start from "every stem = mix / n_stems": a sane, mixture-consistent first guess.
        ``n_out``: stems the head predicts at once (default all; 1 for a conditioned head)."""
        # Output channels are laid out (stem, left/right[, real/imag][, fold]); softmax logits
        # of zero are already uniform.
        nn.init.normal_(head.weight, std=1e-3)
        with torch.no_grad():
            head.bias.zero_()
            if self.mask == "complex":
                head.bias.view(n_out or self.n_stems, 2, 2, -1)[:, :, 0] = 1.0 / self.n_stems
            elif self.mask == "sigmoid":
                head.bias.fill_(-math.log(self.n_stems - 1.0) if self.n_stems > 1 else 0.0)  # sigmoid = 1/S

    def _extend(self, m: torch.Tensor) -> torch.Tensor:
        """Masks ``[..., n_bins, N]`` -> ``[..., all bins, N]``, the top bin's mask repeated above."""
        if not self.full_band:
            return m
        top = m[..., -1:, :]
        above = top.expand(*top.shape[:-2], self.n_fft // 2 + 1 - self.n_bins, top.shape[-1])
        return torch.cat([m, above], dim=-2)

    def _features(self, mix: torch.Tensor):
        """``mix [B, 2, T]`` -> (trunk input ``[B, 4, N', F]`` with ``N'`` padded to a multiple of
        ``frame_multiple``, STFT ``X_out [B, 2, 2, F(+above the cut-off), N]``, its first ``n_bins``)."""
        X_out = self.stft(mix)
        X = X_out[..., :self.n_bins, :]
        n_frames = X.shape[-1]
        rms = mix.pow(2).mean(dim=(1, 2)).add(1e-10).sqrt().view(-1, 1, 1, 1, 1)
        Xn = X / rms
        Xn = Xn * (Xn.pow(2).sum(2, keepdim=True) + 1e-8).pow((self.compress - 1) / 2)
        h = Xn.reshape(X.shape[0], 4, self.n_bins, n_frames).transpose(2, 3)  # [B, 4, N, F]
        pad = (-n_frames) % self.frame_multiple
        return F.pad(h, (0, 0, 0, pad)), X_out, X

    def _masks(self, mix: torch.Tensor, *condition):
        """``mix [B, 2, T]`` -> (trunk output ``[B, K*parts, N, F]``, STFT ``X_out``, its first
        ``n_bins``); ``K`` is ``n_stems``, or what ``condition`` asks a conditioned trunk for."""
        h, X_out, X = self._features(mix)
        return self.trunk(h, *condition)[:, :, :X.shape[-1]], X_out, X

    def masked_magnitudes(self, mix: torch.Tensor, *condition) -> torch.Tensor:
        """Training shortcut, Open-Unmix's recipe: the stems' magnitude spectrograms as the masks
        times the mixture magnitude, ``[B, S, 2, n_bins, N]``, with no iSTFT (real masks only:
        softmax or sigmoid). Equals ``|STFT(forward(mix))|`` up to the STFT's consistency; about
        half the cost per step."""
        if self.mask == "complex":
            raise ValueError("masked_magnitudes needs a real mask ('softmax' or 'sigmoid')")
        m, _, X = self._masks(mix, *condition)
        b, n = X.shape[0], X.shape[-1]
        m = self._real_masks(m.reshape(b, -1, 2, n, self.n_bins)).transpose(-1, -2)
        return m * X.pow(2).sum(2).add(1e-10).sqrt()[:, None]

    def _real_masks(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, S, ...]`` logits -> masks: softmax over the stems (axis 1), or sigmoid per stem."""
        if self.mask != "softmax":
            return torch.sigmoid(logits)
        # softmax written out: ONNX Runtime's Softmax over a non-last axis took 109 ms per 10 s of
        # the default model against 16 ms for these elementwise ops (measured); same values
        e = torch.exp(logits - logits.amax(dim=1, keepdim=True))
        return e / e.sum(dim=1, keepdim=True)

    def _apply_masks(self, m: torch.Tensor, X_out: torch.Tensor, X: torch.Tensor, length) -> torch.Tensor:
        """Trunk output ``m [B, K*parts, N, F]`` on the mixture STFT -> ``[B, K, 2, length]``."""
        n_frames = X.shape[-1]
        if self.mask != "complex":
            m = self._real_masks(m.reshape(X.shape[0], -1, 2, n_frames, self.n_bins))
            Y = self._extend(m.transpose(-1, -2))[:, :, :, None] * X_out[:, None]  # [B, K, 2, 2, F, N]
            return self.istft(Y, length)
        m = m.reshape(X.shape[0], -1, 2, 2, n_frames, self.n_bins).transpose(-1, -2)
        if self.consistent:
            m = m - m.mean(1, keepdim=True) + self.unit_mask
        mr, mi = self._extend(m[:, :, :, 0]), self._extend(m[:, :, :, 1])  # [B, K, 2, F, N]
        xr, xi = X_out[:, None, :, 0], X_out[:, None, :, 1]  # [B, 1, 2, F, N]
        Y = torch.stack([mr * xr - mi * xi, mr * xi + mi * xr], dim=3)  # [B, K, 2, 2, F, N]
        return self.istft(Y, length)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``mix [B, 2, T]`` -> ``stems [B, n_stems, 2, T]``."""
        return self._apply_masks(*self._masks(mix), mix.shape[-1])


def _bn_act(c: int, act: nn.Module) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), act]


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
            self.enc.append(nn.Sequential(nn.Conv2d(c_in, c, 5, 2, 2), *_bn_act(c, nn.LeakyReLU(0.2))))
            c_in = c
        self.dec = nn.ModuleList()
        outs = list(channels[-2::-1]) + [channels[0]]
        for i, c in enumerate(outs):
            c_in = channels[-1] if i == 0 else 2 * outs[i - 1]  # previous output ++ its skip
            self.dec.append(nn.Sequential(nn.ConvTranspose2d(c_in, c, 5, 2, 2, output_padding=1),
                                          *_bn_act(c, nn.ReLU())))
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
class TFC(nn.Module):
    """Densely connected 3x3 convs (Conv-BN-ReLU); each layer sees all earlier outputs.
    ``[B, c_in, N, F] -> [B, growth, N, F]`` (the last layer's output, as in Choi et al.)."""

    def __init__(self, c_in: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in + i * growth, growth, 3, 1, 1, bias=False), *_bn_act(growth, nn.ReLU()))
            for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            y = layer(x)
            x = torch.cat([y, x], 1) if i + 1 < len(self.layers) else y
        return y


class TDF(nn.Module):
    """Time-distributed fully-connected bottleneck over frequency (seed 003 code):
    ``F -> F/bf -> F`` per channel and frame, BN + ReLU after each linear. ``[B, C, N, F]``."""

    def __init__(self, channels: int, f: int, bf: int = 8, min_units: int = 16):
        super().__init__()
        u = max(f // bf, min_units)
        self.net = nn.Sequential(nn.Linear(f, u, bias=False), *_bn_act(channels, nn.ReLU()),
                                 nn.Linear(u, f, bias=False), *_bn_act(channels, nn.ReLU()))

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
        self.first = nn.Sequential(nn.Conv2d(4 * fold, channels[0], 1, bias=False), *_bn_act(channels[0], nn.ReLU()))
        self.enc, self.down, self.up, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(depth):
            c, c_next, fi = channels[i], channels[i + 1], f >> i
            self.enc.append(TFCTDF(c, c, fi, layers, bf))
            self.down.append(nn.Sequential(nn.Conv2d(c, c_next, 2, 2, bias=False), *_bn_act(c_next, nn.ReLU())))
        self.mid = TFCTDF(channels[-1], channels[-1], f >> depth, layers, bf)
        for i in reversed(range(depth)):
            c, c_next, fi = channels[i], channels[i + 1], f >> i
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c_next, c, 2, 2, bias=False), *_bn_act(c, nn.ReLU())))
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
         "demucs": Demucs}
# The conditioned LaSAFT-GPoCM U-Net (seed 003) builds on the blocks above and adds itself to
# ARCHS as "lasaft" when imported; importing it here makes the registry complete either way round.
import dawsep.train.lasaft  # noqa: E402,F401


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
