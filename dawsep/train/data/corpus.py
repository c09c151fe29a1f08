"""The corpus: a deterministic plan of songs per split, built in parallel, resumable, verifiable.

Plan: for each (split, group) a separate random stream draws song lengths until the group's hours
are reached, so asking for more hours later extends the plan without changing songs already built.
Groups: ``mix`` (generated arrangements and music21 arrangements, 5 stems) and ``piano`` (solo).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from dawsep.errors import DawsepError
from dawsep.train.data import heldout
from dawsep.train.data.song import SongSpec, is_complete

M21_FRACTION = {"train": 0.25, "valid": 0.25, "test": 0.4}
#: Corpus v2's share of bass/guitar/other parts played by procedural voices.
V2_PROCEDURAL_FRACTION = 0.2
_GROUPS = ("mix", "piano")


class CorpusError(DawsepError):
    """Some songs of a build failed (the message lists them)."""

    exit_code = 11


@dataclass
class CorpusConfig:
    hours: float = 10.0  # train mixtures
    piano_hours: float = 5.0  # train solo piano
    valid_hours: float | None = None  # default 5 % of hours (at least two songs)
    test_hours: float | None = None
    valid_piano_hours: float | None = None
    test_piano_hours: float | None = None
    song_seconds: float = 30.0
    seed: int = 0
    procedural_fraction: float = 0.0  # share of bass/guitar/other parts played by procedural voices
    #: 1: FluidR3 + TimGM6mb soundfonts only (the first corpus, bit-identical); 2: every source in
    #: ``sources`` (soundfonts, sample sets, procedural piano) with timbre augmentation.
    version: int = 1
    sources: tuple[str, ...] = ()  # default: V1_SOURCES or V2_SOURCES by version

    def source_names(self) -> tuple[str, ...]:
        from dawsep.train.data.sources import V1_SOURCES, V2_SOURCES

        return tuple(self.sources) or (V2_SOURCES if self.version >= 2 else V1_SOURCES)

    def hours_for(self, split: str, group: str) -> float:
        if split == "train":
            return self.hours if group == "mix" else self.piano_hours
        explicit = {
            ("valid", "mix"): self.valid_hours, ("test", "mix"): self.test_hours,
            ("valid", "piano"): self.valid_piano_hours, ("test", "piano"): self.test_piano_hours,
        }[(split, group)]
        if explicit is not None:
            return explicit
        base = self.hours if group == "mix" else self.piano_hours
        return max(0.05 * base, 2 * self.song_seconds / 3600) if base > 0 else 0.0


def plan(cfg: CorpusConfig) -> list[SongSpec]:
    """Every song of the corpus, in build order (valid and test first: they are small)."""
    specs: list[SongSpec] = []
    for split in ("valid", "test", "train"):
        for gi, group in enumerate(_GROUPS):
            target = cfg.hours_for(split, group) * 3600
            rng = np.random.default_rng(
                np.random.SeedSequence(entropy=cfg.seed, spawn_key=(1000, heldout.SPLITS.index(split), gi))
            )
            total, i = 0.0, 0
            while total < target - 1e-6:
                seconds = round(float(cfg.song_seconds * rng.uniform(0.75, 1.25)), 2)
                if group == "piano":
                    kind = "piano"
                else:
                    kind = "m21" if rng.random() < M21_FRACTION[split] else "gen"
                # Song indices of a split are disjoint across groups: index = 2*i + group.
                specs.append(SongSpec(split, kind, 2 * i + gi, seconds, cfg.seed))
                total += seconds
                i += 1
    return specs


# ------------------------------------------------------------------ workers -----------------------

_worker: dict = {}


def _init_worker(version: int = 1, sources: tuple[str, ...] = ()) -> None:
    from dawsep.train.data.render import Renderer
    from dawsep.train.data.soundfonts import SoundfontError, heldout_soundfont, training_soundfonts
    from dawsep.train.data.sources import Palette, V1_SOURCES

    _worker["renderer"] = Renderer()
    _worker["train"] = training_soundfonts(sources or V1_SOURCES)
    _worker["palette"] = Palette.from_sources(sources) if version >= 2 else None
    try:
        _worker["test"] = heldout_soundfont()
    except SoundfontError:
        _worker["test"] = None


def _work(args: tuple[SongSpec, str, CorpusConfig]) -> tuple[str, str, float, str | None]:
    from dawsep.train.data.song import safe_render

    spec, root, cfg = args
    if not _worker:
        _init_worker(cfg.version, cfg.source_names())
    out_dir = os.path.join(root, spec.split, spec.name)
    name, seconds, err = safe_render(spec, out_dir, _worker["renderer"], train_fonts=_worker["train"],
                                     test_font=_worker["test"], procedural_fraction=cfg.procedural_fraction,
                                     palette=_worker["palette"])
    return spec.split, name, seconds, err


@dataclass
class BuildReport:
    built: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def build(root: str, cfg: CorpusConfig, jobs: int = 2, progress: Callable[[str], None] | None = None,
          specs: list[SongSpec] | None = None) -> BuildReport:
    """Render every planned song not already complete under ``root``."""
    specs = plan(cfg) if specs is None else specs
    if any(s.split == "test" for s in specs):
        from dawsep.train.data.soundfonts import heldout_soundfont

        heldout_soundfont()  # fail before rendering anything if the test split cannot be made
    os.makedirs(root, exist_ok=True)
    for split in heldout.SPLITS:
        d = os.path.join(root, split)
        os.makedirs(d, exist_ok=True)
        for entry in os.listdir(d):  # leftovers of an interrupted run
            if entry.startswith(".tmp-"):
                shutil.rmtree(os.path.join(d, entry), ignore_errors=True)
    _write_config(root, cfg)
    todo = [s for s in specs if not is_complete(os.path.join(root, s.split, s.name))]
    rep = BuildReport(skipped=len(specs) - len(todo))
    t0 = time.perf_counter()
    done = 0

    def account(res) -> None:
        nonlocal done
        split, name, seconds, err = res
        done += 1
        if err:
            rep.failed.append((f"{split}/{name}", err))
        else:
            rep.built += 1
            rep.audio_seconds += seconds
        if progress:
            el = time.perf_counter() - t0
            progress(f"[{done}/{len(todo)}] {split}/{name} {'FAILED' if err else 'ok'} "
                     f"({rep.audio_seconds / 3600:.2f} h in {el:.0f} s, {rep.audio_seconds / max(el, 1e-9):.1f}x real time)")

    if jobs <= 1 or len(todo) <= 1:
        _worker.clear()  # this process may have built another corpus before
        for s in todo:
            account(_work((s, root, cfg)))
    else:
        # spawn: workers start clean (no inherited synth or thread state) on every platform.
        ctx = mp.get_context("spawn")
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(cfg.version, cfg.source_names())) as pool:
            for res in pool.imap_unordered(_work, [(s, root, cfg) for s in todo], chunksize=1):
                account(res)
    rep.wall_seconds = time.perf_counter() - t0
    return rep


def _write_config(root: str, cfg: CorpusConfig) -> None:
    path = os.path.join(root, "corpus.json")
    with open(path + ".tmp", "w") as fh:
        json.dump({"config": {**cfg.__dict__, "sources": list(cfg.source_names())}, "layout": "<split>/<song>/{mixture,piano,bass,drums,guitar,other}.flac, piano.mid, meta.json"}, fh, indent=1)
    os.replace(path + ".tmp", path)


# ------------------------------------------------------------------ reading -----------------------


def iter_songs(root: str, split: str) -> Iterator[tuple[str, dict]]:
    """(song dir, meta) for every complete song of a split, sorted by name."""
    d = os.path.join(root, split)
    if not os.path.isdir(d):
        return
    for name in sorted(os.listdir(d)):
        song = os.path.join(d, name)
        if name.startswith(".") or not is_complete(song):
            continue
        with open(os.path.join(song, "meta.json")) as fh:
            yield song, json.load(fh)


def verify(root: str) -> dict:
    """Check the held-out rules over a whole corpus (raises HeldOutError) and summarise it.

    Train/valid songs are checked by name (soundfonts, compositions) and, where ``meta.json``
    records them (corpus v2), by the content hash of every sample each part played. The summary
    counts songs and hours per kind, per piano family and per drum source.
    """
    summary = {}
    for split in heldout.SPLITS:
        counts: dict[str, list[float]] = {}
        fonts: set[str] = set()
        piano: dict[str, list[float]] = {}
        drums: dict[str, list[float]] = {}
        for song, meta in iter_songs(root, split):
            if meta.get("split") != split:
                raise heldout.HeldOutError(f"{song}: meta says split {meta.get('split')!r}")
            heldout.check_meta(split, meta)  # names and, where recorded, every sample's content hash
            counts.setdefault(meta["kind"], []).append(meta["seconds"])
            fonts.update(os.path.basename(p["soundfont"]) for p in meta["parts"])
            for stem, table in (("piano", piano), ("drums", drums)):
                part = next((p for p in meta["parts"] if p["stem"] == stem), None)
                if part is not None:
                    table.setdefault(family_of(part), []).append(meta["seconds"])
        summary[split] = {
            "songs": {k: len(v) for k, v in counts.items()},
            "hours": {k: round(sum(v) / 3600, 3) for k, v in counts.items()},
            "soundfonts": sorted(fonts),
            "piano_families": {k: [len(v), round(sum(v) / 3600, 3)] for k, v in sorted(piano.items())},
            "drum_sources": {k: [len(v), round(sum(v) / 3600, 3)] for k, v in sorted(drums.items())},
        }
    return summary


def family_of(part: dict) -> str:
    """The source family of a meta.json part: its ``source``, or for songs rendered before sources
    were recorded, the registry name of its soundfont file (else the file name)."""
    if part.get("source"):
        return part["source"]
    from dawsep.train.data.soundfonts import source_of_path

    return source_of_path(part["soundfont"]) or os.path.basename(part["soundfont"])
