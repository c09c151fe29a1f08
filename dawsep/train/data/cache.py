"""Decoded stems as memory-mapped int16 arrays, so a training step reads an excerpt instead of
decoding FLAC.

Layout: ``<corpus root>/.cache-int16/<split>/<song>/<stem>.npy``, int16, shape ``(samples, 2)``
(frame-interleaved like the FLAC itself, so an excerpt is one contiguous slice of the file), value
``round(x * 32768)`` clipped to the int16 range; read back as ``value / 32768``: equal to the FLAC
to within half an int16 step (1.5e-5, -96 dBFS), the 24-bit stems' 8 lowest bits rounded away.

Why under the corpus root rather than ``~/.cache``: the cache is a function of the corpus files
alone, so it lives and dies with them (same disk, deleted with the corpus, carried when the corpus
is copied) and needs no corpus id. ``iter_songs`` only lists ``<root>/<split>/``, so the dotted
folder is invisible to everything else. Size: 176.4 kB per second of stereo stem, 635 MB per
stem-hour (a mixture song holds up to 5 stems, a solo-piano song 1).

Validity: a cache file carries the modification time of the FLAC it was decoded from (set with
``os.utime``) and must have the song's length; a re-rendered song (new FLAC) is decoded again.
Writes go to a unique temporary file renamed into place, so several DataLoader workers (or a
``dawsep-train data cache`` running beside training) can build the same file at once safely.
A corpus folder that cannot be written falls back to decoding (nothing is cached).
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Callable, Iterable

import numpy as np
import soundfile as sf

from dawsep.errors import DawsepError
from dawsep.train.data.score import STEMS

CACHE_DIR = ".cache-int16"
SCALE = 32768.0  # int16 full scale: value / SCALE is the sample
CHANNELS = 2


class CacheError(DawsepError):
    """The stem cache cannot be written (names the folder)."""

    exit_code = 2


def cache_path(song_dir: str, stem: str) -> str:
    """``<root>/.cache-int16/<split>/<song>/<stem>.npy`` for ``song_dir`` = ``<root>/<split>/<song>``."""
    song_dir = os.path.normpath(song_dir)
    split_dir, song = os.path.split(song_dir)
    root, split = os.path.split(split_dir)
    return os.path.join(root, CACHE_DIR, split, song, f"{stem}.npy")


def _source(song_dir: str, stem: str) -> str:
    return os.path.join(song_dir, f"{stem}.flac")


def is_valid(song_dir: str, stem: str, samples: int | None = None) -> bool:
    """The cache file exists, was made from the FLAC now in the song, and (if given) has ``samples`` frames."""
    path = cache_path(song_dir, stem)
    try:
        if os.stat(path).st_mtime_ns != os.stat(_source(song_dir, stem)).st_mtime_ns:
            return False
    except FileNotFoundError:
        return False
    if samples is None:
        return True
    arr = np.load(path, mmap_mode="r")
    return arr.shape == (samples, CHANNELS) and arr.dtype == np.int16


def quantize(x: np.ndarray) -> np.ndarray:
    """float samples -> int16 ``round(x * 32768)``, clipped."""
    return np.clip(np.rint(np.asarray(x, np.float64) * SCALE), -32768, 32767).astype(np.int16)


def build(song_dir: str, stem: str) -> str | None:
    """Decode ``stem.flac`` into its cache file (atomically); returns the path, or None when the
    cache folder cannot be written (read-only corpus)."""
    src, path = _source(song_dir, stem), cache_path(song_dir, stem)
    st = os.stat(src)
    x, _ = sf.read(src, dtype="float64", always_2d=True)
    data = np.zeros((len(x), CHANNELS), np.int16)
    data[:, : min(CHANNELS, x.shape[1])] = quantize(x[:, :CHANNELS])
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as fh:
            np.save(fh, data)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        return None
    return path


def read(song_dir: str, stem: str, start: int, frames: int, samples: int, create: bool = True) -> np.ndarray | None:
    """``(2, frames)`` float32 from the cache (zero-padded past the end), building it first if
    ``create``; None when there is no valid cache and it cannot (or may not) be built."""
    path = cache_path(song_dir, stem)
    if not is_valid(song_dir, stem):
        if not create or build(song_dir, stem) is None:
            return None
    arr = np.load(path, mmap_mode="r")
    if arr.shape[0] != samples:
        return None  # not the song meta.json describes: decode instead
    out = np.zeros((CHANNELS, frames), np.float32)
    seg = arr[start: start + frames]
    out[:, : len(seg)] = seg.T
    out *= np.float32(1.0 / SCALE)
    return out


def build_corpus(root: str, splits: Iterable[str] = ("train", "valid"), stems: Iterable[str] = STEMS,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Cache every present stem of every complete song of ``splits`` (skips valid files; resumable).

    Returns ``{"files", "built", "skipped", "bytes", "audio_hours", "seconds"}``.
    """
    from dawsep.train.data.corpus import iter_songs

    t0 = time.perf_counter()
    rep = {"files": 0, "built": 0, "skipped": 0, "bytes": 0, "audio_hours": 0.0}
    for split in splits:
        songs = list(iter_songs(root, split))
        for i, (song, meta) in enumerate(songs):
            present = meta.get("stems_present", STEMS)
            for stem in stems:
                if stem not in present or not os.path.exists(_source(song, stem)):
                    continue
                rep["files"] += 1
                if is_valid(song, stem, int(meta["samples"])):
                    rep["skipped"] += 1
                elif build(song, stem) is None:
                    raise CacheError(f"cannot write the stem cache under {os.path.join(root, CACHE_DIR)}")
                else:
                    rep["built"] += 1
                rep["bytes"] += os.path.getsize(cache_path(song, stem))
                rep["audio_hours"] += int(meta["samples"]) / float(meta.get("sample_rate", 44100)) / 3600
            if progress and (i + 1) % 50 == 0:
                progress(f"{split}: {i + 1}/{len(songs)} songs, {rep['built']} files built, "
                         f"{rep['bytes'] / 1e9:.2f} GB, {time.perf_counter() - t0:.0f} s")
    rep["seconds"] = round(time.perf_counter() - t0, 1)
    rep["audio_hours"] = round(rep["audio_hours"], 3)
    return rep


__all__ = ["CACHE_DIR", "CacheError", "SCALE", "build", "build_corpus", "cache_path", "is_valid", "quantize", "read"]
