"""The batch engine shared by ``render``, ``separate`` and ``transcribe``: :func:`run_batch`.

One song is one unit of work. A *job* (:class:`RenderJob`, :class:`SeparateJob`,
:class:`TranscribeJob`) knows how to turn one input file into output files; the engine finds the
songs (:mod:`~dawsep.batch.songs`), skips those already done and keeps the ledger
(:mod:`~dawsep.batch.ledger`), hands the rest to an executor (:mod:`~dawsep.batch.executors`;
:mod:`dawsep.engines` maps ``engine`` names to executors), which runs each song through
:mod:`~dawsep.batch.worker`, and writes ``manifest.json`` and the report.

Crash safety: a job writes everything into ``OUT/.dawsep/staging/<id>/``, the worker renames the
finished files into ``OUT/<song>/``, and the driver marks the song done in the ledger only
after that. A killed run leaves at worst a staging folder (wiped on the next run) and a song
still marked ``running`` (redone on the next run). Only the driver process writes the ledger.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dawsep import atomic
from dawsep.batch.executors import Executor, InProcess, ProcessPool, Run
from dawsep.batch.fingerprints import chain_file_hashes
from dawsep.batch.ledger import (STATE_DIR, Ledger, fresh_staging, input_fingerprint, locked, path_error,
                                 state_dir)
from dawsep.batch.outputs import OutputOptions
from dawsep.batch.render_job import RenderJob
from dawsep.batch.separate_job import SeparateJob
from dawsep.batch.songs import (OUTPUT_SUFFIXES, Inputs, Song, assign_folders, discover, find_inputs, folder_part,
                                inside, resolves_to)
from dawsep.batch.transcribe_job import TranscribeJob
from dawsep.batch.worker import Job, SongResult, progress_file
from dawsep.errors import DiskFullError, NoInputError, OutputPathError
from dawsep.progress import BatchProgress
from dawsep.runtime import file_sha256  # re-exported: the one content hash

__all__ = [
    "BatchReport", "Executor", "InProcess", "Inputs", "Job", "Ledger", "OUTPUT_SUFFIXES", "OutputOptions",
    "ProcessPool", "RenderJob", "Run", "STATE_DIR", "SeparateJob", "Song", "SongResult", "TranscribeJob",
    "assign_folders", "chain_file_hashes", "discover", "file_sha256", "find_inputs", "folder_part",
    "input_fingerprint", "inside",
    "progress_file", "run_batch", "write_manifest",
]


@dataclass
class BatchReport:
    """What a run did: the songs done, skipped (done before) and failed, what was not read, and
    the stale files it could not remove; :meth:`summary` is the text the CLI prints."""

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


def run_batch(job: Job, input_path: str | Path, out_dir: str | Path, *, jobs: int | None = 1,
              force: bool = False, progress: bool = True, extensions: frozenset[str] | None = None,
              on_result: Callable[[SongResult], None] | None = None, engine: str | Executor = "local",
              address: str | None = None) -> BatchReport:
    """Run ``job`` on every song under ``input_path``; outputs under ``out_dir``.

    ``engine``: a name from :mod:`dawsep.engines`, which says what ``jobs`` and ``address`` mean
    for each (``"local"``: ``jobs`` worker processes, None or 1: in this process), or an
    :class:`Executor` (then ``jobs`` and ``address`` are not used). Songs already done with the
    same settings are skipped unless ``force``. Never raises for a bad song: see the returned report. Raises for what
    stops the whole run: :class:`NoInputError`, :class:`OutputBusyError`,
    :class:`OutputPathError` (OUT unusable or equal to the input folder), :class:`DiskFullError`;
    and on KeyboardInterrupt (or :class:`~dawsep.errors.Interrupted`) it records the songs
    finished so far in ``manifest.json`` before re-raising.
    """
    from dawsep.audio import READ_EXTENSIONS

    if isinstance(engine, str):
        from dawsep import engines

        engine = engines.executor(engine, jobs, address)  # one that cannot run here: refused before anything is touched
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    extensions = extensions or READ_EXTENSIONS
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out}: output path exists and is not a folder")
    root = Path(input_path).expanduser()
    if root.is_dir() and resolves_to(out, root.resolve()):
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
    state = state_dir(out)
    report = BatchReport(str(out), ignored=found.ignored, excluded=found.excluded)
    with locked(state):
        staging_root = fresh_staging(state)
        ledger = Ledger(state / "ledger.sqlite")
        try:
            songs = assign_folders(found.files, ledger.folders())
            _run_songs(job, songs, out, staging_root, ledger, report, executor=engine, force=force, progress=progress,
                       on_result=on_result, input_root=root)
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
               executor: Executor, force: bool, progress: bool, on_result, input_root: Path) -> None:
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
        executor.run(Run(job, todo, input_root, out, staging_root,
                         running=lambda song, fp: ledger.set(job.task, song, fp, "running"),
                         finished=finish, progress=bar))
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
        raise path_error(exc, out, f"cannot write {path}") from None
    return path


_write_all = atomic.write_bytes  # the manifest's writer (one atomic helper: dawsep.atomic)
