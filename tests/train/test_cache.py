"""The int16 stem cache: same samples as the FLAC within int16 rounding, contiguous (samples, 2)
files under <root>/.cache-int16, rebuilt when the FLAC changes, safe with concurrent builders,
and used by the datasets and the `data cache` command."""
from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pytest
import soundfile as sf

from dawsep.train.data import cache
from dawsep.train.data.score import SAMPLE_RATE, STEMS

HALF_STEP = 0.5 / cache.SCALE


def _write(path, x):
    sf.write(path, x.T, SAMPLE_RATE, subtype="PCM_24")


def _song(root, name="gen-000000", split="train", samples=30_000, stems=STEMS, seed=0, full_scale=False):
    """A complete song folder: 24-bit stereo stems of random audio and a minimal meta.json."""
    rng = np.random.default_rng(seed)
    d = os.path.join(root, split, name)
    os.makedirs(d, exist_ok=True)
    for k, stem in enumerate(stems):
        x = rng.uniform(-0.9, 0.9, (2, samples)).astype(np.float64)
        if full_scale and k == 0:
            x[:, :100] = 1.0 - 2.0 ** -23  # the largest 24-bit value: int16 clips it to 32767
            x[:, 100:200] = -1.0
        _write(os.path.join(d, f"{stem}.flac"), x)
    meta = {"name": name, "split": split, "kind": "gen", "samples": samples, "sample_rate": SAMPLE_RATE,
            "seconds": samples / SAMPLE_RATE, "stems_present": list(stems), "parts": [], "source": None,
            "piano_notes": 0}
    with open(os.path.join(d, "meta.json"), "w") as fh:
        json.dump(meta, fh)
    return d, meta


def _ref(song_dir, meta):
    from dawsep.train.data.dataset import SongRef

    return SongRef(song_dir, meta, meta["samples"])


def test_cached_excerpts_equal_the_flac_within_int16_rounding(tmp_path):
    from dawsep.train.data.dataset import read_excerpt

    d, meta = _song(str(tmp_path), stems=("piano", "drums"), full_scale=True)
    song = _ref(d, meta)
    n = meta["samples"]
    for stem in ("piano", "drums"):
        for start, frames in ((0, 1000), (12_345, 4096), (n - 700, 2000), (n + 5, 100)):
            flac = read_excerpt(song, stem, start, frames, cache=False)
            got = read_excerpt(song, stem, start, frames, cache=True)
            assert got.shape == flac.shape == (2, frames) and got.dtype == np.float32
            err = np.abs(got - flac)
            clipped = flac >= 32767.5 / cache.SCALE
            assert err[~clipped].max() <= HALF_STEP * (1 + 1e-6)
            assert err.max() <= 2 * HALF_STEP  # only 24-bit full scale is clipped, by one step
            if start + frames > n:
                assert not got[:, max(0, n - start):].any()  # zero padding past the end
    assert not read_excerpt(song, "bass", 0, 100).any()  # absent stem: silence, nothing cached
    assert not os.path.exists(cache.cache_path(d, "bass"))


def test_layout_is_contiguous_int16_under_the_corpus_root(tmp_path):
    d, meta = _song(str(tmp_path), stems=("piano",))
    path = cache.build(d, "piano")
    assert path == os.path.join(str(tmp_path), ".cache-int16", "train", "gen-000000", "piano.npy")
    arr = np.load(path, mmap_mode="r")
    assert arr.dtype == np.int16 and arr.shape == (meta["samples"], 2) and arr.flags["C_CONTIGUOUS"]
    x, _ = sf.read(os.path.join(d, "piano.flac"), dtype="float64")
    assert np.array_equal(arr, np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16))
    assert os.path.getsize(path) == meta["samples"] * 4 + 128  # the .npy header + 4 bytes a frame


def test_a_changed_flac_is_decoded_again(tmp_path):
    d, meta = _song(str(tmp_path), stems=("bass",))
    first = cache.read(d, "bass", 0, 500, meta["samples"])
    st = os.stat(os.path.join(d, "bass.flac"))
    _write(os.path.join(d, "bass.flac"), np.full((2, meta["samples"]), 0.25))
    os.utime(os.path.join(d, "bass.flac"), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not cache.is_valid(d, "bass")
    again = cache.read(d, "bass", 0, 500, meta["samples"])
    assert np.allclose(again, 0.25, atol=HALF_STEP) and not np.allclose(first, again)
    assert cache.is_valid(d, "bass", meta["samples"])


def _build_many(args):
    d, stem = args
    return cache.build(d, stem)


def test_concurrent_builders_leave_one_complete_file(tmp_path):
    d, meta = _song(str(tmp_path), stems=("other",), samples=200_000)
    with mp.get_context("spawn").Pool(3) as pool:
        paths = pool.map(_build_many, [(d, "other")] * 6)
    assert len(set(paths)) == 1
    folder = os.path.dirname(paths[0])
    assert os.listdir(folder) == ["other.npy"]  # no temporary files left
    x, _ = sf.read(os.path.join(d, "other.flac"), dtype="float64")
    assert np.array_equal(np.load(paths[0]), cache.quantize(x))


def test_unwritable_cache_falls_back_to_decoding(tmp_path, monkeypatch):
    from dawsep.train.data.dataset import read_excerpt

    d, meta = _song(str(tmp_path), stems=("guitar",))

    def refuse(*a, **k):
        raise PermissionError("read-only corpus")

    monkeypatch.setattr(cache.os, "makedirs", refuse)
    song = _ref(d, meta)
    assert cache.read(d, "guitar", 0, 100, meta["samples"]) is None
    assert np.array_equal(read_excerpt(song, "guitar", 10, 300), read_excerpt(song, "guitar", 10, 300, cache=False))
    with pytest.raises(cache.CacheError, match="cannot write"):
        cache.build_corpus(str(tmp_path))


def test_build_corpus_and_the_cli_command(tmp_path):
    from click.testing import CliRunner

    from dawsep.train.cli import main

    root = str(tmp_path)
    _song(root, "gen-000000", stems=("piano", "bass"), samples=20_000)
    _song(root, "piano-000000", split="valid", stems=("piano",), samples=10_000, seed=1)
    _song(root, "gen-000001", split="test", stems=("piano",), samples=10_000, seed=2)
    res = CliRunner().invoke(main, ["data", "cache", root])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output.strip().splitlines()[-1])
    assert (rep["files"], rep["built"], rep["skipped"]) == (3, 3, 0)
    assert rep["bytes"] == (2 * 20_000 + 10_000) * 4 + 3 * 128
    assert not os.path.exists(os.path.join(root, ".cache-int16", "test"))  # test is not cached by default
    again = cache.build_corpus(root)
    assert (again["built"], again["skipped"]) == (0, 3)


def test_separation_dataset_items_match_with_and_without_cache(tmp_path):
    from dawsep.train.data.dataset import SeparationDataset

    root = str(tmp_path)
    for i in range(3):
        _song(root, f"gen-{i:06d}", samples=40_000, seed=i)
    a = SeparationDataset(root, "train", segment_seconds=0.5, length=6, seed=1, cache=True)
    b = SeparationDataset(root, "train", segment_seconds=0.5, length=6, seed=1, cache=False)
    for i in range(6):
        x, y = a[i], b[i]
        gain = 10 ** (3.0 / 20)  # the largest augmentation gain
        assert np.abs((x["stems"] - y["stems"]).numpy()).max() <= gain * HALF_STEP * 1.001
        assert np.abs((x["mix"] - y["mix"]).numpy()).max() <= len(STEMS) * gain * HALF_STEP * 1.001
    assert os.path.isdir(os.path.join(root, ".cache-int16", "train"))
