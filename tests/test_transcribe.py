"""Piano transcription runtime: the note decoder on hand-made posteriors (exact rules), MIDI/JSON/
CSV/PNG writers, the chunked ONNX runtime on a tiny random model, and the batch job."""
from __future__ import annotations

import json

import mido
import numpy as np
import pytest
import soundfile as sf

from dawsep.batch import SeparateJob, TranscribeJob, run_batch
from dawsep.presets import load_preset
from dawsep.transcribe import (DecodeOptions, NoteEvent, PedalEvent, Transcriber, Transcription, TranscriptionSink,
                               decode, piano_roll_png)

from conftest import with_model

HOP_S = 0.02


def post(frames=100):
    z = np.zeros((frames, 88), np.float32)
    return {"onset": z.copy(), "frame": z.copy(), "offset": z.copy(), "velocity": z.copy(),
            "pedal": np.zeros((frames, 1), np.float32)}


def note(p, key, a, b, vel=0.5, peak=0.9):
    p["onset"][a, key] = peak
    p["frame"][a:b, key] = 0.8
    p["velocity"][a, key] = vel


def test_single_note_times_pitch_velocity():
    p = post()
    note(p, 39, 10, 30, vel=0.5)  # key 39 = MIDI 60
    notes, pedal = decode(p, HOP_S)
    assert notes == [NoteEvent(60, 0.21, 0.6, 64, 0.9)] and pedal == []


def test_restruck_key_gives_two_notes_and_unconfirmed_onset_none():
    p = post()
    note(p, 40, 10, 50)
    p["onset"][25, 40] = 0.8  # struck again while held
    p["onset"][70, 10] = 0.9  # an onset the frames do not confirm
    notes, _ = decode(p, HOP_S)
    assert [(n.pitch, n.start_s, n.end_s) for n in notes] == [(61, 0.21, 0.5), (61, 0.51, 1.0)]


def test_min_length_offset_peak_and_thresholds():
    p = post()
    note(p, 20, 10, 11)  # one frame: 20 ms < 30 ms
    note(p, 30, 20, 60)
    p["offset"][40, 30] = 0.7  # an offset peak ends the note inside frame 40
    notes, _ = decode(p, HOP_S)
    assert [(n.pitch, n.start_s, n.end_s) for n in notes] == [(51, 0.41, 0.81)]
    assert len(decode(p, HOP_S, DecodeOptions(min_note_ms=0))[0]) == 2
    assert decode(p, HOP_S, DecodeOptions(onset_threshold=0.95))[0] == []


def test_velocity_is_clamped_to_midi_range():
    p = post()
    note(p, 0, 5, 20, vel=0.0)
    note(p, 87, 5, 20, vel=1.0)
    assert [n.velocity for n in decode(p, HOP_S)[0]] == [1, 127]


def test_pedal_and_key_release_note_ends():
    p = post()
    p["pedal"][20:60] = 0.9
    note(p, 39, 10, 60)  # sounds until the pedal lifts at frame 60
    notes, pedal = decode(p, HOP_S)
    assert pedal == [PedalEvent(0.4, 1.2)] and notes[0].end_s == 1.2
    key, _ = decode(p, HOP_S, DecodeOptions(note_ends="key"))
    assert key[0].end_s == 0.4  # released when the pedal went down
    assert decode(p, HOP_S, DecodeOptions(pedal=False))[1] == []
    with pytest.raises(ValueError, match="note_ends"):
        DecodeOptions(note_ends="both")


def test_midi_file_structure_and_round_trip(tmp_path):
    notes = [NoteEvent(60, 0.5, 1.0, 100), NoteEvent(60, 1.0, 1.5, 90), NoteEvent(64, 0.5, 2.0, 70)]
    t = Transcription(notes, [PedalEvent(0.25, 1.75)], duration_s=2.0)
    path = t.save(tmp_path / "piano.mid")
    mid = mido.MidiFile(path)
    # one track (issue 17: no empty tempo track for a DAW to import as a stray)
    assert mid.type == 0 and mid.ticks_per_beat == 480 and len(mid.tracks) == 1
    assert any(m.type == "set_tempo" for m in mid.tracks[0])
    names = [m.name for m in mid.tracks[0] if m.type == "track_name"]
    assert names == ["Piano"] and any(m.type == "program_change" and m.program == 0 for m in mid.tracks[0])
    got, t_abs, active = [], 0.0, {}
    for m in mid:  # seconds, tempo applied
        t_abs += m.time
        if m.type == "note_on" and m.velocity:
            active[m.note] = (t_abs, m.velocity)
        elif m.type in ("note_off", "note_on"):
            s, v = active.pop(m.note)
            got.append((m.note, round(s, 3), round(t_abs, 3), v))
    assert sorted(got) == sorted((n.pitch, n.start_s, n.end_s, n.velocity) for n in notes)
    cc = [m.value for m in mid.tracks[0] if m.type == "control_change" and m.control == 64]
    assert cc == [127, 0]


def test_json_csv_png_writers(tmp_path):
    t = Transcription([NoteEvent(21, 0.0, 0.5, 10), NoteEvent(108, 1.0, 3.0, 127)], [PedalEvent(0.1, 0.2)], 3.0)
    d = json.loads(t.save(tmp_path / "n.json").read_text())
    assert d["notes"][1]["pitch"] == 108 and d["pedal"][0]["end_s"] == 0.2
    rows = t.save(tmp_path / "n.csv").read_text().splitlines()
    assert rows[0] == "start_s,end_s,pitch,velocity,confidence" and rows[2].startswith("1.0000,3.0000,108,127")
    png = t.save(tmp_path / "roll.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the piano roll's layout changed (issue 17: axes, note names, legend); the note is still
    # drawn where it sounds, in its velocity's colour
    from PIL import Image

    from dawsep.pianoroll import PianoRoll, velocity_colour

    roll = PianoRoll(t.notes, t.pedal, t.duration_s)
    img = np.asarray(Image.open(tmp_path / "roll.png").convert("RGB"))
    assert img.shape == (roll.height, roll.width, 3)
    y = roll.y(108) + roll.row_h // 2
    assert tuple(img[y, roll.x(2.0)]) == velocity_colour(127)  # the top key (108) drawn from 1 s to 3 s
    assert tuple(img[y, roll.x(0.5)]) != velocity_colour(127)
    assert piano_roll_png([], [], 0.0)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception, match="unknown transcription format"):
        t.save(tmp_path / "n.txt")


# ------------------------------------------------------------------------------ ONNX runtime
@pytest.fixture(scope="module")
def trans(tiny_transcriber):
    return Transcriber(tiny_transcriber, threads=1)


def test_posteriors_shapes_and_ranges(trans):
    for n in (1, 319, 320, 16000 * 2 + 7):
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
        p = trans.posteriors(x, 16000)
        frames = -(-n // 320)
        assert p["onset"].shape == (frames, 88) and p["pedal"].shape == (frames, 1)
        assert all(0 <= v.min() and v.max() <= 1 for v in p.values())


def test_sink_blocks_and_rates_equal_whole(trans):
    x = (np.random.default_rng(1).standard_normal((2, 44100 * 2)) * 0.1).astype(np.float32)
    whole = TranscriptionSink(trans, 44100)
    whole.push(x)
    a = whole.finish()
    blocks = TranscriptionSink(trans, 44100)
    for i in range(0, x.shape[1], 777):
        blocks.push(x[:, i:i + 777])
    b = blocks.finish()
    assert a.notes == b.notes and a.pedal == b.pedal and a.duration_s == 2.0
    with pytest.raises(Exception, match="NaN"):
        trans.posteriors(np.full(100, np.nan, np.float32))


def test_transcribe_job_and_piano_preset_end_to_end(tmp_path, tiny_transcriber, tiny_separator):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", (np.random.default_rng(2).standard_normal((22050, 2)) * 0.1).astype(np.float32), 44100)
    (src / "bad.wav").write_bytes(b"nope")
    rep = run_batch(TranscribeJob(tiny_transcriber, extras=("png", "json")), src, tmp_path / "t", progress=False)
    assert rep.done == ["a"] and [s for s, _ in rep.failed] == ["bad"]
    assert sorted(p.name for p in (tmp_path / "t" / "a").iterdir()) == ["piano.json", "piano.mid", "piano.png"]
    mido.MidiFile(tmp_path / "t" / "a" / "piano.mid")
    preset = load_preset("piano")
    preset = with_model(preset, tiny_separator)
    import dataclasses
    preset = dataclasses.replace(preset, transcribe=dataclasses.replace(preset.transcribe, model=tiny_transcriber))
    rep = run_batch(SeparateJob(preset=preset), src / "a.wav", tmp_path / "s", progress=False)
    assert rep.ok, rep.summary()
    assert sorted(p.name for p in (tmp_path / "s" / "a").iterdir()) == ["piano.flac", "piano.mid"]
    no_midi = run_batch(SeparateJob(preset=preset, transcribe=False), src / "a.wav", tmp_path / "s2", progress=False)
    assert no_midi.ok and sorted(p.name for p in (tmp_path / "s2" / "a").iterdir()) == ["piano.flac"]


def test_cli_transcribe(tmp_path, tiny_transcriber):
    from click.testing import CliRunner

    from dawsep.cli import main

    src = tmp_path / "take.flac"
    sf.write(src, (np.random.default_rng(3).standard_normal(16000) * 0.1).astype(np.float32), 16000)
    runner = CliRunner()
    res = runner.invoke(main, ["transcribe", str(src), "-o", str(tmp_path / "o"), "-m", tiny_transcriber, "--plot",
                               "--notes", "csv", "--min-note-ms", "50", "--note-ends", "key", "-q"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o" / "take").iterdir()) == ["piano.csv", "piano.mid", "piano.png"]
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["songs"][0]["models"][0]["kind"] == "transcriber"
    res = runner.invoke(main, ["transcribe", str(src), "-o", str(tmp_path / "o2"), "-m", str(tmp_path / "nope.onnx")])
    assert res.exit_code == 6 and "not found" in res.output
    res = runner.invoke(main, ["transcribe", str(src), "-o", str(tmp_path / "o3"), "-p", "bass", "-m", tiny_transcriber])
    assert res.exit_code == 2 and "no [transcribe] section" in res.output
    res = runner.invoke(main, ["transcribe", str(src), "-o", str(tmp_path / "o3"), "--onset-threshold", "2"])
    assert res.exit_code == 2


def reference_decode(post, hop_s, o):
    """The decoding rules written out vectorised over whole arrays: the oracle the frame-by-frame
    decoder must agree with (pedal-extended note ends)."""
    onset, frame, offset, velocity = (post[k] for k in ("onset", "frame", "offset", "velocity"))
    n = len(onset)

    def peaks(p, thr):
        z = np.full((1, p.shape[1]), -1.0, p.dtype)
        return (p >= thr) & (p > np.vstack([z, p[:-1]])) & (p >= np.vstack([p[1:], z]))

    on = frame >= o.frame_threshold
    starts_mask = peaks(onset, o.onset_threshold) & (on | np.vstack([on[1:], np.zeros((1, 88), bool)]))
    stops = peaks(offset, o.offset_threshold)
    notes = []
    for k in np.flatnonzero(starts_mask.any(0)):
        st = np.flatnonzero(starts_mask[:, k])
        for i, t in enumerate(st):
            limit = st[i + 1] if i + 1 < len(st) else n
            off = np.flatnonzero(~on[t + 1:limit, k] | stops[t + 1:limit, k])
            end = t + 1 + (off[0] if len(off) else limit - t - 1)
            if end - t < o.min_note_ms / 1000 / hop_s:
                continue
            end_s = (end + 0.5) * hop_s if end < n and stops[end, k] and on[end, k] else end * hop_s
            notes.append((k + 21, round((t + 0.5) * hop_s, 6), round(end_s, 6),
                          int(np.clip(round(float(velocity[t, k]) * 127), 1, 127))))
    return sorted(notes, key=lambda e: (e[1], e[0]))


@pytest.mark.parametrize("seed", range(5))
def test_frame_by_frame_decoder_matches_the_vectorised_rules(seed):
    rng = np.random.default_rng(seed)
    F = 400
    smooth = lambda a: np.clip(np.cumsum(rng.standard_normal((F, 88)) * 0.15, 0) % 1.6 - 0.3, 0, 1)  # noqa: E731
    post = {"onset": (rng.random((F, 88)) ** 6).astype(np.float32), "frame": smooth(None).astype(np.float32),
            "offset": (rng.random((F, 88)) ** 8).astype(np.float32), "velocity": rng.random((F, 88)).astype(np.float32),
            "pedal": rng.random((F, 1)).astype(np.float32)}
    o = DecodeOptions(min_note_ms=40)
    notes, _ = decode(post, HOP_S, o)
    assert len(notes) > 50
    assert [(n.pitch, n.start_s, n.end_s, n.velocity) for n in notes] == reference_decode(post, HOP_S, o)


def test_offline_transcription_runs_long_chunks_and_a_short_last_one(tiny_transcriber):
    """A graph that takes any length is run offline on TRANSCRIBE_SEGMENT_S chunks (not its 1 s
    segment_samples), the last one cut to what is left; a stream's own chunk is kept; the
    posteriors cover the input exactly either way."""
    from dawsep.defaults import TRANSCRIBE_SEGMENT_S

    t = Transcriber(tiny_transcriber, threads=1)
    assert t.any_length and t.segment == int(TRANSCRIBE_SEGMENT_S * t.sample_rate)
    assert t.stream().short_tail
    calls = []
    run = t._run
    t._run = lambda batch: calls.append(batch.shape[1]) or run(batch)
    x = np.random.default_rng(0).standard_normal(44100 * 3).astype(np.float32) * 0.1
    post = t.posteriors(x, 44100)
    assert post["onset"].shape == (3 * 50, 88)
    assert calls == [(150 + 2 * t.context) * t.hop]  # one call: 3 s + context, not 20 s
    short = Transcriber(tiny_transcriber, threads=1, segment_seconds=2.0)
    assert short.segment == 2 * short.sample_rate and short.posteriors(x, 44100)["onset"].shape == (150, 88)
