"""Owns ``--init-from``: which model a shipped ONNX file (or a ``.pt`` checkpoint) holds, built and filled.

The architecture comes from the file: ONNX metadata ``dawsep.architecture`` (else ``architecture``
of the provenance JSON beside it), or a checkpoint's ``model_config``. The weights come out of the
graph through :mod:`dawsep.train.onnx_weights`, which says which forms of an exported tensor it reads
and why a model is never half-initialised.
"""
from __future__ import annotations

import json
import os

import torch

from dawsep.train.onnx_weights import InitFromError, Loaded, load_onnx_weights


# ------------------------------------------------------------------ architecture
def read_architecture(path: str) -> dict:
    """The ``dawsep.architecture`` JSON of an ONNX file, else ``architecture`` of ``<stem>.json`` beside it."""
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    except Exception as e:  # onnx raises DecodeError/OSError/... for a corrupt or missing file
        raise InitFromError(f"{path}: cannot read as ONNX ({e})") from None
    if "dawsep.architecture" in props:
        return json.loads(props["dawsep.architecture"])
    prov = os.path.splitext(path)[0] + ".json"
    if os.path.exists(prov):
        with open(prov) as fh:
            arch = json.load(fh).get("architecture")
        if arch:
            return arch
    raise InitFromError(f"{path}: no dawsep.architecture metadata and no provenance JSON {prov} naming one")


def _checkpoint(path: str) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of a corrupt or foreign file
        raise InitFromError(f"{path}: cannot read as a checkpoint ({e})") from None
    if not isinstance(ck, dict) or "model" not in ck or "model_config" not in ck:
        raise InitFromError(f"{path}: not a dawsep training checkpoint (needs 'model' and 'model_config')")
    return ck


def _kind(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".onnx", ".pt"):
        raise InitFromError(f"{path}: --init-from takes a .onnx model or a .pt checkpoint")
    if not os.path.isfile(path):
        raise InitFromError(f"{path}: no such file")
    return ext[1:]


# ------------------------------------------------------------------ per model family
def separator_config(path: str) -> dict:
    """``model.config()`` of the separator in ``path`` (.onnx metadata / provenance, or .pt)."""
    if _kind(path) == "pt":
        return dict(_checkpoint(path)["model_config"])
    arch = read_architecture(path)
    if "arch" not in arch:
        raise InitFromError(f"{path}: its architecture {arch} is not a separator's")
    return arch


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def separator(path: str, arch: str | None = None, overrides: dict | None = None):
    """``(model, Loaded)``: a trainable separator holding the weights of ``path``.

    The architecture is the file's; ``arch``/``overrides`` (the training command's ``--arch`` and
    ``--model``) must agree with it. ``full_band`` is an export-time choice (same weights), so it
    is left to the training default unless ``overrides`` sets it.
    """
    from dawsep.train.separators import build

    ck = _checkpoint(path) if _kind(path) == "pt" else None
    config = dict(ck["model_config"]) if ck else separator_config(path)
    if arch is not None and config["arch"] != arch:
        raise InitFromError(f"{path} holds a {config['arch']!r} separator, not {arch!r}: pass --arch {config['arch']}")
    clash = {k: (v, config[k]) for k, v in (overrides or {}).items()
             if k in config and k != "full_band" and not _same(v, config[k])}
    if clash:
        raise InitFromError(f"{path}: --model disagrees with the file's architecture: "
                            + ", ".join(f"{k}={v!r} (file: {f!r})" for k, (v, f) in clash.items()))
    config = {k: v for k, v in config.items() if k != "full_band"}
    config.update({k: v for k, v in (overrides or {}).items() if k not in config})
    model = build(config)
    if ck:
        model.load_state_dict(ck["model"])
        return model, Loaded()
    example = torch.zeros(1, 2, model.efficient_length(4 * model.hop * getattr(model, "frame_multiple", 1)))
    return model, load_onnx_weights(model, path, example)


def transcriber(path: str, model_config=None):
    """``(model, Loaded)``: a transcriber of the architecture ``path`` holds (any in
    :mod:`dawsep.train.transcribers`) with its weights; ``model_config`` (a config object, e.g. from
    ``--model-config``) must equal the file's."""
    from dawsep.train.transcribers import ARCHITECTURES, build, config_from_dict

    ck = _checkpoint(path) if _kind(path) == "pt" else None
    if ck:
        cfg = config_from_dict(ck["model_config"])
    else:
        arch = read_architecture(path)
        names = {model_cls.__name__: cfg_cls for cfg_cls, model_cls in ARCHITECTURES.values()}
        if arch.get("name") not in names or "config" not in arch:
            raise InitFromError(f"{path}: its architecture {str(arch)[:200]} is not a transcriber's "
                                f"({', '.join(names)})")
        cfg = config_from_dict(arch["config"])
    grow = _grown_fields(cfg, model_config) if ck else ()
    if model_config is not None and model_config != cfg and not grow:
        raise InitFromError(f"{path} holds a transcriber with {cfg}, not {model_config}")
    model = build(model_config if grow else cfg)
    if ck:
        missing, unexpected = model.load_state_dict(ck["model"], strict=False)
        if unexpected or (missing and not grow):
            raise InitFromError(f"{path}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
        return model, Loaded(grown=sorted(missing))
    return model, load_onnx_weights(model, path, torch.zeros(1, 4 * cfg.hop))


def _grown_fields(saved, wanted) -> tuple[str, ...]:
    """The fields ``wanted`` switches on that ``saved`` had off, when that is all that differs and
    the architecture declares them growable (new parameters that start as a no-op); else ()."""
    growable = getattr(type(saved), "GROWABLE", ())
    if wanted is None or type(wanted) is not type(saved) or not growable:
        return ()
    a, b = saved.to_dict(), wanted.to_dict()
    diff = [k for k in b if a.get(k) != b[k]]
    ok = diff and all(k in growable and b[k] and not a.get(k) for k in diff)
    return tuple(diff) if ok else ()


def file_info(path: str) -> dict:
    """What a run records about its starting point: the file, its sha256 and, for a shipped model,
    the steps behind it (from the provenance JSON beside it)."""
    from dawsep.runtime import file_sha256

    info = {"path": os.path.abspath(path), "sha256": file_sha256(path)}
    prov = os.path.splitext(path)[0] + ".json"
    if path.endswith(".onnx") and os.path.exists(prov):
        with open(prov) as fh:
            p = json.load(fh)
        info["steps_trained"] = p.get("steps_trained")
        info.update({k: p[k] for k in ("init_from",) if p.get(k)})
    elif path.endswith(".pt"):
        info["step"] = _checkpoint(path).get("step")
    return info


__all__ = ["InitFromError", "Loaded", "file_info", "read_architecture", "separator", "separator_config", "transcriber"]
