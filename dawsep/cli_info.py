"""The inspection commands: ``models list|show``, ``presets list|show`` and ``info`` (audio files)."""
from __future__ import annotations

import json
import os
import sys

import click

from dawsep.errors import DawsepError


@click.group()
def models() -> None:
    """List and inspect models."""


@models.command("list")
def models_list():
    """Packaged models: file size, parameters and the quality measured on the held-out test split
    (from each model's metadata)."""
    from dawsep import runtime

    rows = runtime.list_models()
    if not rows:
        click.echo("no models packaged")
        return
    table = [("KIND", "NAME", "SIZE", "PARAMS", "QUALITY ON THE HELD-OUT TEST SPLIT", "DESCRIPTION")]
    for kind, name, entry in rows:
        try:
            info = runtime.model_info(name, kind)
        except DawsepError as exc:
            table.append((kind, name, "-", "-", f"cannot be read: {exc}", entry.get("description", "")))
            continue
        params = info.metrics.get("params")
        table.append((kind, name, f"{os.path.getsize(info.path) / 1e6:.1f} MB",
                      f"{params / 1e6:.2f} M" if params else "-", _quality(kind, info.metrics.get("test")),
                      entry.get("description", "")))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def _quality(kind: str, test: dict | None) -> str:
    """A model's measured test-split figures (its metadata), in one cell."""
    if not test:
        return "not measured"
    if kind == "separator" and "mean" in test:
        stems = " ".join(f"{s} {v:.2f}" for s, v in test.get("sdr", {}).items())
        return f"mean SDR {test['mean']:.2f} dB ({stems})"
    if kind == "transcriber":
        cells = [f"{test[c]['note']:.2f} {label}" for c, label in
                 (("clean", "clean"), ("mix", "mixture"), ("separated", "separated")) if c in test]
        return "note F1 " + ", ".join(cells) if cells else "not measured"
    return "not measured"


@models.command("show")
@click.argument("model")
@click.option("--kind", type=click.Choice(["separator", "transcriber"]), default="separator", show_default=True)
def models_show(model, kind):
    """Metadata of a model (packaged name or .onnx path) as JSON."""
    from dataclasses import asdict

    from dawsep import runtime

    click.echo(json.dumps(asdict(runtime.load(model, kind, threads=1).info), indent=2))


@click.group()
def presets() -> None:
    """List and inspect presets."""


@presets.command("list")
def presets_list():
    """Shipped presets with their descriptions."""
    from dawsep.presets import list_presets, load_preset

    for name in list_presets():
        click.echo(f"{name:10s} {load_preset(name).description}")


@presets.command("show")
@click.argument("name")
def presets_show(name):
    """Show a preset (name or path): the validated chain, stem, transcription and output.

    Nothing is loaded: a VST3 plugin a preset names runs only when audio is processed.
    """
    from dawsep.chain import VST3Step
    from dawsep.presets import load_preset

    p = load_preset(name)
    click.echo(f"name:        {p.name}\nsource:      {p.source}\ndescription: {p.description}")
    if p.separate:
        s = p.separate
        iterations = "" if s.phase_iterations is None else f" phase_iterations={s.phase_iterations}"
        click.echo(f"separate:    stem={s.stem} model={s.model} phase={s.phase}{iterations}")
    click.echo("chain:")
    for i, d in enumerate(p.describe()):
        click.echo(f"  {i}. {d}")
    if any(isinstance(step, VST3Step) for step in p.chain):
        click.echo("  (VST3 plugins run their own code: they are loaded only when audio is processed)")
    if p.transcribe:
        t = p.transcribe
        click.echo(f"transcribe:  model={t.model} onset_threshold={t.onset_threshold} frame_threshold={t.frame_threshold} "
                   f"offset_threshold={t.offset_threshold} min_note_ms={t.min_note_ms:g} pedal={str(t.pedal).lower()} "
                   f"note_ends={t.note_ends}")
    depth = f" {p.output.bit_depth}-bit" if p.output.bit_depth else ""
    click.echo(f"output:      {p.output.format}{depth}")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(files, as_json):
    """Show format, sample rate, channels and duration of audio files."""
    from dataclasses import asdict

    from dawsep import audio

    results, failed = [], 0
    for f in files:
        try:
            i = audio.info(f)
        except DawsepError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
            continue
        results.append(asdict(i))
        if not as_json:
            click.echo(f"{i.path}: {i.format} {i.subtype or ''} {i.sample_rate} Hz, {i.channels} ch, "
                       f"{i.frames} frames ({i.duration_s:.2f} s)")
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
    if failed:
        sys.exit(3)
