"""Training loop for the masking separators (``dawsep-train separator train``).

- AdamW, linear warm-up then cosine decay to 10 % (a pure function of the step: nothing to
  restore on resume), gradient clipping.
- Loss (:mod:`dawsep.train.separation_losses`): L1 on the waveform + L1 on the complex
  spectrogram (normalised STFT, so both terms have the waveform's scale), or the magnitude MSE,
  over every stem.
- Conditioned models (``lasaft``, :mod:`dawsep.train.lasaft`): each item trains on
  ``stems_per_item`` stems drawn at random per step (default 1: the cost of a step is one pass
  of the network, as for the multi-head models), with ``conditioned_loss``, an unbiased
  estimate of the same all-stem loss. Validation separates every stem.
- Data: :class:`SeparationDataset` on the ``train`` split (Demucs-style remix, gains, swaps, flips).
  Its items are pure functions of ``(seed, index)`` and the sampler starts at ``step * batch``, so
  a resumed run sees exactly the batches an uninterrupted one would.
- Checkpoints: ``OUT/last.pt`` every few minutes, at each validation and on SIGTERM/SIGINT,
  written to a temp file then ``os.replace``d (a crash never leaves a torn file); a run resumes
  from it automatically. ``OUT/best.pt`` keeps the weights with the best mean validation SDR
  (with ``ema_decay``: the moving average of the weights, which is then what validation scores;
  ``last.pt`` carries the average so a resumed run continues it).
  Everything loads with ``torch.load(..., weights_only=True)``.
- Validation every ``valid_every`` steps on a fixed subset of the ``valid`` split (never ``test``):
  SDR per stem, museval-style (1 s chunks, median over chunks, median over songs), in numpy.
  The first validation also logs the mixture-as-estimate floor, the ``mix / 5`` starting point
  and the IRM oracle on the same audio.
- Warm start (``init_from``): a new run (no ``OUT/last.pt``) can start from the weights of a
  shipped ONNX model or a ``.pt`` checkpoint (:mod:`dawsep.train.init_from`) at step 0, with a
  fresh optimiser and the warm-up; folded BatchNorms are calibrated on the first training
  batches, and the starting weights are validated at step 0 (so ``best.pt`` never falls below
  them). An existing ``last.pt`` wins: the run resumes and ``init_from`` is ignored (logged).
- ``train(..., minutes=M)`` stops cleanly (``last.pt`` saved) once ``M`` minutes have passed.
- Log: one JSON object per line in ``OUT/log.jsonl`` (``type``: ``train`` | ``valid`` |
  ``baseline`` | ``init``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dawsep.errors import DawsepError
from dawsep.metrics import sdr_stems, summarize
from dawsep.train.data.score import SAMPLE_RATE, STEMS
from dawsep.train.mask_separator import MaskSeparator
from dawsep.train.separators import ARCHS, build, n_params
from dawsep.train.evaluate import baselines
from dawsep.train.ema import WeightAverage
from dawsep.train.run_folder import StopOnSignal, append_log, load_checkpoint, save_atomic, truncate_log
from dawsep.train.separation_losses import conditioned_loss, sample_stems, separation_loss, spectral_mask_loss
from dawsep.train.stft import STFT


@dataclass
class TrainConfig:
    data: str
    out: str
    arch: str = "tfctdf"
    model: dict = field(default_factory=dict)  # constructor overrides of the architecture's defaults
    steps: int = 20000
    batch_size: int = 4
    segment_seconds: float = 6.0
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 300
    clip: float = 5.0
    # Validate, keep and ship a moving average of the weights with this decay (dawsep.train.ema;
    # 0: the raw weights, as runs before it).
    ema_decay: float = 0.0
    spec_weight: float = 1.0
    # l1: waveform + complex-STFT L1 | mse_mag: magnitude-spectrogram MSE of the output |
    # mse_mag_spec: the same on masked mixture magnitudes, no iSTFT (Open-Unmix; softmax or sigmoid masks)
    loss: str = "l1"
    # conditioned models (arch "lasaft"): stems trained per item and step, drawn without
    # replacement (a pure function of seed and step); 0 = every stem. See conditioned_loss.
    stems_per_item: int = 1
    seed: int = 0
    # Mixtures only: with the solo-piano songs (1/3 of the songs) in the pool, the model learnt the
    # prior "uncertain energy is piano" and piano SDR fell to -4 dB by step 500 (measured).
    kinds: tuple[str, ...] = ("gen", "m21")
    valid_every: int = 500
    valid_songs: int = 32
    valid_seconds: float = 15.0
    log_every: int = 25
    ckpt_minutes: float = 5.0
    workers: int = 1
    threads: int = 2
    init_from: str | None = None  # .onnx or .pt to start a new run from (ignored when OUT/last.pt exists)
    cache: bool = True            # read stems from the int16 cache (dawsep.train.data.cache), else decode FLAC
    calibrate_batches: int = 4    # training batches that set the folded BatchNorms' statistics (init_from .onnx)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["kinds"] = list(self.kinds)
        return d


class ValidSubset:
    """A fixed, evenly spaced subset of the ``valid`` split's mixtures (kinds gen and m21, whose
    stems are all present): ``(name, stems [5, 2, T])`` per song, read on demand (no RAM kept)."""

    def __init__(self, root: str, n_songs: int, seconds: float, cache: bool = True):
        from dawsep.train.data.dataset import load_songs

        songs = load_songs(root, "valid", ("gen", "m21"))  # the only split validation ever reads
        if not songs:
            raise FileNotFoundError(f"no valid songs under {root}")
        idx = np.unique(np.linspace(0, len(songs) - 1, min(n_songs, len(songs))).round().astype(int))
        self.songs = [songs[i] for i in idx]
        self.frames = int(round(seconds * SAMPLE_RATE))
        self.cache = cache

    def __len__(self) -> int:
        return len(self.songs)

    def __iter__(self):
        from dawsep.train.data.dataset import read_excerpt

        for s in self.songs:
            n = min(self.frames, s.samples)
            yield s.meta["name"], np.stack([read_excerpt(s, k, 0, n, self.cache) for k in STEMS])


@torch.no_grad()
def validate(model: MaskSeparator, valid, device, baseline: bool = False) -> dict:
    """SDR summary of ``model`` on ``valid`` (iterable of ``(name, stems [S, 2, T])``); with
    ``baseline`` also the mixture-as-estimate floor and the IRM oracle on the same songs."""
    was_training = model.training
    model.eval()
    rows = []
    for _, stems in valid:
        est = model(torch.from_numpy(stems.sum(0))[None].to(device))[0].cpu().numpy()
        rows.append(sdr_stems(stems, est))
    model.train(was_training)
    out = {"model": summarize(rows), "songs": len(rows)}
    if baseline:
        # "uniform" (mix / S) is where a mask model starts: beating it is the first real sign of learning.
        out.update(baselines(valid, model.n_fft, model.hop, model.n_bins))
    return out


# ------------------------------------------------------------------ checkpoints
def model_from_checkpoint(path: str) -> tuple[MaskSeparator, dict]:
    ck = load_checkpoint(path)
    model = build(ck["model_config"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def make_model(arch: str, overrides: dict | None = None) -> MaskSeparator:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {sorted(ARCHS)}")
    return ARCHS[arch](**{k: (tuple(v) if isinstance(v, list) else v) for k, v in (overrides or {}).items()})


class _Range(torch.utils.data.Sampler):
    """Indices ``start .. stop-1`` in order: the resumable sampler (items are random already)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


# ------------------------------------------------------------------ the loop
def train(cfg: TrainConfig, train_set: Dataset | None = None, valid=None, log=print, until: int | None = None,
          minutes: float | None = None) -> dict:
    """Train (or resume) into ``cfg.out``; returns the final state summary.

    ``train_set`` / ``valid`` replace the corpus datasets (tests); ``train_set`` items must be
    ``{"mix": (2, T), "stems": (S, 2, T)}`` indexed by any integer. ``until`` stops (with a
    checkpoint) at that step without changing the schedule, which ``cfg.steps`` defines;
    ``minutes`` does the same once that much wall time has passed (counted from the call).
    """
    t_start = time.time()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(cfg.out, exist_ok=True)
    last_path, best_path = os.path.join(cfg.out, "last.pt"), os.path.join(cfg.out, "best.pt")
    log_path = os.path.join(cfg.out, "log.jsonl")

    ck = load_checkpoint(last_path) if os.path.exists(last_path) else None
    if ck and ck["model_config"]["arch"] != cfg.arch:
        raise DawsepError(f"{last_path} holds a {ck['model_config']['arch']!r} model, not {cfg.arch!r}: "
                          "use another --out or the matching --arch")
    loaded, init = None, None
    if ck:
        model = build(ck["model_config"])
    elif cfg.init_from:
        from dawsep.train import init_from

        model, loaded = init_from.separator(cfg.init_from, cfg.arch, cfg.model)
        init = init_from.file_info(cfg.init_from)
    else:
        model = make_model(cfg.arch, cfg.model)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best, baseline = 0, None, None
    if ck:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best, baseline = int(ck["step"]), ck.get("best"), ck.get("baseline")
        torch.set_rng_state(ck["rng"]["torch"])
        truncate_log(log_path, step)  # lines after the checkpoint are redone, not duplicated
        init = ck.get("init_from")
        log(f"resumed from {last_path} at step {step}"
            + (f" (--init-from {cfg.init_from} ignored: the run's own checkpoint wins)" if cfg.init_from else ""))
    ema = None
    if cfg.ema_decay:
        ema = WeightAverage(model, cfg.ema_decay)  # init_from: made again below once BatchNorms are calibrated
        if ck and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        elif ck:
            log(f"weight average (decay {cfg.ema_decay}) started at step {step} from the resumed weights")
    corpus = _corpus_info(cfg.data)

    segment = model.efficient_length(int(round(cfg.segment_seconds * SAMPLE_RATE)))
    if train_set is None:
        from dawsep.train.data.dataset import SeparationDataset

        train_set = SeparationDataset(cfg.data, "train", segment_seconds=segment / SAMPLE_RATE,
                                      length=cfg.steps * cfg.batch_size, seed=cfg.seed, kinds=tuple(cfg.kinds),
                                      cache=cfg.cache)
    if valid is None and cfg.valid_every > 0:
        valid = ValidSubset(cfg.data, cfg.valid_songs, cfg.valid_seconds, cfg.cache)
    if loaded is not None:
        _log_init(cfg, model, loaded, init, train_set, device, log_path, log)
        if ema is not None:
            ema = WeightAverage(model, cfg.ema_decay)
    stop_at = min(cfg.steps, until) if until is not None else cfg.steps
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=_Range(step * cfg.batch_size,
                                                                             stop_at * cfg.batch_size),
                        num_workers=cfg.workers, drop_last=True, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if cfg.workers else None)
    loss_stft = STFT(model.n_fft, model.hop, model.n_bins, normalized=True).to(device)
    conditioned = getattr(model, "conditioned", False)
    per_item = (f"; {cfg.stems_per_item if 0 < cfg.stems_per_item < model.n_stems else model.n_stems} "
                "stem(s) per item and step") if conditioned else ""
    log(f"{model.arch}: {n_params(model):,} parameters; segment {segment} samples; "
        f"steps {step}..{cfg.steps}; device {device}{per_item}")

    def snapshot() -> dict:
        return {"model": model.state_dict(), "model_config": model.config(), "optimizer": opt.state_dict(),
                "step": step, "rng": {"torch": torch.get_rng_state()}, "train_config": cfg.to_dict(),
                "best": best, "baseline": baseline, "corpus": corpus, "init_from": init,
                "ema": ema.state_dict() if ema is not None else None}

    def run_validation() -> None:
        nonlocal best, baseline
        t0 = time.time()
        with ema.applied(model) if ema is not None else contextlib.nullcontext():
            res = validate(model, valid, device, baseline=baseline is None)
        weights = ema.state_dict() if ema is not None else model.state_dict()  # the weights just scored
        if baseline is None:
            baseline = {k: res[k] for k in ("mixture", "uniform", "irm", "songs")}
            append_log(log_path, {"type": "baseline", "step": step, **baseline, "time": time.time()})
        rec = {"type": "valid", "step": step, **res["model"], "songs": res["songs"],
               "seconds": time.time() - t0, "time": time.time()}
        if best is None or rec["mean"] > best["mean"]:
            best = {"step": step, "mean": rec["mean"], "sdr": rec["sdr"]}
            save_atomic({"model": weights, "model_config": model.config(), "step": step,
                         "best": best, "baseline": baseline, "train_config": cfg.to_dict(),
                         "corpus": corpus, "init_from": init}, best_path)
        rec["best_mean"] = best["mean"]
        append_log(log_path, rec)
        log(f"valid step {step}{' (weight average)' if ema is not None else ''}: mean SDR {rec['mean']:.2f} dB " +
            " ".join(f"{k} {v:.2f}" for k, v in rec["sdr"].items()))
        save_atomic(snapshot(), last_path)

    if loaded is not None and valid is not None:
        run_validation()  # the starting weights' score on this corpus: best.pt never falls below it

    acc, n_acc, t_log, t_ckpt, t_wait = {"loss": 0.0, "wave": 0.0, "spec": 0.0}, 0, time.time(), time.time(), 0.0
    t_fetch = time.time()
    try:
        with StopOnSignal() as stop:  # SIGTERM/SIGINT: finish the current step, save, exit cleanly
            for batch in loader:
                t_wait += time.time() - t_fetch
                mix, ref = batch["mix"].to(device), batch["stems"].to(device)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, cfg)
                if conditioned:
                    stem_ids = sample_stems(step, mix.shape[0], ref.shape[1], cfg.stems_per_item, cfg.seed).to(device)
                    loss, parts = conditioned_loss(model, mix, ref, stem_ids, loss_stft, cfg.loss, cfg.spec_weight)
                elif cfg.loss == "mse_mag_spec":
                    loss, parts = spectral_mask_loss(model, mix, ref)
                else:
                    loss, parts = separation_loss(model(mix), ref, loss_stft, cfg.spec_weight, cfg.loss)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {float(loss)} at step {step}; last good checkpoint: {last_path}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
                if ema is not None:
                    ema.update(model)
                step += 1
                acc["loss"] += float(loss.detach())
                acc["wave"] += parts["wave"]
                acc["spec"] += parts["spec"]
                n_acc += 1
                out_of_time = minutes is not None and time.time() - t_start >= minutes * 60
                if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
                    now = time.time()
                    rec = {"type": "train", "step": step, **{k: v / n_acc for k, v in acc.items()},
                           "lr": lr_at(step - 1, cfg), "steps_per_s": n_acc / (now - t_log),
                           "data_wait_s": t_wait / n_acc, "time": now}
                    append_log(log_path, rec)
                    log(f"step {step} loss {rec['loss']:.5f} ({rec['steps_per_s']:.3f} steps/s)")
                    acc, n_acc, t_log, t_wait = {k: 0.0 for k in acc}, 0, now, 0.0
                if valid is not None and cfg.valid_every > 0 and (step % cfg.valid_every == 0 or step == cfg.steps):
                    run_validation()
                    t_ckpt = time.time()
                elif time.time() - t_ckpt > cfg.ckpt_minutes * 60 or step == stop_at or stop.requested or out_of_time:
                    save_atomic(snapshot(), last_path)
                    t_ckpt = time.time()
                if stop.requested:
                    log(f"stopped by signal at step {step}; saved {last_path}")
                    break
                if out_of_time:
                    log(f"time budget of {minutes:.1f} min spent at step {step}; saved {last_path}")
                    break
                t_fetch = time.time()
    finally:
        torch.set_num_threads(threads_before)
    return {"step": step, "best": best, "baseline": baseline}


def _log_init(cfg: TrainConfig, model, loaded, init: dict, train_set, device, log_path: str, log) -> None:
    """Calibrate the folded BatchNorms on the first training batches and record the warm start."""
    from dawsep.train.onnx_weights import calibrate_folded

    n = cfg.calibrate_batches * cfg.batch_size if loaded.folded else 0
    batches = [torch.stack([train_set[i % len(train_set)]["mix"] for i in range(j, j + cfg.batch_size)]).to(device)
               for j in range(0, n, cfg.batch_size)]
    calibrate_folded(model, loaded.folded, batches)
    append_log(log_path, {"type": "init", "step": 0, "init_from": init, "folded_batchnorms": loaded.folded,
                       "unused_parameters": loaded.dead, "calibration_items": n, "time": time.time()})
    log(f"initialised from {cfg.init_from} (step 0, fresh optimiser and warm-up); "
        f"{len(loaded.folded)} folded BatchNorms calibrated on {n} items"
        + (f"; parameters no output uses, left as built: {', '.join(loaded.dead)}" if loaded.dead else ""))


def _corpus_info(root: str) -> dict:
    """What the run trained on (stamped into the exported model as ``dawsep.train_data``)."""
    info = {"root": os.path.basename(os.path.normpath(root)) if root else None}
    if not root:
        return info
    try:
        with open(os.path.join(root, "corpus.json")) as fh:
            info["corpus"] = json.load(fh).get("config")
    except (OSError, ValueError):
        pass
    return info
