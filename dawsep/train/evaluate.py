"""Separation quality on the held-out test split, through the shipped runtime path.

Models are run as users run them: the ONNX file through :class:`dawsep.separate.Separator`
(chunking and cross-fades included), never the torch module. Songs are the ``test`` split's
mixtures (kinds ``gen`` and ``m21``: every stem rendered), whose soundfonts (MuseScore General)
and music21 composers never appear in training or validation.

Metric (DESIGN.md conventions): per stem and song, 10·log10(|s|²/|s − ŝ|²) on 1 s chunks,
median over chunks whose reference is not silent, then median over songs
(:mod:`dawsep.metrics`). It is the energy-ratio SDR of the MDX
challenges, chunked as museval does, without BSSEval's 512-tap distortion filter (which would
forgive linear filtering and cost minutes per song on 2 cores); beside it the same metric for
the mixture-as-estimate (floor) and the IRM oracle (masking upper bound) on the same audio.
"""
from __future__ import annotations

import os
import time

import numpy as np

from dawsep.metrics import sdr_stems, summarize
from dawsep.train.data.score import STEMS


def test_songs(root: str, limit: int | None = None, seconds: float | None = None):
    """``[(name, stems (5, 2, T))]`` for the test split's full-band mixtures (evenly spaced if limited)."""
    from dawsep.train.data.dataset import load_songs, read_excerpt

    songs = load_songs(root, "test", ("gen", "m21"))
    if not songs:
        raise FileNotFoundError(f"no test songs under {root}; build the corpus with `make data`")
    if limit and limit < len(songs):
        idx = np.unique(np.linspace(0, len(songs) - 1, limit).round().astype(int))
        songs = [songs[i] for i in idx]
    out = []
    for s in songs:
        n = s.samples if seconds is None else min(s.samples, int(seconds * 44100))
        out.append((s.meta["name"], np.stack([read_excerpt(s, k, 0, n) for k in STEMS])))
    return out


def baselines(songs, n_fft: int = 2048, hop: int = 1024, n_bins: int = 768) -> dict:
    """Mixture-as-estimate, ``mix / 5`` and the IRM oracle (with the model's STFT and cut-off)."""
    from dawsep.train.train_separator import irm_oracle

    mix_rows, uni_rows, irm_rows = [], [], []
    for _, stems in songs:
        mix = stems.sum(0)
        mix_rows.append(sdr_stems(stems, np.broadcast_to(mix, stems.shape)))
        uni_rows.append(sdr_stems(stems, np.broadcast_to(mix / len(stems), stems.shape)))
        irm_rows.append(sdr_stems(stems, irm_oracle(stems, n_fft, hop, n_bins)))
    return {"mixture": summarize(mix_rows), "uniform": summarize(uni_rows), "irm": summarize(irm_rows)}


def evaluate_model(model_path: str, songs, threads: int = 2, overlap: float = 0.25) -> dict:
    """SDR table of one separator ONNX over ``songs``, plus its real-time factor on them."""
    from dawsep.separate import Separator

    sep = Separator(model_path, threads=threads, overlap=overlap)
    order = [sep.stems.index(s) for s in STEMS]
    rows, audio_s, wall = [], 0.0, 0.0
    for _, stems in songs:
        mix = stems.sum(0)
        t = time.perf_counter()
        est = sep.separate_array(mix)[order]
        wall += time.perf_counter() - t
        audio_s += mix.shape[1] / sep.sample_rate
        rows.append(sdr_stems(stems, est))
    res = summarize(rows)
    res.update(songs=len(rows), rtf=round(audio_s / wall, 2), threads=threads,
               bytes=os.path.getsize(sep.info.path), arch=sep.info.architecture.get("arch"))
    return res
