"""Export a trained separator checkpoint to a self-contained ONNX graph (DESIGN.md contract).

``mix`` float32 ``[batch, 2, samples]`` -> ``stems`` float32 ``[batch, n_stems, 2, samples]``,
dynamic batch and length, STFT/iSTFT inside the graph, opset 17 with the legacy (TorchScript)
exporter: the one ENVIRONMENT.md found to export the in-graph STFT cleanly and fast.
After writing, the file is checked (``onnx.checker``), run in ONNX Runtime against torch on
random input of a length other than the traced one (max abs difference <= ``tol``), and stamped
with ``metadata_props``.

Conditioned models (``model.conditioned``, :mod:`dawsep.train.lasaft`) are exported as one graph
with a second, optional input: ``stem_ids`` int64 ``[n_out]``, indices into ``dawsep.stems``.
Left out, it takes its stored default ``[0, 1, ..., n_stems-1]`` (an ONNX initializer that is
also a graph input, which ONNX Runtime lets a caller override) and the graph is the plain
contract above, ``stems [batch, n_stems, 2, samples]``; fed, the graph computes only those stems,
``stems [batch, n_out, 2, samples]`` in the order given, at the cost of ``n_out`` passes of
the network instead of ``n_stems``. The metadata key ``dawsep.stem_input`` names that input;
models without it take ``mix`` alone, as before. One file rather than one graph per stem: the
weights are stored once, a host that wants two of five stems asks for two, and a host that
knows nothing of conditioning gets every stem.
"""
from __future__ import annotations

import io
import json
import os
import time
import warnings

import numpy as np
import torch

from dawsep.train.export import ort_session

OPSET = 17
#: the optional input of a conditioned graph: which stems to compute (module docstring)
STEM_INPUT = "stem_ids"


class _StemSelect(torch.nn.Module):
    """Export view of a conditioned separator: ``mix [B, 2, T]``, ``stem_ids [K]`` int64 ->
    ``stems [B, K, 2, T]``, the same stems for every item of the batch."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor, stem_ids: torch.Tensor) -> torch.Tensor:
        return self.model(mix, stem_ids.unsqueeze(0).expand(mix.shape[0], -1))


def _conditioned(model) -> bool:
    return bool(getattr(model, "conditioned", False))


def _export_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    args, names, axes = (example,), ["mix"], {"mix": {0: "batch", 2: "samples"}, "stems": {0: "batch", 3: "samples"}}
    if _conditioned(model):
        args, names = (example, torch.arange(model.n_stems)), ["mix", STEM_INPUT]
        axes.update({STEM_INPUT: {0: "n_out"}, "stems": {0: "batch", 1: "n_out", 3: "samples"}})
        model = _StemSelect(model).train(model.training)  # export restores the wrapper's mode on the model
    with warnings.catch_warnings():
        # The legacy exporter is deliberate (see module docstring): its deprecation notice, tracer
        # notes and "Slice with steps != 1 not constant-folded" are noise; parity() is the check.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, buf, opset_version=OPSET, dynamo=False, input_names=names,
                          output_names=["stems"], dynamic_axes=axes)
    if len(names) == 1:
        return buf.getvalue()
    import onnx
    from onnx import numpy_helper

    # The default of the stem input: an initializer of the same name makes it optional.
    proto = onnx.load_from_string(buf.getvalue())
    proto.graph.initializer.append(numpy_helper.from_array(np.arange(model.model.n_stems, dtype=np.int64),
                                                           STEM_INPUT))
    return proto.SerializeToString()


def _random_mix(samples: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 2, samples, generator=g) - 0.5


def parity(model: torch.nn.Module, sess, samples: int = 44100 + 1234, batch: int = 2, seed: int = 0) -> float:
    """Max abs difference ONNX Runtime vs torch on random input ``[batch, 2, samples]``."""
    x = _random_mix(samples, batch, seed)
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(["stems"], {"mix": x.numpy()})[0]
    if got.shape != ref.shape:
        raise AssertionError(f"ONNX output shape {got.shape} != torch {ref.shape}")
    return float(np.abs(got - ref).max())


def stem_parity(model: torch.nn.Module, sess, samples: int = 44100 + 1234, batch: int = 2, seed: int = 1) -> float:
    """Conditioned graphs: max abs difference between the graph fed ``stem_ids`` (each stem alone,
    and the last and first stem in that order) and the same stems of torch's all-stem output."""
    x = _random_mix(samples, batch, seed)
    with torch.no_grad():
        ref = model(x).numpy()
    n = ref.shape[1]
    err = 0.0
    for ids in [[s] for s in range(n)] + [[n - 1, 0]]:
        got = sess.run(["stems"], {"mix": x.numpy(), STEM_INPUT: np.array(ids, np.int64)})[0]
        if got.shape != (batch, len(ids)) + ref.shape[2:]:
            raise AssertionError(f"ONNX output shape {got.shape} for {STEM_INPUT}={ids}")
        err = max(err, float(np.abs(got - ref[:, ids]).max()))
    return err


def realtime_factor(sess, seconds: float = 10.0, sample_rate: int = 44100, repeats: int = 3,
                    feeds: dict | None = None) -> float:
    """Audio seconds per wall second for one stereo clip of ``seconds`` (best of ``repeats``);
    ``feeds``: more inputs (e.g. ``{STEM_INPUT: [0]}``)."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 2, int(seconds * sample_rate))).astype(np.float32)
    inputs = {"mix": x, **(feeds or {})}
    sess.run(["stems"], inputs)  # warm-up (allocations, kernel generation)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(["stems"], inputs)
        best = min(best, time.perf_counter() - t)
    return seconds / best


def metadata(model, ck: dict | None, segment_samples: int, extra_metrics: dict | None = None) -> dict[str, str]:
    """``metadata_props`` per DESIGN.md (strings; JSON where structured)."""
    from dawsep import __version__
    from dawsep.train.separators import n_params

    ck = ck or {}
    metrics = {"step": ck.get("step"), "valid": ck.get("best"), "valid_baseline": ck.get("baseline"),
               "params": n_params(model), **(extra_metrics or {})}
    train_data = {"corpus": ck.get("corpus"), "train_config": ck.get("train_config"),
                  "valid": "valid split subset; the test split is never read in training"}
    meta = {
        "dawsep.kind": "separator",
        "dawsep.sample_rate": str(model.sample_rate),
        "dawsep.segment_samples": str(segment_samples),
        "dawsep.stems": json.dumps(list(model.stems)),
        "dawsep.version": __version__,
        "dawsep.architecture": json.dumps(model.config()),
        "dawsep.train_data": json.dumps(train_data),
        "dawsep.metrics": json.dumps(metrics),
    }
    if _conditioned(model):
        meta["dawsep.stem_input"] = STEM_INPUT
    return meta


def export_model(model, out: str, ck: dict | None = None, segment_seconds: float = 10.0, tol: float = 1e-4,
                 bench: bool = True, threads: int = 2) -> dict:
    """Write ``out`` (.onnx) from an eval-mode separator; returns the measured figures."""
    import onnx

    model = model.eval()
    segment = model.efficient_length(int(round(segment_seconds * model.sample_rate)))
    data = _export_bytes(model, torch.zeros(1, 2, 2 * model.hop * model.frame_multiple))
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    sess = ort_session(data, threads)
    err = parity(model, sess)
    if not err <= tol:
        raise AssertionError(f"ONNX Runtime vs torch max abs difference {err:.3g} > {tol:g}")
    figures = {"onnx_parity_max_abs": err, "opset": OPSET}
    if _conditioned(model):
        err = stem_parity(model, sess)
        if not err <= tol:
            raise AssertionError(f"ONNX Runtime with {STEM_INPUT} vs torch max abs difference {err:.3g} > {tol:g}")
        figures["onnx_parity_stem_input_max_abs"] = err
    if bench:
        figures[f"onnx_rtf_{threads}threads_10s"] = round(realtime_factor(sess), 2)
        if _conditioned(model):
            figures[f"onnx_rtf_{threads}threads_10s_one_stem"] = round(
                realtime_factor(sess, feeds={STEM_INPUT: np.zeros(1, np.int64)}), 2)
    del proto.metadata_props[:]
    for k, v in metadata(model, ck, segment, figures).items():
        proto.metadata_props.add(key=k, value=v)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    onnx.save(proto, tmp)
    os.replace(tmp, out)
    figures["bytes"] = os.path.getsize(out)
    figures["segment_samples"] = segment
    return figures


def export_checkpoint(ckpt: str, out: str, **kw) -> dict:
    """``dawsep-train separator export``: checkpoint (last.pt or best.pt) -> ONNX."""
    from dawsep.train.train_separator import model_from_checkpoint

    model, ck = model_from_checkpoint(ckpt)
    return export_model(model, out, ck, **kw)


# ------------------------------------------------------------------ shipping a trained model
def restamp(path: str, updates: dict[str, str]) -> None:
    """Replace ``metadata_props`` keys of an ONNX file in place (atomic)."""
    import onnx

    proto = onnx.load(path)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(updates)
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    tmp = f"{path}.tmp-{os.getpid()}"
    onnx.save(proto, tmp)
    os.replace(tmp, path)


def _curves(run_dir: str, every: int = 100) -> dict:
    """Loss and validation curves from a run's log.jsonl (training loss thinned to ``every`` steps)."""
    train, valid, baseline = [], [], None
    with open(os.path.join(run_dir, "log.jsonl")) as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("type") == "train" and rec["step"] % every == 0:
                train.append({"step": rec["step"], "loss": round(rec["loss"], 6), "lr": rec["lr"]})
            elif rec.get("type") == "valid":
                valid.append({"step": rec["step"], "mean_sdr": round(rec["mean"], 3),
                              "sdr": {k: round(v, 3) for k, v in rec["sdr"].items()}})
            elif rec.get("type") == "baseline":
                baseline = {k: rec[k] for k in ("mixture", "uniform", "irm", "songs")}
    return {"train_loss": train, "valid": valid, "valid_baseline": baseline}


def ship(run_dir: str, models_dir: str, name: str, file_name: str, data_root: str, command: str,
         description: str = "", test_songs: int | None = None, threads: int = 2, train_command: str = "",
         full_band: bool = True) -> dict:
    """Export ``run_dir/best.pt`` into the package: ONNX (parity-checked), test-split SDR stamped
    into its metadata, a provenance JSON beside it, and the registry entry ``name``."""
    from dawsep import runtime
    from dawsep.train.evaluate import baselines, evaluate_model, test_songs as load_test
    from dawsep.train.train_separator import model_from_checkpoint

    from dawsep.train.separators import build

    model, ck = model_from_checkpoint(os.path.join(run_dir, "best.pt"))
    if "full_band" in model.config() and full_band != model.full_band:  # same weights, output above the cut-off kept or not
        other = build(dict(model.config(), full_band=full_band))
        other.load_state_dict(model.state_dict())
        model = other.eval()
    out = os.path.join(models_dir, file_name)
    figures = export_model(model, out, ck, threads=threads)
    songs = load_test(data_root, limit=test_songs)
    test = evaluate_model(out, songs, threads=threads)
    base = baselines(songs, model.n_fft, model.hop, model.n_bins)
    metrics = json.loads(metadata(model, ck, figures["segment_samples"], figures)["dawsep.metrics"])
    metrics["test"] = {"sdr": test["sdr"], "mean": test["mean"], "songs": test["songs"],
                       "mixture": base["mixture"], "irm": base["irm"], "uniform": base["uniform"],
                       "onnx_rtf_2threads_chunked": test["rtf"]}
    restamp(out, {"dawsep.metrics": json.dumps(metrics)})
    sha = runtime.file_sha256(out)
    last = load_checkpoint_meta(os.path.join(run_dir, "last.pt"))
    provenance = {
        "model": file_name, "sha256": sha, "bytes": os.path.getsize(out), "kind": "separator",
        "architecture": model.config(), "params": metrics["params"],
        "ship_command": command, "train_command": train_command, "train_config": ck.get("train_config"), "corpus": ck.get("corpus"),
        "steps_trained": last.get("step"), "best_step": ck.get("step"), "init_from": ck.get("init_from"),
        "metrics": metrics, "curves": _curves(run_dir),
        "held_out": "test split: MuseScore General soundfonts and the reserved music21 composers, "
                    "never read in training or validation",
    }
    prov_path = os.path.join(models_dir, file_name.rsplit(".", 1)[0] + ".json")
    with open(prov_path, "w") as fh:
        json.dump(provenance, fh, indent=1)
    from dawsep.train.export import register

    register(models_dir, "separator", name, {"file": file_name, "sha256": sha, "description": description,
                                             "provenance": os.path.basename(prov_path)})
    return {"file": out, "sha256": sha, "test": metrics["test"], "export": figures}


def load_checkpoint_meta(path: str) -> dict:
    """Step and config of a checkpoint without keeping its tensors around."""
    if not os.path.exists(path):
        return {}
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return {"step": ck.get("step")}
