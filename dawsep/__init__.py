"""dawsep: music source separation and piano transcription for batch use and DAW hosts.

Heavy modules (onnxruntime, pedalboard) are imported lazily so ``dawsep --help`` stays instant.
"""
from __future__ import annotations

from dawsep.errors import (
    AudioFormatError,
    BatchError,
    DawsepError,
    ModelError,
    OutputPathError,
    PluginError,
    PresetError,
)

__version__ = "0.1.0"

__all__ = [
    "AudioFormatError",
    "BatchError",
    "DawsepError",
    "ModelError",
    "OutputPathError",
    "PluginError",
    "PresetError",
    "__version__",
]
