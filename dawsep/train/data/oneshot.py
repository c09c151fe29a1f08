"""One-shot drum kits (:data:`ONESHOT_KITS`): loose drum samples, named file by file, as GM drum sets.

Debian ``sonic-pi-samples`` and ``lmms-common`` install them; each file is given an instrument name
that the GM drum mapping (``drum_map``) places, as it places a Hydrogen kit's instruments.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from dawsep.train.data.drum_map import DrumInstrument, DrumLayer, drum_set
from dawsep.train.data.samples import SampleSet, SamplerError

__all__ = ["OneShotKit", "ONESHOT_KITS", "oneshot_kits", "load_oneshot_kit"]


@dataclass(frozen=True)
class OneShotKit:
    root: str      # folder of the files
    package: str   # Debian package that installs them
    #: (instrument name, files from the softest to the hardest recording): the names follow the
    #: Hydrogen naming rules (:func:`drum_map.drum_category`), so the GM drum mapper places them.
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
    """A one-shot kit (:data:`ONESHOT_KITS`) as a GM drum set: every key of :data:`drum_map.GROOVE_KEYS`
    (and more) gets a sound through the GM drum mapper's fallbacks; an instrument recorded at
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
        layers = [DrumLayer(os.path.join(kit.root, f), i / n, (i + 1) / n, 1.0, 0.0) for i, f in enumerate(files)]
        instruments.append(DrumInstrument(inst_name, 1.0, -1, layers))
    return drum_set(name, instruments)
