"""--init-from: ONNX initializers mapped back onto the torch modules (shipped models and tiny
round trips), typed errors for what cannot be mapped, and the trainers' warm start / resume /
time budget."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


from dawsep import runtime  # noqa: E402
from dawsep.train import init_from, onnx_weights  # noqa: E402
from dawsep.train.init_from import InitFromError  # noqa: E402
from dawsep.train.separators import build  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_separators import ToyStems, cfg as sep_cfg, randomize, tiny, toy_valid  # noqa: E402
from test_transcriber import TINY, SineNotes, _one_thread  # noqa: E402,F401  (autouse: one torch thread)

MODELS = str(runtime.MODELS_DIR)
SHIPPED_SEPARATORS = sorted(f for f in os.listdir(MODELS) if f.startswith("separator-") and f.endswith(".onnx"))


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _close(got, ref, rel=1e-4):
    """Max abs difference within ``rel`` of the output scale (at least 1)."""
    scale = max(1.0, max(float(np.abs(r).max()) for r in ref))
    err = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
    assert err <= rel * scale, f"max abs difference {err:.3g} > {rel * scale:.3g}"
    return err


# ------------------------------------------------------------------ the shipped models
@pytest.mark.parametrize("name, arch, folded", [
    ("transcriber.onnx", "PitchTranscriber", 12),  # the default: the pitch model's conv BatchNorms
    ("transcriber-oaf.onnx", "PianoTranscriber", 3),  # onsets-and-frames' three conv blocks
])
def test_shipped_transcribers_reproduce_onnx_runtime(name, arch, folded):
    path = os.path.join(MODELS, name)
    model, loaded = init_from.transcriber(path)
    assert type(model).__name__ == arch and len(loaded.folded) == folded and not loaded.dead
    x = (torch.rand(2, 40_007, generator=torch.Generator().manual_seed(0)) - 0.5)
    with torch.no_grad():
        ref = [r.numpy() for r in model.eval()(x)]
    got = _session(path).run(None, {"audio": x.numpy()})
    _close(got, ref)


@pytest.mark.parametrize("name", SHIPPED_SEPARATORS)
def test_shipped_separators_reproduce_onnx_runtime(name):
    """Every architecture shipped: folded conv BatchNorms (tfctdf, unet), LSTMs (umx, umx-uni,
    demucs), GroupNorm/PReLU constants and a pruned dead conv (convtasnet)."""
    path = os.path.join(MODELS, name)
    model = build(init_from.separator_config(path))  # the file's exact config, full_band included
    loaded = onnx_weights.load_onnx_weights(model, path, torch.zeros(1, 2, 8192))
    if model.arch == "convtasnet":  # the last block's residual output feeds nothing: pruned by the exporter
        last = f"tcn.{len(model.tcn) - 1}.res."
        assert loaded.dead == sorted(n for n, _ in model.named_parameters() if n.startswith(last))
    x = (torch.rand(2, 2, 44_100 + 1234, generator=torch.Generator().manual_seed(0)) - 0.5)
    with torch.no_grad():
        ref = [model.eval()(x).numpy()]
    _close(_session(path).run(None, {"mix": x.numpy()}), ref)


def test_default_model_loads_for_training_with_its_documented_config():
    """``separator()`` builds the trainable model: the file's architecture, ``full_band`` left to
    the training default, and the training command's --model must agree with the file."""
    path = os.path.join(MODELS, "separator-tfctdf.onnx")
    model, loaded = init_from.separator(path, "tfctdf", {"mask": "softmax", "fold": 8})
    assert model.config()["fold"] == 8 and model.full_band is False and len(loaded.folded) > 0
    with pytest.raises(InitFromError, match="fold=4"):
        init_from.separator(path, "tfctdf", {"fold": 4})
    with pytest.raises(InitFromError, match="not 'unet'"):
        init_from.separator(path, "unet")
    with pytest.raises(InitFromError, match="is not a transcriber.s"):
        init_from.transcriber(path)


# ------------------------------------------------------------------ tiny round trips
def _export_separator(model, path):
    from dawsep.train.export.separator import export_model

    export_model(model.eval(), str(path), segment_seconds=0.25, bench=False)
    return str(path)


@pytest.mark.parametrize("arch", ["tfctdf-softmax", "unet", "umx", "umx-uni", "convtasnet", "demucs", "lasaft",
                                  "lasaft-film"])
def test_tiny_separator_round_trip(tmp_path, arch):
    """torch -> ONNX -> init_from gives back the same function; what was not folded comes back bit-exact."""
    src = randomize(tiny(arch))
    path = _export_separator(src, tmp_path / "m.onnx")
    model = build(init_from.separator_config(path))
    loaded = onnx_weights.load_onnx_weights(model, path, torch.zeros(1, 2, 4096))
    x = torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(3)) * 0.3
    with torch.no_grad():
        _close([model.eval()(x).numpy()], [src(x).numpy()], rel=1e-5)
    folded = {f"{bn}.{k}" for bn in loaded.folded for k in ("weight", "bias", "running_mean", "running_var")}
    exact = [k for k in src.state_dict() if k not in folded and not k.endswith("num_batches_tracked")
             and k not in loaded.dead and not any(k.startswith(c) for c in _folded_convs(src, loaded))]
    assert exact, "nothing compared"
    for k in exact:
        assert torch.equal(model.state_dict()[k], src.state_dict()[k]), k


def _folded_convs(model, loaded):
    pairs = onnx_weights._folded_batchnorms(model, torch.zeros(1, 2, 4096))
    return {f"{conv}." for conv, bn in pairs.items() if bn in loaded.folded}


def test_tiny_transcriber_round_trip(tmp_path):
    from dawsep.train.transcriber import PianoTranscriber
    from dawsep.train.export.transcriber import export

    torch.manual_seed(0)
    src = PianoTranscriber(TINY)
    src.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the folding matters
        src(torch.randn(4, 16000) * 0.3)
    path = str(tmp_path / "t.onnx")
    export(src.eval(), path, segment_samples=16000, rtf_seconds=None)
    model, loaded = init_from.transcriber(path)
    assert model.cfg == TINY and len(loaded.folded) == 3
    for k in ("onset_rnn.rnn.weight_ih_l0", "frame_rnn.rnn.bias_hh_l0_reverse", "proj.0.weight", "norm.running_var"):
        assert torch.equal(model.state_dict()[k], src.state_dict()[k]), k  # GRU gates, Linear transpose, by name
    x = torch.randn(2, 9_000, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.no_grad():
        _close([o.numpy() for o in model.eval()(x)], [o.numpy() for o in src(x)], rel=1e-5)


def test_unmapped_tensors_raise_a_typed_error_naming_them(tmp_path):
    path = _export_separator(randomize(tiny("umx")), tmp_path / "umx.onnx")  # 2 LSTM layers
    deeper = build({**init_from.separator_config(path), "layers": 3})
    with pytest.raises(InitFromError) as e:
        onnx_weights.onnx_state_dict(deeper, path, torch.zeros(1, 2, 4096))
    assert "lstm.weight_ih_l2" in str(e.value) and "lstm.bias_hh_l2_reverse" in str(e.value)
    wider = build({**init_from.separator_config(path), "hidden": 32})
    with pytest.raises(InitFromError, match=r"fc1\.weight: shape \(16, 128\), the model has \(32, 128\)"):
        onnx_weights.onnx_state_dict(wider, path, torch.zeros(1, 2, 4096))
    with pytest.raises(InitFromError, match="takes a .onnx model or a .pt checkpoint"):
        init_from.separator(str(tmp_path / "m.bin"))


def test_calibration_keeps_the_eval_function_and_matches_batch_statistics(tmp_path):
    """After calibrating on a batch, each folded BatchNorm gives the same output on that batch in
    training mode (batch statistics) as in eval mode; the whole model's eval function is unchanged."""
    src = randomize(tiny("tfctdf-softmax"))
    path = _export_separator(src, tmp_path / "m.onnx")
    model = build(init_from.separator_config(path))
    loaded = onnx_weights.load_onnx_weights(model, path, torch.zeros(1, 2, 4096))
    assert loaded.folded
    batch = torch.randn(2, 2, 6000, generator=torch.Generator().manual_seed(5)) * 0.3
    mods = dict(model.named_modules())

    def folded_inputs():
        seen = {}

        def keep(name):
            def hook(_mod, inp, _out):
                seen[name] = inp[0].clone()  # returns None: the output is left alone
            return hook

        hooks = [mods[n].register_forward_hook(keep(n)) for n in loaded.folded]
        with torch.no_grad():
            y = model.eval()(batch)
        for h in hooks:
            h.remove()
        return y, seen

    def train_vs_eval(seen):
        worst = 0.0
        for n, x in seen.items():
            bn = mods[n]
            with torch.no_grad():
                e = bn.eval()(x)
                t = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
            worst = max(worst, float((t - e).abs().max() / e.abs().max()))
        return worst

    before, seen = folded_inputs()
    identity = train_vs_eval(seen)
    onnx_weights.calibrate_folded(model, loaded.folded, [batch])
    after, seen = folded_inputs()
    assert torch.allclose(after, before, atol=1e-5)  # the eval function is unchanged
    assert train_vs_eval(seen) < 1e-4 < 0.1 < identity


# ------------------------------------------------------------------ the trainers
def _log(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_separator_training_starts_from_the_file_then_resume_wins(tmp_path):
    from dawsep.train.run_folder import load_checkpoint
    from dawsep.train.train_separator import train, validate

    src = randomize(tiny("tfctdf"))
    path = _export_separator(src, tmp_path / "m.onnx")
    model_overrides = {k: v for k, v in src.config().items() if k not in ("arch", "full_band")}
    out = tmp_path / "run"
    msgs = []
    train(sep_cfg(out, 3, model=model_overrides, init_from=path, valid_every=100), ToyStems(), toy_valid(),
          log=msgs.append)
    recs = _log(out / "log.jsonl")
    assert recs[0]["type"] == "init" and recs[0]["init_from"]["sha256"] == runtime.file_sha256(path)
    first_valid = next(r for r in recs if r["type"] == "valid")
    assert first_valid["step"] == 0  # the starting weights are scored before any step
    expect = validate(src, toy_valid(), torch.device("cpu"))["model"]["mean"]
    assert first_valid["mean"] == pytest.approx(expect, abs=1e-3)  # i.e. the file's weights, not a fresh init
    assert [r["step"] for r in recs if r["type"] == "train"] == [1, 2, 3]
    assert any("initialised from" in m for m in msgs)
    assert load_checkpoint(str(out / "best.pt"))["init_from"]["path"] == os.path.abspath(path)

    # A .pt checkpoint works too: a new run from this one's last.pt starts with its weights.
    from dawsep.train.train_separator import model_from_checkpoint

    other = tmp_path / "from-pt"
    train(sep_cfg(other, 1, model=model_overrides, init_from=str(out / "last.pt"), valid_every=100), ToyStems(),
          toy_valid(), log=msgs.append)
    first = next(r for r in _log(other / "log.jsonl") if r["type"] == "valid")
    expect = validate(model_from_checkpoint(str(out / "last.pt"))[0], toy_valid(), torch.device("cpu"))["model"]["mean"]
    assert first["step"] == 0 and first["mean"] == pytest.approx(expect, abs=1e-3)

    msgs.clear()  # OUT/last.pt exists: it wins over --init-from
    train(sep_cfg(out, 5, model=model_overrides, init_from=path, valid_every=100), ToyStems(), toy_valid(),
          log=msgs.append)
    assert any("resumed" in m and "ignored" in m for m in msgs)
    assert load_checkpoint(str(out / "last.pt"))["step"] == 5
    assert [r["type"] for r in _log(out / "log.jsonl")].count("init") == 1


def test_separator_minutes_budget_stops_cleanly(tmp_path):
    from dawsep.train.run_folder import load_checkpoint
    from dawsep.train.train_separator import train

    msgs = []
    res = train(sep_cfg(tmp_path, 50), ToyStems(), log=msgs.append, minutes=0.0)
    assert res["step"] == 1 and load_checkpoint(str(tmp_path / "last.pt"))["step"] == 1
    assert any("time budget" in m for m in msgs)


def test_transcriber_training_starts_from_the_file_and_respects_minutes(tmp_path):
    from dawsep.train.run_folder import load_checkpoint
    from dawsep.train.train_transcriber import TrainConfig, evaluate, train, valid_indices
    from dawsep.train.transcriber import PianoTranscriber
    from dawsep.train.export.transcriber import export

    torch.manual_seed(0)
    src = PianoTranscriber(TINY)
    src.train()
    with torch.no_grad():
        src(torch.randn(4, 16000) * 0.3)
    path = str(tmp_path / "t.onnx")
    export(src.eval(), path, segment_samples=16000, rtf_seconds=None)
    data, valid = SineNotes(6, seed=1), {"clean": SineNotes(4, seed=2)}
    cfg = TrainConfig(out=str(tmp_path / "run"), steps=50, batch=2, warmup=2, log_every=1, valid_every=1000,
                      valid_items=2, workers=0, seed=3, init_from=path, calibrate_batches=1)
    msgs = []
    train(cfg, None, data, valid, log=msgs.append, minutes=0.0)
    lines = _log(tmp_path / "run" / "log.jsonl")
    assert lines[0]["init_from"]["sha256"] == runtime.file_sha256(path)
    assert lines[1]["step"] == 0 and "valid" in lines[1]
    expect = evaluate(src, valid, valid_indices(4, 2), 2, torch.device("cpu"))
    assert lines[1]["valid"]["clean"]["loss"] == pytest.approx(expect["clean"]["loss"], rel=1e-4)
    assert load_checkpoint(str(tmp_path / "run" / "best.pt"))["step"] == 0
    assert load_checkpoint(str(tmp_path / "run" / "last.pt"))["step"] == 1  # one step, then the budget
    assert any("time budget" in m for m in msgs)
    with pytest.raises(InitFromError, match="not TranscriberConfig"):
        train(TrainConfig(out=str(tmp_path / "other"), steps=1, init_from=path, workers=0), TINY.__class__(),
              data, valid, log=msgs.append)


# ------------------------------------------------------------------ a whole session
def _band_song(root, split, name, seed, samples=2 * 44_100):
    """Five stems of noise in disjoint bands (separable, so a few steps learn something)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    d = os.path.join(root, split, name)
    os.makedirs(d, exist_ok=True)
    spec = rng.standard_normal((5, 2, samples // 2 + 1)) + 1j * rng.standard_normal((5, 2, samples // 2 + 1))
    f = np.fft.rfftfreq(samples, 1 / 44_100)
    for k, (lo, hi) in enumerate([(50, 300), (500, 1200), (2000, 4000), (5000, 8000), (9000, 14000)]):
        spec[k, :, (f < lo) | (f >= hi)] = 0
    stems = np.fft.irfft(spec, n=samples)
    stems *= 0.1 / stems.std(axis=-1, keepdims=True)
    from dawsep.train.data.score import STEMS

    for stem, x in zip(STEMS, stems):
        sf.write(os.path.join(d, f"{stem}.flac"), x.T, 44_100, subtype="PCM_24")
    with open(os.path.join(d, "meta.json"), "w") as fh:
        json.dump({"name": name, "split": split, "kind": "gen", "samples": samples, "sample_rate": 44_100,
                   "seconds": samples / 44_100, "stems_present": list(STEMS), "parts": [], "source": None,
                   "piano_notes": 0}, fh)


def test_session_warm_starts_trains_and_ships_then_resumes(tmp_path):
    from dawsep.train.export.separator import export_model
    from dawsep.train import session
    from dawsep.train.run_folder import load_checkpoint

    data, models, runs = (str(tmp_path / d) for d in ("data", "models", "runs"))
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        for i in range(n):
            _band_song(data, split, f"gen-{i:06d}", seed=hash((split, i)) % 1000)
    os.makedirs(models)
    src = randomize(tiny("tfctdf-softmax"))
    ship_model = build({**src.config(), "full_band": True})  # shipped models keep the band above the cut-off
    ship_model.load_state_dict(src.state_dict())
    export_model(ship_model.eval(), os.path.join(models, "sep.onnx"), segment_seconds=0.25, bench=False)
    old_sha = runtime.file_sha256(os.path.join(models, "sep.onnx"))
    overrides = {k: v for k, v in src.config().items() if k not in ("arch", "full_band")}
    recipe = dict(arch="tfctdf", model=overrides, steps=20, batch_size=2, segment_seconds=0.3, lr=1e-2, warmup=1,
                  loss="mse_mag", valid_every=20, valid_songs=2, valid_seconds=1.0, log_every=1, workers=0,
                  threads=1, kinds=["gen"], retired_option=1)
    with open(os.path.join(models, "sep.json"), "w") as fh:
        json.dump({"train_config": recipe, "steps_trained": 100}, fh)
    with open(os.path.join(models, "registry.json"), "w") as fh:
        json.dump({"separator": {"default": {"file": "sep.onnx", "sha256": old_sha, "provenance": "sep.json",
                                             "description": "tiny"}}}, fh)

    msgs = []
    rep = session.run("separator", data=data, runs=runs, minutes=30, models_dir=models, log=msgs.append)
    run_dir = os.path.join(runs, "sep")
    assert rep["run"] == run_dir and any("new run" in m for m in msgs)
    assert any("no longer used: ['retired_option']" in m for m in msgs)
    assert os.path.isfile(os.path.join(data, ".cache-int16", "train", "gen-000000", "piano.npy"))
    valid = [r for r in _log(os.path.join(run_dir, "log.jsonl")) if r["type"] == "valid"]
    assert [r["step"] for r in valid] == [0, 20]
    assert valid[1]["mean"] > valid[0]["mean"] + 0.05, valid  # learnt a little: best.pt moved on
    assert rep["best_step"] == 20 and "shipped" in rep
    reg = json.load(open(os.path.join(models, "registry.json")))["separator"]["default"]
    new_sha = runtime.file_sha256(os.path.join(models, "sep.onnx"))
    assert reg["sha256"] == new_sha != old_sha and reg["description"] == "tiny"
    prov = json.load(open(os.path.join(models, "sep.json")))
    assert prov["init_from"]["sha256"] == old_sha and prov["init_from"]["steps_trained"] == 100
    assert prov["architecture"]["full_band"] is True and prov["best_step"] == 20 and "test" in prov["metrics"]

    msgs.clear()  # the next session finds the run: resumes it (already finished) and does not ship twice
    rep = session.run("separator", data=data, runs=runs, minutes=30, models_dir=models, log=msgs.append)
    assert any("resuming" in m for m in msgs) and any("shipped already" in m for m in msgs)
    assert "shipped" not in rep and load_checkpoint(os.path.join(run_dir, "last.pt"))["step"] == 20


def _shipped_tiny(models: str, kind: str, model) -> str:
    """A models folder shipping ``model`` as ``kind``/default, as ``ship`` leaves it."""
    os.makedirs(models, exist_ok=True)
    path = os.path.join(models, "m.onnx")
    if kind == "separator":
        _export_separator(model, path)
    else:
        from dawsep.train.export.transcriber import export

        export(model.eval(), path, segment_samples=16000, metrics={"valid": {"note_f1": 0.5}}, rtf_seconds=None)
    with open(os.path.join(models, "m.json"), "w") as fh:
        json.dump({"model": "m.onnx", "train_config": {"steps": 1}, "metrics": {"test": {"mean": 1.0}}}, fh)
    with open(os.path.join(models, "registry.json"), "w") as fh:
        json.dump({kind: {"default": {"file": "m.onnx", "sha256": runtime.file_sha256(path),
                                      "provenance": "m.json", "description": "tiny"}}}, fh)
    return path


@pytest.mark.parametrize("kind", ["separator", "transcriber"])
def test_reexport_rebuilds_a_shipped_model_from_its_own_weights(tmp_path, kind):
    """`dawsep-train <kind> reexport`: same function on the demo song, metadata and training figures
    kept, registry hash and provenance updated; a re-export that would change the output by more
    than the tolerance replaces nothing."""
    from dawsep.errors import ModelError
    from dawsep.train.export.reexport import reexport
    from dawsep.train.export.transcriber import read_metadata
    from dawsep.train.transcriber import PianoTranscriber

    models = str(tmp_path / "models")
    model = randomize(tiny("tfctdf-softmax")) if kind == "separator" else PianoTranscriber(TINY)
    path = _shipped_tiny(models, kind, model)
    before, meta_before = runtime.file_sha256(path), read_metadata(path)

    with pytest.raises(ModelError, match="nothing replaced"):
        reexport(kind, models_dir=models, tol=-1.0, threads=1)
    assert runtime.file_sha256(path) == before and not [f for f in os.listdir(models) if "reexport" in f]

    res = reexport(kind, models_dir=models, threads=1, why="test")
    assert 0 <= res["max_abs_vs_previous"] <= 1e-4 and res["previous_sha256"] == before
    reg = json.load(open(os.path.join(models, "registry.json")))[kind]["default"]
    prov = json.load(open(os.path.join(models, "m.json")))
    assert reg["sha256"] == runtime.file_sha256(path) == prov["sha256"] and reg["description"] == "tiny"
    assert prov["metrics"] == {"test": {"mean": 1.0}} and prov["reexports"][-1]["why"] == "test"
    meta = read_metadata(path)
    assert meta["dawsep.architecture"] == meta_before["dawsep.architecture"]
    assert meta["dawsep.segment_samples"] == meta_before["dawsep.segment_samples"]
    if kind == "transcriber":
        assert json.loads(meta["dawsep.metrics"])["valid"] == {"note_f1": 0.5}


def test_session_trains_the_whole_transcriber_even_after_a_head_only_fine_tune(tmp_path, monkeypatch):
    """A shipped velocity-head fine-tune records train_only/select in its recipe; the next
    `make train-transcriber` session must train every weight, selected by note F1."""
    from dawsep.train import session
    import dawsep.train.data.cache as cache
    import dawsep.train.data.corpus as corpus
    import dawsep.train.train_transcriber as tt

    models = str(tmp_path / "models")
    os.makedirs(models)
    with open(os.path.join(models, "m.json"), "w") as fh:
        json.dump({"train_config": {"steps": 5, "train_only": ["velocity"], "select": "loss", "lr": 1e-4}}, fh)
    open(os.path.join(models, "m.onnx"), "wb").close()
    with open(os.path.join(models, "registry.json"), "w") as fh:
        json.dump({"transcriber": {"default": {"file": "m.onnx", "provenance": "m.json"}}}, fh)
    seen = []
    monkeypatch.setattr(tt, "train", lambda cfg, **kw: seen.append(cfg) or {})
    monkeypatch.setattr(corpus, "iter_songs", lambda *a, **kw: iter(["song"]))
    monkeypatch.setattr(cache, "build_corpus", lambda *a, **kw: {"built": 0, "skipped": 0, "bytes": 0, "seconds": 0})
    session.run("transcriber", data=str(tmp_path), runs=str(tmp_path / "runs"), minutes=1, models_dir=models,
                log=lambda m: None)
    (cfg,) = seen
    assert cfg.train_only == () and cfg.select == tt.TrainConfig.select and cfg.lr == 1e-4  # the rest of the recipe kept
