"""STFT / iSTFT as convolutions, so they export to plain ONNX (opset 17, legacy exporter).

``torch.istft`` does not export, and the ONNX ``STFT`` op has no inverse, so both directions are
written as a strided ``conv1d`` with windowed DFT kernels and a ``conv_transpose1d`` overlap-add
divided by the window-sum, all computed in the graph (see ENVIRONMENT.md).

The DFT kernels are *generated* in ``forward`` instead of stored: a stored table is
``2 * n_bins * n_fft`` floats (12.6 MB for 768 bins of a 2048-point FFT, twice with the inverse),
which would blow the 25 MB model budget. Generation costs about 18 ms per call for both
transforms at n_fft 2048 / 768 bins in ONNX Runtime on 2 cores (measured; ~4 % of a 10 s chunk).

Eager torch runs the same transforms with ``torch.stft``/``torch.istft`` (FFT): identical
frames and normalisation, equal to float rounding, and several times cheaper in training. The
convolution form is used whenever the module is traced or exported (``use_fft=None``, the
default), or always with ``use_fft=False``.

Layout: complex values are stacked real/imag on their own axis: ``[..., 2, F, N]``.
Only the first ``n_bins`` bins are computed; the inverse treats the bins above as zero (this is
the frequency cut-off of the separators, and it also cuts the cost of both transforms).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def _arange(n: int, like: torch.Tensor) -> torch.Tensor:
    """``arange(n)`` tied to ``like``'s (traced) length, so neither the exporter's constant
    propagation nor ONNX Runtime's folding can turn the tables built from it into stored weights."""
    return torch.arange(n, device=like.device) + like.shape[-1] * 0


def _hann(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    """Periodic Hann window [n_fft] (the one torch.stft uses), built in-graph."""
    t = _arange(n_fft, like).to(like.dtype)
    return 0.5 - 0.5 * torch.cos(t * (2 * math.pi / n_fft))


def _fft_path(use_fft: bool | None) -> bool:
    if use_fft is None:  # auto: FFT in eager torch, convolutions when traced for ONNX
        return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())
    return use_fft


def _dft_kernel(n_fft: int, n_bins: int, like: torch.Tensor) -> torch.Tensor:
    """Windowed DFT rows [2*n_bins, 1, n_fft]: ``cos(2 pi k t / n) w(t)`` then ``-sin(...) w(t)``.

    Generated per call (ONNX Runtime cannot fold it, see ``_arange``), so it is made cheap:
    with ``t = a*m + b`` the phasor ``e^{i 2 pi k t/n}`` is the product of two small tables
    ``e^{i 2 pi k a m/n}`` [F, n/m] and ``e^{i 2 pi k b/n}`` [F, m]: cos/sin on ~F*(n/m + m)
    values and one broadcast complex product instead of 2*F*n trig calls. Phase indices are
    reduced ``mod n`` in integer arithmetic first, so float32 stays accurate for large ``k*t``.
    """
    m = 1 << ((n_fft.bit_length() - 1) // 2) if n_fft & (n_fft - 1) == 0 else n_fft  # ~sqrt(n), divides n
    k = _arange(n_bins, like)[:, None]
    step = 2 * math.pi / n_fft
    hi = ((k * (_arange(n_fft // m, like) * m)[None, :]) % n_fft).to(like.dtype) * step  # [F, n/m]
    lo = ((k * _arange(m, like)[None, :]) % n_fft).to(like.dtype) * step  # [F, m]
    hr, hi_ = torch.cos(hi)[:, :, None], torch.sin(hi)[:, :, None]
    lr, li = torch.cos(lo)[:, None, :], torch.sin(lo)[:, None, :]
    w = _hann(n_fft, like)
    re = (hr * lr - hi_ * li).reshape(n_bins, n_fft) * w
    im = (hr * li + hi_ * lr).reshape(n_bins, n_fft) * w
    return torch.cat([re, -im], 0).unsqueeze(1)


class STFT(nn.Module):
    """``x [B, C, T] -> X [B, C, 2, n_bins, N]`` with ``N = T // hop + 2``.

    Zero padding (``n_fft//2`` left, ``n_fft//2 + hop`` right): reflect padding fails for inputs
    shorter than ``n_fft//2`` and zeros export as a plain ``Pad``; the extra ``hop`` on the right
    puts one more frame over the tail so the inverse never divides by a vanishing window-sum.
    ``normalized`` divides by ``sqrt(sum w^2)`` so a spectrogram L1 has the waveform's scale.
    """

    def __init__(self, n_fft: int = 2048, hop: int = 1024, n_bins: int | None = None, normalized: bool = False,
                 use_fft: bool | None = None):
        super().__init__()
        self.n_fft, self.hop, self.use_fft = int(n_fft), int(hop), use_fft
        self.n_bins = int(n_bins or n_fft // 2 + 1)
        if not (0 < self.n_bins <= n_fft // 2 + 1 and 0 < hop <= n_fft // 2):
            raise ValueError(f"need 0 < n_bins <= n_fft/2+1 and 0 < hop <= n_fft/2 (got {n_bins}, {hop})")
        self.scale = 1.0 / math.sqrt(3 * n_fft / 8) if normalized else 1.0  # sum of Hann^2 = 3n/8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fft_path(self.use_fft):
            y = F.pad(x.reshape(-1, x.shape[-1]), (0, self.hop))
            Y = torch.stft(y, self.n_fft, self.hop, window=_hann(self.n_fft, y), center=True, pad_mode="constant",
                           return_complex=True)[:, : self.n_bins] * self.scale
            y = torch.view_as_real(Y).permute(0, 3, 1, 2)  # [B*C, 2, F, N]
        else:
            kernel = _dft_kernel(self.n_fft, self.n_bins, x) * self.scale
            y = F.pad(x.reshape(-1, 1, x.shape[-1]), (self.n_fft // 2, self.n_fft // 2 + self.hop))
            y = F.conv1d(y, kernel, stride=self.hop)  # [B*C, 2F, N]
        return y.reshape(x.shape[0], x.shape[1], 2, self.n_bins, y.shape[-1])


class ISTFT(nn.Module):
    """``X [..., 2, n_bins, N], length -> x [..., length]``, the exact inverse of :class:`STFT`.

    Each frame is the one-sided inverse DFT (bins above ``n_bins`` taken as zero) times the
    synthesis window; frames are overlap-added by ``conv_transpose1d`` and divided by the
    overlap-added squared window, computed in-graph so any number of frames works.
    """

    def __init__(self, n_fft: int = 2048, hop: int = 1024, n_bins: int | None = None, use_fft: bool | None = None):
        super().__init__()
        self.n_fft, self.hop, self.use_fft = int(n_fft), int(hop), use_fft
        self.n_bins = int(n_bins or n_fft // 2 + 1)
        # One-sided inverse: bin 0 (and Nyquist) once, the others twice (conjugate pairs), / n.
        s = torch.full((self.n_bins,), 2.0 / n_fft)
        s[0] = 1.0 / n_fft
        if self.n_bins == n_fft // 2 + 1:
            s[-1] = 1.0 / n_fft
        self.register_buffer("bin_scale", torch.cat([s, s]).view(-1, 1, 1), persistent=False)

    def forward(self, X: torch.Tensor, length) -> torch.Tensor:
        if _fft_path(self.use_fft):
            z = X.reshape((-1,) + X.shape[-3:]).permute(0, 2, 3, 1).contiguous()  # [M, F, N, 2]
            z = F.pad(z, (0, 0, 0, 0, 0, self.n_fft // 2 + 1 - self.n_bins))  # zero bins above the cut-off
            y = torch.istft(torch.view_as_complex(z), self.n_fft, self.hop, window=_hann(self.n_fft, X),
                            center=True, length=(X.shape[-1] - 1) * self.hop)[..., :length]
            return y.reshape(X.shape[:-3] + (y.shape[-1],))
        n_frames = X.shape[-1]
        z = X.reshape(-1, 2 * self.n_bins, n_frames)
        kernel = _dft_kernel(self.n_fft, self.n_bins, z) * self.bin_scale.to(z.dtype)
        y = F.conv_transpose1d(z, kernel, stride=self.hop)  # [M, 1, (N-1)*hop + n_fft]
        w2 = _hann(self.n_fft, z).pow(2).view(1, 1, -1)
        wsum = F.conv_transpose1d(torch.ones_like(z[:1, :1, :]), w2, stride=self.hop)
        a = self.n_fft // 2
        y = y[..., a: a + length] / wsum[..., a: a + length]
        return y.reshape(X.shape[:-3] + (y.shape[-1],))
