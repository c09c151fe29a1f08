"""The soundfonts the generator may use, named explicitly: never found by globbing system folders.

A corpus is defined by a list of source names (``CorpusConfig.sources``), each resolved here to a
known file. What else happens to be installed (a reserved drum-only bank, a new alternative behind
``default-GM.sf2``) can therefore never slip into training, and two machines with different
packages build the same corpus or fail with a clear error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from dawsep.errors import DawsepError
from dawsep.train.data.heldout import is_heldout_soundfont, soundfont_name

#: Training soundfonts by source name -> candidate paths (Debian packages; first existing wins).
TRAINING_SOUNDFONTS: dict[str, tuple[str, ...]] = {
    "fluidr3": ("/usr/share/sounds/sf2/FluidR3_GM.sf2",),                       # fluid-soundfont-gm
    "timgm6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2",),                        # timgm6mb-soundfont
    "generaluser": ("/usr/share/minuet/soundfonts/GeneralUser-v1.47.sf2",),     # minuet-data
    "airfont320": ("/usr/share/sounds/sf2/A320U.sf2",),                         # denemo-data
    "opl3": ("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",),                       # opl3-soundfont (FM, lo-fi)
    # SONiVOX EAS GM wavetable (1.3 MB, 11-32 kHz samples, lo-fi), shipped in the npm package
    # @coderline/alphatab (make data: npm install --prefix ~/.cache/dawsep/npm @coderline/alphatab@1.8.4)
    "sonivox": (os.path.expanduser("~/.cache/dawsep/npm/node_modules/@coderline/alphatab/dist/soundfont/sonivox.sf2"),),
}
#: Debian package of each source, for error messages (make data installs them: scripts/sysdeps.sh).
PACKAGES = {"fluidr3": "fluid-soundfont-gm", "timgm6mb": "timgm6mb-soundfont", "generaluser": "minuet-data",
            "airfont320": "denemo-data", "opl3": "opl3-soundfont",
            "musescore-lite": "musescore-general-soundfont-small", "sonivox": "npm:@coderline/alphatab@1.8.4"}
#: The held-out test timbre. Pinned to the Lite variant: the v1 test split was rendered with it, and
#: every figure in docs/ is measured on that split (the Full variant is only a hash reference).
TEST_SOUNDFONT = ("musescore-lite", "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3")
#: Sampling weight of a family when a part picks a soundfont (small or lo-fi banks less often).
WEIGHTS = {"fluidr3": 1.0, "timgm6mb": 0.35, "generaluser": 1.0, "airfont320": 0.7, "opl3": 0.25, "sonivox": 0.25}


class SoundfontError(DawsepError):
    """A named soundfont is not installed, or no usable soundfont for a split."""

    exit_code = 9


@dataclass(frozen=True)
class Soundfont:
    path: str  # resolved real path: the identity used in meta.json and held-out checks
    name: str  # INAM from the file
    heldout: bool
    source: str = ""  # the source name it was resolved from ("fluidr3", ...)

    @property
    def label(self) -> str:
        return os.path.basename(self.path)


def resolve(source: str) -> Soundfont:
    """The installed file of a named source; SoundfontError naming the package when missing."""
    if source == TEST_SOUNDFONT[0]:
        candidates: tuple[str, ...] = (TEST_SOUNDFONT[1],)
    elif source in TRAINING_SOUNDFONTS:
        candidates = TRAINING_SOUNDFONTS[source]
    else:
        raise SoundfontError(f"unknown soundfont source {source!r}; known: "
                             f"{', '.join(sorted(TRAINING_SOUNDFONTS) + [TEST_SOUNDFONT[0]])}")
    for p in candidates:
        if os.path.isfile(p):
            real = os.path.realpath(p)
            sf = Soundfont(real, soundfont_name(real), is_heldout_soundfont(real), source)
            if source != TEST_SOUNDFONT[0] and sf.heldout:  # a path that now points at MuseScore
                raise SoundfontError(f"{p} resolves to the held-out {sf.name or real}; refusing it for {source!r}")
            return sf
    raise SoundfontError(f"soundfont {source!r} not installed ({' or '.join(candidates)}); "
                         f"install the Debian package {PACKAGES.get(source, '?')} (make data does)")


def training_soundfonts(sources: tuple[str, ...] = ("fluidr3", "timgm6mb")) -> list[Soundfont]:
    """The soundfonts of the named sources that are soundfonts (others are skipped), in order."""
    fonts = [resolve(s) for s in sources if s in TRAINING_SOUNDFONTS]
    if not fonts:
        raise SoundfontError(f"no training soundfont among the sources {list(sources)}")
    return fonts


def heldout_soundfont() -> Soundfont:
    """The MuseScore General variant the test split and the demo are rendered with."""
    return resolve(TEST_SOUNDFONT[0])


def source_of_path(path: str) -> str | None:
    """The registry name whose file is ``path`` (after resolving links), or None."""
    real = os.path.realpath(path)
    table = dict(TRAINING_SOUNDFONTS, **{TEST_SOUNDFONT[0]: (TEST_SOUNDFONT[1],)})
    return next((name for name, cands in table.items() if any(os.path.realpath(c) == real for c in cands)), None)


def by_weight(fonts: list[Soundfont]) -> list[float]:
    """Sampling weights of soundfonts (normalised), from :data:`WEIGHTS` by source name."""
    w = [WEIGHTS.get(sf.source or _source_of(sf), 1.0) for sf in fonts]
    total = sum(w)
    return [x / total for x in w]


def _source_of(sf: Soundfont) -> str:
    base = sf.label.lower()
    return "timgm6mb" if "timgm" in base else "opl3" if "opl" in base else "fluidr3" if "fluid" in base else ""
