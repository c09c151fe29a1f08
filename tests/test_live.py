"""The pyo host, headless: pyo's offline server runs the same real-time callback path as a sound
card would; its render must equal dawsep's offline render of the preset (aligned, same length)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dawsep.presets import load_preset

from conftest import with_model

pytest.importorskip("pyo")


@pytest.mark.parametrize("block_size,rate", [(512, 44100), (256, 48000)])
def test_offline_pyo_render_equals_offline_chain(tmp_path, tiny_separator, block_size, rate):
    from dawsep.live import run_live

    preset = with_model(load_preset("bass"), tiny_separator)
    x = (np.random.default_rng(0).standard_normal((2, int(0.6 * rate))) * 0.1).astype(np.float32)
    src = tmp_path / "in.wav"
    sf.write(src, x.T, rate, subtype="FLOAT")
    report = run_live(preset, input_file=str(src), offline=str(tmp_path / "out.wav"), block_size=block_size)
    y, sr = sf.read(tmp_path / "out.wav", always_2d=True)
    ref = preset.build_chain().render(x, rate)
    assert sr == rate and y.shape == x.T.shape
    end = x.shape[1] if rate == 44100 else x.shape[1] - 2048  # see test_stream: resampled stream end
    assert np.abs(y.T[:, :end] - ref[:, :end]).max() < 1e-4
    assert report.blocks >= (x.shape[1] + report.latency_samples) // block_size
    assert report.worst_ms > 0 and report.deadline_ms == pytest.approx(1000 * block_size / rate)
    assert "deadline" in report.summary()


def test_offline_needs_an_input_file(tiny_separator):
    from dawsep.live import LiveError, run_live

    with pytest.raises(LiveError, match="--input"):
        run_live(with_model(load_preset("bass"), tiny_separator), offline="x.wav")


def test_cli_live_offline(tmp_path, tiny_separator):
    from click.testing import CliRunner

    from dawsep.cli import main

    preset = tmp_path / "p.toml"
    preset.write_text(f'[separate]\nstem = "bass"\nmodel = "{tiny_separator}"\n[[chain]]\nplugin = "Gain"\ngain_db = -6.0\n')
    x = (np.random.default_rng(1).standard_normal((22050, 1)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "in.flac", x, 22050)
    res = CliRunner().invoke(main, ["live", "-p", str(preset), "--input", str(tmp_path / "in.flac"),
                                    "--offline", str(tmp_path / "o.wav"), "--block-size", "256"])
    assert res.exit_code == 0, res.output
    assert "deadline" in res.output and "overrun" in res.output
    assert sf.info(str(tmp_path / "o.wav")).frames == 22050


def test_offline_live_midi_file_equals_streaming_transcriber(tmp_path, tiny_separator, tiny_transcriber):
    """The host's MIDI (transcriber on the worker) holds the StreamingTranscriber's notes, placed at
    the time they were played."""
    import dataclasses

    import mido

    from dawsep.live import run_live
    from dawsep.stream import StreamingTranscriber
    from dawsep.transcribe import options_from_preset

    base = with_model(load_preset("piano"), tiny_separator)
    preset = dataclasses.replace(base, transcribe=dataclasses.replace(
        base.transcribe, model=tiny_transcriber, onset_threshold=0.5, frame_threshold=0.45, min_note_ms=40))
    rate, block = 44100, 512
    x = (np.random.default_rng(6).standard_normal((2, 3 * rate)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "in.wav", x.T, rate, subtype="FLOAT")
    report = run_live(preset, input_file=str(tmp_path / "in.wav"), offline=str(tmp_path / "out.wav"),
                      block_size=block, midi_file=str(tmp_path / "live.mid"))
    assert report.midi_events > 0 and report.dropouts == 0
    # reference: the same transcriber fed the same input in the same blocks
    ref = StreamingTranscriber(tiny_transcriber, max_block_size=block, sample_rate=rate,
                               options=options_from_preset(preset.transcribe))
    xx = np.concatenate([x, np.zeros((2, 2 * rate), np.float32)], axis=1)
    want = []
    for pos in range(0, xx.shape[1] - block + 1, block):
        want += [(pos + off - ref.latency_samples, m.note) for off, m in ref.process(xx[:, pos:pos + block])
                 if m.type == "note_on"]
    mid = mido.MidiFile(tmp_path / "live.mid")
    assert mid.type == 0 and mid.ticks_per_beat == 480 and len(mid.tracks) == 1  # one track (issue 17)
    t, got = 0, []
    for m in mid.tracks[0]:
        t += m.time
        if m.type == "note_on" and m.velocity > 0:
            got.append((t, m.note))
    want = [(round(p * 960 / rate), n) for p, n in want if p < x.shape[1] - rate]
    got = [g for g in got if g[0] < (x.shape[1] - rate) * 960 / rate]
    assert len(want) > 3 and sorted(got) == sorted(want)


def test_live_midi_needs_a_transcribe_section(tiny_separator):
    from dawsep.live import LiveError, run_live

    with pytest.raises(LiveError, match="transcribe"):
        run_live(with_model(load_preset("bass"), tiny_separator), input_file=None, midi_file="x.mid")
