"""Finding the installed soundfonts and sorting them into training and held-out sets."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from dawsep.errors import DawsepError
from dawsep.train.data.heldout import is_heldout_soundfont, soundfont_name

#: Where Debian's soundfont packages put their files (fluid-soundfont-gm, timgm6mb-soundfont,
#: opl3-soundfont, musescore-general-soundfont*).
SEARCH_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts")
_ENV = "DAWSEP_SOUNDFONT_DIRS"  # extra os.pathsep-separated folders


class SoundfontError(DawsepError):
    """No usable soundfont for a split."""

    exit_code = 9


@dataclass(frozen=True)
class Soundfont:
    path: str  # resolved real path: the identity used in meta.json and held-out checks
    name: str  # INAM from the file
    heldout: bool

    @property
    def label(self) -> str:
        return os.path.basename(self.path)


def discover(extra_dirs: tuple[str, ...] = ()) -> list[Soundfont]:
    """All distinct soundfont files (by resolved path), sorted for determinism."""
    dirs = list(SEARCH_DIRS) + list(extra_dirs)
    dirs += [d for d in os.environ.get(_ENV, "").split(os.pathsep) if d]
    seen: dict[str, Soundfont] = {}
    for d in dirs:
        for pattern in ("*.sf2", "*.sf3", "*.SF2", "*.SF3"):
            for p in glob.glob(os.path.join(d, pattern)):
                real = os.path.realpath(p)
                if real in seen or not os.path.isfile(real):
                    continue
                # FluidR3 mono/GS packages hold FluidR3_GM's samples again: one family, keep one.
                base = os.path.basename(real).lower()
                if base.startswith("fluidr3mono") or base.startswith("fluidr3_gs"):
                    continue
                seen[real] = Soundfont(real, soundfont_name(real), is_heldout_soundfont(real))
    return [seen[k] for k in sorted(seen)]


def training_soundfonts(extra_dirs: tuple[str, ...] = ()) -> list[Soundfont]:
    fonts = [sf for sf in discover(extra_dirs) if not sf.heldout]
    if not fonts:
        raise SoundfontError(
            "no training soundfont found (install fluid-soundfont-gm / timgm6mb-soundfont; see scripts/sysdeps.sh)"
        )
    return fonts


def heldout_soundfont(extra_dirs: tuple[str, ...] = ()) -> Soundfont:
    """The MuseScore General variant to render the test split with (the fullest one installed)."""
    fonts = [sf for sf in discover(extra_dirs) if sf.heldout]
    if not fonts:
        raise SoundfontError(
            "no MuseScore General soundfont found (install musescore-general-soundfont-small); "
            "it is needed for the unseen-timbre test split"
        )
    return max(fonts, key=lambda sf: (os.path.getsize(sf.path), sf.path))


def by_weight(fonts: list[Soundfont]) -> list[float]:
    """Sampling weights: the small TimGM6mb bank gets less than the fuller FluidR3 bank."""
    w = []
    for sf in fonts:
        base = sf.label.lower()
        w.append(0.35 if "timgm" in base else 0.25 if "opl" in base else 1.0)
    total = sum(w)
    return [x / total for x in w]
