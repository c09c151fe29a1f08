"""Every packaged model (and the test fixtures) against docs/plugin-contract.md: registry and
sha256, input/output names, ranks and dynamic axes, metadata keys, and a run on real-length input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dawsep import runtime

SEPARATOR_KEYS = {"kind", "sample_rate", "segment_samples", "stems", "version", "architecture", "train_data", "metrics"}
TRANSCRIBER_KEYS = {"kind", "sample_rate", "segment_samples", "hop_samples", "min_pitch", "version", "architecture",
                    "train_data", "metrics"}


def packaged():
    return [(kind, name, runtime.MODELS_DIR / e["file"], e) for kind, name, e in runtime.list_models()]


def check_model(path, kind):
    m = runtime.load(str(path), kind, threads=1)
    sess, info = m.session, m.info
    meta = {k[len("dawsep."):]: v for k, v in sess.get_modelmeta().custom_metadata_map.items() if k.startswith("dawsep.")}
    assert set(SEPARATOR_KEYS if kind == "separator" else TRANSCRIBER_KEYS) <= set(meta)
    for key in ("architecture", "train_data", "metrics"):
        json.loads(meta[key])
    assert int(meta["sample_rate"]) > 0 and int(meta["segment_samples"]) > 0
    ins, outs = sess.get_inputs(), sess.get_outputs()
    sr = info.sample_rate
    if kind == "separator":
        assert [i.name for i in ins] == ["mix"] and [o.name for o in outs] == ["stems"]
        assert ins[0].type == outs[0].type == "tensor(float)"
        shape_in, shape_out = ins[0].shape, outs[0].shape
        assert len(shape_in) == 3 and shape_in[1] == 2 and not isinstance(shape_in[0], int) \
            and not isinstance(shape_in[2], int)  # batch and length dynamic
        stems = json.loads(meta["stems"])
        assert len(shape_out) == 4 and len(stems) == len(set(stems)) > 0
        x = (np.random.default_rng(0).standard_normal((1, 2, sr // 2 + 17)) * 0.1).astype(np.float32)
        y = sess.run(["stems"], {"mix": x})[0]
        assert y.shape == (1, len(stems), 2, x.shape[-1]) and np.isfinite(y).all()
    else:
        names = [o.name for o in outs]
        assert [i.name for i in ins] == ["audio"] and len(ins[0].shape) == 2
        assert names[:4] == ["onset", "frame", "offset", "velocity"] and set(names) <= {*names[:4], "pedal"}
        hop = int(meta["hop_samples"])
        x = (np.random.default_rng(0).standard_normal((1, sr // 2 + 17)) * 0.1).astype(np.float32)
        ys = sess.run(names, {"audio": x})
        for n, y in zip(names, ys):
            assert y.shape == (1, x.shape[1] // hop, 1 if n == "pedal" else 88)
            assert 0.0 <= y.min() and y.max() <= 1.0
    return info


def test_fixtures_follow_the_contract(tiny_separator, tiny_transcriber):
    check_model(tiny_separator, "separator")
    check_model(tiny_transcriber, "transcriber")


@pytest.mark.parametrize("kind,name,path,entry", packaged() or [pytest.param(None, None, None, None,
                         marks=pytest.mark.skip(reason="no packaged models"))])
def test_packaged_models_follow_the_contract(kind, name, path, entry):
    assert path.is_file() and runtime.file_sha256(path) == entry["sha256"]
    assert path.stat().st_size < 25_000_000  # the repository's per-model budget
    info = check_model(path, kind)
    prov = json.loads((runtime.MODELS_DIR / entry["provenance"]).read_text())
    assert prov["model"] == entry["file"] and prov["sha256"] == entry["sha256"]
    assert prov["curves"]["train_loss"] and prov["metrics"]["test"]["songs"] > 0
    if kind == "separator":
        arch = info.architecture
        if arch.get("mask") == "softmax" and arch.get("full_band"):
            # ratio masks summing to one over the whole band: the stems add up to the input
            sr = info.sample_rate
            t = np.arange(sr) / sr
            x = np.stack([np.sin(2 * np.pi * 220 * t), 0.1 * np.random.default_rng(1).standard_normal(sr)])
            x = (0.3 * x).astype(np.float32)[None]
            y = runtime.load(str(path), kind, threads=1).run(["stems"], {"mix": x})[0]
            assert np.abs(y.sum(1) - x)[..., 2048:-2048].max() < 1e-3


def test_default_separator_is_packaged():
    names = {(k, n) for k, n, _, _ in packaged()}
    assert ("separator", "default") in names
