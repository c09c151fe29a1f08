"""Chains: physical assertions on synthetic audio, streaming == offline, VST3 and model steps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dawsep.chain import BuiltinStep, Chain, ModelStepSpec, VST3Step, register_model_step
from dawsep.errors import PluginError
from _models import DelayedGainModel

SR = 44100
VST3_DIR = Path("/usr/lib/vst3")
ZAM_COMP_X2 = VST3_DIR / "ZamCompX2.vst3"  # stereo compressor (Debian zam-plugins)
ZAM_COMP = VST3_DIR / "ZamComp.vst3"  # mono-only compressor
ZAMAXIM_X2 = VST3_DIR / "ZaMaximX2.vst3"  # stereo maximiser reporting 480 samples of latency

needs_zam = pytest.mark.skipif(not ZAM_COMP_X2.exists(), reason="Debian zam-plugins not installed (make sysdeps)")


def sine(freq_hz: float, seconds: float = 1.0, amp: float = 0.5, sr: int = SR, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.tile((amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32), (channels, 1))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def db(ratio: float) -> float:
    return 20 * np.log10(ratio)


def stream(chain: Chain, x: np.ndarray, block: int | list[int], sr: int = SR) -> np.ndarray:
    """Run x through chain block by block, flush the latency, align: comparable to chain(x)."""
    chain.reset()
    sizes = block if isinstance(block, list) else None
    out, i, k = [], 0, 0
    while i < x.shape[1]:
        n = sizes[k % len(sizes)] if sizes else block
        out.append(chain(x[:, i:i + n], sr, reset=False))
        i, k = i + n, k + 1
    lat = chain.latency_samples
    if lat:
        out.append(chain(np.zeros((x.shape[0], lat), np.float32), sr, reset=False))
    return np.concatenate(out, axis=1)[:, lat:lat + x.shape[1]]


def test_highpass_removes_50hz_keeps_1khz():
    chain = Chain([BuiltinStep("HighpassFilter", {"cutoff_frequency_hz": 200.0})])
    low, high = sine(50.0, 2.0), sine(1000.0, 2.0)
    # skip the filter's settling time at the start
    assert db(rms(chain(low, SR)[:, SR // 2:]) / rms(low[:, SR // 2:])) <= -20.0
    assert abs(db(rms(chain(high, SR)[:, SR // 2:]) / rms(high[:, SR // 2:]))) < 0.5


def test_gain_minus_6db_halves_amplitude():
    x = sine(440.0)
    y = Chain([BuiltinStep("Gain", {"gain_db": -6.0})])(x, SR)
    ratio = np.max(np.abs(y)) / np.max(np.abs(x))
    assert ratio == pytest.approx(10 ** (-6 / 20), rel=0.01)
    assert ratio == pytest.approx(0.5, rel=0.01)


def test_compressor_reduces_loud_sine():
    x = sine(440.0, amp=0.9)
    y = Chain([BuiltinStep("Compressor", {"threshold_db": -30.0, "ratio": 8.0, "attack_ms": 1.0})])(x, SR)
    assert rms(y[:, SR // 4:]) < 0.3 * rms(x[:, SR // 4:])


STATEFUL = [
    BuiltinStep("HighpassFilter", {"cutoff_frequency_hz": 120.0}),
    BuiltinStep("Compressor", {"threshold_db": -24.0, "ratio": 4.0}),
    BuiltinStep("Delay", {"delay_seconds": 0.05, "feedback": 0.4, "mix": 0.3}),
    BuiltinStep("Reverb", {"room_size": 0.7, "wet_level": 0.3}),
    BuiltinStep("Limiter", {"threshold_db": -3.0}),
    BuiltinStep("Chorus", {"mix": 0.5}),
    BuiltinStep("Phaser", {}),
]


@pytest.mark.parametrize("block", [1, 511, 4096])
def test_streaming_blocks_equal_whole_file(block):
    rng = np.random.default_rng(block)
    x = (0.2 * rng.standard_normal((2, 3 * SR // 4 if block > 1 else SR // 8))).astype(np.float32)
    chain = Chain(STATEFUL)
    whole = chain(x, SR)
    np.testing.assert_array_equal(stream(chain, x, block), whole)


def test_streaming_changing_block_sizes_equal_whole_file():
    rng = np.random.default_rng(1)
    x = (0.2 * rng.standard_normal((2, SR))).astype(np.float32)
    chain = Chain(STATEFUL)
    whole = chain(x, SR)
    for block in (32, 480, [37, 1024, 16, 9999, 2, 8192, 8193]):
        np.testing.assert_array_equal(stream(chain, x, block), whole)


def test_reset_gives_fresh_state():
    x = sine(300.0, 0.5)
    chain = Chain([BuiltinStep("Chorus", {}), BuiltinStep("Reverb", {"room_size": 0.9})])
    first = chain(x, SR)
    chain(sine(1234.0, 0.3), SR, reset=False)  # leave state behind
    np.testing.assert_array_equal(chain(x, SR), first)


def test_flush_returns_reverb_tail_until_silence():
    x = np.zeros((2, SR // 10), np.float32)
    x[:, 100] = 1.0
    chain = Chain([BuiltinStep("Reverb", {"room_size": 0.8, "wet_level": 0.5})])
    chain.reset()
    chain(x, SR, reset=False)
    tail = chain.flush(SR)
    assert tail.shape[0] == 2 and tail.shape[1] > SR // 10  # the reverb rings on
    assert np.max(np.abs(tail[:, :1000])) > 1e-3
    assert np.max(np.abs(tail[:, -1000:])) < 1e-4  # and the flush ran until it died away
    rendered = chain.render(x, SR, keep_tail=True)
    assert rendered.shape[1] > x.shape[1]
    np.testing.assert_array_equal(rendered[:, :x.shape[1]], chain(x, SR))


def test_mono_input_keeps_shape():
    x = sine(440.0, 0.2, channels=1)
    y = Chain([BuiltinStep("Gain", {"gain_db": 6.0})])(x[0], SR)
    assert y.shape == (1, x.shape[1])


@pytest.mark.parametrize("step,match", [
    (BuiltinStep("Flanger", {}), "unknown plugin 'Flanger'"),
    (BuiltinStep("Gain", {"gain": 3.0}), "no parameter 'gain'; allowed: gain_db"),
    (BuiltinStep("Compressor", {"ratio": 0.5}), r"ratio: 0.5 is out of range; expected a number in \[1, 100\]"),
    (BuiltinStep("Reverb", {"room_size": "big"}), "expected a number"),
    (BuiltinStep("LadderFilter", {"mode": "LPF48"}), "one of LPF12"),
])
def test_builtin_validation_errors(step, match):
    with pytest.raises(PluginError, match=match):
        Chain([step])


def test_filter_above_nyquist_is_reported():
    chain = Chain([BuiltinStep("LowpassFilter", {"cutoff_frequency_hz": 18000.0})])
    chain.check_sample_rate(44100)
    with pytest.raises(PluginError, match="above Nyquist"):
        chain.check_sample_rate(22050)


# ---------------------------------------------------------------------------------- VST3


@needs_zam
def test_vst3_compressor_reduces_level():
    x = sine(440.0, amp=0.5)
    chain = Chain([VST3Step(str(ZAM_COMP_X2), {"threshold_db": -30.0, "ratio": 8.0, "attack_ms": 1.0})])
    y = chain(x, SR)
    assert rms(y[:, SR // 4:]) < 0.2 * rms(x[:, SR // 4:])


@needs_zam
def test_vst3_mixed_with_builtins_streams_like_offline_with_latency():
    rng = np.random.default_rng(7)
    x = (0.3 * rng.standard_normal((2, SR // 2))).astype(np.float32)
    chain = Chain([
        BuiltinStep("HighpassFilter", {"cutoff_frequency_hz": 80.0}),
        VST3Step(str(ZAMAXIM_X2)),
        BuiltinStep("Gain", {"gain_db": -3.0}),
        VST3Step(str(ZAM_COMP_X2), {"threshold_db": -20.0}),
    ])
    assert chain.latency_samples == 480
    assert len(chain._stages) == 1  # built-ins and stereo VST3s run as one pedalboard.Pedalboard
    whole = chain(x, SR)
    assert whole.shape == x.shape and rms(whole) > 0.01
    for block in (511, 4096):
        np.testing.assert_allclose(stream(chain, x, block), whole, atol=1e-6)
    # a raw streamed block really is delayed by the declared latency
    chain.reset()
    impulse = np.zeros((2, 4096), np.float32)
    impulse[:, 1000:1200] = 0.2
    y = chain(impulse, SR, reset=False)
    assert np.all(y[:, :1000 + 480] == 0.0) and np.max(np.abs(y[:, 1480:1700])) > 0.01


@needs_zam
def test_mono_vst3_runs_per_channel():
    x = np.stack([sine(300.0, 0.5, channels=1)[0], 0.1 * sine(300.0, 0.5, channels=1)[0]])
    chain = Chain([VST3Step(str(ZAM_COMP), {"threshold_db": -30.0, "ratio": 10.0, "attack_ms": 1.0})])
    y = chain(x, SR)
    assert y.shape == x.shape
    # the loud channel is compressed, the quiet one (below threshold? no: -26 dBFS) less so
    assert rms(y[0, SR // 4:]) / rms(x[0, SR // 4:]) < rms(y[1, SR // 4:]) / rms(x[1, SR // 4:])
    np.testing.assert_allclose(stream(chain, x, 511), y, atol=1e-6)


@needs_zam
def test_vst3_parameter_errors_name_plugin_and_allowed():
    with pytest.raises(PluginError, match="has no parameter 'treshold'; allowed: .*threshold_db"):
        Chain([VST3Step(str(ZAM_COMP_X2), {"treshold": -3.0})])
    with pytest.raises(PluginError, match=r"threshold_db=10 is out of range \[-80, 0\]"):
        Chain([VST3Step(str(ZAM_COMP_X2), {"threshold_db": 10})])


def test_missing_and_broken_vst3(tmp_path):
    with pytest.raises(PluginError, match="VST3 plugin not found"):
        Chain([VST3Step(str(tmp_path / "Nope.vst3"))])
    broken = tmp_path / "Broken.vst3"
    broken.write_bytes(b"not a plugin")
    with pytest.raises(PluginError, match="cannot load VST3 plugin"):
        Chain([VST3Step(str(broken))])
    so = tmp_path / "plugin.so"
    so.write_bytes(b"\x7fELF")
    with pytest.raises(PluginError, match=r"loads .vst3 bundles only"):
        Chain([VST3Step(str(so))])


# ---------------------------------------------------------------------------- model steps


def test_model_step_in_chain_latency_and_streaming():
    register_model_step("test-delayed-gain", DelayedGainModel)
    chain = Chain([BuiltinStep("Gain", {"gain_db": 6.0}), ModelStepSpec("test-delayed-gain", {"gain": 0.25}),
                   BuiltinStep("HighpassFilter", {"cutoff_frequency_hz": 30.0})])
    assert chain.latency_samples == 64
    x = sine(440.0, 0.5)
    whole = chain(x, SR)
    ref = Chain([BuiltinStep("Gain", {"gain_db": 6.0}), BuiltinStep("Gain", {"gain_db": db(0.25)}),
                 BuiltinStep("HighpassFilter", {"cutoff_frequency_hz": 30.0})])(x, SR)
    np.testing.assert_allclose(whole, ref, atol=1e-5)  # latency removed in the offline render
    for block in (1, 511, [100, 7, 4096]):
        np.testing.assert_allclose(stream(chain, x, block), whole, atol=1e-6)


def test_model_step_at_other_rate_is_resampled_offline():
    pytest.importorskip("dawsep.audio")
    step = DelayedGainModel(gain=1.0, latency=0, sample_rate=22050)
    chain = Chain([step])
    x = sine(440.0, 0.5)
    y = chain(x, SR)
    assert y.shape == x.shape
    assert rms(y[:, 1000:-1000] - x[:, 1000:-1000]) < 0.01 * rms(x)
    with pytest.raises(PluginError, match="runs at 22050 Hz"):
        chain.reset()
        chain(x[:, :512], SR, reset=False)


def test_unknown_model_step():
    with pytest.raises(PluginError, match="unknown model step 'nope'"):
        Chain([ModelStepSpec("nope")])
