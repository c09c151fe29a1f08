"""``dawsep-train transcriber``: train the piano transcriber and export it to ONNX.

Registered in ``dawsep/train/cli.py`` with ``main.add_command(transcriber)``. Thin: parse
options, call the library, map :class:`DawsepError` to its exit code.
"""
from __future__ import annotations

import json
import os

import click


from dawsep.train._cli_common import DEFAULT_DATA, errors as _errors, export_module, resumed_options


@click.group()
def transcriber() -> None:
    """Piano transcriber (onsets and frames): train, export."""


@transcriber.command()
@click.option("--data", type=click.Path(file_okay=False), default=DEFAULT_DATA, show_default=True,
              help="Corpus root (train and valid splits; test is never read).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/transcriber", show_default=True,
              help="Run folder: last.pt, best.pt, log.jsonl. An existing last.pt is resumed.")
@click.option("--steps", type=int, default=100_000, show_default=True, help="Total steps (raise it to extend a run).")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--segment-seconds", type=float, default=5.0, show_default=True, help="Training excerpt length.")
@click.option("--lr", type=float, default=6e-4, show_default=True)
@click.option("--warmup", type=int, default=300, show_default=True, help="Linear learning-rate warm-up steps.")
@click.option("--lr-half-life", "lr_half_life", type=click.IntRange(min=1), default=None,
              help="Steps for the learning rate to halve after warm-up (default: TrainConfig's). The rate is a "
                   "function of the step, so a resumed run can anneal faster.")
@click.option("--velocity-lr-scale", "velocity_lr_scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="The velocity head learns at this multiple of the rate (new runs: it sets "
                                      "the optimiser's parameter groups).")
@click.option("--ema-decay", "ema_decay", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, help="Validate, keep (best.pt) and ship an exponential moving average of the "
                                      "weights with this decay, e.g. 0.998 (0: the raw weights).")
@click.option("--train-only", "train_only", default="",
              help="Comma-separated parameter-name prefixes to train, the rest frozen (BatchNorm statistics "
                   "included), e.g. 'velocity' for the velocity head of a shipped model (default: everything).")
@click.option("--select", type=click.Choice(["note_f1_tuned", "note_f1", "loss"]), default=None,
              help="What picks best.pt (default: TrainConfig's, note_f1_tuned): mean valid note F1 at the best "
                   "onset threshold of a grid (shipping retunes it), at onset 0.5, or mean valid loss (for "
                   "--train-only velocity).")
@click.option("--conditions", default=None,
              help='JSON mix of training conditions, e.g. \'{"clean": 0.5, "mix": 0.25, "residue": 0.25}\' '
                   "(default: the dataset's).")
@click.option("--pos-weight", default=None,
              help='JSON BCE weight of positives per head, e.g. \'{"onset": 4}\' (can change on resume).')
@click.option("--valid-every", type=int, default=2000, show_default=True)
@click.option("--valid-items", type=int, default=32, show_default=True, help="Valid excerpts per condition.")
@click.option("--valid-conditions", default="clean,mix,residue", show_default=True,
              help="Comma-separated conditions scored on valid (their mean picks best.pt); add 'separated' "
                   "once `dawsep-train data separate-piano` has run on the valid split.")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--log-every", type=int, default=50, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Data-loading processes.")
@click.option("--threads", type=int, default=1, show_default=True,
              help="torch threads for the model; more than 1 on shared cores can stall GRU steps badly.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model-config", "model_config", default=None,
              help='JSON model config (new runs only): overrides of TranscriberConfig, e.g. \'{"rnn": 96}\', or '
                   '\'{"arch": "pitch"}\' (+ PitchTranscriberConfig fields) for the pitch-equivariant model.')
@click.option("--init-from", "init_from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start a new run from this model (.onnx, e.g. dawsep/models/transcriber.onnx, or a .pt "
                   "checkpoint) at step 0; an existing OUT/last.pt is resumed instead.")
@click.option("--minutes", type=float, default=None, help="Wall-clock budget: stop cleanly (last.pt saved) after it.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Read stems from the int16 cache under DATA/.cache-int16 (built on first use), else decode FLAC.")
@_errors
def train(data, out, steps, batch, segment_seconds, lr, warmup, lr_half_life, velocity_lr_scale, ema_decay, train_only, select, conditions, pos_weight, valid_every, valid_items, valid_conditions,
          checkpoint_every, log_every,
          workers, threads, device, seed, model_config, init_from, minutes, cache) -> None:
    """Train (resumable) on the rendered corpus."""
    # Shared cores: spinning OpenMP workers stall when another process holds a core; passive
    # waiting must be set before torch loads its OpenMP runtime (as the separator's command does).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from dawsep.train.train_transcriber import TrainConfig, train as run
    from dawsep.train.transcribers import config_from_dict

    cfg = TrainConfig(data=data, out=out, steps=steps, batch=batch, segment_seconds=segment_seconds, lr=lr, warmup=warmup,
                      **({"lr_half_life": lr_half_life} if lr_half_life else {}), velocity_lr_scale=velocity_lr_scale, ema_decay=ema_decay,
                      train_only=tuple(t for t in train_only.split(",") if t),
                      **({"select": select} if select else {}),
                      conditions=json.loads(conditions) if conditions else None,
                      pos_weight=json.loads(pos_weight) if pos_weight else {},
                      valid_every=valid_every, valid_items=valid_items,
                      valid_conditions=tuple(c for c in valid_conditions.split(",") if c),
                      checkpoint_every=checkpoint_every,
                      log_every=log_every, workers=workers, threads=threads, device=device, seed=seed,
                      init_from=init_from, cache=cache)
    cfg = resumed_options(cfg, skip=("data", "out", "init_from"), log=lambda m: click.echo(m, err=True))
    mc = config_from_dict(json.loads(model_config)) if model_config else None
    rec = run(cfg, mc, log=lambda m: click.echo(m, err=True), minutes=minutes)
    click.echo(json.dumps(rec))


@transcriber.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--version", "version", default=None, help="dawsep.version to stamp (default: package+step).")
@click.option("--rtf-seconds", type=float, default=30.0, show_default=True,
              help="Measure ONNX Runtime speed on this much audio (0: skip).")
@click.option("--threads", type=int, default=2, show_default=True, help="ONNX Runtime threads for the measurement.")
@_errors
def export(checkpoint, out, version, rtf_seconds, threads) -> None:
    """Export CHECKPOINT (best.pt/last.pt) to ONNX at OUT, with parity check and metadata."""
    props = export_module("transcriber").export_checkpoint(checkpoint, out, version=version, rtf_seconds=rtf_seconds or None,
                                               threads=threads)
    click.echo(json.dumps({"out": out, **{k: v for k, v in props.items() if k != "dawsep.architecture"}}, indent=1))


@transcriber.command(name="ship")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Training run folder (best.pt, last.pt, log.jsonl).")
@click.option("--name", default="default", show_default=True, help="Registry name.")
@click.option("--file", "file_name", default="transcriber.onnx", show_default=True,
              help="File name inside dawsep/models/.")
@click.option("--description", default="", help="One line for `dawsep models list`.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA, show_default=True)
@click.option("--test-songs", type=int, default=24, show_default=True, help="Test songs with piano to score.")
@click.option("--train-command", default="", help="The training command(s), recorded in the provenance JSON.")
@_errors
def ship(run_dir, name, file_name, description, data, test_songs, train_command) -> None:
    """Export best.pt into dawsep/models/ with test-split note F1, provenance JSON and registry entry."""
    import shlex
    import sys

    from dawsep import runtime

    res = export_module("transcriber").ship(run_dir, str(runtime.MODELS_DIR), name, file_name, data,
                                            " ".join(map(shlex.quote, sys.argv)), description=description,
                                            train_command=train_command, test_songs=test_songs)
    click.echo(json.dumps(res, indent=1))
