"""Typed errors. Library code raises these; only the CLI turns them into exit codes.

Every error crosses process boundaries intact (worker processes and Ray ship them pickled): it
comes back as its own type, with its message, exit code and fields, whatever its constructor
takes (:func:`_rebuild`).
"""
from __future__ import annotations


def _rebuild(cls: type, args: tuple) -> BaseException:
    """An instance of ``cls`` with ``args`` and no constructor call (fields come from the pickled
    ``__dict__``): errors whose constructors take structured arguments unpickle too."""
    exc = cls.__new__(cls)
    BaseException.__init__(exc, *args)
    return exc


class DawsepError(Exception):
    """Base class of every error dawsep raises on purpose."""

    exit_code = 1

    def __reduce__(self):
        return _rebuild, (type(self), self.args), self.__dict__


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
    """A chain step (pedalboard built-in, VST3 or model step) cannot be built or run.
    ``parameter``: the parameter or option at fault, when one is (a preset names its key)."""

    exit_code = 5

    def __init__(self, message: str, *, parameter: str | None = None):
        self.parameter = parameter
        super().__init__(message)


class AudioShapeError(AudioFormatError, PluginError, ValueError):
    """An array given as audio is not ``(channels, samples)`` with an allowed channel count.

    Raised by the runtime's one shape check (:func:`dawsep.audio.as_block`), wherever arrays come
    in: an :class:`AudioFormatError` (exit code 3), and also the :class:`PluginError` a chain or
    a streaming host catches and the ``ValueError`` of a bad argument."""

    def __init__(self, reason: str, path="<array>"):
        super().__init__(path, reason)


class ModelError(DawsepError):
    """An ONNX model is missing, corrupt or does not follow the dawsep contract."""

    exit_code = 6


class UnknownStemError(ModelError):
    """A stem the separator model does not have was asked for (its ``stem`` and the model's
    ``stems``). The command line reports it as a usage error against the flag that named it."""

    def __init__(self, model: str, stem: str, stems):
        self.model, self.stem, self.stems = str(model), str(stem), tuple(stems)
        super().__init__(f"model {self.model!r} has no stem {self.stem!r}; it has: {', '.join(self.stems)}")


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

    def __reduce__(self):
        return _rebuild, (type(self), self.args), self.__dict__


class BatchError(DawsepError):
    """A batch finished with failures (the summary is in the message)."""

    exit_code = 1
