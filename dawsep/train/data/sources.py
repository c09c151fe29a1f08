"""Timbre sources of corpus v2 and how a song's parts are assigned to them.

A *source* is one instrument family the generator can play a part with: a soundfont (rendered by
FluidSynth), a sample set (the Iowa Steinway, a Hydrogen or one-shot drum kit: rendered by
``sampler``), the Freepats patches (rendered by TiMidity++) or a procedural instrument. The corpus names its sources explicitly (``CorpusConfig.sources``); nothing
is found by globbing. Piano families and drum kits are spread evenly over songs (round robin on
the song's index), the rest is drawn with weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from dawsep.train.data import heldout
from dawsep.train.data.soundfonts import TRAINING_SOUNDFONTS, Soundfont, SoundfontError, by_weight, resolve

IOWA = "iowa-steinway"
PROCEDURAL_PIANO = "procedural-piano"
FREEPATS = "freepats"  # GUS patches played by TiMidity++ (timidity.py)
HYDROGEN_PREFIX = "hydrogen:"
ONESHOT_PREFIX = "oneshot:"
#: Every source of corpus v2. Sampled kits are added by name: "hydrogen" = every Hydrogen kit the
#: sampler lists, "oneshot" = every installed one-shot kit (Sonic Pi's, LMMS's).
V2_SOUNDFONTS = ("fluidr3", "timgm6mb", "generaluser", "airfont320", "opl3", "sonivox")
V2_SOURCES = V2_SOUNDFONTS + (IOWA, PROCEDURAL_PIANO, FREEPATS, "hydrogen", "oneshot")
V1_SOURCES = ("fluidr3", "timgm6mb")
#: Lo-fi soundfonts: they play every stem but are not piano families (an FM or 11-22 kHz "piano"
#: is not the timbre the piano stem is judged on).
LOFI_SOUNDFONTS = ("opl3", "sonivox")
#: Share of drum parts played by a sampled kit (the rest by a soundfont's GM kits).
KIT_DRUM_SHARE = 0.5


@dataclass(frozen=True)
class Choice:
    """Where one part is played: a soundfont preset, a sample set or a procedural piano."""

    source: str                # "fluidr3", IOWA, "hydrogen:GMRockKit", PROCEDURAL_PIANO, ...
    font: Soundfont | None = None
    program: int = 0           # the preset that will actually play (after fallback)
    bank: int = 0

    @property
    def kind(self) -> str:
        if self.font is not None:
            return "sf2"
        return {PROCEDURAL_PIANO: "procedural", FREEPATS: "timidity"}.get(self.source, "sampler")


@dataclass
class Palette:
    """The resolved sources of a corpus (one per worker process)."""

    fonts: list[Soundfont]
    piano_families: list[str]   # non-lo-fi soundfont sources + IOWA, PROCEDURAL_PIANO, FREEPATS
    kits: list[str]             # sampled kits: "hydrogen:<folder name>", "oneshot:<name>"
    kit_folders: dict[str, str] = None  # type: ignore[assignment]  # hydrogen kit -> folder

    @classmethod
    def from_sources(cls, sources: tuple[str, ...]) -> "Palette":
        fonts = [resolve(s) for s in sources if s in TRAINING_SOUNDFONTS]
        if not fonts:
            raise SoundfontError(f"no soundfont among the sources {list(sources)}")
        fams = [f.source for f in fonts if f.source not in LOFI_SOUNDFONTS]
        fams += [s for s in (IOWA, PROCEDURAL_PIANO, FREEPATS) if s in sources]
        kits: list[str] = []
        folders: dict[str, str] = {}
        if "hydrogen" in sources or any(s.startswith(HYDROGEN_PREFIX) for s in sources):
            from dawsep.train.data.hydrogen import hydrogen_kits

            for k in hydrogen_kits():
                name = HYDROGEN_PREFIX + os.path.basename(k)
                if "hydrogen" in sources or name in sources:
                    kits.append(name)
                    folders[name] = k
        if "oneshot" in sources or any(s.startswith(ONESHOT_PREFIX) for s in sources):
            from dawsep.train.data.oneshot import oneshot_kits

            kits += [k for k in oneshot_kits() if "oneshot" in sources or k in sources]
        return cls(fonts, fams, kits, folders)

    def font(self, source: str) -> Soundfont:
        return next(f for f in self.fonts if f.source == source)

    def sample_set(self, source: str):
        """The loaded :class:`samples.SampleSet` of a sampler source (cached per process)."""
        from dawsep.train.data import hydrogen, iowa, oneshot

        cache = self.__dict__.setdefault("_sets", {})
        if source not in cache:
            if source == IOWA:
                cache[source] = iowa.load_iowa_steinway()
            elif source.startswith(ONESHOT_PREFIX):
                cache[source] = oneshot.load_oneshot_kit(source)
            else:
                cache[source] = hydrogen.load_hydrogen_kit(self.kit_folders[source])
        return cache[source]


def _preset_exists(font: Soundfont, bank: int, program: int) -> bool:
    from dawsep.train.data.sf2 import read_soundfont

    return (bank, program) in read_soundfont(font.path).presets


def played_program(font: Soundfont, bank: int, program: int, drums: bool) -> int | None:
    """The preset FluidSynth will select for a request (the renderer's fallback order), or None."""
    tries = [program] + ([0] if drums else [program - program % 8, 0])
    return next((p for p in tries if _preset_exists(font, bank, p)), None)


def preset_hashes(font: Soundfont, bank: int, program: int) -> list[str]:
    from dawsep.train.data.sf2 import read_soundfont

    return sorted(read_soundfont(font.path).preset_hashes(bank, program))


def allowed(split: str, font: Soundfont, bank: int, program: int) -> bool:
    """False when the preset would play a reserved sample (e.g. GeneralUser's MuseScore cello)."""
    try:
        heldout.check_sample_hashes(split, preset_hashes(font, bank, program),
                                    f"{font.label} bank {bank} program {program}")
    except heldout.HeldOutError:
        return False
    return True


def sf2_choice(split: str, font: Soundfont, program: int, drums: bool) -> Choice | None:
    bank = 128 if drums else 0
    p = played_program(font, bank, program, drums)
    if p is None or not allowed(split, font, bank, p):
        return None
    return Choice(font.source, font, p, bank)


def choose_parts(split: str, song_number: int, stems: list[str], programs: list[int], drums: list[bool],
                 palette: Palette, rng: np.random.Generator) -> list[Choice]:
    """One :class:`Choice` per part of a train/valid song.

    ``song_number`` (the index within the song's group) spreads piano families and sampled kits
    evenly: consecutive songs take consecutive families. A soundfont preset that is missing or
    would play a reserved sample is replaced by another font's, and FluidR3 is the last resort.
    """
    fams = palette.piano_families
    piano_family = fams[song_number % len(fams)]
    n_kits = len(palette.kits)
    kit = None
    if n_kits:
        period = max(2, int(round(n_kits / KIT_DRUM_SHARE)))
        slot = song_number % period  # with the piano families' period: every pairing within lcm songs
        kit = palette.kits[slot] if slot < n_kits else None
    w = by_weight(palette.fonts)
    main = palette.fonts[int(rng.choice(len(palette.fonts), p=w))]
    out: list[Choice] = []
    for stem, program, is_drums in zip(stems, programs, drums):
        if stem == "piano" and piano_family in (IOWA, PROCEDURAL_PIANO, FREEPATS):
            out.append(Choice(piano_family, program=program))
            continue
        if is_drums and kit is not None:
            out.append(Choice(kit))
            continue
        if stem == "piano":
            first = palette.font(piano_family)
        else:
            first = main if rng.random() < 0.6 else palette.fonts[int(rng.choice(len(palette.fonts), p=w))]
        candidates = [first] + [f for f in palette.fonts if f is not first]
        if stem == "piano":  # stay within the piano families; FM is not one of them
            candidates = [f for f in candidates if f.source in fams]
        choice = next((c for f in candidates for c in [sf2_choice(split, f, program, is_drums)] if c), None)
        if choice is None:
            raise SoundfontError(f"no allowed preset for program {program} (drums={is_drums}) in {[f.label for f in candidates]}")
        out.append(choice)
    return out
