"""The batch engine shared by ``render``, ``separate`` and ``transcribe``.

One song is one unit of work. A *job* (e.g. :class:`RenderJob`) knows how to turn one input file
into output files; the engine finds the songs, isolates failures, runs jobs in worker processes,
keeps the SQLite ledger, writes ``manifest.json`` and reports.

Crash safety: a job writes everything into ``OUT/.dawsep/staging/<id>/`` (each file itself via a
temp file + rename), then renames the finished files into ``OUT/<song>/``; the driver marks the
song done in the ledger only after that. A killed run leaves at worst a staging folder (wiped on
the next run) and a song still marked ``running`` (redone on the next run). Only the driver
process writes the ledger.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from dawsep.chunking import DEFAULT_OVERLAP
from dawsep.errors import DawsepError, ModelError, OutputPathError

STATE_DIR = ".dawsep"


@dataclass(frozen=True)
class Song:
    """One input file. ``rel`` is its output folder relative to OUT (POSIX, no extension)."""

    path: str
    rel: str


@dataclass
class SongResult:
    song: Song
    ok: bool
    outputs: list[str] = field(default_factory=list)  # relative to OUT
    record: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Job(Protocol):
    """A unit of batch work; instances are plain picklable data (built again in each worker)."""

    #: e.g. ``"render:piano"``: songs are tracked per task, so different presets can share OUT.
    task: str

    def fingerprint(self) -> str:
        """Hash of every setting that changes the outputs (a changed one redoes the song)."""

    def setup(self, threads: int) -> None:
        """Load plugins/models once per worker process."""

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        """Write this song's outputs into ``staging`` (flat file names); return a manifest record
        with at least ``"outputs"``: the file names written."""


# ------------------------------------------------------------------------------------ songs


def discover(input_path: str | Path, out_dir: str | Path, extensions: frozenset[str]) -> tuple[list[Song], list[str]]:
    """Audio files under ``input_path`` (recursive, sorted), and the non-audio files skipped.

    A single file is taken as it is (its format is checked when it is read). Hidden entries and
    the output folder itself are skipped; symlinked folders are not followed.
    """
    root = Path(input_path).expanduser()
    out = Path(out_dir).expanduser().resolve()
    if not root.exists():
        raise DawsepError(f"{root}: no such file or folder")
    if root.is_file():
        return [Song(str(root.resolve()), _safe_name(root.stem))], []
    songs: list[tuple[Path, str]] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() != out)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            f = d / name
            rel = f.relative_to(root)
            if f.suffix.lower() in extensions:
                songs.append((f, rel.with_suffix("").as_posix()))
            else:
                skipped.append(rel.as_posix())
    # song.wav and song.flac side by side would share a folder: keep their extensions apart
    counts: dict[str, int] = {}
    for _, rel in songs:
        counts[rel] = counts.get(rel, 0) + 1
    result = [Song(str(f.resolve()), rel if counts[rel] == 1 else f"{rel}{f.suffix.replace('.', '_')}")
              for f, rel in songs]
    return result, skipped


def _safe_name(name: str) -> str:
    name = name.strip().replace("/", "_").replace("\\", "_")
    return name if name not in ("", ".", "..") else "song"


def inside(out_dir: Path, *parts: str) -> Path:
    """``out_dir / parts`` resolved, refusing anything that would leave ``out_dir``."""
    base = out_dir.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise OutputPathError(f"output path {path} would leave the output folder {base}")
    return path


# ----------------------------------------------------------------------------------- ledger


class Ledger:
    """SQLite record of each (task, song): state, fingerprint and manifest record."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("""CREATE TABLE IF NOT EXISTS songs (
            task TEXT NOT NULL, song TEXT NOT NULL, input TEXT NOT NULL, fingerprint TEXT NOT NULL,
            state TEXT NOT NULL, error TEXT, record TEXT, updated REAL NOT NULL,
            PRIMARY KEY (task, song))""")

    def get(self, task: str, song: str) -> tuple[str, str, dict] | None:
        row = self.db.execute("SELECT state, fingerprint, record FROM songs WHERE task=? AND song=?",
                              (task, song)).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2] or "{}"))

    def set(self, task: str, song: Song, fingerprint: str, state: str, error: str | None = None,
            record: dict | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO songs VALUES (?,?,?,?,?,?,?,?)",
                        (task, song.rel, song.path, fingerprint, state, error,
                         json.dumps(record or {}), time.time()))

    def rows(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT task, song, input, state, error, record FROM songs ORDER BY song, task")
        return [{"task": t, "song": s, "input": i, "state": st, "error": e, **json.loads(r or "{}")}
                for t, s, i, st, e, r in cur]

    def close(self) -> None:
        self.db.close()


def input_fingerprint(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------- report


@dataclass
class BatchReport:
    out_dir: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        total = len(self.done) + len(self.skipped) + len(self.failed)
        lines = [f"{total} song(s): {len(self.done)} done, {len(self.skipped)} already done (skipped), "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s -> {self.out_dir}"]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} non-audio file(s): {', '.join(self.ignored[:5])}"
                         + (" ..." if len(self.ignored) > 5 else ""))
        for song, err in self.failed:
            lines.append(f"FAILED {song}: {err}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------- engine

_WORKER_JOB: Job | None = None


def _worker_init(job: Job, threads: int, own_process: bool = True) -> None:
    global _WORKER_JOB
    if own_process:
        # Keep numeric libraries to their share of the cores; set before they start thread pools.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    job.setup(threads)
    _WORKER_JOB = job


def _run_one(song: Song, out_dir: str, staging_root: str) -> SongResult:
    """Run the worker's job on one song; never raises (the result carries the error)."""
    job = _WORKER_JOB
    assert job is not None, "worker not initialised"
    out = Path(out_dir)
    staging = Path(staging_root) / hashlib.sha1(f"{job.task}\0{song.rel}".encode()).hexdigest()[:16]
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        record = job.run(song, staging)
        names = list(record.pop("outputs"))
        target_dir = inside(out, song.rel)
        target_dir.mkdir(parents=True, exist_ok=True)
        outputs = []
        for name in names:
            dest = inside(out, song.rel, name)
            if dest.parent != target_dir:
                raise OutputPathError(f"output name {name!r} must be a plain file name")
            os.replace(staging / name, dest)  # atomic: readers see the old file or the new one
            outputs.append(dest.relative_to(out.resolve()).as_posix())
        record.setdefault("timings", {})["total_s"] = round(time.perf_counter() - t0, 3)
        dur = record.get("duration_s")
        if dur:
            record["timings"]["realtime_factor"] = round(dur / max(record["timings"]["total_s"], 1e-9), 2)
        return SongResult(song, True, outputs, record)
    except DawsepError as exc:
        return SongResult(song, False, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug or a library failure: report it, keep the batch going
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return SongResult(song, False, error=f"unexpected error: {tb}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    fh = open(state / "lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise DawsepError(f"another dawsep run is writing to {state.parent}; wait for it or use another -o") from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def run_batch(job: Job, input_path: str | Path, out_dir: str | Path, *, jobs: int | None = 1,
              force: bool = False, progress: bool = True, extensions: frozenset[str] | None = None,
              on_result: Callable[[SongResult], None] | None = None, engine: str = "local",
              address: str | None = None) -> BatchReport:
    """Run ``job`` on every song under ``input_path``; outputs under ``out_dir``.

    ``engine="local"``: ``jobs`` worker processes (None or 1: in this process).
    ``engine="ray"``: ``jobs`` Ray workers (None: one per CPU of the cluster) on the Ray this
    process joined, else ``address``, ``$RAY_ADDRESS`` or a local Ray started for the run
    (see :mod:`dawsep.distributed`). Songs already done with the same settings are skipped
    unless ``force``. Never raises for a bad song: see the returned report.
    """
    from dawsep.audio import READ_EXTENSIONS

    if engine not in ("local", "ray"):
        raise DawsepError(f"unknown engine {engine!r}; expected local or ray")
    if engine == "ray":
        from dawsep.distributed import import_ray

        import_ray()  # a missing Ray is reported before anything is touched
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out}: output path exists and is not a folder")
    songs, ignored = discover(input_path, out, extensions or READ_EXTENSIONS)
    if not songs:
        raise DawsepError(f"{input_path}: no audio files found (looked for {', '.join(sorted(extensions or READ_EXTENSIONS))})")
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    report = BatchReport(str(out), ignored=ignored)
    with _locked(state):
        staging_root = state / "staging"
        shutil.rmtree(staging_root, ignore_errors=True)  # leftovers of a killed run
        staging_root.mkdir()
        ledger = Ledger(state / "ledger.sqlite")
        try:
            fp_job = job.fingerprint()
            todo: list[tuple[Song, str]] = []
            for song in songs:
                fp = f"{fp_job}:{input_fingerprint(song.path)}"
                row = ledger.get(job.task, song.rel)
                if (not force and row and row[0] == "done" and row[1] == fp
                        and all((out / o).exists() for o in row[2].get("outputs", []))):
                    report.skipped.append(song.rel)
                else:
                    todo.append((song, fp))
            bar = _progress(len(todo), progress)

            def finish(res: SongResult, fp: str) -> None:
                if res.ok:
                    record = {**res.record, "outputs": res.outputs}
                    ledger.set(job.task, res.song, fp, "done", record=record)
                    report.done.append(res.song.rel)
                else:
                    ledger.set(job.task, res.song, fp, "failed", error=res.error)
                    report.failed.append((res.song.rel, res.error or "failed"))
                    if progress:
                        bar.write(f"FAILED {res.song.rel}: {res.error}", file=sys.stderr)
                bar.update(1)
                if on_result:
                    on_result(res)

            for song, fp in todo:
                ledger.set(job.task, song, fp, "pending")
            if engine == "ray" and todo:
                from dawsep.distributed import run_ray

                run_ray(job, todo, Path(input_path), out, staging_root, jobs, ledger, finish, address)
            elif (jobs or 1) <= 1:
                _worker_init(job, threads=os.cpu_count() or 1, own_process=False)
                for song, fp in todo:
                    ledger.set(job.task, song, fp, "running")
                    finish(_run_one(song, str(out), str(staging_root)), fp)
            else:
                _run_pool(job, todo, out, staging_root, jobs, ledger, finish)
            bar.close()
            report.seconds = time.perf_counter() - t0
            write_manifest(out, ledger, report)
        finally:
            ledger.close()
    return report


def _run_pool(job: Job, todo: list[tuple[Song, str]], out: Path, staging_root: Path, jobs: int,
              ledger: Ledger, finish: Callable[[SongResult, str], None]) -> None:
    """At most ``jobs`` songs in flight, so a crashed worker is pinned to the songs it held."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")  # plugins and ORT threads do not survive fork

    def new_pool(n: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                      initargs=(job, threads))

    queue = list(todo)
    retry_alone: list[tuple[Song, str]] = []
    pool = new_pool(jobs)
    try:
        running: dict[cf.Future, tuple[Song, str]] = {}
        while queue or running or retry_alone:
            width = 1 if retry_alone else jobs
            source = retry_alone if retry_alone else queue
            while source and len(running) < width:
                song, fp = source.pop(0)
                ledger.set(job.task, song, fp, "running")
                running[pool.submit(_run_one, song, str(out), str(staging_root))] = (song, fp)
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                song, fp = running.pop(fut)
                try:
                    finish(fut.result(), fp)
                except cf.process.BrokenProcessPool:
                    broken = True
                    running[fut] = (song, fp)
            if broken:
                # the pool is unusable; whichever song crashed it is among those in flight
                victims = list(running.values())
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                if len(victims) == 1:
                    song, fp = victims[0]
                    finish(SongResult(song, False, error="worker process died (crash or killed) "
                                      "while processing this song"), fp)
                else:
                    retry_alone.extend(victims)  # retry one at a time to find the culprit
                pool = new_pool(jobs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="song", disable=not enabled or total == 0, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def write_manifest(out: Path, ledger: Ledger, report: BatchReport) -> Path:
    """``OUT/manifest.json``: every song this folder has seen, from the ledger (atomic write)."""
    from dawsep import __version__

    doc = {
        "dawsep_version": __version__,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "last_run": {"done": len(report.done), "skipped": len(report.skipped),
                     "failed": len(report.failed), "seconds": round(report.seconds, 3)},
        "songs": ledger.rows(),
    }
    path = out / "manifest.json"
    tmp = out / f".manifest.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False))
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class OutputOptions:
    format: str = "flac"
    bit_depth: int | None = 24


class _OutputStream:
    """One output file fed at the processing rate: drops the first ``skip`` samples (a chain's
    latency), resamples back to the file's rate and writes exactly ``frames`` samples (or
    everything, with ``frames=None``)."""

    def __init__(self, path: Path, rate: int, file_rate: int, frames: int | None, output: OutputOptions,
                 skip: int = 0):
        from dawsep import audio

        self.back = audio.Resampler(rate, file_rate) if rate != file_rate else None
        self.writer = audio.AudioWriter(path, file_rate, channels=2, format=output.format,
                                        bit_depth=output.bit_depth)
        self.room, self.skip = frames, skip

    def __enter__(self):
        self.writer.__enter__()
        return self

    def __exit__(self, *exc):
        return self.writer.__exit__(*exc)

    def _write(self, y: np.ndarray) -> None:
        if self.room is not None:
            y = y[:, :self.room]
            self.room -= y.shape[1]
        if y.shape[1]:
            self.writer.write(y)

    def emit(self, y: np.ndarray) -> None:
        if self.skip:
            cut = min(self.skip, y.shape[1])
            y, self.skip = y[:, cut:], self.skip - cut
        self._write(self.back.process(y) if self.back is not None else y)

    def finish(self) -> None:
        """Flush the resampler and pad to the exact length (resampling there and back may round)."""
        if self.back is not None:
            self._write(self.back.flush())
        if self.room:
            self._write(np.zeros((2, self.room), np.float32))


def _song_record(song: Song, src, outputs: list[str], **extra) -> dict[str, Any]:
    return {"outputs": outputs, "input_sha256": file_sha256(song.path),
            "duration_s": round(src.frames / src.sample_rate, 3), "sample_rate": src.sample_rate, **extra}


def _preset_record(preset) -> dict[str, Any]:
    return {"name": preset.name, "sha256": preset.sha256, "source": preset.source}


@dataclass
class RenderJob:
    """Render each input file through a preset's chain: ``OUT/<song>/<stem>.<ext>``.

    Streams the file in blocks (bounded memory for hour-long files); the output is aligned with
    the input and the same length, or longer by the effect tail with ``keep_tail``. A preset
    with a ``[separate]`` section separates its stem first (a model step at the model's rate).
    """

    preset: Any  # dawsep.presets.Preset
    output: OutputOptions | None = None  # None: the preset's [output]
    downmix: bool = False
    keep_tail: bool = False
    block_frames: int = 65536
    task: str = ""

    def __post_init__(self):
        self.task = self.task or f"render:{self.preset.name}"
        if self.output is None:
            self.output = OutputOptions(self.preset.output.format, self.preset.output.bit_depth)
        self._chain = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_chain"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._chain = None

    def fingerprint(self) -> str:
        settings = {"preset": self.preset.sha256, "output": asdict(self.output),
                    "downmix": self.downmix, "keep_tail": self.keep_tail,
                    "models": _model_hashes(self.preset),
                    # the [separate] settings, which a caller (render --phase) may have changed
                    "separate": asdict(self.preset.separate) if self.preset.separate else None}
        return _fingerprint(settings)

    def setup(self, threads: int) -> None:
        from dawsep import runtime

        runtime.set_default_threads(threads)
        self._chain = self.preset.build_chain()

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio

        chain = self._chain or self.preset.build_chain()
        self._chain = chain
        chain.reset()
        name = f"{self.preset.stem}.{self.output.format}"
        src = audio.info(song.path)
        # A chain with a model step runs at the model's rate: stream-resample there and back.
        rates = chain.model_sample_rates
        if len(rates) > 1:
            raise DawsepError(f"preset {self.preset.name!r} mixes model steps at {sorted(rates)} Hz")
        rate = next(iter(rates), src.sample_rate)
        chain.check_sample_rate(rate)
        with audio.stream(song.path, block_frames=self.block_frames, sample_rate=rate,
                          downmix=self.downmix) as reader, \
                _OutputStream(staging / name, rate, src.sample_rate, None if self.keep_tail else src.frames,
                              self.output, skip=chain.latency_samples) as out:
            for block in reader:
                out.emit(chain(block, rate, reset=False))
            out.emit(chain.flush(rate, tail=self.keep_tail))
            out.finish()
        return _song_record(song, src, [name], preset=_preset_record(self.preset), chain=chain.descriptions,
                            models=[st.info.describe() for st in chain.model_steps if hasattr(st, "info")])


def _fingerprint(settings: dict) -> str:
    from dawsep import __version__

    settings = {"v": __version__, **settings}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _model_hashes(preset) -> list[str]:
    """Content hashes of the models a preset uses: a new model file redoes the songs."""
    from dawsep import runtime

    out = []
    if preset.separate is not None:
        path, _, sha = runtime.resolve(preset.separate.model, "separator")
        out.append(sha or runtime.file_sha256(path))
    return out


@dataclass
class SeparateJob:
    """Separate each song into stems: ``OUT/<song>/<stem>.<ext>`` (demucs-style).

    ``stems``: which stems to write (default: all the model's, or only the preset's stem when a
    preset is given). With ``preset``, its stem is rendered through the preset's chain (the
    others are written raw). ``two_stems``: write ``<stem>`` and ``no_<stem>`` (mixture minus
    the stem) instead. ``phase``/``phase_iterations``: the post-processing of
    :mod:`dawsep.phase` (None: the preset's, else ``mixture``; the preset's iterations go with
    the preset's phase only). One separation pass feeds every output; memory stays bounded on
    hour-long files (the chunking engine holds about two segments).
    """

    model: str = "default"
    stems: tuple[str, ...] | None = None
    preset: Any = None  # dawsep.presets.Preset | None
    two_stems: str | None = None
    output: OutputOptions | None = None
    overlap: float = DEFAULT_OVERLAP
    segment_seconds: float | None = None
    downmix: bool = False
    keep_tail: bool = False
    block_frames: int = 65536
    transcribe: bool = True  # with a preset that has [transcribe]: also <stem>.mid
    extras: tuple[str, ...] = ()  # more transcription outputs: "png", "json", "csv"
    phase: str | None = None
    phase_iterations: int | None = None
    task: str = ""

    def __post_init__(self):
        from dawsep.phase import check

        cfg = self.preset.separate if self.preset is not None else None
        phase, iterations = self.phase or "mixture", self.phase_iterations
        if cfg is not None:
            if self.model == "default":
                self.model = cfg.model
            cfg = cfg.with_phase(self.phase, self.phase_iterations)
            phase, iterations = cfg.phase, cfg.phase_iterations
        self.phase, self.phase_iterations = check(phase, iterations)
        if self.output is None:
            p = self.preset.output if self.preset is not None else None
            self.output = OutputOptions(p.format, p.bit_depth) if p else OutputOptions()
        self.task = self.task or ("separate" + (f":{self.preset.name}" if self.preset is not None else ""))
        self._sep = self._chain = self._trans = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_sep", "_chain", "_trans")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._sep = self._chain = self._trans = None

    @property
    def transcribes(self) -> bool:
        return bool(self.transcribe and self.preset is not None and self.preset.transcribe is not None
                    and not self.two_stems)

    def _resolve_transcriber(self):
        from dawsep import runtime

        try:
            return runtime.resolve(self.preset.transcribe.model, "transcriber")
        except ModelError as exc:
            raise ModelError(f"preset {self.preset.name!r} transcribes to MIDI: {exc} "
                             "(pass --no-midi to write the stem only)") from None

    def fingerprint(self) -> str:
        from dawsep import runtime

        path, _, sha = runtime.resolve(self.model, "separator")
        trans = None
        if self.transcribes:
            tpath, _, tsha = self._resolve_transcriber()
            trans = [tsha or runtime.file_sha256(tpath), list(self.extras)]
        settings = {"model": sha or runtime.file_sha256(path), "transcriber": trans,
                    "stems": self.stems, "two_stems": self.two_stems,
                    "preset": self.preset.sha256 if self.preset is not None else None,
                    "output": asdict(self.output), "overlap": self.overlap, "segment": self.segment_seconds,
                    "downmix": self.downmix, "keep_tail": self.keep_tail,
                    "phase": [self.phase, self.phase_iterations]}
        return _fingerprint(settings)

    def setup(self, threads: int) -> None:
        from dawsep.chain import Chain
        from dawsep.separate import Separator

        self._sep = Separator(self.model, overlap=self.overlap, segment_seconds=self.segment_seconds,
                              threads=threads, phase=self.phase, phase_iterations=self.phase_iterations)
        self.plan()  # unknown stems fail here, before any song
        if self.preset is not None and self.preset.chain:
            self._chain = Chain(self.preset.chain)
        self._trans = None
        if self.transcribes:
            from dawsep.transcribe import Transcriber

            self._resolve_transcriber()
            self._trans = Transcriber(self.preset.transcribe.model, threads=threads)

    def plan(self) -> list[tuple[str, int | None, bool]]:
        """``(output name, stem index or None for "no_<stem>", through the preset chain)``."""
        sep = self._sep
        if self.two_stems:
            i = sep.stem_index(self.two_stems)
            return [(self.two_stems, i, False), (f"no_{self.two_stems}", None, False)]
        chained = self.preset.stem if self.preset is not None else None
        wanted = list(self.stems) if self.stems else ([chained] if chained else list(sep.stems))
        if chained and chained not in wanted:
            wanted.insert(0, chained)
        return [(s, sep.stem_index(s), s == chained and self._has_chain()) for s in wanted]

    def _has_chain(self) -> bool:
        return self.preset is not None and bool(self.preset.chain)

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio

        if self._sep is None:
            self.setup(1)
        sep, chain = self._sep, self._chain
        plan = self.plan()
        sink = None
        if self._trans is not None:
            from dawsep.transcribe import TranscriptionSink, options_from_preset

            sink = TranscriptionSink(self._trans, sep.sample_rate, options_from_preset(self.preset.transcribe))
            t_index = sep.stem_index(self.preset.stem)
        rate = sep.sample_rate
        src = audio.info(song.path)
        if chain is not None:
            chain.reset()
            chain.check_sample_rate(rate)
        engine = sep.stream()
        names = [f"{name}.{self.output.format}" for name, _, _ in plan]
        pending_mix = np.zeros((2, 0), np.float32)  # input not yet matched by engine output

        def route(y: np.ndarray, mix: np.ndarray, outs: list[_OutputStream]) -> None:
            if sink is not None:
                sink.push(y[t_index])  # the raw separated stem, before the chain's effects
            for (name, idx, chained), out in zip(plan, outs):
                sig = y[idx] if idx is not None else mix - y[plan[0][1]]
                out.emit(chain(sig, rate, reset=False) if chained else sig)

        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(audio.stream(song.path, block_frames=self.block_frames, sample_rate=rate,
                                                      downmix=self.downmix))
            outs = [stack.enter_context(_OutputStream(
                staging / n, rate, src.sample_rate,
                None if (self.keep_tail and chained) else src.frames, self.output,
                skip=chain.latency_samples if chained else 0)) for n, (_, _, chained) in zip(names, plan)]
            for block in reader:
                pending_mix = np.concatenate([pending_mix, block], axis=1)
                y = engine.push(block)
                m = y.shape[2]
                route(y, pending_mix[:, :m], outs)
                pending_mix = pending_mix[:, m:]
            y = engine.flush()
            route(y, pending_mix[:, :y.shape[2]], outs)
            for (name, idx, chained), out in zip(plan, outs):
                if chained:
                    out.emit(chain.flush(rate, tail=self.keep_tail))
                out.finish()
        models = [sep.info.describe()]
        if sink is not None:
            result = sink.finish()
            result.duration_s = round(src.frames / src.sample_rate, 6)
            names += _save_transcription(result, staging, self.preset.stem, self.extras)
            models.append(self._trans.info.describe())
        return _song_record(song, src, names, models=models,
                            preset=_preset_record(self.preset) if self.preset is not None else None,
                            chain=chain.descriptions if chain is not None else [],
                            separation={"overlap": sep.overlap, "segment_samples": sep.segment,
                                        "phase": sep.phase, "phase_iterations": sep.phase_iterations})


def _save_transcription(result, staging: Path, stem: str, extras: tuple[str, ...]) -> list[str]:
    names = [f"{stem}.mid"] + [f"{stem}.{ext}" for ext in extras]
    for n in names:
        result.save(staging / n)
    return names


@dataclass
class TranscribeJob:
    """Transcribe each recording (or piano stem) to ``OUT/<song>/piano.mid`` (+ ``extras``:
    ``png`` piano roll, ``json``/``csv`` note lists). Streams the file at the model's rate."""

    model: str = "default"
    options: Any = None  # dawsep.transcribe.DecodeOptions; None: defaults
    extras: tuple[str, ...] = ()
    downmix: bool = False
    block_frames: int = 65536
    task: str = "transcribe"

    def __post_init__(self):
        if self.options is None:
            from dawsep.transcribe import DecodeOptions

            self.options = DecodeOptions()
        self._trans = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_trans"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._trans = None

    def fingerprint(self) -> str:
        from dawsep import runtime

        path, _, sha = runtime.resolve(self.model, "transcriber")
        return _fingerprint({"model": sha or runtime.file_sha256(path), "options": asdict(self.options),
                             "extras": list(self.extras), "downmix": self.downmix})

    def setup(self, threads: int) -> None:
        from dawsep.transcribe import Transcriber

        self._trans = Transcriber(self.model, threads=threads)

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio
        from dawsep.transcribe import TranscriptionSink

        if self._trans is None:
            self.setup(1)
        t = self._trans
        src = audio.info(song.path)
        sink = TranscriptionSink(t, t.sample_rate, self.options)
        with audio.stream(song.path, block_frames=self.block_frames, sample_rate=t.sample_rate,
                          downmix=self.downmix) as reader:
            for block in reader:
                sink.push(block)
        result = sink.finish()
        result.duration_s = round(src.frames / src.sample_rate, 6)
        names = _save_transcription(result, staging, "piano", self.extras)
        return _song_record(song, src, names, models=[t.info.describe()], notes=len(result.notes),
                            pedal_events=len(result.pedal))
