"""What a user meets first (issue 17): exit codes and messages, whole effect tails, errors that
keep their type, honest reruns, atomic writes, readable plots and MIDI, and runnable docs.

Each test pins one case that once went wrong; the defaults that every route shares are pinned in
``tests/test_defaults.py``.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from dawsep import errors
from dawsep.cli import main
from tests.test_hostile import tone

SR = 44100


def files_under(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".dawsep" not in p.parts)


# ------------------------------------------------------------------ 8: usage errors are usage errors


@pytest.mark.parametrize("flag", [["--two-stems", "vocals"]])
def test_a_stem_the_model_lacks_is_a_usage_error(tmp_path, tiny_separator, flag):
    sf.write(tmp_path / "a.wav", tone(0.3), SR)
    res = CliRunner().invoke(main, ["separate", str(tmp_path / "a.wav"), "-o", str(tmp_path / "out"),
                                    "-m", tiny_separator, "-q", *flag])
    assert res.exit_code == 2, res.output
    assert flag[0] in res.output and "'vocals'" in res.output and "piano, bass, drums, guitar, other" in res.output
    assert not (tmp_path / "out").exists()


def test_an_empty_input_folder_says_so(tmp_path, tiny_separator):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["separate", str(tmp_path / "empty"), "-o", str(tmp_path / "out"),
                                    "-m", tiny_separator, "-q"])
    assert res.exit_code == errors.NoInputError.exit_code == 9
    assert "no audio files found" in res.output and "the folder is empty" in res.output


# ------------------------------------------------------------------ 4: errors keep their type


def _every_error() -> list[Exception]:
    made = []
    for name in dir(errors):
        cls = getattr(errors, name)
        if not (isinstance(cls, type) and issubclass(cls, (errors.DawsepError, errors.Interrupted))):
            continue
        if cls is errors.AudioFormatError:
            made.append(cls("/x/a.wav", "is truncated"))
        elif cls is errors.PresetError:
            made.append(cls("/x/p.toml", "chain[0].ratio", "0.5 is out of range"))
        elif cls is errors.UnknownStemError:
            made.append(cls("umx", "vocals", ("piano", "bass")))
        elif cls is errors.Interrupted:
            made.append(cls(15))
        else:
            made.append(cls(f"a {name}"))
    return made


@pytest.mark.parametrize("error", _every_error(), ids=lambda e: type(e).__name__)
def test_every_error_survives_a_process_boundary(error):
    """Worker processes and Ray ship errors pickled: each comes back as its own type, with its
    message, exit code and fields (AudioFormatError and PresetError once could not be rebuilt)."""
    error.step_index = 2  # what Chain adds to say which step failed
    got = pickle.loads(pickle.dumps(error))
    assert type(got) is type(error) and str(got) == str(error) and vars(got) == vars(error)
    assert getattr(got, "exit_code", None) == getattr(error, "exit_code", None)


def test_a_preset_names_the_bad_key_from_the_error_field_not_its_text(monkeypatch):
    """The preset loader takes the offending parameter from ``PluginError.parameter``; it once
    searched the message for the key's name, and a message that did not quote it lost the key."""
    from dawsep import chain, presets

    def validate(name, params):
        raise errors.PluginError("the value is too large for this compressor", parameter="ratio")

    monkeypatch.setattr(presets, "validate_builtin", validate)
    with pytest.raises(errors.PresetError) as info:
        presets.parse_preset('[[chain]]\nplugin = "Compressor"\nthreshold_db = -10.0\nratio = 3.0\n', "p.toml")
    assert info.value.key == "chain[0].ratio"
    monkeypatch.undo()
    with pytest.raises(errors.PluginError) as info:
        chain.validate_builtin("Compressor", {"ratio": 0.5})
    assert info.value.parameter == "ratio"
    with pytest.raises(errors.PluginError) as info:
        chain.check_model_step_options("separate", {"stem": "piano", "colour": "red"})
    assert info.value.parameter == "colour"


def test_a_mono_only_plugin_is_found_by_trying_mono_not_by_its_message():
    """A plugin that refuses two channels is run per channel when it takes one, whatever its
    error says (the check once looked for the word "channel" in the message)."""
    from dawsep.stages import is_mono_only as _is_mono_only

    class Plugin:
        def __init__(self, mono: bool, message: str):
            self.mono, self.message = mono, message

        def process(self, x, sr, reset=True):
            if x.shape[0] == 2 and self.mono or not self.mono and x.shape[0] == 1:
                raise ValueError(self.message)
            return x

        def reset(self):
            pass

    assert _is_mono_only(Plugin(True, "Plugin expects a 1-in/1-out bus layout"))
    assert not _is_mono_only(Plugin(False, "unused"))

    class Broken(Plugin):
        def process(self, x, sr, reset=True):
            raise ValueError("this plugin is broken, whatever the channel count")

    with pytest.raises(ValueError, match="broken"):
        _is_mono_only(Broken(True, ""))


@pytest.mark.parametrize("rates", [(44100, 48000), (48000, 44100), (96000, 44100), (16000, 44100)])
def test_the_resampler_says_how_much_it_holds_back(rates):
    """``Resampler.max_hold_samples`` (which the streaming processors size their FIFOs by) bounds
    what any block size leaves unfinished; the streaming code once read the resampler's privates."""
    from dawsep.audio import Resampler

    a, b = rates
    r = Resampler(a, b, 1)
    rng = np.random.default_rng(0)
    fed = out = worst = 0
    for _ in range(200):
        n = int(rng.integers(1, 3000))
        fed += n
        out += r.process(np.zeros((1, n), np.float32)).shape[1]
        worst = max(worst, fed * b / a - out)
    assert worst <= r.max_hold_samples
    assert r.max_hold_samples <= worst + b / a + 4  # and is not a loose bound


# ------------------------------------------------------------------ 7: one of each


def _write_stereo(path, x):
    from dawsep import audio

    with audio.AudioWriter(path, SR, channels=2) as w:
        w.write(x)


def test_one_shape_check_with_one_error_type(tmp_path, tiny_separator, tiny_transcriber):
    """Arrays given as audio are checked by one function (``audio.as_block``) raising one type,
    wherever they come in; it stays the ValueError, AudioFormatError and PluginError that callers
    of the writer, the separator and the chain caught before."""
    from dawsep import audio
    from dawsep.chain import BuiltinStep, Chain
    from dawsep.separate import Separator
    from dawsep.stream import RealtimeRunner, StreamingChain, StreamingSeparator
    from dawsep.transcribe import Transcriber

    sep = Separator(tiny_separator, threads=1)
    chain = Chain([BuiltinStep("Gain", {"gain_db": -1.0})])
    calls = {
        "audio.AudioWriter": lambda x: _write_stereo(tmp_path / "x.wav", x),
        "Chain": lambda x: chain(x, SR),
        "Separator.separate": lambda x: sep.separate(x, SR),
        "StreamingSeparator": lambda x: StreamingSeparator(separator=sep).process(x),
        "StreamingChain": lambda x: StreamingChain(chain).process(x),
        "RealtimeRunner": lambda x: RealtimeRunner(StreamingChain(chain), realtime=False).process(x),
        "Transcriber.posteriors": lambda x: Transcriber(tiny_transcriber, threads=1).posteriors(x[None], SR),
    }
    for name, call in calls.items():
        with pytest.raises(errors.AudioShapeError) as info:
            call(np.zeros((3, 64), np.float32))
        assert isinstance(info.value, (ValueError, errors.AudioFormatError, errors.PluginError)), name
        assert info.value.exit_code == errors.AudioFormatError.exit_code
    with pytest.raises(errors.AudioShapeError, match=r"did you pass \(samples, channels\)"):
        audio.as_block(np.zeros((4096, 2), np.float32).T.T)


@pytest.fixture(scope="module")
def vocals_separator(tmp_path_factory) -> str:
    """A tiny two-stem separator whose metadata names its stems ``vocals`` and ``accompaniment``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from dawsep.train.separators import UNetMask
    from dawsep.train.export.separator import export_model

    torch.manual_seed(0)
    model = UNetMask(channels=(4, 8), n_fft=256, hop=128, n_bins=64, mask="softmax", n_stems=2)
    model.stems = ("vocals", "accompaniment")
    path = tmp_path_factory.mktemp("models") / "vocals.onnx"
    export_model(model.eval(), str(path), segment_seconds=0.25, bench=False)
    return str(path)


def test_a_preset_may_name_any_stem_its_model_has(tmp_path, vocals_separator):
    """Stems come from the model's metadata: a preset for a custom model names its stems (the
    five of dawsep's corpus were once the only ones allowed), and a stem the model lacks is
    refused with the model's own list."""
    from dawsep.presets import load_preset

    f = tmp_path / "v.toml"
    f.write_text(f'[separate]\nstem = "vocals"\nmodel = "{vocals_separator}"\n[[chain]]\nplugin = "Gain"\n')
    p = load_preset(str(f))
    assert p.stem == "vocals"
    x = tone(0.6).T
    y = p.build_chain()(x, SR)
    assert y.shape == x.shape
    f.write_text(f'[separate]\nstem = "piano"\nmodel = "{vocals_separator}"\n')
    with pytest.raises(errors.PresetError, match=r"'piano' is not a stem; expected one of vocals, accompaniment"):
        load_preset(str(f))


def test_one_sha256_one_output_config():
    from dawsep import batch, presets, runtime

    assert batch.file_sha256 is runtime.file_sha256
    assert batch.OutputOptions is presets.OutputConfig


# ------------------------------------------------------------------ 6: atomic writes, one helper


def test_every_output_is_written_through_one_atomic_helper_with_a_folder_fsync(tmp_path, monkeypatch,
                                                                                  tiny_separator, tiny_transcriber):
    """Stems, MIDI, plots, note lists and the manifest are each written to a temporary file,
    fsynced, renamed into place, and the folder fsynced (so the rename itself survives a power
    cut); once there were six helpers, some without the file fsync and none with the folder's."""
    import dataclasses

    from dawsep import atomic
    from dawsep.batch import SeparateJob, run_batch
    from dawsep.presets import load_preset
    from conftest import with_model

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", tone(1.0), SR)
    base = with_model(load_preset("piano"), tiny_separator)
    preset = dataclasses.replace(base, transcribe=dataclasses.replace(base.transcribe, model=tiny_transcriber))
    out = tmp_path / "out"
    report = run_batch(SeparateJob(preset=preset, extras=("png", "json", "csv")), tmp_path / "in", out,
                       progress=False)
    assert report.ok
    written = files_under(out)
    assert written == ["a/piano.csv", "a/piano.flac", "a/piano.json", "a/piano.mid", "a/piano.png", "manifest.json"]
    song_dir, root = str((out / "a").resolve()), str(out.resolve())
    assert song_dir in synced and root in synced  # the folders that received renames
    staged = [p for p in synced if "/staging/" in p]
    for name in ("piano.csv", "piano.flac", "piano.json", "piano.mid", "piano.png"):
        assert any(p.rsplit("/", 1)[-1].startswith(f".{name}.") for p in staged), (name, staged)
    assert any(p.rsplit("/", 1)[-1].startswith(".manifest.json.") for p in synced)
    # the helper itself: nothing left behind on failure, the old file untouched
    target = tmp_path / "x.bin"
    atomic.write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["x.bin"]


# ------------------------------------------------------------------ 5: honest reruns


def test_a_redone_song_loses_the_outputs_the_new_settings_no_longer_write(tmp_path, tiny_separator):
    """Changing --format or --stems redoes the song and removes what the earlier run wrote that
    this one does not (once the old stems stayed beside the new ones); another command's outputs
    in the same folder are kept."""
    from dawsep.batch import OutputOptions, SeparateJob, run_batch

    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", tone(0.6), SR)
    out = tmp_path / "out"
    run_batch(SeparateJob(tiny_separator, stems=("piano", "bass")), tmp_path / "in", out, progress=False)
    (out / "a" / "notes.txt").write_text("mine")  # a user's file: never touched
    assert files_under(out) == ["a/bass.tiny-separator.flac", "a/notes.txt", "a/piano.tiny-separator.flac",
                                "manifest.json"]
    report = run_batch(SeparateJob(tiny_separator, stems=("piano",), output=OutputOptions("wav", 16)),
                       tmp_path / "in", out, progress=False)
    assert report.done == ["a"]
    assert files_under(out) == ["a/notes.txt", "a/piano.tiny-separator.wav", "manifest.json"]
    song = json.loads((out / "manifest.json").read_text())["songs"][0]
    assert sorted(song["removed_stale"]) == ["a/bass.tiny-separator.flac", "a/piano.tiny-separator.flac"]


def test_stale_outputs_of_another_command_are_left_alone(tmp_path, tiny_separator, tiny_transcriber):
    from dawsep.batch import OutputOptions, SeparateJob, TranscribeJob, run_batch

    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", tone(0.6), SR)
    out = tmp_path / "out"
    run_batch(TranscribeJob(tiny_transcriber), tmp_path / "in", out, progress=False)
    run_batch(SeparateJob(tiny_separator, stems=("piano",)), tmp_path / "in", out, progress=False)
    run_batch(SeparateJob(tiny_separator, stems=("piano",), output=OutputOptions("wav", 16)), tmp_path / "in", out,
              progress=False)
    assert files_under(out) == ["a/piano.mid", "a/piano.tiny-separator.wav", "manifest.json"]
    # one file written by two commands: kept while the other still lists it
    from conftest import with_model
    from dawsep.batch import RenderJob
    from dawsep.presets import load_preset

    bass = with_model(load_preset("bass"), tiny_separator)
    run_batch(SeparateJob(preset=bass), tmp_path / "in", out, progress=False)
    run_batch(RenderJob(bass), tmp_path / "in", out, progress=False)
    run_batch(SeparateJob(preset=bass, output=OutputOptions("wav", 16)), tmp_path / "in", out, progress=False)
    assert files_under(out) == ["a/bass.flac", "a/bass.wav", "a/piano.mid", "a/piano.tiny-separator.wav",
                                "manifest.json"]


def _render_twice(tmp_path, preset_text: str, change) -> tuple[list[str], list[str]]:
    from dawsep.batch import RenderJob, run_batch
    from dawsep.presets import load_preset

    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    sf.write(src / "a.wav", tone(0.3), SR)
    p = tmp_path / "p.toml"
    p.write_text(preset_text)
    first = run_batch(RenderJob(load_preset(str(p))), src, tmp_path / "out", progress=False)
    assert first.done == ["a"]
    change()
    again = run_batch(RenderJob(load_preset(str(p))), src, tmp_path / "out", progress=False)
    return again.done, again.skipped


def test_a_changed_model_inside_a_chain_changes_the_fingerprint(tmp_path, tiny_separator, vocals_separator,
                                                                 monkeypatch):
    """A render's fingerprint covers the models of the chain's own model steps, not only the
    [separate] section's (a new model file once left songs rendered with the old one "done")."""
    import dataclasses
    import shutil

    from dawsep import runtime
    from dawsep.batch import RenderJob
    from dawsep.chain import ModelStepSpec
    from dawsep.presets import parse_preset

    model = tmp_path / "m.onnx"
    shutil.copy(tiny_separator, model)
    preset = dataclasses.replace(parse_preset('[[chain]]\nplugin = "Gain"\n', "p.toml"),
                                 chain=(ModelStepSpec("separate", {"stem": "piano", "model": str(model)}),))
    before = RenderJob(preset).fingerprint()
    assert RenderJob(preset).fingerprint() == before
    shutil.copy(vocals_separator, model)  # the same path, another model
    assert RenderJob(preset).fingerprint() != before
    # a shipped preset's chain step names the packaged default, whose registry hash is used
    text = '[[chain]]\nmodel = "separate"\nstem = "piano"\n'
    before = RenderJob(parse_preset(text, "q.toml")).fingerprint()
    real = runtime.resolve
    monkeypatch.setattr(runtime, "resolve", lambda m, kind: (lambda p, n, sha: (p, n, "0" * 64))(*real(m, kind)))
    assert RenderJob(parse_preset(text, "q.toml")).fingerprint() != before


def test_a_changed_vst3_or_impulse_response_redoes_the_song(tmp_path):
    import shutil

    if not Path("/usr/lib/vst3/ZamCompX2.vst3").exists():
        pytest.skip("zam-plugins is not installed (make sysdeps)")
    bundle = tmp_path / "ZamCompX2.vst3"  # a bundle is named like the binary inside it
    shutil.copytree("/usr/lib/vst3/ZamCompX2.vst3", bundle)
    ir = tmp_path / "ir.wav"
    sf.write(ir, np.r_[1.0, np.zeros(99)].astype(np.float32), SR)
    text = (f'[[chain]]\nvst3 = "{bundle}"\nparameters = {{ threshold_db = -20.0 }}\n'
            f'[[chain]]\nplugin = "Convolution"\nimpulse_response_filename = "{ir}"\n')
    binary = next(p for p in bundle.rglob("*.so"))

    def rebuild_plugin():  # the same bundle path, another build of the plugin
        with open(binary, "ab") as f:
            f.write(b"\0")

    done, _ = _render_twice(tmp_path, text, rebuild_plugin)
    assert done == ["a"]
    done, _ = _render_twice(tmp_path, text, lambda: sf.write(ir, np.r_[0.5, np.zeros(99)].astype(np.float32), SR))
    assert done == ["a"]
    done, skipped = _render_twice(tmp_path, text, lambda: None)
    assert skipped == ["a"]


def test_the_skip_summary_says_how_to_redo(tmp_path):
    from dawsep.batch import BatchReport

    assert "--force" in BatchReport("out", skipped=["a"]).summary()
    assert "--force" not in BatchReport("out", done=["a"]).summary()


# ------------------------------------------------------------------ 3: whole tails


@pytest.mark.parametrize("delay_s", [0.05, 0.15, 0.4, 1.0, 2.5])
@pytest.mark.parametrize("feedback", [0.0, 0.6])
@pytest.mark.parametrize("reverb", [False, True])
def test_the_tail_holds_every_echo(delay_s, feedback, reverb):
    """``Chain.flush(tail=True)`` keeps going while an echo may still come: it once stopped at the
    first quiet 0.1 s block, so a delay whose echoes are further apart lost them."""
    from dawsep.chain import BuiltinStep, Chain

    steps = [BuiltinStep("Delay", {"delay_seconds": delay_s, "feedback": feedback, "mix": 0.5})]
    if reverb:
        steps.append(BuiltinStep("Reverb", {"room_size": 0.5, "wet_level": 0.3}))
    x = np.zeros((2, SR // 20), np.float32)
    x[:, 10] = 0.9
    chain = Chain(steps)
    chain.reset()
    chain(x, SR, reset=False)
    tail = chain.flush(SR, tail=True, max_seconds=120.0)  # the default 30 s cap is not what is tested
    # the reference: the same stream fed silence for far longer than any echo lasts
    ref_chain = Chain(steps)
    ref_chain.reset()
    ref_chain(x, SR, reset=False)
    long = ref_chain(np.zeros((2, int(SR * (delay_s * 30 + 3))), np.float32), SR, reset=False)
    np.testing.assert_array_equal(tail, long[:, :tail.shape[1]])
    assert np.max(np.abs(long[:, tail.shape[1]:]), initial=0.0) < 1e-5  # nothing audible was cut off
    assert tail.shape[1] < long.shape[1]  # and it did stop
    if feedback:  # the second echo is in the tail
        k = int(round(2 * delay_s * SR)) + 10 - x.shape[1]
        assert np.max(np.abs(tail[:, k - 5:k + 5])) > 0.05
    chain.reset()
    chain(x, SR, reset=False)
    assert chain.flush(SR, tail=True).shape[1] <= 30 * SR + 8192  # at most max_seconds (30 s by default)


def test_a_vst3_delay_time_sets_the_tail():
    from dawsep.chain import Chain, VST3Step

    if not Path("/usr/lib/vst3/ZamDelay.vst3").exists():
        pytest.skip("zam-plugins is not installed (make sysdeps)")
    chain = Chain([VST3Step("/usr/lib/vst3/ZamDelay.vst3", {"time_ms": 1500.0, "delaytime_ms": 1500.0,
                                                              "feedback": 0.5, "dry_wet": 0.5})])
    assert chain.longest_delay_seconds >= 1.5


# ------------------------------------------------------------------ 10: MIDI that lines up in a DAW


def _midi_notes(path) -> list[tuple[int, float]]:
    import mido

    t, out = 0.0, []
    for m in mido.MidiFile(path):  # seconds, tempo applied
        t += m.time
        if m.type == "note_on" and m.velocity:
            out.append((m.note, round(t, 3)))
    return out


def test_midi_tempo_sets_the_grid_and_keeps_the_times(tmp_path):
    """``--midi-tempo`` (``bpm=``) puts the notes on that tempo's beat grid at the same times in
    seconds; the file is one track (no empty tempo track for a DAW to import as a stray)."""
    import mido

    from dawsep.transcribe import NoteEvent, PedalEvent, Transcription

    notes = [NoteEvent(60, 0.5, 1.0, 100), NoteEvent(64, 1.0, 1.5, 90)]
    t = Transcription(notes, [PedalEvent(0.25, 1.75)], duration_s=2.0)
    for bpm in (None, 90.0):
        path = t.save(tmp_path / f"{bpm}.mid", bpm=bpm)
        mid = mido.MidiFile(path)
        assert len(mid.tracks) == 1 and mid.type == 0
        tempos = [m.tempo for m in mid.tracks[0] if m.type == "set_tempo"]
        assert tempos == [mido.bpm2tempo(bpm or 120.0)]
        assert _midi_notes(path) == [(60, 0.5), (64, 1.0)]
        ticks, on = 0, []
        for m in mid.tracks[0]:
            ticks += m.time
            if m.type == "note_on" and m.velocity:
                on.append(ticks)
        beat = 480
        assert on == [round(0.5 * (bpm or 120.0) / 60 * beat), round(1.0 * (bpm or 120.0) / 60 * beat)]


def test_cli_midi_tempo_and_what_help_says(tmp_path, tiny_transcriber, monkeypatch):
    import mido

    sf.write(tmp_path / "a.wav", tone(1.0), SR)
    res = CliRunner().invoke(main, ["transcribe", str(tmp_path / "a.wav"), "-o", str(tmp_path / "out"),
                                    "-m", tiny_transcriber, "--midi-tempo", "96", "-q"])
    assert res.exit_code == 0, res.output
    mid = mido.MidiFile(tmp_path / "out" / "a" / "piano.mid")
    assert [m.tempo for m in mid.tracks[0] if m.type == "set_tempo"] == [mido.bpm2tempo(96)]
    for cmd in ("transcribe", "separate"):
        text = " ".join(CliRunner().invoke(main, [cmd, "--help"]).output.split())
        assert "--midi-tempo" in text and "120" in text and "not estimate" in text


# ------------------------------------------------------------------ 9: a piano roll a musician can read


def test_the_piano_roll_has_axes_names_a_legend_and_bars_when_the_tempo_is_known(tmp_path):
    """The plot shows a title, C rows named with their octave, seconds (or bars with a tempo), a
    labelled pedal lane and velocity as colour; it once was an unlabelled bitmap of all 88 keys."""
    from PIL import Image

    from dawsep.pianoroll import PianoRoll, note_name, velocity_colour
    from dawsep.transcribe import NoteEvent, PedalEvent, Transcription

    assert [note_name(p) for p in (21, 59, 60, 61, 108)] == ["A0", "B3", "C4", "C#4", "C8"]
    assert velocity_colour(1) != velocity_colour(64) != velocity_colour(127)
    notes = [NoteEvent(60, 0.5, 1.0, 20), NoteEvent(64, 1.0, 2.0, 120), NoteEvent(79, 2.0, 3.5, 70)]
    t = Transcription(notes, [PedalEvent(0.4, 2.2)], duration_s=4.0, source="take 1.wav")
    plain = PianoRoll(t.notes, t.pedal, 4.0, "x")
    assert (plain.lo, plain.hi) == (60, 83)  # the octaves the notes use, C to B
    for bpm in (None, 100.0):
        path = t.save(tmp_path / f"roll-{bpm}.png", bpm=bpm)
        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        roll = PianoRoll(t.notes, t.pedal, 4.0, "take 1.wav: piano transcription", bpm)
        assert img.shape == (roll.height, roll.width, 3)
        for n in notes:
            mid = (roll.x((n.start_s + n.end_s) / 2), roll.y(n.pitch) + roll.row_h // 2)
            assert tuple(img[mid[1], mid[0]]) == velocity_colour(n.velocity)
        pedal_px = img[roll.pedal_y + roll.pedal_h // 2, roll.x(1.0)]
        assert tuple(pedal_px) != (246, 246, 248)  # the press is drawn in its lane
        # text: the title row, the key labels left of the keyboard and the time axis hold dark ink
        assert (img[5:28, 8:200].min(axis=2) < 80).any()
        assert (img[roll.y(60):roll.y(60) + roll.row_h, :roll.left - 36].min(axis=2) < 80).any()
        assert (img[roll.pedal_y + roll.pedal_h + 6:, roll.left - 10:roll.left + 40].min(axis=2) < 120).any()
        top = img[roll.top - 12:roll.top - 2, roll.left:roll.left + 30].min(axis=2)
        assert (top < 120).any() == (bpm is not None)  # bar numbers only with a tempo


def test_plot_without_a_transcription_warns(tmp_path, tiny_separator):
    sf.write(tmp_path / "a.wav", tone(0.3), SR)
    res = CliRunner().invoke(main, ["separate", str(tmp_path / "a.wav"), "-o", str(tmp_path / "out"),
                                    "-m", tiny_separator, "-q", "--plot"])
    assert res.exit_code == 0, res.output
    assert "--plot" in res.output and "warning" in res.output


# ------------------------------------------------------------------ 11: render on stems you already have


def test_render_runs_the_chain_alone_on_a_stem_and_names_it_after_the_stem(tmp_path, tiny_separator):
    """A file named like the preset's stem (what `dawsep separate` writes) is already that stem:
    `render` runs the preset's chain on it without separating again (once it separated the bass
    out of the bass); --no-separate does so for any file, --separate forces the separation; a
    chain-only preset names its output after the input stem, not other.flac."""
    from conftest import with_model
    from dawsep.batch import RenderJob, run_batch
    from dawsep.presets import load_preset
    from dataclasses import replace

    src = tmp_path / "stems" / "song"
    src.mkdir(parents=True)
    x = tone(0.5, freq=110.0)
    sf.write(src / "bass.wav", x, SR, subtype="FLOAT")
    sf.write(src / "guitar.wav", x, SR, subtype="FLOAT")
    preset = with_model(load_preset("bass"), tiny_separator)
    chain_only = replace(preset, separate=None).build_chain()(x.T, SR)

    def out_of(folder: Path, song: str, name: str) -> np.ndarray:
        return sf.read(folder / song / name, dtype="float32")[0].T

    out = tmp_path / "out"
    report = run_batch(RenderJob(preset), tmp_path / "stems", out, progress=False)
    assert report.ok and files_under(out) == ["manifest.json", "song/bass/bass.flac", "song/guitar/bass.flac"]
    np.testing.assert_allclose(out_of(out, "song/bass", "bass.flac"), chain_only, atol=2e-5)  # 24-bit FLAC
    assert np.abs(out_of(out, "song/guitar", "bass.flac") - chain_only).max() > 1e-3  # separated first
    rows = {r["song"]: r for r in json.loads((out / "manifest.json").read_text())["songs"]}
    assert rows["song/bass"]["separated"] is False and rows["song/guitar"]["separated"] is True

    res = CliRunner().invoke(main, ["render", str(tmp_path / "stems"), "-o", str(tmp_path / "o2"), "-q",
                                    "-p", str(_tiny_preset_file(tmp_path, tiny_separator)), "--no-separate"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(out_of(tmp_path / "o2", "song/guitar", "guitar.flac"), chain_only, atol=2e-5)
    res = CliRunner().invoke(main, ["render", str(tmp_path / "stems"), "-o", str(tmp_path / "o3"), "-q",
                                    "-p", str(_tiny_preset_file(tmp_path, tiny_separator)), "--separate"])
    assert res.exit_code == 0, res.output
    assert np.abs(out_of(tmp_path / "o3", "song/bass", "bass.flac") - chain_only).max() > 1e-3

    gain = tmp_path / "gain.toml"
    gain.write_text('[[chain]]\nplugin = "Gain"\ngain_db = -6.0\n')
    report = run_batch(RenderJob(load_preset(str(gain))), tmp_path / "stems", tmp_path / "o4", progress=False)
    assert files_under(tmp_path / "o4") == ["manifest.json", "song/bass/bass.flac", "song/guitar/guitar.flac"]


def _tiny_preset_file(tmp_path: Path, model: str) -> Path:
    from importlib import resources

    path = tmp_path / "bass-tiny.toml"
    text = resources.files("dawsep._presets").joinpath("bass.toml").read_text()
    path.write_text(text.replace('model = "default"', f'model = "{model}"', 1))
    return path


# ------------------------------------------------------------------ 12: output and progress


def test_another_model_never_overwrites_the_default_models_stems(tmp_path, tiny_separator):
    """`separate -m MODEL` names its stems after the model (``piano.<model>.flac``) and keeps its own
    ledger rows, so the default model's stems in the same OUT stay as they were."""
    import shutil

    sf.write(tmp_path / "a.wav", tone(0.4), SR)
    out = tmp_path / "out"
    other = tmp_path / "umx-like.onnx"
    shutil.copy(tiny_separator, other)
    runner = CliRunner()
    for model in (tiny_separator, str(other)):
        res = runner.invoke(main, ["separate", str(tmp_path / "a.wav"), "-o", str(out), "-m", model, "-q",
                                   "--stems", "piano"])
        assert res.exit_code == 0, res.output
    assert files_under(out) == ["a/piano.tiny-separator.flac", "a/piano.umx-like.flac", "manifest.json"]
    res = runner.invoke(main, ["separate", str(tmp_path / "a.wav"), "-o", str(out), "-m", tiny_separator, "-q",
                               "--stems", "piano"])
    assert "1 already done" in res.output  # each model's songs are tracked apart
    from dawsep.batch import SeparateJob

    assert SeparateJob().output_tag == "" and SeparateJob("umx").output_tag == ".umx"


def test_progress_in_a_log_is_plain_lines_and_names_a_failure_once(tmp_path, monkeypatch):
    """Not on a terminal: one line per song (no carriage-return frames), a line on a long song's
    progress, and a failure named once (the progress line once repeated the summary's FAILED)."""
    from dawsep import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    monkeypatch.setattr(progress, "REPORT_EVERY_S", 0.0)
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(2.0), SR)
    sf.write(src / "b.wav", tone(0.2), SR)
    (src / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    gain = tmp_path / "gain.toml"
    gain.write_text('[[chain]]\nplugin = "Gain"\ngain_db = -6.0\n')
    monkeypatch.setattr("dawsep.batch.RenderJob.block_frames", 8192)
    res = CliRunner().invoke(main, ["render", str(src), "-o", str(tmp_path / "out"), "-p", str(gain)])
    assert res.exit_code == 1
    text = res.output
    assert "\r" not in text
    assert "[1/3] a: done in" in text and "[3/3] broken: failed" in text
    assert [l for l in text.splitlines() if "% after" in l and l.startswith("[1/3] a:")]  # within the song
    assert text.count("FAILED broken") == 1


def test_progress_on_a_terminal_names_the_songs_in_flight(tmp_path):
    import io

    from dawsep.progress import BatchProgress, file_sink

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = BatchProgress(3, True, stream)
    bar.start("album/long song")
    bar.fraction("album/long song", 0.42)
    assert "album/long song 42%" in stream.getvalue()
    f = tmp_path / "x.progress"
    bar.start("b", f)
    file_sink(f)(0.5)  # what a worker process writes
    bar.poll_files()
    assert "b 50%" in stream.getvalue()
    bar.finish("b", True)
    assert not f.exists()
    bar.close()


def test_a_corrupt_mp3_is_one_clear_line_with_no_decoder_chatter(tmp_path, capfd):
    from dawsep import audio

    sf.write(tmp_path / "whole.mp3", tone(5.0), SR)
    data = (tmp_path / "whole.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[:len(data) // 2])
    capfd.readouterr()
    with pytest.raises(errors.AudioFormatError) as info:
        audio.info(tmp_path / "cut.mp3")
    assert capfd.readouterr().err == ""
    assert "\n" not in str(info.value) and "cut.mp3" in str(info.value)


def test_models_list_has_headers_sizes_and_measured_quality():
    from dawsep import runtime

    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["KIND", "NAME", "SIZE", "PARAMS"] and "TEST SPLIT" in lines[0]
    rows = {tuple(l.split()[:2]): l for l in lines[1:] if l.strip()}
    assert set(rows) == {(k, n) for k, n, _ in runtime.list_models()}
    info = runtime.model_info("default", "separator")
    mb = Path(info.path).stat().st_size / 1e6
    assert f"{mb:.1f} MB" in rows[("separator", "default")]
    assert f"mean SDR {info.metrics['test']['mean']:.2f} dB" in rows[("separator", "default")]
    t = runtime.model_info("default", "transcriber").metrics["test"]
    assert f"note F1 {t['clean']['note']:.2f} clean" in rows[("transcriber", "default")]


def test_latency_is_printed_in_ms_as_well_as_samples():
    from dawsep.live import LiveReport

    text = LiveReport(10, 512, 48000, 24000, [1.0] * 10).summary()
    assert "24000 samples (500 ms)" in text


# ------------------------------------------------------------------ 14: weak stems


def test_separate_warns_once_about_stems_its_model_separates_poorly(tmp_path, tiny_separator):
    from dawsep import defaults, runtime

    sdr = runtime.model_info("default", "separator").metrics["test"]["sdr"]
    weak = [s for s in ("piano", "drums") if sdr[s] < defaults.WEAK_STEM_SDR_DB]
    assert weak == ["piano"]  # what the shipped model measured: drums 5.1 dB, piano 1.6 dB
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        sf.write(src / f"{name}.wav", tone(0.3), SR)
    res = CliRunner().invoke(main, ["separate", str(src), "-o", str(tmp_path / "out"), "-q", "--stems", "piano,drums"])
    assert res.exit_code == 0, res.output
    warnings = [l for l in res.output.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and f"piano ({sdr['piano']:.1f} dB)" in warnings[0] and "drums" not in warnings[0]
    res = CliRunner().invoke(main, ["separate", str(src), "-o", str(tmp_path / "o2"), "-q", "-m", tiny_separator])
    assert "warning" not in res.output  # no measurement in its metadata, nothing to say


# ------------------------------------------------------------------ 15: figures only from measurements


def test_the_memory_sentence_follows_the_two_measurements():
    from bench.bench_render import memory_growth

    same = memory_growth(900.0, 410, 180.0, 400)
    assert same.startswith("memory did not grow with length") and "410 MB" in same and "400 MB" in same
    grew = memory_growth(900.0, 900, 180.0, 400)
    assert grew.startswith("memory grew with length") and "2.2x" in grew


def test_no_benchmark_writes_a_fixed_figure():
    """Every generated sentence in docs/BENCHMARKS.md comes from a measurement of the same run:
    no string in bench/ states a speed or a memory figure of its own (the separation section once
    wrote "HTDemucs ... about 1.1x real time" and "memory does not grow with length" unmeasured)."""
    import ast
    import re

    bench = Path(__file__).resolve().parent.parent / "bench"
    fixed = []
    for f in sorted(bench.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.search(r"\d(\.\d+)?x real time|\d+ MB\b|does not grow with length|HTDemucs", node.value):
                    fixed.append(f"{f.name}:{node.lineno}: {node.value[:80]!r}")
    assert fixed == []


def test_what_the_docs_say_about_stems_and_causal_streaming_is_what_the_models_do():
    """README: the mask models' stems add up to the input, the waveform models' do not;
    docs/separation.md: `umx-uni` declares the same latency as `umx` (no stateful path)."""
    from dawsep import audio
    from dawsep.separate import Separator
    from dawsep.stream import StreamingSeparator

    x, sr = audio.load(Path(__file__).resolve().parent.parent / "demo" / "demo_song.flac")
    x = x[:, :2 * sr]
    for model, adds_up in (("default", True), ("convtasnet", False)):
        stems = Separator(model, threads=1).separate(x, sr)
        err = float(np.abs(sum(stems.values()) - x).max())
        assert (err < 1e-5) == adds_up, (model, err)
    assert StreamingSeparator("umx-uni").latency_samples == StreamingSeparator("umx").latency_samples
    docs = (Path(__file__).resolve().parent.parent / "docs" / "separation.md").read_text()
    assert "so it can stream with short chunks" not in docs
