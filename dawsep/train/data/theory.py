"""Just enough harmony to write believable accompaniments: keys, chords, progressions, voicings."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)  # natural minor; V is made major where the style wants it

QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9),
    "6": (0, 4, 7, 9),
    "m6": (0, 3, 7, 9),
    "add9": (0, 4, 7, 14),
    "madd9": (0, 3, 7, 14),
    "9": (0, 4, 7, 10, 14),
    "maj9": (0, 4, 7, 11, 14),
    "m9": (0, 3, 7, 10, 14),
    "13": (0, 4, 10, 14, 21),
    "7b9": (0, 4, 7, 10, 13),
}

# Progressions as scale degrees (0-based) per style family; the chord quality comes from the key.
PROGRESSIONS = {
    "pop": [[0, 4, 5, 3], [5, 3, 0, 4], [0, 5, 3, 4], [0, 3, 4, 3], [0, 3, 5, 4], [3, 0, 4, 5], [0, 4, 3, 3]],
    "rock": [[0, 6, 3, 0], [0, 3, 4, 3], [0, 4, 3, 0], [5, 3, 0, 4], [0, 2, 3, 4], [0, 0, 3, 4]],
    "ballad": [[0, 2, 5, 3], [0, 4, 5, 2, 3, 0, 3, 4], [5, 3, 0, 4], [0, 3, 1, 4], [3, 4, 2, 5]],
    "swing": [[1, 4, 0, 5], [0, 5, 1, 4], [2, 5, 1, 4], [0, 3, 1, 4], [0, 0, 1, 4, 2, 5, 1, 4]],
    "classical": [[0, 3, 4, 0], [0, 1, 4, 0], [0, 5, 1, 4], [0, 3, 6, 2, 5, 1, 4, 0], [0, 4, 5, 2, 3, 0, 1, 4]],
    "waltz": [[0, 3, 4, 0], [0, 4, 4, 0], [0, 5, 1, 4], [0, 3, 0, 4]],
}


@dataclass(frozen=True)
class Chord:
    root: int  # pitch class 0..11
    quality: str
    bass: int  # pitch class of the bass note (inversions and slash chords)

    @property
    def tones(self) -> tuple[int, ...]:
        """Pitch classes (with extensions folded into the octave)."""
        return tuple(sorted({(self.root + i) % 12 for i in QUALITIES[self.quality]}))

    @property
    def intervals(self) -> tuple[int, ...]:
        return QUALITIES[self.quality]


@dataclass(frozen=True)
class Key:
    tonic: int
    minor: bool

    @property
    def scale(self) -> tuple[int, ...]:
        return tuple((self.tonic + s) % 12 for s in (MINOR if self.minor else MAJOR))

    def degree_chord(self, degree: int, rng: np.random.Generator, style: str) -> Chord:
        scale = MINOR if self.minor else MAJOR
        d = degree % 7
        root_i = scale[d]
        third = (scale[(d + 2) % 7] - root_i) % 12
        fifth = (scale[(d + 4) % 7] - root_i) % 12
        seventh = (scale[(d + 6) % 7] - root_i) % 12
        if self.minor and d == 4 and style in ("classical", "waltz", "swing", "ballad") and rng.random() < 0.8:
            third, seventh = 4, 10  # harmonic-minor dominant
        base = "maj" if (third, fifth) == (4, 7) else "min" if (third, fifth) == (3, 7) else "dim"
        q = base
        p7 = {"swing": 0.95, "ballad": 0.45, "classical": 0.15, "pop": 0.2, "rock": 0.1, "waltz": 0.2}[style]
        if d == 4 and base == "maj" and rng.random() < max(p7, 0.45):
            q = "7"
        elif rng.random() < p7:
            q = {("maj", 11): "maj7", ("maj", 10): "7", ("min", 10): "m7", ("dim", 10): "m7b5", ("dim", 9): "dim7"}.get(
                (base, seventh), base
            )
        if style == "swing" and q in ("7", "m7", "maj7") and rng.random() < 0.5:
            q = {"7": rng.choice(["9", "13", "7b9"]), "m7": "m9", "maj7": rng.choice(["maj9", "6"])}[q]
        elif style in ("pop", "ballad", "rock") and base == "maj" and q == "maj" and rng.random() < 0.25:
            q = str(rng.choice(["add9", "sus2", "sus4", "6"]))
        elif style in ("pop", "ballad") and base == "min" and q == "min" and rng.random() < 0.15:
            q = "madd9"
        root = (self.tonic + root_i) % 12
        bass = root
        p_inv = {"classical": 0.3, "ballad": 0.25, "pop": 0.12, "waltz": 0.2, "swing": 0.05, "rock": 0.05}[style]
        if rng.random() < p_inv:
            iv = QUALITIES[q]
            bass = (root + int(rng.choice([iv[1], iv[2]]))) % 12
        return Chord(root, q, bass)


def progression(key: Key, style: str, rng: np.random.Generator) -> list[Chord]:
    """A chord loop for a section: a stock progression or a functional random walk."""
    fam = style if style in PROGRESSIONS else "pop"
    if rng.random() < 0.7:
        degrees = list(PROGRESSIONS[fam][rng.integers(len(PROGRESSIONS[fam]))])
    else:
        # Tonic -> predominant -> dominant -> tonic, with substitutions.
        n = int(rng.choice([4, 4, 8]))
        groups = {"T": [0, 5, 2], "S": [3, 1, 5], "D": [4, 6, 4]}
        nxt = {"T": ["S", "D", "T"], "S": ["D", "S", "T"], "D": ["T", "T", "S"]}
        f, degrees = "T", []
        for i in range(n):
            degrees.append(int(rng.choice(groups[f])) if i else 0)
            f = str(rng.choice(nxt[f], p=[0.55, 0.3, 0.15]))
    if rng.random() < 0.25:  # rotate so sections do not all start on I
        r = int(rng.integers(len(degrees)))
        degrees = degrees[r:] + degrees[:r]
    return [key.degree_chord(d, rng, fam) for d in degrees]


def nearest(pc: int, target: float) -> int:
    """The MIDI pitch with pitch class ``pc`` nearest to ``target``."""
    base = int(round(target)) - ((int(round(target)) - pc) % 12)
    return base if target - base <= 6 else base + 12


def voicing(chord: Chord, center: float, n: int, rng: np.random.Generator, spread: float = 1.0) -> list[int]:
    """``n`` chord notes around ``center``: close position with a random inversion, optionally spread."""
    iv = list(chord.intervals)
    pcs = [(chord.root + i) % 12 for i in iv]
    if n > len(pcs):  # double the root/fifth first, then anything
        extra = [pcs[0], pcs[min(2, len(pcs) - 1)]] + pcs
        pcs = pcs + extra[: n - len(pcs)]
    elif n < len(pcs):
        # drop the fifth first (keeps the colour tones), then the root
        keep = [p for j, p in enumerate(pcs) if not (j == 2 and len(pcs) > 3)]
        pcs = keep[:n] if len(keep) >= n else pcs[:n]
    start = int(rng.integers(len(pcs)))
    order = pcs[start:] + pcs[:start]
    notes = [nearest(order[0], center - 5 * spread)]
    for pc in order[1:]:
        p = notes[-1] + ((pc - notes[-1]) % 12 or 12)
        if spread > 1.2 and rng.random() < 0.35:
            p += 12
        notes.append(p)
    shift = round((center - np.mean(notes)) / 12) * 12
    return sorted({p + shift for p in notes})


def scale_pitches(key: Key, lo: int, hi: int) -> list[int]:
    sc = set(key.scale)
    return [p for p in range(lo, hi + 1) if p % 12 in sc]
