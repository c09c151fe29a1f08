"""How a batch's songs get run: the :class:`Executor` interface and the local executors (in this
process, or a pool of worker processes).

The driver (:func:`dawsep.batch.run_batch`) decides which songs to run and keeps the ledger, the
progress bar and the report; an executor only sends each song of a :class:`Run` to a worker
(:func:`dawsep.batch.worker.run_song`) and hands each result back. Executors that leave this
machine live in modules of their own; :mod:`dawsep.engines` maps the ``--engine`` names to
executors.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from dawsep import progress as song_progress
from dawsep.batch.songs import Song
from dawsep.batch.worker import Job, SongResult, init_worker, progress_file, run_song
from dawsep.progress import BatchProgress


@dataclass
class Run:
    """What the driver hands an executor: the songs to run and where their results go.

    An executor calls :meth:`running` just before it sends a song to a worker, and :meth:`finished`
    (on this process's main thread) with each result, in the order results come back.
    """

    job: Job
    todo: list[tuple[Song, str]]  # (song, fingerprint), in order
    input_root: Path  # the input folder or file, as given (a remote worker must see it)
    out: Path
    staging_root: Path  # OUT/.dawsep/staging
    running: Callable[[Song, str], None]  # the driver records the song as running
    finished: Callable[[SongResult, str], None]  # the driver records the result (may raise: stop)
    progress: BatchProgress

    def send(self, song: Song, fp: str, staging_root: str | Path | None = None) -> None:
        """Record ``song`` as running, its progress read from the file its worker keeps under
        ``staging_root`` (default: :attr:`staging_root`)."""
        self.running(song, fp)
        self.progress.start(song.rel, progress_file(staging_root or self.staging_root, self.job.task, song.rel))


class Executor(Protocol):
    """Runs the songs of a :class:`Run` through :mod:`dawsep.batch.worker`, each exactly once,
    reporting every one (a crashed worker's song as a failed :class:`SongResult`). Raises only for
    what stops the whole run (e.g. no worker can start); what ``run.finished`` raises stops it too."""

    def run(self, run: Run) -> None: ...


class InProcess:
    """Every song in this process, one after another (``--jobs 1``): its progress goes straight
    to the bar. The job is loaded here even when no song is left to run (a bad model still fails)."""

    def run(self, run: Run) -> None:
        init_worker(run.job, threads=os.cpu_count() or 1, own_process=False)
        for song, fp in run.todo:
            run.running(song, fp)
            run.progress.start(song.rel)
            song_progress.set_sink(lambda f, rel=song.rel: run.progress.fraction(rel, f))
            try:
                res = run_song(song, str(run.out), str(run.staging_root))
            finally:
                song_progress.set_sink(None)
            run.finished(res, fp)


class ProcessPool:
    """``jobs`` worker processes on this machine, at most ``jobs`` songs in flight, so a crashed
    worker is pinned to the songs it held.

    The workers die with this process (:mod:`dawsep.batch.worker`); when the run stops early
    (Ctrl-C, SIGTERM, a full disk) they are killed, and the songs they held are redone by the
    next run."""

    def __init__(self, jobs: int):
        self.jobs = int(jobs)

    def run(self, run: Run) -> None:
        jobs, job = self.jobs, run.job
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = multiprocessing.get_context("spawn")  # plugins and ORT threads do not survive fork

        def new_pool(n: int) -> cf.ProcessPoolExecutor:
            return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=init_worker,
                                          initargs=(job, threads, True, os.getpid()))

        queue = list(run.todo)
        retry_alone: list[tuple[Song, str]] = []
        pool = new_pool(jobs)
        try:
            running: dict[cf.Future, tuple[Song, str]] = {}
            while queue or running or retry_alone:
                width = 1 if retry_alone else jobs
                source = retry_alone if retry_alone else queue
                while source and len(running) < width:
                    song, fp = source.pop(0)
                    run.send(song, fp)
                    running[pool.submit(run_song, song, str(run.out), str(run.staging_root))] = (song, fp)
                done, _ = cf.wait(running, timeout=song_progress.REPORT_EVERY_S, return_when=cf.FIRST_COMPLETED)
                run.progress.poll_files()
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
                    run.finished(res, fp)
                if broken:
                    # the pool is unusable; whichever song crashed it is among those in flight
                    victims = list(running.values())
                    running.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    if len(victims) == 1:
                        song, fp = victims[0]
                        run.finished(SongResult(song, False, error="worker process died (crash or killed) "
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
