"""The conditioned separator of seed 003: a TFC-TDF U-Net told which stem to separate, with
LaSAFT blocks in the encoder and decoder and GPoCM (or FiLM) modulation in the decoder.

One network serves every stem (Choi et al. 2021, "LaSAFT: Latent Source Attentive Frequency
Transformation for Conditioned Source Separation"; the seed's slides):

- The condition is the stem's index in ``STEMS``, embedded (``nn.Embedding``: a one-hot vector
  times a matrix) into ``z [E]``.
- **LaSAFT** replaces the TDF of a TFC-TDF block: the TDF's second linear layer is copied
  ``n_latent`` times (latent sources: "bowed string, low", "percussive, high", ...), and the
  block returns the attention-weighted sum of the copies, ``softmax(Q K^T / sqrt(d_k)) V'``
  with ``Q = W z`` and learnt keys ``K [n_latent, d_k]``. The weights depend on the condition
  only; the copies see the data.
- **GPoCM** (gated point-wise convolutional modulation) in each decoder block, between the TFC
  and the LaSAFT: ``x * sigmoid(omega x + beta)`` with the 1x1 "convolution" ``omega [C, C]``
  and ``beta [C]`` generated from ``z``. ``modulation="film"`` is the ablation:
  ``gamma x + beta`` per channel, no channel mixing and no gate.
- Front and back end are :class:`~dawsep.train.mask_separator.MaskSeparator`'s (in-graph STFT,
  compressed loudness-normalised input, the ``fold`` of adjacent bins into channels of the
  TFC-TDF U-Net, iSTFT to exactly the input length). The mask is per stem and independent of
  the other stems (``"sigmoid"``: magnitude mask in [0, 1] with the mixture phase, the default;
  or ``"complex"`` without the across-stem projection): a stem computed alone then equals the
  same stem computed with the others, which is what lets a host that wants one stem pay for one.
  The softmax mask and the mixture-consistency projection need all stems at once and are refused.

Cost: the mixture's STFT, the folded input layer and the first TFC (the largest feature map) do
not depend on the condition and are computed once per mixture; everything after them runs once
per requested stem. ``forward(mix)`` gives all stems (the usual ``[B, S, 2, T]`` contract),
``forward(mix, stem_ids)`` only the ones asked for.

Trunk tensors are ``[B, C, N(time), F(freq)]`` as in :mod:`dawsep.train.mask_separator`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dawsep.train.mask_separator import TFC, MaskSeparator, bn_act

MODULATIONS = ("gpocm", "film")
#: masks that keep each stem independent of the others (see the module docstring)
CONDITIONED_MASKS = ("sigmoid", "complex")


class LaSAFT(nn.Module):
    """Latent source-attentive frequency transformation: ``x [B, C, N, F], z [B, E] -> [B, C, N, F]``.

    ``F -> max(F/bf, min_units)`` shared (BN, ReLU), then ``n_latent`` copies of the second
    layer back to ``F`` (one ``Linear(u, n_latent*F)``; BN, ReLU), mixed by the condition's
    attention over the copies.
    """

    def __init__(self, channels: int, f: int, bf: int, n_latent: int, embed_dim: int, d_k: int,
                 min_units: int = 16):
        super().__init__()
        u = max(f // bf, min_units)
        self.n_latent, self.scale = n_latent, 1.0 / math.sqrt(d_k)
        self.shared = nn.Sequential(nn.Linear(f, u, bias=False), *bn_act(channels, nn.ReLU()))
        self.copies = nn.Sequential(nn.Linear(u, n_latent * f, bias=False), *bn_act(channels, nn.ReLU()))
        self.query = nn.Linear(embed_dim, d_k)
        self.keys = nn.Parameter(torch.randn(n_latent, d_k))

    onnx_matmul_transposed = "keys"  # exported as a MatMul by keys.T (init_from maps it back)

    def attention(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, E]`` -> weights of the latent sources ``[B, n_latent]`` (rows sum to 1)."""
        return torch.softmax(self.query(z) @ self.keys.t() * self.scale, dim=-1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b, c, n, f = x.shape
        v = self.copies(self.shared(x)).reshape(b, c, n, self.n_latent, f)  # V' per latent source
        w = self.attention(z).reshape(b, 1, 1, 1, self.n_latent)
        return (w @ v).reshape(b, c, n, f)


class GPoCM(nn.Module):
    """Gated point-wise convolutional modulation: ``x [B, C, N, F], z [B, E] -> [B, C, N, F]``,
    ``x * sigmoid(omega(z) x + beta(z))`` with ``omega [B, C, C]`` mixing channels per bin."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.channels = channels
        self.generate = nn.Linear(embed_dim, channels * channels + channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b, c, n, f = x.shape
        p = self.generate(z)
        omega, beta = p[:, :c * c].reshape(b, c, c), p[:, c * c:].reshape(b, c, 1)
        gate = torch.sigmoid(omega @ x.reshape(b, c, n * f) + beta)
        return x * gate.reshape(b, c, n, f)


class FiLM(nn.Module):
    """Feature-wise linear modulation (the ablation): ``x [B, C, N, F], z [B, E] -> gamma x + beta``
    per channel; starts as the identity (``gamma = 1``, ``beta = 0``)."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.channels = channels
        self.generate = nn.Linear(embed_dim, 2 * channels)
        with torch.no_grad():
            self.generate.weight.mul_(0.1)
            self.generate.bias.zero_()
            self.generate.bias[:channels] = 1.0

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        p = self.generate(z)
        c = self.channels
        return p[:, :c, None, None] * x + p[:, c:, None, None]


class LaSAFTBlock(nn.Module):
    """TFC, then (decoder) the modulation, then a residual LaSAFT:
    ``x [B, c_in, N, F], z [B, E] -> [B, c, N, F]``."""

    def __init__(self, c_in: int, c: int, f: int, layers: int, bf: int, n_latent: int, embed_dim: int,
                 d_k: int, modulation: str | None = None):
        super().__init__()
        self.tfc = TFC(c_in, c, layers)
        self.modulation = {"gpocm": GPoCM, "film": FiLM}[modulation](c, embed_dim) if modulation else None
        self.lasaft = LaSAFT(c, f, bf, n_latent, embed_dim, d_k)

    def forward(self, x: torch.Tensor, z: torch.Tensor, tfc_done: bool = False) -> torch.Tensor:
        """``tfc_done``: ``x`` is already the TFC's output (computed once for all conditions)."""
        if not tfc_done:
            x = self.tfc(x)
        if self.modulation is not None:
            x = self.modulation(x, z)
        return x + self.lasaft(x, z)


class LaSAFTNet(MaskSeparator):
    """Conditioned LaSAFT-GPoCM TFC-TDF U-Net: ``forward(mix [B, 2, T], stem_ids [B, K] int64 or
    None) -> [B, K, 2, T]`` (``None``: every stem, ``K = n_stems``, in ``self.stems`` order).

    Layout as :class:`~dawsep.train.separators.TFCTDFUNet`: ``fold`` adjacent bins into channels,
    a 1x1 input layer, LaSAFT blocks at ``len(channels) - 1`` scales plus the bottleneck, 2x2
    stride-2 conv down / transposed conv up, concatenated skips, a 1x1 head giving one stem's
    mask (``mask_parts * fold`` channels) per condition. The encoder and bottleneck blocks carry
    LaSAFT (no modulation), the decoder blocks the modulation and LaSAFT.

    ``n_latent``: TDF copies (latent sources) per LaSAFT; ``embed_dim``: condition embedding
    size ``E``; ``d_k``: attention key size; ``modulation``: ``"gpocm"`` | ``"film"``.
    """

    arch = "lasaft"
    conditioned = True  # forward takes stem_ids; trainers and the exporter look for this
    # the first block's TFC runs once per mixture, called from here: the exporter scopes it "tfc"
    onnx_scope_aliases = {"tfc": "enc.0.tfc"}

    def __init__(self, channels: tuple[int, ...] = (32, 48, 64, 96, 128), layers: int = 2, bf: int = 8,
                 fold: int = 8, n_latent: int = 4, embed_dim: int = 32, d_k: int = 32,
                 modulation: str = "gpocm", mask: str = "sigmoid", consistent: bool = False, **spec):
        if mask not in CONDITIONED_MASKS:
            raise ValueError(f"mask {mask!r}: a conditioned model needs a per-stem mask, one of "
                             f"{list(CONDITIONED_MASKS)} (softmax couples the stems)")
        if consistent:
            raise ValueError("consistent=True projects the masks over all stems; a conditioned model "
                             "computes stems one at a time")
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation {modulation!r}: allowed {list(MODULATIONS)}")
        super().__init__(mask=mask, consistent=False, **spec)
        self._config.update(channels=list(channels), layers=layers, bf=bf, fold=fold, n_latent=n_latent,
                            embed_dim=embed_dim, d_k=d_k, modulation=modulation)
        depth = len(channels) - 1  # the last entry is the bottleneck
        f = self.n_bins // fold
        if self.n_bins % fold or f % (1 << depth):
            raise ValueError(f"n_bins {self.n_bins} / fold {fold} must be divisible by 2**{depth}")
        self.fold, self.frame_multiple = fold, 1 << depth
        lat = dict(bf=bf, n_latent=n_latent, embed_dim=embed_dim, d_k=d_k)
        self.embedding = nn.Embedding(self.n_stems, embed_dim)
        self.first = nn.Sequential(nn.Conv2d(4 * fold, channels[0], 1, bias=False), *bn_act(channels[0], nn.ReLU()))
        self.enc, self.down, self.up, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(depth):
            c, c_next = channels[i], channels[i + 1]
            self.enc.append(LaSAFTBlock(c, c, f >> i, layers, **lat))
            self.down.append(nn.Sequential(nn.Conv2d(c, c_next, 2, 2, bias=False), *bn_act(c_next, nn.ReLU())))
        self.mid = LaSAFTBlock(channels[-1], channels[-1], f >> depth, layers, **lat)
        for i in reversed(range(depth)):
            c, c_next = channels[i], channels[i + 1]
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c_next, c, 2, 2, bias=False), *bn_act(c, nn.ReLU())))
            self.dec.append(LaSAFTBlock(2 * c, c, f >> i, layers, modulation=modulation, **lat))
        self.head = nn.Conv2d(channels[0], self.mask_parts * fold, 1)
        self._head_init(self.head, n_out=1)

    def all_stems(self, batch: int, device=None) -> torch.Tensor:
        """``stem_ids [batch, n_stems]``: every stem, in ``self.stems`` order."""
        return torch.arange(self.n_stems, device=device).expand(batch, -1)

    def trunk(self, x: torch.Tensor, stem_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, 4, N, F]``, ``stem_ids [B, K]`` -> masks ``[B, K*mask_parts, N, F]`` (stem-major)."""
        b, c, n, f = x.shape
        if stem_ids is None:
            stem_ids = self.all_stems(b, x.device)
        k = stem_ids.shape[1]
        # [B, 4, N, F] -> [B, 4*fold, N, F/fold]: channel (c, j) holds bin fold*q + j.
        h = x.reshape(b, c, n, f // self.fold, self.fold).permute(0, 1, 4, 2, 3).reshape(b, c * self.fold, n, -1)
        h = self.enc[0].tfc(self.first(h))  # condition-free: once per mixture, shared by its K stems
        h = h.unsqueeze(1).expand(-1, k, -1, -1, -1).flatten(0, 1)  # [B*K, C, N, F/fold], stem-major per item
        z = self.embedding(stem_ids.reshape(-1))  # [B*K, E]
        skips = []
        for i, (enc, down) in enumerate(zip(self.enc, self.down)):
            h = enc(h, z, tfc_done=i == 0)
            skips.append(h)
            h = down(h)
        h = self.mid(h, z)
        for up, dec in zip(self.up, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], 1), z)
        m = self.head(h)  # [B*K, parts*fold, N, F/fold]
        p = m.shape[1] // self.fold
        m = m.reshape(-1, p, self.fold, n, f // self.fold).permute(0, 1, 3, 4, 2)  # [B*K, parts, N, F/fold, fold]
        return m.reshape(b, -1, n, f)

    def forward(self, mix: torch.Tensor, stem_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``mix [B, 2, T]``, ``stem_ids [B, K]`` int64 indices into ``self.stems`` (None: all)
        -> ``stems [B, K, 2, T]``; row ``k`` of item ``b`` is stem ``stem_ids[b, k]``."""
        return self._apply_masks(*self._masks(mix, stem_ids), mix.shape[-1])

