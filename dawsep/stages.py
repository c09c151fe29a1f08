"""How chain steps run: consecutive pedalboard plugins as one board (primed so block-wise output
equals whole-file output), a mono-only plugin once per channel, a model step at its own rate;
and what a plugin's delay lines and channel layout are, found by asking it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from dawsep.errors import PluginError
from dawsep.steps import ModelStep

_PRIME = 8192  # silence each pedalboard stage sees after a reset, and its largest block (see BoardStage)


class BoardStage:
    """Consecutive pedalboard plugins run as one Pedalboard.

    Two pedalboard behaviours would make block-wise output differ from whole-file output:
    it guesses each buffer's channel layout from its shape (forgotten on reset, so a first
    block of 1 or 2 samples reads as mono), and it re-prepares plugins, restarting e.g. the
    Chorus LFO, whenever a block is larger than any before. So after every reset a stage
    processes ``_PRIME`` samples of silence, in the whole-file path too, and never hands
    pedalboard a block larger than that.
    """

    def __init__(self, plugins: list, factories: list | None = None):
        import pedalboard

        self._pedalboard = pedalboard
        self.plugins = plugins
        # Built-ins are rebuilt on reset: pedalboard's reset() keeps e.g. Chorus/Phaser LFO
        # phase, so a reset stream would not equal a fresh render.
        self.factories = factories or [None] * len(plugins)
        self.board = pedalboard.Pedalboard(plugins)
        self._primed = False
        self._drop = 0

    @property
    def latency_samples(self) -> int:
        return sum(int(getattr(p, "reported_latency_samples", 0) or 0) for p in self.plugins)

    def reset(self) -> None:
        self.plugins = [f() if f else p for p, f in zip(self.plugins, self.factories)]
        self.board = self._pedalboard.Pedalboard(self.plugins)
        self.board.reset()
        self._primed = False
        self._drop = 0

    def process(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        if not self._primed:
            primed = self.board.process(np.zeros((audio.shape[0], _PRIME), np.float32), sample_rate, reset=False)
            self._drop = _PRIME - primed.shape[1]  # priming output still held back by latency
            self._primed = True
        if audio.shape[1] > _PRIME:
            return np.concatenate([self.process(audio[:, i:i + _PRIME], sample_rate)
                                   for i in range(0, audio.shape[1], _PRIME)], axis=1)
        y = self.board.process(audio, sample_rate, reset=False)
        # pedalboard compensates plugin latency in streaming by returning short buffers until
        # the latency is filled; pad in front so every block keeps its length and the stream
        # is simply delayed by latency_samples.
        if self._drop:
            k = min(self._drop, y.shape[1])
            y, self._drop = y[:, k:], self._drop - k
        n = audio.shape[1]
        if y.shape[1] < n:
            y = np.concatenate([np.zeros((y.shape[0], n - y.shape[1]), np.float32), y], axis=1)
        elif y.shape[1] > n:
            raise PluginError(f"plugin returned {y.shape[1]} samples for a block of {n}")
        return y


class PerChannelStage:
    """A mono VST3 plugin on stereo audio: one instance per channel."""

    def __init__(self, plugins: list):
        self.instances = plugins
        self.stages = [BoardStage([p]) for p in plugins]

    @property
    def latency_samples(self) -> int:
        return self.stages[0].latency_samples

    def reset(self) -> None:
        for s in self.stages:
            s.reset()

    def process(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        if audio.shape[0] > len(self.stages):
            raise PluginError(f"mono plugin {self.instances[0].name!r} was set up for "
                              f"{len(self.stages)} channel(s), got {audio.shape[0]}")
        return np.concatenate([s.process(audio[c:c + 1], sample_rate)
                               for c, s in enumerate(self.stages[:audio.shape[0]])], axis=0)


class ModelStage:
    def __init__(self, step: ModelStep):
        self.step = step

    @property
    def latency_samples(self) -> int:
        return int(self.step.latency_samples)

    def reset(self) -> None:
        self.step.reset()

    def process(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        need = self.step.sample_rate
        if need is not None and int(need) != int(sample_rate):
            raise PluginError(f"model step {self.step.name!r} runs at {need} Hz, the stream is at "
                              f"{sample_rate:g} Hz; resample the stream first")
        out = np.asarray(self.step.process(audio, int(sample_rate), False), dtype=np.float32)
        if out.shape != audio.shape:
            raise PluginError(f"model step {self.step.name!r} returned shape {out.shape} for input {audio.shape}")
        return out


def delay_seconds(plugin) -> float:
    """How far apart in time the plugin's output can repeat its input (0 if it has no delay line):
    pedalboard's Delay and Chorus by their settings, an external plugin by its longest parameter in
    seconds or milliseconds (e.g. ZamDelay's ``time_ms``), a nested Pedalboard by its plugins."""
    import pedalboard

    if isinstance(plugin, pedalboard.Pedalboard):
        return max((delay_seconds(p) for p in plugin), default=0.0)
    if isinstance(plugin, pedalboard.Delay):
        return float(plugin.delay_seconds)
    if isinstance(plugin, pedalboard.Chorus):
        return float(plugin.centre_delay_ms) / 1000.0
    params = getattr(plugin, "parameters", None)
    if not isinstance(params, Mapping):
        return 0.0
    longest = 0.0
    for key, param in params.items():
        unit = str(getattr(param, "units", "") or getattr(param, "label", "") or "").strip().lower()
        scale = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "seconds": 1.0}.get(unit)
        if scale is None:
            continue
        try:
            longest = max(longest, float(getattr(plugin, key)) * scale)
        except (TypeError, ValueError, AttributeError):
            continue
    return longest


def is_mono_only(plugin) -> bool:
    """Whether ``plugin`` refuses a stereo buffer but takes a mono one (then it runs once per
    channel). Decided by trying both, never by reading the plugin's error message; a plugin
    that refuses both raises its stereo error."""
    try:
        plugin.process(np.zeros((2, 64), np.float32), 44100.0, reset=True)
        return False
    except ValueError as stereo_error:
        try:
            plugin.process(np.zeros((1, 64), np.float32), 44100.0, reset=True)
        except ValueError:
            raise stereo_error from None
        return True
    finally:
        plugin.reset()
