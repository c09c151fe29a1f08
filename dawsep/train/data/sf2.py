"""Reading SoundFont 2 / SoundFont 3 files: names, samples, presets and the content hash of every sample.

A pure-Python/numpy reader of the RIFF ``sfbk`` layout (SoundFont 2.04 specification, plus the SF3
variant whose samples are Ogg Vorbis streams). It answers one question for the held-out rules: which
sample data can a preset play? Each sample is identified by content, never by name:

- ``hash``: sha256 of the sample's bytes in the ``smpl`` chunk. For PCM samples that is the int16
  little-endian data of points ``[start, end)``; for compressed SF3 samples (``sample_type & 0x10``)
  ``start``/``end`` are byte offsets and the hash is of the compressed blob.
- ``fingerprint`` (PCM samples only, :func:`pcm_fingerprint`): sha256 of :data:`FINGERPRINT_POINTS`
  points from the sample's peak. It survives trimming the leading silence or the tail and fading the
  first milliseconds in (what a soundfont author does when reusing another bank's recording), which
  the exact hash does not.

Hashing the 480 MB MuseScore General lossless bank takes ~1.2 s (file in the page cache), so the per-file hash list is cached on disk under
``~/.cache/dawsep/hashes/<basename>-<size>-<mtime>.json`` (``DAWSEP_HASH_CACHE`` overrides the folder)
and parsed files are cached per process by (real path, size, mtime).

``sf2_write`` writes minimal valid SF2 files, for tests and tools.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from dawsep.errors import DawsepError

#: Points hashed by the trim-robust fingerprint (about 93 ms at 44.1 kHz).
FINGERPRINT_POINTS = 4096
#: Bumped whenever what the on-disk hash cache holds changes meaning.
_CACHE_VERSION = 2
#: sfSampleType bits.
SAMPLE_COMPRESSED = 0x10
#: Generator operators that point down the hierarchy.
GEN_INSTRUMENT = 41
GEN_SAMPLE_ID = 53
#: Record sizes of the pdta sub-chunks.
_RECORD = {"phdr": 38, "pbag": 4, "pmod": 10, "pgen": 4, "inst": 22, "ibag": 4, "imod": 10, "igen": 4, "shdr": 46}


class SoundfontFormatError(DawsepError):
    """A file is not a readable SF2/SF3 soundfont (names the file and what is wrong)."""

    exit_code = 9

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: not a readable soundfont: {reason}")


@dataclass(frozen=True)
class SampleHeader:
    index: int
    name: str
    start: int  # sample points (SF2) or bytes into smpl (compressed SF3)
    end: int  # one past the last point / byte
    rate: int  # Hz
    root_key: int  # MIDI key of the recorded pitch (byOriginalPitch)
    sample_type: int  # sfSampleType bits: 1 mono, 2 right, 4 left, 8 linked, 0x10 Vorbis, 0x8000 ROM
    hash: str  # sha256 hex of the sample's bytes (see the module docstring)
    fingerprint: str | None = None  # trim-robust key of PCM samples; None for compressed/empty ones

    @property
    def compressed(self) -> bool:
        return bool(self.sample_type & SAMPLE_COMPRESSED)


@dataclass(frozen=True)
class PresetInfo:
    bank: int
    program: int
    name: str
    samples: tuple[int, ...]  # sorted indices of every sample reachable through the preset's zones


@dataclass(frozen=True, eq=False)
class SoundfontFile:
    """A parsed soundfont. Instances are shared by the per-process cache: do not mutate them."""

    path: str  # resolved real path
    name: str  # INFO/INAM
    samples: list[SampleHeader] = field(repr=False)
    presets: dict[tuple[int, int], PresetInfo] = field(repr=False)
    smpl: tuple[int, int] = field(default=(0, 0), repr=False)  # (file offset, bytes) of the sample data

    def sample_pcm(self, index: int) -> np.ndarray:
        """The int16 PCM of a (non-compressed) sample, read from the file: [shape=(end - start,)]."""
        s = self.samples[index]
        if s.compressed:
            raise SoundfontFormatError(self.path, f"sample {s.name!r} is compressed (SF3): no PCM to read")
        off, nbytes = self.smpl
        a, b = min(2 * s.start, nbytes), min(2 * max(s.end, s.start), nbytes)
        with open(self.path, "rb") as fh:
            fh.seek(off + a)
            return np.frombuffer(fh.read(b - a), "<i2")

    def preset(self, bank: int, program: int) -> PresetInfo:
        try:
            return self.presets[(bank, program)]
        except KeyError:
            raise KeyError(f"{os.path.basename(self.path)} has no preset bank {bank} program {program}") from None

    def preset_hashes(self, bank: int, program: int) -> frozenset[str]:
        """Content keys of every sample the preset can play: each sample's exact ``hash`` and, where it
        has one, its ``peak:`` fingerprint (what the held-out check matches on). KeyError if the file
        has no such preset."""
        out = set()
        for i in self.preset(bank, program).samples:
            s = self.samples[i]
            out.add(s.hash)
            if s.fingerprint:
                out.add(s.fingerprint)
        return frozenset(out)


# ---------------------------------------------------------------------------------------------- reading
def read_soundfont(path: str | os.PathLike) -> SoundfontFile:
    """Parse an SF2/SF3 file (cached per process by real path, size and mtime).

    Raises :class:`SoundfontFormatError` if the file is missing, truncated or not a soundfont.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as e:
        raise SoundfontFormatError(path, e.strerror or str(e)) from None
    return _read_cached(real, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _read_cached(real: str, size: int, mtime_ns: int) -> SoundfontFile:
    try:
        with open(real, "rb") as fh:
            name, smpl, pdta = _walk_riff(fh, real, size)
            headers, presets = _parse_pdta(real, pdta)
            hashes = _sample_keys(fh, real, size, mtime_ns, smpl, headers)
    except OSError as e:
        raise SoundfontFormatError(real, e.strerror or str(e)) from None
    samples = [
        SampleHeader(i, h[0], h[1], h[2], h[3], h[4], h[5], hashes[i][0], hashes[i][1])
        for i, h in enumerate(headers)
    ]
    return SoundfontFile(real, name, samples, presets, smpl)


def _walk_riff(fh, path: str, file_size: int) -> tuple[str, tuple[int, int], dict[str, bytes]]:
    """INAM, (offset, size) of the smpl data, and the raw pdta sub-chunks."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise SoundfontFormatError(path, "no RIFF 'sfbk' header")
    riff_end = 8 + int.from_bytes(head[4:8], "little")
    if riff_end > file_size:
        raise SoundfontFormatError(path, f"truncated: RIFF size {riff_end} > file size {file_size}")
    name, smpl, pdta = "", None, None
    pos = 12
    while pos + 8 <= riff_end:
        fh.seek(pos)
        ck = fh.read(12)
        cid, csize = ck[:4], int.from_bytes(ck[4:8], "little")
        body, end = pos + 8, pos + 8 + csize
        if end > riff_end:
            raise SoundfontFormatError(path, f"truncated: chunk {cid!r} at {pos} runs past the end")
        if cid == b"LIST":
            kind = ck[8:12]
            if kind == b"INFO":
                name = _info_name(fh.read(csize - 4))
            elif kind == b"sdta":
                smpl = _find_subchunk(fh, path, body + 4, end, b"smpl")
            elif kind == b"pdta":
                pdta = _read_pdta(fh, path, body + 4, end)
        pos = end + (csize & 1)
        if csize & 1:
            # Some writers (the MuseScore General SF3s) leave out the pad byte after an odd chunk.
            fh.seek(end)
            nxt = fh.read(9)
            if not _plausible_chunk(nxt[1:9], end + 1, riff_end) and _plausible_chunk(nxt[:8], end, riff_end):
                pos = end
    if pdta is None:
        raise SoundfontFormatError(path, "no 'pdta' list (presets)")
    return name, smpl or (0, 0), pdta


def _plausible_chunk(head: bytes, pos: int, riff_end: int) -> bool:
    """Whether 8 bytes at ``pos`` look like a chunk header: a printable id and a size that fits."""
    if len(head) < 8 or not all(48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 32 for c in head[:4]):
        return False
    return pos + 8 + int.from_bytes(head[4:8], "little") <= riff_end


def _info_name(info: bytes) -> str:
    pos = 0
    while pos + 8 <= len(info):
        cid, size = info[pos : pos + 4], int.from_bytes(info[pos + 4 : pos + 8], "little")
        if cid == b"INAM":
            return info[pos + 8 : pos + 8 + size].split(b"\0", 1)[0].decode("latin-1", "replace")
        pos += 8 + size + (size & 1)
    return ""


def _find_subchunk(fh, path: str, pos: int, end: int, want: bytes) -> tuple[int, int] | None:
    while pos + 8 <= end:
        fh.seek(pos)
        ck = fh.read(8)
        cid, size = ck[:4], int.from_bytes(ck[4:8], "little")
        if pos + 8 + size > end:
            raise SoundfontFormatError(path, f"truncated: sub-chunk {cid!r} runs past its list")
        if cid == want:
            return pos + 8, size
        pos += 8 + size + (size & 1)
    return None


def _read_pdta(fh, path: str, pos: int, end: int) -> dict[str, bytes]:
    fh.seek(pos)
    raw = fh.read(end - pos)
    out: dict[str, bytes] = {}
    p = 0
    while p + 8 <= len(raw):
        cid, size = raw[p : p + 4].decode("latin-1"), int.from_bytes(raw[p + 4 : p + 8], "little")
        data = raw[p + 8 : p + 8 + size]
        if len(data) < size:
            raise SoundfontFormatError(path, f"truncated: pdta/{cid} runs past its list")
        if cid in _RECORD:
            if size % _RECORD[cid]:
                raise SoundfontFormatError(path, f"pdta/{cid} size {size} is not a multiple of {_RECORD[cid]}")
            out[cid] = data
        p += 8 + size + (size & 1)
    missing = [c for c in ("phdr", "pbag", "pgen", "inst", "ibag", "igen", "shdr") if c not in out]
    if missing:
        raise SoundfontFormatError(path, f"pdta lacks {', '.join(missing)}")
    return out


def _zstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("latin-1", "replace").strip()


def _zones(path, what, bags: np.ndarray, gens: np.ndarray, first: int, last: int) -> list[dict[int, int]]:
    """The generators (operator -> amount) of each zone ``bags[first:last]`` (bags: n+1 gen indices)."""
    if not (0 <= first <= last < len(bags)):
        raise SoundfontFormatError(path, f"{what}: zone indices {first}..{last} out of range")
    out = []
    for z in range(first, last):
        g0, g1 = int(bags[z]), int(bags[z + 1])
        if not (0 <= g0 <= g1 <= len(gens)):
            raise SoundfontFormatError(path, f"{what}: generator indices {g0}..{g1} out of range")
        out.append({int(o): int(a) for o, a in zip(gens["oper"][g0:g1], gens["amount"][g0:g1])})
    return out


def _parse_pdta(path: str, pdta: dict[str, bytes]):
    gen_dt = np.dtype([("oper", "<u2"), ("amount", "<u2")])
    bag_dt = np.dtype([("gen", "<u2"), ("mod", "<u2")])
    pbag = np.frombuffer(pdta["pbag"], bag_dt)["gen"]
    ibag = np.frombuffer(pdta["ibag"], bag_dt)["gen"]
    pgen = np.frombuffer(pdta["pgen"], gen_dt)
    igen = np.frombuffer(pdta["igen"], gen_dt)
    shdr = pdta["shdr"]
    n_samples = len(shdr) // 46 - 1  # the last record is the terminal 'EOS'
    if n_samples < 0:
        raise SoundfontFormatError(path, "pdta/shdr has no terminal record")
    headers = []
    for i in range(n_samples):
        rec = shdr[46 * i : 46 * (i + 1)]
        start, end, _ls, _le, rate, pitch, _corr, _link, stype = struct.unpack("<5IBbHH", rec[20:46])
        headers.append((_zstr(rec[:20]), start, end, rate, pitch, stype))

    inst = pdta["inst"]
    n_inst = len(inst) // 22 - 1
    inst_samples: list[set[int]] = []
    for i in range(n_inst):
        b0 = int.from_bytes(inst[22 * i + 20 : 22 * i + 22], "little")
        b1 = int.from_bytes(inst[22 * (i + 1) + 20 : 22 * (i + 1) + 22], "little")
        sids = {z[GEN_SAMPLE_ID] for z in _zones(path, f"instrument {i}", ibag, igen, b0, b1) if GEN_SAMPLE_ID in z}
        bad = sorted(s for s in sids if s >= n_samples)
        if bad:
            raise SoundfontFormatError(path, f"instrument {i} points at sample {bad[0]} of {n_samples}")
        inst_samples.append(sids)

    phdr = pdta["phdr"]
    presets: dict[tuple[int, int], PresetInfo] = {}
    for i in range(len(phdr) // 38 - 1):
        rec = phdr[38 * i : 38 * (i + 1)]
        program, bank, b0 = struct.unpack("<HHH", rec[20:26])
        b1 = int.from_bytes(phdr[38 * (i + 1) + 24 : 38 * (i + 1) + 26], "little")
        samples: set[int] = set()
        for z in _zones(path, f"preset {bank}:{program}", pbag, pgen, b0, b1):
            k = z.get(GEN_INSTRUMENT)
            if k is not None and k >= n_inst:
                raise SoundfontFormatError(path, f"preset {bank}:{program} points at instrument {k} of {n_inst}")
            if k is not None:
                samples |= inst_samples[k]
        info = PresetInfo(bank, program, _zstr(rec[:20]), tuple(sorted(samples)))
        # A duplicate (bank, program) is shadowed in players by the first one: keep the first.
        presets.setdefault((bank, program), info)
    return headers, presets


# ---------------------------------------------------------------------------------------------- hashing
def hash_cache_dir() -> str:
    return os.environ.get("DAWSEP_HASH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dawsep", "hashes")


def _cache_path(real: str, size: int, mtime_ns: int) -> str:
    return os.path.join(hash_cache_dir(), f"{os.path.basename(real)}-{size}-{mtime_ns}.json")


def write_json_atomic(path: str, obj) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and a rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def pcm_fingerprint(pcm: np.ndarray) -> str | None:
    """A trim-robust key of int16 PCM: ``"peak:"`` + sha256 of the :data:`FINGERPRINT_POINTS` points
    starting at the first point of largest magnitude.

    The peak does not move when a copy trims leading silence, fades in the first milliseconds
    (GeneralUser's copies of MuseScore General's celeste samples do both) or cuts the tail beyond the
    window. None when fewer points follow the peak (such a sample is matched by its exact hash only).
    """
    pcm = np.asarray(pcm)
    if len(pcm) < FINGERPRINT_POINTS:
        return None
    peak = int(np.argmax(np.abs(pcm.astype(np.int32))))
    if len(pcm) - peak < FINGERPRINT_POINTS or pcm[peak] == 0:
        return None
    window = np.ascontiguousarray(pcm[peak : peak + FINGERPRINT_POINTS], "<i2")
    return "peak:" + hashlib.sha256(window.tobytes()).hexdigest()


def _sample_keys(fh, real, size, mtime_ns, smpl, headers) -> list[tuple[str, str | None]]:
    cache = _cache_path(real, size, mtime_ns)
    try:
        with open(cache) as cf:
            data = json.load(cf)
        if data.get("version") == _CACHE_VERSION and len(data["hash"]) == len(headers):
            return list(zip(data["hash"], data["fingerprint"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    keys = _hash_samples(fh, real, smpl, headers)
    try:
        write_json_atomic(cache, {
            "version": _CACHE_VERSION, "path": real, "size": size, "mtime_ns": mtime_ns,
            "hash": [k[0] for k in keys], "fingerprint": [k[1] for k in keys],
        })
    except OSError:
        pass  # a read-only cache folder costs time, not correctness
    return keys


def _hash_samples(fh, real, smpl, headers) -> list[tuple[str, str | None]]:
    off, nbytes = smpl
    out = []
    for name, start, end, _rate, _pitch, stype in headers:
        unit = 1 if stype & SAMPLE_COMPRESSED else 2  # SF3 offsets are bytes, SF2 offsets are points
        limit = nbytes - nbytes % unit
        a, b = min(start * unit, limit), min(max(end, start) * unit, limit)
        fh.seek(off + a)
        raw = fh.read(b - a)
        if len(raw) != b - a:
            raise SoundfontFormatError(real, f"truncated: the data of sample {name!r} runs past the end")
        fp = None if unit == 1 else pcm_fingerprint(np.frombuffer(raw, "<i2"))
        out.append((hashlib.sha256(raw).hexdigest(), fp))
    return out
