"""STFT / iSTFT as a two-stage (Cooley-Tukey) DFT of plain matmuls, so both export to plain ONNX
(opset 17, legacy exporter) and run fast in ONNX Runtime.

``torch.istft`` does not export, and the ONNX ``STFT`` op has no inverse, so both directions are
written with ops every runtime has: framing by reshapes and slices, the DFT as two matmuls, and
the overlap-add as shifted adds divided by the overlap-added squared window.

The DFT is factorised: with ``n_fft = a*b``, time ``t = b*t1 + t2`` and bin ``k = k1 + a*k2``,
``e^{-2 pi i k t/n} = e^{-2 pi i k1 t1/a} * e^{-2 pi i k t2/n}`` (the ``k2*t1`` term is a whole turn).
Stage 1 is an ``a``-point DFT over ``t1`` shared by all ``t2``; stage 2 contracts ``t2`` with one
``[b, n_bins/a]`` matrix per ``k1`` (twiddle included). That is ``O(n_fft (a + n_bins/a))`` per
frame instead of the dense DFT's ``O(n_fft * n_bins)``, about 10x fewer flops at 2048/1025, and
all of it in large batched matmuls. The inverse runs the same two stages backwards
(``t = t1 + b*t2``). The dense-DFT convolutions this replaces spent most of a mask model's
ONNX Runtime time in ``ConvTranspose`` (measured: 73 % of the default separator's).

The DFT tables are *generated* in ``forward`` from index arithmetic tied to the input's length
(:func:`_arange`), never stored: nothing becomes an initializer, so the graph holds only trained
weights (what :mod:`dawsep.train.init_from` maps back) and no state-dict key depends on the
transform. The tables are small (``~n_fft * (a + n_bins/a)`` values), so generating them is cheap.

Eager torch runs the same transforms with ``torch.stft``/``torch.istft`` (FFT): identical
frames and normalisation, equal to float rounding, and cheaper in training. The matmul form is
used whenever the module is traced or exported (``use_fft=None``, the default), or always with
``use_fft=False``.

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
    if use_fft is None:  # auto: FFT in eager torch, matmuls when traced for ONNX
        return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())
    return use_fft


def _split(n_fft: int) -> tuple[int, int]:
    """``(a, b)`` with ``a * b == n_fft`` and ``a`` the largest divisor ``<= sqrt(n_fft)``."""
    a = max(d for d in range(1, math.isqrt(n_fft) + 1) if n_fft % d == 0)
    return a, n_fft // a


def _phasor(k: torch.Tensor, t: torch.Tensor, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of ``2 pi k t / n`` for integer ``k [..., 1]``, ``t [1, ...]``; the product is
    reduced ``mod n`` in integer arithmetic first, so float32 stays accurate for large ``k*t``."""
    phase = ((k * t) % n).to(like.dtype) * (2 * math.pi / n)
    return torch.cos(phase), torch.sin(phase)


def _overlap_add(frames: torch.Tensor, n: int, hop: int) -> torch.Tensor:
    """``frames [M, n, N]`` (time, then frame) -> ``[M, (N + R - 1) * hop]``, frame ``j`` added at
    ``j * hop``; ``R = ceil(n / hop)``. Shifted adds of ``hop``-long blocks: no dense kernel.
    ``n`` is passed, not read from the shape, so the exporter keeps the pad a constant."""
    m = frames.shape[0]
    r_blocks = -(-n // hop)
    if r_blocks * hop != n:
        frames = F.pad(frames, (0, 0, 0, r_blocks * hop - n))
    blocks = frames.reshape(m, r_blocks, hop, frames.shape[-1])
    out = None
    for r in range(r_blocks):  # block r of frame j lands in output block j + r
        part = F.pad(blocks[:, r], (r, r_blocks - 1 - r))
        out = part if out is None else out + part
    return out.transpose(1, 2).reshape(m, -1)  # [M, N+R-1, hop] -> samples


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
            y = self._matmul_stft(x.reshape(-1, x.shape[-1]))
        return y.reshape(x.shape[0], x.shape[1], 2, self.n_bins, y.shape[-1])

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """``x [M, T]`` -> windowed frames ``[M, n_fft, N]`` (time, then frame), frame ``j``
        centred on sample ``j * hop``: ``R = ceil(n_fft / hop)`` shifted views of ``hop``-blocks."""
        n, hop = self.n_fft, self.hop
        r_blocks = -(-n // hop)
        m, n_frames = x.shape[0], x.shape[-1] // hop + 2
        n_blocks = n_frames + r_blocks - 1
        y = F.pad(x, (n // 2, n // 2 + (r_blocks + 1) * hop))  # zeros past the STFT's own padding never reach a frame
        blocks = y[:, : n_blocks * hop].reshape(m, n_blocks, hop).transpose(1, 2)  # [M, hop, blocks]
        frames = torch.cat([blocks[:, :, r: r + n_frames] for r in range(r_blocks)], 1)
        if r_blocks * hop != n:
            frames = frames[:, :n]
        return frames * (_hann(n, x) * self.scale)[:, None]

    def _matmul_stft(self, x: torch.Tensor) -> torch.Tensor:
        """``x [M, T]`` -> ``[M, 2, n_bins, N]`` by the two-stage DFT (module docstring)."""
        n, f = self.n_fft, self.n_bins
        a, b = _split(n)
        k2n = -(-f // a)  # stage-2 outputs per k1: bins k1 + a*k2 cover 0..f-1
        frames = self._frames(x)
        m, n_frames = frames.shape[0], frames.shape[-1]
        # Stage 1: U[(re|im, k1), (t2, j)] = sum_t1 e^{-2 pi i k1 t1 / a} x[b*t1 + t2, j].
        c, s = _phasor(_arange(a, x)[:, None], _arange(a, x)[None, :], a, x)  # [k1, t1]
        u = torch.matmul(torch.cat([c, -s], 0), frames.reshape(m, a, b * n_frames))
        u = u.reshape(m, 2, a, b, n_frames).transpose(1, 2).reshape(m, a, 2 * b, n_frames)
        # Stage 2, per k1: X[k1 + a*k2] = sum_t2 e^{-2 pi i k t2 / n} U[k1, t2].
        k = (_arange(k2n, x)[:, None] * a + _arange(a, x)[None, :]).transpose(0, 1)  # [k1, k2]
        c, s = _phasor(k[:, :, None], _arange(b, x)[None, None, :], n, x)  # [k1, k2, t2]
        g = torch.cat([torch.cat([c, s], 2), torch.cat([-s, c], 2)], 1)  # [a, (re|im, k2), (re|im, t2)]
        X = torch.matmul(g, u)  # [M, k1, (re|im, k2), N]
        X = X.reshape(m, a, 2, k2n, n_frames).permute(0, 2, 3, 1, 4).reshape(m, 2, k2n * a, n_frames)
        return X[:, :, :f] if k2n * a != f else X


class ISTFT(nn.Module):
    """``X [..., 2, n_bins, N], length -> x [..., length]``, the exact inverse of :class:`STFT`.

    Each frame is the one-sided inverse DFT (bins above ``n_bins`` taken as zero) times the
    synthesis window; frames are overlap-added and divided by the overlap-added squared window,
    computed in-graph so any number of frames works.
    """

    def __init__(self, n_fft: int = 2048, hop: int = 1024, n_bins: int | None = None, use_fft: bool | None = None):
        super().__init__()
        self.n_fft, self.hop, self.use_fft = int(n_fft), int(hop), use_fft
        self.n_bins = int(n_bins or n_fft // 2 + 1)
        if not (0 < self.n_bins <= n_fft // 2 + 1 and 0 < hop <= n_fft // 2):
            raise ValueError(f"need 0 < n_bins <= n_fft/2+1 and 0 < hop <= n_fft/2 (got {n_bins}, {hop})")

    def forward(self, X: torch.Tensor, length) -> torch.Tensor:
        if _fft_path(self.use_fft):
            z = X.reshape((-1,) + X.shape[-3:]).permute(0, 2, 3, 1).contiguous()  # [M, F, N, 2]
            z = F.pad(z, (0, 0, 0, 0, 0, self.n_fft // 2 + 1 - self.n_bins))  # zero bins above the cut-off
            y = torch.istft(torch.view_as_complex(z), self.n_fft, self.hop, window=_hann(self.n_fft, X),
                            center=True, length=(X.shape[-1] - 1) * self.hop)[..., :length]
            return y.reshape(X.shape[:-3] + (y.shape[-1],))
        z = X.reshape(-1, 2, self.n_bins, X.shape[-1])
        w = _hann(self.n_fft, z)
        y = _overlap_add(self._matmul_frames(z) * w[:, None], self.n_fft, self.hop)
        wsum = _overlap_add((w * w)[None, :, None].expand(1, self.n_fft, z.shape[-1]), self.n_fft, self.hop)
        a = self.n_fft // 2
        y = y[:, a: a + length] / wsum[:, a: a + length]
        return y.reshape(X.shape[:-3] + (y.shape[-1],))

    def _matmul_frames(self, z: torch.Tensor) -> torch.Tensor:
        """``z [M, 2, n_bins, N]`` -> unwindowed frames ``[M, n_fft, N]``: the real part of the
        inverse DFT, bin 0 (and Nyquist) once and the others twice (conjugate pairs), ``/ n_fft``."""
        n, f = self.n_fft, self.n_bins
        a, b = _split(n)
        k2n = -(-f // a)
        m, n_frames = z.shape[0], z.shape[-1]
        if k2n * a != f:
            z = F.pad(z, (0, 0, 0, k2n * a - f))
        z = z.reshape(m, 2, k2n, a, n_frames).permute(0, 3, 1, 2, 4).reshape(m, a, 2 * k2n, n_frames)
        # Stage A, per k1: P[k1, t1] = sum_k2 s_k e^{2 pi i k t1 / n} Z[k1 + a*k2], t1 < b.
        k = (_arange(k2n, z)[:, None] * a + _arange(a, z)[None, :]).transpose(0, 1)  # [k1, k2]
        bin_scale = (2 - (k == 0).to(z.dtype) - (k == n // 2).to(z.dtype)) / n
        c, s = _phasor(_arange(b, z)[None, :, None], k[:, None, :], n, z)  # [k1, t1, k2]
        c, s = c * bin_scale[:, None, :], s * bin_scale[:, None, :]
        h = torch.cat([torch.cat([c, -s], 2), torch.cat([s, c], 2)], 1)  # [a, (re|im, t1), (re|im, k2)]
        p = torch.matmul(h, z)  # [M, k1, (re|im, t1), N]
        p = p.reshape(m, a, 2, b, n_frames).transpose(1, 2).reshape(m, 2 * a, b * n_frames)
        # Stage B: x[t1 + b*t2] = Re sum_k1 e^{2 pi i k1 t2 / a} P[k1, t1].
        c, s = _phasor(_arange(a, z)[:, None], _arange(a, z)[None, :], a, z)  # [t2, k1]
        return torch.matmul(torch.cat([c, -s], 1), p).reshape(m, n, n_frames)
