"""The Ray engine (``--engine ray``): the same outputs as the local engine, a dead worker or a
raising song isolated and reported, a rerun after a dead worker or driver completes the rest,
and a clear refusal when Ray is missing or a worker cannot see the files."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import with_model
from dawsep.batch import RenderJob, SeparateJob, Song, run_batch
from dawsep.cli import main
from dawsep.errors import AudioFormatError, DawsepError, ModelError, PresetError, UnknownStemError
from dawsep.presets import load_preset
from test_batch import SR, make_songs, no_temp_files, tone

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster():
    """One local Ray with 2 CPUs for the module; yields its address. Its workers get this folder
    on PYTHONPATH so they can unpickle the test-only job below."""
    ray = pytest.importorskip("ray")
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway cluster: no token in ~/.ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture
def gain_preset(tmp_path) -> Path:
    """A model-free preset: fast, and needs nothing but pedalboard on the workers."""
    path = tmp_path / "gain.toml"
    path.write_text('[[chain]]\nplugin = "Gain"\ngain_db = -6.0\n[[chain]]\nplugin = "Compressor"\n'
                    'threshold_db = -20.0\nratio = 3.0\n')
    return path


def tones(root: Path, n: int, seconds: float) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        sf.write(root / f"s{i}.wav", tone(seconds, seed=i), SR, subtype="PCM_16")


def output_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and ".dawsep" not in p.parts and p.name != "manifest.json")


def manifest_songs(root: Path) -> dict[str, dict]:
    """Manifest rows by song, without the timings (the only field that differs between runs)."""
    songs = json.loads((root / "manifest.json").read_text())["songs"]
    return {s["song"]: {k: v for k, v in s.items() if k != "timings"} for s in songs}


@pytest.mark.parametrize("kind", ["separate", "render"])
def test_ray_outputs_are_byte_identical_to_the_local_engine(tmp_path, cluster, tiny_separator, kind):
    make_songs(tmp_path / "in")
    job = (SeparateJob(tiny_separator) if kind == "separate"
           else RenderJob(with_model(load_preset("bass"), tiny_separator)))
    local = run_batch(job, tmp_path / "in", tmp_path / "local", progress=False)
    remote = run_batch(job, tmp_path / "in", tmp_path / "ray", engine="ray", progress=False)
    assert sorted(remote.done) == sorted(local.done) == ["a", "album/b", "album/c"]
    assert remote.failed == local.failed and [s for s, _ in remote.failed] == ["album/broken"]
    files = output_files(tmp_path / "local")
    assert files == output_files(tmp_path / "ray") and len(files) == (15 if kind == "separate" else 3)
    for rel in files:
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "ray" / rel).read_bytes(), rel
    assert manifest_songs(tmp_path / "local") == manifest_songs(tmp_path / "ray")
    assert no_temp_files(tmp_path / "ray")


@dataclasses.dataclass
class Sabotaged:
    """``inner`` with one song that kills its worker process and one that raises."""

    inner: RenderJob
    kill: str
    fail: str

    @property
    def task(self) -> str:
        return self.inner.task

    def fingerprint(self) -> str:
        return self.inner.fingerprint()  # so a rerun with ``inner`` skips what was done

    def setup(self, threads: int) -> None:
        self.inner.setup(threads)

    def run(self, song: Song, staging: Path) -> dict:
        if song.rel == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if song.rel == self.fail:
            raise RuntimeError("sabotaged song")
        return self.inner.run(song, staging)


def test_killed_worker_and_raising_song_are_reported_and_a_rerun_completes(tmp_path, cluster, gain_preset):
    tones(tmp_path / "in", 6, 1.0)
    out = tmp_path / "out"
    job = RenderJob(load_preset(str(gain_preset)))
    report = run_batch(Sabotaged(job, kill="s1", fail="s3"), tmp_path / "in", out, jobs=2, engine="ray",
                       progress=False)
    assert sorted(report.done) == ["s0", "s2", "s4", "s5"]
    failed = dict(report.failed)
    assert sorted(failed) == ["s1", "s3"]
    assert "died while processing this song" in failed["s1"]
    assert "RuntimeError: sabotaged song" in failed["s3"]
    assert "FAILED s1: Ray worker" in report.summary()
    states = {s: row["state"] for s, row in manifest_songs(out).items()}
    assert states == {"s0": "done", "s1": "failed", "s2": "done", "s3": "failed", "s4": "done", "s5": "done"}
    assert not (out / "s1").exists() and not (out / "s3").exists()
    mtimes = {s: (out / s / "other.flac").stat().st_mtime_ns for s in report.done}

    rerun = run_batch(job, tmp_path / "in", out, engine="ray", progress=False)
    assert rerun.ok and sorted(rerun.done) == ["s1", "s3"] and sorted(rerun.skipped) == sorted(mtimes)
    for s, m in mtimes.items():
        assert (out / s / "other.flac").stat().st_mtime_ns == m  # finished songs were not redone
    for i in range(6):
        assert sf.info(str(out / f"s{i}" / "other.flac")).frames == SR
    assert no_temp_files(out)


def _done_in_ledger(ledger: Path) -> set[str]:
    if not ledger.exists():
        return set()
    with sqlite3.connect(ledger) as db:
        try:
            return {r[0] for r in db.execute("SELECT song FROM songs WHERE state='done'")}
        except sqlite3.OperationalError:  # the driver has not created the table yet
            return set()


def test_driver_killed_mid_run_then_rerun_resumes(tmp_path, cluster, gain_preset):
    tones(tmp_path / "in", 10, 20.0)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dawsep.cli", "render", str(tmp_path / "in"), "-o", str(out), "-p", str(gain_preset),
           "--engine", "ray", "--jobs", "2", "-q"]
    proc = subprocess.Popen(cmd, env={**os.environ, "RAY_ADDRESS": cluster}, stderr=subprocess.PIPE)
    ledger = out / ".dawsep" / "ledger.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(_done_in_ledger(ledger)) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make the songs longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _done_in_ledger(ledger)
    assert 2 <= len(finished) < 10
    mtimes = {s: (out / s / "other.flac").stat().st_mtime_ns for s in finished}

    rerun = run_batch(RenderJob(load_preset(str(gain_preset))), tmp_path / "in", out, engine="ray", progress=False)
    assert rerun.ok and sorted(rerun.skipped) == sorted(finished) and len(rerun.done) == 10 - len(finished)
    for s, m in mtimes.items():
        assert (out / s / "other.flac").stat().st_mtime_ns == m
    for i in range(10):
        assert sf.info(str(out / f"s{i}" / "other.flac")).frames == 20 * SR
    assert no_temp_files(out)


def test_refused_when_a_worker_cannot_see_the_files(tmp_path, cluster, gain_preset, monkeypatch):
    from dawsep import distributed

    tones(tmp_path / "in", 2, 0.5)
    # one machine cannot hide a path from its own workers: make them also check an unmounted one
    unmounted = tmp_path / "not-mounted-on-the-workers"
    real = distributed.shared_paths
    monkeypatch.setattr(distributed, "shared_paths", lambda *a: [str(unmounted), *real(*a)])
    with pytest.raises(DawsepError, match=r"cannot see .*not-mounted-on-the-workers.*every node mounts"):
        run_batch(RenderJob(load_preset(str(gain_preset))), tmp_path / "in", tmp_path / "out", engine="ray",
                  progress=False)
    assert output_files(tmp_path / "out") == []


def test_cli_engine_ray_for_render_and_separate(tmp_path, cluster, gain_preset, tiny_separator):
    make_songs(tmp_path / "in")
    runner = CliRunner()
    res = runner.invoke(main, ["render", str(tmp_path / "in"), "-o", str(tmp_path / "r"), "-p", str(gain_preset),
                               "--engine", "ray", "-j", "2", "-q"])
    assert res.exit_code == 1, res.output
    assert "3 done, 0 already done (skipped), 1 failed" in res.output and "FAILED album/broken" in res.output
    res = runner.invoke(main, ["separate", str(tmp_path / "in" / "a.wav"), "-o", str(tmp_path / "s"),
                               "-m", tiny_separator, "--two-stems", "piano", "--engine", "ray", "-q"])
    assert res.exit_code == 0, res.output
    # -m MODEL other than the default: the outputs are named after it (issue 17)
    assert output_files(tmp_path / "s") == ["a/no_piano.tiny-separator.flac", "a/piano.tiny-separator.flac"]
    res = runner.invoke(main, ["render", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "-p", str(gain_preset),
                               "--address", "10.0.0.1:6379"])
    assert res.exit_code == 2 and "--address needs --engine ray" in res.output


def test_clear_errors_without_ray_or_cluster(tmp_path, gain_preset, monkeypatch):
    from dawsep import distributed

    tones(tmp_path / "in", 1, 0.2)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # as if Ray were not installed
        with pytest.raises(DawsepError, match=r"pip install 'dawsep\[dist\]'"):
            run_batch(RenderJob(load_preset(str(gain_preset))), tmp_path / "in", tmp_path / "out", engine="ray")
    assert not (tmp_path / "out").exists()  # refused before touching anything
    with pytest.raises(DawsepError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        distributed._check_reachable("127.0.0.1:1")  # Ray itself would retry for minutes
    # the CLI and the local engine never import Ray
    probe = subprocess.run([sys.executable, "-c", "import sys, dawsep.cli, dawsep.batch; print('ray' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False"


@dataclasses.dataclass
class FailsToLoad:
    """A job whose setup raises ``error`` on every worker (as a bad model or preset would)."""

    error: Exception
    task: str = "fails-to-load"

    def fingerprint(self) -> str:
        return "x"

    def setup(self, threads: int) -> None:
        raise self.error

    def run(self, song: Song, staging: Path) -> dict:
        raise AssertionError("never reached")


@pytest.mark.parametrize("error", [
    AudioFormatError("/x/impulse.wav", "is not a readable WAV file"),
    PresetError("/x/mine.toml", "chain[1].ratio", "0.5 is out of range"),
    UnknownStemError("umx", "vocals", ("piano", "bass")),
    ModelError("cannot load model /x/m.onnx"),
])
def test_errors_keep_their_type_and_exit_code_through_ray(tmp_path, cluster, error):
    """Issue 17, item 4: an error raised while a worker loads the job reaches the driver as the
    same type, with its exit code and fields (it was rebuilt from its class name and lost both)."""
    tones(tmp_path / "in", 1, 0.2)
    with pytest.raises(DawsepError) as info:
        run_batch(FailsToLoad(error), tmp_path / "in", tmp_path / "out", engine="ray", progress=False)
    got = info.value
    assert type(got) is type(error) and got.exit_code == error.exit_code
    assert str(error) in str(got) and "Ray worker on" in str(got)
    assert {k: v for k, v in vars(got).items()} == {k: v for k, v in vars(error).items()}
