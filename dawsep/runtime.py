"""ONNX Runtime sessions, thread settings, model metadata and the packaged-model registry.

Everything the runtime knows about a model comes from the ``.onnx`` file's ``metadata_props``
(``dawsep.kind``, ``dawsep.sample_rate``, ``dawsep.stems``, …, see docs/plugin-contract.md):
nothing is hard-coded twice. ``dawsep.stem_input`` (optional) names a separator's input that
selects the stems to compute (:attr:`ModelInfo.stem_input`). Packaged models are listed in
``dawsep/models/registry.json`` with their sha256, checked once per process so a truncated or
swapped file fails loudly.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from dawsep.errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent / "models"
REGISTRY_FILE = MODELS_DIR / "registry.json"


@dataclass(frozen=True)
class ModelInfo:
    """A model file and what its metadata says about it."""

    path: str
    kind: str  # separator | transcriber
    sample_rate: int
    segment_samples: int
    stems: tuple[str, ...] = ()
    version: str = ""
    architecture: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    train_data: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other dawsep.* keys, e.g. hop_samples
    # separator: the name of the graph's optional int64 [n_out] input choosing which stems to
    # compute (indices into ``stems``; conditioned models), or "" when the graph computes all
    stem_input: str = ""
    name: str = ""  # registry name, or the file name for user paths
    sha256: str = ""

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the model that produced an output."""
        return {"name": self.name, "kind": self.kind, "sha256": self.sha256, "version": self.version,
                "architecture": self.architecture.get("arch"), "sample_rate": self.sample_rate}


def registry() -> dict[str, dict[str, dict]]:
    """``{kind: {name: {"file": ..., "sha256": ..., "description": ...}}}`` of packaged models."""
    try:
        return json.loads(REGISTRY_FILE.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ModelError(f"{REGISTRY_FILE} is not valid JSON: {exc}") from None


def list_models(kind: str | None = None) -> list[tuple[str, str, dict]]:
    """``(kind, name, entry)`` for every packaged model (of ``kind``)."""
    return [(k, n, e) for k, models in sorted(registry().items()) if kind in (None, k)
            for n, e in sorted(models.items())]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=None)
def _verified(path: str, sha256: str) -> None:
    got = file_sha256(path)
    if got != sha256:
        raise ModelError(f"packaged model {path} has sha256 {got[:12]}…, the registry expects "
                         f"{sha256[:12]}…: the file is damaged or was replaced; reinstall dawsep")


def resolve(model: str | os.PathLike, kind: str) -> tuple[Path, str, str]:
    """A registry name or a path to an ``.onnx`` file -> ``(path, name, sha256 or "")``.

    Packaged models are checked against the registry's sha256 (once per process).
    """
    text = os.fspath(model)
    entries = registry().get(kind, {})
    if text in entries:
        entry = entries[text]
        path = MODELS_DIR / entry["file"]
        if not path.is_file():
            raise ModelError(f"packaged {kind} model {text!r} is missing ({path}); reinstall dawsep")
        _verified(str(path), entry["sha256"])
        return path, text, entry["sha256"]
    path = Path(text).expanduser()
    if path.suffix.lower() == ".onnx" or os.sep in text or path.exists():
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        return path, path.name, ""
    known = ", ".join(sorted(entries)) or "none packaged"
    raise ModelError(f"unknown {kind} model {text!r}: give a path to an .onnx file or one of: {known}")


def model_stems(model: str | os.PathLike, kind: str = "separator") -> tuple[str, ...]:
    """The stems a model's metadata lists (``dawsep.stems``), read once per file and process."""
    path, name, sha = resolve(model, kind)
    st = path.stat()
    return _cached_info(str(path), name, sha, st.st_size, st.st_mtime_ns).stems


def model_info(model: str | os.PathLike, kind: str) -> ModelInfo:
    """A model's :class:`ModelInfo` (metadata and measured metrics), read once per file and process."""
    path, name, sha = resolve(model, kind)
    st = path.stat()
    return _cached_info(str(path), name, sha, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _cached_info(path: str, name: str, sha256: str, size: int, mtime_ns: int) -> ModelInfo:
    return read_info(path, name, sha256)


def read_info(path: str | os.PathLike, name: str = "", sha256: str = "") -> ModelInfo:
    """Parse a model's ``metadata_props`` without building a session."""
    sess = _session(str(path), threads=1)
    return _info_from_session(sess, str(path), name, sha256)


def _info_from_session(sess, path: str, name: str, sha256: str) -> ModelInfo:
    meta = dict(sess.get_modelmeta().custom_metadata_map)

    def get(key: str, required: bool = True) -> str | None:
        value = meta.get(f"dawsep.{key}")
        if value is None and required:
            raise ModelError(f"{path} is not a dawsep model: metadata key 'dawsep.{key}' is missing")
        return value

    def as_json(key: str, default: Any) -> Any:
        raw = get(key, required=False)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            raise ModelError(f"{path}: metadata 'dawsep.{key}' is not JSON") from None

    try:
        sample_rate, segment = int(get("sample_rate")), int(get("segment_samples"))
    except ValueError:
        raise ModelError(f"{path}: dawsep.sample_rate / dawsep.segment_samples are not integers") from None
    known = {"kind", "sample_rate", "segment_samples", "stems", "version", "architecture", "metrics", "train_data",
             "stem_input"}
    extra = {k[len("dawsep."):]: v for k, v in meta.items() if k.startswith("dawsep.") and k[7:] not in known}
    stem_input = get("stem_input", False) or ""
    if stem_input:
        inputs = {i.name for i in sess.get_inputs()} | {i.name for i in sess.get_overridable_initializers()}
        if stem_input not in inputs:
            raise ModelError(f"{path}: metadata 'dawsep.stem_input' names {stem_input!r}, which is not an input "
                             f"of the graph (inputs: {', '.join(sorted(inputs))})")
    return ModelInfo(path=path, kind=get("kind"), sample_rate=sample_rate, segment_samples=segment,
                     stems=tuple(as_json("stems", [])), version=get("version", False) or "",
                     architecture=as_json("architecture", {}), metrics=as_json("metrics", {}),
                     train_data=as_json("train_data", {}), extra=extra, name=name or Path(path).name,
                     sha256=sha256, stem_input=stem_input)


_THREADS: int | None = None


def set_default_threads(threads: int | None) -> None:
    """Threads for sessions created without an explicit count (the batch engine sets each
    worker's share of the cores here, so model steps built from presets follow it)."""
    global _THREADS
    _THREADS = max(1, int(threads)) if threads else None


def default_threads(jobs: int = 1) -> int:
    """Intra-op threads per session: the configured default, else the cores shared by ``jobs``."""
    if _THREADS is not None and jobs == 1:
        return _THREADS
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def providers() -> list[str]:
    """CUDA when this onnxruntime build has it (onnxruntime-gpu), else CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have] or ["CPUExecutionProvider"]


def _session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
    # No pre-planned block for all of a run's intermediates: measured on the default separator
    # (10 s chunks), peak memory 387 -> 293 MB, the same speed and bit-identical outputs.
    so.enable_mem_pattern = False
    try:
        return ort.InferenceSession(path, so, providers=providers())
    except Exception as exc:  # onnxruntime raises its own exception types for every failure
        raise ModelError(f"cannot load model {path}: {str(exc).strip().splitlines()[0]}") from None


@dataclass
class Model:
    """A loaded ONNX model: ``run(inputs) -> outputs`` plus its :class:`ModelInfo`."""

    session: Any
    info: ModelInfo

    def run(self, names: list[str], feeds: dict[str, Any]) -> list:
        return self.session.run(names, feeds)


def load(model: str | os.PathLike, kind: str, threads: int | None = None) -> Model:
    """Load a packaged model by name, or a user's ``.onnx``, checking it is a ``kind`` model."""
    path, name, sha = resolve(model, kind)
    sha = sha or file_sha256(path)  # user files too: the manifest records exactly what ran
    sess = _session(str(path), threads or default_threads())
    info = _info_from_session(sess, str(path), name, sha)
    if info.kind != kind:
        raise ModelError(f"{path} is a {info.kind} model; a {kind} model is needed here")
    return Model(sess, info)
