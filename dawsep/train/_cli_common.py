"""Pieces shared by the ``dawsep-train`` command groups."""
from __future__ import annotations

import functools
import importlib
import os
import sys

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
    """``export.<name>``: ``export/`` sits beside the ``dawsep`` package in the repository and is
    not installed, so a console script (whose sys.path lacks the repository root) gets it added."""
    try:
        return importlib.import_module(f"export.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("export", f"export.{name}"):
            raise
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        return importlib.import_module(f"export.{name}")
