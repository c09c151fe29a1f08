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
import errno
import fcntl
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import stat
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from dawsep import atomic
from dawsep import progress as song_progress
from dawsep.progress import BatchProgress
from dawsep.chunking import DEFAULT_OVERLAP
from dawsep.errors import (DawsepError, DiskFullError, ModelError, NoInputError, OutputBusyError, OutputPathError,
                           PresetError)
from dawsep.metrics import STEMS
from dawsep.presets import OutputConfig
from dawsep.runtime import file_sha256

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
    fatal: bool = False  # the run cannot go on (a full disk): the driver stops


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

#: Endings of the files dawsep writes (stems, MIDI, plots, note lists, the manifest, the ledger,
#: temporary files): a song's folder never ends like one, so no output can collide with a folder.
OUTPUT_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".mid", ".midi",
                             ".png", ".json", ".csv", ".sqlite", ".part", ".tmp"})


@dataclass
class Inputs:
    """What :func:`find_inputs` found under an input path."""

    files: list[tuple[str, str]] = field(default_factory=list)  # (resolved path, path relative to IN)
    ignored: list[str] = field(default_factory=list)  # non-audio files
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (entry relative to IN, why it was not read)


def find_inputs(input_path: str | Path, out_dir: str | Path, extensions: frozenset[str]) -> Inputs:
    """Audio files under ``input_path`` (recursive, sorted), the non-audio files ignored, and
    the entries that look like audio but are not read, each with the reason: broken links and
    link loops, links to folders (not followed), folders named like audio files, hidden files,
    special files, unreadable folders. The output folder is never searched. A single file is
    taken as it is (its format is checked when it is read). Never raises for one bad entry.
    """
    root = Path(input_path).expanduser()
    out = Path(out_dir).expanduser().resolve()
    if not root.exists():
        raise DawsepError(f"{root}: no such file or folder")
    found = Inputs()
    if not root.is_dir():
        why = _not_a_song(root)
        if why:
            found.excluded.append((root.name, why))
        else:
            found.files.append((str(root.resolve()), root.name))
        return found

    def rel(p: str | Path) -> str:
        return Path(p).relative_to(root).as_posix()

    def unreadable(exc: OSError) -> None:
        found.excluded.append((rel(exc.filename), f"folder cannot be read ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        d = Path(dirpath)
        keep = []
        for n in sorted(dirnames):
            sub = d / n
            if n.startswith("."):
                continue  # .git, .dawsep, ...
            if os.path.islink(sub):
                found.excluded.append((rel(sub), "a symbolic link to a folder (not followed; "
                                                 "pass it as an input of its own to process it)"))
            elif _resolves_to(sub, out):
                continue  # the output folder inside the input: its stems are no songs
            elif Path(n).suffix.lower() in extensions:
                found.excluded.append((rel(sub), "a folder named like an audio file (not searched; "
                                                 "rename it or pass it as an input of its own)"))
            else:
                keep.append(n)
        dirnames[:] = keep
        for name in sorted(filenames):
            f = d / name
            audio_like = name.lower().endswith(tuple(extensions))
            if name.startswith("."):
                if audio_like:
                    found.excluded.append((rel(f), "a hidden file (its name starts with a dot)"))
                continue
            if not audio_like:
                found.ignored.append(rel(f))
                continue
            why = _not_a_song(f)
            if why:
                found.excluded.append((rel(f), why))
            else:
                found.files.append((str(f.resolve()), rel(f)))
    return found


def _resolves_to(path: Path, target: Path) -> bool:
    try:
        return path.resolve() == target
    except (OSError, RuntimeError):
        return False


def _not_a_song(f: Path) -> str | None:
    """Why the audio-named entry ``f`` cannot be read as a song, or None."""
    try:
        st = os.stat(f)  # follows links
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if exc.errno == errno.ENOENT and os.path.islink(f):
            return "a broken symbolic link (its target does not exist)"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a folder named like an audio file (not searched)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device)"
    try:
        Path(f).resolve(strict=True)
    except (OSError, RuntimeError):
        return "a symbolic link that cannot be resolved"
    return None


def folder_part(name: str) -> str:
    """One path component as a song folder name: never hidden, never ending like a file dawsep
    writes (``manifest.json.wav`` -> ``manifest_json``, ``.dawsep.wav`` -> ``_dawsep``)."""
    name = name.strip().replace("\\", "_").replace("/", "_").replace("\0", "_")
    if name in ("", ".", ".."):
        return "song"
    if name.startswith("."):
        name = "_" + name[1:]
    base, dot, ext = name.rpartition(".")
    if dot and base and f".{ext.lower()}" in OUTPUT_SUFFIXES:
        name = f"{base}_{ext}"
    return name


def _folder_for(rel_path: str) -> tuple[str, str]:
    """``album/x.flac.wav`` -> (``album/x_flac``, ``wav``): the song folder, each component made
    safe, and the extension."""
    p = PurePosixPath(rel_path)
    parts = [folder_part(c) for c in p.parent.parts] + [folder_part(p.stem if p.suffix else p.name)]
    return "/".join(parts), p.suffix[1:]


def _valid_folder(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and all(p and folder_part(p) == p for p in parts)


def assign_folders(files: list[tuple[str, str]], previous: dict[str, str] | None = None) -> list[Song]:
    """Give every input file its own song folder (relative to OUT), in the order of ``files``.

    A folder is the input's path relative to IN without its extension (each component made
    safe by :func:`folder_part`). Inputs that would share one (``song.wav``, ``song.flac``)
    get their extension appended (``song_wav``, ``song_flac``), then a number while the name is
    still taken (``song_wav_2`` when a ``song_wav.mp3`` holds ``song_wav``). ``previous``
    (input path -> folder, from the ledger) keeps the folder a song had in earlier runs, so
    adding files never moves a song that is already done.
    """
    previous = previous or {}
    taken: dict[str, str] = {}
    chosen: dict[str, str] = {}
    claims: dict[str, list[str]] = {}
    for path, _ in files:
        old = previous.get(path)
        if old is not None and _valid_folder(old):
            claims.setdefault(old, []).append(path)
    for folder, paths in claims.items():
        if len(paths) == 1:  # two inputs once shared a folder (an old dawsep): neither keeps it
            taken[folder] = chosen[paths[0]] = folder
    rest = [(path, *_folder_for(r)) for path, r in files if path not in chosen]
    counts: dict[str, int] = {}
    for _, folder, _ in rest:
        counts[folder] = counts.get(folder, 0) + 1
    for path, folder, _ in rest:
        if counts[folder] == 1 and folder not in taken:
            taken[folder] = chosen[path] = folder
    for path, folder, ext in rest:
        if path in chosen:
            continue
        base = f"{folder}_{folder_part(ext)}" if ext else folder
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken[name] = chosen[path] = name
    return [Song(path, chosen[path]) for path, _ in files]


def discover(input_path: str | Path, out_dir: str | Path, extensions: frozenset[str]) -> tuple[list[Song], list[str]]:
    """Songs under ``input_path`` with their folders (:func:`find_inputs` + :func:`assign_folders`
    without a ledger), and the non-audio files ignored."""
    found = find_inputs(input_path, out_dir, extensions)
    return assign_folders(found.files), found.ignored


def inside(out_dir: Path, *parts: str) -> Path:
    """``out_dir / parts`` resolved, refusing anything that would leave ``out_dir``."""
    base = out_dir.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise OutputPathError(f"output path {path} would leave the output folder {base}")
    return path


# ----------------------------------------------------------------------------------- ledger


class Ledger:
    """SQLite record of each (task, song): state, fingerprint and manifest record.

    Its files are never links (checked before opening), and a full disk or a broken database is
    a typed error (:class:`DiskFullError`, :class:`OutputPathError`), never a traceback."""

    def __init__(self, path: Path):
        self.path = path
        for suffix in ("", "-wal", "-shm", "-journal"):
            p = path.with_name(path.name + suffix)
            if p.is_symlink():
                raise OutputPathError(f"{p} is a symbolic link; dawsep never follows links inside its own "
                                      f"state folder (remove the link, or the folder {path.parent})")
        try:
            self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        self._exec("PRAGMA journal_mode=WAL")
        self._exec("""CREATE TABLE IF NOT EXISTS songs (
            task TEXT NOT NULL, song TEXT NOT NULL, input TEXT NOT NULL, fingerprint TEXT NOT NULL,
            state TEXT NOT NULL, error TEXT, record TEXT, updated REAL NOT NULL,
            PRIMARY KEY (task, song))""")
        # every file a (task, song) has put in OUT, kept across failed and interrupted reruns, so
        # a redone song can remove what its new settings no longer write
        self._exec("""CREATE TABLE IF NOT EXISTS written (
            task TEXT NOT NULL, song TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (task, song, path))""")

    def _error(self, exc: sqlite3.Error) -> DawsepError:
        from dawsep.audio import is_disk_full

        if getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13) \
                or is_disk_full(exc, self.path.parent):
            return DiskFullError(f"no space left on the device of {self.path.parent.parent} "
                                 f"(the run ledger {self.path.name} could not be written)")
        return OutputPathError(f"the run ledger {self.path} cannot be used: {exc} "
                               f"(remove {self.path.parent} to start the folder afresh)")

    def _exec(self, sql: str, args: tuple = ()):
        try:
            return self.db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def get(self, task: str, song: str) -> tuple[str, str, dict] | None:
        row = self._exec("SELECT state, fingerprint, record FROM songs WHERE task=? AND song=?",
                         (task, song)).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2] or "{}"))

    def set(self, task: str, song: Song, fingerprint: str, state: str, error: str | None = None,
            record: dict | None = None) -> None:
        self._exec("INSERT OR REPLACE INTO songs VALUES (?,?,?,?,?,?,?,?)",
                   (task, song.rel, song.path, fingerprint, state, error, json.dumps(record or {}), time.time()))

    def written(self, task: str, song: str) -> list[str]:
        """The files (relative to OUT) this task last put in place for ``song`` (for a ledger from
        before this table: the outputs of its last successful run)."""
        rows = [r[0] for r in self._exec("SELECT path FROM written WHERE task=? AND song=? ORDER BY path",
                                         (task, song))]
        if rows:
            return rows
        row = self.get(task, song)
        return list(row[2].get("outputs", [])) if row and row[0] == "done" else []

    def set_written(self, task: str, song: str, paths: list[str]) -> None:
        self._exec("DELETE FROM written WHERE task=? AND song=?", (task, song))
        for p in paths:
            self._exec("INSERT OR REPLACE INTO written VALUES (?,?,?)", (task, song, p))

    def claimed(self, paths: list[str], task: str, song: str) -> set[str]:
        """Which of ``paths`` another (task, song) lists as its own."""
        out = set()
        for p in paths:
            if self._exec("SELECT 1 FROM written WHERE path=? AND NOT (task=? AND song=?) LIMIT 1",
                          (p, task, song)).fetchone():
                out.add(p)
        return out

    def folders(self) -> dict[str, str]:
        """Input path -> the song folder it had most recently (any task)."""
        return {i: s for i, s in self._exec("SELECT input, song FROM songs ORDER BY updated")}

    def rows(self) -> list[dict[str, Any]]:
        cur = self._exec("SELECT task, song, input, state, error, record FROM songs ORDER BY song, task")
        return [{"task": t, "song": s, "input": i, "state": st, "error": e, **json.loads(r or "{}")}
                for t, s, i, st, e, r in cur]

    def close(self) -> None:
        self.db.close()


def input_fingerprint(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"




# ----------------------------------------------------------------------------------- report


@dataclass
class BatchReport:
    out_dir: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (input entry, why it was not read)
    seconds: float = 0.0
    kept_stale: list[tuple[str, str]] = field(default_factory=list)  # (file, why it could not be removed)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def total(self) -> int:
        """Songs this run looked at: done, already done and failed."""
        return len(self.done) + len(self.skipped) + len(self.failed)

    def summary(self) -> str:
        lines = [f"{self.total} song(s): {len(self.done)} done, {len(self.skipped)} already done (skipped), "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s -> {self.out_dir}"]
        if self.skipped:
            lines.append("songs already done with the same settings were skipped; --force redoes them")
        for path, why in self.kept_stale:
            lines.append(f"STALE {path}: written by an earlier run with other settings, and not removed ({why})")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} non-audio file(s): {', '.join(self.ignored[:5])}"
                         + (" ..." if len(self.ignored) > 5 else ""))
        for entry, why in self.excluded:
            lines.append(f"NOT READ {entry}: {why}")
        for song, err in self.failed:
            lines.append(f"FAILED {song}: {err}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------- engine

_WORKER_JOB: Job | None = None
_DRIVER_PID: int | None = None  # in a worker process: the driver's pid (None: in the driver itself)
_IN_DRIVER = False  # songs run in the driver's own process (progress goes straight to its bar)


class _DriverGone(Exception):
    pass


def _worker_init(job: Job, threads: int, own_process: bool = True, driver_pid: int | None = None) -> None:
    """Load ``job`` in this process. ``driver_pid``: this is a worker process of that driver: it
    ignores Ctrl-C (the driver stops it), dies with the driver (Linux: ``PR_SET_PDEATHSIG``), and
    never moves a song's outputs into OUT once the driver is gone."""
    global _WORKER_JOB, _DRIVER_PID, _IN_DRIVER
    _DRIVER_PID = driver_pid
    _IN_DRIVER = not own_process
    if driver_pid is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with(driver_pid)
    if own_process:
        # Keep numeric libraries to their share of the cores; set before they start thread pools.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    job.setup(threads)
    _WORKER_JOB = job


def _die_with(driver_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent (the driver) dies; exit now if it
    already has (the request only covers deaths after it is made)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the pid checks before each write remain
            pass
    if os.getppid() != driver_pid:
        os._exit(1)


def _check_driver() -> None:
    if _DRIVER_PID is not None and os.getppid() != _DRIVER_PID:
        raise _DriverGone()


def _run_one(song: Song, out_dir: str, staging_root: str) -> SongResult:
    """Run the worker's job on one song; never raises (the result carries the error)."""
    job = _WORKER_JOB
    assert job is not None, "worker not initialised"
    out = Path(out_dir)
    staging = Path(staging_root) / _staging_id(job.task, song.rel)
    if not _IN_DRIVER:  # the driver reads how far the song has got from a file beside its staging
        song_progress.set_sink(song_progress.file_sink(progress_file(staging_root, job.task, song.rel)))
    t0 = time.perf_counter()
    try:
        _check_driver()
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        record = job.run(song, staging)
        names = list(record.pop("outputs"))
        _check_driver()  # a driver that died will not record this song: write nothing into OUT
        target_dir = inside(out, song.rel)
        target_dir.mkdir(parents=True, exist_ok=True)
        outputs = []
        for name in names:
            dest = inside(out, song.rel, name)
            if dest.parent != target_dir:
                raise OutputPathError(f"output name {name!r} must be a plain file name")
            atomic.move(staging / name, dest, sync=False)  # readers see the old file or the new one
            outputs.append(dest.relative_to(out.resolve()).as_posix())
        _sync_folders(target_dir, out.resolve())  # the renames (and new folders) are on disk
        record.setdefault("timings", {})["total_s"] = round(time.perf_counter() - t0, 3)
        dur = record.get("duration_s")
        if dur:
            record["timings"]["realtime_factor"] = round(dur / max(record["timings"]["total_s"], 1e-9), 2)
        return SongResult(song, True, outputs, record)
    except _DriverGone:
        return SongResult(song, False, error="the driver process is gone; nothing was written")
    except DiskFullError as exc:
        return SongResult(song, False, error=str(exc), fatal=True)
    except DawsepError as exc:
        return SongResult(song, False, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug or a library failure: report it, keep the batch going
        from dawsep.audio import is_disk_full

        if is_disk_full(exc, out):
            return SongResult(song, False, error=f"{exc}", fatal=True)
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return SongResult(song, False, error=f"unexpected error: {tb}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not _IN_DRIVER:
            song_progress.set_sink(None)


def _staging_id(task: str, rel: str) -> str:
    return hashlib.sha1(f"{task}\0{rel}".encode()).hexdigest()[:16]


def progress_file(staging_root: str | Path, task: str, rel: str) -> Path:
    """Where a worker keeps how far it has got into a song (read by the driver)."""
    return Path(staging_root) / f"{_staging_id(task, rel)}.progress"


def _sync_folders(folder: Path, root: Path) -> None:
    """fsync ``folder`` and each folder above it up to ``root`` (new song folders are entries too)."""
    while True:
        atomic.fsync_dir(folder)
        if folder == root or root not in folder.parents:
            return
        folder = folder.parent


def _state_dir(out: Path) -> Path:
    """``OUT/.dawsep``, created if needed; refused when it (or OUT's entry for it) is a link."""
    state = out / STATE_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        if state.is_symlink():
            raise OutputPathError(f"{state} is a symbolic link; dawsep keeps its state only in a real folder "
                                  "inside OUT (remove the link)")
        state.mkdir(exist_ok=True)
    except OSError as exc:
        raise _path_error(exc, out, f"cannot create {state}") from None
    if state.is_symlink() or not state.is_dir():
        raise OutputPathError(f"{state} is not a folder (or is a symbolic link); remove it")
    return state


def _path_error(exc: OSError, out: Path, what: str) -> DawsepError:
    from dawsep.audio import is_disk_full

    if is_disk_full(exc, out):
        return DiskFullError(f"no space left on the device of {out} ({what})")
    return OutputPathError(f"{what}: {exc.strerror or exc}")


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    path = state / "lock"
    try:  # never through a link, never truncating: the lock file holds nothing
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputPathError(f"{path} is a symbolic link; dawsep never follows links inside its own "
                                  "state folder (remove the link)") from None
        raise _path_error(exc, state.parent, f"cannot create the lock file {path}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputPathError(f"{path} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(f"another dawsep run is writing to {state.parent}; wait for it or use another -o") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fresh_staging(state: Path) -> Path:
    """An empty ``OUT/.dawsep/staging``: leftovers of a killed run are wiped; a link or file in
    its place is removed (the link itself, never what it points to)."""
    staging = state / "staging"
    try:
        if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
            staging.unlink()
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise _path_error(exc, state.parent, f"cannot create {staging}") from None
    return staging


def run_batch(job: Job, input_path: str | Path, out_dir: str | Path, *, jobs: int | None = 1,
              force: bool = False, progress: bool = True, extensions: frozenset[str] | None = None,
              on_result: Callable[[SongResult], None] | None = None, engine: str = "local",
              address: str | None = None) -> BatchReport:
    """Run ``job`` on every song under ``input_path``; outputs under ``out_dir``.

    ``engine="local"``: ``jobs`` worker processes (None or 1: in this process).
    ``engine="ray"``: ``jobs`` Ray workers (None: one per CPU of the cluster) on the Ray this
    process joined, else ``address``, ``$RAY_ADDRESS`` or a local Ray started for the run
    (see :mod:`dawsep.distributed`). Songs already done with the same settings are skipped
    unless ``force``. Never raises for a bad song: see the returned report. Raises for what
    stops the whole run: :class:`NoInputError`, :class:`OutputBusyError`,
    :class:`OutputPathError` (OUT unusable or equal to the input folder), :class:`DiskFullError`;
    and on KeyboardInterrupt (or :class:`~dawsep.errors.Interrupted`) it records the songs
    finished so far in ``manifest.json`` before re-raising.
    """
    from dawsep.audio import READ_EXTENSIONS

    if engine not in ("local", "ray"):
        raise DawsepError(f"unknown engine {engine!r}; expected local or ray")
    if engine == "ray":
        from dawsep.distributed import import_ray

        import_ray()  # a missing Ray is reported before anything is touched
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    extensions = extensions or READ_EXTENSIONS
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out}: output path exists and is not a folder")
    root = Path(input_path).expanduser()
    if root.is_dir() and _resolves_to(out, root.resolve()):
        raise OutputPathError(f"{out} is the input folder; write the outputs elsewhere (-o), or a rerun would "
                              "read them back as songs")
    found = find_inputs(root, out, extensions)
    if not found.files:
        if found.excluded:
            why = f"{len(found.excluded)} entr{'y' if len(found.excluded) == 1 else 'ies'} not read: " + \
                  "; ".join(f"{e}: {w}" for e, w in found.excluded[:3])
        elif found.ignored:
            why = f"{len(found.ignored)} other file(s) ignored; looked for {', '.join(sorted(extensions))}"
        else:
            why = "the folder is empty" if root.is_dir() else f"looked for {', '.join(sorted(extensions))}"
        raise NoInputError(f"{input_path}: no audio files found ({why})")
    state = _state_dir(out)
    report = BatchReport(str(out), ignored=found.ignored, excluded=found.excluded)
    with _locked(state):
        staging_root = _fresh_staging(state)
        ledger = Ledger(state / "ledger.sqlite")
        try:
            songs = assign_folders(found.files, ledger.folders())
            _run_songs(job, songs, out, staging_root, ledger, report, jobs=jobs, force=force, progress=progress,
                       on_result=on_result, engine=engine, address=address, input_root=root)
            report.seconds = time.perf_counter() - t0
            write_manifest(out, ledger, report)
        except BaseException as exc:  # interrupted, disk full, a dead worker pool: record what finished
            report.seconds = time.perf_counter() - t0
            with contextlib.suppress(Exception):
                write_manifest(out, ledger, report)
            if isinstance(exc, DiskFullError) and "rerun" not in str(exc):
                raise DiskFullError(f"{exc}. {len(report.done)} song(s) finished in this run are kept; free some "
                                    "space and rerun the same command to do the rest") from None
            raise
        finally:
            ledger.close()
    return report


def _run_songs(job: Job, songs: list[Song], out: Path, staging_root: Path, ledger: Ledger, report: BatchReport, *,
               jobs: int | None, force: bool, progress: bool, on_result, engine: str, address: str | None,
               input_root: Path) -> None:
    fp_job = job.fingerprint()
    todo: list[tuple[Song, str]] = []
    for song in songs:
        try:
            fp = f"{fp_job}:{input_fingerprint(song.path)}"
        except OSError as exc:  # gone or unreadable since it was found
            report.failed.append((song.rel, f"cannot be read: {exc.strerror or exc}"))
            continue
        row = ledger.get(job.task, song.rel)
        if (not force and row and row[0] == "done" and row[1] == fp
                and all((out / o).exists() for o in row[2].get("outputs", []))):
            report.skipped.append(song.rel)
        else:
            todo.append((song, fp))
    bar = BatchProgress(len(todo), progress)

    def finish(res: SongResult, fp: str) -> None:
        if res.fatal:
            raise DiskFullError(f"no space left on the device of {out} (while writing {res.song.rel})")
        if res.ok:
            record = {**res.record, "outputs": res.outputs}
            removed = _remove_stale(out, ledger, job.task, res.song.rel, res.outputs, report)
            if removed:
                record["removed_stale"] = removed
            ledger.set_written(job.task, res.song.rel, res.outputs)
            ledger.set(job.task, res.song, fp, "done", record=record)
            report.done.append(res.song.rel)
        else:
            ledger.set(job.task, res.song, fp, "failed", error=res.error)
            report.failed.append((res.song.rel, res.error or "failed"))  # named once: in the summary
        bar.finish(res.song.rel, res.ok)
        if on_result:
            on_result(res)

    try:
        for song, fp in todo:
            ledger.set(job.task, song, fp, "pending")
        if engine == "ray" and todo:
            from dawsep.distributed import run_ray

            run_ray(job, todo, input_root, out, staging_root, jobs, ledger, finish, address, progress=bar)
        elif (jobs or 1) <= 1:
            _worker_init(job, threads=os.cpu_count() or 1, own_process=False)
            for song, fp in todo:
                ledger.set(job.task, song, fp, "running")
                bar.start(song.rel)
                song_progress.set_sink(lambda f, rel=song.rel: bar.fraction(rel, f))
                try:
                    res = _run_one(song, str(out), str(staging_root))
                finally:
                    song_progress.set_sink(None)
                finish(res, fp)
        else:
            _run_pool(job, todo, out, staging_root, jobs, ledger, finish, bar)
    finally:
        bar.close()


def _remove_stale(out: Path, ledger: Ledger, task: str, song: str, outputs: list[str],
                  report: BatchReport) -> list[str]:
    """Remove the files an earlier run of ``task`` put in place for ``song`` that this run did not
    write (a changed format, bit depth or stem list): files another command lists as its own, and
    anything that is not a plain file inside OUT, are left alone. Returns what was removed; what
    could not be is listed in the report."""
    stale = [p for p in ledger.written(task, song) if p not in outputs]
    if not stale:
        return []
    claimed = ledger.claimed(stale, task, song)
    removed = []
    for rel in stale:
        if rel in claimed:
            continue
        try:
            path = inside(out, rel)
        except OutputPathError as exc:
            report.kept_stale.append((rel, str(exc)))
            continue
        try:
            if path.is_symlink() or not path.is_file():
                if path.exists() or path.is_symlink():
                    report.kept_stale.append((rel, "not a plain file any more"))
                continue
            path.unlink()
            removed.append(rel)
        except OSError as exc:
            report.kept_stale.append((rel, exc.strerror or str(exc)))
    if removed:
        with contextlib.suppress(OSError):
            atomic.fsync_dir(inside(out, removed[0]).parent)
    return removed


def _run_pool(job: Job, todo: list[tuple[Song, str]], out: Path, staging_root: Path, jobs: int,
              ledger: Ledger, finish: Callable[[SongResult, str], None], bar: BatchProgress | None = None) -> None:
    """At most ``jobs`` songs in flight, so a crashed worker is pinned to the songs it held.

    The workers die with this process (:func:`_die_with`); when the run stops early (Ctrl-C,
    SIGTERM, a full disk) they are killed, and the songs they held are redone by the next run."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")  # plugins and ORT threads do not survive fork

    def new_pool(n: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                      initargs=(job, threads, True, os.getpid()))

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
                if bar is not None:
                    bar.start(song.rel, progress_file(staging_root, job.task, song.rel))
                running[pool.submit(_run_one, song, str(out), str(staging_root))] = (song, fp)
            done, _ = cf.wait(running, timeout=song_progress.REPORT_EVERY_S, return_when=cf.FIRST_COMPLETED)
            if bar is not None:
                bar.poll_files()
            if not done:
                continue
            broken = False
            for fut in done:
                song, fp = running.pop(fut)
                try:
                    res = fut.result()
                except cf.process.BrokenProcessPool:
                    broken = True
                    running[fut] = (song, fp)
                    continue
                finish(res, fp)
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
    except BaseException:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(Exception):
                proc.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def write_manifest(out: Path, ledger: Ledger, report: BatchReport) -> Path:
    """``OUT/manifest.json``: every song this folder has seen, from the ledger (atomic write; on
    a full disk the previous manifest stays as it was)."""
    from dawsep import __version__

    doc = {
        "dawsep_version": __version__,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "last_run": {"done": len(report.done), "skipped": len(report.skipped),
                     "failed": len(report.failed), "seconds": round(report.seconds, 3),
                     "not_read": [{"input": e, "why": w} for e, w in report.excluded]},
        "songs": ledger.rows(),
    }
    path = out / "manifest.json"
    try:
        _write_all(path, json.dumps(doc, indent=2, sort_keys=False).encode())
    except OSError as exc:
        raise _path_error(exc, out, f"cannot write {path}") from None
    return path


_write_all = atomic.write_bytes  # the manifest's writer (one atomic helper: dawsep.atomic)


# ------------------------------------------------------------------------------------- jobs


#: how outputs are written: the preset's ``[output]`` type itself (one definition)
OutputOptions = OutputConfig


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

    def emit(self, y: np.ndarray, extra: np.ndarray | None = None) -> None:
        """Write ``y`` (processing rate); ``extra``: added after resampling, at the file's rate
        (as many samples as the resampler returns for ``y``)."""
        if self.skip:
            cut = min(self.skip, y.shape[1])
            y, self.skip = y[:, cut:], self.skip - cut
        z = self.back.process(y) if self.back is not None else y
        self._write(z + extra if extra is not None else z)

    def finish(self, extra: np.ndarray | None = None) -> None:
        """Flush the resampler and pad to the exact length (resampling there and back may round)."""
        if self.back is not None:
            z = self.back.flush()
            self._write(z + extra if extra is not None else z)
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
    with a ``[separate]`` section separates its stem first (a model step at the model's rate),
    unless the input already is that stem: ``separate`` None (the default) skips the separation
    for a file named like the preset's stem (``bass.flac`` for the bass preset, as ``dawsep
    separate`` writes it), False never separates, True always does. The output is named after the
    stem it holds: the separated stem, else the input's own when it is named like a stem
    (``guitar.wav`` through a chain alone -> ``guitar.flac``), else the preset's stem.
    """

    preset: Any  # dawsep.presets.Preset
    output: OutputOptions | None = None  # None: the preset's [output]
    downmix: bool = False
    keep_tail: bool = False
    block_frames: int = 65536
    task: str = ""
    separate: bool | None = None

    def __post_init__(self):
        self.task = self.task or f"render:{self.preset.name}"
        if self.output is None:
            self.output = OutputOptions(self.preset.output.format, self.preset.output.bit_depth)
        self._chains: dict[bool, Any] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_chains"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._chains = {}

    def fingerprint(self) -> str:
        settings = {"preset": self.preset.sha256, "chain": self.preset.describe(), "output": asdict(self.output),
                    "downmix": self.downmix, "keep_tail": self.keep_tail,
                    "models": _model_hashes(self.preset),
                    # the [separate] settings, which a caller (render --phase) may have changed
                    "separate": asdict(self.preset.separate) if self.preset.separate else None,
                    "separate_stems": self.separate}
        return _fingerprint(settings)

    def setup(self, threads: int) -> None:
        from dawsep import runtime

        runtime.set_default_threads(threads)
        self._chains = {}
        self._chain_for(self.preset.separate is not None and self.separate is not False)

    def separates(self, song_path: str) -> bool:
        """Whether this input goes through the preset's [separate] step."""
        if self.preset.separate is None or self.separate is False:
            return False
        return self.separate is True or _stem_name(song_path) != self.preset.stem

    def output_stem(self, song_path: str) -> str:
        """What the output is named after: the stem separated out of the input, else the input's
        own stem name when it has one (a chain on ``guitar.wav`` gives ``guitar.flac``), else the
        preset's stem."""
        name = _stem_name(song_path)
        if self.separates(song_path) or name not in set(STEMS) | {self.preset.stem}:
            return self.preset.stem
        return name

    def _chain_for(self, separated: bool):
        if separated not in self._chains:
            p = self.preset if separated else replace(self.preset, separate=None)
            self._chains[separated] = p.build_chain()
        return self._chains[separated]

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep.errors import PluginError

        try:
            return self._render(song, staging)
        except PluginError as exc:  # e.g. a chain driven to inf: the preset's doing, named as such
            raise PresetError(self.preset.source, self.preset.key_of_step(getattr(exc, "step_index", None)),
                              str(exc)) from None

    def _render(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio

        separated = self.separates(song.path)
        chain = self._chain_for(separated)
        chain.reset()
        name = f"{self.output_stem(song.path)}.{self.output.format}"
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
            for block in _reporting(reader):
                out.emit(chain(block, rate, reset=False))
            out.emit(chain.flush(rate, tail=self.keep_tail))
            out.finish()
        return _song_record(song, src, [name], preset=_preset_record(self.preset), chain=chain.descriptions,
                            models=[st.info.describe() for st in chain.model_steps if hasattr(st, "info")],
                            separated=separated)


def _reporting(reader) -> Iterator[np.ndarray]:
    """``reader``'s blocks, reporting how much of the song has been read (:mod:`dawsep.progress`)."""
    done, total = 0, max(1, reader.frames)
    for block in reader:
        yield block
        done += block.shape[1]
        song_progress.song_progress(done / total)


def _stem_name(path: str) -> str:
    """``/x/song/bass.flac`` -> ``bass``: the name a stem file has (how `dawsep separate` writes it)."""
    return Path(path).stem


def _fingerprint(settings: dict) -> str:
    from dawsep import __version__

    settings = {"v": __version__, **settings}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _model_hashes(preset) -> list[str]:
    """Content hashes of every model and plugin file a preset's outputs depend on: its
    [separate] model, the models of its chain's model steps, its VST3 bundles and impulse
    responses. A new file at the same path redoes the songs."""
    from dawsep import runtime

    out = []
    if preset.separate is not None:
        path, _, sha = _preset_model(preset, "separate", preset.separate.model, "separator")
        out.append(sha or runtime.file_sha256(path))
    return out + chain_file_hashes(preset.chain)


def chain_file_hashes(steps) -> list[str]:
    """Content hashes of the files chain ``steps`` load: model-step models (the packaged
    registry's hash, else the file's), VST3 bundles (every file in them) and Convolution impulse
    responses. A file that cannot be found counts as ``missing:<path>`` (building the chain
    reports it)."""
    from dawsep import runtime
    from dawsep.chain import BuiltinStep, ModelStepSpec, VST3Step, resolve_vst3

    out = []
    for step in steps:
        try:
            if isinstance(step, ModelStepSpec):
                if step.kind == "separate":
                    path, _, sha = runtime.resolve(step.options.get("model", "default"), "separator")
                    out.append(sha or _content_hash(path))
                else:  # another kind: any option naming a file
                    out += [_content_hash(v) for v in step.options.values() if isinstance(v, str) and Path(v).is_file()]
            elif isinstance(step, VST3Step):
                out.append(_content_hash(resolve_vst3(step.path)))
            elif isinstance(step, BuiltinStep) and "impulse_response_filename" in step.parameters:
                out.append(_content_hash(Path(step.parameters["impulse_response_filename"]).expanduser()))
        except (DawsepError, OSError) as exc:
            out.append(f"missing:{exc}")
    return out


def _content_hash(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted), cached per process
    by size and modification time."""
    p = Path(path)
    if p.is_dir():
        parts = [f"{f.relative_to(p).as_posix()}:{_content_hash(f)}" for f in sorted(p.rglob("*")) if f.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    st = p.stat()
    return _file_hash(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _preset_model(preset, section: str, model: str, kind: str, hint: str = ""):
    """``runtime.resolve`` for a model a preset names; a problem names the preset file and key."""
    from dawsep import runtime

    try:
        return runtime.resolve(model, kind)
    except ModelError as exc:
        raise ModelError(f"{preset.source} [{section}.model]: {exc}{hint}") from None


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
    midi_bpm: float | None = None  # the MIDI file's tempo (None: 120, not estimated)
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
        # a separator other than the default (or the preset's own) goes into the names and the task,
        # so `-m umx` writes piano.umx.flac beside the default's piano.flac instead of over it
        chosen = cfg.model if cfg is not None else "default"
        self.output_tag = "" if self.model == chosen else f".{_model_tag(self.model)}"
        self.task = self.task or ("separate" + (f":{self.preset.name}" if self.preset is not None else "")
                                  + (f"@{self.output_tag[1:]}" if self.output_tag else ""))
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

        return _preset_model(self.preset, "transcribe", self.preset.transcribe.model, "transcriber",
                             " (the preset transcribes to MIDI; pass --no-midi to write the stem only)")

    def _model_from_preset(self) -> bool:
        return self.preset is not None and self.preset.separate is not None and self.model == self.preset.separate.model

    def _resolve_separator(self):
        from dawsep import runtime

        if self._model_from_preset():
            return _preset_model(self.preset, "separate", self.model, "separator")
        return runtime.resolve(self.model, "separator")

    def fingerprint(self) -> str:
        from dawsep import runtime

        path, _, sha = self._resolve_separator()
        trans = None
        if self.transcribes:
            tpath, _, tsha = self._resolve_transcriber()
            trans = [tsha or runtime.file_sha256(tpath), list(self.extras), self.midi_bpm]
        settings = {"model": sha or runtime.file_sha256(path), "transcriber": trans,
                    "stems": self.stems, "two_stems": self.two_stems,
                    "preset": self.preset.sha256 if self.preset is not None else None,
                    "chain": (self.preset.describe() + chain_file_hashes(self.preset.chain)
                              if self.preset is not None else None),
                    "output": asdict(self.output), "overlap": self.overlap, "segment": self.segment_seconds,
                    "downmix": self.downmix, "keep_tail": self.keep_tail,
                    "phase": [self.phase, self.phase_iterations]}
        return _fingerprint(settings)

    def setup(self, threads: int) -> None:
        from dawsep.separate import Separator

        self._resolve_separator()  # a bad model named by a preset: the preset's file and key
        self._sep = Separator(self.model, overlap=self.overlap, segment_seconds=self.segment_seconds,
                              threads=threads, phase=self.phase, phase_iterations=self.phase_iterations)
        self.plan()  # unknown stems fail here, before any song
        if self.preset is not None and self.preset.chain:
            self._chain = replace(self.preset, separate=None).build_chain()  # errors name the preset's keys
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

    @property
    def separator(self):
        """The loaded :class:`~dawsep.separate.Separator` (None before :meth:`setup`)."""
        return self._sep

    def weak_stems(self, below_db: float | None = None) -> list[tuple[str, float]]:
        """``(stem, SDR dB)`` for each stem this job writes that its model scored below
        ``below_db`` (default :data:`dawsep.defaults.WEAK_STEM_SDR_DB`) on its held-out test split,
        from the model's metadata (a model without that measurement: none)."""
        from dawsep.defaults import WEAK_STEM_SDR_DB

        if self._sep is None:
            self.setup(1)
        if self._sep is None:  # not loaded (a job set up elsewhere): nothing measured to report
            return []
        limit = WEAK_STEM_SDR_DB if below_db is None else below_db
        sdr = (self._sep.info.metrics.get("test") or {}).get("sdr") or {}
        stems = [name for name, idx, _ in self.plan() if idx is not None]
        return [(s, float(sdr[s])) for s in stems if isinstance(sdr.get(s), (int, float)) and sdr[s] < limit]

    def _has_chain(self) -> bool:
        return self.preset is not None and bool(self.preset.chain)

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep.errors import PluginError

        try:
            return self._separate(song, staging)
        except PluginError as exc:  # the preset's chain (e.g. driven to inf): named as the preset's
            if self.preset is None:
                raise
            raise PresetError(self.preset.source, "chain", str(exc)) from None

    def _separate(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio
        from dawsep.separate import RESIDUAL_STEM

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
        names = [f"{name}{self.output_tag}.{self.output.format}" for name, _, _ in plan]
        pending_mix = np.zeros((2, 0), np.float32)  # input not yet matched by engine output
        # A file at another rate than the model's: what the model never saw (above its band,
        # e.g. 22-96 kHz of a 192 kHz file) goes into "other" / "no_<stem>", so the stems still
        # add up to the input.
        takers = [i for i, (_, idx, _) in enumerate(plan) if idx is None] or \
            [i for i, (name, _, chained) in enumerate(plan) if name == RESIDUAL_STEM and not chained]
        rest = [bool(takers) and i == takers[0] for i in range(len(plan))]
        high = _HighBand(song.path, rate, src.sample_rate, self.block_frames, self.downmix) \
            if src.sample_rate != rate and takers else None

        def route(y: np.ndarray, mix: np.ndarray, outs: list[_OutputStream]) -> None:
            if sink is not None:
                sink.push(y[t_index])  # the raw separated stem, before the chain's effects
            extra = high.process(mix) if high is not None else None
            for (name, idx, chained), out, gets in zip(plan, outs, rest):
                sig = y[idx] if idx is not None else mix - y[plan[0][1]]
                out.emit(chain(sig, rate, reset=False) if chained else sig, extra if gets else None)

        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(audio.stream(song.path, block_frames=self.block_frames, sample_rate=rate,
                                                      downmix=self.downmix))
            if high is not None:
                stack.callback(high.close)
            outs = [stack.enter_context(_OutputStream(
                staging / n, rate, src.sample_rate,
                None if (self.keep_tail and chained) else src.frames, self.output,
                skip=chain.latency_samples if chained else 0)) for n, (_, _, chained) in zip(names, plan)]
            for block in _reporting(reader):
                pending_mix = np.concatenate([pending_mix, block], axis=1)
                y = engine.push(block)
                m = y.shape[2]
                route(y, pending_mix[:, :m], outs)
                pending_mix = pending_mix[:, m:]
            y = engine.flush()
            route(y, pending_mix[:, :y.shape[2]], outs)
            extra = high.flush() if high is not None else None
            for (name, idx, chained), out, gets in zip(plan, outs, rest):
                if chained:
                    out.emit(chain.flush(rate, tail=self.keep_tail))
                out.finish(extra if gets else None)
        models = [sep.info.describe()]
        if sink is not None:
            result = sink.finish()
            result.duration_s = round(src.frames / src.sample_rate, 6)
            names += _save_transcription(result, staging, self.preset.stem + self.output_tag, self.extras,
                                         self.midi_bpm, f"{Path(song.path).name} ({self.preset.stem} stem)")
            models.append(self._trans.info.describe())
        return _song_record(song, src, names, models=models,
                            preset=_preset_record(self.preset) if self.preset is not None else None,
                            chain=chain.descriptions if chain is not None else [],
                            separation={"overlap": sep.overlap, "segment_samples": sep.segment,
                                        "phase": sep.phase, "phase_iterations": sep.phase_iterations,
                                        "residual_above_model_band": plan[takers[0]][0] if high is not None else None})


class _HighBand:
    """The part of a file the model never sees when it runs at another rate: the input at its
    own rate minus the input sent to the model's rate and back (for 192 kHz, everything above
    about 21 kHz). Fed the model-rate mixture block by block, it returns that residual at the
    file's rate, aligned sample for sample with what :class:`_OutputStream` writes for the same
    blocks (the same resampler, fed the same lengths). The file is read a second time, at its
    own rate, one block at a time."""

    def __init__(self, path: str, rate: int, file_rate: int, block_frames: int, downmix: bool):
        from dawsep import audio

        self.back = audio.Resampler(rate, file_rate, 2)
        self.reader = audio.stream(path, block_frames=block_frames, downmix=downmix)
        self.buf: list[np.ndarray] = []
        self.have = 0

    def _take(self, n: int) -> np.ndarray:
        while self.have < n:
            block = next(self.reader, None)
            if block is None:
                break
            self.buf.append(block)
            self.have += block.shape[1]
        x = np.concatenate(self.buf, axis=1) if len(self.buf) > 1 else (self.buf[0] if self.buf else
                                                                       np.zeros((2, 0), np.float32))
        out, rest = x[:, :n], x[:, n:]
        self.buf, self.have = ([rest] if rest.shape[1] else []), rest.shape[1]
        if out.shape[1] < n:
            out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
        return out

    def process(self, mix: np.ndarray) -> np.ndarray:
        low = self.back.process(mix)
        return self._take(low.shape[1]) - low

    def flush(self) -> np.ndarray:
        low = self.back.flush()
        return self._take(low.shape[1]) - low

    def close(self) -> None:
        self.reader.close()


def _model_tag(model: str) -> str:
    """A model as a file-name part: a packaged name as it is, a path by its file name without
    ``.onnx`` (``~/m/my model.onnx`` -> ``my_model``)."""
    name = Path(str(model)).name
    name = name[:-5] if name.lower().endswith(".onnx") else name
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "model"


def _save_transcription(result, staging: Path, stem: str, extras: tuple[str, ...],
                        bpm: float | None = None, source: str = "") -> list[str]:
    names = [f"{stem}.mid"] + [f"{stem}.{ext}" for ext in extras]
    result.bpm, result.source = bpm, source
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
    bpm: float | None = None  # the MIDI file's tempo (None: 120, not estimated)

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
                             "extras": list(self.extras), "downmix": self.downmix, "bpm": self.bpm})

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
            for block in _reporting(reader):
                sink.push(block)
        result = sink.finish()
        result.duration_s = round(src.frames / src.sample_rate, 6)
        names = _save_transcription(result, staging, "piano", self.extras, self.bpm, Path(song.path).name)
        return _song_record(song, src, names, models=[t.info.describe()], notes=len(result.notes),
                            pedal_events=len(result.pedal))
