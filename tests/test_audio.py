"""dawsep.audio: formats, rates, channel layout, resampling, streaming, atomic writes, bad input.

Tolerances below were measured on soundfile 0.14 / libsndfile 1.2.2 and are written next to
each assertion.  Everything is synthetic and lives in tmp_path.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dawsep import audio
from dawsep.errors import AudioFormatError, OutputPathError

RATES = [8000, 22050, 44100, 48000, 96000]


def tone(sr: int, seconds: float = 1.0, channels: int = 2) -> np.ndarray:
    """(channels, T) float32: three sines below every Nyquist, peak < 0.7, channels differ."""
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t + 0.5) + 0.1 * np.sin(2 * np.pi * sr / 8 * t)
    return np.stack([x, np.roll(x, 37)][:channels]).astype(np.float32)


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((est.astype(np.float64) - ref) ** 2)))


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- round trips

# Integer PCM is quantised with the 2**(bits-1) scale libsndfile decodes with: <= half an LSB.
LOSSLESS = [("wav", 16, 0.5 / 2**15 * 1.01), ("wav", 24, 0.5 / 2**23 * 1.01), ("wav", 32, 0.0),
            ("flac", 16, 0.5 / 2**15 * 1.01), ("flac", 24, 0.5 / 2**23 * 1.01)]


@pytest.mark.parametrize("fmt,bits,tol", LOSSLESS, ids=[f"{f}{b}" for f, b, _ in LOSSLESS])
def test_lossless_round_trip(tmp_path, fmt, bits, tol):
    rng = np.random.default_rng(0)
    x = (tone(44100) + 0.05 * rng.standard_normal((2, 44100))).astype(np.float32)
    path = audio.save(tmp_path / f"a.{fmt}", x, 44100, bit_depth=bits)
    y, sr = audio.load(path)
    assert sr == 44100 and y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y - x).max() <= tol
    meta = audio.info(path)
    assert (meta.format, meta.subtype, meta.channels, meta.frames) == (fmt, "FLOAT" if bits == 32 else f"PCM_{bits}", 2, 44100)
    assert files_in(tmp_path) == [f"a.{fmt}"]


def test_default_bit_depth_is_24(tmp_path):
    assert audio.info(audio.save(tmp_path / "a.flac", tone(44100), 44100)).subtype == "PCM_24"
    assert audio.info(audio.save(tmp_path / "a.wav", tone(44100), 44100)).subtype == "PCM_24"


# Lossy: libsndfile honours the LAME/Xing gapless tag, so decoded length == original length and
# the signal is aligned (no encoder delay/padding to trim).  Measured SNR on tone(): Vorbis
# q0.9 36.7-41.0 dB, LAME V0 48.9-58.7 dB over 8-48 kHz.
@pytest.mark.parametrize("fmt,min_snr", [("ogg", 30.0), ("mp3", 40.0)])
def test_lossy_round_trip_exact_length_and_snr(tmp_path, fmt, min_snr):
    x = tone(44100, 2.0)
    y, sr = audio.load(audio.save(tmp_path / f"a.{fmt}", x, 44100))
    assert sr == 44100 and y.shape == x.shape
    assert snr_db(x, y) >= min_snr


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_every_rate_and_layout(tmp_path, rate, channels, fmt):
    x = tone(rate, 0.5, channels)
    if fmt == "mp3" and rate == 96000:
        with pytest.raises(AudioFormatError, match="MP3 cannot store 96000 Hz; allowed rates"):
            audio.save(tmp_path / "a.mp3", x, rate)
        assert files_in(tmp_path) == []
        return
    path = audio.save(tmp_path / f"a.{fmt}", x, rate)
    meta = audio.info(path)
    assert (meta.sample_rate, meta.channels, meta.frames) == (rate, channels, x.shape[1])
    y, sr = audio.load(path)
    assert sr == rate and y.shape == (2, x.shape[1]) and y.dtype == np.float32
    ref = np.repeat(x, 2, axis=0) if channels == 1 else x
    if channels == 1:
        assert np.array_equal(y[0], y[1])  # mono is duplicated
    if fmt in ("wav", "flac"):
        assert np.abs(y - ref).max() <= 0.5 / 2**23 * 1.01
    else:
        assert snr_db(ref, y) >= 30.0


def test_aiff_read(tmp_path):
    x = tone(48000, 0.5)
    sf.write(tmp_path / "a.aiff", x.T, 48000, subtype="PCM_16")
    sf.write(tmp_path / "b.aif", x[:1].T, 22050, format="AIFF", subtype="PCM_24")
    y, sr = audio.load(tmp_path / "a.aiff")
    assert sr == 48000 and np.abs(y - x).max() <= 1.5 / 2**15  # libsndfile's own 16-bit encoder
    y, sr = audio.load(tmp_path / "b.aif")
    assert sr == 22050 and y.shape == (2, 24000) and np.array_equal(y[0], y[1])
    assert audio.info(tmp_path / "a.aiff").format == "aiff"


def test_load_resamples_to_requested_rate(tmp_path):
    x = tone(48000, 1.0)
    path = audio.save(tmp_path / "a.wav", x, 48000, bit_depth=32)
    y, sr = audio.load(path, 44100)
    assert sr == 44100 and y.shape == (2, 44100)
    assert np.array_equal(y, audio.resample(x, 48000, 44100))


def test_clipping_integer_formats_but_not_float(tmp_path):
    x = np.array([[0.5, 1.5, -2.0, 1.0, -1.0]] * 2, np.float32)
    with audio.AudioWriter(tmp_path / "c.wav", 8000, bit_depth=16) as w:
        w.write(x)
    assert w.clipped == 4
    y, _ = audio.load(tmp_path / "c.wav")
    assert np.allclose(y[0], [0.5, 32767 / 32768, -1.0, 32767 / 32768, -1.0])
    audio.save(tmp_path / "f.wav", x, 8000, bit_depth=32)
    assert np.array_equal(audio.load(tmp_path / "f.wav")[0], x)  # float WAV keeps > 0 dBFS


# --------------------------------------------------------------------------- resampling

def sine_error_db(y: np.ndarray, rate: int, freq: float, amp: float, margin: int) -> float:
    ref = amp * np.sin(2 * np.pi * freq * np.arange(y.shape[-1]) / rate)
    return float(20 * np.log10(np.abs(y[..., margin:-margin] - ref[margin:-margin]).max() / amp))


def test_resample_round_trip_quality():
    # 1 kHz sine 44.1k -> 48k -> 44.1k: measured -107 dB peak error away from the edges.
    t = np.arange(44100 * 2) / 44100
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    up = audio.resample(x, 44100, 48000)
    assert up.shape == (96000,)
    assert sine_error_db(up, 48000, 1000, 0.5, 4800) <= -90.0  # measured -99 dB
    back = audio.resample(up, 48000, 44100)
    assert back.shape == x.shape
    assert 20 * np.log10(np.abs(back - x)[4410:-4410].max() / 0.5) <= -90.0


@pytest.mark.parametrize("src,dst", [(8000, 44100), (44100, 8000), (22050, 44100), (44100, 22050), (96000, 44100)])
def test_resample_sine_accuracy(src, dst):
    # 500 Hz is below every Nyquist here; measured -93 to -123 dB.
    x = (0.5 * np.sin(2 * np.pi * 500 * np.arange(src) / src)).astype(np.float32)
    y = audio.resample(x, src, dst)
    assert y.shape == (audio.resampled_length(src, src, dst),) == (dst,)
    assert sine_error_db(y, dst, 500, 0.5, dst // 10) <= -85.0


def test_resample_rejects_aliasing():
    # 23 kHz at 48k is above the 22.05 kHz Nyquist of 44.1k: it must be removed, not folded.
    x = np.sin(2 * np.pi * 23000 * np.arange(48000) / 48000).astype(np.float32)
    y = audio.resample(x, 48000, 44100)[4410:-4410]
    assert 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)) / np.sqrt(0.5)) <= -60.0


PAIRS = [(44100, 48000), (48000, 44100), (8000, 44100), (44100, 8000), (22050, 44100), (44056, 44100)]


@pytest.mark.parametrize("src,dst", PAIRS)
def test_streaming_resampler_equals_whole_array(src, dst):
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((2, 30011))).astype(np.float32)
    whole = audio.resample(x, src, dst)
    assert whole.shape == (2, audio.resampled_length(x.shape[1], src, dst))
    r = audio.Resampler(src, dst, 2)
    for sizes in ([511], [4096], [1, 7, 2, 513, 3000, 1]):
        pieces, i, k = [], 0, 0
        while i < x.shape[1]:
            n = sizes[k % len(sizes)]
            pieces.append(r.process(x[:, i:i + n]))
            i, k = i + n, k + 1
        pieces.append(r.flush())  # flush also resets, so the same object is reused
        assert np.array_equal(np.concatenate(pieces, axis=1), whole), sizes


def test_streaming_resampler_single_sample_blocks():
    x = (0.1 * np.random.default_rng(2).standard_normal((1, 3001))).astype(np.float32)
    r = audio.Resampler(44100, 48000, channels=1)
    out = np.concatenate([r.process(x[:, i:i + 1]) for i in range(x.shape[1])] + [r.flush()], axis=1)
    assert np.array_equal(out, audio.resample(x, 44100, 48000))


@pytest.mark.parametrize("frames", [1, 2, 147, 1000, 44101])
@pytest.mark.parametrize("src,dst", [(44100, 48000), (48000, 44100), (8000, 96000), (96000, 8000), (44100, 44100)])
def test_resampled_lengths(frames, src, dst):
    y = audio.resample(np.ones((2, frames), np.float32), src, dst)
    assert y.shape == (2, round(frames * dst / src)) == (2, audio.resampled_length(frames, src, dst))


def test_resampler_reset_and_identity():
    x = np.random.default_rng(3).standard_normal((2, 1000)).astype(np.float32)
    r = audio.Resampler(44100, 48000)
    r.process(x)
    r.reset()
    assert np.array_equal(np.concatenate([r.process(x), r.flush()], 1), audio.resample(x, 44100, 48000))
    assert np.array_equal(audio.resample(x, 44100, 44100), x)
    with pytest.raises(ValueError):
        audio.Resampler(0, 44100)


# --------------------------------------------------------------------------- bad input

def _wav_bytes(tmp_path: Path, **kw) -> bytes:
    p = tmp_path / "_ok.wav"
    sf.write(p, tone(44100, 0.5).T, 44100, **kw)
    data = p.read_bytes()
    p.unlink()
    return data


def _make_bad(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Create the bad file for ``case``; return its path and a regex for the reason."""
    x = tone(44100, 1.0)
    if case == "empty":
        p = tmp_path / "empty.wav"
        p.write_bytes(b"")
        return p, "empty \\(0 bytes\\)"
    if case == "text":
        p = tmp_path / "notes.wav"
        p.write_text("these are not samples\n" * 20)
        return p, "not a readable WAV file"
    if case == "zero_frames":
        p = tmp_path / "silence.wav"
        sf.write(p, np.zeros((0, 2), np.float32), 44100)
        return p, "no audio \\(0 frames\\)"
    if case == "unknown_ext":
        p = tmp_path / "song.xyz"
        p.write_bytes(_wav_bytes(tmp_path))
        return p, "unsupported extension '.xyz'"
    if case == "missing":
        return tmp_path / "nowhere.flac", "does not exist"
    if case == "folder":
        p = tmp_path / "album.wav"
        p.mkdir()
        return p, "is a folder"
    if case in ("nan", "inf"):
        p = tmp_path / f"{case}.wav"
        bad = x.copy()
        bad[1, 30000] = np.nan if case == "nan" else np.inf
        sf.write(p, bad.T, 44100, subtype="FLOAT")
        return p, "non-finite samples \\(NaN or inf\\), first at frame 30000"
    if case.startswith("trunc_"):
        fmt = case[6:]
        src = tmp_path / f"_full.{fmt}"
        if fmt == "aiff":
            sf.write(src, x.T, 44100, subtype="PCM_16")
        else:
            audio.save(src, x, 44100)
        data = src.read_bytes()
        src.unlink()
        p = tmp_path / f"cut.{fmt}"
        p.write_bytes(data[:int(len(data) * 0.6)])
        return p, "truncat"
    raise AssertionError(case)


BAD = ["empty", "text", "zero_frames", "unknown_ext", "missing", "folder", "nan", "inf",
       "trunc_wav", "trunc_aiff", "trunc_flac", "trunc_ogg", "trunc_mp3"]
HEADER_LEVEL = {"empty", "text", "zero_frames", "unknown_ext", "missing", "folder", "trunc_wav", "trunc_aiff", "trunc_ogg"}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_audio_format_error(tmp_path, case):
    path, reason = _make_bad(tmp_path, case)
    with pytest.raises(AudioFormatError, match=reason) as err:
        audio.load(path)
    assert path.name in str(err.value) and err.value.path == str(path)
    with pytest.raises(AudioFormatError, match=reason):  # the streaming path, small blocks
        for _ in audio.stream(path, block_frames=4096):
            pass
    if case in HEADER_LEVEL:
        with pytest.raises(AudioFormatError, match=reason):
            audio.info(path)


def test_truncated_ogg_just_before_the_end(tmp_path):
    data = audio.save(tmp_path / "full.ogg", tone(44100, 2.0), 44100).read_bytes()
    (tmp_path / "cut.ogg").write_bytes(data[:-10])
    with pytest.raises(AudioFormatError, match="cut.ogg: is truncated"):
        audio.info(tmp_path / "cut.ogg")


def test_unreadable_file(tmp_path):
    p = audio.save(tmp_path / "locked.wav", tone(8000), 8000)
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(AudioFormatError, match="locked.wav: cannot be read \\(permission denied\\)"):
            audio.load(p)
    finally:
        p.chmod(0o644)


def test_nan_detected_per_block_while_streaming(tmp_path):
    x = np.zeros((2, 100_000), np.float32)
    x[0, 70_000] = np.nan
    sf.write(tmp_path / "late.wav", x.T, 8000, subtype="FLOAT")
    blocks = 0
    with pytest.raises(AudioFormatError, match="late.wav: contains non-finite .* frame 70000"):
        for _ in audio.stream(tmp_path / "late.wav", block_frames=4096):
            blocks += 1
    assert blocks == 70_000 // 4096  # every clean block before the bad one was delivered


def _strip_first_frame(data: bytes) -> bytes:
    """Drop the LAME "Info"/"Xing" frame (MPEG-1 layer III frame = 144*kbps/rate + pad bytes)."""
    assert data[:2] == b"\xff\xfb" and (b"Info" in data[:200] or b"Xing" in data[:200])
    kbps = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320][data[2] >> 4]
    return data[144000 * kbps // 44100 + ((data[2] >> 1) & 1):]


def test_mp3_without_length_tag(tmp_path):
    x = tone(44100, 3.0)
    # CBR without a tag (what some encoders write): libsndfile only estimates, we count exactly.
    sf.write(tmp_path / "cbr.mp3", x.T, 44100, format="MP3", bitrate_mode="CONSTANT", compression_level=0.3)
    (tmp_path / "bare.mp3").write_bytes(_strip_first_frame((tmp_path / "cbr.mp3").read_bytes()))
    meta = audio.info(tmp_path / "bare.mp3")
    assert sf.info(tmp_path / "bare.mp3").frames != meta.frames  # the estimate was off
    with audio.stream(tmp_path / "bare.mp3", block_frames=10_000) as reader:
        got = sum(b.shape[1] for b in reader)
    assert got == meta.frames == reader.frames
    assert 0 <= meta.frames - x.shape[1] < 3000  # encoder delay + padding are now part of the audio
    # VBR without a tag: libsndfile would stop at a wrong estimate and drop audio, so refuse.
    (tmp_path / "vbr.mp3").write_bytes(_strip_first_frame(audio.save(tmp_path / "v.mp3", x, 44100).read_bytes()))
    with pytest.raises(AudioFormatError, match="vbr.mp3: is a variable-bitrate MP3 without a Xing/VBRI length header"):
        audio.load(tmp_path / "vbr.mp3")


def test_mp3_with_id3v2_tag(tmp_path):
    x = tone(44100, 1.0)
    data = audio.save(tmp_path / "plain.mp3", x, 44100).read_bytes()
    body = b"TIT2" + (9).to_bytes(4, "big") + b"\x00\x00\x00Nocturne"  # one ID3v2.3 text frame
    tag = b"ID3\x03\x00\x00" + bytes([0, 0, 0, len(body) + 100]) + body + bytes(100)  # + padding
    (tmp_path / "tagged.mp3").write_bytes(tag + data)
    y, _ = audio.load(tmp_path / "tagged.mp3")
    assert y.shape == x.shape and snr_db(x, y) >= 40.0


# --------------------------------------------------------------------------- multichannel

def test_more_than_two_channels(tmp_path):
    levels = np.array([0.1, 0.2, 0.3, 0.9, 0.05, 0.15], np.float32)  # L R C LFE Ls Rs
    sf.write(tmp_path / "surround.wav", np.tile(levels, (1000, 1)), 48000, subtype="FLOAT")
    for call in (lambda: audio.load(tmp_path / "surround.wav"), lambda: audio.stream(tmp_path / "surround.wav")):
        with pytest.raises(AudioFormatError, match="surround.wav: has 6 channels; pass --downmix \\(downmix=True in Python\\) to mix it down to stereo"):
            call()
    y, sr = audio.load(tmp_path / "surround.wav", downmix=True)
    h = np.sqrt(0.5)
    expected = np.array([0.1 + h * 0.3 + h * 0.05, 0.2 + h * 0.3 + h * 0.15]) / (1 + 2 * h)  # ITU, LFE dropped
    assert sr == 48000 and y.shape == (2, 1000)
    assert np.allclose(y[:, 0], expected, atol=1e-6) and np.allclose(y[:, -1], expected, atol=1e-6)

    sf.write(tmp_path / "quad.flac", np.tile(levels[:4], (1000, 1)), 48000)
    y, _ = audio.load(tmp_path / "quad.flac", downmix=True, sample_rate=44100)  # other layouts: mean
    assert y.shape == (2, 919) and np.allclose(y[:, 100:-100], levels[:4].mean(), atol=1e-4)


# --------------------------------------------------------------------------- streaming and memory

def test_streaming_read_of_ten_minutes_uses_bounded_memory(tmp_path):
    rate, minutes, block = 8000, 10, 32768
    total = rate * 60 * minutes
    path = tmp_path / "long.wav"
    chunk = tone(rate, 10.0)  # written block-wise: the file never exists in memory
    with audio.AudioWriter(path, rate, bit_depth=16) as w:
        for _ in range(total // chunk.shape[1]):
            w.write(chunk)
    whole_bytes = 2 * total * 4  # what load() would hold: 38.4 MB

    audio.resample(np.zeros(8, np.float32), rate, 44100)  # build the cached filter table outside the trace
    for target in (None, 44100):
        tracemalloc.start()
        try:
            with audio.stream(path, block_frames=block, sample_rate=target) as reader:
                sizes = [b.shape[1] for b in reader]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert sum(sizes) == reader.frames == audio.resampled_length(total, rate, target or rate)
        assert all(n == block for n in sizes[:-1]) and 0 < sizes[-1] <= block
        # Measured peaks: 3.0 blocks (native rate), 4.6 (8 kHz -> 44.1 kHz); the decoded file is 146 blocks.
        assert peak < 8 * 2 * block * 4 < whole_bytes / 10, peak


# --------------------------------------------------------------------------- writing: atomicity and failures

def test_writer_is_atomic(tmp_path):
    target = tmp_path / "out.flac"
    with audio.AudioWriter(target, 44100) as w:
        w.write(tone(44100, 0.5))
        assert not target.exists()  # nothing visible under the final name until close
        [tmp] = [p for p in tmp_path.iterdir()]
        assert tmp.name.startswith(".out.flac.") and tmp.name.endswith(".part") and not audio.is_audio_file(tmp)
        w.write(tone(44100, 0.5))
    assert files_in(tmp_path) == ["out.flac"] and audio.info(target).frames == 44100


def test_exception_inside_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with audio.AudioWriter(tmp_path / "out.wav", 44100) as w:
            w.write(tone(44100, 0.2))
            raise RuntimeError("boom")
    assert files_in(tmp_path) == []


def test_failed_save_keeps_the_previous_file(tmp_path):
    target = audio.save(tmp_path / "out.wav", tone(8000), 8000)
    before = target.read_bytes()
    bad = tone(8000)
    bad[0, 5000] = np.inf
    with pytest.raises(AudioFormatError, match="out.wav: contains non-finite"):
        audio.save(target, bad, 8000)
    with pytest.raises(AudioFormatError, match="non-finite .* first at frame 9000"):
        with audio.AudioWriter(target, 8000) as w:  # NaN in a later block of a stream
            w.write(tone(8000))
            w.write(np.concatenate([tone(8000)[:, :1000], np.full((2, 5), np.nan, np.float32)], axis=1))
    assert files_in(tmp_path) == ["out.wav"] and target.read_bytes() == before


@pytest.mark.parametrize("name,kw,reason", [
    ("a.wav", {"bit_depth": 8}, "bit depth 8 is not available for wav; allowed: 16, 24, 32"),
    ("a.flac", {"bit_depth": 32}, "bit depth 32 is not available for flac; allowed: 16, 24"),
    ("a.mp3", {"bit_depth": 16}, "mp3 is lossy and has no bit depth"),
    ("a.aiff", {}, "cannot tell the output format from the extension '.aiff'; writable formats: wav, flac, ogg, mp3"),
    ("a.out", {"format": "m4a"}, "cannot write format 'm4a'; writable formats: wav, flac, ogg, mp3"),
    ("a.wav", {"format": "flac"}, "extension '.wav' does not match the requested format 'flac'"),
])
def test_bad_format_combinations(tmp_path, name, kw, reason):
    with pytest.raises(AudioFormatError, match=reason) as err:
        audio.save(tmp_path / name, tone(8000), 8000, **kw)
    assert name in str(err.value)
    with pytest.raises(AudioFormatError, match=reason):
        audio.AudioWriter(tmp_path / name, 8000, **kw)
    assert files_in(tmp_path) == []


def test_writer_close_and_abort_states(tmp_path):
    w = audio.AudioWriter(tmp_path / "a.wav", 8000)
    w.write(tone(8000))
    assert w.close() == tmp_path / "a.wav" == w.close()  # close is idempotent
    w.abort()  # no-op once the file is in place
    assert files_in(tmp_path) == ["a.wav"]
    w = audio.AudioWriter(tmp_path / "b.wav", 8000)
    w.write(tone(8000))
    w.abort()
    with pytest.raises(AudioFormatError, match="b.wav: cannot write: the writer is already aborted"):
        w.write(tone(8000))
    with pytest.raises(AudioFormatError, match="aborted; no file was written"):
        w.close()
    assert files_in(tmp_path) == ["a.wav"]


def test_other_write_failures_leave_nothing(tmp_path):
    with pytest.raises(AudioFormatError, match="no audio to write"):
        audio.save(tmp_path / "a.wav", np.zeros((2, 0), np.float32), 8000)
    with pytest.raises(AudioFormatError, match="no audio was written"):
        with audio.AudioWriter(tmp_path / "b.wav", 8000):
            pass
    with pytest.raises(OutputPathError, match="does not exist"):
        audio.save(tmp_path / "missing" / "a.wav", tone(8000), 8000)
    with pytest.raises(ValueError, match="expected 2 channel"):
        with audio.AudioWriter(tmp_path / "c.wav", 8000) as w:
            w.write(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match="did you pass \\(samples, channels\\)"):
        audio.save(tmp_path / "d.wav", np.zeros((1000, 2), np.float32), 8000)
    assert files_in(tmp_path) == []


def test_explicit_format_with_any_extension_and_mono_save(tmp_path):
    p = audio.save(tmp_path / "take.out", tone(8000)[0], 8000, format="flac", bit_depth=16)
    meta = sf.info(p)  # audio.info() would refuse the unknown extension
    assert meta.format == "FLAC" and meta.channels == 1


def test_is_audio_file_and_constants():
    assert audio.is_audio_file("x/Song.FLAC") and audio.is_audio_file("a.wave") and audio.is_audio_file("b.aif")
    assert not audio.is_audio_file("notes.txt") and not audio.is_audio_file(".a.wav.1234.part")
    assert audio.READ_EXTENSIONS == {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"}
    assert audio.WRITE_FORMATS == {"wav": (16, 24, 32), "flac": (16, 24), "ogg": (), "mp3": ()}


def test_import_is_clean():
    code = "import sys, dawsep.audio; bad = {'torch', 'scipy'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)
