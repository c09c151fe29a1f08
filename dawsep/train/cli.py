"""``dawsep-train``: training-side commands (needs the ``train`` extra).

Thin: parse options, call the library, map :class:`DawsepError` to its exit code.
"""
from __future__ import annotations

import json
import os

import click


from dawsep.train._cli_common import DEFAULT_DATA, errors as _errors, export_module, resumed_options


@click.group()
def main() -> None:
    """dawsep training tools: synthetic data, training, export."""


@main.group()
def data() -> None:
    """Synthesise and inspect the Slakh-style training corpus."""


@data.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default=DEFAULT_DATA, show_default=True,
              help="Corpus folder (DATA/<split>/<song>/...).")
@click.option("--hours", type=float, default=10.0, show_default=True, help="Hours of train mixtures.")
@click.option("--piano-hours", type=float, default=5.0, show_default=True, help="Hours of train solo piano.")
@click.option("--valid-hours", type=float, default=None, help="Valid mixtures (default 5 % of --hours).")
@click.option("--test-hours", type=float, default=None, help="Test mixtures (default 5 % of --hours).")
@click.option("--valid-piano-hours", type=float, default=None, help="Valid solo piano (default 5 % of --piano-hours).")
@click.option("--test-piano-hours", type=float, default=None, help="Test solo piano (default 5 % of --piano-hours).")
@click.option("--song-seconds", type=float, default=30.0, show_default=True, help="Mean song length.")
@click.option("--seed", type=int, default=0, show_default=True, help="Master seed: same seed, same corpus.")
@click.option("--procedural-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of bass/guitar/other parts (train/valid) played by random procedural voices "
                   "[default: 0 for --corpus-version 1, 0.2 for 2].")
@click.option("--corpus-version", type=click.Choice(["1", "2"]), default="2", show_default=True,
              help="1: FluidR3 + TimGM6mb only (the first corpus); 2: every source in --sources, with timbre "
                   "augmentation. The test split is the same in both.")
@click.option("--sources", default=None,
              help="Comma-separated timbre sources (default: all of the version's). Known: fluidr3, timgm6mb, "
                   "generaluser, airfont320, opl3, sonivox, iowa-steinway, procedural-piano, freepats, hydrogen "
                   "(every kit) or hydrogen:<kit folder>, oneshot (every kit) or oneshot:sonic-pi|lmms.")
@click.option("--jobs", "-j", type=int, default=2, show_default=True, help="Worker processes.")
@click.option("--quiet", is_flag=True, help="No per-song progress lines.")
@_errors
def synth(out, hours, piano_hours, valid_hours, test_hours, valid_piano_hours, test_piano_hours, song_seconds, seed,
          procedural_fraction, corpus_version, sources, jobs, quiet) -> None:
    """Render the corpus (resumable: complete songs are skipped)."""
    from dawsep.train.data.corpus import V2_PROCEDURAL_FRACTION, CorpusConfig, CorpusError, build, verify

    version = int(corpus_version)
    if procedural_fraction is None:
        procedural_fraction = V2_PROCEDURAL_FRACTION if version >= 2 else 0.0
    cfg = CorpusConfig(hours=hours, piano_hours=piano_hours, valid_hours=valid_hours, test_hours=test_hours,
                       valid_piano_hours=valid_piano_hours, test_piano_hours=test_piano_hours,
                       song_seconds=song_seconds, seed=seed, procedural_fraction=procedural_fraction,
                       version=version, sources=tuple(s.strip() for s in sources.split(",")) if sources else ())
    rep = build(out, cfg, jobs=jobs, progress=None if quiet else (lambda m: click.echo(m, err=True)))
    click.echo(f"built {rep.built} songs ({rep.audio_seconds / 3600:.2f} h) in {rep.wall_seconds:.0f} s "
               f"= {rep.realtime_factor:.1f}x real time with {jobs} jobs; skipped {rep.skipped} complete")
    click.echo(json.dumps(verify(out), indent=1))
    if rep.failed:
        for name, err in rep.failed[:5]:
            click.echo(f"FAILED {name}:\n{err}", err=True)
        raise CorpusError(f"{len(rep.failed)} songs failed: {', '.join(n for n, _ in rep.failed[:10])}")


@data.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default="demo", show_default=True)
@click.option("--seconds", type=float, default=30.0, show_default=True)
@click.option("--seed", type=int, default=2026, show_default=True)
@_errors
def demo(out, seconds, seed) -> None:
    """Render the demo song (held-out soundfont) to OUT/demo_song.flac and OUT/demo_song.reference/."""
    from dawsep.train.data.demo import make_demo

    meta = make_demo(out, seconds=seconds, seed=seed)
    click.echo(f"demo: {meta['seconds']} s, {meta['info']['style']} at {meta['info']['bpm']} bpm, "
               f"soundfont {os.path.basename(meta['parts'][0]['soundfont'])} -> {out}/demo_song.flac")


@data.command(name="verify")
@click.argument("root", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA)
@_errors
def verify_cmd(root) -> None:
    """Check the held-out rules over a corpus and print its size per split."""
    from dawsep.train.data.corpus import verify

    click.echo(json.dumps(verify(root), indent=1))


@data.command()
@click.argument("song_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@_errors
def plot(song_dir, out) -> None:
    """Spectrograms of the mixture and stems, and the piano roll with pedal, as one PNG."""
    from dawsep.train.data.plots import plot_song

    plot_song(song_dir, out)
    click.echo(out)


@data.command(name="cache")
@click.argument("root", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA)
@click.option("--splits", default="train,valid", show_default=True, help="Comma-separated splits to cache.")
@_errors
def cache_cmd(root, splits) -> None:
    """Decode every stem into ROOT/.cache-int16/ (int16 .npy, memory-mapped by the trainers; resumable)."""
    from dawsep.train.data.cache import build_corpus

    rep = build_corpus(root, tuple(s for s in splits.split(",") if s), progress=lambda m: click.echo(m, err=True))
    click.echo(json.dumps(rep))


@data.command(name="separate-piano")
@click.argument("root", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA)
@click.option("--splits", default="train,valid", show_default=True, help="Comma-separated splits.")
@click.option("--model", default="default", show_default=True, help="Separator (packaged name or .onnx path).")
@click.option("--threads", type=int, default=1, show_default=True, help="ONNX Runtime threads.")
@_errors
def separate_piano_cmd(root, splits, model, threads) -> None:
    """Write every mixture's piano as the separator gives it (piano_separated.flac): the
    transcriber's "separated" training condition. Resumable; redone when the separator changes."""
    from dawsep.train.data.separated import separate_corpus

    rep = separate_corpus(root, tuple(s for s in splits.split(",") if s), model, threads,
                          log=lambda m: click.echo(m, err=True))
    click.echo(json.dumps(rep))


@click.group()
def separator() -> None:
    """Train separators (TFC-TDF U-Net, LaSAFT-GPoCM conditioned U-Net, Jansson U-Net, Open-Unmix, Conv-TasNet,
    Demucs) and export them to ONNX."""


@separator.command(name="train")
@click.option("--arch", type=click.Choice(["tfctdf", "lasaft", "unet", "umx", "convtasnet", "demucs"]), default="tfctdf",
              show_default=True, help="TFC-TDF U-Net, LaSAFT-GPoCM conditioned U-Net (one network, the stem as "
                                      "input), Jansson U-Net, Open-Unmix, Conv-TasNet, Demucs.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA, show_default=True)
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Run folder: last.pt (resumed automatically), best.pt, log.jsonl.")
@click.option("--steps", type=int, default=20000, show_default=True, help="Total optimiser steps (LR schedule length).")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--segment-seconds", type=float, default=6.0, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--valid-every", type=int, default=500, show_default=True, help="Steps between validations (0: none).")
@click.option("--valid-songs", type=int, default=32, show_default=True)
@click.option("--valid-seconds", type=float, default=15.0, show_default=True)
@click.option("--ckpt-minutes", type=float, default=5.0, show_default=True)
@click.option("--kinds", default="gen,m21", show_default=True, help="Training song kinds (gen, m21, piano).")
@click.option("--model", "model_json", default="{}", help='Architecture overrides as JSON, e.g. \'{"layers": 3}\'.')
@click.option("--loss", type=click.Choice(["l1", "mse_mag", "mse_mag_spec"]), default="l1", show_default=True,
              help="l1: waveform + complex spectrogram L1; mse_mag: magnitude-spectrogram MSE of the output; "
                   "mse_mag_spec: the same on the masked mixture magnitudes, no iSTFT (Open-Unmix; softmax or sigmoid masks).")
@click.option("--spec-weight", type=float, default=1.0, show_default=True,
              help="Weight of the spectrogram term of the l1 loss (0: waveform L1 only).")
@click.option("--ema-decay", "ema_decay", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, help="Validate, keep (best.pt) and ship a moving average of the weights with "
                                      "this decay, e.g. 0.998 (0: the raw weights).")
@click.option("--stems-per-item", type=int, default=1, show_default=True,
              help="Conditioned models (lasaft): stems trained per item and step (0: all).")
@click.option("--workers", type=int, default=1, show_default=True, help="DataLoader worker processes.")
@click.option("--threads", type=int, default=2, show_default=True, help="torch intra-op threads.")
@click.option("--init-from", "init_from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start a new run from this model (.onnx, e.g. dawsep/models/separator-tfctdf.onnx, or a .pt "
                   "checkpoint) at step 0; an existing OUT/last.pt is resumed instead.")
@click.option("--minutes", type=float, default=None, help="Wall-clock budget: stop cleanly (last.pt saved) after it.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Read stems from the int16 cache under DATA/.cache-int16 (built on first use), else decode FLAC.")
@_errors
def separator_train(arch, data, out, steps, batch_size, segment_seconds, lr, seed, valid_every, valid_songs,
                    valid_seconds, ckpt_minutes, kinds, model_json, loss, spec_weight, ema_decay, stems_per_item, workers, threads,
                    init_from, minutes, cache) -> None:
    """Train (or resume from OUT/last.pt) a separator on the corpus."""
    # The 2 cores are shared: spinning OpenMP workers stall 3-4x when another process holds a
    # core (measured); passive waiting must be set before torch loads its OpenMP runtime.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from dawsep.train.train_separator import TrainConfig, train

    cfg = TrainConfig(data=data, out=out, arch=arch, model=json.loads(model_json), steps=steps,
                      batch_size=batch_size, segment_seconds=segment_seconds, lr=lr, seed=seed,
                      kinds=tuple(k for k in kinds.split(",") if k), valid_every=valid_every,
                      valid_songs=valid_songs, valid_seconds=valid_seconds, ckpt_minutes=ckpt_minutes,
                      loss=loss, spec_weight=spec_weight, ema_decay=ema_decay, stems_per_item=stems_per_item, workers=workers, threads=threads,
                      init_from=init_from,
                      cache=cache)
    cfg = resumed_options(cfg, skip=("data", "out", "init_from", "arch", "model_json"),
                          log=lambda m: click.echo(m, err=True))
    res = train(cfg, log=lambda m: click.echo(m, err=True), minutes=minutes)
    click.echo(json.dumps(res))


@separator.command(name="export")
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False), required=True, help="best.pt or last.pt")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="model.onnx to write.")
@click.option("--segment-seconds", type=float, default=10.0, show_default=True,
              help="Recommended chunk length stamped as dawsep.segment_samples.")
@click.option("--no-bench", is_flag=True, help="Skip the real-time-factor measurement.")
@_errors
def separator_export(ckpt, out, segment_seconds, no_bench) -> None:
    """Export a checkpoint to ONNX (opset 17), check parity with torch, stamp metadata."""
    export_checkpoint = export_module("separator").export_checkpoint
    click.echo(json.dumps(export_checkpoint(ckpt, out, segment_seconds=segment_seconds, bench=not no_bench)))


@separator.command(name="ship")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Training run folder (best.pt, last.pt, log.jsonl).")
@click.option("--name", required=True, help="Registry name, e.g. default.")
@click.option("--file", "file_name", required=True, help="File name inside dawsep/models/.")
@click.option("--description", default="", help="One line for `dawsep models list`.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA, show_default=True)
@click.option("--test-songs", type=int, default=None, help="Evaluate on this many test songs (default: all).")
@click.option("--train-command", default="", help="The training command(s), recorded in the provenance JSON.")
@click.option("--full-band/--no-full-band", default=True, show_default=True,
              help="Keep the bins above the model's cut-off (the top bin's masks extended).")
@_errors
def separator_ship(run_dir, name, file_name, description, data, test_songs, train_command, full_band) -> None:
    """Export best.pt into dawsep/models/ with test-split SDR, provenance JSON and registry entry."""
    import shlex
    import sys

    from dawsep import runtime

    ship = export_module("separator").ship
    res = ship(run_dir, str(runtime.MODELS_DIR), name, file_name, data, " ".join(map(shlex.quote, sys.argv)),
               description=description, test_songs=test_songs, train_command=train_command,
               full_band=full_band)
    click.echo(json.dumps(res, indent=1))


def session_command(kind: str):
    """``dawsep-train <kind> session``: one time-boxed session of the shipped model (dawsep.train.session)."""
    from dawsep.train.session import DEFAULT_RUNS

    @click.command(name="session")
    @click.option("--name", default="default", show_default=True, help=f"Registry name of the {kind} to train on.")
    @click.option("--data", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA, show_default=True)
    @click.option("--runs", type=click.Path(file_okay=False), default=DEFAULT_RUNS, show_default=True,
                  help="Run folders live in RUNS/<model file stem>.")
    @click.option("--minutes", type=float, required=True,
                  help="Budget for caching + training; shipping the best checkpoint follows.")
    @click.option("--ship/--no-ship", default=True, show_default=True, help="Ship best.pt when it improved.")
    @_errors
    def session(name, data, runs, minutes, ship) -> None:
        """Resume the run (or warm-start it from the shipped ONNX) with the shipped model's recipe,
        train for MINUTES, then ship the best checkpoint into dawsep/models/ if it improved."""
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `train` (shared cores)
        from dawsep.train.session import run

        click.echo(json.dumps(run(kind, name=name, data=data, runs=runs, minutes=minutes, ship=ship,
                                  log=lambda m: click.echo(m, err=True))))

    return session


def reexport_command(kind: str):
    """``dawsep-train <kind> reexport``: rebuild a shipped model's ONNX from its own weights."""

    @click.command(name="reexport")
    @click.option("--name", default="default", show_default=True, help=f"Registry name of the {kind}.")
    @click.option("--why", default="", help="Why the graph changed, recorded in the provenance JSON.")
    @click.option("--threads", type=int, default=2, show_default=True, help="ONNX Runtime threads for the checks.")
    @_errors
    def reexport(name, why, threads) -> None:
        """Export the shipped model again from its own weights with the current exporter (a faster
        graph, same function): the new file must match the old on the demo song within 1e-4, then
        the file, its registry hash and provenance JSON are replaced."""
        import shlex
        import sys

        from dawsep.train.export.reexport import reexport as run

        click.echo(json.dumps(run(kind, name, threads=threads, why=why,
                                  command=" ".join(map(shlex.quote, sys.argv))), indent=1))

    return reexport


separator.add_command(session_command("separator"))
separator.add_command(reexport_command("separator"))
main.add_command(separator)

from dawsep.train.cli_transcriber import transcriber  # noqa: E402  (defined in its own module)

transcriber.add_command(session_command("transcriber"))
transcriber.add_command(reexport_command("transcriber"))
main.add_command(transcriber)


if __name__ == "__main__":  # pragma: no cover
    main()
