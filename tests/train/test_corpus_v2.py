"""Corpus v2: explicit sources, even family spread, the procedural piano, reserved content refused."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("soundfile")

from dawsep.train.data import heldout, procedural_piano  # noqa: E402
from dawsep.train.data.score import SAMPLE_RATE, Note  # noqa: E402

try:
    from dawsep.train.data.render import Renderer
    from dawsep.train.data.soundfonts import heldout_soundfont, resolve

    Renderer()
    for _s in ("fluidr3", "timgm6mb", "generaluser", "airfont320"):
        resolve(_s)
    heldout_soundfont()
    _MISSING = None
except Exception as e:  # noqa: BLE001
    _MISSING = f"synth or a corpus-v2 soundfont missing (make data installs them): {e}"

needs_fonts = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")
#: Sources that need no sample package: soundfonts and the procedural piano.
SF_SOURCES = ("fluidr3", "timgm6mb", "generaluser", "airfont320", "procedural-piano")


def _peak_hz(x: np.ndarray, lo: float, hi: float) -> float:
    """The strongest frequency (Hz) in [lo, hi]: zero-padded FFT peak, parabolic interpolation."""
    n = 16 * len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    sel = np.nonzero((f > lo) & (f < hi))[0]
    i = sel[np.argmax(spec[sel])]
    a, b, c = np.log(spec[i - 1: i + 2] + 1e-12)
    return float(f[i] + 0.5 * (a - c) / (a - 2 * b + c) * (f[1] - f[0]))


# ---------------------------------------------------------------- procedural piano ---------------

def _plain_voice(**kw) -> dict:
    v = procedural_piano.random_voice(np.random.default_rng(3))
    v.update(stretch_cents_per_octave=0.0, tuning_cents=0.0, **kw)
    return v


@pytest.mark.parametrize("pitch", [33, 48, 60, 76, 96])
def test_procedural_piano_pitch_within_5_cents(pitch):
    v = _plain_voice()
    f = 440.0 * 2 ** ((pitch - 69) / 12)
    x = procedural_piano.note_waveforms(v, pitch, 1)[3].mean(axis=0)[2000: 2000 + 32768]
    got = _peak_hz(x, f * 0.97, f * 1.03)
    assert abs(1200 * np.log2(got / f)) < 5.0, (pitch, got, f)


def test_procedural_piano_partials_are_stretched():
    """A stiff string: the 8th partial lies above 8 f0 by the inharmonicity the voice asks for."""
    v = _plain_voice(inharmonicity_c4=4e-4)
    x = procedural_piano.note_waveforms(v, 48, 1)[5].mean(axis=0)[1000: 1000 + 32768]
    f0 = 440.0 * 2 ** ((48 - 69) / 12)
    p8 = _peak_hz(x, 7.9 * f0, 8.3 * f0)
    B = procedural_piano._inharmonicity(v, 48)
    assert abs(p8 - 8 * f0 * np.sqrt(1 + B * 64)) < 0.002 * p8
    assert p8 > 8 * f0 * 1.003


def test_procedural_piano_onsets_velocity_and_dampers():
    v = _plain_voice(release_s=0.1)
    n = 6 * SAMPLE_RATE
    notes = [Note(60, 0.5, 0.8, 100), Note(67, 2.0, 2.3, 30)]
    a = procedural_piano.render_notes(notes, n, v, seed=1)
    env = np.abs(a).max(axis=0)
    for note in notes:  # silence before (the first note's damped tail is gone by the second)
        i = int(round(note.start * SAMPLE_RATE))
        assert env[i - 400: i - 10].max() < 1e-3 * env[i: i + 2000].max()
        first = i - 400 + np.nonzero(env[i - 400: i + 2000] > 0.1 * env[i: i + 2000].max())[0][0]
        assert 0 <= first - i <= 0.005 * SAMPLE_RATE
    # Louder velocity, louder and brighter note (velocity layers differ in spectrum, not just gain).
    w = procedural_piano.note_waveforms(v, 60, 1)
    def centroid(x):
        s = np.abs(np.fft.rfft(x.mean(axis=0)[:8192]))
        return (s * np.arange(len(s))).sum() / s.sum()
    assert centroid(w[-1]) > 1.3 * centroid(w[0])
    layers = {min(procedural_piano.VELOCITY_LAYERS - 1, int(vel / 128 * procedural_piano.VELOCITY_LAYERS))
              for vel in range(1, 128)}
    assert layers == set(range(procedural_piano.VELOCITY_LAYERS))
    # Damped at key-up (pedal up): -60 dB within 3 release times; held by the pedal otherwise.
    up = int(round(0.8 * SAMPLE_RATE))
    peak = env[: up].max()
    assert env[up + int(0.3 * SAMPLE_RATE): up + int(0.5 * SAMPLE_RATE)].max() < peak * 1e-3
    held = procedural_piano.render_notes([Note(60, 0.5, 0.8, 100)], n, v, seed=1, pedal=[(0.2, 127), (4.0, 0)])
    assert np.abs(held[:, up + int(0.5 * SAMPLE_RATE): up + int(0.6 * SAMPLE_RATE)]).max() > peak * 1e-2
    # Sympathetic resonance under the pedal: the undamped strings an octave and a twelfth up ring
    # along, so what the pedal adds sits at 2 f0 and 3 f0, not at f0.
    f1 = 440.0 * 2 ** ((60 - 69) / 12)
    seg = slice(int(1.0 * SAMPLE_RATE), int(1.0 * SAMPLE_RATE) + 16384)
    dry = procedural_piano.render_notes([Note(60, 0.5, 3.5, 100)], n, v, seed=1)
    wet = procedural_piano.render_notes([Note(60, 0.5, 3.5, 100)], n, v, seed=1, pedal=[(0.2, 127)])
    spec = np.abs(np.fft.rfft((wet - dry).mean(axis=0)[seg]))
    f = np.fft.rfftfreq(16384, 1 / SAMPLE_RATE)

    def band(hz):
        return spec[(f > hz * 0.98) & (f < hz * 1.02)].sum()

    assert band(2 * f1) > 10 * band(f1) and band(3 * f1) > 10 * band(f1)


def test_procedural_piano_is_deterministic():
    v = procedural_piano.random_voice(np.random.default_rng(9))
    notes = [Note(50 + i, 0.1 * i, 0.1 * i + 0.3, 40 + 5 * i) for i in range(10)]
    a = procedural_piano.render_notes(notes, SAMPLE_RATE * 3, v, 4, [(0.5, 127), (1.5, 0)])
    b = procedural_piano.render_notes(notes, SAMPLE_RATE * 3, v, 4, [(0.5, 127), (1.5, 0)])
    assert np.array_equal(a, b) and np.isfinite(a).all()


# ---------------------------------------------------------------- explicit sources ---------------

@needs_fonts
def test_sources_are_named_not_globbed(tmp_path, monkeypatch):
    from dawsep.train.data.soundfonts import SoundfontError
    from dawsep.train.data.sources import Palette

    # A stray bank in a folder the old generator globbed (and in the old extra-dirs variable).
    (tmp_path / "avl_drums.sf2").write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    monkeypatch.setenv("DAWSEP_SOUNDFONT_DIRS", str(tmp_path))
    pal = Palette.from_sources(("fluidr3", "generaluser", "procedural-piano"))
    assert [f.source for f in pal.fonts] == ["fluidr3", "generaluser"]
    assert pal.piano_families == ["fluidr3", "generaluser", "procedural-piano"]
    with pytest.raises(SoundfontError):
        resolve("avl_drums")
    # The test timbre is pinned to the Lite SF3 the v1 test split was rendered with, whatever else
    # (e.g. the lossless Full SF2, the hash reference) is installed.
    assert heldout_soundfont().path.endswith("MuseScore_General_Lite.sf3")


@needs_fonts
def test_piano_families_and_kits_spread_evenly():
    from dawsep.train.data.sources import Palette, choose_parts

    pal = Palette.from_sources(SF_SOURCES)
    pal.kits = ["hydrogen:a", "hydrogen:b", "hydrogen:c"]  # names only: no kit is loaded by choosing
    rng = np.random.default_rng(0)
    fams, kits = [], []
    n = 5 * 6 * len(pal.piano_families)
    for k in range(n):
        c = choose_parts("train", k, ["piano", "drums"], [0, 0], [False, True], pal, rng)
        fams.append(c[0].source)
        kits.append(c[1].source)
    counts = {f: fams.count(f) for f in pal.piano_families}
    assert set(counts.values()) == {n // len(pal.piano_families)}, counts
    hyd = [k for k in kits if k.startswith("hydrogen:")]
    assert len(hyd) == n // 2 and {hyd.count(f"hydrogen:{x}") for x in "abc"} == {n // 6}


@needs_fonts
def test_reserved_presets_are_never_chosen():
    """GeneralUser's cello (0:42) plays MuseScore General samples: a part asking for a cello gets
    another font's cello, never GeneralUser's."""
    from dawsep.train.data.sources import Palette, choose_parts

    pal = Palette.from_sources(("generaluser", "fluidr3"))
    rng = np.random.default_rng(1)
    seen = set()
    for k in range(40):
        for c in choose_parts("train", k, ["other", "bass"], [42, 38], [False, False], pal, rng):
            seen.add((c.source, c.program))
            assert (c.source, c.program) not in {("generaluser", 42), ("generaluser", 38)}
    assert ("fluidr3", 42) in seen


# ---------------------------------------------------------------- a v2 song end to end -----------

@pytest.fixture(scope="module")
def v2_corpus(tmp_path_factory):
    from dawsep.train.data.corpus import CorpusConfig, build
    from dawsep.train.data.song import SongSpec

    root = str(tmp_path_factory.mktemp("v2"))
    # Song numbers 0..4 (index // 2) cycle through the five piano families of SF_SOURCES.
    specs = [SongSpec("train", "gen", 2 * k, 4.0, 0) for k in range(5)] + [SongSpec("valid", "piano", 9, 4.0, 0)]
    rep = build(root, CorpusConfig(seed=0, version=2, sources=SF_SOURCES, procedural_fraction=0.2), jobs=1, specs=specs)
    assert not rep.failed, rep.failed
    return root


@needs_fonts
def test_v2_songs_record_sources_and_hashes(v2_corpus):
    from dawsep.train.data.corpus import iter_songs, verify

    summary = verify(v2_corpus)
    fams = summary["train"]["piano_families"]
    assert set(fams) == set(SF_SOURCES), fams
    for _, meta in iter_songs(v2_corpus, "train"):
        for p in meta["parts"]:
            assert "source" in p and "sample_hashes" in p
            if p["source"] not in ("procedural", "procedural-piano"):
                assert p["sample_hashes"], p
        assert meta["stems_present"][0] == "piano"


@needs_fonts
def test_verify_refuses_a_reserved_sample_hash(v2_corpus, tmp_path):
    import shutil

    from dawsep.train.data.corpus import verify
    from dawsep.train.data.sf2 import read_soundfont

    root = tmp_path / "c"
    shutil.copytree(v2_corpus, root)
    song = sorted((root / "train").iterdir())[0]
    meta = json.loads((song / "meta.json").read_text())
    # A real MuseScore General sample that FluidR3/TimGM6mb do not share (its piano).
    index = heldout.reserved_index()
    full = read_soundfont(next(p for p in index.sources if p.endswith(".sf2")))
    key = next(s.hash for s in full.samples if s.hash in index.reserved)
    meta["parts"][0]["sample_hashes"].append(key)
    (song / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(heldout.HeldOutError):
        verify(str(root))


@needs_fonts
def test_v2_same_seed_same_audio(v2_corpus, tmp_path):
    import soundfile as sf

    from dawsep.train.data.corpus import CorpusConfig, build
    from dawsep.train.data.song import SongSpec

    spec = SongSpec("train", "gen", 8, 4.0, 0)  # the procedural piano's song
    build(str(tmp_path), CorpusConfig(seed=0, version=2, sources=SF_SOURCES, procedural_fraction=0.2), jobs=1,
          specs=[spec])
    a, _ = sf.read(os.path.join(v2_corpus, "train", spec.name, "mixture.flac"), dtype="int32")
    b, _ = sf.read(os.path.join(tmp_path, "train", spec.name, "mixture.flac"), dtype="int32")
    assert np.array_equal(a, b)
    meta = json.loads(open(os.path.join(tmp_path, "train", spec.name, "meta.json")).read())
    assert meta["parts"][0]["source"] == "procedural-piano"
