"""The Ray executor of the batch engine (:class:`RayExecutor`): the same songs, ledger and report
as the local process pool, on a Ray cluster (``dawsep render|separate ... --engine ray``).

Design:

- One Ray actor per worker slot (1 CPU each). It loads the job once
  (:func:`dawsep.batch.worker.init_worker`: chains, ONNX sessions) and then runs one song per
  call through :func:`dawsep.batch.worker.run_song`, as every executor does, so outputs are
  byte-identical to ``--engine local``.
- The driver keeps at most one song in flight per actor: a worker that dies (crash, kill, out
  of memory, node lost) is pinned to the one song it held. That song is reported failed, the
  actor is replaced, and the other songs go on.
- The driver alone writes the ledger, and marks a song done only when its result comes back,
  i.e. after the worker renamed the outputs into place. A dead driver takes its actors with it
  (Ray ends the actors of a dead owner); a rerun redoes whatever was not marked done.
- Workers read songs by absolute path and write ``OUT/.dawsep/staging`` and ``OUT``
  themselves, so inputs and outputs must be on a filesystem every node mounts at the same
  path. Each worker checks that when it starts, and the run is refused if one cannot see them.

Ray is imported here only, and this module only when the Ray engine is asked for
(:mod:`dawsep.engines`), so the CLI starts instantly and the runtime works without Ray installed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from pathlib import Path
from typing import Any, Iterator

from dawsep.batch.executors import Run
from dawsep.batch.songs import Song
from dawsep.batch.worker import Job, SongResult, init_worker, run_song
from dawsep.progress import REPORT_EVERY_S
from dawsep.errors import DawsepError, OutputPathError

INSTALL_HINT = "pip install 'dawsep[dist]'"


def import_ray():
    """The ``ray`` module, or a DawsepError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DawsepError(f"--engine ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def connected(address: str | None = None) -> Iterator[Any]:
    """Yield ``ray``, connected: to the Ray this process already joined (left running), else to
    ``address``, else to ``$RAY_ADDRESS``, else to a local Ray started for this run and shut
    down after it."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(target)
    # "local" always starts a fresh Ray (plain ray.init() would join the last one started here)
    extra = {"include_dashboard": False} if target == "local" else {}
    try:
        ray.init(address=target, logging_level=logging.WARNING, **extra)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        what = "start a local Ray" if target == "local" else f"connect to the Ray cluster at {target}"
        raise DawsepError(f"cannot {what}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(target: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a ``host:port`` nobody answers (Ray itself retries for many minutes)."""
    host, sep, port = target.rpartition(":")
    if "://" in target or not sep or not port.isdigit():
        return  # "local", "auto", ray:// client addresses: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise DawsepError(f"cannot reach the Ray cluster at {target}: {exc.strerror or exc}") from None


class SongWorker:
    """One worker slot on a Ray node: the job loaded once, then one song per ``run`` call.

    ``shared``: paths the driver sees that this worker must see too (the input root and OUT's
    staging folder). Problems are kept and reported by ``ready`` rather than raised, so the
    driver can say which node and which path.
    """

    def __init__(self, job: Job, threads: int, shared: list[str]):
        self.where = f"{socket.gethostname()} (pid {os.getpid()})"
        self.problem: tuple[str, Any] | None = None
        missing = [p for p in shared if not os.path.exists(p)]
        if missing:
            self.problem = ("missing", missing[0])
        elif not os.access(shared[-1], os.W_OK):
            self.problem = ("readonly", shared[-1])
        else:
            try:
                init_worker(job, threads)
            except DawsepError as exc:  # shipped whole (type, exit code, fields: dawsep.errors)
                self.problem = ("error", exc)
            except Exception as exc:  # reported by ready(): the driver raises it with the node's name
                self.problem = ("other", f"{type(exc).__name__}: {exc}")

    def ready(self) -> tuple[str, tuple[str, Any] | None]:
        return self.where, self.problem

    def run(self, song: Song, out_dir: str, staging_root: str) -> SongResult:
        """Every executor's per-song step (the driver sends songs only once ready() was clean)."""
        return run_song(song, out_dir, staging_root)


def _startup_error(where: str, problem: tuple[str, Any]) -> DawsepError:
    kind, detail = problem
    if kind == "missing":
        return DawsepError(f"Ray worker on {where} cannot see {detail}: inputs and outputs must be on a "
                           "filesystem that every node mounts at the same path (see docs/scale-out.md)")
    if kind == "readonly":
        return OutputPathError(f"Ray worker on {where} cannot write to {detail}")
    text = f"Ray worker on {where} could not load the job: {detail}"
    if kind == "error" and isinstance(detail, DawsepError):
        # the worker's own error: its type, exit code and fields, the node named in its message
        detail.args = (text,)
        return detail
    return DawsepError(text)


def _first_line(exc: BaseException) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def shared_paths(input_root: Path, staging_root: str) -> list[str]:
    """What every worker must see: the input (folder or file, resolved like the songs' paths)
    and OUT's staging folder (last: it must also be writable)."""
    return [str(input_root.expanduser().resolve()), staging_root]


class RayExecutor:
    """Runs a batch's songs on Ray (an :class:`~dawsep.batch.executors.Executor`).

    ``workers``: actors (1 CPU each); None: one per CPU of the cluster. ``address``: the cluster
    (see :func:`connected`). Creating one checks that Ray is installed; :meth:`run` raises
    DawsepError when a worker cannot start or see the shared paths (songs it did not finish stay
    to be redone).
    """

    def __init__(self, workers: int | None = None, address: str | None = None):
        import_ray()  # a missing Ray is reported before anything is touched
        self.workers, self.address = workers, address

    def run(self, run: Run) -> None:
        if run.todo:  # nothing to run: no cluster to join
            run_ray(run, self.workers, self.address)


def run_ray(run: Run, workers: int | None, address: str | None = None) -> None:
    """Run the songs of ``run`` on ``workers`` Ray actors (None: one per CPU of the cluster);
    ``run.finished`` is called here, on the driver, per result."""
    job, todo, progress = run.job, run.todo, run.progress
    with connected(address) as ray:
        n = workers or int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(n, len(todo)))
        # SPREAD: a partial set of workers is spread over the nodes (their disks and networks)
        actor_cls = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(SongWorker)
        job_ref = ray.put(job)  # shipped once, not once per actor
        # absolute for the workers, whose working folder is not ours; symlinks kept, as mounted
        out_dir, staging_dir = os.path.abspath(run.out), os.path.abspath(run.staging_root)
        shared = shared_paths(run.input_root, staging_dir)
        queue = deque(todo)
        starting: dict[Any, Any] = {}  # ready() ref -> actor
        inflight: dict[Any, tuple[Any, Song, str]] = {}  # run() ref -> (actor, song, fingerprint)
        where: dict[Any, str] = {}
        idle: list[Any] = []

        def start() -> None:
            actor = actor_cls.remote(job_ref, 1, shared)  # 1 CPU, so 1 compute thread
            starting[actor.ready.remote()] = actor

        for _ in range(n):
            start()
        try:
            while queue or inflight:
                # actors still starting matter only while songs wait for one
                ready, _ = ray.wait(list(inflight) + (list(starting) if queue else []), num_returns=1,
                                    timeout=REPORT_EVERY_S)
                progress.poll_files()  # the workers write how far they are into staging (shared)
                if not ready:
                    continue
                [ref] = ready
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        where[actor], problem = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise DawsepError(f"a Ray worker could not start: {_first_line(exc)}") from None
                    if problem is not None:
                        raise _startup_error(where[actor], problem)
                    idle.append(actor)
                else:
                    actor, song, fp = inflight.pop(ref)
                    try:
                        res = ray.get(ref)
                        idle.append(actor)
                    except ray.exceptions.RayActorError:
                        res = SongResult(song, False, error=f"Ray worker on {where[actor]} died while processing "
                                         "this song (crashed, killed, out of memory or its node was lost)")
                        ray.kill(actor)
                        if queue:
                            start()
                    except ray.exceptions.RayError as exc:  # the call failed, the worker lives on
                        res = SongResult(song, False, error=f"Ray task failed: {_first_line(exc)}")
                        idle.append(actor)
                    run.finished(res, fp)
                while queue and idle:
                    actor = idle.pop()
                    song, fp = queue.popleft()
                    run.send(song, fp, staging_dir)
                    inflight[actor.run.remote(song, out_dir, staging_dir)] = (actor, song, fp)
        finally:
            for actor in [*idle, *starting.values(), *(a for a, _, _ in inflight.values())]:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
