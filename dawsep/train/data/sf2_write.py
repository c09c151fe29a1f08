"""Writing minimal valid SoundFont 2 files (:func:`write_sf2`, one instrument per preset) for tests.

Tests and tools build soundfonts of known content with it; ``sf2`` reads them back.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dawsep.train.data.sf2 import GEN_INSTRUMENT, GEN_SAMPLE_ID

__all__ = ["SampleSpec", "PresetSpec", "write_sf2"]


def _chunk(cid: bytes, data: bytes) -> bytes:
    return cid + struct.pack("<I", len(data)) + data + (b"\0" if len(data) & 1 else b"")


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _name20(name: str) -> bytes:
    return name.encode("latin-1", "replace")[:19].ljust(20, b"\0")


@dataclass(frozen=True)
class SampleSpec:
    """One sample for :func:`write_sf2`: mono int16 PCM."""

    name: str
    pcm: np.ndarray  # [shape=(T,)] int16
    rate: int = 44100
    root_key: int = 60


@dataclass(frozen=True)
class PresetSpec:
    """One preset for :func:`write_sf2`: an instrument with one zone per sample, split over key ranges."""

    name: str
    samples: tuple[int, ...]  # indices into the sample list
    bank: int = 0
    program: int = 0


def write_sf2(path: str | os.PathLike, name: str, samples: Sequence[SampleSpec], presets: Sequence[PresetSpec]) -> None:
    """Write a minimal valid SF2 (each sample followed by 46 zero points, as the specification asks)."""
    smpl, shdr, pos = b"", b"", 0
    for s in samples:
        pcm = np.asarray(s.pcm, dtype="<i2")
        smpl += pcm.tobytes() + b"\0" * 92
        end = pos + len(pcm)
        shdr += _name20(s.name) + struct.pack("<5IBbHH", pos, end, pos, end, s.rate, s.root_key, 0, 0, 1)
        pos = end + 46
    shdr += _name20("EOS") + b"\0" * 26
    phdr = pbag = pgen = inst = ibag = igen = b""
    n_pbag = n_pgen = n_ibag = n_igen = 0
    for k, p in enumerate(presets):
        phdr += _name20(p.name) + struct.pack("<HHHIII", p.program, p.bank, n_pbag, 0, 0, 0)
        pbag += struct.pack("<HH", n_pgen, 0)
        pgen += struct.pack("<HH", GEN_INSTRUMENT, k)
        n_pbag, n_pgen = n_pbag + 1, n_pgen + 1
        inst += _name20(p.name) + struct.pack("<H", n_ibag)
        bounds = np.linspace(0, 128, len(p.samples) + 1).astype(int)
        for j, sid in enumerate(p.samples):
            ibag += struct.pack("<HH", n_igen, 0)
            lo, hi = int(bounds[j]), int(bounds[j + 1]) - 1
            igen += struct.pack("<HBB", 43, lo, max(lo, hi)) + struct.pack("<HH", GEN_SAMPLE_ID, sid)
            n_ibag, n_igen = n_ibag + 1, n_igen + 2
    phdr += _name20("EOP") + struct.pack("<HHHIII", 0, 0, n_pbag, 0, 0, 0)
    pbag += struct.pack("<HH", n_pgen, 0)
    pgen += b"\0" * 4
    inst += _name20("EOI") + struct.pack("<H", n_ibag)
    ibag += struct.pack("<HH", n_igen, 0)
    igen += b"\0" * 4
    info = _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"isng", b"EMU8000\0"),
                 _chunk(b"INAM", name.encode("latin-1", "replace") + b"\0"))
    pdta = _list(b"pdta", _chunk(b"phdr", phdr), _chunk(b"pbag", pbag), _chunk(b"pmod", b"\0" * 10),
                 _chunk(b"pgen", pgen), _chunk(b"inst", inst), _chunk(b"ibag", ibag),
                 _chunk(b"imod", b"\0" * 10), _chunk(b"igen", igen), _chunk(b"shdr", shdr))
    body = b"sfbk" + info + _list(b"sdta", _chunk(b"smpl", smpl)) + pdta
    with open(path, "wb") as fh:
        fh.write(b"RIFF" + struct.pack("<I", len(body)) + body)
