"""Real compositions from the music21 corpus, arranged across the five stems.

The held-out composers (``heldout.HELDOUT_COMPOSERS``) are only ever offered to the test split;
the rest of the corpus is divided between train and valid by a stable hash of the file path, so
a piece never appears in both.
"""
from __future__ import annotations

import os
import warnings
import zlib
from functools import lru_cache

import numpy as np

from dawsep.train.data import arrange_band, arrange_piano
from dawsep.train.data.arrange_frame import Frame, Writer, pick
from dawsep.train.data.heldout import HELDOUT_COMPOSERS, check_allowed
from dawsep.train.data.score import PIANO_MAX, PIANO_MIN, Part, Song
from dawsep.train.data.theory import Chord, Key

# Collections that parse quickly one piece per file (the big ABC "opus" files take 5-30 s each).
_SKIP = {"demos", "leadsheet", "theoryexercises", "oneills1850", "essenfolksong", "nottingham-dataset", "miscfolk"}
_EXTS = (".krn", ".mxl", ".xml", ".musicxml", ".abc", ".mid")


@lru_cache(maxsize=1)
def corpus_root() -> str:
    from music21 import corpus

    paths = [str(p) for p in corpus.getPaths()]
    return os.path.commonpath(paths)


@lru_cache(maxsize=1)
def _all_pieces() -> tuple[str, ...]:
    from music21 import corpus

    root = corpus_root()
    rels = []
    for p in corpus.getPaths():
        rel = os.path.relpath(str(p), root).replace(os.sep, "/")
        if rel.lower().endswith(_EXTS) and rel.split("/")[0].lower() not in _SKIP:
            rels.append(rel)
    return tuple(sorted(rels))


def pieces_for(split: str) -> list[str]:
    """Corpus paths (relative to the corpus root) a split may draw from."""
    out = []
    for rel in _all_pieces():
        held = rel.split("/")[0].lower() in HELDOUT_COMPOSERS
        if split == "test":
            if held:
                out.append(rel)
        elif not held:
            in_valid = zlib.crc32(rel.encode()) % 20 == 0
            if in_valid == (split == "valid"):
                out.append(rel)
    return out


def choose_piece(rng: np.random.Generator, split: str) -> str:
    """Pick a collection (weighted by sqrt of its size, so Palestrina does not swamp the rest), then a piece."""
    pool = pieces_for(split)
    groups: dict[str, list[str]] = {}
    for rel in pool:
        groups.setdefault(rel.split("/")[0], []).append(rel)
    names = sorted(groups)
    w = np.sqrt([len(groups[n]) for n in names])
    g = names[int(rng.choice(len(names), p=w / w.sum()))]
    return groups[g][int(rng.integers(len(groups[g])))]


def load_voices(rel: str, rng: np.random.Generator):
    """Parse a piece: voices as lists of (offset_q, dur_q, pitch), bar length (quarters), tempo, compound."""
    from music21 import corpus, meter, stream, tempo

    with warnings.catch_warnings():  # music21 narrates every overfull measure; the notes are what matter
        warnings.simplefilter("ignore")
        s = corpus.parse(rel)
    if isinstance(s, stream.Opus):
        s = s.scores[int(rng.integers(len(s.scores)))]
    bar_q, compound = 4.0, False
    ts = next(iter(s.recurse().getElementsByClass(meter.TimeSignature)), None)
    if ts is not None:
        bar_q = float(ts.barDuration.quarterLength) or 4.0
        compound = ts.denominator == 8 and ts.numerator in (6, 9, 12)
    bpm = None
    mm = next(iter(s.recurse().getElementsByClass(tempo.MetronomeMark)), None)
    if mm is not None and mm.number:
        bpm = float(mm.getQuarterBPM() or mm.number)
    voices = []
    parts = s.parts if len(s.parts) else [s]
    for part in parts:
        v = []
        for n in part.stripTies().flatten().notes:
            dur = float(n.quarterLength)
            if dur <= 0:  # grace notes: a short real note
                dur = 0.125
            for p in n.pitches:
                v.append((float(n.offset), dur, int(p.midi)))
        if v:
            voices.append(sorted(v))
    return voices, bar_q, bpm, compound


def harmonise(key: Key, melody: list[tuple[float, float, int]], bar_q: float, n_bars: int, start_q: float,
              rng: np.random.Generator) -> list[tuple[float, float, Chord]]:
    """One diatonic triad per bar: the one covering most of the bar's melody (strong beats count double)."""
    cands = [key.degree_chord(d, rng, "classical") for d in range(7)]
    chords = []
    for b in range(n_bars):
        b0 = start_q + b * bar_q
        score = np.zeros(7)
        for off, dur, p in melody:
            if b0 <= off < b0 + bar_q:
                wgt = dur * (2.0 if (off - b0) % 1.0 == 0 else 1.0)
                for i, c in enumerate(cands):
                    if p % 12 in c.tones:
                        score[i] += wgt
        score[[0, 3, 4]] += 0.01  # prefer I, IV, V on ties
        chords.append((b * bar_q, bar_q, cands[int(np.argmax(score))]))
    return chords


def arrange_piece(rng: np.random.Generator, split: str, seconds: float, rel: str | None = None,
                  solo_piano: bool = False) -> Song:
    """Arrange (an excerpt of) a corpus piece: voices spread over piano/bass/guitar/other (+ drums)."""
    rel = rel or choose_piece(rng, split)
    check_allowed(split, (), rel)
    voices, bar_q, bpm, compound = load_voices(rel, rng)
    if not voices:
        raise ValueError(f"{rel}: no notes")
    all_notes = [n for v in voices for n in v]
    med = float(np.median([d for _, d, _ in all_notes]))
    if bpm is None or rng.random() < 0.5:
        # Tempo from note density: a typical note lasts 0.2-0.55 s.
        bpm = float(np.clip(60 * med / rng.uniform(0.2, 0.55), 50, 200))
    bpm *= float(rng.uniform(0.9, 1.1))
    length_q = max(o + d for o, d, _ in all_notes)
    want_q = seconds * bpm / 60
    n_bars = max(1, int((seconds - 1.0) * bpm / 60 // bar_q))
    first = min(o for o, _, _ in all_notes)
    max_start_bar = max(0, int((length_q - want_q) // bar_q))
    start_q = first + bar_q * int(rng.integers(0, max_start_bar + 1))
    end_q = start_q + n_bars * bar_q
    transpose = int(rng.integers(-5, 7))
    # Key of the excerpt, for harmonising melodies and writing drums/bass lines.
    pcs = np.zeros(12)
    for o, d, p in all_notes:
        if start_q <= o < end_q:
            pcs[(p + transpose) % 12] += d
    major = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    minor = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
    scores = [(np.corrcoef(pcs, np.roll(prof, k))[0, 1] if pcs.any() else 0.0, k, m)
              for m, prof in ((False, major), (True, minor)) for k in range(12)]
    _, tonic, minor_key = max(scores)
    key = Key(int(tonic), bool(minor_key))
    frame = Frame(key, bpm, bar_q, compound, 0.5, n_bars, [], list(range(0, n_bars, 8)), np.zeros(n_bars))
    level = float(rng.uniform(55, 95))
    frame.dyn = np.clip(level + np.cumsum(rng.normal(0, 4, n_bars)), 30, 115)
    frame.finish_timing(rng, 0.015 if rng.random() < 0.5 else 0.0, rng.random() < 0.3)
    top = sorted(voices, key=lambda v: -np.mean([p for _, _, p in v]))
    melody_q = [(o, d, p + transpose) for o, d, p in top[0]]
    frame.chords = harmonise(key, melody_q, bar_q, n_bars, start_q, rng)

    # Voice -> stem assignment.
    n = len(top)
    if solo_piano or rng.random() < 0.25:
        assign = ["piano"] * n
    else:
        assign = []
        for i in range(n):
            if n > 1 and i == n - 1:
                assign.append(str(pick(rng, ["bass", "bass", "piano"])))
            elif i == 0 and n > 1:
                assign.append(str(pick(rng, ["other", "piano", "other", "guitar"])))
            else:
                assign.append(str(pick(rng, ["piano", "piano", "guitar", "other"])))
        if "piano" not in assign:
            assign[min(1, n - 1)] = "piano"
    programs = {"piano": int(pick(rng, arrange_piano.PIANO_PROGRAMS, p=arrange_piano.PIANO_WEIGHTS)),
                "bass": int(pick(rng, arrange_band.BASS_PROGRAMS)), "guitar": int(pick(rng, (24, 25, 26, 27))),
                "other": int(pick(rng, arrange_band.OTHER_ROLES["strings"] + arrange_band.OTHER_ROLES["lead"]))}
    parts: dict[str, Part] = {}
    writers: dict[str, Writer] = {}
    for v, stem in zip(top, assign):
        w = writers.setdefault(stem, Writer(frame, rng, jitter_ms=6))
        shift = -12 if stem == "bass" and np.mean([p for _, _, p in v]) > 52 else 0
        accent = 6 if v is top[0] else 0
        for o, d, p in v:
            if start_q <= o < end_q:
                beat = o - start_q
                vel = frame.bar_dyn(beat) + accent + (6 if (beat % bar_q) == 0 else 0) + rng.normal(0, 6)
                w.note(p + transpose + shift, beat, min(d, end_q - o), vel, legato=float(rng.uniform(0.85, 1.0)))
    ranges = {"piano": (PIANO_MIN, PIANO_MAX), "bass": (28, 60), "guitar": (40, 84), "other": (36, 96)}
    for stem, w in writers.items():
        part = Part(stem, "voices", programs[stem], w.notes)
        part.clean(*ranges[stem])
        parts[stem] = part
    if n == 1:
        # A bare tune: give the piano a generated accompaniment on the harmonisation.
        style = "waltz" if bar_q == 3 else str(pick(rng, ["pop", "ballad", "classical"]))
        acc = arrange_piano.piano(frame, rng, style, melody_lead=False)
        acc.notes = [x for x in acc.notes if x.start < frame.seconds]
        if "piano" in parts:
            parts["piano"].notes += acc.notes
            parts["piano"].cc += acc.cc
            parts["piano"].clean(*ranges["piano"])
        else:
            acc.program = programs["piano"]
            parts["piano"] = acc
    song_parts = list(parts.values())
    if not solo_piano:
        # Fill what the piece lacks: an accompaniment part or two from the same harmony, and drums.
        style = "classical" if bar_q != 3 else "waltz"
        if "bass" not in parts and rng.random() < 0.6:
            song_parts.append(arrange_band.bass(frame, rng, style))
        if "guitar" not in parts and rng.random() < 0.35:
            song_parts.append(arrange_band.guitar(frame, rng, "pop"))
        if rng.random() < 0.45:
            song_parts.append(arrange_band.drums(frame, rng, str(pick(rng, ["pop", "ballad", "rock"])) if bar_q == 4 else style))
    piano_part = parts.get("piano")
    if piano_part is not None and not piano_part.cc and rng.random() < 0.5:
        piano_part.cc.extend(arrange_piano.pedal_changes(frame, rng, [b * bar_q for b in range(n_bars)]))
    info = {"style": "music21", "bpm": round(bpm, 2), "bar_quarters": bar_q, "transpose": transpose,
            "key": f"{key.tonic}{'m' if key.minor else ''}", "excerpt_quarters": [start_q, end_q],
            "voices": dict(zip([f"v{i}" for i in range(n)], assign))}
    song = Song(song_parts, seconds, info)
    song.info["source"] = rel
    return song
