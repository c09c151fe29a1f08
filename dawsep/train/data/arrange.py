"""Generated arrangements: five-part songs (piano, bass, drums, guitar, other) in seven styles.

:func:`generate_song` draws a style and a harmonic frame (``arrange_frame``), writes the piano
part (``arrange_piano``) and the band parts (``arrange_band``) on it, and drops parts from some
sections. The same part generators also accompany music21 pieces (``m21``), given a frame built
from the piece's own bars and a harmonisation.
"""
from __future__ import annotations

import numpy as np

from dawsep.train.data.arrange_band import bass, drums, guitar, other
from dawsep.train.data.arrange_frame import make_frame, pick
from dawsep.train.data.arrange_piano import PIANO_PROGRAMS, PIANO_WEIGHTS, piano
from dawsep.train.data.score import Song

__all__ = ["STYLES", "STYLE_WEIGHTS", "generate_song"]

STYLES = ("pop", "rock", "ballad", "swing", "classical", "waltz", "sixeight")
STYLE_WEIGHTS = (0.18, 0.14, 0.16, 0.14, 0.16, 0.11, 0.11)


def generate_song(rng: np.random.Generator, seconds: float, style: str | None = None) -> Song:
    style = style or str(rng.choice(STYLES, p=np.array(STYLE_WEIGHTS) / sum(STYLE_WEIGHTS)))
    frame = make_frame(rng, style, seconds)
    lead_on_piano = rng.random() < 0.55
    parts = []
    pp = piano(frame, rng, style, melody_lead=lead_on_piano)
    pp.program = int(pick(rng, PIANO_PROGRAMS, p=PIANO_WEIGHTS))
    parts.append(pp)
    parts.append(bass(frame, rng, style))
    if rng.random() < (0.35 if style == "classical" else 0.92):
        parts.append(drums(frame, rng, style))
    if rng.random() < (0.4 if style in ("classical", "waltz") else 0.85):
        parts.append(guitar(frame, rng, style))
    roles = ["pad", "strings", "lead", "brass"]
    n_other = int(rng.choice([1, 1, 2, 2, 3]))
    for r in rng.choice(roles, size=n_other, replace=False, p=[0.3, 0.25, 0.3, 0.15]):
        if r == "lead" and lead_on_piano and rng.random() < 0.6:
            r = "pad"
        parts.append(other(frame, rng, style, str(r)))
    # Drop parts from some sections (breakdowns, intros): stems are silent for stretches.
    for p in parts:
        for i, sb in enumerate(frame.section_starts):
            if rng.random() < (0.08 if p.stem == "piano" else 0.15) and len(frame.section_starts) > 1:
                end = frame.section_starts[i + 1] if i + 1 < len(frame.section_starts) else frame.n_bars
                t0, t1 = frame.bar_time[sb], frame.bar_time[end]
                p.notes = [n for n in p.notes if not t0 <= n.start < t1]
    info = {
        "style": style, "bpm": round(frame.bpm, 2), "meter": f"{frame.bar_beats:g}/4" + (" compound" if frame.compound else ""),
        "swing": round(frame.swing, 3), "key": f"{frame.key.tonic}{'m' if frame.key.minor else ''}", "bars": frame.n_bars,
    }
    return Song(parts, seconds, info)
