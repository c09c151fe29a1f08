"""One song from its spec to a finished folder: generate, check, render, produce, mix, write.

A song folder is written under a temporary name and renamed into place once complete, so an
interrupted build never leaves a half-written song that a rerun would take as done.
"""
from __future__ import annotations

import json
import os
import shutil
import traceback
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from dawsep.train.data import arrange, heldout, m21, piano_solo, procedural, procedural_piano, production, sources
from dawsep.train.data.render import BLOCK, Renderer, RenderedPart
from dawsep.train.data.score import PIANO_MAX, PIANO_MIN, SAMPLE_RATE, STEMS, Note, Part, Song, write_label_midi
from dawsep.train.data.soundfonts import Soundfont, by_weight, training_soundfonts

GENERATOR_VERSION = 2  # meta.json records it; corpus version 1 songs are still rendered bit-identically
KINDS = ("gen", "m21", "piano", "demo")
_RANGES = {"piano": (PIANO_MIN, PIANO_MAX), "bass": (24, 67), "guitar": (38, 88), "other": (28, 108), "drums": (27, 87)}


@dataclass(frozen=True)
class SongSpec:
    split: str
    kind: str  # gen | m21 | piano | demo
    index: int
    seconds: float
    master_seed: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index:06d}"

    @property
    def seed(self) -> list[int]:
        """Entropy and spawn key of the song's SeedSequence: master seed + split + kind + index."""
        return [int(self.master_seed), heldout.SPLITS.index(self.split), KINDS.index(self.kind), int(self.index)]

    def rng(self) -> np.random.Generator:
        s = self.seed
        return np.random.default_rng(np.random.SeedSequence(entropy=s[0], spawn_key=tuple(s[1:])))


def is_complete(song_dir: str) -> bool:
    return os.path.isfile(os.path.join(song_dir, "meta.json"))


def compose(spec: SongSpec, rng: np.random.Generator) -> tuple[Song, list[str]]:
    """The song's parts (in seconds) for its kind; music21 failures fall back to generated music."""
    notes = []
    if spec.kind in ("gen", "demo"):
        return arrange.generate_song(rng, spec.seconds), notes
    if spec.kind == "m21" or (spec.kind == "piano" and rng.random() < 0.2):
        for _ in range(3):
            try:
                return m21.arrange_piece(rng, spec.split, spec.seconds, solo_piano=spec.kind == "piano"), notes
            except heldout.HeldOutError:
                raise
            except Exception as e:  # a corpus file music21 cannot read: try another, then give up
                notes.append(f"music21: {type(e).__name__}: {e}")
        if spec.kind == "m21":
            return arrange.generate_song(rng, spec.seconds), notes
    return piano_solo.solo_piano(rng, spec.seconds), notes


def choose_soundfonts(spec: SongSpec, song: Song, rng: np.random.Generator,
                      train_fonts: list[Soundfont], test_font: Soundfont | None) -> list[Soundfont]:
    """Test and demo songs use the held-out font only; others pick a main font and vary some parts."""
    if spec.split == "test" or spec.kind == "demo":
        if test_font is None:
            raise heldout.HeldOutError("the test split needs the held-out soundfont, and none is installed")
        return [test_font] * len(song.parts)
    w = by_weight(train_fonts)
    main = train_fonts[int(rng.choice(len(train_fonts), p=w))]
    return [main if rng.random() < 0.6 else train_fonts[int(rng.choice(len(train_fonts), p=w))] for _ in song.parts]


def _velocity_curve(song: Song, rng: np.random.Generator, gamma_range: tuple[float, float] = (0.8, 1.25)) -> list[float]:
    """Per-part velocity response (gamma): different players and instruments, same labels."""
    gammas = []
    for p in song.parts:
        g = float(rng.uniform(*gamma_range))
        for n in p.notes:
            n.velocity = int(np.clip(round(127 * (n.velocity / 127) ** g), 1, 127))
        gammas.append(round(g, 3))
    return gammas


def _write_flac(path: str, q: np.ndarray, bits: int) -> None:
    if bits == 24:
        sf.write(path, (q.T.astype(np.int32) << 8), SAMPLE_RATE, subtype="PCM_24")
    else:
        sf.write(path, q.T.astype(np.int16), SAMPLE_RATE, subtype="PCM_16")


def render_song(spec: SongSpec, out_dir: str, renderer: Renderer, train_fonts: list[Soundfont] | None = None,
                test_font: Soundfont | None = None, bits: int = 24, procedural_fraction: float = 0.0,
                palette: sources.Palette | None = None) -> dict:
    """Render one song into ``out_dir`` (its final folder). Returns its meta.

    ``palette`` (corpus v2): train/valid parts are assigned to its sources (soundfonts, sample sets,
    the procedural piano, with timbre augmentation), every sample a part will play is checked
    against the reserved content, and the hashes are recorded. Without it (corpus v1) parts are
    played by ``train_fonts`` as before, bit-identically. Test and demo songs never change.
    ``procedural_fraction``: share of bass/guitar/other parts (train/valid only) replayed by a random
    procedural voice. Its draws come from a separate stream, so 0 leaves songs bit-identical.
    """
    rng = spec.rng()
    song, notes = compose(spec, rng)
    for part in song.parts:
        part.clean(*_RANGES[part.stem])
    song.parts = [p for p in song.parts if p.notes]
    seen_split = spec.split != "test" and spec.kind != "demo"
    v2 = palette is not None and seen_split
    requested = [p.program for p in song.parts]
    if v2:
        choices = sources.choose_parts(spec.split, spec.index // 2, [p.stem for p in song.parts],
                                       requested, [p.drums for p in song.parts], palette, rng)
        fonts = [c.font for c in choices]
    else:
        if seen_split:
            train_fonts = train_fonts or training_soundfonts()
        fonts = choose_soundfonts(spec, song, rng, train_fonts or [], test_font)
        choices = [sources.Choice(f.source or f.label, f, p.program, 128 if p.drums else 0) for f, p in zip(fonts, song.parts)]
    # The rule is enforced here, right before any audio exists, and again by every reader.
    heldout.check_allowed(spec.split, [f.path for f in fonts if f is not None], song.info.get("source"))
    gammas = _velocity_curve(song, rng, (0.6, 1.6) if v2 else (0.8, 1.25))
    tune = float(rng.uniform(-30, 30)) if v2 else float(np.clip(rng.normal(0, 8), -25, 25))
    tuning = [0.0 if p.drums else round(tune + float(rng.normal(0, 2)), 2) for p in song.parts]
    pan_spread = {"piano": 15, "bass": 6, "drums": 0, "guitar": 40, "other": 45}
    pans = [int(np.clip(64 + rng.normal(0, pan_spread[p.stem] / 2), 0, 127)) for p in song.parts]
    n = int(round(spec.seconds * SAMPLE_RATE))
    hashes: dict[int, list[str]] = {}
    play: dict[int, dict] = {}
    if v2:
        for i, (p, c) in enumerate(zip(song.parts, choices)):
            if c.font is not None:
                p.program = c.program
                hashes[i] = sources.preset_hashes(c.font, c.bank, c.program)
                heldout.check_sample_hashes(spec.split, hashes[i], f"{c.font.label} bank {c.bank} program {c.program}")
        sf_idx = [i for i, c in enumerate(choices) if c.font is not None]
        by_sf = renderer.render([(song.parts[i], choices[i].font.path) for i in sf_idx], spec.seconds,
                                [tuning[i] for i in sf_idx], [pans[i] for i in sf_idx])
        rendered: list[RenderedPart] = [None] * len(song.parts)  # type: ignore[list-item]
        for i, r in zip(sf_idx, by_sf):
            rendered[i] = r
        s0 = spec.seed
        arng = np.random.default_rng(np.random.SeedSequence(entropy=s0[0], spawn_key=tuple(s0[1:]) + (11,)))
        for i, c in enumerate(choices):
            if c.font is None:
                rendered[i], hashes[i], play[i] = _render_sampled(song.parts[i], c, n, tuning[i], palette, arng,
                                                                  spec.split)
    else:
        rendered = renderer.render([(p, f.path) for p, f in zip(song.parts, fonts)], spec.seconds, tuning, pans)
    voices: dict[int, dict] = {}
    if procedural_fraction > 0 and seen_split:
        s0 = spec.seed
        prng = np.random.default_rng(np.random.SeedSequence(entropy=s0[0], spawn_key=tuple(s0[1:]) + (7,)))
        for i, r in enumerate(rendered):
            if r.part.stem in ("bass", "guitar", "other") and prng.random() < procedural_fraction:
                voices[i] = procedural.random_voice(prng, r.part.stem)
                r.audio = procedural.render_notes(r.part.notes, n, voices[i], int(prng.integers(2**31)))
                hashes[i] = []
    stems = {s: np.zeros((2, n), np.float32) for s in STEMS}
    for r in rendered:
        stems[r.part.stem] += r.audio
    chains = {s: production.random_chain(rng, s, next((r.program for r in rendered if r.part.stem == s), 0)) for s in STEMS}
    if spec.kind == "piano":
        chains = {s: (c if s == "piano" else []) for s, c in chains.items()}
    for s in STEMS:
        stems[s] = production.apply_chain(stems[s], chains[s])
    q, mixture, levels = production.mix(stems, rng, bits=bits)

    tmp = os.path.join(os.path.dirname(out_dir), f".tmp-{os.path.basename(out_dir)}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        _write_flac(os.path.join(tmp, "mixture.flac"), mixture, bits)
        for s in STEMS:
            _write_flac(os.path.join(tmp, f"{s}.flac"), q[s], bits)
        piano = next((r for r in rendered if r.part.stem == "piano"), None)
        pnotes = piano.part.notes if piano else []
        pedal = [(t, v) for t, c, v in (piano.part.cc if piano else []) if c == 64]
        write_label_midi(os.path.join(tmp, "piano.mid"), pnotes, pedal, piano.program if piano else 0)
        meta = {
            "name": spec.name, "split": spec.split, "kind": spec.kind, "seed": spec.seed,
            "generator_version": GENERATOR_VERSION, "sample_rate": SAMPLE_RATE, "seconds": spec.seconds,
            "samples": n, "bits": bits, "source": song.info.get("source"), "info": song.info,
            "tuning_cents": tune,
            "parts": [
                {"stem": r.part.stem, "role": r.part.role, "program": r.program, "bank": r.bank,
                 "requested_program": rp,
                 "source": "procedural" if i in voices else c.source,
                 "soundfont": "procedural" if i in voices else f.path if f is not None else c.source,
                 "soundfont_name": "procedural" if i in voices else f.name if f is not None else c.source,
                 "notes": len(r.part.notes), "velocity_gamma": g, "pan": pan, "tuning_cents": tc,
                 **({"voice": voices[i]} if i in voices else {}),
                 **({"play": play[i]} if i in play and i not in voices else {}),
                 **({"sample_hashes": hashes[i]} if i in hashes else {})}
                for i, (r, rp, c, f, g, pan, tc) in enumerate(zip(rendered, requested, choices, fonts, gammas, pans, tuning))
            ],
            "effects": {s: [{"plugin": name, **params} for name, params in chains[s]] for s in STEMS},
            "mix": levels,
            "stems_present": [s for s in STEMS if q[s].any()],
            "piano_notes": len(pnotes),
            "piano_pitch_range": [min((x.pitch for x in pnotes), default=None), max((x.pitch for x in pnotes), default=None)],
            "piano_max_polyphony": _max_polyphony(pnotes),
            "warnings": notes,
        }
        with open(os.path.join(tmp, "meta.json"), "w") as fh:
            json.dump(meta, fh, indent=1, default=_json_default)
        if os.path.exists(out_dir):  # another worker finished it first
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def quantised(part: Part, n_samples: int) -> Part:
    """The part as the FluidSynth renderer plays it: events on its 64-sample block grid, nothing
    past the audio. Sampled and procedural parts use the same grid, so labels mean the same."""
    last = n_samples // BLOCK
    kept = []
    for x in part.notes:
        b0, b1 = int(round(x.start * SAMPLE_RATE / BLOCK)), int(round(x.end * SAMPLE_RATE / BLOCK))
        if b0 < last:
            kept.append(Note(x.pitch, b0 * BLOCK / SAMPLE_RATE, min(max(b1, b0 + 1), last) * BLOCK / SAMPLE_RATE, x.velocity))
    cc = [(int(np.clip(round(t * SAMPLE_RATE / BLOCK), 0, last)) * BLOCK / SAMPLE_RATE, c, v) for t, c, v in part.cc]
    return Part(part.stem, part.role, part.program, kept, cc, part.drums)


def _render_sampled(part: Part, c: sources.Choice, n: int, tuning_cents: float, palette: sources.Palette,
                    arng: np.random.Generator, split: str) -> tuple[RenderedPart, list[str], dict]:
    """A part played by a sample set or the procedural piano, with per-song timbre augmentation.

    Returns the rendered part (its notes quantised like FluidSynth's), the content hashes of every
    sample it played (checked against the reserved content here) and the play parameters.
    """
    q = quantised(part, n)
    pedal = [(t, v) for t, cc, v in q.cc if cc == 64]
    seed = int(arng.integers(2**31))
    if c.source == sources.PROCEDURAL_PIANO:
        voice = procedural_piano.random_voice(arng)
        voice["tuning_cents"] = tuning_cents
        audio = procedural_piano.render_notes(q.notes, n, voice, seed, pedal)
        return RenderedPart(q, -1, 0, 0, audio), [], {"voice": voice}
    if c.source == sources.FREEPATS:
        from dawsep.train.data import freepats, timidity

        pan = int(np.clip(64 + arng.normal(0, 7), 0, 127))
        audio = timidity.render_part_timidity(q.notes, q.cc, part.program, False, n, seed, tuning_cents, pan)
        played = freepats.patch_hashes(part.program, False)
        heldout.check_sample_hashes(split, played, f"freepats program {part.program}")
        program = freepats.played_program(part.program)
        return RenderedPart(q, -1, program, 0, audio), played, {"program": program, "pan": pan}
    from dawsep.train.data.sampler import PlayParams, render_part

    sset = palette.sample_set(c.source)
    if sset.drums:
        params = PlayParams(velocity_range_db=float(arng.uniform(14, 30)), seed=seed)
    else:  # single-layer piano: loudness, brightness, damper and pitch-borrowing vary per song
        params = PlayParams(shift_semitones=int(arng.integers(-2, 3)), velocity_range_db=float(arng.uniform(24, 40)),
                            brightness=float(arng.uniform(0.6, 1.5)), release_s=float(arng.uniform(0.12, 0.4)),
                            detune_cents_sd=float(arng.uniform(0, 4)), seed=seed)
    audio, played = render_part(q.notes, n, sset, params, pedal=[] if sset.drums else pedal)
    heldout.check_sample_hashes(split, played, sset.name)
    return RenderedPart(q, -1, 0, 128 if sset.drums else 0, audio), played, {"params": params.__dict__}


def _max_polyphony(notes) -> int:
    ev = sorted([(n.start, 1) for n in notes] + [(n.end, -1) for n in notes])
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def safe_render(spec: SongSpec, out_dir: str, renderer: Renderer, **kw) -> tuple[str, float, str | None]:
    """Render, turning an exception into a message (one bad song must not end a long build)."""
    try:
        meta = render_song(spec, out_dir, renderer, **kw)
        return spec.name, float(meta["seconds"]), None
    except heldout.HeldOutError:
        raise
    except Exception:
        return spec.name, 0.0, traceback.format_exc(limit=6)

