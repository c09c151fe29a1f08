"""What a hostile folder, a careless preset, a full disk and a killed run can do (issue 18).

Each test pins one case that once went wrong: a silent overwrite, a traceback that killed the
batch, a file changed outside OUT, native code run by a preset, a misleading exit code or message.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from dawsep import audio, batch
from dawsep.batch import RenderJob, SeparateJob, run_batch
from dawsep.chain import BuiltinStep, Chain
from dawsep.cli import main
from dawsep.errors import (AudioFormatError, DawsepError, DiskFullError, OutputBusyError, OutputPathError,
                           PluginError, PresetError)
from dawsep.presets import list_presets, load_preset, parse_preset

SR = 44100


def tone(seconds: float, sr: int = SR, channels: int = 2, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """(samples, channels): a tone plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t)[:, None] + 0.01 * rng.standard_normal((t.size, channels))
    return x.astype(np.float32)


@pytest.fixture
def gain(tmp_path) -> Path:
    """A model-free preset: fast, and it writes ``other.wav``."""
    path = tmp_path / "gain.toml"
    path.write_text('[[chain]]\nplugin = "Gain"\ngain_db = -6.0\n[output]\nformat = "wav"\nbit_depth = 16\n')
    return path


def files_under(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".dawsep" not in p.parts)


def no_temp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.is_file()
                and (p.name.endswith((".tmp", ".part")) or "staging" in p.parts)]


def tiny_preset(tmp_path: Path, model: str, name: str = "other") -> Path:
    """A shipped preset with the tiny test separator in place of the packaged model."""
    path = tmp_path / f"{name}-tiny.toml"
    shipped = resources.files("dawsep._presets").joinpath(f"{name}.toml").read_text()
    path.write_text(shipped.replace('model = "default"', f'model = "{model}"', 1))
    return path


# ------------------------------------------------------------------ 1-4: names and inputs


def test_colliding_names_each_get_their_own_folder_stable_across_reruns(tmp_path, gain):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "song.wav", tone(0.2, freq=220), SR)
    out = tmp_path / "out"
    first = run_batch(RenderJob(load_preset(str(gain))), src, out, progress=False)
    assert first.done == ["song"]
    # files added later never move a song that already has a folder
    sf.write(src / "song.flac", tone(0.2, freq=330), SR)
    sf.write(src / "song_wav.mp3", tone(0.2, freq=440), SR)
    second = run_batch(RenderJob(load_preset(str(gain))), src, out, progress=False)
    assert second.skipped == ["song"] and len(second.done) == 2 and not second.failed
    folders = {p.parent.as_posix() for p in map(Path, files_under(out)) if p.name == "other.wav"}
    assert len(folders) == 3  # three inputs, three folders
    manifest = json.loads((out / "manifest.json").read_text())
    inputs = {Path(s["input"]).name: s["song"] for s in manifest["songs"]}
    assert sorted(inputs) == ["song.flac", "song.wav", "song_wav.mp3"] and len(set(inputs.values())) == 3
    assert inputs["song.wav"] == "song"
    # each folder holds its own input's audio (no overwrite): the 220/330/440 Hz tones
    for name, rel in inputs.items():
        y, _ = sf.read(out / rel / "other.wav")
        freq = np.argmax(np.abs(np.fft.rfft(y[:, 0]))) * SR / y.shape[0]
        assert abs(freq - {"song.wav": 220, "song.flac": 330, "song_wav.mp3": 440}[name]) < 10
    third = run_batch(RenderJob(load_preset(str(gain))), src, out, progress=False)
    assert sorted(third.skipped) == sorted(inputs.values()) and third.done == []


def test_fresh_collisions_never_map_two_inputs_to_one_folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("song.wav", "song.flac", "song_wav.mp3", "song_wav_2.wav", "song_flac.ogg"):
        sf.write(src / name, tone(0.05), SR)
    songs, _ = batch.discover(src, tmp_path / "out", audio.READ_EXTENSIONS)
    rels = [s.rel for s in songs]
    assert len(rels) == 5 and len(set(rels)) == 5
    again, _ = batch.discover(src, tmp_path / "out", audio.READ_EXTENSIONS)
    assert [(s.path, s.rel) for s in again] == [(s.path, s.rel) for s in songs]  # deterministic


def test_song_names_never_collide_with_dawsep_files(tmp_path, gain):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "manifest.json.wav", tone(0.1), SR)
    sf.write(src / "sub" / "other.wav.flac", tone(0.1), SR)  # its folder must not be named like an output
    report = run_batch(RenderJob(load_preset(str(gain))), src, tmp_path / "out", progress=False)
    assert report.ok and len(report.done) == 2, report.summary()
    out = tmp_path / "out"
    assert json.loads((out / "manifest.json").read_text())["last_run"]["done"] == 2
    for rel in report.done:
        assert (out / rel / "other.wav").is_file()
        assert not any(part.lower().endswith((".json", ".wav", ".flac")) for part in Path(rel).parts)
    assert no_temp_files(out)
    # a single file called like the state folder
    sf.write(tmp_path / ".dawsep.wav", tone(0.1), SR)
    one = run_batch(RenderJob(load_preset(str(gain))), tmp_path / ".dawsep.wav", tmp_path / "o2", progress=False)
    assert one.ok and one.done != [".dawsep"] and (tmp_path / "o2" / one.done[0] / "other.wav").is_file()


def _link_zoo(src: Path, outside: Path) -> None:
    src.mkdir()
    outside.mkdir()
    sf.write(src / "good.wav", tone(0.1), SR)
    sf.write(outside / "elsewhere.wav", tone(0.1), SR)
    os.symlink(src / "loop.wav", src / "loop.wav")  # a link to itself
    os.symlink(src / "gone.wav", src / "broken.wav")
    os.symlink(outside, src / "linked")  # a symlinked folder
    (src / "folder.wav").mkdir()
    sf.write(src / "folder.wav" / "inner.wav", tone(0.1), SR)
    sf.write(src / "..wav", tone(0.1), SR, format="WAV")


def test_bad_links_and_odd_entries_are_reported_and_the_rest_run(tmp_path, gain):
    _link_zoo(tmp_path / "in", tmp_path / "outside")
    report = run_batch(RenderJob(load_preset(str(gain))), tmp_path / "in", tmp_path / "out", progress=False)
    assert report.done == ["good"] and not report.failed
    why = dict(report.excluded)
    assert set(why) == {"loop.wav", "broken.wav", "linked", "folder.wav", "..wav"}, why
    assert "loop" in why["loop.wav"] and "broken" in why["broken.wav"]
    assert "symbolic link" in why["linked"] and "folder" in why["folder.wav"] and "hidden" in why["..wav"]
    text = report.summary()
    for name in why:
        assert name in text
    res = CliRunner().invoke(main, ["render", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "-p", str(gain), "-q"])
    assert res.exit_code == 0 and "broken.wav" in res.output, res.output


def test_output_folder_equal_to_the_input_is_refused(tmp_path, gain):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(0.1), SR)
    with pytest.raises(OutputPathError, match="is the input folder"):
        run_batch(RenderJob(load_preset(str(gain))), src, src, progress=False)
    assert sorted(p.name for p in src.iterdir()) == ["a.wav"]
    res = CliRunner().invoke(main, ["render", str(src), "-o", str(src), "-p", str(gain), "-q"])
    assert res.exit_code == 7
    # OUT inside IN: allowed, and its outputs are never read back as songs
    for _ in range(2):
        report = run_batch(RenderJob(load_preset(str(gain))), src, src / "stems", progress=False)
        assert sorted(report.done + report.skipped) == ["a"]


# ------------------------------------------------------------------ 5-6: kills and signals


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _slow_songs(src: Path, n: int, seconds: float) -> None:
    src.mkdir()
    for i in range(n):
        sf.write(src / f"song{i}.wav", tone(seconds, seed=i), SR, subtype="PCM_16")


def _wait_for(cond, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_workers_die_with_a_killed_driver_and_write_nothing_after(tmp_path, tiny_separator):
    preset = tiny_preset(tmp_path, tiny_separator)
    _slow_songs(tmp_path / "in", 4, 40.0)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "dawsep.cli", "render", str(tmp_path / "in"), "-o", str(out),
                             "--preset", str(preset), "-q", "--jobs", "2"], stderr=subprocess.DEVNULL)
    staging = out / ".dawsep" / "staging"
    try:
        assert _wait_for(lambda: staging.is_dir() and len(list(staging.iterdir())) >= 2, 120), "workers never started"
        workers = _descendants(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _wait_for(lambda: not any(_alive(w) for w in workers), 10), "workers outlived their driver"
    finally:
        for w in _descendants(proc.pid) | locals().get("workers", set()):
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    before = files_under(out)
    time.sleep(1.0)
    assert files_under(out) == before


def test_a_worker_whose_driver_is_gone_writes_nothing(tmp_path, gain, monkeypatch):
    from dawsep.batch import worker as batch  # the worker's process state and per-song step
    src = tmp_path / "a.wav"
    sf.write(src, tone(0.1), SR)
    out, staging = tmp_path / "out", tmp_path / "out" / ".dawsep" / "staging"
    staging.mkdir(parents=True)
    batch._worker_init(RenderJob(load_preset(str(gain))), 1, own_process=False)
    monkeypatch.setattr(batch, "_DRIVER_PID", os.getppid() + 1_000_000)  # as if this worker's driver had died
    res = batch._run_one(batch.Song(str(src), "a"), str(out), str(staging))
    assert not res.ok and "driver" in res.error
    assert files_under(out) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_writes_the_manifest_and_exits_with_the_signal_code(tmp_path, tiny_separator, sig, code):
    preset = tiny_preset(tmp_path, tiny_separator)
    _slow_songs(tmp_path / "in", 8, 15.0)
    out = tmp_path / "out"
    # An ignored SIGINT is inherited across exec (a shell's background jobs start that way, and the
    # clean-clone suite run here failed with it): give the CLI the default a terminal gives.
    proc = subprocess.Popen([sys.executable, "-m", "dawsep.cli", "render", str(tmp_path / "in"), "-o", str(out),
                             "--preset", str(preset), "-q"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ledger = out / ".dawsep" / "ledger.sqlite"

    def done() -> int:
        if not ledger.exists():
            return 0
        try:
            with sqlite3.connect(ledger) as db:
                return db.execute("SELECT count(*) FROM songs WHERE state='done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    assert _wait_for(lambda: done() >= 1, 120) and proc.poll() is None
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted" in err.lower() or "terminated" in err.lower()
    manifest = json.loads((out / "manifest.json").read_text())
    finished = [s["song"] for s in manifest["songs"] if s["state"] == "done"]
    assert len(finished) >= 1 and all((out / s / "other.flac").is_file() for s in finished)
    assert no_temp_files(out)


# ------------------------------------------------------------------ 7: a full disk


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_writing_audio_is_one_clear_error_and_the_rerun_resumes(tmp_path, gain, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        sf.write(src / f"s{i}.wav", tone(0.2, seed=i), SR)
    out = tmp_path / "out"
    calls = {"n": 0}
    real = sf.SoundFile.write

    def write(self, data):
        calls["n"] += 1
        if calls["n"] > 1:  # the first song fits, then the disk is full
            _enospc()
        return real(self, data)

    with monkeypatch.context() as m:
        m.setattr(sf.SoundFile, "write", write)
        with pytest.raises(DiskFullError, match=r"no space left on the device of .*out") as info:
            run_batch(RenderJob(load_preset(str(gain))), src, out, progress=False)
    assert "rerun" in str(info.value)
    assert no_temp_files(out)
    assert files_under(out) == ["manifest.json", "s0/other.wav"]  # the finished song, nothing half-written
    rerun = run_batch(RenderJob(load_preset(str(gain))), src, out, progress=False)
    assert rerun.skipped == ["s0"] and sorted(rerun.done) == ["s1", "s2"]


def test_full_disk_as_libsndfile_reports_it(tmp_path, monkeypatch):
    """libsndfile says only "System error."; the free space says why."""
    def fail(self, data):
        raise RuntimeError("System error.")

    monkeypatch.setattr(sf.SoundFile, "write", fail)
    monkeypatch.setattr(audio, "free_bytes", lambda path: 0)
    with pytest.raises(DiskFullError, match="no space left"):
        audio.save(tmp_path / "x.flac", np.zeros((2, 100), np.float32), SR)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_in_the_ledger_is_one_clear_error(tmp_path, gain, monkeypatch):
    from dawsep.batch import ledger as batch  # the module that opens the ledger's database
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(0.1), SR)
    real_connect = sqlite3.connect

    class Full:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.lstrip().upper().startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def close(self):
            self.db.close()

    monkeypatch.setattr(batch.sqlite3, "connect", lambda *a, **k: Full(real_connect(*a, **k)))
    res = CliRunner().invoke(main, ["render", str(src), "-o", str(tmp_path / "out"), "-p", str(gain), "-q"])
    assert res.exit_code == DiskFullError.exit_code and "no space left" in res.output, res.output
    assert "Traceback" not in res.output and "OperationalError" not in res.output


def test_full_disk_while_writing_the_manifest_keeps_the_old_one(tmp_path, gain, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(0.1), SR)
    out = tmp_path / "out"
    run_batch(RenderJob(load_preset(str(gain))), src, out, progress=False)
    old = (out / "manifest.json").read_text()
    monkeypatch.setattr(batch, "_write_all", _enospc)
    with pytest.raises(DiskFullError):
        run_batch(RenderJob(load_preset(str(gain))), src, out, force=True, progress=False)
    assert (out / "manifest.json").read_text() == old and no_temp_files(out)


# ------------------------------------------------------------------ 8: links inside OUT


def test_a_lock_link_cannot_empty_a_file_outside_out(tmp_path, gain):
    sf.write(tmp_path / "a.wav", tone(0.1), SR)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out" / ".dawsep").mkdir(parents=True)
    os.symlink(victim, tmp_path / "out" / ".dawsep" / "lock")
    with pytest.raises(OutputPathError, match="symbolic link"):
        run_batch(RenderJob(load_preset(str(gain))), tmp_path / "a.wav", tmp_path / "out", progress=False)
    assert victim.read_text() == "precious"


def test_a_linked_state_folder_is_refused(tmp_path, gain):
    sf.write(tmp_path / "a.wav", tone(0.1), SR)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "staging").mkdir(parents=True)
    (elsewhere / "staging" / "keep.txt").write_text("mine")
    (tmp_path / "out").mkdir()
    os.symlink(elsewhere, tmp_path / "out" / ".dawsep")
    with pytest.raises(OutputPathError, match="symbolic link"):
        run_batch(RenderJob(load_preset(str(gain))), tmp_path / "a.wav", tmp_path / "out", progress=False)
    assert (elsewhere / "staging" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["staging"]


def test_links_inside_the_state_folder_are_not_followed(tmp_path, gain):
    sf.write(tmp_path / "a.wav", tone(0.1), SR)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    state = tmp_path / "out" / ".dawsep"
    state.mkdir(parents=True)
    os.symlink(elsewhere, state / "staging")
    report = run_batch(RenderJob(load_preset(str(gain))), tmp_path / "a.wav", tmp_path / "out", progress=False)
    assert report.done == ["a"] and (elsewhere / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"not yours")
    (state / "ledger.sqlite").unlink()
    os.symlink(victim, state / "ledger.sqlite")
    with pytest.raises(OutputPathError, match="symbolic link"):
        run_batch(RenderJob(load_preset(str(gain))), tmp_path / "a.wav", tmp_path / "out", force=True, progress=False)
    assert victim.read_bytes() == b"not yours"


# ------------------------------------------------------------------ 9-10: presets and code


@pytest.fixture
def loads(monkeypatch):
    """Every VST3 pedalboard is asked to load (nothing is loaded: the call fails)."""
    import pedalboard

    calls: list[str] = []

    def fake(path, *a, **k):
        calls.append(str(path))
        raise RuntimeError("test: not loading plugins")

    monkeypatch.setattr(pedalboard, "load_plugin", fake)
    return calls


def test_showing_a_preset_never_loads_its_plugins(tmp_path, loads):
    bundle = tmp_path / "evil.vst3"
    bundle.mkdir()
    f = tmp_path / "evil.toml"
    f.write_text('[[chain]]\nplugin = "Gain"\ngain_db = -3.0\n[[chain]]\nvst3 = "/usr/lib/vst3/ZamCompX2.vst3"\n'
                 '[[chain]]\nvst3 = "evil.vst3"\n')
    res = CliRunner().invoke(main, ["presets", "show", str(f)])
    assert res.exit_code == 0, res.output
    assert "Gain" in res.output and "ZamCompX2.vst3" in res.output and "evil.vst3" in res.output
    assert loads == []
    load_preset(str(f))  # validating loads nothing either
    assert loads == []


def test_a_relative_vst3_is_never_taken_from_the_preset_folder(tmp_path, loads, monkeypatch):
    (tmp_path / "evil.vst3").mkdir()
    f = tmp_path / "evil.toml"
    f.write_text('[[chain]]\nvst3 = "evil.vst3"\n')
    monkeypatch.delenv("VST3_PATH", raising=False)
    monkeypatch.chdir(tmp_path)  # not from the working folder either
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    p = load_preset(str(f))
    with pytest.raises(PresetError, match="not found in the standard VST3 folders"):
        p.build_chain()
    assert loads == []
    # found in a standard folder ($VST3_PATH first): that one is loaded
    plugins = tmp_path / "plugins"
    (plugins / "evil.vst3").mkdir(parents=True)
    monkeypatch.setenv("VST3_PATH", str(plugins))
    with pytest.raises(PresetError, match="cannot load VST3"):
        load_preset(str(f)).build_chain()
    assert loads == [str(plugins / "evil.vst3")]


def test_a_bare_name_is_always_a_shipped_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bass").mkdir()
    (tmp_path / "piano").write_text('name = "hijack"\n')
    res = CliRunner().invoke(main, ["presets", "list"])
    assert res.exit_code == 0 and "bass" in res.output and "piano" in res.output, res.output
    assert load_preset("piano").source == "presets/piano.toml"
    assert load_preset("bass").source == "presets/bass.toml"
    assert load_preset("./piano").name == "hijack"  # a path says so with a slash
    assert sorted(list_presets()) == ["bass", "drums", "guitar", "other", "piano"]


# ------------------------------------------------------------------ 11-12: careless presets


def test_integral_float_where_an_int_is_expected(tmp_path):
    p = parse_preset('[[chain]]\nplugin = "HighpassFilter"\ncutoff_frequency_hz = 80.0\nslope_db_per_octave = 24.0\n')
    assert type(p.chain[0].parameters["slope_db_per_octave"]) is int and p.chain[0].parameters["slope_db_per_octave"] == 24
    y = p.build_chain()(np.zeros((2, 512), np.float32), SR)
    assert y.shape == (2, 512)
    with pytest.raises(PresetError, match="slope_db_per_octave"):
        parse_preset('[[chain]]\nplugin = "HighpassFilter"\nslope_db_per_octave = 24.5\n')


def test_deeply_nested_presets_are_a_preset_error():
    for text in ("x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 5000 + "1" + "}" * 5000,
                 "[[chain]]\nplugin = \"Gain\"\ngain_db = " + "[" * 30 + "]" * 30):
        with pytest.raises(PresetError, match="nest|expected"):
            parse_preset(text, "deep.toml")


def test_a_chain_driven_to_inf_is_a_chain_error(tmp_path):
    f = tmp_path / "loud.toml"
    f.write_text('[[chain]]\nplugin = "Gain"\ngain_db = 60.0\n' * 14)  # 840 dB: beyond float32
    sf.write(tmp_path / "a.wav", tone(0.2), SR)
    report = run_batch(RenderJob(load_preset(str(f))), tmp_path / "a.wav", tmp_path / "out", progress=False)
    (song, err), = report.failed
    assert err.startswith("PresetError") and "loud.toml" in err and "non-finite" in err, err
    assert "AudioFormatError" not in err


def test_a_convolution_impulse_response_must_be_audio(tmp_path):
    f = tmp_path / "conv.toml"
    f.write_text('[[chain]]\nplugin = "Convolution"\nimpulse_response_filename = "/etc/passwd"\n')
    with pytest.raises(PresetError, match=r"chain\[0\]\.impulse_response_filename\]: .*audio"):
        load_preset(str(f))
    with pytest.raises(PluginError, match="impulse response"):
        Chain([BuiltinStep("Convolution", {"impulse_response_filename": "/etc/passwd"})])
    ir = tmp_path / "ir.wav"
    sf.write(ir, np.r_[1.0, np.zeros(99)].astype(np.float32), SR)
    f.write_text(f'[[chain]]\nplugin = "Convolution"\nimpulse_response_filename = "{ir}"\n')
    assert load_preset(str(f)).build_chain() is not None


# ------------------------------------------------------------------ 13-14: tiny and cut files


def test_a_one_sample_input_gives_an_empty_transcription(tmp_path, tiny_transcriber, tiny_separator):
    sf.write(tmp_path / "one.wav", np.full((1, 2), 0.1, np.float32), SR)
    res = CliRunner().invoke(main, ["transcribe", str(tmp_path / "one.wav"), "-o", str(tmp_path / "t"),
                                    "-m", tiny_transcriber, "-q"])
    assert res.exit_code == 0, res.output
    import mido
    mid = mido.MidiFile(tmp_path / "t" / "one" / "piano.mid")
    assert not [m for t in mid.tracks for m in t if m.type == "note_on"]
    preset = tmp_path / "keys.toml"
    preset.write_text(f'[separate]\nstem = "piano"\nmodel = "{tiny_separator}"\n'
                      f'[transcribe]\nmodel = "{tiny_transcriber}"\n')
    res = CliRunner().invoke(main, ["separate", str(tmp_path / "one.wav"), "-o", str(tmp_path / "s"),
                                    "-p", str(preset), "-q"])
    assert res.exit_code == 0, res.output
    assert sf.info(str(tmp_path / "s" / "one" / "piano.flac")).frames == 1


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_info_refuses_what_separate_refuses(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt}"
    sf.write(tmp_path / f"whole.{fmt}", tone(5.0), SR)
    data = (tmp_path / f"whole.{fmt}").read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(AudioFormatError, match="truncated"):
        audio.info(path)
    res = CliRunner().invoke(main, ["info", str(path)])
    assert res.exit_code == 3 and "truncated" in res.output
    assert audio.info(tmp_path / f"whole.{fmt}").frames == 5 * SR  # whole files still pass


# ------------------------------------------------------------------ 15: exit codes


def test_exit_codes_for_a_busy_out_no_input_and_the_failure_count(tmp_path, gain):
    runner = CliRunner()
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(0.1), SR)
    out = tmp_path / "out"
    (out / ".dawsep").mkdir(parents=True)
    with open(out / ".dawsep" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = runner.invoke(main, ["render", str(src), "-o", str(out), "-p", str(gain), "-q"])
        with pytest.raises(OutputBusyError):
            run_batch(RenderJob(load_preset(str(gain))), src, out, progress=False)
    assert res.exit_code == OutputBusyError.exit_code == 8 and "another dawsep run" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["render", str(empty), "-o", str(out), "-p", str(gain), "-q"])
    assert res.exit_code == 9 and "no audio files found" in res.output and "empty" in res.output
    # two songs done, one failing: "1 of 3 song(s) failed" on the rerun too
    sf.write(src / "b.wav", tone(0.1), SR)
    (src / "bad.wav").write_bytes(b"RIFF nonsense")
    res = runner.invoke(main, ["render", str(src), "-o", str(out), "-p", str(gain), "-q"])
    assert res.exit_code == 1 and "1 of 3 song(s) failed" in res.output, res.output
    res = runner.invoke(main, ["render", str(src), "-o", str(out), "-p", str(gain), "-q"])
    assert res.exit_code == 1 and "2 already done" in res.output and "1 of 3 song(s) failed" in res.output


# ------------------------------------------------------------------ 16: messages


def test_messages_name_the_flag_the_file_and_the_key(tmp_path, tiny_separator, capfd):
    sf.write(tmp_path / "six.wav", np.zeros((100, 6), np.float32), SR)
    with pytest.raises(AudioFormatError, match="pass --downmix"):
        audio.stream(tmp_path / "six.wav")
    # a bad model in a preset: the file and the key
    f = tmp_path / "m.toml"
    f.write_text('[separate]\nstem = "piano"\nmodel = "nope"\n')
    with pytest.raises(DawsepError, match=r"m.toml \[separate.model\]: .*unknown separator model 'nope'"):
        load_preset(str(f)).build_chain()
    with pytest.raises(DawsepError, match=r"m.toml \[separate.model\]"):
        SeparateJob(preset=load_preset(str(f))).setup(1)
    # an unknown option on a model step: the key and what is allowed
    f.write_text(f'[[chain]]\nmodel = "separate"\nstem = "piano"\nmodel_path = "{tiny_separator}"\n')
    with pytest.raises(PresetError, match=r"chain\[0\].model_path\]: .*allowed: .*segment_seconds") as info:
        load_preset(str(f))
    assert "_step_factory" not in str(info.value)
    # a UTF-8 byte order mark is fine
    f.write_bytes('\ufeffname = "bom"\n[[chain]]\nplugin = "Gain"\ngain_db = -1.0\n'.encode())
    assert load_preset(str(f)).name == "bom"


def test_mp3_decoder_chatter_names_the_file(tmp_path, capfd):
    sf.write(tmp_path / "whole.mp3", tone(5.0), SR)
    data = (tmp_path / "whole.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[:len(data) // 2])
    capfd.readouterr()
    with pytest.raises(AudioFormatError):
        audio.info(tmp_path / "cut.mp3")
    err = capfd.readouterr().err
    for line in err.splitlines():
        assert "cut.mp3" in line, err


# ------------------------------------------------------------------ 17: high rates


def test_stems_add_up_to_a_192k_input(tmp_path, tiny_separator):
    rate, n = 192000, 192000
    rng = np.random.default_rng(0)
    # noise below 7.6 kHz (the tiny model's masks sum to one below its 11 kHz cut-off) ...
    low = audio.resample(0.2 * rng.standard_normal((2, n * 16000 // rate)).astype(np.float32), 16000, rate)[:, :n]
    t = np.arange(n) / rate
    high = 0.1 * np.sin(2 * np.pi * 40000 * t) + 0.05 * np.sin(2 * np.pi * 61000 * t)  # ... and far above 22 kHz
    x = (low + high[None]).astype(np.float32)
    sf.write(tmp_path / "hi.wav", x.T, rate, subtype="FLOAT")
    report = run_batch(SeparateJob(model=tiny_separator, output=batch.OutputOptions("wav", 32)), tmp_path / "hi.wav",
                       tmp_path / "out", progress=False)
    assert report.ok, report.summary()
    # a separator other than the default names its outputs (issue 17): <stem>.tiny-separator.wav
    stems = [sf.read(tmp_path / "out" / "hi" / f"{s}.tiny-separator.wav", always_2d=True)[0].T for s in
             ("piano", "bass", "drums", "guitar", "other")]
    residual = x - sum(stems)
    core = slice(2000, -2000)
    err_db = 10 * np.log10(np.mean(residual[:, core] ** 2) / np.mean(x[:, core] ** 2))
    assert err_db < -50, err_db
    # the array API says the same
    from dawsep.separate import Separator
    out = Separator(tiny_separator, threads=1).separate(x, rate)
    err_db = 10 * np.log10(np.mean((x - sum(out.values()))[:, core] ** 2) / np.mean(x[:, core] ** 2))
    assert err_db < -50, err_db
    # so does the streaming separator (a DAW at 192 kHz), delayed by its latency
    from dawsep.stream import StreamingSeparator
    proc = StreamingSeparator(tiny_separator, sample_rate=rate, max_block_size=4096)
    lat = proc.latency_samples
    padded = np.concatenate([x, np.zeros((2, lat), np.float32)], axis=1)
    y = np.concatenate([proc.process(padded[:, i:i + 4096]) for i in range(0, padded.shape[1], 4096)], axis=2)
    total = y.sum(axis=0)[:, lat:lat + n]
    err_db = 10 * np.log10(np.mean((x - total)[:, core] ** 2) / np.mean(x[:, core] ** 2))
    assert err_db < -50, err_db
    # --two-stems: the rest takes it
    report = run_batch(SeparateJob(model=tiny_separator, two_stems="piano", output=batch.OutputOptions("wav", 32)),
                       tmp_path / "hi.wav", tmp_path / "two", progress=False)
    pair = [sf.read(tmp_path / "two" / "hi" / f"{s}.tiny-separator.wav", always_2d=True)[0].T
            for s in ("piano", "no_piano")]
    err_db = 10 * np.log10(np.mean((x - sum(pair))[:, core] ** 2) / np.mean(x[:, core] ** 2))
    assert err_db < -50, err_db


# ------------------------------------------------------------------ 18: noise is no piano


def test_a_pedal_with_no_note_under_it_is_not_written():
    from dawsep.transcribe import DecodeOptions, OnlineDecoder, PedalEvent, decode

    frames = 200
    post = {k: np.zeros((frames, 88), np.float32) for k in ("onset", "frame", "offset", "velocity")}
    post["pedal"] = np.zeros((frames, 1), np.float32)
    post["pedal"][10:60] = 0.9  # pressed over nothing: dropped
    post["pedal"][100:160] = 0.9  # a note struck 1 frame later sounds under it: kept
    post["onset"][101, 39], post["frame"][101:150, 39], post["velocity"][101, 39] = 0.9, 0.8, 0.5
    notes, pedal = decode(post, 0.02, DecodeOptions())
    assert len(notes) == 1 and pedal == [PedalEvent(2.0, 3.2)]
    live = OnlineDecoder(DecodeOptions(), 0.02)
    live.push(post)
    live.flush()
    assert [round(p, 6) for p in live.pedal_confirmed] == [2.0]  # live CC64 agrees, no later than before


def test_the_shipped_transcriber_writes_nothing_for_white_noise(tmp_path):
    from dawsep.transcribe import Transcriber, options_from_preset

    x = (0.316 * np.random.default_rng(0).standard_normal((2, 20 * SR))).astype(np.float32)  # -10 dBFS
    result = Transcriber("default", threads=1).transcribe(x, SR, options_from_preset(load_preset("piano").transcribe))
    assert result.pedal == []  # before the pedal rule: 83 presses a minute
    assert len(result.notes) <= 2  # at most 6 a minute (measured: 0 to 3)


def test_fresh_staging_survives_a_killed_runs_straggler_still_writing(tmp_path, monkeypatch):
    """A killed run's worker (a Ray actor outliving its driver) may still write into the old
    staging folder while the rerun clears it: the rerun must get an empty staging folder, not
    'File exists', and the old run's files must go."""
    from dawsep.batch import ledger

    state = tmp_path / "out" / ".dawsep"
    (state / "staging" / "old-song").mkdir(parents=True)
    (state / "staging" / "old-song" / "piano.flac").write_bytes(b"partial")
    (state / "staging.stale-1-2" / "x").mkdir(parents=True)  # left by an earlier rerun's race
    real_rmtree = ledger.shutil.rmtree

    def rmtree_while_a_straggler_writes(path, *args, **kwargs):
        real_rmtree(path, *args, **kwargs)
        (state / "staging" / "old-song").mkdir(parents=True, exist_ok=True)  # it re-creates its folder
        (state / "staging" / "old-song" / "bass.flac").write_bytes(b"late")

    monkeypatch.setattr(ledger.shutil, "rmtree", rmtree_while_a_straggler_writes)
    staging = ledger.fresh_staging(state)
    assert staging == state / "staging" and staging.is_dir() and not staging.is_symlink()
    assert not (staging / "old-song" / "piano.flac").exists()  # the killed run's output is gone
    assert sorted(p.name for p in state.iterdir()) == ["staging"]  # every renamed-aside folder removed
