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
    """Apply :func:`check_allowed` to a rendered song's ``meta.json`` content, and
    :func:`check_sample_hashes` to the sample hashes each part recorded (corpus v2)."""
    fonts = [p["soundfont"] for p in meta.get("parts", []) if p.get("soundfont")]
    fonts += [n for p in meta.get("parts", []) for n in [p.get("soundfont_name", "")] if n]
    check_allowed(split, fonts, meta.get("source"))
    for p in meta.get("parts", []):
        if p.get("sample_hashes"):
            check_sample_hashes(split, p["sample_hashes"],
                                f"{meta.get('name', '?')}: {p.get('stem')} part ({p.get('source', p.get('soundfont'))})")


# ------------------------------------------------------------------------------------------------------
# Content rules: the samples a soundfont would play, matched by hash against the reserved recordings.
#
# A name rule cannot see a training bank that reuses held-out recordings (GeneralUser GS plays MuseScore
# General's cello, synth basses, DX7 and celeste samples), so every sample a song will play is hashed
# (dawsep.train.data.sf2) and refused in train/valid if its content belongs to a reserved recording:
# MuseScore General content that FluidR3_GM/TimGM6mb do not also hold (MuseScore General reuses many
# FluidR3 samples, and FluidR3 stays in training), and the reserved sampled drum kits.

#: MuseScore General variants at the paths Debian and MuseScore install them; more are found by name.
MSG_KNOWN_PATHS = (
    "/usr/share/sounds/sf2/MuseScore_General_Full.sf2",  # musescore-general-soundfont-lossless (PCM)
    "/usr/share/sounds/sf2/MuseScore_General.sf2",
    "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",  # musescore-general-soundfont-small (Vorbis)
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
)
#: Further places searched by file name, link target and INAM (plus $DAWSEP_SOUNDFONT_DIRS).
_CONTENT_SEARCH_GLOBS = (
    "/usr/share/sounds/sf2/*", "/usr/share/sounds/sf3/*", "/usr/share/soundfonts/*",
    "/usr/share/mscore*/sound/*", "/usr/share/musescore*/sound/*", "/usr/lib/lv2/avldrums.lv2/*",
)
#: Training banks whose content stays allowed even where MuseScore General reuses it.
ALLOWED_REFERENCE_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2")
#: AVL drumkits (Debian avldrums.lv2-soundfont: Black_Pearl_4_LV2.sf2, Red_Zeppelin_4_LV2.sf2): names.
_AVL_MARKERS = ("_lv2.sf2", "avldrums", "black pearl", "black_pearl", "red zeppelin", "red_zeppelin")
#: Hydrogen's "The Black Pearl 1.0" kit (hydrogen-drumkits), system-wide and per user.
BLACK_PEARL_DIRS = (
    "/usr/share/hydrogen/data/drumkits/The Black Pearl 1.0",
    "~/.hydrogen/data/drumkits/The Black Pearl 1.0",
)
_AUDIO_EXTS = (".wav", ".flac", ".aif", ".aiff", ".ogg")
_RESERVED_CACHE_VERSION = 1


def audio_file_hash(path: str | os.PathLike) -> str:
    """sha256 of an audio file's decoded int16 PCM (interleaved frames): its content, not its name."""
    return _sha256(_read_int16(path))


def _read_int16(path):
    import numpy as np
    import soundfile

    from dawsep.errors import AudioFormatError

    try:
        pcm, _ = soundfile.read(os.fspath(path), dtype="int16", always_2d=False)
    except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise AudioFormatError(path, f"cannot decode: {e}") from None
    return np.ascontiguousarray(pcm, dtype="<i2")


def _sha256(pcm) -> str:
    import hashlib

    return hashlib.sha256(pcm.tobytes()).hexdigest()


def audio_file_keys(path: str | os.PathLike) -> list[str]:
    """The file's hash, plus per channel the hash and peak fingerprint of that channel's PCM (a
    soundfont holds a stereo recording as two mono samples)."""
    from dawsep.train.data.sf2 import pcm_fingerprint

    pcm = _read_int16(path)
    keys = [_sha256(pcm)]
    channels = [pcm] if pcm.ndim == 1 else [pcm[:, c].copy() for c in range(pcm.shape[1])]
    for ch in channels:
        keys.append(_sha256(ch))
        fp = pcm_fingerprint(ch)
        if fp:
            keys.append(fp)
    return keys


def _is_avl(path: str) -> bool:
    names = (path, os.path.realpath(path), soundfont_name(path))
    return any(m in n.lower() for n in names for m in _AVL_MARKERS)


def _stat_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


def _reserved_inputs() -> tuple[tuple, tuple, tuple, tuple]:
    """(MSG files, allowed reference files, AVL files, Black Pearl audio files), each as sorted
    (real path, size, mtime_ns): the identity of the reserved set (a changed install rebuilds it)."""
    import glob

    patterns = list(MSG_KNOWN_PATHS) + list(_CONTENT_SEARCH_GLOBS)
    patterns += [os.path.join(d, "*") for d in os.environ.get("DAWSEP_SOUNDFONT_DIRS", "").split(os.pathsep) if d]
    msg, avl = set(), set()
    for pat in patterns:
        for p in glob.glob(pat):
            real = os.path.realpath(p)
            if not os.path.isfile(real) or not real.lower().endswith((".sf2", ".sf3")):
                continue
            if is_heldout_soundfont(p):
                msg.add(real)
            elif _is_avl(p):
                avl.add(real)
    allowed = {os.path.realpath(p) for p in ALLOWED_REFERENCE_PATHS if os.path.isfile(p)} - msg
    kits = set()
    for d in BLACK_PEARL_DIRS:
        d = os.path.expanduser(d)
        if os.path.isdir(d):
            kits |= {os.path.realpath(os.path.join(d, f)) for f in os.listdir(d) if f.lower().endswith(_AUDIO_EXTS)}
    return tuple(tuple(sorted(_stat_key(p) for p in group)) for group in (msg, allowed, avl, kits))


class ReservedIndex:
    """The reserved content keys (exact hashes and peak fingerprints) and where each comes from."""

    def __init__(self, reserved: dict[str, str], allowed: frozenset[str], sources: tuple[str, ...],
                 pcm_reference: bool):
        self.reserved = reserved  # key -> "file: sample" (for messages)
        self.allowed = allowed  # keys of the allowed reference banks (FluidR3_GM, TimGM6mb)
        self.sources = sources  # the files the reserved keys were taken from
        self.pcm_reference = pcm_reference  # a PCM (SF2) MuseScore General variant was among them


#: How long a process trusts its last scan of the installed reserved files (a scan costs ~10 ms).
_INPUTS_TTL_S = 60.0
_inputs_memo: list = [float("-inf"), None]  # [monotonic time of the scan, its result]


def reserved_index() -> ReservedIndex:
    """Build (first time: ~1.5 s with the 480 MB lossless bank) or load the reserved content index.

    Cached per process and on disk (``~/.cache/dawsep/hashes/reserved-<digest>.json``), both keyed by
    the path, size and mtime of every input file, so installing or removing a variant rebuilds it
    (a running process rescans the installed files at most every minute).
    """
    import time

    now = time.monotonic()
    if now - _inputs_memo[0] > _INPUTS_TTL_S:
        _inputs_memo[:] = [now, _reserved_inputs()]
    return _reserved_index_for(_inputs_memo[1])


@lru_cache(maxsize=4)
def _reserved_index_for(inputs: tuple[tuple, tuple, tuple, tuple]) -> ReservedIndex:
    import hashlib
    import json

    from dawsep.train.data.sf2 import hash_cache_dir, write_json_atomic

    digest = hashlib.sha256(json.dumps([_RESERVED_CACHE_VERSION, inputs]).encode()).hexdigest()[:16]
    cache = os.path.join(hash_cache_dir(), f"reserved-{digest}.json")
    try:
        with open(cache) as fh:
            data = json.load(fh)
        if data.get("version") == _RESERVED_CACHE_VERSION:
            return ReservedIndex(data["reserved"], frozenset(data["allowed"]), tuple(data["sources"]),
                                 bool(data["pcm_reference"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    index = _build_reserved_index(*inputs)
    try:
        write_json_atomic(cache, {
            "version": _RESERVED_CACHE_VERSION, "inputs": inputs, "sources": list(index.sources),
            "pcm_reference": index.pcm_reference, "allowed": sorted(index.allowed), "reserved": index.reserved,
        })
    except OSError:
        pass
    return index


def _build_reserved_index(msg, allowed_refs, avl, kits) -> ReservedIndex:
    from dawsep.train.data.sf2 import read_soundfont

    allowed: set[str] = set()
    for path, *_ in allowed_refs:
        for s in read_soundfont(path).samples:
            allowed.add(s.hash)
            if s.fingerprint:
                allowed.add(s.fingerprint)
    reserved: dict[str, str] = {}
    pcm_reference = False
    for group, is_msg in ((msg, True), (avl, False)):
        for path, _size, _mtime in group:
            sf = read_soundfont(path)
            label = os.path.basename(path)
            for s in sf.samples:
                pcm_reference |= is_msg and not s.compressed
                keys = [s.hash] + ([s.fingerprint] if s.fingerprint else [])
                if any(k in allowed for k in keys):
                    continue  # FluidR3/TimGM6mb content (possibly trimmed): stays in training
                for k in keys:
                    reserved.setdefault(k, f"{label}: {s.name}")
    for path, *_ in kits:
        label = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
        for k in audio_file_keys(path):
            if k not in allowed:
                reserved.setdefault(k, label)
    sources = tuple(p for p, *_ in msg + avl + kits)
    return ReservedIndex(reserved, frozenset(allowed), sources, pcm_reference)


def reserved_sample_hashes() -> frozenset[str]:
    """Content keys (sha256 of sample data, and ``peak:`` fingerprints) of every reserved recording:
    MuseScore General samples (all installed variants) not also in FluidR3_GM/TimGM6mb, the AVL
    drumkits and Hydrogen's The Black Pearl 1.0, where installed."""
    return frozenset(reserved_index().reserved)


def check_sample_hashes(split: str, hashes: Iterable[str], what: str) -> None:
    """Raise :class:`HeldOutError` if ``split`` is train/valid and any of these content keys is reserved.

    ``hashes``: what a part will play, e.g. ``read_soundfont(p).preset_hashes(bank, program)``;
    ``what`` names it in the message (``"GeneralUser-v1.47.sf2 bank 0 program 42"``). Fails closed when
    no PCM MuseScore General variant is installed and a key is not FluidR3/TimGM6mb content: then
    reuse cannot be ruled out.
    """
    if split not in SPLITS:
        raise HeldOutError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split not in SEEN_SPLITS:
        return
    index = reserved_index()
    keys = set(hashes)
    hits = sorted({index.reserved[k] for k in keys if k in index.reserved})
    if hits:
        shown = "; ".join(hits[:5]) + (f"; ... ({len(hits)} in all)" if len(hits) > 5 else "")
        raise HeldOutError(
            f"{what} would play sample content reserved for the test split ({shown}); "
            f"it may not appear in {split!r}"
        )
    if not index.pcm_reference and keys - index.allowed:
        raise HeldOutError(
            f"{what}: cannot rule out MuseScore General samples in {split!r}: no PCM MuseScore General "
            f"variant is installed to compare with (install musescore-general-soundfont-lossless)"
        )


def heldout_presets(path: str | os.PathLike) -> dict[tuple[int, int], list[str]]:
    """Presets of a soundfont that would play a reserved sample -> the names of those samples."""
    from dawsep.train.data.sf2 import read_soundfont

    reserved = reserved_index().reserved
    sf = read_soundfont(path)
    out = {}
    for key, preset in sorted(sf.presets.items()):
        names = sorted({sf.samples[i].name for i in preset.samples
                        if sf.samples[i].hash in reserved or sf.samples[i].fingerprint in reserved})
        if names:
            out[key] = names
    return out
