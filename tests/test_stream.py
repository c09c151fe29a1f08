"""DAW block processors: for any block size (32 … 4096, or changing every call) and host rate,
output == offline result delayed by latency_samples; reset() restores a fresh state; memory flat."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dawsep.errors import PluginError
from dawsep.presets import load_preset
from dawsep.separate import Separator
from dawsep.stream import StreamingChain, StreamingSeparator

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
