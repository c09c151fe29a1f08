"""The batch commands ``render``, ``separate`` and ``transcribe``: their options, the job each one
builds, and the run's summary (a failed song: :class:`BatchError`, exit code 1).

Only click and :mod:`dawsep.defaults` are imported at module level so ``dawsep --help`` is
instant; each command imports the library it calls.
"""
from __future__ import annotations

import click

from dawsep.defaults import DEFAULT_BPM, DEFAULT_OVERLAP, NOTE_ENDS, DecodeOptions
from dawsep.engines import ENGINES
from dawsep.errors import BatchError

FORMATS = ("wav", "flac", "ogg", "mp3")
PHASES = ("mixture", "griffin-lim", "wiener")  # dawsep.phase.PHASES (not imported: --help stays instant)


def _batch_options(f):
    f = click.option("--address", metavar="ADDR", default=None,
                     help="With --engine ray: the cluster to join, e.g. 10.0.0.1:6379 "
                          "(default: $RAY_ADDRESS, else a local Ray started for this run).")(f)
    f = click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                     help="local: worker processes on this machine; ray: a Ray cluster "
                          "(pip install 'dawsep[dist]'; see docs/scale-out.md).")(f)
    f = click.option("--jobs", "-j", type=click.IntRange(1, 4096), default=None,
                     help="Songs processed in parallel: worker processes [default: 1], or Ray "
                          "workers with --engine ray [default: one per CPU of the cluster].")(f)
    f = click.option("--force", is_flag=True, help="Redo songs already done in OUT.")(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(f)
    f = click.option("--downmix", is_flag=True, help="Mix files with more than two channels down to stereo.")(f)
    f = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                     help="Output format (default: the preset's).")(f)
    f = click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default=None,
                     help="Output bit depth for wav (16/24/32 float) and flac (16/24).")(f)
    f = click.option("--output", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
                     help="Output folder: OUT/<song>/<stem>.<ext>, manifest.json, and a ledger for resuming.")(f)
    return f


def _engine_args(engine: str, address: str | None) -> dict:
    """run_batch's engine arguments from the command line."""
    if address and engine != "ray":
        raise click.UsageError("--address needs --engine ray")
    return {"engine": engine, "address": address}


def _output_options(preset, fmt: str | None, bit_depth: str | None):
    from dawsep.batch import OutputOptions
    from dawsep.presets import DEFAULT_BIT_DEPTH, FORMATS as ALLOWED, OutputConfig

    default = preset.output if preset is not None else OutputConfig()
    fmt = fmt or default.format
    if bit_depth is None:
        depth = default.bit_depth if fmt == default.format else DEFAULT_BIT_DEPTH[fmt]
    else:
        depth = int(bit_depth)
        if depth not in ALLOWED[fmt]:
            allowed = ", ".join(map(str, ALLOWED[fmt])) or "none (lossy format)"
            raise click.BadParameter(f"{depth} is not available for {fmt}; allowed: {allowed}",
                                     param_hint="--bit-depth")
    return OutputOptions(fmt, depth)


def _midi_tempo_option(f):
    return click.option(
        "--midi-tempo", type=click.FloatRange(20.0, 400.0), default=None, metavar="BPM",
        help=f"Tempo written into the MIDI file (and bars on the --plot piano roll); notes keep their times in "
             f"seconds, the tempo only sets the beat grid a DAW shows  [default: {DEFAULT_BPM:g}: dawsep does not "
             "estimate tempo, having measured it too unreliable]")(f)


def _phase_options(f):
    f = click.option("--phase-iterations", type=click.IntRange(0, 1000), default=None, metavar="N",
                     help="Griffin-Lim iterations [8] or Wiener EM iterations [1].")(f)
    f = click.option("--phase", type=click.Choice(PHASES), default=None,
                     help="Post-processing of the separated stems: mixture (the model's output, fastest), "
                          "griffin-lim (phase re-estimated from the stem magnitudes) or wiener (multichannel "
                          "Wiener filter across the stems, as Open-Unmix) [default: the preset's, else "
                          "mixture]. See docs/separation.md.")(f)
    return f


def _finish(report) -> None:
    click.echo(report.summary(), err=True)
    if not report.ok:
        raise BatchError(f"{len(report.failed)} of {report.total} song(s) failed")


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(exists=True))
@click.option("--preset", "-p", required=True, help="Preset name (see `dawsep presets list`) or path to a .toml.")
@click.option("--keep-tail", is_flag=True, help="Append the effect tail (reverb/delay) after the end of each file.")
@click.option("--separate/--no-separate", "separate_stems", default=None,
              help="With a preset that has a [separate] section: always / never separate its stem first "
                   "[default: separate, except files named like the preset's stem (bass.flac for the bass "
                   "preset), which already are that stem].")
@_phase_options
@_batch_options
def render(input_path, preset, keep_tail, separate_stems, phase, phase_iterations, out_dir, fmt, bit_depth, downmix,
           jobs, force, quiet, engine, address):
    """Render every audio file under IN through a preset's effect chain.

    Useful on stems you already have: each file becomes OUT/<relative path>/<stem>.<ext>,
    aligned with the input and the same length. A preset with a [separate] section separates its
    stem first (--phase applies to that step), but not out of a file that already is that stem
    (see --separate/--no-separate). The output is named after the stem it holds: the separated
    one, else the input's when it is named like a stem (guitar.wav -> guitar.flac), else the
    preset's. Reruns skip finished files.
    """
    from dawsep.batch import RenderJob, run_batch
    from dawsep.presets import load_preset

    p = _with_phase(load_preset(preset), phase, phase_iterations)
    job = RenderJob(p, _output_options(p, fmt, bit_depth), downmix=downmix, keep_tail=keep_tail,
                    separate=separate_stems)
    job.setup(1)  # fail fast on a bad plugin or model before touching any song
    _finish(run_batch(job, input_path, out_dir, jobs=jobs, force=force, progress=not quiet,
                      **_engine_args(engine, address)))


def _with_phase(preset, phase: str | None, iterations: int | None):
    """``preset`` with its [separate] phase replaced by the command line's (the options win; the
    preset's iterations stay only with the preset's own phase)."""
    from dataclasses import replace

    if phase is None and iterations is None:
        return preset
    if preset.separate is None:
        raise click.UsageError(f"--phase/--phase-iterations need a preset with a [separate] section; "
                               f"{preset.name!r} has none")
    cfg = preset.separate.with_phase(phase, iterations)
    if cfg.phase_iterations is not None and cfg.phase == "mixture":
        raise click.UsageError("--phase-iterations needs --phase griffin-lim or wiener")
    return replace(preset, separate=cfg)


@click.command()
@click.argument("input_path", metavar="SONGS", type=click.Path(exists=True))
@click.option("--preset", "-p", default=None,
              help="Preset name or .toml: its stem, rendered through its chain (and its model and output format).")
@click.option("--stems", default=None, metavar="LIST",
              help="Comma-separated stems to write, e.g. piano,bass (default: all, or the preset's stem).")
@click.option("--two-stems", metavar="STEM", default=None,
              help="Write STEM and no_STEM (the mixture minus STEM) only, e.g. --two-stems piano.")
@click.option("--model", "-m", default=None,
              help="Separator: packaged name (see `dawsep models list`) or path to an .onnx file [default: default].")
@click.option("--overlap", type=click.FloatRange(0.0, 0.9), default=DEFAULT_OVERLAP, show_default=True,
              help="Fraction of each chunk cross-faded with the next.")
@click.option("--segment-seconds", type=click.FloatRange(1.0, 120.0), default=None,
              help="Chunk length (default: the model's).")
@click.option("--keep-tail", is_flag=True, help="With --preset: append the chain's effect tail.")
@click.option("--no-midi", is_flag=True, help="With a preset that transcribes (piano): skip the MIDI file.")
@click.option("--plot", is_flag=True, help="With a preset that transcribes: also a piano-roll PNG.")
@_midi_tempo_option
@_phase_options
@_batch_options
def separate(input_path, preset, stems, two_stems, model, overlap, segment_seconds, keep_tail, no_midi, plot,
             midi_tempo, phase, phase_iterations, out_dir, fmt, bit_depth, downmix, jobs, force, quiet, engine,
             address):
    """Separate every song under SONGS into stems: OUT/<song>/<stem>.<ext>.

    Stems are aligned with the input, the same length and sample rate; a mask model's stems
    (default, unet, umx, umx-uni) add up to the input, a waveform model's (convtasnet, demucs) do
    not. With --model other than the default, outputs are named after it (piano.umx.flac).
    Reruns skip finished songs; exit status 1 if any failed.
    """
    from dawsep.batch import SeparateJob, run_batch
    from dawsep.presets import load_preset

    p = load_preset(preset) if preset else None
    if p is not None and p.separate is None:
        raise click.BadParameter(f"preset {p.name!r} has no [separate] section", param_hint="--preset")
    wanted = tuple(s.strip() for s in stems.split(",") if s.strip()) if stems else None
    if two_stems and (wanted or p is not None):
        raise click.UsageError("--two-stems cannot be combined with --stems or --preset")
    job = SeparateJob(model=model or "default", stems=wanted, preset=p, two_stems=two_stems,
                      output=_output_options(p, fmt, bit_depth), overlap=overlap, segment_seconds=segment_seconds,
                      downmix=downmix, keep_tail=keep_tail, transcribe=not no_midi,
                      extras=("png",) if plot else (), phase=phase, phase_iterations=phase_iterations,
                      midi_bpm=midi_tempo)
    if phase_iterations is not None and job.phase == "mixture":
        raise click.UsageError("--phase-iterations needs --phase griffin-lim or wiener")
    if (plot or midi_tempo) and not job.transcribes:
        flags = " and ".join(f for f, given in (("--plot", plot), ("--midi-tempo", midi_tempo)) if given)
        why = "--no-midi is given" if no_midi and p is not None and p.transcribe else \
            "it has no preset with a [transcribe] section (e.g. --preset piano)"
        click.echo(f"warning: {flags} apply to the MIDI transcription, and this run writes none: {why}", err=True)
    from dawsep.errors import UnknownStemError

    try:
        job.setup(1)  # fail fast: model, stems and chain are checked before any song
    except UnknownStemError as exc:  # --two-stems names a stem the model lacks: a usage error
        if not two_stems:
            raise  # --stems keeps the model error's exit code (6), as it always had
        raise click.BadParameter(str(exc), param_hint="--two-stems") from None
    weak = job.weak_stems()
    if weak:
        from dawsep.defaults import WEAK_STEM_SDR_DB

        which = ", ".join(f"{s} ({v:.1f} dB)" for s, v in weak)
        these = "this stem" if len(weak) == 1 else "these stems"
        click.echo(f"warning: separator {job.separator.info.name!r} scored below {WEAK_STEM_SDR_DB:g} dB SDR on its "
                   f"held-out test split for {which}: expect other instruments in {these} (`dawsep models list`, "
                   "docs/separation.md)", err=True)
    _finish(run_batch(job, input_path, out_dir, jobs=jobs, force=force, progress=not quiet,
                      **_engine_args(engine, address)))


_DECODE = DecodeOptions()  # the tuned defaults, defined once (dawsep.defaults)


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(exists=True))
@click.option("--model", "-m", default="default", show_default=True,
              help="Transcriber: packaged name or path to an .onnx file.")
@click.option("--preset", "-p", default=None, help="Take the thresholds from a preset's [transcribe] section.")
@click.option("--onset-threshold", type=click.FloatRange(0, 1), default=None,
              help=f"Onset posterior peak  [default: {_DECODE.onset_threshold}, or the preset's]")
@click.option("--frame-threshold", type=click.FloatRange(0, 1), default=None,
              help=f"Frame posterior to hold a note  [default: {_DECODE.frame_threshold}, or the preset's]")
@click.option("--offset-threshold", type=click.FloatRange(0, 1), default=None,
              help=f"Offset peak that ends a note  [default: {_DECODE.offset_threshold}, or the preset's]")
@click.option("--min-note-ms", type=click.FloatRange(0, 10000), default=None,
              help=f"Drop shorter notes  [default: {_DECODE.min_note_ms:g}, or the preset's]")
@click.option("--no-pedal", is_flag=True, help="Ignore the sustain pedal (no CC64).")
@click.option("--note-ends", type=click.Choice(NOTE_ENDS), default=None,
              help="pedal: notes end when they stop sounding; key: at the estimated key release, "
                   f"the pedal (CC64) sustaining them  [default: {_DECODE.note_ends}, or the preset's]")
@click.option("--plot", is_flag=True, help="Also write a piano-roll PNG.")
@_midi_tempo_option
@click.option("--notes", "note_list", type=click.Choice(["json", "csv"]), multiple=True,
              help="Also write the note list (repeatable).")
@click.option("--jobs", "-j", type=click.IntRange(1, 4096), default=None, help="Files processed in parallel [1].")
@click.option("--force", is_flag=True, help="Redo files already done in OUT.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--downmix", is_flag=True, help="Accept files with more than two channels (mixed down).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local worker processes, or a Ray cluster (see docs/scale-out.md).")
@click.option("--address", metavar="ADDR", default=None, help="With --engine ray: the cluster to join.")
@click.option("--output", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: OUT/<file>/piano.mid (+ .png/.json/.csv), manifest.json, ledger.")
def transcribe(input_path, model, preset, onset_threshold, frame_threshold, offset_threshold, min_note_ms, no_pedal,
               note_ends, plot, midi_tempo, note_list, jobs, force, quiet, downmix, engine, address, out_dir):
    """Transcribe piano recordings or separated piano stems to MIDI: OUT/<file>/piano.mid.

    One MIDI track named Piano (program 0) at 480 ticks per beat, at --midi-tempo (120 BPM
    unless given: beats are then half-seconds), velocities 1-127 and the sustain pedal as CC64.
    For a piano inside a full mix, use `dawsep separate --preset piano`, which separates it first.
    """
    from dataclasses import replace

    from dawsep.batch import TranscribeJob, run_batch
    from dawsep.presets import TranscribeConfig, load_preset
    from dawsep.transcribe import options_from_preset

    base = TranscribeConfig()
    if preset:
        p = load_preset(preset)
        if p.transcribe is None:
            raise click.BadParameter(f"preset {p.name!r} has no [transcribe] section", param_hint="--preset")
        base = p.transcribe
        if model == "default":
            model = base.model
    given = {"onset_threshold": onset_threshold, "frame_threshold": frame_threshold,
             "offset_threshold": offset_threshold, "min_note_ms": min_note_ms, "note_ends": note_ends}
    cfg = replace(base, **{k: v for k, v in given.items() if v is not None})
    if no_pedal:
        cfg = replace(cfg, pedal=False)
    extras = (("png",) if plot else ()) + tuple(dict.fromkeys(note_list))
    job = TranscribeJob(model, options_from_preset(cfg), extras=extras, downmix=downmix, bpm=midi_tempo)
    job.setup(1)  # fail fast on a missing or wrong model
    _finish(run_batch(job, input_path, out_dir, jobs=jobs, force=force, progress=not quiet,
                      **_engine_args(engine, address)))
