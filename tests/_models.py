"""Tiny model steps for tests (plain numpy; stand-ins for ONNX models in chain plumbing tests)."""
from __future__ import annotations

import numpy as np


class DelayedGainModel:
    """A stateful model step: gain with a fixed lookahead latency, like a chunked model."""

    def __init__(self, gain: float = 0.5, latency: int = 64, sample_rate: int | None = None):
        self.name = "delayed-gain"
        self.gain = gain
        self.latency_samples = latency
        self.sample_rate = sample_rate
        self.reset()

    def reset(self) -> None:
        self._buf = None

    def process(self, audio, sample_rate, reset):
        if reset or self._buf is None:
            self._buf = np.zeros((audio.shape[0], self.latency_samples), np.float32)
        joined = np.concatenate([self._buf, audio * self.gain], axis=1)
        self._buf = joined[:, audio.shape[1]:]
        return joined[:, :audio.shape[1]]
