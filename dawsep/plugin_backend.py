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
so no numpy C API is compiled into it, with the block's position on the host's timeline: the
separator's chunks are cut on the timeline's grid (as ``dawsep separate`` cuts the track), and a
block that does not follow the previous one restarts every state there (:mod:`dawsep.stream`).
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
#: the bridge's "no timeline position" (DSB_NO_POSITION in plugin/bridge/dawsep_bridge.h: INT64_MIN)
NO_POSITION = -(2 ** 63)
#: :meth:`PluginBackend.process`'s "at or before the timeline's start, exactly where unknown" (the
#: bridge's ``at_or_before`` flag): a VST3 host's negative project time (a DAW's latency pre-roll
#: before a start at 0) reaches the plugin as 0 (JUCE clamps it). Where such blocks lie is
#: guessed, and checked by the first real position (:meth:`PluginBackend._hold`).
BEFORE_START = NO_POSITION + 1

#: the plugin's model chunk unless configured (``segment_seconds``; a model whose own chunk is
#: shorter keeps its own): the shortest tested that keeps every stem within 0.1 dB of the model's
#: own 10 s chunk on the demo song (default separator, SDR against its true stems, piano / bass /
#: drums / guitar / other; 10 s: -1.61 2.44 3.02 1.67 1.00; 2 s: -1.61 2.42 3.05 1.67 0.97;
#: 1.5 s: drums -0.11 dB; 1 s: drums -0.22 dB; docs/plugin.md). It sets the latency a DAW must
#: compensate: 2.5 s at 44.1 kHz with the worker buffer, where the 10 s chunk needs 12.5 s, more
#: than a DAW's playback buffer (Ardour's is 5 s). ``segment_seconds = model``: the model's chunk.
DEFAULT_SEGMENT_SECONDS = 2.0

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
    """The plugin's processor: ``process((2, n), preset, effects, position_samples) -> (4, n)``.

    ``model`` overrides the presets' separator (default: the model they name, which must be one);
    ``segment_seconds`` sets the model chunk and with it the latency (default:
    :data:`DEFAULT_SEGMENT_SECONDS`, or the model's own chunk if shorter; ``"model"``: the
    model's own chunk, the best quality, for bounces).
    """

    rows = ROWS

    def __init__(self, sample_rate: int = 44100, *, model: str | None = None,
                 segment_seconds: float | str | None = None, threads: int = 1, max_block_size: int = 65536,
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
        # only the presets' stems: a conditioned model (dawsep.stem_input) then runs for those alone
        opts = dict(settings[0], threads=threads, stems=tuple(dict.fromkeys(p.stem for p in self.presets)))
        if segment_seconds == "model":
            self.separator = Separator(**opts)
        elif segment_seconds is not None:
            self.separator = Separator(**opts, segment_seconds=float(segment_seconds))
        else:
            self.separator = Separator(**opts)
            if self.separator.segment > DEFAULT_SEGMENT_SECONDS * self.separator.sample_rate:
                self.separator = Separator(**opts, segment_seconds=DEFAULT_SEGMENT_SECONDS)
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
        self.jumps = 0  # streams restarted because a block's position did not follow the last one
        # blocks held while before the timeline's start: a few latencies' worth (a DAW pre-rolls one)
        self.max_held_samples = 4 * self.latency_samples + self.max_block_size
        self.reset()

    def reset(self, position_samples: int = 0) -> None:
        """A new stream: every state back to silence (a transport jump, a new render), starting at
        ``position_samples`` on the host's timeline."""
        self.stream.reset(position_samples)
        for f, pad in zip(self.fx, self._fx_pad):
            f.reset()
            pad.reset()
        for d in (self._mix, self._raw, self._rest):
            d.reset()
        self.preset = 0
        self._expected: int | None = int(position_samples)  # where the next block continues
        self._held: list[np.ndarray] = []  # blocks at or before the timeline's start, not yet placed
        self._lead_in = False  # the held blocks so far were all digital silence

    def _select(self, preset: int) -> None:
        if not 0 <= preset < len(self.presets):
            raise PluginError(f"preset index {preset} out of range 0..{len(self.presets) - 1}")
        if preset != self.preset:  # the new chain starts from silence, as after a reset
            self.fx[preset].reset()
            self._fx_pad[preset].reset()
            self.preset = preset

    def process(self, block, preset: int = 0, effects: bool = True,
                position_samples: int | None = None) -> np.ndarray:
        """``(2, n)`` host-rate audio -> ``(4, n)``: isolate L/R, remove L/R, delayed by ``latency_samples``.

        ``position_samples``: the block's first sample on the host's timeline (None: unknown, the
        transport stopped or no play head). A position that does not continue the previous block
        resets every state there (counted in ``jumps``), so the chunks fall where they fall offline.
        :data:`BEFORE_START`: somewhere at or before the start (see :meth:`_hold`).
        """
        x = np.asarray(block, np.float32)
        preset = int(preset)
        if position_samples == BEFORE_START:
            return self._hold(x, preset, effects)
        if self._held:
            held, self._held = self._held, []
            if position_samples is not None and int(position_samples) != self._expected:
                return self._place(held, x, preset, effects, int(position_samples))
            # the guess was right (or the transport stopped first): the stream goes on as it is
        if position_samples is not None and int(position_samples) != self._expected:
            self.jumps += 1
            self.reset(int(position_samples))
        self._expected = None if position_samples is None else int(position_samples) + x.shape[-1]
        return self._run(x, preset, effects)

    def _run(self, x: np.ndarray, preset: int, effects: bool) -> np.ndarray:
        self._select(preset)
        stem = self.stream.process(x)[self.stem_index[self.preset]]  # (2, n)
        rest = self._rest.push(self._mix.push(x) - stem)
        raw = self._raw.push(stem)  # always fed, so effects can be switched without a jump
        wet = self._fx_pad[self.preset].push(self.fx[self.preset].process(stem))
        return np.concatenate([wet if effects else raw, rest], axis=0)

    def _hold(self, x: np.ndarray, preset: int, effects: bool) -> np.ndarray:
        """A block at or before the timeline's start, exactly where unknown. The stream is run on
        the guess that the first block with sound (not all digital silence) starts at timeline 0:
        before a start at 0 a DAW pre-rolls a track with silence, then starts reading it at a
        block boundary (Ardour: the pre-roll is the latency rounded up to whole buffers, and the
        track starts rolling exactly its latency before 0, in a block of its own), so on a track
        with sound in its first block the guess holds and the bounce is exact from its first
        sample. The blocks are kept too (bounded), and if the first real position says the guess
        was wrong (a track that starts with a block's worth of digital silence, or a host that
        splits blocks otherwise), :meth:`_place` re-runs them where they lay: exact from that
        block on; what was already played (the blocks' output, and in the plugin the worker's
        buffer) came from the wrong guess."""
        if not self._held:  # a new stream: whatever ran before is over
            self.jumps += 1
            self.reset(0)
            self._lead_in = True  # only digital silence so far
        if self._lead_in and np.any(x != 0):  # the first block with sound: guess it starts at 0
            held = self._held
            self.reset(0)
            self._held = held
        self._held.append(x.copy())
        excess = sum(h.shape[1] for h in self._held) - self.max_held_samples
        while excess > 0:  # a pre-roll longer than any DAW's: keep its end
            cut = min(excess, self._held[0].shape[1])
            self._held[0] = self._held[0][:, cut:]
            self._held = [h for h in self._held if h.shape[1]]
            excess -= cut
        self._expected += x.shape[1]
        return self._run(x, preset, effects)

    def _place(self, held: list[np.ndarray], x: np.ndarray, preset: int, effects: bool, position: int) -> np.ndarray:
        """The first real position after blocks before the start, where the guess was wrong: the
        held blocks lay just before it. The stream restarts where they began and runs them; only
        this block's output is returned (theirs has been played)."""
        self.jumps += 1
        data = np.concatenate(held + [x], axis=1)
        start = position - (data.shape[1] - x.shape[1])
        self.reset(start)
        out = [self.process(data[:, i:i + self.max_block_size], preset, effects, start + i)
               for i in range(0, data.shape[1], self.max_block_size)]
        return np.concatenate(out, axis=1)[:, -x.shape[1]:]

    def process_into(self, inp, out, n: int, preset: int, effects: int, position_samples: int = NO_POSITION,
                     at_or_before: int = 0) -> None:
        """The bridge's call: ``inp`` holds ``n`` interleaved stereo frames, ``out`` gets ``n``
        interleaved 4-row frames (both float32 buffers owned by the C++ worker);
        ``position_samples``: the first frame's timeline position, :data:`NO_POSITION` when the
        host gave none; ``at_or_before`` 1: the frames lie somewhere at or before it (the host said
        0, which may stand for any time before the start), i.e. :data:`BEFORE_START`."""
        # a copy: the worker reuses its buffer, and nothing here may keep a view of it
        x = np.frombuffer(inp, np.float32, count=2 * n).reshape(n, 2).T.copy()
        position = (None if position_samples == NO_POSITION
                    else BEFORE_START if at_or_before else int(position_samples))
        y = self.process(x, preset, bool(effects), position)
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
            "segment_seconds": self.separator.segment / self.separator.sample_rate,
            "model_sample_rate": self.separator.sample_rate,
            "model": self.separator.info.name,
            "presets": [p.name for p in self.presets],
            "stems": list(self.separator.stems),
        })


def create(config_json: str) -> PluginBackend:
    """The bridge's constructor: ``{"sample_rate", "model", "segment_seconds", "threads"}`` (JSON,
    absent, null or 0 keys take the defaults; ``"segment_seconds": "model"`` the model's chunk)."""
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
    if isinstance(seg, str) and seg != "model":
        raise PluginError(f"segment_seconds must be a number of seconds or \"model\", got {seg!r}")
    return PluginBackend(int(cfg.get("sample_rate") or 44100), model=cfg.get("model") or None,
                         segment_seconds=seg if seg == "model" else (float(seg) if seg else None),
                         threads=int(cfg.get("threads") or 1))
