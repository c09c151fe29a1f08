"""The shipped separator's piano stem of every corpus mixture: the transcriber's "separated" condition.

The piano preset transcribes what the separator leaves of the piano, artefacts included, so the
transcriber is trained on that (issue 19), not only on the simulated residue of
``TranscriptionDataset._residue``. For every song with a mixture (kinds ``gen`` and ``m21``) this
writes ``<song>/piano_separated.flac`` (stereo, 44.1 kHz, 24-bit) and ``piano_separated.json``
naming the separator (name and sha256) it came from; a song whose file came from another model
is redone, so changing the shipped separator and rerunning refreshes the condition.

Songs the separator trained on are separated more cleanly than unseen ones; the validation split
(never trained on) carries the honest figure.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Iterable

import numpy as np
import soundfile as sf

from dawsep import atomic
from dawsep.train.data.corpus import iter_songs

#: file stem of the separated piano (``<song>/<SEPARATED_STEM>.flac``; also its int16 cache name)
SEPARATED_STEM = "piano_separated"
#: song kinds that have a mixture to separate (solo-piano songs have none)
MIXTURE_KINDS = ("gen", "m21")


def provenance_path(song_dir: str) -> str:
    return os.path.join(song_dir, f"{SEPARATED_STEM}.json")


def is_current(song_dir: str, model_sha256: str) -> bool:
    """The song's separated piano exists and came from the separator with ``model_sha256``."""
    try:
        with open(provenance_path(song_dir)) as fh:
            prov = json.load(fh)
    except (OSError, ValueError):
        return False
    return prov.get("model_sha256") == model_sha256 and os.path.exists(os.path.join(song_dir, f"{SEPARATED_STEM}.flac"))


def has_separated(song_dir: str) -> bool:
    """A separated piano (from any separator) is there to train on."""
    return os.path.exists(provenance_path(song_dir)) and os.path.exists(os.path.join(song_dir, f"{SEPARATED_STEM}.flac"))


def separate_corpus(root: str, splits: Iterable[str] = ("train", "valid"), model: str = "default", threads: int = 1,
                    log: Callable[[str], None] | None = print) -> dict:
    """Write the separated piano of every mixture in ``splits`` of the corpus at ``root``.

    Resumable (current songs are skipped). Returns counts: ``done``, ``skipped``, ``seconds``
    (audio separated) and ``wall_s``.
    """
    from dawsep.separate import Separator

    sep = Separator(model, threads=threads, stems=("piano",))  # a conditioned model computes the piano only
    piano = sep.stem_index("piano")
    sha = sep.info.sha256
    todo = [(split, path) for split in splits for path, meta in iter_songs(root, split)
            if meta.get("kind") in MIXTURE_KINDS]
    done = skipped = 0
    audio_s, t0 = 0.0, time.monotonic()
    for i, (split, path) in enumerate(todo, 1):
        if is_current(path, sha):
            skipped += 1
            continue
        mix, sr = sf.read(os.path.join(path, "mixture.flac"), dtype="float32", always_2d=True)
        if sr != sep.sample_rate:
            raise ValueError(f"{path}: mixture at {sr} Hz, separator at {sep.sample_rate} Hz")
        y = sep.separate_array(np.ascontiguousarray(mix.T))[piano]            # (2, samples)
        dest = os.path.join(path, f"{SEPARATED_STEM}.flac")
        tmp = atomic.temporary_path(dest)
        sf.write(tmp, np.clip(y.T, -1.0, 1.0), sr, subtype="PCM_24", format="FLAC")
        atomic.commit(tmp, dest)
        prov = {"model": sep.info.name, "model_sha256": sha, "source": "mixture.flac", "stem": "piano"}
        atomic.write_bytes(provenance_path(path), json.dumps(prov, indent=1).encode())
        done += 1
        audio_s += mix.shape[0] / sr
        if log:
            wall = time.monotonic() - t0
            log(f"[{i}/{len(todo)}] {split}/{os.path.basename(path)} ({audio_s / max(wall, 1e-9):.1f}x real time)")
    return {"done": done, "skipped": skipped, "seconds": audio_s, "wall_s": time.monotonic() - t0}
