"""The transcriber architectures by name: one place that turns a stored config into a model.

Checkpoints and ONNX metadata store a model's config dict; ``arch`` (absent in the first
architecture's configs) says which class it belongs to.
"""
from __future__ import annotations

from torch import nn

from dawsep.train.transcriber import PianoTranscriber, TranscriberConfig
from dawsep.train.transcriber_pe import PitchTranscriber, PitchTranscriberConfig

#: arch name -> (config class, model class). "oaf" is the default (its configs carry no arch key).
ARCHITECTURES = {"oaf": (TranscriberConfig, PianoTranscriber), "pitch": (PitchTranscriberConfig, PitchTranscriber)}


def config_from_dict(d: dict):
    """The config object of the architecture ``d["arch"]`` names (default ``"oaf"``)."""
    arch = d.get("arch", "oaf")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown transcriber arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch][0]
    return cls.from_dict(d if arch != "oaf" else {k: v for k, v in d.items() if k != "arch"})


def build(cfg) -> nn.Module:
    """A fresh model for a config object of any architecture."""
    for cfg_cls, model_cls in ARCHITECTURES.values():
        if isinstance(cfg, cfg_cls):
            return model_cls(cfg)
    raise TypeError(f"not a transcriber config: {type(cfg).__name__}")
