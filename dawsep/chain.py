"""Effect chains: :class:`Chain` runs pedalboard built-ins, VST3 plugins and model steps in one ordered list.

A :class:`Chain` is called like a pedalboard plugin, ``chain(audio, sample_rate, reset=True)``,
with ``audio`` shaped ``(channels, samples)``. With ``reset=False`` it keeps its state between
calls, so a file can be streamed block by block; the concatenated blocks followed by
:meth:`Chain.flush` equal the whole-file result delayed by :attr:`Chain.latency_samples`.
The whole-file call is implemented as ``reset()`` + one streaming call + flush, so the two paths
agree by construction.

Consecutive pedalboard steps (built-ins and stereo VST3s) run as one ``pedalboard.Pedalboard``.

The parts: :mod:`dawsep.effects` (built-ins and VST3 loading), :mod:`dawsep.steps` (step
descriptions and the model-step registry), :mod:`dawsep.stages` (how steps run); all importable
from here.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from dawsep.effects import (BUILTINS, DEFAULT_SLOPE_DB_PER_OCTAVE, FREQUENCY_PARAMS, ParamSpec, check_impulse_response,
                            load_vst3, make_builtin, resolve_vst3, validate_builtin, vst3_folders)
from dawsep.errors import PluginError
from dawsep.stages import BoardStage, ModelStage, PerChannelStage, delay_seconds, is_mono_only
from dawsep.steps import (BuiltinStep, ModelStep, ModelStepSpec, StepSpec, VST3Step, build_model_step,
                          check_model_step_options, describe_step, describe_steps, model_step_kinds, model_step_options,
                          register_model_step)

__all__ = [
    "BUILTINS", "BuiltinStep", "Chain", "DEFAULT_SLOPE_DB_PER_OCTAVE", "ModelStep", "ModelStepSpec", "ParamSpec",
    "StepSpec", "VST3Step", "build_model_step", "check_impulse_response", "check_model_step_options",
    "describe_steps", "load_vst3", "make_builtin", "model_step_kinds", "model_step_options", "register_model_step",
    "resolve_vst3", "validate_builtin", "vst3_folders",
]


class Chain:
    """An ordered list of steps, callable as ``chain(audio, sample_rate, reset=True)``.

    Steps may be :class:`BuiltinStep`, :class:`VST3Step`, :class:`ModelStepSpec`, a pedalboard
    plugin instance, or any :class:`ModelStep`. Audio is ``(channels, samples)`` with 1 or 2
    channels; output has the same shape.
    """

    def __init__(self, steps: Sequence[Any] = ()):
        from dawsep.errors import DawsepError

        self.steps = list(steps)
        self.descriptions = [describe_step(s) for s in self.steps]
        self._stages: list = []
        self._stage_steps: list[range] = []  # which steps each stage runs
        pending: list = []  # consecutive pedalboard plugins, merged into one board
        factories: list = []

        def add(stage, first: int, last: int) -> None:
            self._stages.append(stage)
            self._stage_steps.append(range(first, last + 1))

        def close_board(upto: int) -> None:
            if pending:
                add(BoardStage(list(pending), list(factories)), upto - len(pending), upto - 1)
                pending.clear()
                factories.clear()

        for i, step in enumerate(self.steps):
            try:
                self._add_step(i, step, pending, factories, add, close_board)
            except DawsepError as exc:
                exc.step_index = i  # which step: a preset turns it into its key
                raise
        close_board(len(self.steps))
        self._delay_seen = 0  # samples of leading latency already emitted in this stream
        self._channels: int | None = None

    def _add_step(self, i: int, step: Any, pending: list, factories: list, add, close_board) -> None:
        """Build step ``i``: pedalboard plugins join ``pending`` (run as one board), others close it."""
        import pedalboard

        if isinstance(step, BuiltinStep):
            pending.append(make_builtin(step.plugin, step.parameters))
            factories.append(lambda step=step: make_builtin(step.plugin, step.parameters))
        elif isinstance(step, VST3Step):
            plugin = load_vst3(step.path, step.parameters, step.plugin_name)
            if is_mono_only(plugin):
                close_board(i)
                twin = load_vst3(step.path, step.parameters, step.plugin_name)
                add(PerChannelStage([plugin, twin]), i, i)
            else:
                pending.append(plugin)
                factories.append(None)
        elif isinstance(step, ModelStepSpec):
            close_board(i)
            add(ModelStage(build_model_step(step)), i, i)
        elif isinstance(step, pedalboard.Plugin):
            pending.append(step)
            factories.append(None)
        elif isinstance(step, ModelStep):
            close_board(i)
            add(ModelStage(step), i, i)
        else:
            raise PluginError(f"not a chain step: {step!r}")

    def __repr__(self) -> str:
        return f"Chain([{', '.join(self.descriptions)}])"

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def latency_samples(self) -> int:
        """Delay between input and output in streaming use (sum of the steps' latencies)."""
        return sum(s.latency_samples for s in self._stages)

    @property
    def longest_delay_seconds(self) -> float:
        """The longest delay line in the chain (Delay, Chorus, a VST3 delay's time parameter): echoes
        can be this far apart, so :meth:`flush` waits at least this long in silence before it
        decides a tail has ended."""
        plugins = [p for s in self._stages if isinstance(s, BoardStage) for p in s.plugins]
        plugins += [p for s in self._stages if isinstance(s, PerChannelStage) for p in s.instances[:1]]
        return max((delay_seconds(p) for p in plugins), default=0.0)

    @property
    def model_steps(self) -> list:
        """The chain's model steps (ONNX-backed ones expose ``info``, a ``runtime.ModelInfo``)."""
        return [s.step for s in self._stages if isinstance(s, ModelStage)]

    @property
    def model_sample_rates(self) -> set[int]:
        return {int(s.step.sample_rate) for s in self._stages
                if isinstance(s, ModelStage) and s.step.sample_rate}

    def reset(self) -> None:
        """Forget all state (tails, envelopes, model context)."""
        for s in self._stages:
            s.reset()
        self._channels = None

    def process(self, audio: np.ndarray, sample_rate: float, reset: bool = True) -> np.ndarray:
        """Process ``audio`` ``(channels, samples)``.

        ``reset=True``: a whole signal; output is aligned with the input (latency removed) and the
        same length (effect tails beyond the end are cut; see :meth:`render` to keep them).
        ``reset=False``: one block of a stream; output is the same length, delayed by
        :attr:`latency_samples`.
        """
        x = _as_block(audio)
        if reset:
            return self.render(x, sample_rate, keep_tail=False)
        if self._channels is None:
            self._channels = x.shape[0]
        elif x.shape[0] != self._channels:
            raise PluginError(f"stream changed from {self._channels} to {x.shape[0]} channels without reset()")
        for stage, steps in zip(self._stages, self._stage_steps):
            y = stage.process(x, float(sample_rate))
            if not _finite(y):
                self._non_finite(x, steps)
            x = y
        return x

    __call__ = process

    def _non_finite(self, x: np.ndarray, steps: range) -> None:
        if not _finite(x):
            raise PluginError("the audio given to the chain contains NaN or infinite samples")
        if len(steps) == 1:
            which = f"step {steps[0] + 1} ({self.descriptions[steps[0]]})"
        else:
            names = ", ".join(self.descriptions[i].split("(")[0] for i in steps)
            which = f"steps {steps[0] + 1}-{steps[-1] + 1} ({names})"
        raise PluginError(f"{which} produced non-finite samples (NaN or inf): the settings drive the signal "
                          "out of range (too much gain or feedback?)")

    def flush(self, sample_rate: float, tail: bool = True, max_seconds: float = 30.0,
              silence: float = 1e-5) -> np.ndarray:
        """End a stream: feed silence and return what comes out, shape ``(channels, n)``.

        ``tail=False``: exactly :attr:`latency_samples` samples, i.e. the input's last samples.
        ``tail=True``: also the effect tail (reverbs, delays): silence is fed until the output has
        stayed below ``silence`` (linear peak) for longer than the chain's longest delay line
        (:attr:`longest_delay_seconds`, so a later echo is never cut off) and at least 0.1 s, at
        most ``max_seconds``; the tail ends at its last sample at or above ``silence``.
        """
        channels = self._channels or 2
        lat = self.latency_samples
        if not tail:
            if lat <= 0:
                return np.zeros((channels, 0), np.float32)
            return self.process(np.zeros((channels, lat), np.float32), sample_rate, reset=False)
        block = max(1024, int(sample_rate) // 10)
        quiet_needed = max(block, int(math.ceil((1.25 * self.longest_delay_seconds + 0.05) * sample_rate)))
        out: list[np.ndarray] = []
        emitted, limit = 0, int(max_seconds * sample_rate) + lat
        last_loud = 0  # samples emitted up to and including the last one at or above `silence`
        while emitted < limit:
            y = self.process(np.zeros((channels, block), np.float32), sample_rate, reset=False)
            out.append(y)
            loud = np.flatnonzero(np.max(np.abs(y), axis=0, initial=0.0) >= silence)
            if loud.size:
                last_loud = emitted + int(loud[-1]) + 1
            emitted += block
            if emitted >= lat + block and emitted - last_loud >= quiet_needed:
                break
        return np.concatenate(out, axis=1)[:, :max(lat, last_loud)]

    def render(self, audio: np.ndarray, sample_rate: float, keep_tail: bool = False) -> np.ndarray:
        """Whole-signal render, built from the streaming path: reset, one block, flush.

        Model steps that need another rate get the audio resampled to it and back.
        Returns ``(channels, samples)`` aligned with the input; with ``keep_tail`` the effect
        tail after the end is appended.
        """
        x = _as_block(audio)
        rates = self.model_sample_rates
        if rates and rates != {int(sample_rate)}:
            return self._render_resampled(x, sample_rate, keep_tail)
        self.reset()
        n = x.shape[1]
        y = self.process(x, sample_rate, reset=False)
        full = np.concatenate([y, self.flush(sample_rate, tail=keep_tail)], axis=1)[:, self.latency_samples:]
        return full if keep_tail else full[:, :n]

    def _render_resampled(self, x: np.ndarray, sample_rate: float, keep_tail: bool) -> np.ndarray:
        from dawsep import audio as audio_io

        if len(self.model_sample_rates) > 1:
            raise PluginError(f"chain mixes model steps at {sorted(self.model_sample_rates)} Hz; use one rate")
        (rate,) = self.model_sample_rates
        inner = audio_io.resample(x, int(sample_rate), rate)
        y = self.render(inner, rate, keep_tail=keep_tail)
        back = audio_io.resample(y, rate, int(sample_rate))
        if keep_tail:
            return back
        n = x.shape[1]
        if back.shape[1] < n:
            back = np.pad(back, ((0, 0), (0, n - back.shape[1])))
        return back[:, :n]

    def check_sample_rate(self, sample_rate: float) -> None:
        """Raise :class:`PluginError` if a filter frequency is at or above Nyquist."""
        nyquist = sample_rate / 2
        for step in self.steps:
            if isinstance(step, BuiltinStep):
                for key in FREQUENCY_PARAMS:
                    f = step.parameters.get(key)
                    if f is not None and f >= nyquist:
                        raise PluginError(f"{step.plugin}.{key}={f:g} Hz is at or above Nyquist "
                                          f"({nyquist:g} Hz) for {sample_rate:g} Hz audio")


def _finite(a: np.ndarray) -> bool:
    # a float64 sum is finite iff every sample is (float32 cannot overflow it); one pass, no copy
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is the answer, not a warning
        return a.size == 0 or bool(np.isfinite(np.sum(a, dtype=np.float64)))


def _as_block(audio: np.ndarray) -> np.ndarray:
    from dawsep.audio import as_block

    return np.ascontiguousarray(as_block(audio, max_channels=2), dtype=np.float32)
