"""One song in one process: the :class:`Job` contract, loading a job into a worker, and running it
on one song, from its staging folder into ``OUT/<song>/``.

Every executor (:mod:`dawsep.batch.executors`, and the others :mod:`dawsep.engines` names) runs
songs through :func:`init_worker` and :func:`run_song`, so every engine writes the same bytes.

Crash safety: a job writes everything into ``OUT/.dawsep/staging/<id>/`` (each file itself via a
temp file + rename), then :func:`run_song` renames the finished files into ``OUT/<song>/``; the
driver marks the song done in the ledger only after that. A worker whose driver is gone writes
nothing into OUT.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dawsep import atomic
from dawsep import progress as song_progress
from dawsep.batch.songs import Song, inside
from dawsep.errors import DawsepError, DiskFullError, OutputPathError


@dataclass
class SongResult:
    """How one song went: its outputs (relative to OUT) and manifest record, or why it failed."""

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


_WORKER_JOB: Job | None = None
_DRIVER_PID: int | None = None  # in a worker process: the driver's pid (None: in the driver itself)
_IN_DRIVER = False  # songs run in the driver's own process (progress goes straight to its bar)


class _DriverGone(Exception):
    pass


def init_worker(job: Job, threads: int, own_process: bool = True, driver_pid: int | None = None) -> None:
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


def run_song(song: Song, out_dir: str, staging_root: str) -> SongResult:
    """Run the worker's job on one song; never raises (the result carries the error)."""
    job = _WORKER_JOB
    assert job is not None, "worker not initialised"
    out = Path(out_dir)
    staging = Path(staging_root) / staging_id(job.task, song.rel)
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


def staging_id(task: str, rel: str) -> str:
    """The name of a song's staging folder under ``OUT/.dawsep/staging`` (one per task and song)."""
    return hashlib.sha1(f"{task}\0{rel}".encode()).hexdigest()[:16]


def progress_file(staging_root: str | Path, task: str, rel: str) -> Path:
    """Where a worker keeps how far it has got into a song (read by the driver)."""
    return Path(staging_root) / f"{staging_id(task, rel)}.progress"


def _sync_folders(folder: Path, root: Path) -> None:
    """fsync ``folder`` and each folder above it up to ``root`` (new song folders are entries too)."""
    while True:
        atomic.fsync_dir(folder)
        if folder == root or root not in folder.parents:
            return
        folder = folder.parent


# The names these had when the engine was one module (a test drives a worker in-process by them).
_worker_init, _run_one = init_worker, run_song
