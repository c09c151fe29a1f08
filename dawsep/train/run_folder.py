"""Owns a training run's folder: atomic checkpoints, the JSON-lines log, and a clean stop on SIGTERM/SIGINT.

Both trainers (:mod:`dawsep.train.train_separator`, :mod:`dawsep.train.train_transcriber`) keep
``OUT/last.pt``, ``OUT/best.pt`` and ``OUT/log.jsonl`` the same way, so a run killed at any moment
resumes from its last checkpoint and its log never holds the lines of steps that will be redone.
"""
from __future__ import annotations

import json
import os
import signal
import threading

import torch


def save_atomic(obj, path: str) -> None:
    """torch.save to a temp file in the same folder, fsync, rename: a crash never leaves half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """A checkpoint of either trainer, tensors only (``weights_only=True``: no pickled code runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def append_log(path: str, rec: dict) -> None:
    """One JSON object as one line of ``log.jsonl``."""
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def truncate_log(path: str, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= step]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)


class StopOnSignal:
    """``with StopOnSignal() as stop:`` ... ``if stop.requested:`` save and return.

    SIGTERM/SIGINT set ``requested`` instead of killing the process, so the loop finishes its step
    and writes ``last.pt`` (a ``kill`` or Ctrl-C then loses no steps). Handlers are installed only
    on the main thread (Python allows no other) and restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._old: dict = {}

    def _on_signal(self, signum, _frame) -> None:
        self.requested = True

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


__all__ = ["StopOnSignal", "append_log", "load_checkpoint", "save_atomic", "truncate_log"]
