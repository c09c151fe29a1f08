"""Lo-fi timbre sources of corpus v2: Sonivox (FluidSynth), Freepats (TiMidity++), one-shot drum kits.

Onsets and pitch are measured on the rendered audio with estimators written here, not taken from
the modules. Each source skips cleanly when its package is not installed.
"""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("soundfile")

from dawsep.train.data import drum_map, heldout, oneshot, samples, sampler as S, soundfonts, timidity as T  # noqa: E402
from dawsep.train.data.freepats import (  # noqa: E402
    FreepatsConfig, TimidityError, freepats_config, patch_hashes, played_program,
)
from dawsep.train.data.score import SAMPLE_RATE as SR, Note, Part  # noqa: E402
from tests.train.test_sampler import _f0_cents  # noqa: E402  (one pitch estimator for every renderer test)

ONSET_TOL = int(0.005 * SR)


def _onset(y: np.ndarray, s0: int, rel_db: float = -30.0, after_s: float = 0.3) -> int:
    """Onset (samples re ``s0``) of the note labelled at ``s0``: the first sample from 45 ms before
    it whose envelope exceeds ``rel_db`` re the peak of the next ``after_s``, and 4x whatever an
    earlier note still rings 45-9 ms before the label."""
    env = np.abs(y).max(axis=0)
    a = max(0, s0 - 2000)
    ringing = env[a:max(a, s0 - 400)].max(initial=0.0)
    w = env[a:s0 + int(after_s * SR)]
    return a + int(np.argmax(w > max(w.max() * 10 ** (rel_db / 20), 4 * ringing))) - s0


def _mono(y: np.ndarray) -> np.ndarray:
    return y.astype(np.float64).mean(axis=0)


def _require_pcm_reference() -> None:
    if not heldout.reserved_index().pcm_reference:
        pytest.skip("no PCM MuseScore General installed: the content check fails closed")


# --------------------------------------------------------------------------- Sonivox (FluidSynth)

@pytest.fixture(scope="module")
def sonivox() -> soundfonts.Soundfont:
    try:
        return soundfonts.resolve("sonivox")
    except soundfonts.SoundfontError as e:
        pytest.skip(str(e))


def test_sonivox_resolves_with_gm_presets_none_reserved(sonivox):
    from dawsep.train.data.sf2 import read_soundfont

    assert sonivox.source == "sonivox" and not sonivox.heldout
    assert soundfonts.WEIGHTS["sonivox"] == 0.25
    sf2 = read_soundfont(sonivox.path)
    assert {(0, p) for p in range(128)} <= set(sf2.presets)  # every GM program
    assert (128, 0) in sf2.presets  # the standard drum kit
    rates = {s.rate for s in sf2.samples}
    assert max(rates) <= 32000 and min(rates) >= 11025  # lo-fi: 11-32 kHz samples
    assert heldout.heldout_presets(sonivox.path) == {}
    _require_pcm_reference()
    for bank, program in sf2.presets:
        heldout.check_sample_hashes("train", sf2.preset_hashes(bank, program), f"sonivox {bank}:{program}")


def test_sonivox_piano_onset_and_pitch(sonivox):
    from dawsep.train.data.render import Renderer, SynthError

    try:
        renderer = Renderer()
    except SynthError as e:
        pytest.skip(str(e))
    try:
        for pitch in (48, 60, 72):
            t = 0.3127
            out = renderer.render([(Part("piano", "test", 0, [Note(pitch, t, t + 2.5, 100)]), sonivox.path)], 3.2)
            y, label = out[0].audio, out[0].part.notes[0].start  # the label is FluidSynth's block-quantised time
            s0 = round(label * SR)
            delta = _onset(y, s0, after_s=2.5)
            dev = _f0_cents(_mono(y), pitch, label + 0.2)
            print(f"sonivox piano key {pitch}: onset {delta / SR * 1e3:+.2f} ms, pitch {dev:+.1f} cents")
            assert 0 <= delta <= ONSET_TOL
            assert abs(dev) < 10.0
    finally:
        renderer.close()


# --------------------------------------------------------------------------- Freepats (TiMidity++)

@pytest.fixture(scope="module")
def freepats() -> FreepatsConfig:
    if shutil.which(T.TIMIDITY_BIN) is None:
        pytest.skip("timidity not installed (Debian package timidity)")
    try:
        return freepats_config()
    except TimidityError as e:
        pytest.skip(str(e))


def test_timidity_onsets_on_the_label(freepats):
    """Piano notes across the keyboard at odd times over a 12-s part, and every groove drum key:
    each note's onset lands within 5 ms after its label sample, never before (no latency, no drift)."""
    keys = list(range(21, 109, 6)) + [108]
    times = [0.0213 + 0.8 * i + 0.00123 * i for i in range(len(keys))]
    y = T.render_part_timidity([Note(k, t, t + 0.3, 100) for k, t in zip(keys, times)], [], 0, False, 15 * SR, 0)
    for k, t in zip(keys, times):
        s0 = round(t * SR)
        delta = _onset(y, s0)
        assert 0 <= delta <= ONSET_TOL, f"piano key {k}: onset {delta / SR * 1e3:+.2f} ms"
    for i, k in enumerate(drum_map.GROOVE_KEYS):  # one part per key: cymbal tails would mask the next hit
        t = 0.0311 + 0.0173 * i
        y = T.render_part_timidity([Note(k, t, t + 0.1, 100)], [], 0, True, int(0.5 * SR), 0)
        delta = _onset(y, round(t * SR))
        assert 0 <= delta <= ONSET_TOL, f"drum key {k}: onset {delta / SR * 1e3:+.2f} ms"


def test_timidity_pitch_within_5_cents(freepats):
    """The grand piano's samples are measured and tuned (the raw patch is up to 11 cents flat);
    the part's tuning is a pitch bend."""
    keys = (33, 38, 45, 60, 69, 84)
    notes = [Note(k, 3.0 * i + 0.1, 3.0 * i + 2.6, 100) for i, k in enumerate(keys)]
    y = _mono(T.render_part_timidity(notes, [], 0, False, 3 * len(keys) * SR, 0))
    for i, k in enumerate(keys):
        dev = _f0_cents(y, k, 3.0 * i + 0.4)
        assert abs(dev) < 5.0, f"key {k}: {dev:+.1f} cents"
    y = _mono(T.render_part_timidity([Note(60, 0.1, 2.6, 100)], [], 0, False, 3 * SR, 0, tuning_cents=20.0))
    assert _f0_cents(y, 60, 0.4) == pytest.approx(20.0, abs=2.0)


def test_timidity_velocity_determinism_and_fallback(freepats):
    def peak_db(v: int) -> float:
        y = T.render_part_timidity([Note(60, 0.1, 0.8, v)], [], 0, False, SR, 0)
        return 20 * np.log10(np.abs(y).max())

    levels = [peak_db(v) for v in (20, 60, 100, 127)]
    assert np.all(np.diff(levels) > 1.0) and levels[-1] - levels[0] > 12.0
    rng = np.random.default_rng(1)
    notes = [Note(int(rng.integers(36, 90)), float(s), float(s) + 0.4, int(rng.integers(30, 127)))
             for s in np.sort(rng.uniform(0, 4, 30))]
    pedal = [(1.0, 64, 127), (2.5, 64, 0)]
    a = T.render_part_timidity(notes, pedal, 33, False, 5 * SR, 7)
    b = T.render_part_timidity(notes, pedal, 33, False, 5 * SR, 7)
    assert a.dtype == np.float32 and a.shape == (2, 5 * SR) and np.abs(a).max() > 0.01
    assert np.array_equal(a, b)
    # every GM program is played by a Freepats program of its own family of 8
    for p in range(128):
        q = played_program(p, freepats)
        assert q in freepats.programs and q // 8 == p // 8
    # a program Freepats lacks (honky-tonk) sounds as its stand-in, not as silence or another bank
    assert 3 not in freepats.programs
    honky = T.render_part_timidity([Note(60, 0.1, 0.5, 100)], [], 3, False, SR, 0)
    stand_in = T.render_part_timidity([Note(60, 0.1, 0.5, 100)], [], played_program(3), False, SR, 0)
    assert np.abs(honky).max() > 0.01 and np.array_equal(honky, stand_in)


def test_timidity_speed_and_headroom(freepats):
    rng = np.random.default_rng(0)
    notes = [Note(int(rng.integers(28, 96)), float(s), float(s) + rng.uniform(0.08, 1.2), int(rng.integers(20, 127)))
             for s in rng.uniform(0, 29.5, 500)]
    pedal = [e for t in np.arange(0, 30, 2.0) for e in ((t + 0.05, 64, 127), (t + 1.9, 64, 0))]
    t0 = time.perf_counter()
    y = T.render_part_timidity(notes, pedal, 0, False, 30 * SR, 0)
    wall = time.perf_counter() - t0
    print(f"30-s Freepats piano part, 500 notes, pedalled: {wall:.2f} s wall, peak {np.abs(y).max():.2f}")
    assert wall < 10.0
    assert 0.05 < np.abs(y).max() < 1.0


def test_freepats_patches_not_reserved(freepats):
    """GUS patches are identified by their file bytes; none is reserved content (MuseScore General
    is an SF2/SF3 bank, so a clash is not expected: this pins it)."""
    hashes = patch_hashes(config=freepats)
    assert len(hashes) == len(set(freepats.programs.values()) | set(freepats.drums.values()))
    assert not set(hashes) & set(heldout.reserved_sample_hashes())


# --------------------------------------------------------------------------- one-shot drum kits

@pytest.fixture(scope="module", params=sorted(oneshot.ONESHOT_KITS))
def kit(request) -> samples.SampleSet:
    if request.param not in oneshot.oneshot_kits():
        pytest.skip(f"{request.param} not installed (Debian package {oneshot.ONESHOT_KITS[request.param].package})")
    return oneshot.load_oneshot_kit(request.param)


def test_oneshot_every_groove_key_maps_and_chokes(kit):
    for key in drum_map.GROOVE_KEYS:
        assert kit.zones_for(key, 1) and kit.zones_for(key, 127), f"{kit.name}: key {key} unmapped"
    hats = {z.choke_group for key in (42, 44, 46) for z in kit.zones_for(key, 100)}
    assert len(hats) == 1 and hats.pop() >= 0
    assert all(z.choke_group < 0 for key in (36, 38, 49, 51) for z in kit.zones_for(key, 100))
    if kit.name == "oneshot:sonic-pi":  # soft and hard recordings are velocity layers
        assert kit.zones_for(36, 30)[0].path.endswith("drum_bass_soft.flac")
        assert kit.zones_for(36, 120)[0].path.endswith("drum_bass_hard.flac")


def test_oneshot_onsets_on_the_label(kit):
    t = 0.2113
    for key in drum_map.GROOVE_KEYS:
        y, hashes = S.render_part([Note(key, t, t + 0.1, 100)], SR, kit, S.PlayParams())
        assert len(hashes) == 1
        delta = _onset(y, round(t * SR))
        assert 0 <= delta <= ONSET_TOL, f"{kit.name} key {key}: onset {delta / SR * 1e3:+.2f} ms"


def test_oneshot_hats_choke(kit):
    """A closed hat cuts a ringing open hat: after the cut fade the audio is the closed hat alone."""
    t1 = 0.3
    both, _ = S.render_part([Note(46, 0.05, 0.1, 100), Note(42, t1, t1 + 0.1, 100)], SR, kit, S.PlayParams())
    closed, _ = S.render_part([Note(42, t1, t1 + 0.1, 100)], SR, kit, S.PlayParams())
    after = int((t1 + S.CUT_S * 4 / 3) * SR) + 1
    np.testing.assert_allclose(both[:, after:], closed[:, after:], atol=1e-7)
    open_only, _ = S.render_part([Note(46, 0.05, 0.1, 100)], SR, kit, S.PlayParams())
    assert np.abs(open_only[:, after:after + 2000]).max() > 1e-3  # the open hat was still ringing


def test_oneshot_samples_not_reserved(kit):
    hashes = sorted({kit.sample_hash(z) for z in kit.zones})
    assert len(hashes) == len({z.path for z in kit.zones})  # no two files decode to the same PCM
    _require_pcm_reference()
    heldout.check_sample_hashes("train", hashes, kit.name)
    assert all(os.path.isfile(z.path) for z in kit.zones)
