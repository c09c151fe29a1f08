"""Scale-out: songs per minute of the local engine vs Ray on one machine, and the per-song
overhead of each engine (what Ray costs before it pays off on more nodes)."""
from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from bench.bench_render import synth_song

REPO = Path(__file__).resolve().parent.parent
WORKERS = 2


@dataclasses.dataclass
class NoopJob:
    """A job that does nothing but write one empty file: what is left is the engine's cost
    (staging folder, rename, result back to the driver, ledger write)."""

    task: str = "noop"

    def fingerprint(self) -> str:
        return "noop"

    def setup(self, threads: int) -> None:
        pass

    def run(self, song, staging: Path) -> dict[str, Any]:
        (staging / "done").touch()
        return {"outputs": ["done"]}


def _timed_batch(job, src: Path, out: Path, **kw) -> float:
    from dawsep.batch import run_batch

    t0 = time.perf_counter()
    report = run_batch(job, src, out, progress=False, **kw)
    wall = time.perf_counter() - t0
    if not report.ok or report.skipped:
        raise RuntimeError(report.summary())
    return wall


def _song_folder(root: Path, n: int, seconds: float | None) -> Path:
    """``n`` synthetic FLAC songs, or with ``seconds=None`` empty files (NoopJob never reads them)."""
    root.mkdir()
    for i in range(n):
        path = root / f"song{i:04d}.flac"
        if seconds is None:
            path.touch()
        else:
            synth_song(path, seconds, seed=i)
    return root


def _ray_round_trip_ms(ray, calls: int = 300) -> float:
    @ray.remote(num_cpus=1)
    class Echo:
        def echo(self, x):
            return x

    actor = Echo.remote()
    ray.get(actor.echo.remote(0))
    t0 = time.perf_counter()
    for i in range(calls):
        ray.get(actor.echo.remote(i))
    ms = (time.perf_counter() - t0) / calls * 1e3
    ray.kill(actor)
    return ms


def _contention_note(load: float) -> str:
    """Say whether training processes shared the cores (they make every figure here lower)."""
    trainers = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            trainers += b"dawsep-train" in cmdline.read_bytes()
        except OSError:
            pass
    if not trainers:
        return f"1-min load average before the run: {load:.1f} on {os.cpu_count()} cores."
    return (f"Contended: {trainers} `dawsep-train` process(es) were training on the same {os.cpu_count()} cores "
            f"(1-min load average {load:.1f} before the run), so absolute figures are low and noisy; compare the "
            "engines by their ratios.")


def run(quick: bool = False) -> str:
    import ray

    from dawsep.batch import RenderJob
    from dawsep.presets import load_preset

    n_songs, song_s, repeats = (6, 20.0, 1) if quick else (16, 60.0, 2)
    n_small, n_big = (20, 80) if quick else (40, 240)
    load = os.getloadavg()[0]
    preset = dataclasses.replace(load_preset("piano"), separate=None)  # its chain alone: time engines, not a model
    job = RenderJob(preset)
    # throwaway clusters: no token file in ~/.ray
    with mock.patch.dict(os.environ, {"RAY_AUTH_MODE": "disabled"}), \
            tempfile.TemporaryDirectory(prefix="dawsep-bench-") as tmp:
        tmp = Path(tmp)
        songs = _song_folder(tmp / "songs", n_songs, song_s)
        runs = itertools.count()  # a fresh OUT per run

        def best(**kw) -> float:
            return min(_timed_batch(job, songs, tmp / f"out{next(runs)}", **kw) for _ in range(repeats))

        local1 = best(jobs=1)
        local2 = best(jobs=WORKERS)
        cold = _timed_batch(job, songs, tmp / "cold", engine="ray", jobs=WORKERS)  # starts and stops its own Ray
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=WORKERS, include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # workers import NoopJob from bench/
        ray_start = time.perf_counter() - t0
        try:
            warm = best(engine="ray", jobs=WORKERS)
            round_trip = _ray_round_trip_ms(ray)
            overhead = {}
            for name, kw in [("local, in-process (`--jobs 1`)", {"jobs": 1}),
                             ("local, process pool (`--jobs 2`)", {"jobs": WORKERS}),
                             ("Ray, 2 workers", {"engine": "ray", "jobs": WORKERS})]:
                walls = {}
                for n in (n_small, n_big):
                    src = tmp / f"noop-{n}"
                    if not src.exists():
                        _song_folder(src, n, None)
                    walls[n] = statistics.median(
                        _timed_batch(NoopJob(), src, tmp / f"noop-out{next(runs)}", **kw) for _ in range(3))
                # a line through the two points: slope = cost per song, intercept = fixed start-up
                per_song = (walls[n_big] - walls[n_small]) / (n_big - n_small)
                overhead[name] = (per_song * 1e3, walls[n_small] - n_small * per_song)
        finally:
            ray.shutdown()

    def spm(wall: float) -> str:
        return f"{n_songs / wall * 60:.0f}"

    audio_min = n_songs * song_s / 60
    lines = ["## Scale-out (`--engine ray`)", "",
             f"{n_songs} synthetic stereo 44.1 kHz songs of {song_s:.0f} s ({audio_min:.0f} min of audio), rendered "
             f"through the piano preset's {len(preset.chain)}-step chain (its `[separate]` model step left out, to time "
             "the engines rather than a model), "
             f"24-bit FLAC out, on this one machine with {WORKERS} workers. Wall time of `run_batch` "
             f"(best of {repeats}), i.e. discovery, ledger, workers, decode, chain, encode, manifest.", "",
             "| engine | songs/min | wall | vs local `--jobs 2` |", "|---|---|---|---|",
             f"| local, `--jobs 1` (in-process) | {spm(local1)} | {local1:.1f} s | {local2 / local1:.2f}x |",
             f"| local, `--jobs 2` (process pool) | {spm(local2)} | {local2:.1f} s | 1.00x |",
             f"| Ray, 2 workers, cluster already running | {spm(warm)} | {warm:.1f} s | {local2 / warm:.2f}x |",
             f"| Ray, 2 workers, local Ray started and stopped for the run | {spm(cold)} | {cold:.1f} s | "
             f"{local2 / cold:.2f}x |", "",
             f"Starting a 2-CPU local Ray (`ray.init`) took {ray_start:.1f} s: the last row pays it, and the shutdown, "
             "on every run. Every Ray run also starts its workers (one actor each, loading the job once): the fixed "
             "start-up below.", "",
             "### Per-song overhead", "",
             f"A job that only writes one empty file, on {n_small} and {n_big} songs (median of 3 walls each); a line "
             "through the two gives the cost per extra song (with the workers running in parallel) and the fixed "
             "start-up (workers started, job loaded, songs discovered, manifest written). The per-song cost covers "
             "the staging folder, the rename into OUT, the result's trip back to the driver and three ledger writes (pending, running, done).", "",
             "| engine | per song | fixed start-up |", "|---|---|---|"]
    lines += [f"| {name} | {ms:.1f} ms | {fixed:.2f} s |" for name, (ms, fixed) in overhead.items()]
    lines += ["", f"A bare Ray actor call round trip (no dawsep): {round_trip:.2f} ms.", "",
              "The driver keeps one song in flight per worker, so each song pays one round trip; that and the "
              "start-up are all Ray adds. On one machine both engines run the same workers on the same cores, so "
              "Ray cannot be faster there (a gap between the process pool and the running cluster is noise); it pays off when more "
              "nodes join, since throughput grows with the cluster's CPUs (docs/scale-out.md).", "",
              f"{_contention_note(load)} Command: `python -m bench.run --only scaleout` (`bench/bench_scaleout.py`)."]
    return "\n".join(lines)
