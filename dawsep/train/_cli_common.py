"""Pieces shared by the ``dawsep-train`` command groups."""
from __future__ import annotations

import functools
import importlib
import os

import click

from dawsep.errors import DawsepError

DEFAULT_DATA = os.path.join(os.path.expanduser("~"), ".cache", "dawsep", "data")


def errors(fn):
    """Map DawsepError to a one-line message and its exit code."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except DawsepError as e:
            click.echo(f"error: {e}", err=True)
            raise SystemExit(e.exit_code) from None

    return wrapper


def export_module(name: str):
    """``dawsep.train.export.<name>``, imported on first use (it needs onnx, which the CLI's other
    commands do not)."""
    return importlib.import_module(f"dawsep.train.export.{name}")


def resumed_options(cfg, *, skip: tuple[str, ...] = (), log=None):
    """``cfg`` (a train-config dataclass) for a run that may resume: when ``cfg.out/last.pt``
    exists, every option the command line left at its default takes the value the run was
    saved with, so ``--out RUN`` alone continues the run as it was (a default pos_weight or mix
    of conditions silently changed a resumed transcriber's objective: note F1 0.60 -> 0.51).
    Options given on the command line still win; ``skip``: parameters never taken from the run
    (CLI parameters named otherwise than a config field are never taken)."""
    import dataclasses

    from dawsep.train.run_folder import load_checkpoint

    last = os.path.join(cfg.out, "last.pt")
    if not os.path.exists(last):
        return cfg
    saved = load_checkpoint(last).get("train_config") or {}
    ctx = click.get_current_context()
    fields = {f.name for f in dataclasses.fields(cfg)}
    taken = {}
    for p in ctx.command.params:
        name = p.name
        if name in skip or name not in fields or name not in saved:
            continue
        if ctx.get_parameter_source(p.name) is not click.core.ParameterSource.DEFAULT:
            continue
        value, now = saved[name], getattr(cfg, name)
        if isinstance(now, tuple) and isinstance(value, list):
            value = tuple(value)
        if value != now:
            taken[name] = value
    if taken and log is not None:
        log("resuming with the run's own " + ", ".join(f"{k}={v!r}" for k, v in taken.items())
            + " (options left at their defaults; pass them to change them)")
    return dataclasses.replace(cfg, **taken)
