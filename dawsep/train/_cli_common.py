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
