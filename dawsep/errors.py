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


class BatchError(DawsepError):
    """A batch finished with failures (the summary is in the message)."""

    exit_code = 1
