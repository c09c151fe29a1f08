"""Listen-level sanity pictures: log-frequency spectrograms of the mixture and stems, piano roll."""
from __future__ import annotations

import json
import os

import numpy as np
import soundfile as sf

from dawsep.train.data.score import STEMS, read_label_midi


def _spec_db(x: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    mono = x.mean(axis=1) if x.ndim == 2 else x
    n = 1 + max(0, len(mono) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    frames = mono[idx] * np.hanning(n_fft)[None, :]
    mag = np.abs(np.fft.rfft(frames, axis=1)).T
    return 20 * np.log10(mag + 1e-6)


def plot_song(song_dir: str, png: str, max_seconds: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(song_dir, "meta.json")) as fh:
        meta = json.load(fh)
    sr = meta["sample_rate"]
    tracks = ["mixture"] + [s for s in STEMS if s in meta["stems_present"]]
    fig, axes = plt.subplots(len(tracks) + 1, 1, figsize=(14, 2.1 * (len(tracks) + 1)), sharex=True)
    hop = 512
    for ax, name in zip(axes, tracks):
        x, _ = sf.read(os.path.join(song_dir, f"{name}.flac"), dtype="float32")
        if max_seconds:
            x = x[: int(max_seconds * sr)]
        s = _spec_db(x, hop=hop)
        freqs = np.fft.rfftfreq(2048, 1 / sr)
        times = np.arange(s.shape[1]) * hop / sr
        vmax = s.max()
        ax.pcolormesh(times, freqs[1:], s[1:], shading="auto", vmin=vmax - 80, vmax=vmax, cmap="magma")
        ax.set_yscale("log")
        ax.set_ylim(30, sr / 2)
        ax.set_ylabel(f"{name}\nHz")
    notes, pedal = read_label_midi(os.path.join(song_dir, "piano.mid"))
    ax = axes[-1]
    for on, off, p, v in notes:
        ax.add_patch(plt.Rectangle((on, p - 0.4), off - on, 0.8, color=plt.cm.viridis(v / 127)))
    down = None
    for t, v in pedal:
        if v >= 64 and down is None:
            down = t
        elif v < 64 and down is not None:
            ax.axvspan(down, t, color="orange", alpha=0.15, lw=0)
            down = None
    ax.set_ylim(20, 109)
    ax.set_ylabel("piano.mid\nMIDI pitch")
    ax.set_xlabel("seconds (piano roll: colour = velocity, orange = sustain pedal)")
    parts = ", ".join(f"{p['stem']}:{p['program']}" for p in meta["parts"])
    fonts = ", ".join(sorted({os.path.basename(p["soundfont"]) for p in meta["parts"]}))
    fig.suptitle(f"{meta['split']}/{meta['name']}  {meta['info'].get('style')}  {meta.get('source') or ''}  "
                 f"programs [{parts}]  soundfonts [{fonts}]", fontsize=9)
    axes[0].set_xlim(0, meta["seconds"] if not max_seconds else min(max_seconds, meta["seconds"]))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=64)
    plt.close(fig)
