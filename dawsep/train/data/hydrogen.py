"""Hydrogen drum kits: reading ``drumkit.xml``, listing the kits, and refusing the held-out one.

A kit's ``drumkit.xml`` is read in its three schemas (0.9 ``<instrument><filename>``,
``<instrument><layer>`` and 1.x ``<instrument><instrumentComponent><layer>``) and its instruments
are mapped onto GM drum keys by name (``drum_map``); the sample files are read in place.

Held out: the kit "The Black Pearl" is the unseen drum timbre. It is refused by folder name and by
the kit's own ``<name>``, and *by content*: a kit that shares any decoded sample with it is refused
too (``GMRockKit`` ships 81 of its 86 files as renamed copies of it).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import soundfile as sf

from dawsep.train.data.drum_map import DRUMLIKE, DrumInstrument, DrumLayer, drum_category, drum_set, squash_name
from dawsep.train.data.heldout import HeldOutError
from dawsep.train.data.samples import SampleSet, SamplerError, pcm_sha256

__all__ = ["HYDROGEN_ROOT", "hydrogen_kits", "load_hydrogen_kit", "is_reserved_kit_name"]

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


def is_reserved_kit_name(name: str) -> bool:
    """True for a held-out kit name ("The Black Pearl", any case/spacing/punctuation)."""
    return any(m in squash_name(name) for m in RESERVED_KIT_MARKERS)


def _is_known_copy(name: str) -> bool:
    return squash_name(name) in KITS_WITH_RESERVED_CONTENT


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


def _parse_kit(folder: str) -> tuple[str, list[DrumInstrument]]:
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
            layers.append(DrumLayer(inst.findtext("filename").strip(), 0.0, 1.0, 1.0, 0.0))
        for la, comp_gain in raw:
            fn = (la.findtext("filename") or "").strip()
            if fn:
                layers.append(DrumLayer(fn, _num(la, "min", 0.0), _num(la, "max", 1.0),
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
            instruments.append(DrumInstrument(
                (inst.findtext("name") or "").strip(), _num(inst, "gain", 1.0) * _num(inst, "volume", 1.0),
                int(_num(inst, "muteGroup", -1)), playable))
    return (root.findtext("name") or "").strip(), instruments


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
    return drum_set(f"hydrogen:{os.path.basename(os.path.normpath(folder))}", instruments)


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
        if sum(drum_category(i.name) in DRUMLIKE for i in instruments) >= 3:
            kits.append(folder)
    return kits
