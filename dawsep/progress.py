"""How a batch run shows its progress on stderr, and how a song reports its own.

On a terminal: one progress bar over the songs, naming the songs in flight and how far each
has got (``album/b 42%``), redrawn in place. Anywhere else (a log file, a pipe, CI): plain
lines, one per finished song (``[3/10] album/b: done in 12.3 s``), and for a long song a line
every :data:`PLAIN_EVERY_S` seconds on how far it has got; never a carriage return. Failures are
named once, in the summary at the end (the progress line only says the song failed).

A job reports how far it has got into the current song with :func:`song_progress` (a fraction,
as often as it likes: reports are thinned here). The batch engine decides where a report goes:
straight to the bar when the song runs in the driver's process, else to a small file beside
the song's staging folder that the driver reads while it waits (worker processes, Ray).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

#: plain (non-terminal) output: a line on a song's progress at most this often, and only once it
#: has run this long (short songs get just their "done" line)
PLAIN_EVERY_S = 10.0
#: how often a song's progress is passed on (file writes in workers, bar redraws)
REPORT_EVERY_S = 0.5

_sink: Callable[[float], None] | None = None
_last_report = 0.0


def song_progress(fraction: float) -> None:
    """Called by a job: this much (0-1) of the current song is done."""
    global _last_report
    if _sink is None:
        return
    now = time.monotonic()
    if now - _last_report >= REPORT_EVERY_S or fraction >= 1.0:
        _last_report = now
        _sink(min(1.0, max(0.0, float(fraction))))


def set_sink(sink: Callable[[float], None] | None) -> None:
    """Where :func:`song_progress` reports go for the song about to run (None: nowhere)."""
    global _sink, _last_report
    _sink, _last_report = sink, 0.0


def file_sink(path: Path) -> Callable[[float], None]:
    """A sink that keeps the latest fraction in ``path`` (read by :meth:`BatchProgress.poll_files`)."""
    def write(fraction: float) -> None:
        tmp = path.with_name(path.name + ".w")
        try:
            tmp.write_text(f"{fraction:.4f}")
            os.replace(tmp, path)
        except OSError:  # progress is a courtesy: never fail a song for it
            pass
    return write


class BatchProgress:
    """The driver's view of a run: ``start``/``fraction``/``finish`` per song, ``close`` at the end."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.finished = total, 0
        self.enabled = bool(enabled and total > 0)
        try:
            self.tty = self.enabled and self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.running: dict[str, list[float]] = {}  # song -> [fraction, started, last plain line]
        self.files: dict[str, Path] = {}  # song -> the progress file its worker writes
        self._bar = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="song", file=self.stream, dynamic_ncols=True, leave=False)

    def start(self, song: str, progress_file: Path | None = None) -> None:
        now = time.monotonic()
        self.running[song] = [0.0, now, now]
        if progress_file is not None:
            self.files[song] = progress_file
        self._redraw()

    def fraction(self, song: str, fraction: float) -> None:
        state = self.running.get(song)
        if state is None:
            return
        state[0] = fraction
        now = time.monotonic()
        if self.enabled and not self.tty and now - state[1] >= PLAIN_EVERY_S and now - state[2] >= PLAIN_EVERY_S:
            state[2] = now
            self._line(f"[{self.finished + 1}/{self.total}] {song}: {100 * fraction:.0f}% after "
                       f"{now - state[1]:.0f} s")
        self._redraw()

    def poll_files(self) -> None:
        """Read the progress files of songs running in other processes."""
        for song, path in list(self.files.items()):
            try:
                self.fraction(song, float(path.read_text() or 0.0))
            except (OSError, ValueError):
                continue

    def finish(self, song: str, ok: bool) -> None:
        state = self.running.pop(song, None)
        path = self.files.pop(song, None)
        if path is not None:
            for p in (path, path.with_name(path.name + ".w")):
                try:
                    p.unlink()
                except OSError:
                    pass
        self.finished += 1
        took = time.monotonic() - state[1] if state else 0.0
        if self._bar is not None:
            self._bar.update(1)
            self._redraw()
        elif self.enabled:
            what = f"done in {took:.1f} s" if ok else "failed (why: in the summary below)"
            self._line(f"[{self.finished}/{self.total}] {song}: {what}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _redraw(self) -> None:
        if self._bar is None:
            return
        names = [f"{s} {100 * st[0]:.0f}%" for s, st in list(self.running.items())[:2]]
        more = len(self.running) - len(names)
        self._bar.set_postfix_str(", ".join(names) + (f" +{more}" if more > 0 else ""), refresh=True)
