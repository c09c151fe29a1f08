"""Training-data synthesis speed: render N songs of 30 s with 2 worker processes.

``run(quick)`` returns a Markdown section for docs/BENCHMARKS.md (collected by bench/run.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

CORPUS = os.path.join(os.path.expanduser("~"), ".cache", "dawsep", "data")


def _corpus_sizes(root: str) -> list[str]:
    from dawsep.train.data.corpus import iter_songs

    rows = []
    for split in ("train", "valid", "test"):
        secs: dict[str, float] = {}
        n: dict[str, int] = {}
        for _, meta in iter_songs(root, split):
            secs[meta["kind"]] = secs.get(meta["kind"], 0.0) + meta["seconds"]
            n[meta["kind"]] = n.get(meta["kind"], 0) + 1
        for kind in sorted(secs):
            rows.append(f"| {split} | {kind} | {n[kind]} | {secs[kind] / 3600:.2f} |")
    return rows


def run(quick: bool = False) -> str:
    from dawsep.train.data.corpus import CorpusConfig, build, plan

    n_songs = 8 if quick else 40
    jobs = 2
    # A train-like batch: 30-s songs in the corpus's own mix of generated, music21 and solo piano.
    cfg = CorpusConfig(hours=n_songs * 0.75 * 30 / 3600, piano_hours=n_songs * 0.25 * 30 / 3600,
                       valid_hours=0, test_hours=0, valid_piano_hours=0, test_piano_hours=0,
                       song_seconds=30.0, seed=12345)
    specs = [s for s in plan(cfg)]
    load = os.getloadavg()[0]  # other work on the machine lowers the figure: say so
    tmp = tempfile.mkdtemp(prefix="dawsep-bench-data-")
    try:
        t0 = time.perf_counter()
        rep = build(tmp, cfg, jobs=jobs, specs=specs)
        wall = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rtf = rep.audio_seconds / wall
    kinds = {k: sum(1 for s in specs if s.kind == k) for k in ("gen", "m21", "piano")}
    lines = [
        "## Training-data synthesis",
        "",
        f"Rendered {rep.built} songs ({rep.audio_seconds / 60:.1f} min of mixtures: {kinds['gen']} generated, "
        f"{kinds['m21']} music21, {kinds['piano']} solo piano; mean length 30 s) with `--jobs {jobs}` on "
        f"{os.cpu_count()} cores, end to end (worker start-up, generation, FluidSynth, pedalboard effects, "
        f"24-bit FLAC writes of mixture + 5 stems, piano.mid, meta.json): **{wall:.1f} s wall = {rtf:.1f}x real time** "
        f"({size / rep.audio_seconds * 3600 / 1e9:.2f} GB per hour of audio; 1-min load average before the run: {load:.2f}).",
        "",
        "Command (same pipeline): `dawsep-train data synth --out DIR --hours H --piano-hours P --seed S --jobs 2`"
        " (`bench.bench_data.run()` renders the batch above into a temporary folder).",
    ]
    if rep.failed:
        lines.append(f"\n{len(rep.failed)} songs failed: {', '.join(n for n, _ in rep.failed)}")
    if os.path.isdir(CORPUS):
        lines += ["", f"Corpus at `{CORPUS}`:", "", "| split | kind | songs | hours |", "|---|---|---|---|"]
        lines += _corpus_sizes(CORPUS)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(run(quick=bool(os.environ.get("QUICK"))))
