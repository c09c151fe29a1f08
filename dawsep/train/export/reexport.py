"""Re-export a shipped model from its own weights with the current exporter: ``dawsep-train <kind> reexport``.

When the graph improves and the weights do not (the in-graph STFT as a two-stage matmul DFT, say),
the shipped ONNX files are rebuilt from themselves: the weights are read back into the torch
module (:mod:`dawsep.train.init_from`), exported with the export path training uses (parity with
torch checked there), and the new file must compute what the old one did on real audio (the demo
song) within ``tol``. Only then is the file replaced and its registry hash and provenance JSON
updated; the provenance keeps every training figure (same function) and records the re-export
(previous hash, measured difference, speed before and after).
"""
from __future__ import annotations

import datetime
import json
import os

import numpy as np

from dawsep.errors import ModelError
from dawsep.train.export import ort_session

#: what the old and new files are compared on: the demo song's first seconds, at the model's rate
COMPARE_SECONDS = 12.0
DEMO_SONG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "demo", "demo_song.flac")


def _demo_audio(sample_rate: int, seconds: float, song: str) -> np.ndarray:
    """``(2, samples)`` float32 of ``song``'s first ``seconds`` at ``sample_rate``."""
    from dawsep.audio_read import load

    audio, _ = load(song, sample_rate=sample_rate)
    return np.ascontiguousarray(audio[:, : int(seconds * sample_rate)], np.float32)


def _run(path: str, feed: dict[str, np.ndarray], threads: int) -> list[np.ndarray]:
    return ort_session(path, threads).run(None, feed)


def _seconds_per_run(path: str, feed: dict[str, np.ndarray], threads: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timed runs after one warm-up run."""
    import time

    sess = ort_session(path, threads)
    sess.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return best


def reexport(kind: str, name: str = "default", *, models_dir: str | None = None, tol: float = 1e-4,
             threads: int = 2, song: str = DEMO_SONG, command: str = "", why: str = "") -> dict:
    """Rebuild registry ``kind``/``name`` from its own weights; returns the measured figures.

    Raises :class:`ModelError` (nothing replaced) if the new file differs from the old one by more
    than ``tol`` on ``song``.
    """
    from dawsep import runtime
    from dawsep.train import init_from
    from dawsep.train.export import register
    from dawsep.train.session import shipped

    models_dir = str(models_dir or runtime.MODELS_DIR)
    path, prov = shipped(kind, name, models_dir)
    old_props = {p.key: p.value for p in _onnx_props(path)}
    tmp = f"{path}.reexport-{os.getpid()}.onnx"
    try:
        if kind == "separator":
            from dawsep.train.export.separator import export_model, restamp

            arch = init_from.separator_config(path)
            model, _ = init_from.separator(path, overrides={k: arch[k] for k in ("full_band",) if k in arch})
            figures = export_model(model.eval(), tmp, segment_seconds=10.0, bench=False, threads=threads)
            audio = _demo_audio(model.sample_rate, COMPARE_SECONDS, song)
            feed = {"mix": audio[None]}
            metrics = json.loads(old_props.get("dawsep.metrics", "{}"))
            metrics["onnx_parity_max_abs"] = figures["onnx_parity_max_abs"]
            restamp(tmp, {**old_props, "dawsep.metrics": json.dumps(metrics)})
        elif kind == "transcriber":
            from dawsep.train.export.transcriber import export

            model, _ = init_from.transcriber(path)
            train_data = json.loads(old_props.get("dawsep.train_data", "{}"))
            metrics = json.loads(old_props.get("dawsep.metrics", "{}"))
            props = export(model.eval(), tmp, segment_samples=int(old_props["dawsep.segment_samples"]),
                           version=old_props.get("dawsep.version"), train_data=train_data, metrics=metrics,
                           rtf_seconds=None, threads=threads)
            figures = {"onnx_parity_max_abs": json.loads(props["dawsep.metrics"])["onnx_parity_max_abs"]}
            audio = _demo_audio(model.cfg.sample_rate, COMPARE_SECONDS, song).mean(axis=0)
            feed = {"audio": audio[None]}
        else:
            raise ModelError(f"unknown model kind {kind!r} (separator, transcriber)")
        old, new = _run(path, feed, threads), _run(tmp, feed, threads)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(old, new))
        if not diff <= tol:
            raise ModelError(f"{path}: the re-export differs from the shipped file by {diff:.3g} (> {tol:g}) "
                             f"on {os.path.basename(song)}; nothing replaced")
        t_old, t_new = _seconds_per_run(path, feed, threads), _seconds_per_run(tmp, feed, threads)
        previous = runtime.file_sha256(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    sha = runtime.file_sha256(path)
    record = {
        "date": datetime.date.today().isoformat(),
        "why": why,
        "command": command,
        "previous_sha256": previous,
        "max_abs_vs_previous": diff,
        "compared_on": f"{os.path.basename(song)}, first {COMPARE_SECONDS:g} s",
        f"ort_rtf_{threads}threads_before": round(COMPARE_SECONDS / t_old, 1),
        f"ort_rtf_{threads}threads_after": round(COMPARE_SECONDS / t_new, 1),
        "onnx_parity_max_abs": figures["onnx_parity_max_abs"],
    }
    prov.update(sha256=sha, bytes=os.path.getsize(path))
    prov.setdefault("reexports", []).append(record)
    with open(os.path.join(models_dir, "registry.json")) as fh:
        entry = dict(json.load(fh)[kind][name], sha256=sha)
    prov_path = os.path.join(models_dir, entry.get("provenance") or os.path.splitext(entry["file"])[0] + ".json")
    tmp_prov = f"{prov_path}.tmp-{os.getpid()}"
    with open(tmp_prov, "w") as fh:
        json.dump(prov, fh, indent=1)
    os.replace(tmp_prov, prov_path)
    register(models_dir, kind, name, entry)
    return {"model": os.path.basename(path), "sha256": sha, **record}


def _onnx_props(path: str):
    import onnx

    return onnx.load(path, load_external_data=False).metadata_props
