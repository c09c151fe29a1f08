"""The Freepats GUS patches as ``freepats.cfg`` defines them: programs, drum keys, files and content.

Debian ``freepats`` ships 2006-era GUS ``.pat`` patches (single velocity layer, 1-12 key splits, some
at 25-30 kHz) for 72 of the 128 GM programs and 56 drum keys; ``timidity`` plays them. Only what
:data:`FREEPATS_CFG` itself defines is ever played: :func:`played_program` picks the nearest defined
program of the same GM family. A patch is identified by the sha256 of its file bytes
(:func:`patch_hashes`), and :func:`pat_zones` reads the key range and root pitch of its samples.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from dawsep.errors import DawsepError

__all__ = [
    "TimidityError", "FreepatsConfig", "freepats_config", "played_program", "patch_hashes", "file_sha256",
    "pat_zones", "FREEPATS_CFG", "PACKAGES",
]

#: The Freepats patch map, as Debian's ``freepats`` package installs it (never the system default).
FREEPATS_CFG = "/etc/timidity/freepats.cfg"
#: The Debian packages that install the patches and their player (named in every "missing" error).
PACKAGES = "freepats timidity"


class TimidityError(DawsepError):
    """TiMidity++ or the Freepats patches are missing, or a render failed."""

    exit_code = 13


@dataclass(frozen=True)
class FreepatsConfig:
    path: str                              # the config file read
    programs: dict[int, str]               # GM program (bank 0) -> .pat file (absolute)
    drums: dict[int, str]                  # GM drum key (drum set 0) -> .pat file (absolute)
    options: dict[int, tuple[str, ...]]    # GM program -> its patch options in the file (amp=120, ...)


@lru_cache(maxsize=4)
def freepats_config(path: str = FREEPATS_CFG) -> FreepatsConfig:
    """The programs and drum keys ``path`` defines (``bank 0`` and ``drumset 0``), with their patch files."""
    try:
        with open(path, encoding="latin-1") as fh:
            lines = fh.read().splitlines()
    except OSError as e:
        raise TimidityError(f"{path} not found ({e}); install the Debian packages {PACKAGES} (make data does)") from e
    dirs: list[str] = []
    programs: dict[int, str] = {}
    drums: dict[int, str] = {}
    options: dict[int, tuple[str, ...]] = {}
    section = ""
    for line in lines:
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "dir" and len(words) > 1:
            dirs.insert(0, words[1])  # TiMidity searches the last "dir" first
        elif words[0] in ("bank", "drumset") and len(words) > 1:
            section = words[0] if words[1] == "0" else ""
        elif section and re.fullmatch(r"\d+", words[0]) and len(words) > 1:
            name = words[1] if words[1].endswith(".pat") else words[1] + ".pat"
            found = name if os.path.isabs(name) and os.path.isfile(name) else next(
                (os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))), "")
            if not found:
                continue
            if section == "bank":
                programs[int(words[0])] = found
                options[int(words[0])] = tuple(words[2:])
            else:
                drums[int(words[0])] = found
    if not programs:
        raise TimidityError(f"{path} defines no program of bank 0 (or its patch files are missing)")
    return FreepatsConfig(path, programs, drums, options)


def played_program(program: int, config: FreepatsConfig | None = None) -> int:
    """The Freepats program that plays a GM ``program``: itself, else the nearest program of its GM
    family of 8 that Freepats has (ties: the lower one), else the grand piano. (TiMidity itself
    would play a program its configs lack as silence, or from another installed bank.)"""
    cfg = config or freepats_config()
    program = int(program)
    if program in cfg.programs:
        return program
    family = [p for p in range(program - program % 8, program - program % 8 + 8) if p in cfg.programs]
    if family:
        return min(family, key=lambda p: (abs(p - program), p))
    return 0 if 0 in cfg.programs else min(cfg.programs)


def patch_hashes(program: int | None = None, drums: bool = False, config: FreepatsConfig | None = None) -> list[str]:
    """sha256 of the raw ``.pat`` file bytes a part can play (the patch of ``played_program(program)``,
    or every drum patch), sorted; every patch when ``program`` is None and not ``drums``. GUS
    patches are not audio files soundfile can decode, so the file bytes are their content identity."""
    cfg = config or freepats_config()
    if drums:
        paths = set(cfg.drums.values())
    elif program is None:
        paths = set(cfg.programs.values()) | set(cfg.drums.values())
    else:
        paths = {cfg.programs[played_program(program, cfg)]}
    return sorted({file_sha256(p) for p in paths})


@lru_cache(maxsize=512)
def file_sha256(path: str) -> str:
    """sha256 hex of a file's bytes (cached per process by path)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- GUS patch headers

_PAT_MAGIC = (b"GF1PATCH110\0", b"GF1PATCH100\0")
_HEADER, _INSTRUMENT, _LAYER, _SAMPLE = 129, 63, 47, 96


def _hz_to_key(millihz: int) -> float:
    return 69 + 12 * math.log2(max(millihz, 1) / 1000 / 440)


def pat_zones(path: str) -> list[tuple[float, float, float]]:
    """(low, high, root) MIDI pitch of every sample of a GUS patch's first layer, in file order
    (TiMidity plays a note with the first sample whose [low, high] holds its frequency)."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:12] not in _PAT_MAGIC or len(data) < _HEADER + _INSTRUMENT + _LAYER:
        raise TimidityError(f"{path} is not a GUS patch")
    pos = _HEADER + _INSTRUMENT + _LAYER
    zones = []
    for _ in range(data[_HEADER + _INSTRUMENT + 6]):
        if pos + _SAMPLE > len(data):
            raise TimidityError(f"{path}: truncated GUS patch")
        size = struct.unpack_from("<I", data, pos + 8)[0]
        lo, hi, root = struct.unpack_from("<III", data, pos + 22)
        zones.append((_hz_to_key(lo), _hz_to_key(hi), _hz_to_key(root)))
        pos += _SAMPLE + size
    return zones
