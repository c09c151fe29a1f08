"""The held-out rules: what may never reach the training or validation splits.

The project is judged on an unseen timbre (every MuseScore General soundfont variant) and on unseen
compositions (five music21 corpus composers). Both are checked here, by content rather than by the
name a caller happens to use: symlinks are resolved (``default-GM.sf2`` may point at MuseScore) and
a soundfont's own INFO/INAM name is read, so a renamed copy is caught too.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from dawsep.errors import DawsepError

SPLITS = ("train", "valid", "test")
#: Splits that models learn from or are tuned on: held-out material must never appear there.
SEEN_SPLITS = ("train", "valid")
#: music21 corpus folders held out of training and validation.
HELDOUT_COMPOSERS = frozenset({"bach", "mozart", "haydn", "beethoven", "joplin"})
_HELDOUT_SOUNDFONT_MARKERS = ("musescore",)


class HeldOutError(DawsepError):
    """Held-out material (soundfont or composition) was about to enter a training/validation split."""

    exit_code = 8


@lru_cache(maxsize=64)
def soundfont_name(path: str | os.PathLike) -> str:
    """The soundfont's INAM (bank name) from its RIFF INFO list; '' if absent or unreadable."""
    try:
        with open(os.path.realpath(path), "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return ""
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        return ""
    pos = head.find(b"INAM")
    if pos < 0:
        return ""
    size = int.from_bytes(head[pos + 4 : pos + 8], "little")
    return head[pos + 8 : pos + 8 + size].split(b"\0", 1)[0].decode("latin-1", "replace")


def is_heldout_soundfont(path: str | os.PathLike) -> bool:
    """True for every MuseScore General variant, whatever the path or link it is reached by."""
    real = os.path.realpath(path)
    names = (str(path), real, soundfont_name(real))
    return any(m in n.lower() for n in names for m in _HELDOUT_SOUNDFONT_MARKERS)


def composer_of(corpus_relpath: str) -> str:
    """The music21 corpus folder (composer/collection) of a path relative to the corpus root."""
    parts = Path(corpus_relpath.replace("\\", "/")).parts
    return parts[0].lower() if parts else ""


def is_heldout_composition(corpus_relpath: str | None) -> bool:
    if not corpus_relpath:
        return False
    rel = corpus_relpath.replace("\\", "/").lower()
    # Any path component, not only the first: a stray absolute path must not slip through.
    return any(part in HELDOUT_COMPOSERS for part in Path(rel).parts)


def check_allowed(split: str, soundfonts: Iterable[str | os.PathLike] = (), source: str | None = None) -> None:
    """Raise :class:`HeldOutError` if ``split`` may not contain these soundfonts or this composition."""
    if split not in SPLITS:
        raise HeldOutError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split not in SEEN_SPLITS:
        return
    for sf in soundfonts:
        if is_heldout_soundfont(sf):
            raise HeldOutError(
                f"soundfont {sf} ({os.path.realpath(sf)}) is held out (MuseScore General) "
                f"and may appear only in the test split, not {split!r}"
            )
    if is_heldout_composition(source):
        raise HeldOutError(
            f"music21 piece {source!r} is by a held-out composer ({', '.join(sorted(HELDOUT_COMPOSERS))}) "
            f"and may appear only in the test split, not {split!r}"
        )


def check_meta(split: str, meta: dict) -> None:
    """Apply :func:`check_allowed` to a rendered song's ``meta.json`` content."""
    fonts = [p["soundfont"] for p in meta.get("parts", []) if p.get("soundfont")]
    fonts += [n for p in meta.get("parts", []) for n in [p.get("soundfont_name", "")] if n]
    check_allowed(split, fonts, meta.get("source"))
