"""The SF2/SF3 reader and the content (sample-hash) held-out rules, on the installed soundfonts."""
from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest

from dawsep.train.data import heldout
from dawsep.train.data.sf2 import (
    FINGERPRINT_POINTS,
    SoundfontFormatError,
    read_soundfont,
)
from dawsep.train.data.sf2_write import PresetSpec, SampleSpec, write_sf2

FLUID = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
TIMGM = "/usr/share/sounds/sf2/TimGM6mb.sf2"
MSG_PCM = "/usr/share/sounds/sf2/MuseScore_General_Full.sf2"  # musescore-general-soundfont-lossless
MSG_LITE = "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"  # musescore-general-soundfont-small
GENERALUSER = "/usr/share/minuet/soundfonts/GeneralUser-v1.47.sf2"
BLACK_PEARL = "/usr/share/hydrogen/data/drumkits/The Black Pearl 1.0"


def need(*paths: str) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (see scripts/sysdeps.sh)")


@pytest.fixture(scope="session")
def reserved() -> heldout.ReservedIndex:
    """The reserved index, built once (it fills the on-disk hash cache the first time)."""
    need(MSG_PCM, FLUID, TIMGM)
    return heldout.reserved_index()


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Soundfonts written by a test get their hash cache in tmp_path, not in the user's cache."""
    monkeypatch.setenv("DAWSEP_HASH_CACHE", str(tmp_path / "hashes"))
    return tmp_path / "hashes"


def tone(n: int = 6000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (np.sin(2 * np.pi * 440 * t / 44100) * np.exp(-t / 3000) * 20000 + rng.normal(0, 50, n)).astype(np.int16)


# ---------------------------------------------------------------------------------------------- reader
def test_reader_fluidr3_piano():
    need(FLUID)
    sf = read_soundfont(FLUID)
    assert sf.name == "Fluid R3 GM"
    assert len(sf.presets) == 189 and len(sf.samples) == 1418
    piano = sf.presets[(0, 0)]
    assert piano.name == "Yamaha Grand Piano"
    samples = [sf.samples[i] for i in piano.samples]
    assert len(samples) >= 8 and all("Piano" in s.name for s in samples)
    # FluidR3 leaves every sample header's root key at 60 (its instrument zones set the pitch) ...
    assert {s.root_key for s in samples} == {60}
    assert all(s.rate in (22050, 32000, 44100, 48000) and s.end > s.start for s in samples)
    assert all(len(s.hash) == 64 for s in samples)
    # The hash is of the sample's int16 PCM, and the preset's keys hold it (and its fingerprint).
    pcm = sf.sample_pcm(piano.samples[0])
    assert hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest() == samples[0].hash
    assert samples[0].hash in sf.preset_hashes(0, 0)
    assert read_soundfont(FLUID) is sf  # parsed once per process
    with pytest.raises(KeyError):
        sf.preset_hashes(5, 127)


NOTE = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "A": 9, "A#": 10, "B": 11}


def test_reader_generaluser_root_keys():
    """... GeneralUser's headers carry it: the grand-piano samples' root keys are the notes in their names
    (all but 'Grand Piano-D#3', whose root key is 63 = D#4)."""
    need(GENERALUSER)
    sf = read_soundfont(GENERALUSER)
    assert sf.name == "GeneralUser GS 1.47" and len(sf.presets) == 269
    samples = [sf.samples[i] for i in sf.presets[(0, 0)].samples]
    assert len(samples) >= 10
    named = [12 * (int(n[-1]) + 1) + NOTE[n[:-1]] for n in (s.name.rsplit("-", 1)[1] for s in samples)]
    assert sum(s.root_key == k for s, k in zip(samples, named)) >= len(samples) - 1
    assert len({s.root_key for s in samples}) == len(samples) and all(21 <= s.root_key <= 108 for s in samples)


def test_reader_sf3_lite():
    """MuseScore's SF3: Vorbis samples (hashed as blobs) and an unpadded odd-sized sample chunk."""
    need(MSG_LITE)
    sf = read_soundfont(MSG_LITE)
    assert "MuseScore_General" in sf.name and len(sf.presets) > 100
    assert all(s.compressed for s in sf.samples) and all(s.fingerprint is None for s in sf.samples)
    assert sf.presets[(0, 0)].samples


def test_corrupt_and_truncated_files(tmp_path, private_cache):
    need(TIMGM)
    data = open(TIMGM, "rb").read()
    cases = {
        "truncated.sf2": data[: len(data) // 3],
        "garbage.sf2": b"RIFX" + os.urandom(1000),
        "empty.sf2": b"",
        "no_pdta.sf2": b"RIFF" + (4).to_bytes(4, "little") + b"sfbk",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(SoundfontFormatError, match=name):
            read_soundfont(tmp_path / name)
    with pytest.raises(SoundfontFormatError):
        read_soundfont(tmp_path / "missing.sf2")
    # A preset zone pointing past the instrument list.
    good = tmp_path / "good.sf2"
    write_sf2(good, "Good", [SampleSpec("a", tone())], [PresetSpec("p", (0,))])
    blob = bytearray(good.read_bytes())
    pgen = blob.index(b"pgen") + 8
    blob[pgen + 2 : pgen + 4] = (7).to_bytes(2, "little")
    (tmp_path / "bad_index.sf2").write_bytes(bytes(blob))
    with pytest.raises(SoundfontFormatError, match="instrument"):
        read_soundfont(tmp_path / "bad_index.sf2")


def test_writer_round_trip(tmp_path, private_cache):
    a, b = tone(5000, 1), tone(7000, 2)
    path = tmp_path / "MyFont.sf2"
    write_sf2(path, "MyFont", [SampleSpec("A", a, 32000, 57), SampleSpec("B", b, 44100, 69)],
              [PresetSpec("Both", (0, 1)), PresetSpec("Only B", (1,), bank=8, program=5)])
    sf = read_soundfont(path)
    assert sf.name == "MyFont" and set(sf.presets) == {(0, 0), (8, 5)}
    assert sf.presets[(0, 0)].samples == (0, 1) and sf.presets[(8, 5)].samples == (1,)
    assert [(s.name, s.rate, s.root_key) for s in sf.samples] == [("A", 32000, 57), ("B", 44100, 69)]
    np.testing.assert_array_equal(sf.sample_pcm(1), b)
    assert sf.samples[1].hash == hashlib.sha256(b.astype("<i2").tobytes()).hexdigest()
    assert os.listdir(private_cache) == [f"MyFont.sf2-{os.path.getsize(path)}-{os.stat(path).st_mtime_ns}.json"]


def test_hash_cache_is_used_and_repaired(tmp_path, private_cache):
    need(TIMGM)
    from dawsep.train.data import sf2

    copy = tmp_path / "Tim.sf2"
    shutil.copy(TIMGM, copy)
    first = [s.hash for s in read_soundfont(copy).samples]
    (cache,) = private_cache.iterdir()
    cache.write_text("{not json")  # a broken cache is ignored and rewritten
    sf2._read_cached.cache_clear()
    assert [s.hash for s in read_soundfont(copy).samples] == first
    assert cache.read_text().startswith("{")


# ---------------------------------------------------------------------------------------------- content rules
def _reserved_sample(sf, reserved, preset):
    """Index of a sample of ``preset`` whose content is reserved (exact hash and fingerprint) and whose
    peak has room before and after it for the edits below."""
    for i in sf.presets[preset].samples:
        s = sf.samples[i]
        if s.hash in reserved.reserved and s.fingerprint in reserved.reserved:
            peak = int(np.argmax(np.abs(sf.sample_pcm(i).astype(np.int32))))
            if peak >= 300 and s.end - s.start - peak > FINGERPRINT_POINTS + 1000:
                return i
    raise AssertionError(f"no suitable reserved sample in preset {preset}")


def test_msg_sample_under_an_innocent_name_is_refused(tmp_path, private_cache, reserved):
    msg = read_soundfont(MSG_PCM)
    pcm = msg.sample_pcm(_reserved_sample(msg, reserved, (0, 0)))  # MuseScore General's grand piano
    path = tmp_path / "MyFont.sf2"
    write_sf2(path, "MyFont", [SampleSpec("Piano C4", pcm)], [PresetSpec("Piano", (0,))])
    assert not heldout.is_heldout_soundfont(path)  # the name rule cannot see it ...
    keys = read_soundfont(path).preset_hashes(0, 0)
    for split in heldout.SEEN_SPLITS:  # ... the content rule does
        with pytest.raises(heldout.HeldOutError, match="MyFont.sf2 bank 0 program 0"):
            heldout.check_sample_hashes(split, keys, "MyFont.sf2 bank 0 program 0")
    heldout.check_sample_hashes("test", keys, "MyFont.sf2 bank 0 program 0")
    assert heldout.heldout_presets(path) == {(0, 0): ["Piano C4"]}


def test_trimmed_msg_sample_is_refused(tmp_path, private_cache, reserved):
    """Leading silence cut, a fade-in and a shortened tail (as GeneralUser did to MSG's celeste)."""
    msg = read_soundfont(MSG_PCM)
    pcm = msg.sample_pcm(_reserved_sample(msg, reserved, (0, 42))).copy()
    peak = int(np.argmax(np.abs(pcm.astype(np.int32))))
    start = max(0, peak - 300)
    edited = pcm[start : peak + FINGERPRINT_POINTS + 100].copy()
    fade = min(32, peak - start)
    edited[:fade] = (edited[:fade] * np.linspace(0, 1, fade)).astype(np.int16)
    path = tmp_path / "Trimmed.sf2"
    write_sf2(path, "Trimmed", [SampleSpec("Strings", edited)], [PresetSpec("Strings", (0,))])
    sf = read_soundfont(path)
    assert sf.samples[0].hash not in reserved.reserved  # the exact hash misses it
    with pytest.raises(heldout.HeldOutError):
        heldout.check_sample_hashes("train", sf.preset_hashes(0, 0), "Trimmed.sf2 bank 0 program 0")


def test_fluidr3_content_shared_with_msg_is_allowed(tmp_path, private_cache, reserved):
    fluid, msg = read_soundfont(FLUID), read_soundfont(MSG_PCM)
    shared = {s.hash for s in msg.samples} & {s.hash for s in fluid.samples}
    assert len(shared) > 500  # MuseScore General reuses FluidR3's basses, guitars, drums, ...
    index = next(s.index for s in fluid.samples if s.hash in shared and s.end - s.start > FINGERPRINT_POINTS)
    path = tmp_path / "Shared.sf2"
    write_sf2(path, "Shared", [SampleSpec("Bass", fluid.sample_pcm(index))], [PresetSpec("Bass", (0,))])
    heldout.check_sample_hashes("train", read_soundfont(path).preset_hashes(0, 0), "Shared.sf2 0:0")
    for path in (FLUID, TIMGM):  # the training banks themselves pass whole
        sf = read_soundfont(path)
        for bank, program in sf.presets:
            heldout.check_sample_hashes("train", sf.preset_hashes(bank, program), f"{path} {bank}:{program}")
    assert heldout.heldout_presets(FLUID) == {} and heldout.heldout_presets(TIMGM) == {}


def test_generaluser_cello_is_refused_and_piano_allowed(reserved):
    need(GENERALUSER)
    refused = heldout.heldout_presets(GENERALUSER)
    assert (0, 42) in refused and "Cello-D#4" in refused[(0, 42)]
    assert (0, 0) not in refused and (128, 0) not in refused  # grand piano, standard kit
    gu = read_soundfont(GENERALUSER)
    with pytest.raises(heldout.HeldOutError, match="GeneralUser-v1.47.sf2 bank 0 program 42"):
        heldout.check_sample_hashes("valid", gu.preset_hashes(0, 42), "GeneralUser-v1.47.sf2 bank 0 program 42")
    heldout.check_sample_hashes("train", gu.preset_hashes(0, 0), "GeneralUser-v1.47.sf2 bank 0 program 0")
    # The celeste samples GeneralUser trimmed and faded in are caught by their fingerprint.
    assert {"Celeste-D#7", "Celeste-F#5"} <= set(refused[(0, 8)])


def test_every_msg_variant_is_a_source(reserved):
    assert MSG_PCM in reserved.sources and reserved.pcm_reference
    if os.path.exists(MSG_LITE):
        lite = read_soundfont(MSG_LITE)
        assert MSG_LITE in reserved.sources
        assert sum(s.hash in reserved.reserved for s in lite.samples) > len(lite.samples) // 2
    assert FLUID not in reserved.sources and TIMGM not in reserved.sources
    assert heldout.reserved_sample_hashes() == frozenset(reserved.reserved)


def test_fails_closed_without_a_pcm_reference(monkeypatch, reserved):
    blind = heldout.ReservedIndex({}, reserved.allowed, (MSG_LITE,), pcm_reference=False)
    monkeypatch.setattr(heldout, "reserved_index", lambda: blind)
    heldout.check_sample_hashes("train", read_soundfont(FLUID).preset_hashes(0, 0), "FluidR3 0:0")
    with pytest.raises(heldout.HeldOutError, match="lossless"):
        heldout.check_sample_hashes("train", {"0" * 64}, "SomeFont 0:0")
    heldout.check_sample_hashes("test", {"0" * 64}, "SomeFont 0:0")
    with pytest.raises(heldout.HeldOutError, match="unknown split"):
        heldout.check_sample_hashes("training", set(), "x")


# ---------------------------------------------------------------------------------------------- loose audio
def test_audio_file_hash_is_of_content(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    stereo = np.stack([tone(3000, 3), tone(3000, 4)], axis=1)
    soundfile.write(tmp_path / "a.wav", stereo, 44100, subtype="PCM_16")
    soundfile.write(tmp_path / "renamed.flac", stereo, 44100, subtype="PCM_16")
    expect = hashlib.sha256(stereo.astype("<i2").tobytes()).hexdigest()
    assert heldout.audio_file_hash(tmp_path / "a.wav") == heldout.audio_file_hash(tmp_path / "renamed.flac") == expect
    keys = heldout.audio_file_keys(tmp_path / "a.wav")
    assert hashlib.sha256(stereo[:, 1].astype("<i2").tobytes()).hexdigest() in keys  # per channel too


def test_black_pearl_sample_in_a_soundfont_is_refused(tmp_path, private_cache, reserved):
    need(BLACK_PEARL)
    soundfile = pytest.importorskip("soundfile")
    wav = sorted(f for f in os.listdir(BLACK_PEARL) if f.endswith(".wav"))[0]
    pcm, _ = soundfile.read(os.path.join(BLACK_PEARL, wav), dtype="int16", always_2d=True)
    path = tmp_path / "Kit.sf2"
    write_sf2(path, "Kit", [SampleSpec("Snare", pcm[:, 0])], [PresetSpec("Kit", (0,), bank=128)])
    with pytest.raises(heldout.HeldOutError, match="The Black Pearl 1.0"):
        heldout.check_sample_hashes("train", read_soundfont(path).preset_hashes(128, 0), "Kit.sf2 128:0")
