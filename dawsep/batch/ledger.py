"""A run's state in ``OUT/.dawsep``: the SQLite ledger of every song, the run lock and the
staging folder (each refused when it is a link), and what a full disk or a broken database
turns into (:class:`DiskFullError`, :class:`OutputPathError`).

Only the driver process writes the ledger.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any, Iterator

from dawsep.batch.songs import Song
from dawsep.errors import DawsepError, DiskFullError, OutputBusyError, OutputPathError

STATE_DIR = ".dawsep"


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
    """What tells a changed input file from the one last run: its size and modification time."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def state_dir(out: Path) -> Path:
    """``OUT/.dawsep``, created if needed; refused when it (or OUT's entry for it) is a link."""
    state = out / STATE_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        if state.is_symlink():
            raise OutputPathError(f"{state} is a symbolic link; dawsep keeps its state only in a real folder "
                                  "inside OUT (remove the link)")
        state.mkdir(exist_ok=True)
    except OSError as exc:
        raise path_error(exc, out, f"cannot create {state}") from None
    if state.is_symlink() or not state.is_dir():
        raise OutputPathError(f"{state} is not a folder (or is a symbolic link); remove it")
    return state


def path_error(exc: OSError, out: Path, what: str) -> DawsepError:
    """``exc``, raised while doing ``what`` under ``out``, as a typed error: a full disk or not."""
    from dawsep.audio import is_disk_full

    if is_disk_full(exc, out):
        return DiskFullError(f"no space left on the device of {out} ({what})")
    return OutputPathError(f"{what}: {exc.strerror or exc}")


#: prefix of a previous run's staging folder renamed aside by :func:`fresh_staging` (then removed)
STALE_STAGING = "staging.stale-"


@contextlib.contextmanager
def locked(state: Path) -> Iterator[None]:
    """Hold ``state/lock`` for the run: a second run on the same OUT gets :class:`OutputBusyError`."""
    path = state / "lock"
    try:  # never through a link, never truncating: the lock file holds nothing
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputPathError(f"{path} is a symbolic link; dawsep never follows links inside its own "
                                  "state folder (remove the link)") from None
        raise path_error(exc, state.parent, f"cannot create the lock file {path}") from None
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


def fresh_staging(state: Path) -> Path:
    """An empty ``OUT/.dawsep/staging``: leftovers of a killed run are wiped; a link or file in
    its place is removed (the link itself, never what it points to).

    A killed run's workers can outlive it (Ray actors, orphaned pool processes) and still be
    writing into the old staging folder, so a wipe in place can race them (``rmtree`` leaves a
    folder they refilled). The old folder is therefore renamed aside first, in one step, and the
    renamed folders are removed as far as nothing writes into them any more."""
    staging = state / "staging"
    try:
        if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
            staging.unlink()
        elif staging.exists():
            os.rename(staging, state / f"{STALE_STAGING}{os.getpid()}-{time.time_ns()}")
        for old in state.glob(STALE_STAGING + "*"):
            if not old.is_symlink() and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        staging.mkdir(exist_ok=True)  # a straggler may have re-created it since the rename
        if staging.is_symlink() or not staging.is_dir():
            raise OutputPathError(f"{staging} was replaced while dawsep prepared it; remove it and rerun")
    except OSError as exc:
        raise path_error(exc, state.parent, f"cannot create {staging}") from None
    return staging
