"""Training loop for :class:`~dawsep.train.transcriber.PianoTranscriber`.

- Losses as in Onsets and Frames: BCE on onset, frame, offset and pedal; velocity MSE only where
  a key is struck (masked by the onset labels, normalised by their count).
- AdamW, linear warm-up then exponential decay (a pure function of the step, so ``--steps`` can
  be raised on a resumed run without changing the past schedule), gradient-norm clipping.
- Deterministic: the model is seeded once, dropout is reseeded every step from ``(seed, step)``,
  and every data item is a pure function of ``(seed, epoch, index)``; batch ``b`` of epoch ``e`` is
  items ``[b*B, (b+1)*B)``. So a run resumed from ``last.pt`` continues exactly as if never stopped.
- ``OUT/last.pt`` (model + optimiser + step, and the weight average when ``ema_decay`` is set) and
  ``OUT/best.pt`` (model, best mean valid note F1: the averaged weights when ``ema_decay`` is set,
  which are then what validation scores), written atomically; loaded with ``weights_only=True``;
  ``OUT/log.jsonl`` one JSON object a line.
- Validation on a fixed subset of the ``valid`` split (evenly spaced tiles, the same each time), per
  condition (clean / mix / residue): frame F1 and note F1 (onset within 50 ms, offsets ignored)
  from the small peak-picking decoder below, numpy only. The ``test`` split is never opened here.
- Warm start (``init_from``): a new run (no ``OUT/last.pt``) can start from a shipped ONNX model
  or a ``.pt`` checkpoint (:mod:`dawsep.train.init_from`) at step 0 with a fresh optimiser and the
  warm-up; folded BatchNorms are calibrated on the first training batches and the starting
  weights are validated at step 0, so ``best.pt`` never falls below them. An existing
  ``last.pt`` wins (the run resumes; logged). ``train(..., minutes=M)`` stops cleanly, with
  ``last.pt`` saved, once ``M`` minutes have passed.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dawsep.errors import DawsepError
from dawsep.metrics import match_times
from dawsep.train.ema import WeightAverage
from dawsep.train.run_folder import StopOnSignal, load_checkpoint, save_atomic, truncate_log
from dawsep.train.transcriber import OUTPUTS, PianoTranscriber, TranscriberConfig
from dawsep.train.transcribers import build as build_model, config_from_dict

DEFAULT_DATA = os.path.join(os.path.expanduser("~"), ".cache", "dawsep", "data")


#: the seed of the validation items: the mix and residue conditions draw their accompaniment and
#: its level from it, so it must not be the run's --seed (until session 10 it was: runs with
#: different seeds scored the same weights 0.609 and 0.618, mix 0.458 and 0.503).
VALID_SEED = 0


class TrainError(DawsepError):
    """Training cannot start or continue (missing data, incompatible checkpoint)."""

    exit_code = 2


@dataclass
class TrainConfig:
    data: str = DEFAULT_DATA
    out: str = "runs/transcriber"
    steps: int = 100_000
    batch: int = 8
    segment_seconds: float = 5.0
    conditions: dict | None = None          # None: the dataset's train mix (clean .4, mix .3, residue .3)
    lr: float = 6e-4
    weight_decay: float = 1e-2
    warmup: int = 300
    lr_half_life: int = 50_000              # steps for the learning rate to halve after warm-up
    # The velocity head's parameters (``velocity*``; a linear read of detached features) learn at
    # this multiple of the rate: at an annealed 1e-4 a zero-initialised head moved its weights by
    # ~0.02 in 250 steps, far from useful. 1: one parameter group, as in runs before it existed.
    velocity_lr_scale: float = 1.0
    clip: float = 3.0
    # Validate, keep and ship an exponential moving average of the weights (dawsep.train.ema) with
    # this decay (0: the raw weights, as runs before it): neighbouring checkpoints' valid note F1
    # differed by up to +-0.02, so picking the best raw checkpoint mostly picked noise.
    ema_decay: float = 0.0
    # Train only the parameters whose names start with one of these (e.g. ("velocity",): the
    # velocity head of a shipped model, its notes untouched); the rest is frozen, BatchNorm
    # statistics and dropout included (the model runs in eval mode). (): everything.
    train_only: tuple = ()
    # What picks best.pt (one of SELECT): "note_f1_tuned" (mean valid note F1 at the best onset
    # threshold of ONSET_GRID: shipping retunes the threshold), "note_f1" (at onset 0.5, the
    # choice until session 11) or "loss" (mean valid loss, lower is better: what moves when only
    # the velocity head trains).
    select: str = "note_f1_tuned"
    epoch_steps: int = 1000                 # augmented data has no natural epoch: this many batches
    log_every: int = 50
    checkpoint_every: int = 500
    valid_every: int = 2000
    valid_items: int = 32                   # per condition
    valid_seconds: float = 10.0
    valid_conditions: tuple = ("clean", "mix", "residue")
    workers: int = 1                        # data processes; one keeps up with a 1-thread model step
    # torch intra-op threads. 1, because with 2 on 2 shared cores every GRU time step waits at an
    # OpenMP barrier for a descheduled thread: measured >25 s per step instead of ~1 s while the
    # separator trained. Use 2 only on an idle machine (or with OMP_WAIT_POLICY=PASSIVE).
    threads: int | None = 1
    device: str = "auto"                    # auto | cpu | cuda
    seed: int = 0
    loss_weights: dict = field(default_factory=dict)  # e.g. {"onset": 2.0}; missing keys weigh 1
    # BCE weight of the positive class per head (e.g. {"frame": 2.0}): active keys are a few
    # percent of all (frame, key) cells, and without it the heads sit at the per-key prior for
    # thousands of steps before they start to discriminate.
    pos_weight: dict = field(default_factory=dict)
    init_from: str | None = None            # .onnx or .pt to start a new run from (ignored when OUT/last.pt exists)
    cache: bool = True                      # read stems from the int16 cache (dawsep.train.data.cache)
    calibrate_batches: int = 4              # training batches that set folded BatchNorms' statistics (init_from .onnx)


# ------------------------------------------------------------------ losses ----

def losses(logits: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
           weights: dict | None = None, pos_weight: dict | None = None) -> dict[str, torch.Tensor]:
    """Per-head losses and their weighted sum ``total``; logits/labels ``(B, F, 88)``, pedal ``(B, F, 1)``."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    pw = pos_weight or {}
    out = {k: bce(logits[k], batch[k],
                  pos_weight=torch.tensor(float(pw[k]), device=logits[k].device) if k in pw else None)
           for k in ("onset", "frame", "offset", "pedal")}
    mask = batch["onset"]
    err = (torch.sigmoid(logits["velocity"]) - batch["velocity"]) ** 2
    out["velocity"] = (err * mask).sum() / mask.sum().clamp_min(1.0)
    w = weights or {}
    out["total"] = sum(w.get(k, 1.0) * out[k] for k in OUTPUTS)
    return out


def param_groups(model: torch.nn.Module, velocity_lr_scale: float, train_only: tuple = ()) -> list[dict]:
    """AdamW's groups: everything, or (``velocity_lr_scale`` != 1) the rest and the velocity head's
    parameters, the latter with ``lr_scale`` (the schedule's rate times it). ``train_only``: only
    parameters whose names start with one of these prefixes (the others get ``requires_grad``
    off); groups left empty are dropped."""
    if train_only:
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(tuple(train_only)))
        if not any(p.requires_grad for p in model.parameters()):
            raise TrainError(f"no parameter name starts with {', '.join(train_only)}")
    live = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if velocity_lr_scale == 1.0:
        return [{"params": [p for _, p in live]}]
    vel = [p for n, p in live if n.startswith("velocity")]
    ids = {id(p) for p in vel}
    groups = [{"params": [p for _, p in live if id(p) not in ids]},
              {"params": vel, "lr_scale": float(velocity_lr_scale)}]
    return [g for g in groups if g["params"]]


def lr_at(cfg: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    return cfg.lr * warm * 0.5 ** (max(0, step - cfg.warmup) / cfg.lr_half_life)


# -------------------------------------------- validation decoder and scores ----

def decode_notes(onset: np.ndarray, frame: np.ndarray, velocity: np.ndarray | None = None,
                 onset_threshold: float = 0.5, frame_threshold: float = 0.3) -> np.ndarray:
    """Notes ``(N, 4)`` = onset frame, end frame (exclusive), key, velocity 0-1, from ``(F, 88)`` posteriors,
    by the runtime decoder (:func:`dawsep.transcribe.decode`), so validation scores what ships.
    Pedal and offsets are left out here, and no minimum length, to see the raw onset quality."""
    from dawsep.transcribe import DecodeOptions, decode

    post = {"onset": onset, "frame": frame}
    if velocity is not None:
        post["velocity"] = velocity
    opts = DecodeOptions(onset_threshold=onset_threshold, frame_threshold=frame_threshold, min_note_ms=0, pedal=False)
    notes, _ = decode(post, 1.0, opts, min_pitch=0)  # hop 1 "second": times are frame indices (+0.5)
    return np.array([(n.start_s - 0.5, n.end_s, n.pitch, n.velocity / 127.0) for n in notes],
                    np.float64).reshape(-1, 4)


def note_counts(onset_label: np.ndarray, est: np.ndarray, hop_s: float, tol_s: float = 0.05) -> tuple[int, int, int]:
    """(matched, n_ref, n_est): reference onsets from the ``(F, 88)`` onset labels, estimates from
    :func:`decode_notes`; both placed at frame centres, so this is mir_eval's onset-only note
    matching up to the frame grid (each side quantised to ``hop_s``)."""
    rf, rk = np.nonzero(onset_label >= 0.5)
    matched = 0
    for k in np.union1d(rk, est[:, 2]).astype(int):
        r = np.sort(rf[rk == k]) * hop_s
        e = np.sort(est[est[:, 2] == k, 0]) * hop_s
        matched += match_times(r, e, tol_s + 1e-9)
    return matched, len(rf), len(est)


def f1(tp: float, n_ref: float, n_est: float) -> tuple[float, float, float]:
    p = float(tp / n_est) if n_est else float(n_ref == 0)
    r = float(tp / n_ref) if n_ref else float(n_est == 0)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


#: onset thresholds at which validation scores note F1 (``note_f1_tuned``: the best of them, one
#: threshold for every condition, as users get one default): a checkpoint is picked for its notes
#: once the threshold is retuned for it (as shipping does), not for where its posteriors sit.
ONSET_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

#: what can pick best.pt (``TrainConfig.select``); higher is better except for "loss"
SELECT = ("note_f1_tuned", "note_f1", "loss")


def evaluate(model: PianoTranscriber, sets: dict[str, Dataset], indices: list[int], batch: int,
             device: torch.device, workers: int = 0, weights: dict | None = None,
             user_onset: float | None = None) -> dict:
    """Per-condition valid loss, frame F1, note F1 peak-picked at onset 0.5 (``note_f1``), at the
    onset threshold users decode with (``note_f1_user``: a model whose onset posteriors drift can
    gain at 0.5 and lose at the default) and at each of ``ONSET_GRID``; top level: their means over
    the conditions that have notes, and ``note_f1_tuned`` at ``tuned_onset_threshold``, the grid
    threshold with the best mean. Every condition also gets ``false_per_min``: estimated notes a
    minute at the users' threshold that match no reference note (all of them on "absent", where
    there is no piano; not part of the means). ``user_onset``: default
    ``DecodeOptions().onset_threshold``."""
    from dawsep.defaults import DecodeOptions

    user_onset = DecodeOptions().onset_threshold if user_onset is None else user_onset
    grid = tuple(sorted(set(ONSET_GRID) | {0.5, user_onset}))
    hop_s = model.cfg.hop / model.cfg.sample_rate
    was = model.training
    model.eval()
    out: dict = {}
    per_grid: dict[str, list] = {}
    try:
        for cond, ds in sets.items():
            sub = torch.utils.data.Subset(ds, indices)
            loader = DataLoader(sub, batch_size=batch, num_workers=workers, worker_init_fn=_worker_init)
            c = np.zeros(3)  # frame tp, n_ref, n_est
            g = np.zeros((len(grid), 3))  # note tp, n_ref, n_est per onset threshold of grid
            loss, n, seconds = 0.0, 0, 0.0
            for b in loader:
                b = {k: v.to(device) for k, v in b.items() if torch.is_tensor(v)}
                with torch.no_grad():
                    lg = model.logits(b["audio"])
                loss += float(losses(lg, b, weights)["total"]) * len(b["audio"])
                n += len(b["audio"])
                seconds += b["audio"].shape[0] * b["audio"].shape[-1] / model.cfg.sample_rate
                pr = {k: torch.sigmoid(lg[k]).cpu().numpy() for k in ("onset", "frame")}
                lab = {k: b[k].cpu().numpy() for k in ("onset", "frame")}
                for i in range(len(pr["onset"])):
                    for j, th in enumerate(grid):
                        g[j] += note_counts(lab["onset"][i], decode_notes(pr["onset"][i], pr["frame"][i],
                                                                          onset_threshold=th), hop_s)
                    fe, fr = pr["frame"][i] >= 0.5, lab["frame"][i] >= 0.5
                    c += ((fe & fr).sum(), fr.sum(), fe.sum())
            half, u = g[grid.index(0.5)], g[grid.index(user_onset)]
            np_, nr, nf = f1(*half)
            out[cond] = {"loss": loss / max(1, n), "note_p": np_, "note_r": nr, "note_f1": nf,
                         "frame_f1": f1(*c)[2], "note_f1_user": f1(*u)[2], "notes": int(half[1]),
                         "false_per_min": float((u[2] - u[0]) / max(seconds, 1e-9) * 60)}
            per_grid[cond] = [f1(*x)[2] for x in g]
    finally:
        model.train(was)
    scored = [c for c in sets if out[c]["notes"] > 0] or list(sets)
    for k in ("note_f1", "loss", "frame_f1", "note_f1_user"):
        out[k] = float(np.mean([out[c][k] for c in scored]))
    means = np.mean([per_grid[c] for c in scored], axis=0)
    j = int(np.argmax(means))
    out["note_f1_tuned"], out["tuned_onset_threshold"] = float(means[j]), grid[j]
    out["user_onset_threshold"] = user_onset
    return out


# ------------------------------------------------------------- checkpoints ----

# ------------------------------------------------------------------- data ----

def _worker_init(_):
    torch.set_num_threads(1)  # workers run numpy/pedalboard/small STFTs; don't oversubscribe


def _default_sets(cfg: TrainConfig, mc: TranscriberConfig) -> tuple[Dataset, dict[str, Dataset]]:
    from dawsep.train.data.dataset import TranscriptionDataset

    common = {"hop_samples": mc.hop, "sample_rate": mc.sample_rate, "cache": cfg.cache}
    try:
        train_set = TranscriptionDataset(cfg.data, "train", cfg.segment_seconds, length=cfg.epoch_steps * cfg.batch,
                                         conditions=cfg.conditions, seed=cfg.seed, **common)
        valid = {c: TranscriptionDataset(cfg.data, "valid", cfg.valid_seconds, augment=False, conditions={c: 1.0},
                                         seed=VALID_SEED, **common) for c in cfg.valid_conditions}
    except FileNotFoundError as e:
        raise TrainError(f"{e} (build the corpus first: dawsep-train data synth --out {cfg.data})") from None
    return train_set, valid


def valid_indices(n_tiles: int, n: int) -> list[int]:
    """``n`` evenly spaced tiles: spread over songs, identical at every validation."""
    return sorted({int(i) for i in np.linspace(0, n_tiles - 1, min(n, n_tiles))})


def _loader(ds: Dataset, epoch: int, first_batch: int, cfg: TrainConfig, pin: bool) -> DataLoader:
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)  # before the workers fork, so they see it
    batches = [list(range(b * cfg.batch, (b + 1) * cfg.batch)) for b in range(first_batch, len(ds) // cfg.batch)]
    return DataLoader(ds, batch_sampler=batches, num_workers=cfg.workers, pin_memory=pin,
                      worker_init_fn=_worker_init if cfg.workers else None)


# ------------------------------------------------------------------- train ----

def train(cfg: TrainConfig, model_config: TranscriberConfig | None = None, train_set: Dataset | None = None,
          valid_sets: dict[str, Dataset] | None = None, log=print, minutes: float | None = None) -> dict:
    """Train (or resume from ``OUT/last.pt``) until ``cfg.steps`` (or until ``minutes`` of wall time
    have passed, checkpoint saved); returns the last log record.

    Sets ``torch.set_flush_denormal(True)`` for the process (see below).

    ``train_set``/``valid_sets`` default to ``TranscriptionDataset`` over ``cfg.data``; tests pass
    small synthetic ones. Items are dicts with ``audio (T,)`` and the five label tensors.
    """
    t_start = time.time()
    os.makedirs(cfg.out, exist_ok=True)
    # Denormal floats appear in the activations/gradients within a few steps and made CPU steps
    # ~100x slower (measured 0.5 s -> 50 s per step); flushing them to zero costs nothing.
    # Process-wide, like the thread count below.
    torch.set_flush_denormal(True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if cfg.device == "auto" else cfg.device))
    last_path, best_path, log_path = (os.path.join(cfg.out, n) for n in ("last.pt", "best.pt", "log.jsonl"))
    state = load_checkpoint(last_path) if os.path.exists(last_path) else None
    if state is not None:
        saved = config_from_dict(state["model_config"])
        if model_config is not None and model_config != saved:
            raise TrainError(f"{last_path} was trained with {saved}, not {model_config}: use another --out")
        model_config = saved

    torch.manual_seed(cfg.seed)
    loaded, init = None, None
    if state is None and cfg.init_from:
        from dawsep.train import init_from

        model, loaded = init_from.transcriber(cfg.init_from, model_config)
        model_config, init = model.cfg, init_from.file_info(cfg.init_from)
    else:
        model_config = model_config or TranscriberConfig()
        model = build_model(model_config)
    model = model.to(dev)
    if cfg.select not in SELECT:
        raise TrainError(f"select must be one of {', '.join(SELECT)}, not {cfg.select!r}")
    opt = torch.optim.AdamW(param_groups(model, cfg.velocity_lr_scale, tuple(cfg.train_only)), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    step, best = 0, -math.inf
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best = int(state["step"]), float(state["best"])
        was_select = (state.get("train_config") or {}).get("select", "note_f1")
        if was_select != cfg.select:  # scores on another scale: the next validation sets best.pt
            log(f"best.pt was picked by {was_select}, now by {cfg.select}: the next validation replaces it")
            best = -math.inf
        init = state.get("init_from")
        truncate_log(log_path, step)
        log(f"resumed {last_path} at step {step}"
            + (f" (--init-from {cfg.init_from} ignored: the run's own checkpoint wins)" if cfg.init_from else ""))
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None and state is not None:
        if state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        else:  # the run was started without it: average from here on
            log(f"weight average (decay {cfg.ema_decay}) started at step {step} from the resumed weights")

    if train_set is None or valid_sets is None:
        ts, vs = _default_sets(cfg, model_config)
        train_set, valid_sets = train_set or ts, valid_sets or vs
    if cfg.conditions is None and hasattr(train_set, "conditions"):
        cfg = replace(cfg, conditions=dict(train_set.conditions))  # record what was used, not "default"
    n_tiles = min(len(ds) for ds in valid_sets.values()) if valid_sets else 0
    v_idx = valid_indices(n_tiles, cfg.valid_items)
    spe = len(train_set) // cfg.batch
    if spe < 1:
        raise TrainError(f"the training set has {len(train_set)} items, fewer than one batch of {cfg.batch}")

    def checkpoint(metrics=None):
        save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                     "model_config": model_config.to_dict(), "train_config": asdict(cfg), "metrics": metrics,
                     "init_from": init, "ema": ema.state_dict() if ema is not None else None}, last_path)

    def write(rec):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def validate_and_keep_best() -> dict:
        nonlocal best
        with ema.applied(model) if ema is not None else contextlib.nullcontext():
            metrics = evaluate(model, valid_sets, v_idx, cfg.batch, dev, cfg.workers, cfg.loss_weights)
        kept = ema.state_dict() if ema is not None else model.state_dict()  # the weights just scored
        write({"step": step, "valid": metrics, "time": time.time(), **({"ema_decay": cfg.ema_decay} if ema else {})})
        log(f"valid step {step}{' (weight average)' if ema is not None else ''}: note F1 {metrics['note_f1']:.3f} frame F1 {metrics['frame_f1']:.3f} "
            + " ".join(f"{c} {metrics[c]['note_f1']:.3f}" for c in valid_sets)
            + f"; at the users' onset threshold {metrics['user_onset_threshold']}: {metrics['note_f1_user']:.3f}"
            + f"; tuned (onset {metrics['tuned_onset_threshold']}): {metrics['note_f1_tuned']:.3f}"
            + "".join(f"; {c} {metrics[c]['false_per_min']:.1f} false notes/min" for c in valid_sets
                      if not metrics[c]["notes"]))
        score = -metrics["loss"] if cfg.select == "loss" else metrics[cfg.select]  # higher is better
        if score > best:
            best = score
            save_atomic({"model": kept, "step": step, "metrics": metrics,
                         "model_config": model_config.to_dict(), "train_config": asdict(cfg), "init_from": init},
                        best_path)
        checkpoint(metrics)
        return metrics

    if loaded is not None:
        n = cfg.calibrate_batches * cfg.batch if loaded.folded else 0
        from dawsep.train.onnx_weights import calibrate_folded

        batches = [torch.stack([train_set[i % len(train_set)]["audio"] for i in range(j, j + cfg.batch)]).to(dev)
                   for j in range(0, n, cfg.batch)]
        calibrate_folded(model, loaded.folded, batches)
        if ema is not None:
            ema = WeightAverage(model, cfg.ema_decay)  # from the calibrated starting weights
        write({"step": 0, "init_from": init, "folded_batchnorms": loaded.folded, "unused_parameters": loaded.dead,
               "grown_parameters": loaded.grown,
               "calibration_items": n, "time": time.time()})
        log(f"initialised from {cfg.init_from} (step 0, fresh optimiser and warm-up); "
            f"{len(loaded.folded)} folded BatchNorms calibrated on {n} items"
            + (f"; new parameters (a no-op at first): {', '.join(loaded.grown)}" if loaded.grown else ""))
        if v_idx:
            validate_and_keep_best()  # the starting weights' score: best.pt never falls below it

    model.train(not cfg.train_only)  # a partly frozen model keeps its BatchNorm statistics and no dropout
    record: dict = {}
    acc: dict[str, float] = {}
    t_log, n_acc, t_wait = time.perf_counter(), 0, 0.0  # t_wait: time spent waiting for data
    with StopOnSignal() as stop:  # SIGTERM/SIGINT: finish the current step, save, exit cleanly
        while step < cfg.steps:
            epoch, first = divmod(step, spe)
            t_fetch = time.perf_counter()
            for batch in _loader(train_set, epoch, first, cfg, dev.type == "cuda"):
                t_wait += time.perf_counter() - t_fetch
                torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout: a function of (seed, step)
                batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
                lr = lr_at(cfg, step)
                for g in opt.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                ls = losses(model.logits(batch["audio"]), batch, cfg.loss_weights, cfg.pos_weight)
                opt.zero_grad(set_to_none=True)
                ls["total"].backward()
                gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip))
                if not math.isfinite(gn):
                    raise TrainError(f"non-finite gradient at step {step}: lower --lr or check the data")
                opt.step()
                if ema is not None:
                    ema.update(model)
                step += 1
                for k, v in ls.items():
                    acc[k] = acc.get(k, 0.0) + float(v.detach())
                n_acc += 1
                out_of_time = minutes is not None and time.time() - t_start >= minutes * 60
                if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
                    dt = time.perf_counter() - t_log
                    record = {"step": step, "epoch": epoch, "lr": lr, "grad_norm": gn,
                              **{f"loss_{k}": v / n_acc for k, v in acc.items()},
                              "steps_per_s": n_acc / dt, "data_wait_s": t_wait / n_acc, "time": time.time()}
                    write(record)
                    log(f"step {step} loss {record['loss_total']:.4f} lr {lr:.2e} {record['steps_per_s']:.2f} steps/s")
                    acc, n_acc, t_log, t_wait = {}, 0, time.perf_counter(), 0.0
                validate = bool(v_idx) and (step % cfg.valid_every == 0 or step == cfg.steps)
                if validate:
                    validate_and_keep_best()
                    t_log = time.perf_counter()  # validation time is not training speed
                elif step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time or stop.requested:
                    checkpoint()
                if stop.requested:
                    log(f"stopped by signal at step {step}; saved {last_path}")
                    return record
                if out_of_time:
                    log(f"time budget of {minutes:.1f} min spent at step {step}; saved {last_path}")
                    return record
                if step >= cfg.steps:
                    break
                t_fetch = time.perf_counter()
    return record


__all__ = ["DEFAULT_DATA", "ONSET_GRID", "SELECT", "VALID_SEED", "TrainConfig", "TrainError", "decode_notes", "evaluate", "f1",
           "losses", "lr_at", "note_counts", "train", "valid_indices"]
