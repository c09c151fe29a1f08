"""What the dawsep VST3 plugin (``plugin/``) runs on its worker thread.

The C++ shell owns real time: FIFOs, the declared latency, underruns, bypass and the per-sample
gain/mix ramps. Everything that is audio logic lives here, where it is testable without a host:
one :class:`~dawsep.stream.StreamingSeparator` for all presets (they share the model), each
preset's effect chain as a :class:`~dawsep.stream.StreamingChain` at the host rate, and two
stereo outputs per sample:

- *isolate*: the preset's stem, through the preset's chain when ``effects`` is on;
- *remove*: the mixture minus the stem (the input delayed like the stem, minus it), so whatever
  the model does not model (bands it drops, rates above its Nyquist) stays in the rest.

The shell blends them per sample: ``out = (1 - mix) * gain * isolate + mix * remove``
(:func:`blend` is the reference). Both rows are delayed by :attr:`PluginBackend.latency_samples`
whatever the preset, so switching presets, effects or mix never moves the latency.

The bridge passes interleaved float32 frames as memoryviews (:meth:`PluginBackend.process_into`),
so no numpy C API is compiled into it.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from dawsep.errors import PluginError

#: the plugin's Preset parameter, in this order (the shell's choice list must match)
PRESETS = ("piano", "bass", "drums", "guitar", "other")
ROWS = 4  # isolate L, R, remove L, R

#: the worker's buffer covers this fraction of a model chunk: one chunk's model call lands inside
#: a single block, and measured per-thread speeds of the shipped models are >= 10x real time, so a
#: quarter chunk of buffered audio leaves the worker a 2.5x margin for the worst call
CHUNK_BUFFER_FRACTION = 0.25
#: and at least this much (two 2048-sample blocks at 44.1 kHz): a real-time host's block must fit
#: in the buffer, or every block misses its deadline
MIN_BUFFER_SECONDS = 4096 / 44100


class _Delay:
    """Fixed delay line: ``push(x)`` returns ``x`` delayed by ``n`` samples (starts silent)."""

    def __init__(self, rows: int, n: int):
        self.rows, self.n = rows, int(n)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros((self.rows, self.n), np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        if not self.n:
            return x
        joined = np.concatenate([self._buf, x], axis=1)
        self._buf = joined[:, x.shape[1]:]
        return joined[:, :x.shape[1]]


def blend(rows: np.ndarray, gain_db: float = 0.0, mix: float = 0.0) -> np.ndarray:
    """The shell's output for constant parameters: ``(4, n)`` rows -> ``(2, n)``.

    ``mix`` 0 isolates the stem (times ``gain_db``), 1 removes it; in between it rebalances the
    stem inside the mixture (at 0.5 and +6 dB: the mixture at half level with the stem 6 dB up).
    """
    g = 10.0 ** (gain_db / 20.0)
    return ((1.0 - mix) * g * rows[:2] + mix * rows[2:]).astype(np.float32)


def worker_buffer_samples(segment_samples: int, model_rate: int, host_rate: int,
                          buffer_ms: float | None = None) -> int:
    """Samples of audio the worker keeps queued ahead of the audio thread (added to the latency).

    Default: :data:`CHUNK_BUFFER_FRACTION` of a model chunk, at least :data:`MIN_BUFFER_SECONDS`
    (host samples); ``buffer_ms`` overrides. It does not depend on the host's block size: VST3
    hosts may read the latency before they tell the plugin their block size (JUCE's hosting,
    pedalboard), so a latency that moved with it would be reported stale.
    """
    if buffer_ms is not None:
        if not (buffer_ms >= 0 and math.isfinite(buffer_ms)):
            raise PluginError(f"buffer_ms must be a number >= 0, got {buffer_ms!r}")
        return int(math.ceil(buffer_ms * host_rate / 1000.0))
    want = max(CHUNK_BUFFER_FRACTION * segment_samples * host_rate / model_rate, MIN_BUFFER_SECONDS * host_rate)
    return int(math.ceil(want))


class PluginBackend:
    """The plugin's processor: ``process((2, n), preset, effects) -> (4, n)``.

    ``model`` overrides the presets' separator (default: the model they name, which must be one);
    ``segment_seconds`` sets the model chunk and with it the latency (default: the model's).
    """

    rows = ROWS

    def __init__(self, sample_rate: int = 44100, *, model: str | None = None,
                 segment_seconds: float | None = None, threads: int = 1, max_block_size: int = 65536,
                 presets=PRESETS):
        from dawsep.chain import Chain
        from dawsep.presets import load_preset
        from dawsep.separate import Separator
        from dawsep.stream import StreamingChain, StreamingSeparator

        self.presets = [load_preset(p) for p in presets]
        # One separator serves every preset, so their [separate] settings besides the stem (the
        # model, and whatever else a preset may set) must agree; ``model`` overrides theirs.
        settings = []
        for p in self.presets:
            opts = dataclasses.asdict(p.separate) if p.separate is not None else {}
            opts.pop("stem", None)
            if model is not None:
                opts["model"] = model
            if opts and opts not in settings:
                settings.append(opts)
        if not settings:
            raise PluginError("no preset has a [separate] section: the plugin needs a separator")
        if len(settings) > 1:
            raise PluginError(f"the presets' [separate] settings differ ({settings}); the plugin runs one "
                              "separator for all of them: set one model, or make them agree")
        self.sample_rate = int(sample_rate)
        self.max_block_size = int(max_block_size)
        self.separator = Separator(**settings[0], segment_seconds=segment_seconds, threads=threads)
        self.stream = StreamingSeparator(separator=self.separator, max_block_size=self.max_block_size,
                                         sample_rate=self.sample_rate)
        self.stem_index = [self.separator.stem_index(p.stem) for p in self.presets]
        self.fx = []
        for p in self.presets:
            chain = Chain(p.chain)
            try:
                chain.check_sample_rate(self.sample_rate)
            except PluginError as exc:
                raise PluginError(f"preset {p.name!r} at {self.sample_rate} Hz: {exc}") from None
            self.fx.append(StreamingChain(chain, self.max_block_size, sample_rate=self.sample_rate))
        # every path is padded to the slowest chain, so the latency is the same for all presets
        self.fx_latency = max(f.latency_samples for f in self.fx)
        self._fx_pad = [_Delay(2, self.fx_latency - f.latency_samples) for f in self.fx]
        self._mix = _Delay(2, self.stream.latency_samples)  # the input, aligned with the stems
        self._raw = _Delay(2, self.fx_latency)
        self._rest = _Delay(2, self.fx_latency)
        self.latency_samples = self.stream.latency_samples + self.fx_latency
        self.reset()

    def reset(self) -> None:
        """A new stream: every state back to silence (a transport jump, a new render)."""
        self.stream.reset()
        for f, pad in zip(self.fx, self._fx_pad):
            f.reset()
            pad.reset()
        for d in (self._mix, self._raw, self._rest):
            d.reset()
        self.preset = 0

    def _select(self, preset: int) -> None:
        if not 0 <= preset < len(self.presets):
            raise PluginError(f"preset index {preset} out of range 0..{len(self.presets) - 1}")
        if preset != self.preset:  # the new chain starts from silence, as after a reset
            self.fx[preset].reset()
            self._fx_pad[preset].reset()
            self.preset = preset

    def process(self, block, preset: int = 0, effects: bool = True) -> np.ndarray:
        """``(2, n)`` host-rate audio -> ``(4, n)``: isolate L/R, remove L/R, delayed by ``latency_samples``."""
        self._select(int(preset))
        x = np.asarray(block, np.float32)
        stem = self.stream.process(x)[self.stem_index[self.preset]]  # (2, n)
        rest = self._rest.push(self._mix.push(x) - stem)
        raw = self._raw.push(stem)  # always fed, so effects can be switched without a jump
        wet = self._fx_pad[self.preset].push(self.fx[self.preset].process(stem))
        return np.concatenate([wet if effects else raw, rest], axis=0)

    def process_into(self, inp, out, n: int, preset: int, effects: int) -> None:
        """The bridge's call: ``inp`` holds ``n`` interleaved stereo frames, ``out`` gets ``n``
        interleaved 4-row frames (both float32 buffers owned by the C++ worker)."""
        # a copy: the worker reuses its buffer, and nothing here may keep a view of it
        x = np.frombuffer(inp, np.float32, count=2 * n).reshape(n, 2).T.copy()
        y = self.process(x, preset, bool(effects))
        np.frombuffer(out, np.float32, count=ROWS * n).reshape(n, ROWS)[:] = y.T

    def info(self, buffer_ms: float | None = None) -> str:
        """JSON for the shell: latencies (host samples), the worker buffer, names."""
        buffer = worker_buffer_samples(self.separator.segment, self.separator.sample_rate, self.sample_rate,
                                       buffer_ms)
        return json.dumps({
            "model_latency_samples": self.latency_samples,
            "buffer_samples": buffer,
            "latency_samples": self.latency_samples + buffer,
            "segment_samples": self.separator.segment,
            "model_sample_rate": self.separator.sample_rate,
            "model": self.separator.info.name,
            "presets": [p.name for p in self.presets],
            "stems": list(self.separator.stems),
        })


def create(config_json: str) -> PluginBackend:
    """The bridge's constructor: ``{"sample_rate", "model", "segment_seconds", "threads"}`` (JSON,
    absent or null keys take the defaults)."""
    try:
        cfg = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise PluginError(f"plugin configuration is not JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise PluginError("plugin configuration must be a JSON object")
    unknown = set(cfg) - {"sample_rate", "model", "segment_seconds", "threads"}
    if unknown:
        raise PluginError(f"unknown plugin configuration keys: {', '.join(sorted(unknown))}")
    seg = cfg.get("segment_seconds")
    return PluginBackend(int(cfg.get("sample_rate") or 44100), model=cfg.get("model") or None,
                         segment_seconds=float(seg) if seg else None, threads=int(cfg.get("threads") or 1))
