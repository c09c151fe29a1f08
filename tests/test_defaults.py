"""Issue 17, item 1: every route to a transcription decodes with the same options: the one
definition in :mod:`dawsep.defaults`. Retuning the transcriber changes that definition only."""
from __future__ import annotations

import re
from dataclasses import asdict, fields

import pytest
from click.testing import CliRunner

from dawsep import defaults


def _cli_job(monkeypatch, args):
    """The job the CLI would run for ``args`` (nothing is run)."""
    from dawsep import batch, cli

    seen = {}

    def fake_run_batch(job, *a, **k):
        seen["job"] = job
        return batch.BatchReport("out")

    monkeypatch.setattr(batch, "run_batch", fake_run_batch)
    monkeypatch.setattr(batch.TranscribeJob, "setup", lambda self, threads: None)
    monkeypatch.setattr(batch.SeparateJob, "setup", lambda self, threads: None)
    result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen["job"]


def test_every_route_decodes_with_the_one_definition(tmp_path, monkeypatch):
    from bench import bench_transcription
    from dawsep.batch import SeparateJob, TranscribeJob
    from dawsep.presets import TranscribeConfig, load_preset
    from dawsep.transcribe import DecodeOptions, options_from_preset

    one = defaults.DecodeOptions()
    assert DecodeOptions is defaults.DecodeOptions  # the Python API's class is the definition
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")  # the CLI only needs the path to exist here
    routes = {
        "Python API DecodeOptions()": DecodeOptions(),
        "presets TranscribeConfig()": options_from_preset(TranscribeConfig()),
        "piano preset": options_from_preset(load_preset("piano").transcribe),
        "TranscribeJob()": TranscribeJob().options,
        "dawsep transcribe": _cli_job(monkeypatch, ["transcribe", str(wav), "-o", str(tmp_path / "o")]).options,
        "dawsep transcribe --preset piano":
            _cli_job(monkeypatch, ["transcribe", str(wav), "-o", str(tmp_path / "o"), "-p", "piano"]).options,
        "bench": bench_transcription.decode_options(),
    }
    job = _cli_job(monkeypatch, ["separate", str(wav), "-o", str(tmp_path / "o"), "-p", "piano"])
    assert isinstance(job, SeparateJob)
    routes["dawsep separate --preset piano"] = options_from_preset(job.preset.transcribe)
    for name, got in routes.items():
        assert got == one, f"{name} decodes with {asdict(got)}, not the defaults {asdict(one)}"


def test_the_shipped_preset_restates_no_default():
    """The piano preset takes the decoding values from the definition rather than copying them, so
    a retune (which changes ``dawsep/defaults.py`` only: no test pins the values) cannot leave it
    behind."""
    o = defaults.DecodeOptions()
    from dawsep.presets import _builtin_dir

    text = (_builtin_dir() / "piano.toml").read_text()
    section = text.split("[transcribe]", 1)[1].split("\n[", 1)[0]
    restated = [f.name for f in fields(o) if re.search(rf"^\s*{f.name}\s*=", section, re.M)]
    assert restated == []


def test_a_retune_reaches_every_route(monkeypatch):
    """Changing the one definition changes what the presets and the CLI's help say."""
    from dawsep.presets import TranscribeConfig, parse_preset
    from dawsep.transcribe import options_from_preset

    cfg = parse_preset('[transcribe]\nmodel = "default"\n').transcribe
    assert options_from_preset(cfg) == defaults.DecodeOptions()
    for f in fields(TranscribeConfig):
        if f.name != "model":
            assert f.default == getattr(defaults.DecodeOptions(), f.name), f.name


def test_cli_help_shows_the_defaults():
    from dawsep import cli

    out = CliRunner().invoke(cli.main, ["transcribe", "--help"], terminal_width=200).output
    o = defaults.DecodeOptions()
    flat = " ".join(out.split())
    for flag, value in (("--onset-threshold", o.onset_threshold), ("--frame-threshold", o.frame_threshold),
                        ("--offset-threshold", o.offset_threshold), ("--min-note-ms", f"{o.min_note_ms:g}")):
        assert re.search(rf"{flag} [^[]*\[default: {re.escape(str(value))}[],]", flat), (flag, flat)
    out = CliRunner().invoke(cli.main, ["separate", "--help"], terminal_width=200).output
    assert f"[default: {defaults.DEFAULT_OVERLAP};" in " ".join(out.split())


@pytest.mark.parametrize("module", ["dawsep.chunking", "dawsep.separate"])
def test_overlap_default_is_the_one_definition(module):
    import importlib

    assert importlib.import_module(module).DEFAULT_OVERLAP is defaults.DEFAULT_OVERLAP
