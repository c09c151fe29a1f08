"""Separator runtime on a tiny exported ONNX model: lengths, rates, channels, chunking identities,
mixture consistency, the chain step, the registry, and `dawsep separate` on the batch engine."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from dawsep import runtime
from dawsep.batch import RenderJob, SeparateJob, run_batch
from dawsep.chain import Chain, ModelStepSpec
from dawsep.cli import main
from dawsep.errors import AudioFormatError, ModelError
from dawsep.presets import load_preset
from dawsep.separate import DEFAULT_OVERLAP, Separator, SeparatorStep

from conftest import with_model

SR = 44100
STEMS = ("piano", "bass", "drums", "guitar", "other")


def noise(seconds, sr=SR, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * sr)))).astype(np.float32)


def sine(seconds, freq, sr=SR, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x, 0.5 * x]).astype(np.float32)


@pytest.fixture(scope="module")
def sep(tiny_separator):
    return Separator(tiny_separator, threads=1)


def test_metadata_drives_the_runtime(sep):
    assert sep.stems == STEMS and sep.sample_rate == SR
    assert sep.segment == sep.info.segment_samples and sep.overlap == round(DEFAULT_OVERLAP * sep.segment)
    assert sep.info.kind == "separator" and sep.info.architecture["arch"] == "unet"


@pytest.mark.parametrize("seconds", [0.01, 0.2, 0.2501, 1.3])
def test_any_length_in_same_length_out(sep, seconds):
    x = noise(seconds)
    out = sep.separate(x, SR)
    assert list(out) == list(STEMS)
    for y in out.values():
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()


def test_stems_sum_to_the_mixture_below_the_cutoff(sep):
    """Softmax masks sum to one: a 500 Hz sine (under the tiny model's 11 kHz cut-off) comes back
    whole when the stems are added, chunk seams included."""
    x = sine(1.0, 500.0)
    total = sum(sep.separate(x, SR).values())
    core = slice(300, -300)
    assert np.max(np.abs(total[:, core] - x[:, core])) < 1e-3
    # and the masks are not trivial: the stems differ from mix / 5
    assert max(np.max(np.abs(y - x / 5)) for y in sep.separate(x, SR).values()) > 0.01


def test_chunked_equals_whole_segment_where_one_segment_covers(sep):
    x = noise(2.0, seed=1)
    y = sep.separate_array(x)
    seg, hop = sep.segment, sep.segment - sep.overlap
    direct = sep._run(x[None, :, :seg])[0]
    np.testing.assert_allclose(y[..., :hop - 1], direct[..., :hop - 1], atol=1e-5)


def test_mono_and_other_rates(sep):
    mono = noise(0.5, channels=1, seed=2)[0]
    out = sep.separate(mono, SR)
    assert out["bass"].shape == mono.shape
    x48 = noise(0.5, sr=48000, seed=3)
    out48 = sep.separate(x48, 48000)
    assert out48["drums"].shape == x48.shape


def test_bad_inputs(sep, tiny_separator):
    x = noise(0.1)
    x[0, 10] = np.nan
    with pytest.raises(AudioFormatError, match="NaN"):
        sep.separate(x, SR)
    with pytest.raises(AudioFormatError):
        sep.separate(np.zeros((3, 100), np.float32), SR)
    with pytest.raises(ModelError, match="no stem 'vocals'"):
        SeparatorStep("vocals", separator=sep)
    with pytest.raises(ModelError, match="unknown separator model 'nope'"):
        Separator("nope")
    with pytest.raises(ModelError, match="not found"):
        Separator("/no/such/model.onnx")


def test_not_an_onnx_file_or_not_a_dawsep_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load model"):
        Separator(str(bad))


def test_registry_checks_sha256(tmp_path, monkeypatch, tiny_separator):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.onnx").write_bytes(open(tiny_separator, "rb").read())
    good = runtime.file_sha256(models / "tiny.onnx")
    monkeypatch.setattr(runtime, "MODELS_DIR", models)
    monkeypatch.setattr(runtime, "REGISTRY_FILE", models / "registry.json")
    (models / "registry.json").write_text(json.dumps({"separator": {"tiny": {"file": "tiny.onnx", "sha256": good}}}))
    assert Separator("tiny").info.name == "tiny"
    (models / "registry.json").write_text(json.dumps({"separator": {"tiny": {"file": "tiny.onnx", "sha256": "0" * 64}}}))
    runtime._verified.cache_clear()
    with pytest.raises(ModelError, match="damaged or was replaced"):
        Separator("tiny")


def test_chain_step_streaming_equals_offline_delayed(sep):
    """The [separate] model step: any block sizes give the offline stem delayed by latency_samples."""
    x = noise(1.2, seed=4)
    offline = sep.separate(x, SR)["guitar"]
    step = SeparatorStep("guitar", separator=sep)
    lat = step.latency_samples
    rng = np.random.default_rng(0)
    pieces, pos = [], 0
    xx = np.concatenate([x, np.zeros((2, lat), np.float32)], axis=1)
    while pos < xx.shape[1]:
        n = int(rng.integers(1, 5000))
        pieces.append(step.process(xx[:, pos:pos + n], SR, reset=False))
        pos += n
    y = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(y[:, lat:lat + x.shape[1]], offline, atol=1e-5)
    assert np.all(y[:, :lat] == 0)
    # a Chain led by the step renders the same stem, aligned (latency removed)
    chain = Chain([step])
    np.testing.assert_allclose(chain(x, SR), offline, atol=1e-5)


def test_model_step_spec_from_presets(tiny_separator):
    chain = Chain([ModelStepSpec("separate", {"stem": "bass", "model": tiny_separator})])
    assert chain.model_sample_rates == {SR} and chain.descriptions


# ----------------------------------------------------------------------- batch and CLI
TAG = ".tiny-separator"  # a separator other than the default names its outputs (issue 17): piano.tiny-separator.flac


def write_songs(root):
    root.mkdir()
    sf.write(root / "a.wav", noise(0.7, seed=5).T, SR, subtype="FLOAT")
    sf.write(root / "b.flac", noise(0.4, sr=48000, channels=1, seed=6).T, 48000)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")


def test_separate_job_writes_every_stem_aligned(tmp_path, tiny_separator):
    write_songs(tmp_path / "in")
    out = tmp_path / "out"
    report = run_batch(SeparateJob(tiny_separator), tmp_path / "in", out, progress=False)
    assert sorted(report.done) == ["a", "b"] and [s for s, _ in report.failed] == ["broken"]
    for rel, sr, n in [("a", SR, int(0.7 * SR)), ("b", 48000, int(0.4 * 48000))]:
        for stem in STEMS:
            y, rate = sf.read(out / rel / f"{stem}{TAG}.flac", always_2d=True)
            assert rate == sr and y.shape == (n, 2)
    x, _ = sf.read(tmp_path / "in" / "a.wav", always_2d=True)
    ref = Separator(tiny_separator, threads=1).separate(x.T, SR)
    for stem in STEMS:
        y, _ = sf.read(out / "a" / f"{stem}{TAG}.flac", always_2d=True)
        assert np.max(np.abs(y.T - ref[stem])) < 2.0 / 2**23
    manifest = json.loads((out / "manifest.json").read_text())
    song = {s["song"]: s for s in manifest["songs"]}["a"]
    assert song["models"][0]["kind"] == "separator" and song["outputs"] == [f"a/{s}{TAG}.flac" for s in STEMS]
    again = run_batch(SeparateJob(tiny_separator), tmp_path / "in", out, progress=False)
    assert sorted(again.skipped) == ["a", "b"]


def test_two_stems_sum_to_the_input(tmp_path, tiny_separator):
    src = tmp_path / "a.wav"
    x = noise(0.6, seed=7)
    sf.write(src, x.T, SR, subtype="FLOAT")
    run_batch(SeparateJob(tiny_separator, two_stems="piano", output=_wav32()), src, tmp_path / "out", progress=False)
    p, _ = sf.read(tmp_path / "out" / "a" / f"piano{TAG}.wav", always_2d=True)
    rest, _ = sf.read(tmp_path / "out" / "a" / f"no_piano{TAG}.wav", always_2d=True)
    np.testing.assert_allclose(p + rest, x.T, atol=1e-6)


def _wav32():
    from dawsep.batch import OutputOptions

    return OutputOptions("wav", 32)


def test_preset_stem_through_its_chain_equals_render(tmp_path, tiny_separator):
    """`separate --preset bass` and `render --preset bass` give the same stem (one engine)."""
    src = tmp_path / "a.wav"
    sf.write(src, noise(1.1, seed=8).T, SR, subtype="FLOAT")
    preset = with_model(load_preset("bass"), tiny_separator)
    run_batch(SeparateJob(preset=preset, output=_wav32()), src, tmp_path / "sep", progress=False)
    run_batch(RenderJob(preset, output=_wav32(), block_frames=5000), src, tmp_path / "ren", progress=False)
    a, _ = sf.read(tmp_path / "sep" / "a" / "bass.wav", always_2d=True)
    b, _ = sf.read(tmp_path / "ren" / "a" / "bass.wav", always_2d=True)
    raw = Separator(tiny_separator, threads=1).separate(sf.read(src, always_2d=True)[0].T, SR)["bass"]
    assert a.shape == b.shape == raw.T.shape
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.max(np.abs(a - raw.T)) > 1e-3  # the chain did something
    rendered = json.loads((tmp_path / "ren" / "manifest.json").read_text())["songs"][0]
    assert [m["kind"] for m in rendered["models"]] == ["separator"] and len(rendered["models"][0]["sha256"]) == 64


def test_cli_separate(tmp_path, tiny_separator):
    write_songs(tmp_path / "in")
    runner = CliRunner()
    res = runner.invoke(main, ["separate", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", tiny_separator,
                               "--stems", "piano,bass", "--format", "wav", "-q"])
    assert res.exit_code == 1, res.output
    assert "2 done" in res.output and "FAILED broken" in res.output
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir()) == [f"bass{TAG}.wav", f"piano{TAG}.wav"]
    res = runner.invoke(main, ["separate", str(tmp_path / "in" / "a.wav"), "-o", str(tmp_path / "o2"),
                               "-m", tiny_separator, "--stems", "vocals"])
    assert res.exit_code == 6 and "no stem 'vocals'" in res.output
    res = runner.invoke(main, ["separate", str(tmp_path / "in" / "a.wav"), "-o", str(tmp_path / "o2"),
                               "-m", str(tmp_path / "missing.onnx")])
    assert res.exit_code == 6 and "not found" in res.output
    res = runner.invoke(main, ["separate", str(tmp_path / "in" / "a.wav"), "-o", str(tmp_path / "o2"),
                               "-m", tiny_separator, "--two-stems", "piano", "--stems", "bass"])
    assert res.exit_code == 2
    preset = tmp_path / "keys.toml"  # transcribes with a model that is not there: say how to go on
    preset.write_text(f'[separate]\nstem = "piano"\nmodel = "{tiny_separator}"\n[transcribe]\nmodel = "nope.onnx"\n')
    res = runner.invoke(main, ["separate", str(tmp_path / "in" / "a.wav"), "-o", str(tmp_path / "o3"), "-p", str(preset)])
    assert res.exit_code == 6 and "--no-midi" in res.output
    res = runner.invoke(main, ["separate", str(tmp_path / "in" / "a.wav"), "-o", str(tmp_path / "o3"), "-p", str(preset),
                               "--no-midi", "-q"])
    assert res.exit_code == 0 and (tmp_path / "o3" / "a" / "piano.flac").exists()


def test_runtime_imports_no_torch():
    code = ("import sys, dawsep.separate, dawsep.runtime, dawsep.batch, dawsep.chunking, dawsep.cli; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr
