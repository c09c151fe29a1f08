"""What a batch job's outputs depend on, as hashes: its settings, and the content of every model,
VST3 bundle and impulse response it loads (a changed file redoes the songs); and the models a
preset names, resolved with errors that name the preset's file and key.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from dawsep.errors import DawsepError, ModelError
from dawsep.runtime import file_sha256


def settings_hash(settings: dict) -> str:
    from dawsep import __version__

    settings = {"v": __version__, **settings}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def model_hashes(preset) -> list[str]:
    """Content hashes of every model and plugin file a preset's outputs depend on: its
    [separate] model, the models of its chain's model steps, its VST3 bundles and impulse
    responses. A new file at the same path redoes the songs."""
    from dawsep import runtime

    out = []
    if preset.separate is not None:
        path, _, sha = preset_model(preset, "separate", preset.separate.model, "separator")
        out.append(sha or runtime.file_sha256(path))
    return out + chain_file_hashes(preset.chain)


def chain_file_hashes(steps) -> list[str]:
    """Content hashes of the files chain ``steps`` load: model-step models (the packaged
    registry's hash, else the file's), VST3 bundles (every file in them) and Convolution impulse
    responses. A file that cannot be found counts as ``missing:<path>`` (building the chain
    reports it)."""
    from dawsep import runtime
    from dawsep.chain import BuiltinStep, ModelStepSpec, VST3Step, resolve_vst3

    out = []
    for step in steps:
        try:
            if isinstance(step, ModelStepSpec):
                if step.kind == "separate":
                    path, _, sha = runtime.resolve(step.options.get("model", "default"), "separator")
                    out.append(sha or content_hash(path))
                else:  # another kind: any option naming a file
                    out += [content_hash(v) for v in step.options.values() if isinstance(v, str) and Path(v).is_file()]
            elif isinstance(step, VST3Step):
                out.append(content_hash(resolve_vst3(step.path)))
            elif isinstance(step, BuiltinStep) and "impulse_response_filename" in step.parameters:
                out.append(content_hash(Path(step.parameters["impulse_response_filename"]).expanduser()))
        except (DawsepError, OSError) as exc:
            out.append(f"missing:{exc}")
    return out


def content_hash(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted), cached per process
    by size and modification time."""
    p = Path(path)
    if p.is_dir():
        parts = [f"{f.relative_to(p).as_posix()}:{content_hash(f)}" for f in sorted(p.rglob("*")) if f.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    st = p.stat()
    return _file_hash(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def preset_model(preset, section: str, model: str, kind: str, hint: str = ""):
    """``runtime.resolve`` for a model a preset names; a problem names the preset file and key."""
    from dawsep import runtime

    try:
        return runtime.resolve(model, kind)
    except ModelError as exc:
        raise ModelError(f"{preset.source} [{section}.model]: {exc}{hint}") from None
