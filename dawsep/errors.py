"""Typed errors. Library code raises these; only the CLI turns them into exit codes."""
from __future__ import annotations


class DawsepError(Exception):
    """Base class of every error dawsep raises on purpose."""

    exit_code = 1


class AudioFormatError(DawsepError):
    """A file cannot be read or written as audio (names the file and the reason)."""

    exit_code = 3

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class PresetError(DawsepError):
    """A preset is invalid: names the file, the key and what is allowed."""

    exit_code = 4

    def __init__(self, source, key: str | None, message: str):
        self.source = str(source)
        self.key = key
        self.message = message
        where = f"{self.source}" + (f" [{key}]" if key else "")
        super().__init__(f"{where}: {message}")


class PluginError(DawsepError):
    """A chain step (pedalboard built-in, VST3 or model step) cannot be built or run."""

    exit_code = 5


class ModelError(DawsepError):
    """An ONNX model is missing, corrupt or does not follow the dawsep contract."""

    exit_code = 6


class OutputPathError(DawsepError):
    """An output path would leave the output folder, or the folder is unusable."""

    exit_code = 7


class OutputBusyError(DawsepError):
    """Another dawsep run holds the output folder's lock."""

    exit_code = 8


class NoInputError(DawsepError):
    """The input holds no audio file to process."""

    exit_code = 9


class DiskFullError(OutputPathError):
    """The output folder's device is full (or over quota): nothing half-written is kept, and a
    rerun of the same command resumes once there is space."""

    exit_code = 10


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or another stop signal) turned into an exception, so a run can record what it
    finished before it stops; the CLI exits with ``128 + signum``. Ctrl-C stays a plain
    :class:`KeyboardInterrupt` (``signum`` SIGINT)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by signal {self.signum}")


class BatchError(DawsepError):
    """A batch finished with failures (the summary is in the message)."""

    exit_code = 1
