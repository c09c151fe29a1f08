"""One training session of a shipped model (``make train-separator`` / ``make train-transcriber``).

Training here runs in time-boxed sessions on a machine that may not come back: only the git
checkout (and so ``dawsep/models/``) is sure to survive. A session therefore

1. finds the shipped model (registry name -> ``dawsep/models/<file>.onnx`` + its provenance JSON),
   whose ``train_config`` is the recipe it was trained with (the one definition of it);
2. caches the corpus's decoded stems (:mod:`dawsep.train.data.cache`; skipped when done);
3. trains with that recipe in ``RUNS/<file stem>``: resuming ``last.pt`` if a previous session's
   run is still there, else warm-starting from the shipped ONNX (``init_from``), until
   ``minutes`` (counted from the session's start) are spent, checkpoint saved;
4. ships ``best.pt`` (the existing ``ship`` of ``dawsep/train/export/``: ONNX, test-split scores, provenance
   JSON, registry) when it beats the starting weights on validation (a warm start validates
   them at step 0) and was not shipped before (``RUNS/<stem>/shipped.json``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time

from dawsep.errors import DawsepError

DEFAULT_RUNS = os.path.join(os.path.expanduser("~"), ".cache", "dawsep", "runs")
KINDS = ("separator", "transcriber")


class SessionError(DawsepError):
    """A session cannot start (unknown model, no recipe in its provenance)."""

    exit_code = 2


def _registry(models_dir: str) -> dict:
    with open(os.path.join(models_dir, "registry.json")) as fh:
        return json.load(fh)


def shipped(kind: str, name: str = "default", models_dir: str | None = None) -> tuple[str, dict]:
    """``(ONNX path, provenance)`` of the registry's ``kind``/``name`` model (``models_dir``:
    the package's ``dawsep/models``)."""
    from dawsep import runtime

    models_dir = str(models_dir or runtime.MODELS_DIR)
    entry = _registry(models_dir).get(kind, {}).get(name)
    if entry is None:
        raise SessionError(f"no {kind} model named {name!r} in {os.path.join(models_dir, 'registry.json')}")
    path = os.path.join(models_dir, entry["file"])
    prov_path = os.path.join(models_dir, entry.get("provenance") or os.path.splitext(entry["file"])[0] + ".json")
    with open(prov_path) as fh:
        prov = json.load(fh)
    if not isinstance(prov.get("train_config"), dict):
        raise SessionError(f"{prov_path} records no train_config to continue training with")
    return path, prov


def recipe(config_cls, train_config: dict, **replace) -> tuple[object, list[str]]:
    """``config_cls`` from a provenance ``train_config`` (fields it no longer has are dropped and
    returned), with ``replace`` applied."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    kw = {k: v for k, v in train_config.items() if k in known}
    if "kinds" in kw:
        kw["kinds"] = tuple(kw["kinds"])
    if "valid_conditions" in kw:
        kw["valid_conditions"] = tuple(kw["valid_conditions"])
    kw.update(replace)
    return config_cls(**kw), sorted(set(train_config) - known)


def run(kind: str, *, name: str = "default", data: str, runs: str = DEFAULT_RUNS, minutes: float,
        ship: bool = True, log=print, models_dir: str | None = None) -> dict:
    """One session (see the module docstring); returns what it did. ``models_dir``: where the
    shipped model is read from and written back to (default: the package's ``dawsep/models``)."""
    import torch

    from dawsep import runtime
    from dawsep.train.data.cache import build_corpus

    if kind not in KINDS:
        raise SessionError(f"kind {kind!r}: one of {KINDS}")
    t0 = time.time()
    models = str(models_dir or runtime.MODELS_DIR)
    path, prov = shipped(kind, name, models)
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(runs, stem)
    if kind == "separator":
        from dawsep.train.train_separator import TrainConfig, train
    else:
        from dawsep.train.train_transcriber import TrainConfig, train
    # A session trains the whole model: a shipped head-only fine-tune's recipe (train_only,
    # select by loss) must not freeze the next session's run.
    whole = {"train_only": (), "select": TrainConfig.select} if kind == "transcriber" else {}
    cfg, dropped = recipe(TrainConfig, prov["train_config"], data=data, out=out, init_from=path, **whole)
    if dropped:
        log(f"{stem}: train_config keys no longer used: {dropped}")
    resuming = os.path.exists(os.path.join(out, "last.pt"))
    shown = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("data", "out")}
    log(f"{stem}: {'resuming ' + out if resuming else 'new run ' + out + ' from ' + path}; "
        f"budget {minutes:g} min; recipe {json.dumps(shown)}")

    from dawsep.train.data.corpus import iter_songs

    if next(iter_songs(data, "train"), None) is None:
        raise SessionError(f"no training songs under {data}: build the corpus first (make data)")
    cached = build_corpus(data, ("train", "valid"), progress=log)
    log(f"stem cache: {cached['built']} files built, {cached['skipped']} already there, "
        f"{cached['bytes'] / 1e9:.1f} GB, {cached['seconds']:.0f} s")
    left = minutes - (time.time() - t0) / 60
    train(cfg, log=log, minutes=max(0.0, left))
    report = {"run": out, "minutes": round((time.time() - t0) / 60, 1)}

    best_path, marker = os.path.join(out, "best.pt"), os.path.join(out, "shipped.json")
    if not os.path.exists(best_path):
        log("no best.pt (no validation yet): nothing to ship")
        return report
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    done = json.load(open(marker)) if os.path.exists(marker) else {}
    report["best_step"] = int(best["step"])
    if best["step"] == 0 and best.get("init_from"):
        log("best.pt is still the starting weights (no validation beat them): nothing to ship")
    elif done.get("best_step") == best["step"]:
        log(f"best.pt (step {best['step']}) was shipped already")
    elif ship:
        command = " ".join(map(shlex.quote, sys.argv))
        train_command = (f"{command} (a session: the recipe above from {os.path.basename(path)}'s provenance, "
                         f"resumed from last.pt or warm-started from the shipped ONNX; see init_from)")
        file_name, entry_desc = os.path.basename(path), _registry(models)[kind][name].get("description", "")
        from dawsep.train._cli_common import export_module

        res = export_module(kind).ship(out, models, name, file_name, data, command, description=entry_desc,
                                       train_command=train_command)
        with open(marker, "w") as fh:
            json.dump({"best_step": int(best["step"]), "sha256": res["sha256"], "time": time.time()}, fh)
        report["shipped"] = {"file": res["file"], "sha256": res["sha256"], "test": res["test"]}
        log(f"shipped best.pt (step {best['step']}) to {res['file']}")
    return report


__all__ = ["DEFAULT_RUNS", "KINDS", "SessionError", "recipe", "run", "shipped"]
