"""Phase options (dawsep.phase): the numpy STFT pair, Griffin-Lim and the multichannel Wiener filter
on synthetic audio, then through the Separator (tiny ONNX model), streaming, presets and the CLI.
Physics, not timings: lengths, perfect reconstruction, what each method provably does."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from dawsep import cli, phase
from dawsep.chain import Chain, ModelStepSpec
from dawsep.errors import PluginError, PresetError
from dawsep.presets import load_preset, parse_preset
from dawsep.separate import Separator
from dawsep.stream import StreamingSeparator

SR = 44100
OPTIONS = [("mixture", None), ("griffin-lim", 3), ("wiener", 1)]  # few GL iterations: plumbing tests


def noise(shape, seed=0, amp=0.1):
    return (amp * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def panned_sines(seconds=2.0, extra=7):
    """Five stereo stems, each one sine at its own pan, 440+ Hz apart (>= 40 bins of the 4096 STFT,
    where the Hann window's leakage is below -100 dB): disjoint in time-frequency."""
    t = np.arange(int(seconds * SR) + extra) / SR
    stems = []
    for i, f in enumerate([220.0, 660.0, 1500.0, 3300.0, 7000.0]):
        s = 0.2 * np.sin(2 * np.pi * f * t + i)
        pan = (i + 1) / 6 * np.pi / 2
        stems.append([np.cos(pan) * s, np.sin(pan) * s])
    return np.asarray(stems, np.float32)


def sdr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - est).astype(np.float64) ** 2))


# ------------------------------------------------------------------------------ the numpy STFT
@pytest.mark.parametrize("length", [1, 999, 4095, 4097, 22051])
def test_stft_pair_reconstructs_any_length(length):
    x = noise((2, length), seed=length)
    spec = phase.stft(x)
    assert spec.shape == (2, -(-length // phase.HOP) + 1, phase.N_FFT // 2 + 1)
    y = phase.istft(spec, length)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=2e-6)


@pytest.mark.parametrize("name,iterations", OPTIONS)
@pytest.mark.parametrize("length", [1, 1001, 44101])
def test_each_option_returns_input_length_stems(name, iterations, length):
    stems = noise((5, 2, length), seed=1)
    y = phase.refine(stems.sum(0), stems, name, iterations)
    assert y.shape == stems.shape and y.dtype == np.float32 and np.isfinite(y).all()
    if name == "mixture":
        np.testing.assert_array_equal(y, stems)


@pytest.mark.parametrize("name,iterations", OPTIONS)
def test_silence_gives_silence_without_nan(name, iterations):
    z = np.zeros((5, 2, 5000), np.float32)
    y = phase.refine(z[0], z, name, iterations)
    assert np.isfinite(y).all() and not y.any()
    # silent stems of a non-silent mix (a model that output nothing): no division by zero
    y = phase.refine(noise((2, 5000)), z, name, iterations)
    assert np.isfinite(y).all()


# ----------------------------------------------------------------------------------- Wiener
@pytest.mark.parametrize("iterations", [1, 2])
def test_wiener_with_perfect_estimates_returns_the_stems(iterations):
    """Given the true stems, the filter returns them. Tolerance: away from the first and last
    n_fft samples the sources are disjoint in time-frequency, so only float32 STFT rounding and
    the 1e-5 regulariser remain (measured ~4e-6 for 0.2-amplitude stems; bound 5e-5). At the
    signal's abrupt start and end every source splatters over all bins, so they overlap there
    and the filter shares some energy (it is an MMSE estimate, not an identity): there, only a
    high SDR over the whole signal is asked for (measured 41-48 dB; bound 35 dB)."""
    stems = panned_sines()
    y = phase.wiener(stems.sum(0), stems, iterations)
    core = slice(phase.N_FFT, -phase.N_FFT)
    assert np.max(np.abs(y[..., core] - stems[..., core])) < 5e-5
    assert min(sdr(stems[j], y[j]) for j in range(len(stems))) > 35.0


def test_wiener_stems_add_up_to_the_mixture_and_zero_iterations_is_identity():
    stems = noise((5, 2, 30000), seed=2)  # overlapping sources: the filter does change them
    mix = stems.sum(0)
    y = phase.wiener(mix, stems, 1)
    assert np.max(np.abs(y.sum(0) - mix)) < 1e-4  # up to the regulariser
    assert np.max(np.abs(y - stems)) > 1e-2
    np.testing.assert_array_equal(phase.wiener(mix, stems, 0), stems)


# ------------------------------------------------------------------------------ Griffin-Lim
def test_griffin_lim_zero_iterations_is_mixture_phase_resynthesis():
    stems = noise((5, 2, 20001), seed=3)
    mix = stems.sum(0) + noise((2, 20001), seed=4)  # the stems do not add up to this mix
    y = phase.griffin_lim(mix, stems, 0, project=False)
    x = phase.stft(mix)
    expected = phase.istft(np.abs(phase.stft(stems)) * np.exp(1j * np.angle(x)), mix.shape[1])
    np.testing.assert_allclose(y, expected, atol=1e-5)
    # with the projection (the default) they do add up to the mix
    assert np.max(np.abs(phase.griffin_lim(mix, stems, 0).sum(0) - mix)) < 1e-4


def test_griffin_lim_iterations_reduce_the_spectral_inconsistency():
    """The mixture's phase is wrong for a stem's magnitude; Griffin-Lim iterations move the
    stem towards a signal whose STFT magnitude is that target."""
    stems = panned_sines(1.0)[:2] + noise((2, 2, 44107), seed=5, amp=0.05)
    mix = stems.sum(0)
    target = np.abs(phase.stft(stems))
    err = {n: np.mean([phase.inconsistency(target[j], y) for j, y in
                       enumerate(phase.griffin_lim(mix, stems, n, project=False))]) for n in (0, 4, 32)}
    assert err[0] > err[4] > err[32]
    assert err[32] < 0.5 * err[0], err


def test_bad_values_are_named_with_the_allowed_ones(tiny_separator):
    with pytest.raises(ValueError, match="phase 'phasey' is not one of: mixture, griffin-lim, wiener"):
        Separator(tiny_separator, phase="phasey")
    for bad in (-1, 1001, 2.5, True):
        with pytest.raises(ValueError, match=r"phase_iterations must be an integer in \[0, 1000\]"):
            phase.check("wiener", bad)
    assert phase.check("mixture", 5) == ("mixture", 0)  # nothing to iterate
    assert phase.check("griffin-lim") == ("griffin-lim", phase.DEFAULT_ITERATIONS["griffin-lim"])
    with pytest.raises(PluginError, match="model step 'separate': phase 'x' is not one of"):
        Chain([ModelStepSpec("separate", {"stem": "bass", "model": tiny_separator, "phase": "x"})])
    assert cli.PHASES == phase.PHASES  # the CLI's copy (it does not import numpy for --help)
    helptext = " ".join(CliRunner().invoke(cli.main, ["separate", "--help"]).output.split())
    gl, w = phase.DEFAULT_ITERATIONS["griffin-lim"], phase.DEFAULT_ITERATIONS["wiener"]
    assert f"Griffin-Lim iterations [{gl}] or Wiener EM iterations [{w}]" in helptext


# -------------------------------------------------------------------- through the Separator
@pytest.fixture(scope="module")
def seps(tiny_separator):
    return {name: Separator(tiny_separator, threads=1, phase=name, phase_iterations=it) for name, it in OPTIONS}


@pytest.mark.parametrize("name", [n for n, _ in OPTIONS])
def test_separator_keeps_lengths_and_streaming_equals_offline(seps, name):
    """Per-chunk post-processing inside the chunk callback: any odd length in, same length out,
    and block-by-block streaming is the offline result delayed, for every option."""
    sep = seps[name]
    for n in (1001, 27563):
        x = noise((2, n), seed=n)
        out = sep.separate(x, SR)
        assert all(y.shape == x.shape and np.isfinite(y).all() for y in out.values())
    x = noise((2, 30011), seed=6)
    offline = sep.separate_array(x)
    proc = StreamingSeparator(separator=sep)
    lat = proc.latency_samples
    xx = np.concatenate([x, np.zeros((2, lat), np.float32)], axis=1)
    rng = np.random.default_rng(0)
    pieces, pos = [], 0
    while pos < xx.shape[1]:
        k = int(rng.integers(1, 3000))
        pieces.append(proc.process(xx[:, pos:pos + k]))
        pos += k
    y = np.concatenate(pieces, axis=-1)
    np.testing.assert_allclose(y[..., lat:lat + x.shape[1]], offline, atol=1e-5)


def test_options_change_the_output_and_batching_does_not(seps, tiny_separator):
    x = noise((2, 40000), seed=7)
    out = {name: s.separate_array(x) for name, s in seps.items()}
    assert np.max(np.abs(out["wiener"] - out["mixture"])) > 1e-3
    assert np.max(np.abs(out["griffin-lim"] - out["mixture"])) > 1e-3
    batched = Separator(tiny_separator, threads=1, phase="wiener", batch_size=3).separate_array(x)
    np.testing.assert_allclose(batched, out["wiener"], atol=1e-5)
    assert "phase='wiener'" in repr(seps["wiener"])


# ------------------------------------------------------------------------------- presets
def test_preset_phase_is_validated_and_reaches_the_chain(tiny_separator):
    p = parse_preset(f'[separate]\nstem = "bass"\nmodel = "{tiny_separator}"\nphase = "wiener"\n'
                     'phase_iterations = 2\n', "mine.toml")
    assert (p.separate.phase, p.separate.phase_iterations) == ("wiener", 2)
    chain = p.build_chain()
    assert "phase='wiener', phase_iterations=2" in chain.descriptions[0]
    assert chain.model_steps[0].separator.phase == "wiener"
    assert load_preset("piano").separate.phase == "mixture"


@pytest.mark.parametrize("text,key,message", [
    ('phase = "phasey"', "separate.phase", "'phasey' is not allowed; expected one of mixture, griffin-lim, wiener"),
    ("phase = 1", "separate.phase", "expected one of mixture, griffin-lim, wiener"),
    ("phase_iterations = -1", "separate.phase_iterations", r"out of range; expected an integer in \[0, 1000\]"),
    ("phase_iterations = 2.5", "separate.phase_iterations", r"expected an integer in \[0, 1000\]"),
    ("phase_iterations = true", "separate.phase_iterations", "expected an integer"),
    ("phases = 1", "separate.phases", "unknown key; allowed: model, phase, phase_iterations, stem"),
])
def test_bad_preset_phase_names_file_key_and_allowed(text, key, message):
    with pytest.raises(PresetError, match=message) as info:
        parse_preset(f'[separate]\nstem = "bass"\n{text}\n', "bad.toml")
    assert info.value.key == key and str(info.value).startswith(f"bad.toml [{key}]")


# ----------------------------------------------------------------------------------- CLI
def test_cli_phase_end_to_end(tmp_path, tiny_separator):
    src = tmp_path / "a.wav"
    x = noise((2, 33333), seed=8)
    sf.write(src, x.T, SR, subtype="FLOAT")
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["separate", str(src), "-o", str(out), "-m", tiny_separator, "--stems", "bass", "--format", "wav",
            "--bit-depth", "32", "-q"]
    res = runner.invoke(cli.main, args + ["--phase", "wiener"])
    assert res.exit_code == 0, res.output
    y, _ = sf.read(out / "a" / "bass.tiny-separator.wav", always_2d=True)  # -m MODEL: named after it
    ref = Separator(tiny_separator, threads=1, phase="wiener").separate(x, SR)["bass"]
    np.testing.assert_allclose(y.T, ref, atol=1e-6)
    song = json.loads((out / "manifest.json").read_text())["songs"][0]
    assert song["separation"]["phase"] == "wiener" and song["separation"]["phase_iterations"] == 1
    # another phase is another result: the song is redone, not skipped
    res = runner.invoke(cli.main, args + ["--phase", "griffin-lim", "--phase-iterations", "2"])
    assert res.exit_code == 0 and "1 done" in res.output, res.output
    song = json.loads((out / "manifest.json").read_text())["songs"][0]
    assert (song["separation"]["phase"], song["separation"]["phase_iterations"]) == ("griffin-lim", 2)
    res = runner.invoke(cli.main, args + ["--phase", "nope"])
    assert res.exit_code == 2 and "mixture" in res.output
    res = runner.invoke(cli.main, args + ["--phase-iterations", "3"])
    assert res.exit_code == 2 and "needs --phase" in res.output


def test_cli_phase_overrides_the_preset_and_reaches_render(tmp_path, tiny_separator):
    src = tmp_path / "a.wav"
    sf.write(src, noise((2, 20000), seed=9).T, SR, subtype="FLOAT")
    preset = tmp_path / "keys.toml"
    preset.write_text(f'[separate]\nstem = "piano"\nmodel = "{tiny_separator}"\nphase = "griffin-lim"\n'
                      'phase_iterations = 2\n[[chain]]\nplugin = "Gain"\ngain_db = -3\n')
    runner = CliRunner()
    res = runner.invoke(cli.main, ["separate", str(src), "-o", str(tmp_path / "o1"), "-p", str(preset), "-q"])
    assert res.exit_code == 0, res.output
    sep = json.loads((tmp_path / "o1" / "manifest.json").read_text())["songs"][0]["separation"]
    assert (sep["phase"], sep["phase_iterations"]) == ("griffin-lim", 2)  # the preset's
    res = runner.invoke(cli.main, ["separate", str(src), "-o", str(tmp_path / "o2"), "-p", str(preset),
                                   "--phase", "wiener", "-q"])
    sep = json.loads((tmp_path / "o2" / "manifest.json").read_text())["songs"][0]["separation"]
    assert res.exit_code == 0 and (sep["phase"], sep["phase_iterations"]) == ("wiener", 1)  # the option's
    res = runner.invoke(cli.main, ["render", str(src), "-o", str(tmp_path / "o3"), "-p", str(preset),
                                   "--phase", "wiener", "-q"])
    assert res.exit_code == 0, res.output
    chain = json.loads((tmp_path / "o3" / "manifest.json").read_text())["songs"][0]["chain"]
    assert "phase='wiener'" in chain[0]
    res = runner.invoke(cli.main, ["presets", "show", str(preset)])
    assert "phase=griffin-lim phase_iterations=2" in res.output
