"""DAW block processors: for any block size (32 … 4096, or changing every call) and host rate,
output == offline result delayed by latency_samples; reset() restores a fresh state; memory flat."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dawsep.errors import PluginError
from dawsep.presets import load_preset
from dawsep.separate import Separator
from dawsep.stream import RealtimeRunner, StreamingChain, StreamingSeparator

from conftest import with_model

BLOCKS = [[32], [64], [480], [1024], [4096], "random"]


def feed(proc, x, sizes, extra):
    """Push ``x`` then ``extra`` samples of silence in blocks; return the concatenated output."""
    xx = np.concatenate([x, np.zeros((x.shape[0], extra), np.float32)], axis=1)
    rng = np.random.default_rng(0)
    out, pos, i = [], 0, 0
    while pos < xx.shape[1]:
        n = int(rng.integers(1, 2000)) if sizes == "random" else sizes[i % len(sizes)]
        out.append(proc.process(xx[:, pos:pos + n]))
        pos, i = pos + n, i + 1
    return np.concatenate(out, axis=-1)


@pytest.fixture(scope="module")
def sep(tiny_separator):
    return Separator(tiny_separator, threads=1)


def noise(seconds, sr, seed=0, channels=2):
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * sr)))).astype(np.float32)


@pytest.mark.parametrize("sizes", BLOCKS)
@pytest.mark.parametrize("rate", [44100, 48000])
def test_streaming_separator_equals_offline_delayed(sep, sizes, rate):
    x = noise(0.8, rate, seed=1)
    offline = sep.separate(x, rate)
    proc = StreamingSeparator(separator=sep, sample_rate=rate)
    lat, n = proc.latency_samples, x.shape[1]
    y = feed(proc, x, sizes, lat)
    assert y.shape == (5, 2, n + lat)
    assert np.all(y[..., :lat] == 0)
    # At a host rate other than the model's, offline cuts the resampled signal (and the stems) at
    # the file's end, while a stream goes on through the resamplers' ringing: the model's last
    # STFT window (2048 samples, 46 ms) of the stream differs slightly.
    end = n if rate == sep.sample_rate else n - 2048
    for i, stem in enumerate(proc.stems):
        np.testing.assert_allclose(y[i, :, lat:lat + end], offline[stem][:, :end], atol=1e-4)


def test_reset_restores_a_fresh_state_and_mono(sep):
    a, b = noise(0.5, 44100, seed=2), noise(0.5, 44100, seed=3)
    proc = StreamingSeparator(separator=sep)
    fresh = feed(proc, b, [777], proc.latency_samples)
    proc.reset()
    feed(proc, a, [512], 1000)
    proc.reset()
    np.testing.assert_array_equal(feed(proc, b, [777], proc.latency_samples), fresh)
    proc.reset()
    mono = feed(proc, b[:1], [300], proc.latency_samples)
    assert mono.shape == (5, 1, b.shape[1] + proc.latency_samples)


def test_block_limit_and_bad_shapes(sep):
    proc = StreamingSeparator(separator=sep, max_block_size=256)
    with pytest.raises(PluginError, match="max_block_size"):
        proc.process(np.zeros((2, 257), np.float32))
    with pytest.raises(PluginError):
        proc.process(np.zeros((3, 16), np.float32))


def test_memory_does_not_grow_over_a_long_stream(sep):
    proc = StreamingSeparator(separator=sep)
    block = noise(512 / 44100, 44100, seed=4)
    for _ in range(200):  # warm-up: buffers reach their working size
        proc.process(block)
    tracemalloc.start()
    for _ in range(300):
        proc.process(block)
    early, _ = tracemalloc.get_traced_memory()
    for _ in range(1500):  # ~17 s more of audio
        proc.process(block)
    late, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert late - early < 256 * 1024


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("sizes", [[64], [1024], "random"])
def test_streaming_chain_equals_offline_render_delayed(tiny_separator, rate, sizes):
    preset = with_model(load_preset("bass"), tiny_separator)
    x = noise(0.7, rate, seed=5)
    offline = preset.build_chain().render(x, rate)
    proc = StreamingChain(preset, sample_rate=rate)
    lat = proc.latency_samples
    y = feed(proc, x, sizes, lat)
    end = x.shape[1] if rate == 44100 else x.shape[1] - 2048  # see the separator test
    np.testing.assert_allclose(y[:, lat:lat + end], offline[:, :end], atol=1e-4)
    assert np.max(np.abs(y[:, :lat])) < 1e-6


@pytest.mark.parametrize("rate", [16000, 44100])
def test_streaming_transcriber_events_match_offline_notes(tiny_transcriber, rate):
    from dawsep.stream import StreamingTranscriber
    from dawsep.transcribe import DecodeOptions, Transcriber, decode

    t = Transcriber(tiny_transcriber, threads=1, segment_seconds=2.0)
    opts = DecodeOptions(onset_threshold=0.5, frame_threshold=0.45, min_note_ms=40)
    x = noise(3.0, rate, seed=6)
    notes, pedal = decode(t.posteriors(x, rate), t.hop_s, opts, t.min_pitch)
    proc = StreamingTranscriber(transcriber=t, sample_rate=rate, options=opts)
    lat = proc.latency_samples
    xx = np.concatenate([x, np.zeros((2, lat + 4096), np.float32)], axis=1)
    rng = np.random.default_rng(1)
    events, pos = [], 0
    while pos < xx.shape[1]:
        n = int(rng.integers(32, 4096))
        events += [(pos + off - lat, m) for off, m in proc.process(xx[:, pos:pos + n])]
        pos += n
    assert proc.late_events == 0
    horizon = x.shape[1] - rate  # the offline file ends; the stream goes on into silence
    got_on = sorted((p, m.note, m.velocity) for p, m in events if m.type == "note_on" and p < horizon)
    want_on = sorted((round(e.start_s * rate), e.pitch, e.velocity) for e in notes if e.start_s * rate < horizon)
    assert len(want_on) > 5 and got_on == want_on
    got_off = sorted((p, m.note) for p, m in events if m.type == "note_off" and p < horizon)
    want_off = sorted((round(e.end_s * rate), e.pitch) for e in notes if e.end_s * rate < horizon)
    assert got_off == want_off
    got_cc = sorted((p, m.value) for p, m in events if m.type == "control_change" and p < horizon)
    want_cc = sorted([(round(p.start_s * rate), 127) for p in pedal if p.start_s * rate < horizon]
                     + [(round(p.end_s * rate), 0) for p in pedal if p.end_s * rate < horizon])
    assert got_cc == want_cc


# ------------------------------------------------------- worker-thread runner ----

@pytest.mark.parametrize("sizes", [[64], [1024], "random"])
def test_runner_offline_equals_processor_delayed_by_its_buffer(sep, sizes):
    x = noise(0.6, 44100, seed=7)
    ref = feed(StreamingSeparator(separator=sep), x, sizes, 3000)
    with RealtimeRunner(StreamingSeparator(separator=sep), buffer_samples=700, realtime=False) as run:
        assert run.latency_samples == run.processor.latency_samples + 700
        y = feed(run, x, sizes, 3000)
    assert y.shape == ref.shape
    assert np.all(y[..., :700] == 0)
    np.testing.assert_array_equal(y[..., 700:], ref[..., :-700])


def test_runner_chain_and_reset(tiny_separator):
    preset = with_model(load_preset("bass"), tiny_separator)
    x = noise(0.5, 44100, seed=8)
    ref = feed(StreamingChain(preset), x, [512], 1024)
    with RealtimeRunner(StreamingChain(preset), buffer_samples=1024, realtime=False) as run:
        feed(run, noise(0.3, 44100, seed=9), [300], 0)
        run.reset()
        y = feed(run, x, [512], 1024)
        assert run.dropouts == 0
    np.testing.assert_array_equal(y[:, 1024:], ref[:, :-1024])


class _Gated:
    """A processor whose every ``every``-th call stalls until the test opens its gate, as a model
    call stalls once per chunk; the test decides how many host blocks a stall spans, so what drops
    out does not depend on the machine's speed or load."""

    def __init__(self, inner, every=8):
        import threading

        self.inner, self.every, self.calls = inner, every, 0
        self.max_block_size, self.latency_samples = inner.max_block_size, inner.latency_samples
        self.stems = inner.stems
        self.stalled, self.gate = threading.Event(), threading.Event()

    def process(self, block):
        self.calls += 1
        if self.calls % self.every == 0:
            self.stalled.set()
            assert self.gate.wait(30), "the host never got past the stall: process() waited for the worker"
            self.gate.clear()
        return self.inner.process(block)

    def reset(self):
        self.inner.reset()
        self.calls = 0


def test_realtime_runner_never_waits_drops_late_samples_and_keeps_its_latency(sep):
    """Every 8th block stalls the worker for 3 host blocks: process() returns anyway (it would
    deadlock otherwise), exactly those 3 blocks are silence, the late samples are discarded when
    they come, and everything else is the processor's output at the fixed latency."""
    import time

    block, every, span = 256, 8, 3
    x = noise(0.5, 44100, seed=10)
    ref = feed(StreamingSeparator(separator=sep), x, [block], 4096)
    proc = _Gated(StreamingSeparator(separator=sep), every)
    run = RealtimeRunner(proc, buffer_samples=block, realtime=True)

    def caught_up(n):  # the worker has finished (and queued the output of) n blocks
        deadline = time.monotonic() + 30
        while len(run.worker_ms) < n:
            assert time.monotonic() < deadline, "worker stuck"
            time.sleep(0.001)

    try:
        xx = np.concatenate([x, np.zeros((2, 4096), np.float32)], axis=1)
        starts = range(0, xx.shape[1], block)
        out, done, stalls, i = [], 0, 0, 0
        while i < len(starts):
            out.append(run.process(xx[:, starts[i]:starts[i] + block]))
            i += 1
            if proc.stalled.wait(0) if i % every else proc.stalled.wait(30):  # block i-1 stalls
                proc.stalled.clear()
                for _ in range(min(span, len(starts) - i)):  # the host plays on through the stall
                    out.append(run.process(xx[:, starts[i]:starts[i] + block]))
                    i += 1
                proc.gate.set()
                stalls += 1
            caught_up(i)
        y = np.concatenate(out, axis=-1)
        assert stalls == len(starts) // every
        # every sample is either silence (dropped) or exactly the processor's, at the fixed latency
        shifted = ref[..., : y.shape[-1] - block]
        body = y[..., block:]
        same = np.all(body == shifted, axis=(0, 1))
        silent = np.all(body == 0, axis=(0, 1))
        assert np.all(same | silent)
        # the blocks played during each stall, and only those, dropped out: 5 of every 8 got through
        expect = np.ones(len(starts) - 1, bool)
        for s in range(every - 1, len(starts), every):
            expect[s:s + span] = False
        assert run.dropouts == (~expect).sum() and run.dropped_samples == block * run.dropouts
        k = np.arange(len(expect))
        sounding = np.array([np.any(shifted[..., j * block:(j + 1) * block] != 0) for j in k])
        got = np.array([same[j * block:(j + 1) * block].all() for j in k])
        assert sounding.sum() > len(k) // 2
        np.testing.assert_array_equal(got[sounding], expect[sounding])
        assert same[np.any(shifted != 0, axis=(0, 1))].mean() > 0.5
    finally:
        proc.gate.set()
        run.close()


def test_runner_reports_processor_errors_and_rejects_bad_blocks(sep):
    class Broken(_Gated):
        def process(self, block):
            raise PluginError("model failed")

    with RealtimeRunner(StreamingSeparator(separator=sep, max_block_size=512), realtime=False) as run:
        with pytest.raises(PluginError, match="at most 512"):
            run.process(np.zeros((2, 513), np.float32))
        with pytest.raises(PluginError, match="1 or 2 channels"):
            run.process(np.zeros((3, 16), np.float32))
    with RealtimeRunner(Broken(StreamingSeparator(separator=sep)), buffer_samples=0, realtime=False) as run:
        with pytest.raises(PluginError, match="model failed"):  # raised in the worker, surfaced here
            run.process(np.zeros((2, 16), np.float32))


# ------------------------------------------------------------ the host's timeline ----

def bounce(proc, x, start, block, preroll=0, tail=None):
    """A DAW's bounce of ``x`` placed at timeline sample 0, from ``start``: ``preroll`` samples of
    noise with the transport stopped (no position), then ``x[:, start:]`` and the latency's worth
    of silence with positions; the output shifted back by the latency (offline-aligned)."""
    junk = noise(preroll / 44100, 44100, seed=99)
    for i in range(0, preroll, block):
        proc.process(junk[:, i:i + block])  # the pre-roll: whatever comes out is not recorded
    lat = proc.latency_samples
    xx = np.concatenate([x[:, start:], np.zeros((2, lat if tail is None else tail), np.float32)], axis=1)
    y = np.concatenate([proc.process(xx[:, i:i + block], position_samples=start + i)
                        for i in range(0, xx.shape[1], block)], axis=-1)
    return y[..., lat:lat + x.shape[1] - start]


def test_a_bounce_from_the_session_start_equals_offline_after_any_preroll(sep):
    """Chunks follow the timeline, not the last reset: a bounce that starts after a pre-roll (or
    after anything else the processor saw) equals `dawsep separate` of the track; two bounces are equal."""
    x = noise(1.5, 44100, seed=20)
    offline = sep.separate_array(x)
    proc = StreamingSeparator(separator=sep)
    first = bounce(proc, x, 0, 512, preroll=3000)
    np.testing.assert_allclose(first, offline, atol=1e-4)
    second = bounce(proc, x, 0, 441, preroll=7777)  # another pre-roll, another block size
    np.testing.assert_allclose(second, first, atol=1e-6)
    assert proc.jumps == 2  # each bounce's first positioned block restarted the stream
    # the old behaviour, for contrast: chunks counted from the pre-roll's start land elsewhere
    proc.reset()
    drift = feed(proc, np.concatenate([np.zeros((2, 3000), np.float32), x], axis=1), [512], proc.latency_samples)
    drift = drift[..., proc.latency_samples + 3000:proc.latency_samples + 3000 + x.shape[1]]
    assert np.abs(drift - offline).max() > 1e-2


@pytest.mark.parametrize("start", [5000, 20000])
def test_a_bounce_from_a_later_position_cuts_the_tracks_grid(sep, start):
    """Started at ``start``, the stream is the offline separation of the track silenced before it;
    past the first chunk that starts at or after ``start``, the offline separation of the track."""
    x = noise(1.5, 44100, seed=21)
    silenced = x.copy()
    silenced[:, :start] = 0
    proc = StreamingSeparator(separator=sep)
    y = bounce(proc, x, start, 500, preroll=1234)
    np.testing.assert_allclose(y, sep.separate_array(silenced)[..., start:], atol=1e-4)
    hop = sep.segment - sep.overlap
    clean = -(-start // hop) * hop + sep.overlap
    np.testing.assert_allclose(y[..., clean - start:], sep.separate_array(x)[..., clean:], atol=1e-4)


def test_a_jump_restarts_the_stream_there_and_no_position_keeps_todays_behaviour(sep):
    x = noise(1.5, 44100, seed=22)
    lat = StreamingSeparator(separator=sep).latency_samples
    proc = StreamingSeparator(separator=sep)
    for i in range(0, 9000, 600):  # playing from 0 ...
        proc.process(x[:, i:i + 600], position_samples=i)
    assert proc.jumps == 0
    fresh = StreamingSeparator(separator=sep)
    fresh.reset(30000)
    xx = np.concatenate([x[:, 30000:], np.zeros((2, lat), np.float32)], axis=1)
    got, want = [], []
    for i in range(0, xx.shape[1], 600):  # ... then a locate to 30000: as a fresh stream started there
        got.append(proc.process(xx[:, i:i + 600], position_samples=30000 + i))
        want.append(fresh.process(xx[:, i:i + 600]))
    assert proc.jumps == 1
    np.testing.assert_array_equal(np.concatenate(got, axis=-1), np.concatenate(want, axis=-1))
    # without positions (no play head, transport stopped) nothing restarts: chunks count from reset()
    a, b = StreamingSeparator(separator=sep), StreamingSeparator(separator=sep)
    # (b: positions from 0 for the first half, then the transport stops: the stream just goes on)
    ya = feed(a, x, [700], 0)
    yb = np.concatenate([b.process(x[:, i:i + 700], position_samples=i if i < 30000 else None)
                         for i in range(0, x.shape[1], 700)], axis=-1)
    np.testing.assert_array_equal(ya, yb)
    assert np.abs(ya).max() > 0 and b.jumps == 0


# ----------------------------------------------------------- overload of the worker ----

class _Gate:
    """A chain that does nothing until the test opens its gate: a worker as slow as it gets.
    Counts its calls, and the resets the runner makes on it."""

    def __init__(self):
        import threading

        self.open, self.max_block_size, self.latency_samples, self.sample_rate = threading.Event(), 512, 0, 44100
        self.calls = self.resets = 0

    def process(self, block):
        self.open.wait()
        self.calls += 1
        return np.asarray(block, np.float32) * 2.0

    def reset(self):
        self.resets += 1


def test_realtime_runner_queue_is_bounded_under_sustained_overload():
    import time

    gate = _Gate()
    run = RealtimeRunner(gate, buffer_samples=1024, realtime=True, max_pending_samples=4096)
    try:
        x = noise(2.0, 44100, seed=30)
        blocks = [x[:, i:i + 512] for i in range(0, x.shape[1] - 511, 512)]
        run.process(blocks[0])
        while run.pending_samples:  # the worker has taken block 0, and is stuck in it
            time.sleep(0.001)
        most = 0
        for b in blocks[1:]:
            y = run.process(b)
            assert y.shape == (2, 512) and np.all(y == 0)  # nothing ready: silence, never a wait
            most = max(most, run.pending_samples)
        # the queue never grows past the bound: eight blocks fit, the ninth restarts the stream
        assert most == 4096
        restarts = list(range(9, len(blocks), 8))
        assert run.overflows == len(restarts) and run.dropouts > 0
        # The worker recovers: the abandoned blocks are never run, the processor is reset once, and
        # the stream goes on from the block that restarted it, at the runner's fixed latency.
        gate.open.set()
        run.drain()
        assert gate.calls == 1 + len(blocks) - restarts[-1] and gate.resets == 1
        assert len(blocks) - restarts[-1] > 2  # so the buffer's silence has gone out: the next is audio
        y = run.process(np.zeros((2, 512), np.float32))
        np.testing.assert_array_equal(y, 2.0 * blocks[-2])  # 1024 samples (two blocks) of latency
    finally:
        gate.open.set()
        run.close()
