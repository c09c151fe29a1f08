"""Synthetic training data: a tiny corpus rendered once per session (a few 5-second songs)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")

from dawsep.train.data import heldout  # noqa: E402
from dawsep.train.data.soundfonts import heldout_soundfont, training_soundfonts  # noqa: E402

try:  # skip cleanly only if the system synth or soundfonts are truly missing
    from dawsep.train.data.render import Renderer

    Renderer()
    _FONTS = training_soundfonts() + [heldout_soundfont()]
    _MISSING = None
except Exception as e:  # noqa: BLE001
    _MISSING = f"libfluidsynth or a soundfont unavailable (run scripts/sysdeps.sh): {e}"

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

from dawsep.train.data.score import SAMPLE_RATE, STEMS, read_label_midi  # noqa: E402


# ---- onset check: does every labelled onset start a rise of energy at its pitch? ----
N_FFT, HOP = 1024, 64


def band_energy(mono: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrogram (frames x bins) with frame centre times."""
    pad = np.pad(mono, (N_FFT // 2, N_FFT // 2))
    n = 1 + (len(pad) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(pad[idx] * np.hanning(N_FFT)[None, :], axis=1)) ** 2
    return spec, np.arange(n) * HOP / sr


def onset_rises(audio: np.ndarray, sr: int, notes: np.ndarray, tol: float = 0.020, shift: float = 0.0) -> np.ndarray:
    """For each note [onset, offset, pitch, vel]: True if the energy in the note's harmonic bins in the
    ``tol`` after its onset exceeds that just before it (frames that end before the onset)."""
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    spec, times = band_energy(mono.astype(np.float64), sr)
    binhz = sr / N_FFT
    half = N_FFT / 2 / sr
    ok = np.zeros(len(notes), bool)
    hf = np.arange(int(2000 / binhz), int(10000 / binhz))
    for i, (on, _, p, _) in enumerate(notes):
        on = on + shift
        f0 = 440.0 * 2 ** ((p - 69) / 12)
        bins = sorted({int(round(k * f0 / binhz)) + d for k in range(1, 9) if k * f0 < 8000 for d in (-1, 0, 1)})
        bins = [b for b in bins if 0 < b < spec.shape[1]]
        post_sel = (times >= on) & (times <= on + tol)
        pre_sel = (times >= on - 0.045) & (times <= on - half - 0.002)
        if not post_sel.any():
            continue
        for band in (bins, hf):  # the note's harmonics, or the broadband attack noise above 2 kHz
            e = spec[:, band].sum(axis=1)
            base = e[pre_sel].mean() if pre_sel.any() else 0.0
            if e[post_sel].max() > 1.25 * base + 1e-9:
                ok[i] = True
                break
    return ok


SPECS = [
    ("train", "gen", 0), ("train", "gen", 2), ("train", "gen", 4), ("train", "m21", 6),
    ("train", "piano", 1), ("train", "piano", 3), ("valid", "gen", 0), ("valid", "piano", 1),
    ("test", "gen", 0), ("test", "m21", 2),
]


def _specs(seed=0):
    from dawsep.train.data.song import SongSpec

    return [SongSpec(split, kind, i, 5.0, seed) for split, kind, i in SPECS]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from dawsep.train.data.corpus import CorpusConfig, build

    root = str(tmp_path_factory.mktemp("corpus"))
    rep = build(root, CorpusConfig(seed=0), jobs=2, specs=_specs())
    assert not rep.failed, rep.failed
    assert rep.built == len(SPECS)
    return root


def _songs(root):
    from dawsep.train.data.corpus import iter_songs

    return [(p, m) for split in heldout.SPLITS for p, m in iter_songs(root, split)]


def _read(path):
    x, sr = soundfile.read(path, dtype="float64", always_2d=True)
    assert sr == SAMPLE_RATE
    return x.T


def test_layout_and_stems_sum_to_mixture(corpus):
    songs = _songs(corpus)
    assert len(songs) == len(SPECS)
    for path, meta in songs:
        files = set(os.listdir(path))
        assert {f"{s}.flac" for s in STEMS} | {"mixture.flac", "piano.mid", "meta.json"} <= files
        mix = _read(os.path.join(path, "mixture.flac"))
        assert mix.shape == (2, meta["samples"])
        total = sum(_read(os.path.join(path, f"{s}.flac")) for s in STEMS)
        assert np.abs(mix - total).max() < 1e-4
        assert 0.05 < np.abs(mix).max() < 1.0  # audible and not clipped
        if meta["kind"] != "piano":
            assert len(meta["stems_present"]) >= 3, meta["stems_present"]
        for s in meta["stems_present"]:
            assert np.abs(_read(os.path.join(path, f"{s}.flac"))).max() > 1e-3


def test_piano_onsets_have_energy_rise(corpus):
    """Labels match the audio: >= 98 % of onsets start an energy rise within 20 ms (the rest are
    masked: fast runs, soft notes under loud ones), and labels moved 60 ms late fail far more."""
    hits, shifted, total = 0, 0, 0
    for path, meta in _songs(corpus):
        notes, _ = read_label_midi(os.path.join(path, "piano.mid"))
        assert len(notes) == meta["piano_notes"]
        if not len(notes):
            continue
        audio = _read(os.path.join(path, "piano.flac"))
        hits += onset_rises(audio, SAMPLE_RATE, notes).sum()
        shifted += onset_rises(audio, SAMPLE_RATE, notes, shift=0.06).sum()
        total += len(notes)
    assert total > 100
    assert hits / total >= 0.98, (hits, total)
    assert shifted / total < 0.85 * hits / total, (shifted, hits, total)


def test_every_isolated_onset_rises_within_20ms():
    """All 88 keys, one at a time, through the real renderer and a random production chain."""
    from dawsep.train.data import production
    from dawsep.train.data.render import Renderer
    from dawsep.train.data.score import Note, Part
    from dawsep.train.data.soundfonts import training_soundfonts

    rng = np.random.default_rng(5)
    for font in training_soundfonts():
        notes = [Note(p, 0.1 + 0.6 * i + rng.uniform(0, 0.01), 0.1 + 0.6 * i + 0.15, int(rng.integers(15, 128)))
                 for i, p in enumerate(rng.permutation(np.arange(21, 109)))]
        part = Part("piano", "test", 0, notes)
        r = Renderer().render([(part, font.path)], 0.3 + 0.6 * 88)[0]
        audio = production.apply_chain(r.audio, production.random_chain(rng, "piano", 0))
        arr = np.array([[n.start, n.end, n.pitch, n.velocity] for n in r.part.notes])
        assert len(arr) == 88
        assert onset_rises(audio, SAMPLE_RATE, arr).all()
        # Sample-level: the waveform starts rising at the labelled onset, not before, within 20 ms.
        env = np.abs(audio).max(axis=0)
        ms = SAMPLE_RATE // 1000
        timed = 0
        for on, _, p, v in arr:
            i = int(round(on * SAMPLE_RATE))
            floor = env[i - 60 * ms: i - 2 * ms].max()
            if env[i: i + 100 * ms].max() < 4 * floor + 1e-5:
                continue  # a whisper under the previous tail: the band check above covers it
            above = np.nonzero(env[i - 30 * ms: i + 30 * ms] > 2 * floor + 1e-5)[0]
            assert above.size, (font.label, on, p, v)
            lag = (above[0] - 30 * ms) / SAMPLE_RATE
            assert 0.0 <= lag <= 0.020, (font.label, on, p, v, lag)
            timed += 1
        assert timed >= 80


def test_same_seed_same_audio(corpus, tmp_path):
    from dawsep.train.data.corpus import CorpusConfig, build
    from dawsep.train.data.song import SongSpec

    # Other order, one process: identical bits (no state leaks between songs in a worker).
    specs = [SongSpec("train", "piano", 1, 5.0, 0), SongSpec("train", "gen", 2, 5.0, 0)]
    build(str(tmp_path), CorpusConfig(seed=0), jobs=1, specs=specs)
    for s in specs:
        a, b = os.path.join(corpus, s.split, s.name), os.path.join(tmp_path, s.split, s.name)
        for f in [f"{x}.flac" for x in STEMS] + ["mixture.flac"]:
            assert np.array_equal(_read(os.path.join(a, f)), _read(os.path.join(b, f))), f
        with open(os.path.join(a, "piano.mid"), "rb") as fa, open(os.path.join(b, "piano.mid"), "rb") as fb:
            assert fa.read() == fb.read()
        with open(os.path.join(a, "meta.json")) as fa, open(os.path.join(b, "meta.json")) as fb:
            assert json.load(fa) == json.load(fb)
    other = SongSpec("train", "gen", 2, 5.0, 1)
    build(str(tmp_path / "s1"), CorpusConfig(seed=1), jobs=1, specs=[other])
    x = _read(os.path.join(tmp_path, "s1", "train", other.name, "mixture.flac"))
    y = _read(os.path.join(corpus, "train", other.name, "mixture.flac"))
    assert x.shape != y.shape or not np.array_equal(x, y)


def test_heldout_material_only_in_test(corpus):
    from dawsep.train.data.corpus import verify

    summary = verify(corpus)
    for split in heldout.SEEN_SPLITS:
        assert summary[split]["soundfonts"], split
        assert not any("musescore" in f.lower() for f in summary[split]["soundfonts"])
    for path, meta in _songs(corpus):
        fonts = {os.path.realpath(p["soundfont"]) for p in meta["parts"]}
        if meta["split"] == "test":
            assert all(heldout.is_heldout_soundfont(f) for f in fonts)
            if meta["kind"] == "m21":
                assert heldout.composer_of(meta["source"]) in heldout.HELDOUT_COMPOSERS
        else:
            assert not any(heldout.is_heldout_soundfont(f) for f in fonts)
            assert not heldout.is_heldout_composition(meta.get("source"))


def test_heldout_checks_raise(tmp_path):
    muse = next(f.path for f in _FONTS if f.heldout)
    link = tmp_path / "default-GM.sf2"
    os.symlink(muse, link)  # Debian's default-GM.sf2 may be exactly this
    fake = tmp_path / "innocent.sf2"  # a renamed copy: caught by the bank name inside
    name = b"MuseScore_General.sf2\0\0\0"
    info = b"INFO" + b"INAM" + len(name).to_bytes(4, "little") + name
    fake.write_bytes(b"RIFF" + (4 + 8 + len(info)).to_bytes(4, "little") + b"sfbk" + b"LIST"
                     + len(info).to_bytes(4, "little") + info)
    for split in heldout.SEEN_SPLITS:
        for sf in (muse, str(link), str(fake)):
            with pytest.raises(heldout.HeldOutError):
                heldout.check_allowed(split, [sf])
        for piece in ("bach/bwv66.6.mxl", "joplin/maple_leaf_rag.mxl", "beethoven/opus18no1/movement1.mxl"):
            with pytest.raises(heldout.HeldOutError):
                heldout.check_allowed(split, [], piece)
        heldout.check_allowed(split, ["/usr/share/sounds/sf2/TimGM6mb.sf2"], "palestrina/Agnus_01.krn")
    heldout.check_allowed("test", [muse, str(link)], "bach/bwv66.6.mxl")


def test_renderer_refuses_heldout_font_for_train(tmp_path):
    from dawsep.train.data.render import Renderer
    from dawsep.train.data.song import SongSpec, render_song
    from dawsep.train.data.soundfonts import heldout_soundfont

    out = tmp_path / "train" / "gen-000000"
    out.parent.mkdir()
    with pytest.raises(heldout.HeldOutError):
        render_song(SongSpec("train", "gen", 0, 5.0, 0), str(out), Renderer(), train_fonts=[heldout_soundfont()])
    assert not out.exists() and not list(out.parent.iterdir())


def test_dataset_refuses_tampered_train_split(corpus, tmp_path):
    from dawsep.train.data.dataset import load_songs

    root = tmp_path / "c"
    shutil.copytree(os.path.join(corpus, "train", "gen-000000"), root / "train" / "gen-000000")
    meta_path = root / "train" / "gen-000000" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["parts"][0]["soundfont"] = "/usr/share/sounds/sf2/default-GM.sf2"
    meta["parts"][0]["soundfont_name"] = "MuseScore_General"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(heldout.HeldOutError):
        load_songs(str(root), "train")


def test_music21_pools_are_disjoint():
    from dawsep.train.data import m21

    train, valid, test = (set(m21.pieces_for(s)) for s in heldout.SPLITS)
    assert train and valid and test
    assert not train & valid and not train & test and not valid & test
    assert not any(heldout.is_heldout_composition(p) for p in train | valid)
    assert all(heldout.composer_of(p) in heldout.HELDOUT_COMPOSERS for p in test)


def test_separation_dataset(corpus):
    torch = pytest.importorskip("torch")
    from dawsep.train.data.dataset import SeparationDataset, read_excerpt

    ds = SeparationDataset(corpus, "train", segment_seconds=2.0, length=6, seed=3, return_info=True)
    T = 2 * SAMPLE_RATE
    by_name = {s.meta["name"]: s for s in ds.songs}
    for i in range(len(ds)):
        item = ds[i]
        assert item["mix"].shape == (2, T) and item["stems"].shape == (len(STEMS), 2, T)
        assert item["mix"].dtype == torch.float32
        assert torch.isfinite(item["stems"]).all()
        assert torch.allclose(item["mix"], item["stems"].sum(0), atol=1e-6)
        info = item["info"]
        for k, stem in enumerate(STEMS):  # every augmentation is reproduced from the raw stem
            name, start = info["sources"][k]
            x = read_excerpt(by_name[name], stem, start, T) * np.float32(10 ** (info["gains_db"][k] / 20))
            x = x[::-1] if info["swap"][k] else x
            x = -x if info["flip"][k] else x
            assert np.allclose(item["stems"][k].numpy(), x, atol=1e-6)
    assert torch.equal(ds[2]["stems"], ds[2]["stems"])  # a pure function of (seed, epoch, index)
    valid = SeparationDataset(corpus, "valid", segment_seconds=2.0)
    assert len(valid) >= 1 and valid[0]["stems"].shape == (len(STEMS), 2, T)


def test_transcription_dataset_labels_follow_excerpts(corpus):
    torch = pytest.importorskip("torch")
    from dawsep.train.data.dataset import TranscriptionDataset

    hop = 441
    ds = TranscriptionDataset(corpus, "train", segment_seconds=3.0, length=8, hop_samples=hop, seed=1,
                              conditions={"clean": 1.0}, return_info=True)
    by_name = {s.meta["name"]: s for s in ds.songs}
    F = 3 * SAMPLE_RATE // hop
    checked = rises = 0
    for i in range(len(ds)):
        item = ds[i]
        assert item["audio"].shape == (3 * SAMPLE_RATE,)
        for k in ("onset", "frame", "offset", "velocity"):
            assert item[k].shape == (F, 88) and torch.isfinite(item[k]).all()
        assert item["pedal"].shape == (F, 1)
        assert torch.isfinite(item["audio"]).all()
        song, start = by_name[item["info"]["song"]], item["info"]["start"]
        notes, _ = song.labels()
        t0 = start / SAMPLE_RATE
        inside = notes[(notes[:, 0] >= t0) & (notes[:, 0] < t0 + F * hop / SAMPLE_RATE)]
        expect = {(int((on - t0) * SAMPLE_RATE // hop), int(p) - 21) for on, _, p, _ in inside}
        got = {(int(f), int(k)) for f, k in torch.nonzero(item["onset"]).tolist()}
        assert got == expect
        assert (item["frame"][item["onset"] > 0] == 1).all()
        if len(inside):  # the onsets are where the (shifted, gained, maybe inverted) audio rises
            rel = inside.copy()
            rel[:, :2] -= t0
            rises += onset_rises(item["audio"].numpy(), SAMPLE_RATE, rel).sum()
            checked += len(rel)
    assert checked > 20 and rises / checked >= 0.9, (rises, checked)
    # Other conditions: same labels for the same draw, finite audio.
    for cond in ("mix", "residue"):
        dm = TranscriptionDataset(corpus, "train", segment_seconds=3.0, length=3, hop_samples=hop, seed=1,
                                  conditions={cond: 1.0}, return_info=True)
        for i in range(3):
            a, b = dm[i], ds[i]
            assert a["info"]["song"] == b["info"]["song"] and a["info"]["start"] == b["info"]["start"]
            assert torch.isfinite(a["audio"]).all() and a["audio"].abs().max() > 0
            assert torch.equal(a["onset"], b["onset"]) and torch.equal(a["frame"], b["frame"])
    # absent: the same draw's accompaniment without the piano, every label empty.
    da = TranscriptionDataset(corpus, "train", segment_seconds=3.0, length=3, hop_samples=hop, seed=1,
                              conditions={"absent": 1.0}, return_info=True, augment=False)
    dc = TranscriptionDataset(corpus, "train", segment_seconds=3.0, length=3, hop_samples=hop, seed=1,
                              conditions={"clean": 1.0}, return_info=True, augment=False)
    for i in range(3):
        a, c = da[i], dc[i]
        assert a["info"]["condition"] == "absent" and a["audio"].abs().max() > 1e-3
        assert all(float(a[k].abs().sum()) == 0 for k in ("onset", "frame", "offset", "velocity", "pedal"))
        if c["onset"].sum() > 0:  # not the piano: the clean excerpt's audio is not in it
            assert not torch.allclose(a["audio"], c["audio"], atol=1e-4)
    d16 = TranscriptionDataset(corpus, "valid", segment_seconds=2.0, hop_samples=320, sample_rate=16000)
    item = d16[0]
    assert item["audio"].shape == (32000,) and item["onset"].shape == (100, 88)


def test_cli_resumes_and_skips(tmp_path):
    from click.testing import CliRunner

    from dawsep.train.cli import main

    out = tmp_path / "data"
    args = ["data", "synth", "--out", str(out), "--hours", "0.003", "--piano-hours", "0", "--valid-hours", "0",
            "--test-hours", "0", "--song-seconds", "4", "--seed", "7", "--jobs", "1", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    songs = sorted(p.name for p in (out / "train").iterdir())
    assert len(songs) >= 2
    first = out / "train" / songs[0]
    before = _read(str(first / "mixture.flac"))
    stamp = os.path.getmtime(out / "train" / songs[1] / "meta.json")
    shutil.rmtree(first)
    (out / "train" / f".tmp-{songs[0]}-999").mkdir()  # an interrupted write
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "built 1 songs" in r.output and f"skipped {len(songs) - 1}" in r.output
    assert sorted(p.name for p in (out / "train").iterdir()) == songs
    assert np.array_equal(before, _read(str(first / "mixture.flac")))
    assert os.path.getmtime(out / "train" / songs[1] / "meta.json") == stamp


def test_plan_is_deterministic_and_extends():
    from dawsep.train.data.corpus import CorpusConfig, plan

    small = plan(CorpusConfig(hours=0.2, piano_hours=0.1, seed=4))
    big = plan(CorpusConfig(hours=0.4, piano_hours=0.2, valid_hours=0.01, test_hours=0.01,
                            valid_piano_hours=0.005, test_piano_hours=0.005, seed=4))
    assert plan(CorpusConfig(hours=0.2, piano_hours=0.1, seed=4)) == small
    train_small = [s for s in small if s.split == "train"]
    train_big = [s for s in big if s.split == "train"]
    assert set(train_small) <= set(train_big)
    assert sum(s.seconds for s in train_big if s.kind != "piano") >= 0.4 * 3600
    assert sum(s.seconds for s in train_big if s.kind == "piano") >= 0.2 * 3600
    names = [(s.split, s.name) for s in big]
    assert len(names) == len(set(names))


def test_procedural_voices_replace_only_non_piano_parts(corpus, tmp_path):
    from dawsep.train.data.corpus import CorpusConfig, build
    from dawsep.train.data.song import SongSpec

    spec = SongSpec("train", "gen", 0, 5.0, 0)
    rep = build(str(tmp_path), CorpusConfig(procedural_fraction=1.0), jobs=1, specs=[spec])
    assert not rep.failed
    a, b = os.path.join(corpus, "train", spec.name), os.path.join(tmp_path, "train", spec.name)
    with open(os.path.join(b, "meta.json")) as fh:
        meta = json.load(fh)
    for p in meta["parts"]:
        assert (p["soundfont"] == "procedural") == (p["stem"] in ("bass", "guitar", "other")), p
        assert ("voice" in p) == (p["soundfont"] == "procedural")
    with open(os.path.join(a, "piano.mid"), "rb") as fa, open(os.path.join(b, "piano.mid"), "rb") as fb:
        assert fa.read() == fb.read()  # same music, same labels; only the timbres changed
    mix = _read(os.path.join(b, "mixture.flac"))
    assert np.abs(mix - sum(_read(os.path.join(b, f"{s}.flac")) for s in STEMS)).max() < 1e-4
    assert not np.array_equal(mix, _read(os.path.join(a, "mixture.flac")))


def test_separated_condition_reads_the_separators_piano(corpus, tiny_separator, tmp_path):
    """``data separate-piano`` writes each mixture's piano as the separator gives it (resumable,
    redone when the separator changes), and the "separated" condition trains on exactly that."""
    torch = pytest.importorskip("torch")
    from dawsep.separate import Separator
    from dawsep.train.data.corpus import iter_songs
    from dawsep.train.data.dataset import TranscriptionDataset
    from dawsep.train.data.separated import SEPARATED_STEM, provenance_path, separate_corpus

    root = str(tmp_path / "corpus")
    shutil.copytree(corpus, root)
    with pytest.raises(FileNotFoundError, match="separate-piano"):
        TranscriptionDataset(root, "train", conditions={"separated": 1.0})
    rep = separate_corpus(root, ("train",), tiny_separator, log=None)
    songs = list(iter_songs(root, "train"))
    mixtures = [p for p, m in songs if m["kind"] in ("gen", "m21")]
    assert rep["done"] == len(mixtures) > 0 and rep["skipped"] == 0
    for p, m in songs:
        assert os.path.exists(os.path.join(p, f"{SEPARATED_STEM}.flac")) == (p in mixtures)
    # what is on disk is the separator's piano of the mixture (24-bit FLAC)
    sep = Separator(tiny_separator, threads=1)
    mix = _read(os.path.join(mixtures[0], "mixture.flac")).astype(np.float32)
    want = sep.separate_array(mix)[sep.stem_index("piano")]
    got = _read(os.path.join(mixtures[0], f"{SEPARATED_STEM}.flac"))
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-6 and np.abs(want).max() > 1e-3
    assert separate_corpus(root, ("train",), tiny_separator, log=None)["skipped"] == len(mixtures)
    prov = json.load(open(provenance_path(mixtures[0])))
    json.dump({**prov, "model_sha256": "0" * 64}, open(provenance_path(mixtures[0]), "w"))
    assert separate_corpus(root, ("train",), tiny_separator, log=None)["done"] == 1  # another model's: redone

    hop = 441
    ds = TranscriptionDataset(root, "train", segment_seconds=2.0, length=6, hop_samples=hop, seed=3,
                              conditions={"separated": 1.0}, return_info=True, augment=False)
    assert {s.path for s in ds._tile_songs} == set(mixtures)
    clean = TranscriptionDataset(root, "train", segment_seconds=2.0, length=6, hop_samples=hop, seed=3,
                                 conditions={"clean": 1.0}, return_info=True, augment=False)
    by_name = {s.meta["name"]: s for s in ds.songs}
    for i in range(len(ds)):
        item = ds[i]
        song, start = by_name[item["info"]["song"]], item["info"]["start"]
        assert song.path in mixtures and item["info"]["condition"] == "separated"
        x = _read(os.path.join(song.path, f"{SEPARATED_STEM}.flac"))[:, start: start + 2 * SAMPLE_RATE]
        assert np.abs(item["audio"].numpy()[: x.shape[1]] - x.mean(axis=0)).max() < 1e-4
        ref = next(clean[j] for j in range(len(clean)) if clean[j]["info"]["start"] == start
                   and clean[j]["info"]["song"] == item["info"]["song"])
        assert torch.equal(item["onset"], ref["onset"]) and torch.equal(item["frame"], ref["frame"])
    # augmented training: every item is a mixture's separated piano, even when a solo-piano song was drawn
    aug = TranscriptionDataset(root, "train", segment_seconds=2.0, length=12, hop_samples=hop, seed=3,
                               conditions={"separated": 1.0}, return_info=True)
    assert all(by_name[aug[i]["info"]["song"]].path in mixtures for i in range(len(aug)))


def test_transcription_songs_carry_the_separated_piano_for_threshold_tuning(corpus, tiny_separator, tmp_path):
    """Thresholds can be tuned on the route the piano preset takes (the separator's piano): the
    valid songs carry it where ``data separate-piano`` wrote one, None for solo piano."""
    from dawsep.train.data.separated import SEPARATED_STEM, separate_corpus
    from dawsep.train.evaluate import transcription_songs, tune_thresholds

    root = str(tmp_path / "corpus")
    shutil.copytree(corpus, root)
    separate_corpus(root, ("valid",), tiny_separator, log=None)
    rows = transcription_songs(root, 8, 3.0, split="valid", separated=True)
    assert rows and all(len(r) == 6 for r in rows)
    assert {r[0].split("-")[0] for r in rows} == {"gen", "piano"}  # a mixture and a solo piano
    assert len(transcription_songs(root, 8, 3.0, split="valid")[0]) == 5  # unchanged without it
    for name, piano, mix, notes, pedal, sep in rows:
        path = os.path.join(root, "valid", name)
        if name.startswith("piano"):
            assert sep is None
        else:
            want = _read(os.path.join(path, f"{SEPARATED_STEM}.flac"))[:, :piano.shape[1]]
            assert sep.shape == piano.shape and np.abs(sep - want).max() < 1e-4
    with pytest.raises(ValueError, match="unknown conditions"):
        tune_thresholds("default", root, conditions=("clean", "residue"))
    pytest.importorskip("mir_eval")
    res = tune_thresholds("default", root, limit=2, seconds=3.0, onsets=(0.5, 0.7), offsets=(0.3, 1.0),
                          frames=(0.3, 0.6), threads=1, conditions=("clean", "separated"))
    assert res["onset_threshold"] in (0.5, 0.7) and res["offset_threshold"] in (0.3, 1.0)
    frame = res["by_frame"][res["frame_threshold"]]["frame_f1"]
    assert frame == max(v["frame_f1"] for v in res["by_frame"].values())


def test_transcriber_validation_items_do_not_depend_on_the_runs_seed(corpus):
    """Two runs with different --seed must score the same weights on the same validation items
    (the mix condition draws its accompaniment and level from the seed); training items differ."""
    import torch

    from dawsep.train.train_transcriber import TrainConfig, _default_sets
    from dawsep.train.transcriber_pe import PitchTranscriberConfig

    mc = PitchTranscriberConfig()
    sets = [_default_sets(TrainConfig(data=corpus, seed=s, valid_seconds=2.0, segment_seconds=2.0, cache=False,
                                      valid_conditions=("mix", "residue")), mc) for s in (1, 2)]
    for cond in ("mix", "residue"):
        a, b = sets[0][1][cond][0], sets[1][1][cond][0]
        assert torch.equal(a["audio"], b["audio"]), cond
    assert not torch.equal(sets[0][0][0]["audio"], sets[1][0][0]["audio"])
