"""Piano transcriber: model contract, training loop, resume, ONNX export (tiny configs, no corpus)."""
from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


from dawsep.train.run_folder import load_checkpoint  # noqa: E402
from dawsep.train.train_transcriber import TrainConfig, decode_notes, losses, note_counts, train  # noqa: E402
from dawsep.train.transcriber import N_KEYS, OUTPUTS, PianoTranscriber, TranscriberConfig  # noqa: E402

SR, HOP = 16000, 320
TINY = TranscriberConfig(n_fft=1024, n_mels=32, conv1=4, conv2=8, d_model=32, rnn=16, rnn_aux=8, dropout=0.1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and a GRU's per-step thread barriers stall badly
    (measured 100x) when another job holds the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(seed: int = 0) -> PianoTranscriber:
    torch.manual_seed(seed)
    return PianoTranscriber(TINY)


class SineNotes(torch.utils.data.Dataset):
    """Decaying sine 'notes' with exact O&F-style labels; items depend on (seed, epoch, index)."""

    def __init__(self, n: int, seconds: float = 1.0, seed: int = 0):
        self.n, self.T, self.seed, self.epoch = n, int(seconds * SR) // HOP * HOP, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        F = self.T // HOP
        lab = {k: np.zeros((F, N_KEYS), np.float32) for k in ("onset", "frame", "offset", "velocity")}
        lab["pedal"] = np.full((F, 1), float(rng.random() < 0.5), np.float32)
        audio = np.zeros(self.T, np.float32)
        t = np.arange(self.T) / SR
        for _ in range(3):
            k, f0 = int(rng.integers(27, 52)), int(rng.integers(0, F - 12))
            f1, v = f0 + int(rng.integers(5, 12)), float(rng.uniform(0.3, 1.0))
            span = slice(f0 * HOP, f1 * HOP)
            hz = 440.0 * 2 ** ((k + 21 - 69) / 12)
            audio[span] += 0.3 * v * np.sin(2 * np.pi * hz * t[span]) * np.exp(-3 * (t[span] - t[span][0]))
            lab["onset"][f0, k], lab["velocity"][f0, k] = 1, v
            lab["frame"][f0:f1, k], lab["offset"][f1 - 1, k] = 1, 1
        return {"audio": torch.from_numpy(audio), **{k: torch.from_numpy(v) for k, v in lab.items()}}


def collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_shapes_ranges_and_frame_count():
    m = tiny_model().eval()
    for T in (HOP, 2 * HOP - 1, 16001, 4807):
        with torch.no_grad():
            out = m(torch.randn(2, T) * 0.2)
        assert len(out) == len(OUTPUTS)
        for name, o in zip(OUTPUTS, out):
            assert o.shape == (2, T // HOP, 1 if name == "pedal" else N_KEYS), (name, T)
            assert o.dtype == torch.float32 and 0 <= float(o.min()) and float(o.max()) <= 1
        assert TINY.n_frames(T) == T // HOP


def test_deterministic_and_batch_independent():
    x = torch.randn(3, 8000) * 0.2
    a, b = tiny_model(1).eval(), tiny_model(1).eval()
    with torch.no_grad():
        ya, yb, y1 = a(x), b(x), a(x[1:2])
    for p, q, r in zip(ya, yb, y1):
        assert torch.equal(p, q)
        torch.testing.assert_close(p[1:2], r, atol=1e-5, rtol=0)


def test_stft_paths_agree_default_config():
    """torch.stft (training) and the matmul DFT (ONNX) front-ends are the same transform."""
    fe = PianoTranscriber().frontend
    x = torch.randn(2, 16001) * 0.3
    a, b = fe.power(x, use_fft=True), fe.power(x, use_fft=False)
    assert a.shape == b.shape == (2, 50, fe.k1 - fe.k0)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-5
    # a 440 Hz sine peaks in the 440 Hz bin, at amplitude/2
    s = 0.5 * torch.sin(2 * torch.pi * 440 * torch.arange(16000) / SR)[None]
    p = fe.power(s)[0, 25]
    assert int(p.argmax()) + fe.k0 == round(440 * 2048 / SR) and abs(float(p.max()) ** 0.5 - 0.25) < 0.03
    # frame f is centred on sample f*hop + hop/2, as the dataset labels frames [f*hop, (f+1)*hop)
    click = torch.zeros(1, 8000)
    click[0, 10 * HOP + HOP // 2] = 1
    e = fe.power(click)[0].sum(-1)
    assert int(e.argmax()) == 10 and torch.allclose(e[9], e[11], rtol=1e-4)


def test_decoder_and_note_f1():
    F, hop_s = 100, HOP / SR
    lab = np.zeros((F, N_KEYS), np.float32)
    lab[[10, 40, 70], [5, 5, 60]] = 1
    on, fr = np.zeros_like(lab), np.zeros_like(lab)
    for t, k in [(10, 5), (40, 5), (70, 60)]:
        on[t, k], on[t + 1, k] = 0.9, 0.6  # peak then shoulder: one onset
        fr[t:t + 20, k] = 0.8
    est = decode_notes(on, fr, np.full_like(on, 0.5))
    assert est[:, :3].tolist() == [[10, 30, 5], [40, 60, 5], [70, 90, 60]]
    assert note_counts(lab, est, hop_s) == (3, 3, 3)
    shifted = est.copy()
    shifted[:, 0] += 3  # 60 ms late: outside the 50 ms tolerance
    assert note_counts(lab, shifted, hop_s)[0] == 0
    assert len(decode_notes(on, np.zeros_like(fr))) == 0  # onsets need frame confirmation


def test_training_steps_reduce_loss():
    m = tiny_model()
    batch = collate([SineNotes(4)[i] for i in range(4)])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        ls = losses(m.logits(batch["audio"]), batch)
        opt.zero_grad()
        ls["total"].backward()
        opt.step()
        first = first or {k: float(v.detach()) for k, v in ls.items()}
    assert float(ls["total"].detach()) < 0.5 * first["total"]
    assert float(ls["onset"].detach()) < first["onset"] and float(ls["frame"].detach()) < first["frame"]


def _cfg(out, steps):
    return TrainConfig(out=str(out), steps=steps, batch=2, lr=3e-3, warmup=2, log_every=1, checkpoint_every=2,
                       valid_every=3, valid_items=2, workers=0, seed=3)


def test_resume_gives_identical_continuation(tmp_path):
    data, valid = SineNotes(6, seed=1), {"clean": SineNotes(4, seed=2)}
    train(_cfg(tmp_path / "a", 7), TINY, data, valid, log=lambda m: None)
    train(_cfg(tmp_path / "b", 4), TINY, data, valid, log=lambda m: None)  # stops mid-epoch 1
    assert load_checkpoint(str(tmp_path / "b" / "last.pt"))["step"] == 4
    train(_cfg(tmp_path / "b", 7), TINY, data, valid, log=lambda m: None)
    a, b = (load_checkpoint(str(tmp_path / r / "last.pt")) for r in "ab")
    assert a["step"] == b["step"] == 7
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    lines = [json.loads(ln) for ln in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss_total" in r] == list(range(1, 8))
    assert [r["step"] for r in lines if "valid" in r] == [3, 4, 6, 7]  # every 3 steps and at each run's end
    best = load_checkpoint(str(tmp_path / "b" / "best.pt"))
    assert set(best["metrics"]["clean"]) >= {"note_f1", "frame_f1", "loss"}
    assert not [f for f in os.listdir(tmp_path / "b") if ".tmp-" in f]


def test_weight_average_follows_the_formula_and_swaps_back():
    from dawsep.train.ema import WeightAverage

    m = tiny_model()
    start = {k: v.clone() for k, v in m.state_dict().items()}
    avg = WeightAverage(m, 0.9)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    avg.update(m)
    now = {k: v.clone() for k, v in m.state_dict().items()}
    name = next(n for n, _ in m.named_parameters())
    assert torch.allclose(avg.state_dict()[name], 0.9 * start[name] + 0.1 * now[name])
    with avg.applied(m):
        assert torch.allclose(m.state_dict()[name], avg.state_dict()[name])
    assert all(torch.equal(m.state_dict()[k], now[k]) for k in now)  # the model's own weights back
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(m, 1.0)


def test_weight_average_is_validated_kept_and_resumed(tmp_path):
    """With ema_decay, best.pt holds the averaged weights (not the raw ones) and a resumed run
    continues the average exactly as an uninterrupted one."""
    data, valid = SineNotes(6, seed=1), {"clean": SineNotes(4, seed=2)}
    cfg = lambda out, steps: replace(_cfg(out, steps), ema_decay=0.8, valid_every=7)  # noqa: E731
    train(cfg(tmp_path / "a", 7), TINY, data, valid, log=lambda m: None)
    train(cfg(tmp_path / "b", 4), TINY, data, valid, log=lambda m: None)
    train(cfg(tmp_path / "b", 7), TINY, data, valid, log=lambda m: None)
    a, b = (load_checkpoint(str(tmp_path / r / "last.pt")) for r in "ab")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    best = load_checkpoint(str(tmp_path / "a" / "best.pt"))
    assert best["step"] == 7 and best["train_config"]["ema_decay"] == 0.8
    moved = [k for k in a["model"] if a["model"][k].is_floating_point() and not torch.equal(a["model"][k], a["ema"][k])]
    assert moved  # the average lags the raw weights
    for k in a["model"]:
        assert torch.equal(best["model"][k], a["ema"][k]), k


class _KillAt(SineNotes):
    """Sends this process SIGTERM when item ``at`` is loaded (as ``kill`` would mid-run)."""

    def __init__(self, at: int, *a, **kw):
        super().__init__(*a, **kw)
        self.at = at

    def __getitem__(self, i):
        if self.epoch == 0 and i == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(i)


def test_sigterm_saves_the_step_and_resumes_identically(tmp_path):
    """SIGTERM mid-run: the step in progress finishes, last.pt holds it, the handler is restored,
    and the resumed run ends where an uninterrupted one does."""
    valid = {"clean": SineNotes(4, seed=2)}
    handler = signal.getsignal(signal.SIGTERM)
    logs = []
    train(_cfg(tmp_path / "b", 7), TINY, _KillAt(4, 6, seed=1), valid, log=logs.append)  # item 4: step 2's batch
    assert signal.getsignal(signal.SIGTERM) is handler
    assert load_checkpoint(str(tmp_path / "b" / "last.pt"))["step"] == 3
    assert any("stopped by signal at step 3" in m for m in logs)
    train(_cfg(tmp_path / "b", 7), TINY, SineNotes(6, seed=1), valid, log=lambda m: None)
    train(_cfg(tmp_path / "a", 7), TINY, SineNotes(6, seed=1), valid, log=lambda m: None)
    a, b = (load_checkpoint(str(tmp_path / r / "last.pt")) for r in "ab")
    assert a["step"] == b["step"] == 7
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_onnx_export_parity_and_metadata(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from dawsep.train.export.transcriber import export, read_metadata

    m = tiny_model()
    # Non-trivial BatchNorm statistics, so eval-mode folding is exercised.
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 16000) * 0.3)
    m.eval()
    out = str(tmp_path / "t.onnx")
    export(m, out, segment_samples=80000, train_data={"root": "synthetic"}, metrics={"note_f1": 0.5},
           rtf_seconds=None)
    meta = read_metadata(out)
    assert meta["dawsep.kind"] == "transcriber" and meta["dawsep.sample_rate"] == "16000"
    assert meta["dawsep.hop_samples"] == str(HOP) and meta["dawsep.min_pitch"] == "21"
    assert meta["dawsep.segment_samples"] == "80000" and meta["dawsep.version"]
    assert json.loads(meta["dawsep.architecture"])["config"]["n_mels"] == 32
    assert json.loads(meta["dawsep.train_data"]) == {"root": "synthetic"}
    metrics = json.loads(meta["dawsep.metrics"])
    assert metrics["note_f1"] == 0.5 and metrics["onnx_parity_max_abs"] <= 1e-4
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["audio"]
    assert [o.name for o in sess.get_outputs()] == list(OUTPUTS)
    for shape in ((1, 16001), (3, 4807)):  # dynamic batch and length
        x = (np.random.default_rng(0).standard_normal(shape) * 0.2).astype(np.float32)
        got = sess.run(None, {"audio": x})
        with torch.no_grad():
            ref = m(torch.from_numpy(x))
        for g, r in zip(got, ref):
            assert g.shape == tuple(r.shape) == (shape[0], shape[1] // HOP, g.shape[-1])
            assert np.abs(g - r.numpy()).max() <= 1e-4


def test_pedal_and_velocity_losses_do_not_train_the_shared_trunk():
    """The aux head reads a detached trunk: its gradients stay out of the features the note heads share."""
    m = tiny_model()
    lg = m.logits(torch.randn(2, SR) * 0.1)
    (lg["pedal"].sum() + lg["velocity"].sum()).backward()
    assert all(p.grad is None or not p.grad.any() for p in m.conv.parameters())
    assert all(p.grad is None or not p.grad.any() for p in m.proj.parameters())
    assert m.pedal_fc.weight.grad.abs().sum() > 0
    m.zero_grad()
    m.logits(torch.randn(2, SR) * 0.1)["frame"].sum().backward()
    assert any(p.grad is not None and p.grad.any() for p in m.conv.parameters())


def test_pos_weight_scales_the_positive_term_only():
    lg = {k: torch.zeros(1, 4, N_KEYS) for k in ("onset", "frame", "offset", "velocity")}
    lg["pedal"] = torch.zeros(1, 4, 1)
    batch = {k: torch.zeros_like(v) for k, v in lg.items()}
    batch["onset"][0, 0, :] = 1.0  # a quarter of the onset cells are positive
    plain = losses(lg, batch)["onset"]
    weighted = losses(lg, batch, pos_weight={"onset": 8.0})["onset"]
    # at logit 0 every cell costs log 2; positives cost 8x with the weight: (8*1 + 3) / (1 + 3)
    assert float(weighted / plain) == pytest.approx(11 / 4, rel=1e-6)
    assert float(losses(lg, batch, pos_weight={"onset": 8.0})["frame"]) == pytest.approx(float(plain), rel=1e-6)


def test_cli_lr_half_life_reaches_the_schedule(monkeypatch, tmp_path):
    """``--lr-half-life`` sets the decay (a resumed run can anneal faster); absent, the config's default."""
    from click.testing import CliRunner

    import dawsep.train.train_transcriber as tt
    from dawsep.train.cli import main

    seen = []
    monkeypatch.setattr(tt, "train", lambda cfg, *a, **kw: seen.append(cfg) or {})
    base = ["transcriber", "train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--warmup", "10"]
    for extra in (["--lr-half-life", "100"], []):
        r = CliRunner().invoke(main, base + extra)
        assert r.exit_code == 0, r.output
    fast, default = seen
    assert fast.lr_half_life == 100 and default.lr_half_life == TrainConfig.lr_half_life
    assert tt.lr_at(fast, 110) == pytest.approx(fast.lr / 2)
    assert tt.lr_at(default, 110) > 0.99 * default.lr
    assert CliRunner().invoke(main, base + ["--lr-half-life", "0"]).exit_code != 0


def test_cli_resume_keeps_the_runs_options_unless_given(monkeypatch, tmp_path):
    """Resuming ``--out RUN`` with options left at their defaults continues the run's recipe (a
    default pos_weight silently changed an objective once); options given on the line win."""
    from click.testing import CliRunner

    import dawsep.train.train_transcriber as tt
    from dawsep.train.cli import main
    from dawsep.train.run_folder import save_atomic

    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(out=str(run), pos_weight={"onset": 8}, conditions={"clean": 0.5, "separated": 0.5},
                        lr=2e-4, ema_decay=0.99, valid_conditions=("clean", "separated"))
    save_atomic({"train_config": asdict(saved)}, str(run / "last.pt"))
    seen = []
    monkeypatch.setattr(tt, "train", lambda cfg, *a, **kw: seen.append(cfg) or {})
    base = ["transcriber", "train", "--data", str(tmp_path), "--out", str(run)]
    r = CliRunner().invoke(main, base + ["--lr", "1e-4"])
    assert r.exit_code == 0, r.output
    cfg = seen[-1]
    assert cfg.pos_weight == {"onset": 8} and cfg.conditions == {"clean": 0.5, "separated": 0.5}
    assert cfg.ema_decay == 0.99 and cfg.valid_conditions == ("clean", "separated")
    assert cfg.lr == 1e-4 and cfg.data == str(tmp_path)  # given on the line: theirs
    assert "pos_weight={'onset': 8}" in r.output
    r = CliRunner().invoke(main, ["transcriber", "train", "--data", str(tmp_path), "--out", str(tmp_path / "new")])
    assert r.exit_code == 0 and seen[-1].pos_weight == {} and seen[-1].lr == TrainConfig.lr  # a new run: defaults


def test_validation_also_scores_notes_at_the_users_onset_threshold():
    """``note_f1_user`` decodes at the users' onset threshold (DecodeOptions', recorded with it):
    equal to ``note_f1`` (decoded at 0.5) when that threshold is 0.5."""
    from dawsep.defaults import DecodeOptions
    from dawsep.train.train_transcriber import evaluate

    m, sets = tiny_model(), {"clean": SineNotes(3, seed=2)}
    out = evaluate(m, sets, [0, 1, 2], 3, torch.device("cpu"))
    assert out["user_onset_threshold"] == DecodeOptions().onset_threshold and 0.0 <= out["note_f1_user"] <= 1.0
    at_half = evaluate(m, sets, [0, 1, 2], 3, torch.device("cpu"), user_onset=0.5)
    assert at_half["clean"]["note_f1_user"] == at_half["clean"]["note_f1"]


def test_validation_picks_the_onset_threshold_and_counts_false_notes_where_no_piano_plays():
    """``note_f1_tuned`` is the best mean note F1 over ``ONSET_GRID`` (so never below the mean at
    0.5, a grid point); a condition without notes (``absent``) is left out of the means and
    reports its notes a minute as false notes."""
    from dawsep.train.train_transcriber import ONSET_GRID, evaluate

    class Silent(SineNotes):  # noise, no notes
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item = {k: torch.zeros_like(v) for k, v in item.items()}
            item["audio"] = torch.from_numpy(np.random.default_rng(i).normal(0, 0.2, self.T).astype(np.float32))
            return item

    m, clean, silent = tiny_model(), SineNotes(3, seed=2), Silent(3)
    alone = evaluate(m, {"clean": clean}, [0, 1, 2], 3, torch.device("cpu"))
    both = evaluate(m, {"clean": clean, "absent": silent}, [0, 1, 2], 3, torch.device("cpu"), user_onset=0.3)
    alone3 = evaluate(m, {"clean": clean}, [0, 1, 2], 3, torch.device("cpu"), user_onset=0.3)
    assert 0.5 in ONSET_GRID and alone["tuned_onset_threshold"] in ONSET_GRID + (alone["user_onset_threshold"],)
    assert alone["note_f1_tuned"] >= alone["note_f1"] - 1e-12
    for k in ("note_f1", "note_f1_tuned", "note_f1_user", "frame_f1", "loss"):
        assert both[k] == alone3[k]  # the absent condition is not in the means
    m.eval()
    with torch.no_grad():
        lg = m.logits(torch.stack([silent[i]["audio"] for i in range(3)]))
    on, fr = torch.sigmoid(lg["onset"]).numpy(), torch.sigmoid(lg["frame"]).numpy()
    n = sum(len(decode_notes(on[i], fr[i], onset_threshold=0.3)) for i in range(3))
    assert both["absent"]["notes"] == 0
    assert both["absent"]["false_per_min"] == pytest.approx(n / (3 * silent.T / SR) * 60)
