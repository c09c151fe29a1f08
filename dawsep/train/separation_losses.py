"""Owns the separators' training losses: waveform/complex-spectrogram L1, magnitude MSE, and the
conditioned models' per-stem estimate of them (``--loss``, ``--stems-per-item``).

Every loss maps ``(estimate or model, mix [B, 2, T], ref [B, S, 2, T])`` to ``(loss, parts)``,
``parts`` the waveform and spectral terms as floats for the log.
"""
from __future__ import annotations

import torch

from dawsep.train.stft import STFT


def _relative_mse(E: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Mean over items of ``mean((E - R)^2) / mean(R^2)``: loud and quiet excerpts weigh the same."""
    dims = tuple(range(1, E.dim()))
    return ((E - R).pow(2).mean(dims) / (R.pow(2).mean(dims) + 1e-8)).mean()


def spectral_mask_loss(model, mix: torch.Tensor, ref: torch.Tensor):
    """``mse_mag_spec``: Open-Unmix's training loss, the magnitude MSE of masked mixture
    spectrograms against the stems' (:meth:`MaskSeparator.masked_magnitudes`), no iSTFT.
    ``mix [B, 2, T]``, ``ref [B, S, 2, T]`` -> (loss, parts) like :func:`separation_loss`."""
    E = model.masked_magnitudes(mix)  # [B, S, 2, F, N]
    R = model.stft(ref.flatten(1, 2))[..., :model.n_bins, :].pow(2).sum(2).add(1e-10).sqrt()
    spec = _relative_mse(E, R.reshape(E.shape))
    return spec, {"wave": 0.0, "spec": float(spec.detach())}


def separation_loss(est: torch.Tensor, ref: torch.Tensor, stft: STFT, spec_weight: float = 1.0, kind: str = "l1"):
    """``est, ref [B, S, 2, T]`` -> (loss, {"wave": ..., "spec": ...}) as floats for logging.

    ``l1``: L1 on the waveform + ``spec_weight`` x L1 on the complex spectrogram (``spec_weight``
    0: the waveform L1 of Conv-TasNet and Demucs). ``mse_mag``: MSE between the
    magnitude spectrograms, per item divided by the reference's energy (loud and quiet excerpts
    weigh the same). L1 is median-seeking: a stem that is only sometimes present (drums, guitar)
    is best predicted silent while the model is unsure, which starves those stems early in
    training; the mean-seeking MSE does not (measured, see docs/BENCHMARKS.md).
    """
    wave = (est - ref).abs().mean()
    if kind == "mse_mag":
        E = stft(est.flatten(1, 2)).pow(2).sum(2).add(1e-10).sqrt()
        R = stft(ref.flatten(1, 2)).pow(2).sum(2).add(1e-10).sqrt()
        spec = _relative_mse(E, R)
        return spec, {"wave": float(wave.detach()), "spec": float(spec.detach())}
    if not spec_weight:  # waveform L1 alone (Conv-TasNet, Demucs): skip the STFTs
        return wave, {"wave": float(wave.detach()), "spec": 0.0}
    spec = (stft(est.flatten(1, 2)) - stft(ref.flatten(1, 2))).abs().mean()
    loss = wave + spec_weight * spec
    return loss, {"wave": float(wave.detach()), "spec": float(spec.detach())}


def sample_stems(step: int, batch: int, n_stems: int, per_item: int, seed: int = 0) -> torch.Tensor:
    """``stem_ids [batch, K]`` int64, ``K = per_item`` distinct stems per item (0 or >= n_stems:
    all, in order), uniformly drawn from a generator seeded by ``(seed, step)``: a resumed run
    draws what an uninterrupted one would."""
    if per_item <= 0 or per_item >= n_stems:
        return torch.arange(n_stems).expand(batch, -1)
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.rand(batch, n_stems, generator=g).argsort(1)[:, :per_item]


def _pick(x: torch.Tensor, stem_ids: torch.Tensor) -> torch.Tensor:
    """``x [B, S, ...]``, ``stem_ids [B, K]`` -> ``[B, K, ...]``."""
    idx = stem_ids.reshape(stem_ids.shape + (1,) * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, idx)


def conditioned_loss(model, mix: torch.Tensor, ref: torch.Tensor, stem_ids: torch.Tensor, stft: STFT,
                     kind: str = "mse_mag", spec_weight: float = 1.0):
    """Loss of a conditioned separator trained on the stems ``stem_ids [B, K]`` of each item
    (``mix [B, 2, T]``, ``ref [B, S, 2, T]``) -> (loss, parts) like :func:`separation_loss`.

    An unbiased estimate, over the uniformly drawn stems, of the same ``kind`` of loss over all
    stems, and equal to it when ``K = S``: the L1 terms are means over stems, and the magnitude
    MSEs (``mse_mag``, ``mse_mag_spec``) keep each item's normaliser the energy of *all* its
    stems, not of the drawn one (a drawn stem that is silent in the excerpt would otherwise
    divide by ~0).
    """
    sel = _pick(ref, stem_ids)
    if kind == "l1":
        return separation_loss(model(mix, stem_ids), sel, stft, spec_weight, "l1")
    b, k = stem_ids.shape
    if kind == "mse_mag_spec":
        E = model.masked_magnitudes(mix, stem_ids)  # [B, K, 2, F, N]
        R_all = model.stft(ref.flatten(1, 2))[..., :model.n_bins, :].pow(2).sum(2).add(1e-10).sqrt()
        wave = 0.0
    elif kind == "mse_mag":
        est = model(mix, stem_ids)
        E = stft(est.flatten(1, 2)).pow(2).sum(2).add(1e-10).sqrt()
        R_all = stft(ref.flatten(1, 2)).pow(2).sum(2).add(1e-10).sqrt()
        wave = float((est - sel).abs().mean().detach())
    else:
        raise ValueError(f"loss {kind!r}: allowed l1, mse_mag, mse_mag_spec")
    R_all = R_all.reshape(b, ref.shape[1], -1)  # [B, S, 2*F*N]
    E, R = E.reshape(b, k, -1), _pick(R_all, stem_ids)
    spec = ((E - R).pow(2).mean((1, 2)) / (R_all.pow(2).mean((1, 2)) + 1e-8)).mean()
    return spec, {"wave": wave, "spec": float(spec.detach())}
