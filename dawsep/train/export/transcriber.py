"""PianoTranscriber -> ONNX: legacy exporter at opset 17, parity check, dawsep metadata.

The graph follows DESIGN.md: input ``audio`` float32 ``[batch, samples]`` mono at
``dawsep.sample_rate``; outputs ``onset``, ``frame``, ``offset``, ``velocity`` ``[batch, frames, 88]``
and ``pedal`` ``[batch, frames, 1]`` in [0, 1], ``frames = samples // dawsep.hop_samples``
(``samples >= hop``). Batch and length are dynamic. The export is written to a temporary file,
checked against torch (max abs difference <= 1e-4 on random input), stamped, and only then
renamed into place, so a failed export never leaves a half-valid model behind.
"""
from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import onnx
import torch

import dawsep
from dawsep.errors import ModelError
from dawsep.train.export import ort_session
from dawsep.train.transcriber import MIN_PITCH, OUTPUTS, PianoTranscriber, TranscriberConfig, count_parameters

OPSET = 17
INPUT = "audio"
PARITY_TOL = 1e-4


def to_onnx(model: PianoTranscriber, path: str) -> None:
    """Trace ``model`` (eval mode) to ``path`` with dynamic batch/samples/frames."""
    model.eval()
    dummy = torch.zeros(1, model.cfg.sample_rate)
    axes = {INPUT: {0: "batch", 1: "samples"}, **{k: {0: "batch", 1: "frames"} for k in OUTPUTS}}
    with warnings.catch_warnings():
        # Expected and harmless: the legacy exporter is deprecated (but it is the one that exports
        # the in-graph STFT, ENVIRONMENT.md), and strided slices are left to ONNX Runtime to fold.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")
        # GRU: shape checks traced as constants (they hold for every input the graph accepts) and
        # a caution about batch sizes that concerns initial states fed as inputs, which this
        # graph has none of (the parity check runs at batch 2).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        torch.onnx.export(model, (dummy,), path, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=list(OUTPUTS), dynamic_axes=axes)


def parity(model: PianoTranscriber, path: str, samples: tuple[int, ...] = (40_007,), batch: int = 2,
           seed: int = 0) -> float:
    """Max abs difference ONNX Runtime vs torch over all outputs, random audio in [-0.5, 0.5]."""
    model.eval()
    sess = ort_session(path)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in samples:
        x = torch.rand(batch, n, generator=g) - 0.5
        with torch.no_grad():
            ref = model(x)
        got = sess.run(list(OUTPUTS), {INPUT: x.numpy()})
        for name, r, o in zip(OUTPUTS, ref, got):
            if o.shape != tuple(r.shape):
                raise ModelError(f"{path}: output {name} has shape {o.shape}, torch gives {tuple(r.shape)}")
            worst = max(worst, float(np.abs(o - r.numpy()).max()))
    return worst


def realtime_factor(path: str, seconds: float = 30.0, threads: int = 2, repeats: int = 3) -> float:
    """Audio seconds per wall second for one ``seconds``-long mono input (best of ``repeats``)."""
    sess = ort_session(path, threads)
    sr = int(read_metadata(path).get("dawsep.sample_rate", 16000))
    x = (np.random.default_rng(0).standard_normal((1, int(seconds * sr))) * 0.1).astype(np.float32)
    sess.run(None, {INPUT: x[:, :sr]})  # warm-up (allocations, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {INPUT: x})
        best = min(best, time.perf_counter() - t)
    return seconds / best


def stamp(path: str, props: dict[str, str]) -> None:
    """Set ``metadata_props`` (replacing keys already present) and re-check the model."""
    m = onnx.load(path)
    keep = [p for p in m.metadata_props if p.key not in props]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for k, v in props.items():
        m.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(m)
    onnx.save(m, path)


def read_metadata(path: str) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def export(model: PianoTranscriber, out: str, *, segment_samples: int, version: str | None = None,
           train_data: dict | None = None, metrics: dict | None = None, rtf_seconds: float | None = 30.0,
           threads: int = 2) -> dict:
    """Export, check parity, measure the real-time factor, stamp metadata; returns the metadata.

    Raises :class:`ModelError` (and writes nothing at ``out``) if parity exceeds 1e-4.
    """
    cfg: TranscriberConfig = model.cfg
    tmp = f"{out}.tmp-{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        to_onnx(model, tmp)
        err = parity(model, tmp)
        if not err <= PARITY_TOL:
            raise ModelError(f"{out}: ONNX Runtime differs from torch by {err:.3g} (> {PARITY_TOL})")
        measured = {**(metrics or {}), "onnx_parity_max_abs": err}
        if rtf_seconds:
            rtf = realtime_factor(tmp, rtf_seconds, threads)
            measured[f"ort_rtf_{threads}threads_{rtf_seconds:g}s"] = round(rtf, 1)
        props = {
            "dawsep.kind": "transcriber",
            "dawsep.sample_rate": str(cfg.sample_rate),
            "dawsep.hop_samples": str(cfg.hop),
            "dawsep.min_pitch": str(MIN_PITCH),
            "dawsep.segment_samples": str(int(segment_samples)),
            "dawsep.version": version or dawsep.__version__,
            "dawsep.architecture": json.dumps({"name": type(model).__name__, "config": cfg.to_dict(),
                                               "parameters": count_parameters(model), "opset": OPSET,
                                               "outputs": list(OUTPUTS)}),
            "dawsep.train_data": json.dumps(train_data or {}),
            "dawsep.metrics": json.dumps(measured),
        }
        stamp(tmp, props)
        os.replace(tmp, out)
        return props
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_checkpoint(ckpt: str, out: str, *, version: str | None = None, rtf_seconds: float | None = 30.0,
                      threads: int = 2) -> dict:
    """Export a training checkpoint (``best.pt``/``last.pt`` of ``train_transcriber``)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    from dawsep.train.transcribers import build, config_from_dict

    model = build(config_from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    tc = state.get("train_config", {})
    cfg = model.cfg
    seg = int(round(tc.get("segment_seconds", 10.0) * cfg.sample_rate)) // cfg.hop * cfg.hop
    data = {"root": tc.get("data"), "train_split": "train", "conditions": tc.get("conditions"),
            "segment_seconds": tc.get("segment_seconds"), "steps": state.get("step"), "batch": tc.get("batch"),
            "valid": {"split": "valid", "items_per_condition": tc.get("valid_items"),
                      "seconds": tc.get("valid_seconds"), "conditions": tc.get("valid_conditions")}}
    corpus = os.path.join(tc.get("data") or "", "corpus.json")
    if os.path.isfile(corpus):
        with open(corpus) as f:
            data["corpus"] = json.load(f).get("config")
    metrics = {"valid": state.get("metrics"), "step": state.get("step")}
    return export(model, out, segment_samples=seg, version=version or f"{dawsep.__version__}+step{state.get('step')}",
                  train_data=data, metrics=metrics, rtf_seconds=rtf_seconds, threads=threads)


def _curves(run_dir: str, every: int = 100) -> dict:
    """Training losses (thinned to ``every`` steps) and validation scores from a run's log.jsonl."""
    train, valid = [], []
    with open(os.path.join(run_dir, "log.jsonl")) as fh:
        for line in fh:
            rec = json.loads(line)
            if "valid" in rec:
                v = rec["valid"]
                valid.append({"step": rec["step"], "note_f1": round(v["note_f1"], 4), "frame_f1": round(v["frame_f1"], 4),
                              **{c: {k: round(v[c][k], 4) for k in ("loss", "note_f1", "frame_f1")}
                                 for c in v if isinstance(v[c], dict)}})
            elif "lr" in rec and rec["step"] % every == 0:  # training records (not "init")
                train.append({"step": rec["step"], "lr": rec["lr"],
                              **{k: round(v, 5) for k, v in rec.items() if k.startswith("loss_")}})
    return {"train_loss": train, "valid": valid}


def ship(run_dir: str, models_dir: str, name: str, file_name: str, data_root: str, command: str,
         description: str = "", train_command: str = "", test_songs: int = 24, test_seconds: float = 30.0,
         threads: int = 2) -> dict:
    """Export ``run_dir/best.pt`` into the package: ONNX (parity-checked, speed measured), test-split
    note/frame F1 (clean, mix, separated by the packaged default separator) stamped into its
    metadata, a provenance JSON beside it, and the registry entry ``name``."""
    from dawsep import runtime
    from dawsep.separate import Separator
    from dawsep.train.evaluate import evaluate_transcriber, transcription_songs
    from dawsep.train.export import register

    out = os.path.join(models_dir, file_name)
    props = export_checkpoint(os.path.join(run_dir, "best.pt"), out, threads=threads)
    songs = transcription_songs(data_root, test_songs, test_seconds)
    test = evaluate_transcriber(out, songs, Separator("default", threads=threads), threads=threads)
    metrics = json.loads(props["dawsep.metrics"])
    metrics["test"] = test
    stamp(out, {"dawsep.metrics": json.dumps(metrics)})
    sha = runtime.file_sha256(out)
    last = torch.load(os.path.join(run_dir, "last.pt"), map_location="cpu", weights_only=True)
    best = torch.load(os.path.join(run_dir, "best.pt"), map_location="cpu", weights_only=True)
    provenance = {
        "model": file_name, "sha256": sha, "bytes": os.path.getsize(out), "kind": "transcriber",
        "architecture": json.loads(props["dawsep.architecture"]), "ship_command": command,
        "train_command": train_command, "train_config": best.get("train_config"),
        "train_data": json.loads(props["dawsep.train_data"]),
        "steps_trained": last.get("step"), "best_step": best.get("step"), "init_from": best.get("init_from"),
        "metrics": metrics,
        "curves": _curves(run_dir),
        "held_out": "test split: MuseScore General soundfonts and the reserved music21 composers, "
                    "never read in training or validation",
    }
    prov = os.path.join(models_dir, file_name.rsplit(".", 1)[0] + ".json")
    with open(prov, "w") as fh:
        json.dump(provenance, fh, indent=1)
    register(models_dir, "transcriber", name, {"file": file_name, "sha256": sha, "description": description,
                                               "provenance": os.path.basename(prov)})
    return {"file": out, "sha256": sha, "test": test, "metrics": {k: v for k, v in metrics.items() if k != "valid"}}


__all__ = ["INPUT", "OPSET", "PARITY_TOL", "export", "export_checkpoint", "parity", "read_metadata",
           "realtime_factor", "session", "ship", "stamp", "to_onnx"]
