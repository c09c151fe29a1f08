"""Owns what every masking separator shares: :class:`MaskSeparator`'s front and back end
(``mix [B, 2, T] -> stems [B, S, 2, T]``, stereo, 44.1 kHz) and the TFC block of the TFC-TDF U-Nets.

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


def bn_act(c: int, act: nn.Module) -> list[nn.Module]:
    """BatchNorm then ``act``: the layers after every conv of the U-Nets."""
    return [nn.BatchNorm2d(c), act]



# ---------------------------------------------------------------- TFC-TDF U-Net (seed 003)
class TFC(nn.Module):
    """Densely connected 3x3 convs (Conv-BN-ReLU); each layer sees all earlier outputs.
    ``[B, c_in, N, F] -> [B, growth, N, F]`` (the last layer's output, as in Choi et al.)."""

    def __init__(self, c_in: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in + i * growth, growth, 3, 1, 1, bias=False), *bn_act(growth, nn.ReLU()))
            for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            y = layer(x)
            x = torch.cat([y, x], 1) if i + 1 < len(self.layers) else y
        return y


__all__ = ["MASK_PARTS", "TFC", "MaskSeparator", "bn_act"]
