"""Atomic file writes: the one way dawsep puts a file in place.

A file is written to a hidden temporary name in its destination folder (created exclusively,
never through a symbolic link), flushed and fsynced, renamed over the destination, and then
the folder is fsynced so the rename itself is on disk. Readers see the old file or the whole
new one; a crash or a full disk leaves the old file and no temporary one.

- :func:`write_bytes`: bytes in memory (MIDI, plots, note lists, the manifest).
- :func:`temporary_path` + :func:`commit`: a file another library writes by name (libsndfile
  for audio): write to the temporary path, then commit it.
- :func:`move`: a finished file moved into place (the batch engine's staging -> OUT).
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["temporary_path", "write_bytes", "commit", "move", "fsync_dir"]


def temporary_path(path: str | os.PathLike, suffix: str = ".part") -> Path:
    """A fresh hidden name beside ``path``, created empty (exclusively, not through a link), for
    a writer that opens files by name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
    return tmp


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the entries of ``folder`` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put the finished temporary file ``tmp`` in place as ``path``: fsync it, rename it, fsync
    the folder. On failure ``tmp`` is removed and ``path`` is as it was."""
    tmp, path = Path(tmp), Path(path)
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # the data is on disk before the rename makes it visible
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = temporary_path(path, ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return commit(tmp, path)


def move(src: str | os.PathLike, dst: str | os.PathLike, *, sync: bool = True) -> Path:
    """Rename the finished (already fsynced) file ``src`` to ``dst``; with ``sync`` the folder of
    ``dst`` is fsynced (pass ``sync=False`` for all but the last of several moves into one
    folder, then :func:`fsync_dir` once)."""
    os.replace(src, dst)
    if sync:
        fsync_dir(Path(dst).parent)
    return Path(dst)
