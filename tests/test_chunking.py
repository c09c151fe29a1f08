"""The overlap-add engine (numpy models, no ONNX): exact lengths, block-split invariance,
single-coverage regions equal to the model's own output, bounded buffers."""
from __future__ import annotations

import numpy as np
import pytest

from dawsep.chunking import OverlapAdd, trapezoid


def gain_model(batch):
    """Per-stem gains 1, 0.5, -2: linear and time-invariant, so chunking must be invisible."""
    return batch[:, None] * np.array([1.0, 0.5, -2.0], np.float32)[None, :, None, None]


def context_model(batch):
    """Output depends on the whole segment (its mean and energy): chunking is visible."""
    m = batch.mean(axis=-1, keepdims=True)
    e = np.sqrt((batch ** 2).mean(axis=(1, 2), keepdims=True))
    y = np.stack([batch * e[:, :, :1] + m, batch - m], axis=1)
    return y.astype(np.float32)


def run_blocks(engine, x, sizes):
    out, pos, i = [], 0, 0
    while pos < x.shape[1]:
        n = sizes[i % len(sizes)]
        out.append(engine.push(x[:, pos:pos + n]))
        pos, i = pos + n, i + 1
    out.append(engine.flush())
    return np.concatenate(out, axis=2)


@pytest.mark.parametrize("n", [0, 1, 99, 100, 250, 1000, 1001, 12345])
def test_linear_model_is_reproduced_exactly_for_any_length(n):
    x = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)
    eng = OverlapAdd(gain_model, segment=100, overlap=30, channels=2, n_out=3)
    y = run_blocks(eng, x, [37])
    assert y.shape == (3, 2, n)
    np.testing.assert_allclose(y, gain_model(x[None])[0], atol=1e-5)


@pytest.mark.parametrize("overlap", [0, 1, 25, 99])
def test_any_block_split_equals_whole(overlap):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3333)).astype(np.float32)
    eng = OverlapAdd(context_model, segment=100, overlap=overlap, channels=2, n_out=2, batch_size=3)
    whole = np.concatenate([eng.push(x), eng.flush()], axis=2)
    for sizes in ([1], [7, 400, 1], list(rng.integers(1, 300, 50))):
        np.testing.assert_array_equal(run_blocks(eng, x, sizes), whole)


def test_single_coverage_region_is_the_segment_output():
    """Samples only one segment covers equal that segment's model output (cross-fade ÷ weights)."""
    x = np.random.default_rng(2).standard_normal((2, 1000)).astype(np.float32)
    seg, ov = 200, 50
    eng = OverlapAdd(context_model, segment=seg, overlap=ov, channels=2, n_out=2)
    y = np.concatenate([eng.push(x), eng.flush()], axis=2)
    first = context_model(x[None, :, :seg])[0]
    np.testing.assert_allclose(y[..., :seg - ov], first[..., :seg - ov], atol=1e-6)
    hop = seg - ov
    second = context_model(x[None, :, hop:hop + seg])[0]
    np.testing.assert_allclose(y[..., seg:hop + seg - ov], second[..., ov:seg - ov], atol=1e-6)
    # where two overlap the result lies between them (a convex cross-fade)
    lo, hi = np.minimum(first[..., hop:], second[..., :ov]), np.maximum(first[..., hop:], second[..., :ov])
    assert np.all(y[..., hop:seg] >= lo - 1e-6) and np.all(y[..., hop:seg] <= hi + 1e-6)


def test_output_lags_input_by_at_most_max_delay_and_buffers_stay_bounded():
    eng = OverlapAdd(gain_model, segment=256, overlap=64, channels=2, n_out=3)
    pushed = popped = 0
    rng = np.random.default_rng(3)
    for _ in range(2000):
        n = int(rng.integers(1, 600))
        popped += eng.push(np.ones((2, n), np.float32)).shape[2]
        pushed += n
        assert 0 <= pushed - popped <= eng.max_delay
        assert eng._in.shape[1] <= 256 + 600 and eng._acc.shape[2] <= 2 * 256
    assert popped + eng.flush().shape[2] == pushed


def test_window_positive_and_flat_in_the_middle():
    w = trapezoid(100, 20)
    assert w.min() > 0 and w.max() == 1.0 and np.all(w[25:75] == 1.0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        OverlapAdd(gain_model, segment=100, overlap=100, channels=2, n_out=3)
    eng = OverlapAdd(gain_model, segment=100, overlap=10, channels=2, n_out=3)
    with pytest.raises(ValueError):
        eng.push(np.zeros((1, 10), np.float32))
    bad = OverlapAdd(lambda b: b, segment=100, overlap=10, channels=2, n_out=3)
    with pytest.raises(ValueError, match="model returned"):
        bad.push(np.zeros((2, 100), np.float32))


# ------------------------------------------------------------------ overlap-discard (frames)
from dawsep.chunking import OverlapDiscard  # noqa: E402

HOP = 10


def frame_energy_model(batch):
    """Per-frame mean and energy, plus the segment's overall mean (context-dependent)."""
    b, n = batch.shape
    f = batch.reshape(b, n // HOP, HOP)
    ctx = batch.mean(axis=1, keepdims=True)[:, :, None] * np.ones((1, n // HOP, 1), np.float32)
    return np.concatenate([f.mean(-1, keepdims=True), (f ** 2).mean(-1, keepdims=True), ctx], axis=-1)


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 399, 400, 4321])
def test_overlap_discard_frame_count_and_local_features(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    eng = OverlapDiscard(frame_energy_model, segment=200, hop=HOP, context=3, dims=3)
    out = [eng.push(x[i:i + 77]) for i in range(0, n, 77)] + [eng.flush()]
    y = np.concatenate(out)
    frames = -(-n // HOP)
    assert y.shape == (frames, 3)
    padded = np.pad(x, (0, frames * HOP - n)).reshape(frames, HOP)
    np.testing.assert_allclose(y[:, 0], padded.mean(-1), atol=1e-6)  # frame-local features exact
    np.testing.assert_allclose(y[:, 1], (padded ** 2).mean(-1), atol=1e-6)


def test_overlap_discard_block_split_invariance_and_delay():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(5000).astype(np.float32)
    eng = OverlapDiscard(frame_energy_model, segment=200, hop=HOP, context=4, dims=3)
    whole = np.concatenate([eng.push(x), eng.flush()])
    pushed = got = 0
    parts = []
    for n in rng.integers(1, 150, 200):
        chunk = x[pushed:pushed + n]
        if not len(chunk):
            break
        parts.append(eng.push(chunk))
        pushed += len(chunk)
        got += len(parts[-1])
        assert pushed - got * HOP <= eng.max_delay
    parts.append(eng.push(x[pushed:]))
    parts.append(eng.flush())
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("position", [0, 1, 69, 70, 99, 100, 171, 1000, 2345])
def test_a_stream_started_at_a_timeline_position_cuts_the_offline_grid(position):
    """reset(position): the chunks fall where the offline call on the whole signal puts them, so the
    stream equals the offline result of the signal silenced before ``position`` (and, from the
    first segment that starts at or after ``position``, the offline result of the signal itself)."""
    x = np.random.default_rng(position).standard_normal((2, 3000)).astype(np.float32)
    seg, ov = 100, 30
    eng = OverlapAdd(context_model, segment=seg, overlap=ov, channels=2, n_out=2)
    silenced = x.copy()
    silenced[:, :position] = 0
    want = np.concatenate([eng.push(silenced), eng.flush()], axis=2)[..., position:]
    whole = np.concatenate([eng.push(x), eng.flush()], axis=2)
    for sizes in ([1000], [7, 400, 1], [33]):
        eng.reset(position)
        got = run_blocks(eng, x[:, position:], sizes)
        assert got.shape == (2, 2, 3000 - position)
        np.testing.assert_array_equal(got, want)
    # unless the grid were anchored to the stream's first sample, a later start would change these
    clean = -(-position // (seg - ov)) * (seg - ov) + ov - position  # past every segment that saw silence
    np.testing.assert_allclose(got[..., clean:], whole[..., position + clean:], atol=1e-6)
    if position % (seg - ov):
        eng.reset()  # the old behaviour: chunks counted from the stream's first sample
        assert not np.allclose(run_blocks(eng, x[:, position:], [1000])[..., clean:], whole[..., position + clean:],
                               atol=1e-3)


def test_a_stream_started_before_the_signal_answers_the_lead_in_with_silence():
    x = np.random.default_rng(5).standard_normal((2, 1500)).astype(np.float32)
    eng = OverlapAdd(context_model, segment=100, overlap=30, channels=2, n_out=2)
    whole = np.concatenate([eng.push(x), eng.flush()], axis=2)
    lead = np.random.default_rng(6).standard_normal((2, 257)).astype(np.float32)  # never part of a segment
    for sizes in ([100], [1], [300, 7]):
        eng.reset(-257)
        got = run_blocks(eng, np.concatenate([lead, x], axis=1), sizes)
        np.testing.assert_array_equal(got[..., :257], 0)
        np.testing.assert_array_equal(got[..., 257:], whole)


def test_anchored_stream_keeps_the_delay_bound():
    eng = OverlapAdd(gain_model, segment=256, overlap=64, channels=2, n_out=3)
    for position in (0, 5, 191, 192, 10_000_001):
        eng.reset(position)
        pushed = popped = 0
        for n in np.random.default_rng(position % 97).integers(1, 600, 200):
            popped += eng.push(np.ones((2, int(n)), np.float32)).shape[2]
            pushed += int(n)
            assert 0 <= pushed - popped <= eng.max_delay
        assert popped + eng.flush().shape[2] == pushed


def test_overlap_discard_short_tail_cuts_only_the_last_segment():
    """With ``short_tail`` the flush's last model call covers the frames still owed plus the
    context on both sides, not a whole segment; every frame-local output is unchanged."""
    calls = []

    def model(batch):
        calls.append(batch.shape[1])
        return frame_energy_model(batch)

    x = np.random.default_rng(3).standard_normal(1234).astype(np.float32)
    full = OverlapDiscard(frame_energy_model, segment=400, hop=HOP, context=3, dims=3)
    short = OverlapDiscard(model, segment=400, hop=HOP, context=3, dims=3, short_tail=True)
    a = np.concatenate([full.push(x), full.flush()])
    b = np.concatenate([short.push(x[:700]), short.push(x[700:]), short.flush()])
    assert a.shape == b.shape == (124, 3)
    np.testing.assert_allclose(b[:, :2], a[:, :2], atol=1e-6)  # frame-local features: exact
    # keep = 34 frames per call: 3 whole calls (102 frames), then 22 owed + 2 x 3 context frames
    assert calls == [400, 400, 400, (22 + 6) * HOP]
    # and a short input costs one short call, not a whole segment
    calls.clear()
    y = np.concatenate([short.push(x[:55]), short.flush()])
    assert y.shape == (6, 3) and calls == [(6 + 6) * HOP]
