"""The VST3 plugin (plugin/, built once by `make plugin`, which `make test` depends on).

Inside pedalboard (a Python host: the plugin reuses this interpreter) and inside dawsep-vst3-host
(no Python: the plugin starts its own from the configured environment), the plugin's output is
dawsep's streaming output delayed by the latency it reports, for any block size; a wrong
environment gives a passthrough plugin that says why; state survives a save and a fresh load.
Tests use the tiny fixture separator (DAWSEP_PLUGIN_MODEL); the default model is the same code.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dawsep.errors import PluginError
from dawsep.plugin_backend import (BEFORE_START, DEFAULT_SEGMENT_SECONDS, MIN_BUFFER_SECONDS, NO_POSITION, PRESETS,
                                   PluginBackend, blend, create, worker_buffer_samples)
from dawsep.presets import load_preset
from dawsep.separate import Separator
from dawsep.stream import StreamingChain, StreamingSeparator

from conftest import with_model

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "build" / "dawsep.vst3"
HOST = ROOT / "build" / "dawsep-vst3-host"
SR = 44100


@pytest.fixture(scope="module")
def built():
    # No skip: CI builds the plugin through `make test`; a missing build is a failure to see.
    missing = [str(p) for p in (BUNDLE, HOST) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make plugin` (make test builds it)")
    return BUNDLE


@pytest.fixture(scope="module")
def song():
    x, sr = sf.read(ROOT / "demo" / "demo_song.flac", dtype="float32", start=5 * SR, frames=2 * SR)
    assert sr == SR
    return np.ascontiguousarray(x.T)


@pytest.fixture(scope="module")
def sep(tiny_separator):
    return Separator(tiny_separator, threads=1)


def aligned(proc, x: np.ndarray) -> np.ndarray:
    """``proc``'s stream over ``x`` (then silence), shifted back by its latency: offline-aligned."""
    lat, n = proc.latency_samples, x.shape[1]
    xx = np.concatenate([x, np.zeros((x.shape[0], lat + 1000), np.float32)], axis=1)
    y = np.concatenate([proc.process(xx[:, i:i + 1000]) for i in range(0, xx.shape[1], 1000)], axis=-1)
    return y[..., lat:lat + n]


@pytest.fixture(scope="module")
def stems(sep, song):
    return aligned(StreamingSeparator(separator=sep), song)  # (5, 2, n)


@pytest.fixture(scope="module")
def plugin_env(tiny_separator, tmp_path_factory):
    log = tmp_path_factory.mktemp("plugin") / "plugin.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAWSEP_PLUGIN_MODEL", tiny_separator)
        mp.setenv("DAWSEP_PLUGIN_LOG", str(log))
        yield log


@pytest.fixture
def load(built, plugin_env):
    """pedalboard instances of the plugin, released before the test ends (joins their workers)."""
    import pedalboard

    made = []

    def _load():
        made.append(pedalboard.load_plugin(str(built)))
        return made[-1]

    yield _load
    made.clear()
    gc.collect()


# ------------------------------------------------------------------ the Python side ----

def test_backend_latency_is_the_same_for_every_preset_and_switching_is_seamless(tiny_separator, song, stems):
    b = PluginBackend(SR, model=tiny_separator)
    assert b.latency_samples == StreamingSeparator(separator=Separator(tiny_separator)).latency_samples
    info = json.loads(b.info())
    assert info["latency_samples"] == b.latency_samples + info["buffer_samples"]
    assert info["presets"] == list(PRESETS)
    # bass for the first half, drums after: each half is that stem, at the same latency
    lat, n, half = b.latency_samples, song.shape[1], 44100
    xx = np.concatenate([song, np.zeros((2, lat), np.float32)], axis=1)
    out = [b.process(xx[:, i:i + 700], 1 if i < half + lat else 2, False) for i in range(0, xx.shape[1], 700)]
    y = np.concatenate(out, axis=1)[:, lat:lat + n]
    switch = (half + lat) // 700 * 700 + 700 - lat  # first output sample after the switch block
    np.testing.assert_allclose(y[:2, :half - 700], stems[1][:, :half - 700], atol=1e-6)
    np.testing.assert_allclose(y[:2, switch:], stems[2][:, switch:], atol=1e-6)
    np.testing.assert_allclose(y[2:, switch:], song[:, switch:] - stems[2][:, switch:], atol=1e-6)


def test_worker_buffer_and_configuration_errors(tiny_separator, tmp_path):
    assert worker_buffer_samples(440320, 44100, 44100) == 110080  # a quarter chunk
    assert worker_buffer_samples(11008, 44100, 44100) == int(np.ceil(MIN_BUFFER_SECONDS * 44100))
    assert worker_buffer_samples(11008, 44100, 48000, buffer_ms=10) == 480
    with pytest.raises(PluginError, match="buffer_ms"):
        worker_buffer_samples(11008, 44100, 44100, buffer_ms=-1)
    with pytest.raises(PluginError, match="unknown plugin configuration keys: colour"):
        create(json.dumps({"model": tiny_separator, "colour": "red"}))
    with pytest.raises(PluginError, match="not JSON"):
        create("{")
    assert create(json.dumps({"model": tiny_separator, "sample_rate": 48000})).sample_rate == 48000
    with pytest.raises(PluginError, match="at 8000 Hz"):  # the piano preset's 8 kHz shelf
        PluginBackend(8000, model=tiny_separator)
    for name, model in (("a", tiny_separator), ("b", "unet")):
        (tmp_path / f"{name}.toml").write_text(f'[separate]\nstem = "bass"\nmodel = "{model}"\n')
    presets = [str(tmp_path / "a.toml"), str(tmp_path / "b.toml")]
    with pytest.raises(PluginError, match="settings differ"):  # one separator serves all presets
        PluginBackend(SR, presets=presets)
    assert PluginBackend(SR, model=tiny_separator, presets=presets).latency_samples > 0  # unless overridden


def test_backend_bounce_follows_the_timeline_not_the_last_reset(tiny_separator, sep, song):
    """A bounce from the session start equals the offline stems whatever the plugin saw before
    (a pre-roll, another position); two bounces are equal; a jump restarts every state."""
    b = PluginBackend(SR, model=tiny_separator)
    lat, n = b.latency_samples, song.shape[1]
    stem = sep.separate_array(song)[sep.stem_index("bass")]
    xx = np.concatenate([song, np.zeros((2, lat), np.float32)], axis=1)

    def bounce(block, preroll):
        junk = np.random.default_rng(preroll).standard_normal((2, preroll)).astype(np.float32)
        for i in range(0, preroll, block):  # transport stopped: no position
            b.process(junk[:, i:i + block], 1, False, None)
        return np.concatenate([b.process(xx[:, i:i + block], 1, False, i) for i in range(0, xx.shape[1], block)],
                              axis=1)[:, lat:lat + n]

    first = bounce(512, 5000)
    np.testing.assert_allclose(first[:2], stem, atol=1e-4)
    np.testing.assert_allclose(first[2:], song - stem, atol=1e-4)
    np.testing.assert_array_equal(bounce(300, 777), first)
    assert b.jumps == 2
    # the bridge's entry point: interleaved frames and the bridge's no-position value
    out = np.zeros(4 * 64, np.float32)
    b.process_into(np.zeros(2 * 64, np.float32), out, 64, 1, 0, NO_POSITION)
    b.process_into(np.zeros(2 * 64, np.float32), out, 64, 1, 0, 10 * SR)
    assert b.jumps == 3 and b.preset == 1
    out[:] = 1
    b.process_into(np.ones(2 * 64, np.float32), out, 64, 1, 0, 0, 1)  # the bridge's "at or before 0"
    assert b.jumps == 4 and np.all(out == 0)  # a new stream, held: silence


@pytest.mark.parametrize("before, quiet", [(0, 0), (1000, 0), (7000, 0), (1000, 300), (1000, 700), (1111, 0)])
def test_backend_places_blocks_from_before_the_start_by_the_first_real_position(tiny_separator, sep, song, before,
                                                                                 quiet):
    """A DAW's pre-roll before a start at 0 arrives with no usable position (JUCE reports negative
    times as 0): ``before`` samples of silence, then the track, which starts with ``quiet``
    samples of digital silence. Run on the guess that the first block with sound starts at 0, the
    bounce is exact from its first sample; when the guess is wrong (a silent first block, a track
    that starts inside a block), the first real position re-places the stream: exact from there."""
    b = PluginBackend(SR, model=tiny_separator)
    lat, n = b.latency_samples, song.shape[1]
    track = song.copy()
    track[:, :quiet] = 0
    pad = np.concatenate([np.zeros((2, before), np.float32), track, np.zeros((2, lat), np.float32)], axis=1)
    # Ardour reports where a block's output is heard: its input's position minus the latency, so
    # every block whose input starts at or before `lat` says 0 (JUCE's clamp): before the start
    starts = range(0, pad.shape[1], 500)
    out = [b.process(pad[:, i:i + 500], 1, False, BEFORE_START if i - before <= lat else i - before) for i in starts]
    y = np.concatenate(out, axis=1)[:, before + lat:before + lat + n]
    stem = sep.separate_array(track)[sep.stem_index("bass")]
    first = next(i for i in starts if i - before > lat) - before - lat  # output index of the first placed block
    wrong = (before + quiet) // 500 * 500 != before  # where the first block with sound starts
    exact = first if wrong else 0
    np.testing.assert_allclose(y[:2, exact:], stem[:, exact:], atol=1e-4)
    np.testing.assert_allclose(y[2:, exact:], (track - stem)[:, exact:], atol=1e-4)
    assert b.jumps == (2 if wrong else 1)  # the new stream; a wrong guess re-placed
    if wrong and np.any(track[:, :first]):  # the guess put the track elsewhere: what was played before the fix is off
        assert np.abs(y[:2, :first] - stem[:, :first]).max() > 1e-3


def test_default_chunk_is_the_short_one_and_the_models_is_an_option(tiny_separator):
    long = PluginBackend(SR, segment_seconds="model")  # the packaged default: its own 10 s chunk
    short = PluginBackend(SR)
    assert long.separator.segment == long.separator.info.segment_samples > DEFAULT_SEGMENT_SECONDS * SR
    assert short.separator.segment == round(DEFAULT_SEGMENT_SECONDS * SR)
    assert json.loads(short.info())["latency_samples"] == 110249  # 2.5 s: what docs/plugin.md states
    assert json.loads(long.info())["latency_samples"] == 550399
    tiny = PluginBackend(SR, model=tiny_separator)  # a model whose own chunk is shorter keeps it
    assert tiny.separator.segment == Separator(tiny_separator).segment < DEFAULT_SEGMENT_SECONDS * SR
    assert create(json.dumps({"segment_seconds": "model", "model": tiny_separator})).separator.segment \
        == tiny.separator.segment
    assert create(json.dumps({"segment_seconds": 0.5, "model": tiny_separator})).separator.segment == SR // 2
    with pytest.raises(PluginError, match="segment_seconds must be a number of seconds or \"model\""):
        create(json.dumps({"segment_seconds": "long"}))


# ---------------------------------------------------------- pedalboard (a Python host) ----

def test_pedalboard_lists_the_parameters(load):
    p = load()
    assert list(p.parameters) == ["preset", "stem_gain_db", "mix", "effects", "bypass", "status"]
    assert list(p.parameters["preset"].valid_values) == list(PRESETS)
    assert (p.parameters["stem_gain_db"].range, p.parameters["mix"].range) == ((-48.0, 12.0, 0.1), (0.0, 100.0, 0.1))
    assert not p.parameters["status"].is_automatable and p.parameters["preset"].is_automatable
    p(np.zeros((2, 1024), np.float32), SR)
    status = p.parameters["status"].string_value
    assert status.startswith("running: latency") and "(the host's)" in status


@pytest.mark.parametrize("buffer_size", [64, 512, 4096])
def test_pedalboard_output_is_the_streaming_separator_delayed_by_the_reported_latency(
        load, tiny_separator, song, stems, buffer_size):
    p = load()
    p.preset, p.effects = "bass", False
    y = p(song, SR, buffer_size=buffer_size)
    # pedalboard drops the first reported_latency_samples of the plugin's output: the rest lines
    # up with the input only if the plugin's stream is delayed by exactly what it reports
    assert p.reported_latency_samples == json.loads(PluginBackend(SR, model=tiny_separator).info())["latency_samples"]
    assert y.shape == song.shape
    np.testing.assert_allclose(y, stems[1], atol=1e-4)
    assert np.abs(y).max() > 0.01


def test_pedalboard_mono_track(load, sep, song):
    p = load()
    p.preset, p.effects = "bass", False
    mono = song[:1]
    want = aligned(StreamingSeparator(separator=sep), mono)[1]  # stereo-duplicated, averaged back
    y = p(mono, SR, buffer_size=512)
    assert y.shape == mono.shape
    np.testing.assert_allclose(y, want, atol=1e-4)


def test_pedalboard_effects_remove_gain_mix_and_bypass(load, tiny_separator, song, stems):
    p = load()
    p.preset = "drums"
    chain = aligned(StreamingChain(with_model(load_preset("drums"), tiny_separator)), song)
    np.testing.assert_allclose(p(song, SR), chain, atol=1e-4)  # effects on by default
    p.effects, p.mix = False, 100.0
    np.testing.assert_allclose(p(song, SR), song - stems[2], atol=1e-4)  # remove: the mixture minus the stem
    p.mix, p.stem_gain_db = 25.0, -6.0
    rows = np.concatenate([stems[2], song - stems[2]])
    np.testing.assert_allclose(p(song, SR, buffer_size=333), blend(rows, -6.0, 0.25), atol=1e-4)
    p.bypass = True
    np.testing.assert_array_equal(p(song, SR), song)  # bypassed: the input, delayed like the output


def test_state_round_trip_in_a_fresh_instance(load, song):
    a = load()
    a.preset, a.stem_gain_db, a.mix, a.effects = "guitar", 3.5, 40.0, True
    want = a(song, SR, buffer_size=256)
    state = a.raw_state
    b = load()
    assert (b.preset, b.mix) == ("piano", 0.0)
    b.raw_state = state
    assert (b.preset, b.stem_gain_db, b.mix, b.effects, b.bypass) == ("guitar", 3.5, 40.0, True, False)
    np.testing.assert_allclose(b(song, SR, buffer_size=256), want, atol=1e-6)


# ------------------------------------------------------- dawsep-vst3-host (no Python) ----

def render(built, tmp_path, x, *args, env=None, name="out", sr=SR):
    src, out = tmp_path / "in.wav", tmp_path / f"{name}.wav"
    sf.write(src, x.T, sr, subtype="FLOAT")
    r = subprocess.run([str(HOST), str(built), "--in", str(src), "--out", str(out), *args],
                       capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=240)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    y, got_sr = sf.read(out, dtype="float32")
    assert got_sr == sr
    return report, np.ascontiguousarray(y.T), r.stderr


@pytest.mark.parametrize("rate", [44100, 48000])
def test_host_without_python_starts_its_own_and_matches(built, plugin_env, tmp_path, sep, song, stems, rate):
    x = song if rate == SR else song[:, :96000]
    env = {"DAWSEP_PYTHON_ENV": sys.prefix}
    report, y, log = render(built, tmp_path, x, "--block", "480", "--set", "Preset=bass", "--set", "Effects=Off",
                            env=env, sr=rate)
    lat, n = report["latency_samples"], x.shape[1]
    assert report["status"].startswith("running") and "(the host's)" not in report["status"]
    assert f"started Python {sys.version.split()[0]} from {sys.prefix}/bin/python" in log
    assert y.shape == (2, n + lat)  # the raw stream: nothing compensated
    assert np.all(y[:, :lat] == 0)
    want = stems[1] if rate == SR else aligned(StreamingSeparator(separator=sep, sample_rate=rate), x)[1]
    np.testing.assert_allclose(y[:, lat:], want, atol=1e-4)


def test_host_transport_bounce_equals_the_offline_stem_after_any_preroll(built, plugin_env, tmp_path, sep, song,
                                                                          stems):
    """The host plays the song from timeline 0 as Ardour bounces it: the play head reports where
    each block's output is heard (negative for the first latency's worth, which JUCE clamps to 0),
    after a pre-roll with the transport stopped."""
    env = {"DAWSEP_PYTHON_ENV": sys.prefix}
    args = ["--set", "Preset=bass", "--set", "Effects=Off", "--position", "0"]
    report, a, _ = render(built, tmp_path, song, "--block", "480", "--preroll", "7000", *args, env=env, name="a")
    lat = report["latency_samples"]
    np.testing.assert_allclose(a[:, lat:], stems[1], atol=1e-4)
    _, b, _ = render(built, tmp_path, song, "--block", "256", "--preroll", "1000", *args, env=env, name="b")
    np.testing.assert_array_equal(a, b)  # two bounces of the same session are equal


def test_host_transport_started_later_cuts_the_tracks_grid(built, plugin_env, tmp_path, sep, song):
    start = 30011  # the song placed so that the transport starts inside a chunk
    env = {"DAWSEP_PYTHON_ENV": sys.prefix}
    report, y, _ = render(built, tmp_path, song, "--block", "512", "--preroll", "2048", "--position", str(start),
                          "--set", "Preset=bass", "--set", "Effects=Off", env=env)
    proc = StreamingSeparator(separator=sep)
    proc.reset(start)
    want = aligned(proc, song)[1]
    np.testing.assert_allclose(y[:, report["latency_samples"]:], want, atol=1e-4)
    assert np.abs(want - aligned(StreamingSeparator(separator=sep), song)[1]).max() > 1e-3  # the grid matters


def test_host_state_round_trip(built, plugin_env, tmp_path, song):
    env = {"DAWSEP_PYTHON_ENV": sys.prefix}
    state = tmp_path / "state.bin"
    _, a, _ = render(built, tmp_path, song, "--set", "Preset=other", "--set", "Mix=30", "--set", "Stem gain=-2.5",
                     "--save-state", str(state), env=env, name="a")
    report, b, _ = render(built, tmp_path, song, "--load-state", str(state), env=env, name="b")
    values = {p["name"]: p["text"] for p in report["parameters"]}
    assert (values["Preset"], values["Mix"], values["Stem gain"]) == ("other", "30.0", "-2.5")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("setting, expect", [
    ({"DAWSEP_PYTHON_ENV": "/nonexistent/venv"},
     "passthrough: no Python environment: DAWSEP_PYTHON_ENV=/nonexistent/venv: no such directory"),
    ({"DAWSEP_PLUGIN_CONF": "EMPTY"}, "passthrough: no Python environment: none configured: set DAWSEP_PYTHON_ENV"),
    ({"DAWSEP_PYTHON_ENV": str(ROOT / "dawsep")}, "dawsep: no bin/python3 in it"),
    ({"DAWSEP_PYTHON_ENV": "BARE"}, "passthrough: error: ModuleNotFoundError: No module named 'dawsep': "
                                    "install dawsep into "),
])
def test_host_with_a_wrong_environment_gets_passthrough_and_a_message(built, plugin_env, tmp_path, song, setting,
                                                                       expect):
    if setting.get("DAWSEP_PLUGIN_CONF") == "EMPTY":  # a conf that unsets the build's python_env
        conf = tmp_path / "empty.conf"
        conf.write_text("python_env =\n")
        setting = {"DAWSEP_PLUGIN_CONF": str(conf), "DAWSEP_PYTHON_ENV": ""}
    if setting.get("DAWSEP_PYTHON_ENV") == "BARE":  # a real venv of this Python, without dawsep
        subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
        setting = {"DAWSEP_PYTHON_ENV": str(tmp_path / "bare")}
    report, y, log = render(built, tmp_path, song, "--block", "512", env=setting)
    assert report["latency_samples"] == 0
    np.testing.assert_array_equal(y, song)
    assert expect in report["status"]
    assert expect in log and expect in plugin_env.read_text()


def test_host_with_a_broken_model_passes_through_and_says_why(built, plugin_env, tmp_path, song):
    env = {"DAWSEP_PYTHON_ENV": sys.prefix, "DAWSEP_PLUGIN_MODEL": str(tmp_path / "missing.onnx")}
    report, y, _ = render(built, tmp_path, song, env=env)
    assert report["status"].startswith("passthrough: error: ModelError: model file not found")
    np.testing.assert_array_equal(y, song)


def test_host_realtime_run_drops_late_audio_but_never_shifts_it(built, plugin_env, tmp_path, sep, song):
    # Paced like a sound card; whether any block is late depends on the machine, but every output
    # sample is either the exact delayed stem or silence (a dropout), never a shifted one.
    x = song[:, :SR]
    report, y, _ = render(built, tmp_path, x, "--realtime", "--block", "256", "--set", "Preset=bass",
                          "--set", "Effects=Off", env={"DAWSEP_PYTHON_ENV": sys.prefix})
    lat = report["latency_samples"]
    body, want = y[:, lat:], aligned(StreamingSeparator(separator=sep), x)[1]
    same = np.all(np.abs(body - want) < 1e-4, axis=0)
    silent = np.all(body == 0, axis=0)
    assert np.all(same | silent)
    assert same[np.any(np.abs(want) > 1e-3, axis=0)].any()
