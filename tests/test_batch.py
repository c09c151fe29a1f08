"""Batch engine and CLI: per-song isolation, resume after SIGKILL, manifest, exit codes."""
from __future__ import annotations

import json
from importlib import resources
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from _models import DelayedGainModel
from conftest import with_model
from dawsep.batch import RenderJob, discover, inside, run_batch
from dawsep.chain import register_model_step
from dawsep.cli import main
from dawsep.errors import OutputPathError
from dawsep.presets import load_preset

SR = 44100



@pytest.fixture
def P(tiny_separator):
    """Shipped presets with the tiny test separator instead of the packaged model (fast)."""
    return lambda name: with_model(load_preset(name), tiny_separator)


def tone(seconds: float, sr: int = SR, channels: int = 2, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """(samples, channels) for soundfile: a tone plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t)[:, None] + 0.01 * rng.standard_normal((t.size, channels))
    return x.astype(np.float32)


def make_songs(root: Path) -> None:
    (root / "album").mkdir(parents=True)
    sf.write(root / "a.wav", tone(1.0), SR, subtype="PCM_24")
    sf.write(root / "album" / "b.flac", tone(0.7, channels=1, freq=220.0), SR, subtype="PCM_16")
    sf.write(root / "album" / "c.wav", tone(0.5, sr=48000, freq=880.0), 48000, subtype="FLOAT")
    (root / "album" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (root / "notes.txt").write_text("not audio")


def no_temp_files(out: Path) -> bool:
    leftovers = [p for p in out.rglob("*") if p.is_file() and (p.name.endswith((".tmp", ".part")) or "staging" in p.parts)]
    return not leftovers


def test_render_folder_isolates_bad_song_and_writes_manifest(tmp_path, P):
    make_songs(tmp_path / "in")
    out = tmp_path / "out"
    job = RenderJob(P("bass"))
    report = run_batch(job, tmp_path / "in", out, progress=False)
    assert sorted(report.done) == ["a", "album/b", "album/c"]
    assert [s for s, _ in report.failed] == ["album/broken"]
    assert "broken.wav" in report.failed[0][1]
    assert report.ignored == ["notes.txt"]
    assert not report.ok and "1 failed" in report.summary() and "FAILED album/broken" in report.summary()
    for rel, sr, n in [("a", SR, SR), ("album/b", SR, int(0.7 * SR)), ("album/c", 48000, 24000)]:
        y, rate = sf.read(out / rel / "bass.flac", always_2d=True)
        assert rate == sr and y.shape == (n, 2)  # aligned, same length, stereo (mono duplicated)
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) > 0.01
    assert not (out / "album" / "broken").exists()  # nothing written for the failed song
    manifest = json.loads((out / "manifest.json").read_text())
    songs = {s["song"]: s for s in manifest["songs"]}
    assert songs["a"]["state"] == "done" and songs["a"]["outputs"] == ["a/bass.flac"]
    assert songs["a"]["preset"]["name"] == "bass" and len(songs["a"]["input_sha256"]) == 64
    assert songs["album/broken"]["state"] == "failed" and "broken.wav" in songs["album/broken"]["error"]
    assert no_temp_files(out)


def test_render_output_equals_offline_chain(tmp_path, P):
    x = tone(1.5, seed=3)
    sf.write(tmp_path / "s.wav", x, SR, subtype="FLOAT")
    preset = P("piano")
    run_batch(RenderJob(preset, block_frames=4096), tmp_path / "s.wav", tmp_path / "out", progress=False)
    y, _ = sf.read(tmp_path / "out" / "s" / "piano.flac", always_2d=True)
    ref = preset.build_chain()(x.T, SR).T
    assert y.shape == ref.shape
    assert np.max(np.abs(y - ref)) < 2.0 / 2**23  # 24-bit FLAC quantisation


def test_rerun_skips_done_and_force_redoes(tmp_path, P):
    make_songs(tmp_path / "in")
    out = tmp_path / "out"
    job = RenderJob(P("drums"))
    run_batch(job, tmp_path / "in", out, progress=False)
    mtime = (out / "a" / "drums.flac").stat().st_mtime_ns
    again = run_batch(job, tmp_path / "in", out, progress=False)
    assert sorted(again.skipped) == ["a", "album/b", "album/c"]
    assert again.done == [] and [s for s, _ in again.failed] == ["album/broken"]  # failures are retried
    assert (out / "a" / "drums.flac").stat().st_mtime_ns == mtime
    forced = run_batch(job, tmp_path / "in", out, force=True, progress=False)
    assert sorted(forced.done) == ["a", "album/b", "album/c"]
    # a changed setting (another output format) redoes the songs
    from dawsep.batch import OutputOptions
    wav = run_batch(RenderJob(job.preset, OutputOptions("wav", 16)), tmp_path / "in", out, progress=False)
    assert sorted(wav.done) == ["a", "album/b", "album/c"] and (out / "a" / "drums.wav").exists()


def test_parallel_jobs_match_single_process(tmp_path, P):
    make_songs(tmp_path / "in")
    job = RenderJob(P("guitar"))
    run_batch(job, tmp_path / "in", tmp_path / "one", jobs=1, progress=False)
    report = run_batch(job, tmp_path / "in", tmp_path / "two", jobs=2, progress=False)
    assert sorted(report.done) == ["a", "album/b", "album/c"] and len(report.failed) == 1
    for rel in report.done:
        assert (tmp_path / "one" / rel / "guitar.flac").read_bytes() == (tmp_path / "two" / rel / "guitar.flac").read_bytes()


def test_discover_disambiguates_same_name_and_skips_output(tmp_path):
    sf.write(tmp_path / "song.wav", tone(0.1), SR)
    sf.write(tmp_path / "song.flac", tone(0.1), SR)
    (tmp_path / "out").mkdir()
    sf.write(tmp_path / "out" / "old.wav", tone(0.1), SR)
    songs, _ = discover(tmp_path, tmp_path / "out", frozenset({".wav", ".flac"}))
    assert sorted(s.rel for s in songs) == ["song_flac", "song_wav"]


def test_output_paths_stay_inside(tmp_path):
    assert inside(tmp_path, "a", "b.flac") == (tmp_path / "a" / "b.flac").resolve()
    with pytest.raises(OutputPathError):
        inside(tmp_path, "..", "evil.flac")
    with pytest.raises(OutputPathError):
        inside(tmp_path, "/etc/passwd")


def bad_inputs(root: Path) -> dict[str, str]:
    """One file per kind of bad input -> a phrase its error must contain."""
    root.mkdir()
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "zero.wav", np.zeros((0, 2), np.float32), SR)
    sf.write(root / "full.wav", tone(1.0), SR, subtype="PCM_16")
    data = (root / "full.wav").read_bytes()
    (root / "truncated.wav").write_bytes(data[: len(data) // 2])
    (root / "text.flac").write_text("hello, I am not a FLAC file\n" * 20)
    nan = tone(0.5)
    nan[1000, 0] = np.nan
    sf.write(root / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(root / "surround.wav", np.tile(tone(0.2, channels=1), (1, 6)), SR)
    (root / "full.wav").unlink()
    return {"empty": "empty", "zero": "no audio", "truncated": "truncated", "text": "text.flac",
            "nan": "NaN", "surround": "6 channels"}


def test_bad_input_matrix_each_reported_nothing_written(tmp_path, P):
    expected = bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    report = run_batch(RenderJob(P("bass")), tmp_path / "in", out, progress=False)
    failed = dict(report.failed)
    assert sorted(failed) == sorted(expected) and report.done == []
    for song, phrase in expected.items():
        assert song in failed[song] and phrase.lower() in failed[song].lower(), failed[song]
        assert not (out / song).exists()
    assert no_temp_files(out)
    # --downmix turns the 6-channel file into a stereo stem
    fixed = run_batch(RenderJob(P("bass"), downmix=True), tmp_path / "in" / "surround.wav", out, progress=False)
    assert fixed.done == ["surround"] and sf.info(str(out / "surround" / "bass.flac")).channels == 2


def test_model_step_at_its_own_rate_is_streamed_there_and_back(tmp_path):
    register_model_step("test-delayed-gain", DelayedGainModel)
    preset_file = tmp_path / "model.toml"
    preset_file.write_text('[[chain]]\nmodel = "test-delayed-gain"\n'
                           'gain = 0.5\nlatency = 300\nsample_rate = 22050\n[output]\nformat = "wav"\nbit_depth = 32\n')
    x = tone(2.0, sr=48000, freq=1000.0, seed=1)
    sf.write(tmp_path / "s.wav", x, 48000, subtype="FLOAT")
    report = run_batch(RenderJob(load_preset(str(preset_file)), block_frames=3000), tmp_path / "s.wav",
                       tmp_path / "out", progress=False)
    assert report.ok, report.summary()
    y, sr = sf.read(tmp_path / "out" / "s" / "other.wav", always_2d=True)
    assert sr == 48000 and y.shape == x.shape  # back at the input rate, same length, aligned
    core = slice(2000, -2000)
    # the 1 kHz tone survives 48k -> 22.05k -> 48k; the noise above 11 kHz is gone, hence the tolerance
    assert np.sqrt(np.mean((y[core] - 0.5 * x[core]) ** 2)) < 0.01 * np.sqrt(np.mean((0.5 * x[core]) ** 2)) + 0.004


# ------------------------------------------------------------------------------- kill + resume


def test_sigkill_mid_run_then_rerun_completes(tmp_path, tiny_separator):
    preset = tmp_path / "other.toml"  # the shipped preset with the tiny test separator
    shipped = resources.files("dawsep._presets").joinpath("other.toml").read_text()
    preset.write_text(shipped.replace('model = "default"', f'model = "{tiny_separator}"'))
    src = tmp_path / "in"
    src.mkdir()
    for i in range(10):
        sf.write(src / f"song{i}.wav", tone(30.0, seed=i), SR, subtype="PCM_16")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dawsep.cli", "render", str(src), "-o", str(out), "--preset", str(preset), "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    ledger = out / ".dawsep" / "ledger.sqlite"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if ledger.exists():
            with sqlite3.connect(ledger) as db:
                try:
                    done = db.execute("SELECT count(*) FROM songs WHERE state='done'").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the songs longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(ledger) as db:
        finished = {r[0] for r in db.execute("SELECT song FROM songs WHERE state='done'")}
    assert 2 <= len(finished) < 10
    mtimes = {s: (out / s / "other.flac").stat().st_mtime_ns for s in finished}
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{10 - len(finished)} done, {len(finished)} already done (skipped), 0 failed" in rerun.stderr
    for s, m in mtimes.items():  # finished songs were not redone
        assert (out / s / "other.flac").stat().st_mtime_ns == m
    for i in range(10):  # every output complete and readable
        y, sr = sf.read(out / f"song{i}" / "other.flac")
        assert sr == SR and y.shape == (30 * SR, 2)
    assert no_temp_files(out)


# ---------------------------------------------------------------------------------------- CLI


def test_cli_render_exit_codes_and_summary(tmp_path):
    make_songs(tmp_path / "in")
    runner = CliRunner()
    res = runner.invoke(main, ["render", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-p", "piano",
                               "--format", "wav", "--bit-depth", "16", "-q"])
    assert res.exit_code == 1
    assert "3 done" in res.output and "FAILED album/broken" in res.output
    info = sf.info(str(tmp_path / "out" / "a" / "piano.wav"))
    assert info.subtype == "PCM_16"
    good = tmp_path / "in" / "album" / "b.flac"
    res = runner.invoke(main, ["render", str(good), "-o", str(tmp_path / "out2"), "-p", "piano", "-q"])
    assert res.exit_code == 0 and (tmp_path / "out2" / "b" / "piano.flac").exists()


def test_cli_usage_errors(tmp_path):
    runner = CliRunner()
    sf.write(tmp_path / "a.wav", tone(0.1), SR)
    res = runner.invoke(main, ["render", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "-p", "nope"])
    assert res.exit_code == 4 and "no such preset" in res.output
    res = runner.invoke(main, ["render", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "-p", "piano",
                               "--format", "flac", "--bit-depth", "32"])
    assert res.exit_code == 2 and "32 is not available for flac" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[[chain]]\nplugin = "Gain"\ngain_db = 500\n')
    res = runner.invoke(main, ["render", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "-p", str(bad)])
    assert res.exit_code == 4 and "chain[0].gain_db" in res.output and "out of range" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["render", str(empty), "-o", str(tmp_path / "o"), "-p", "piano"])
    assert res.exit_code == 9 and "no audio files found" in res.output  # its own code (issue 18)


def test_cli_presets_and_info(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["presets", "list"])
    assert res.exit_code == 0 and all(n in res.output for n in ("piano", "bass", "drums", "guitar", "other"))
    res = runner.invoke(main, ["presets", "show", "piano"])
    assert res.exit_code == 0 and "HighpassFilter" in res.output and "transcribe:" in res.output
    sf.write(tmp_path / "a.flac", tone(0.5, sr=22050, channels=1), 22050)
    res = runner.invoke(main, ["info", str(tmp_path / "a.flac")])
    assert res.exit_code == 0 and "22050 Hz" in res.output and "1 ch" in res.output
    res = runner.invoke(main, ["info", "--json", str(tmp_path / "a.flac")])
    assert json.loads(res.output)[0]["frames"] == 11025
    (tmp_path / "x.wav").write_text("nope")
    res = runner.invoke(main, ["info", str(tmp_path / "x.wav")])
    assert res.exit_code == 3 and "x.wav" in res.output


def test_installed_entry_point_runs(tmp_path):
    exe = Path(sys.executable).parent / "dawsep"
    if not exe.exists():
        pytest.skip("dawsep entry point not installed in this environment")
    sf.write(tmp_path / "a.wav", tone(0.5), SR)
    res = subprocess.run([str(exe), "render", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "-p", "drums", "-q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "a" / "drums.flac").exists()
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "render" in res.stdout and res.stderr == ""
    # --help must not import the heavy runtime (kept instant); checked by module list, not time
    probe = subprocess.run([sys.executable, "-c", "import sys, dawsep.cli; "
                            "print(sorted(m for m in ('onnxruntime','pedalboard','numpy','torch') if m in sys.modules))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "[]"
