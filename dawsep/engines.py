"""The batch engines by name (``--engine``, ``run_batch(engine=...)``) and the executor each one means.

``local``: the songs in this process (``jobs`` 1 or None) or in ``jobs`` worker processes
(:mod:`dawsep.batch.executors`); ``ray``: ``jobs`` Ray workers (None: one per CPU of the
cluster) on the Ray at ``address`` (:mod:`dawsep.distributed`, imported only when asked for, so
the CLI and the local engine never import Ray).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dawsep.errors import DawsepError

if TYPE_CHECKING:
    from dawsep.batch.executors import Executor

ENGINES = ("local", "ray")


def executor(engine: str, jobs: int | None = 1, address: str | None = None) -> Executor:
    """The executor ``engine`` names. Raises :class:`DawsepError` for an unknown name, and for
    ``ray`` when Ray is not installed (before anything is touched)."""
    if engine not in ENGINES:
        raise DawsepError(f"unknown engine {engine!r}; expected local or ray")
    if engine == "ray":
        from dawsep.distributed import RayExecutor

        return RayExecutor(workers=jobs, address=address)
    from dawsep.batch.executors import InProcess, ProcessPool

    return InProcess() if (jobs or 1) <= 1 else ProcessPool(jobs)
