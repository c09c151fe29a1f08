"""GM drum mapping of named drum instruments: category by name, GM keys with fallbacks, velocity layers.

Shared by the Hydrogen kits (``hydrogen``) and the one-shot kits (``oneshot``): an instrument's
category comes from keywords in its name (:func:`drum_category`), and :func:`drum_set` maps the
instruments onto GM drum keys with fallbacks, so every kit plays each key of :data:`GROOVE_KEYS`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dawsep.train.data.samples import SampleSet, Zone

__all__ = ["GROOVE_KEYS", "DRUMLIKE", "DrumLayer", "DrumInstrument", "squash_name", "drum_category", "drum_set"]

#: GM drum keys a rock/pop/jazz groove uses: every listed kit maps each of them to a sound.
GROOVE_KEYS = (35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 55, 56, 57, 59)


def squash_name(s: str) -> str:
    """Lower case, letters and digits only: how kit and instrument names are compared."""
    return re.sub(r"[^a-z0-9]", "", s.lower())


@dataclass
class DrumLayer:
    """One sample file of an instrument: its velocity range (0..1), gain and pitch (semitones)."""

    path: str
    lo: float
    hi: float
    gain: float
    pitch: float


@dataclass
class DrumInstrument:
    """A named drum instrument: gain, mute group (-1: none) and velocity layers (:func:`drum_set`
    sets ``category``)."""

    name: str
    gain: float
    mute_group: int
    layers: list[DrumLayer]
    category: str = ""


def drum_category(name: str) -> str:
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


#: Categories of real drums (a kit needs three instruments of them).
DRUMLIKE = {"bell_mute", "kick", "snare", "snare_rim", "snare_roll", "stick", "clap", "hat_closed", "hat_open", "hat_pedal",
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


def _height(inst: DrumInstrument) -> float:
    """-0.5 for a "low"/"lo" variant, +0.5 for "high"/"hi": orders same-kind drums low to high."""
    w = set(re.sub(r"[^a-z0-9]+", " ", inst.name.lower()).split())
    return -0.5 if w & {"lo", "low"} else 0.5 if w & {"hi", "high"} else 0.0


def _pick(by_cat: dict[str, list[DrumInstrument]], cat: str, which: int | str) -> DrumInstrument | None:
    insts = by_cat.get(cat, [])
    if isinstance(which, str):
        want = {"hi": ("hi", "high"), "lo": ("lo", "low"), "mute": ("mute", "muted")}[which]
        for inst in insts:
            if set(re.sub(r"[^a-z0-9]+", " ", inst.name.lower()).split()) & set(want):
                return inst
        return None
    return insts[which] if which < len(insts) else None


def _gm_map(instruments: list[DrumInstrument]) -> dict[int, tuple[DrumInstrument, float]]:
    """GM key -> (instrument, extra pitch in semitones)."""
    by_cat: dict[str, list[DrumInstrument]] = {}
    for inst in instruments:
        by_cat.setdefault(inst.category, []).append(inst)
    # a plain crash before a crash/ride, a plain ride before a ride/crash
    for cat, other in (("crash", "ride"), ("ride", "crash")):
        by_cat.get(cat, []).sort(key=lambda i: other in squash_name(i.name))
    out: dict[int, tuple[DrumInstrument, float]] = {}
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


def _velocity_runs(layers: list[DrumLayer]) -> list[tuple[DrumLayer, int, int]]:
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


def drum_set(name: str, instruments: list[DrumInstrument]) -> SampleSet:
    """Named drum instruments as a GM drum set: categories from the names, GM keys with fallbacks
    (:func:`_gm_map`), one zone per (GM key, velocity layer), hi-hats in one choke group unless the
    kit assigns mute groups itself."""
    for inst in instruments:
        inst.category = drum_category(inst.name)
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
