"""The pitch-equivariant transcriber: contract shapes, the log-frequency front end, equivariance."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dawsep.train.transcriber import MIN_PITCH, N_KEYS, OUTPUTS  # noqa: E402
from tests.train.test_transcriber import _one_thread  # noqa: E402,F401  (autouse: one torch thread)
from dawsep.train.transcriber_pe import (  # noqa: E402
    PitchTranscriber,
    PitchTranscriberConfig,
    log_frequency_filters,
)

TINY = PitchTranscriberConfig(conv=4, key_channels=6, temporal=6, rnn_pedal=4, dilations=(1, 2),
                              frame_dilations=(1,), dropout=0.0)


def _sine(pitch: float, seconds: float = 1.0, sr: int = 16000, amp: float = 0.3) -> torch.Tensor:
    t = np.arange(int(seconds * sr)) / sr
    return torch.tensor(amp * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t), dtype=torch.float32)[None]


@pytest.mark.parametrize("samples", [320, 321, 16000, 16319])
def test_shapes_follow_the_contract(samples):
    m = PitchTranscriber(TINY).eval()
    out = m(torch.randn(2, samples))
    assert [o.shape for o in out] == [(2, samples // 320, N_KEYS)] * 4 + [(2, samples // 320, 1)]
    assert all(((o >= 0) & (o <= 1)).all() for o in out)
    assert list(m.logits(torch.randn(1, 640))) == list(OUTPUTS)


def test_config_round_trip_and_checks():
    cfg = PitchTranscriberConfig.from_dict(TINY.to_dict())
    assert cfg == TINY
    with pytest.raises(ValueError):
        PitchTranscriberConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError):
        PitchTranscriber(PitchTranscriberConfig(octave_kernel=12))


def test_log_frequency_bins_peak_at_their_pitch():
    """A sine at MIDI pitch p lights the bin centred on p (3 bins per semitone) across the range."""
    cfg = PitchTranscriberConfig()
    m = PitchTranscriber(cfg).eval()
    w = log_frequency_filters(cfg)
    assert np.allclose(w.sum(axis=0)[w.sum(axis=0) > 0], 1.0)
    for p in (33, 45, 60, 81, 100):
        spec = m.frontend(_sine(p))[0, 10:-10].mean(0).numpy()
        centre = (p - MIN_PITCH + cfg.low_margin) * cfg.bins_per_semitone + cfg.bins_per_semitone // 2
        assert abs(int(np.argmax(spec)) - centre) <= 1, (p, int(np.argmax(spec)), centre)


def test_key_features_are_pitch_equivariant():
    """Shifting the input by 4 semitones shifts the per-key features by 4 keys (convolutions are
    shared across pitch); an untrained net, so equality is up to the STFT's resolution."""
    torch.manual_seed(0)
    m = PitchTranscriber(PitchTranscriberConfig(dropout=0.0)).eval()
    a = m.key_features(_sine(60))[0].mean(1).detach().numpy()  # (C, 88)
    b = m.key_features(_sine(64))[0].mean(1).detach().numpy()
    k = 60 - MIN_PITCH
    win = slice(k - 8, k + 9)
    shifted = slice(k - 4, k + 13)
    err = np.abs(a[:, win] - b[:, shifted]).max()
    assert err < 0.1 * np.abs(a[:, win]).max(), err
    # not trivially: unshifted, the two responses differ far more than the shifted ones do
    assert np.abs(a[:, win] - b[:, win]).max() > 3 * err


def test_trains_towards_a_single_note():
    """BCE on one sounding key: the loss falls and that key's frame posterior stands far above the
    others' (the heads are shared by every key, so only the features can single it out)."""
    torch.manual_seed(1)
    m = PitchTranscriber(TINY)
    x = _sine(57, 1.0).repeat(2, 1)
    target = torch.zeros(2, 50, N_KEYS)
    target[:, :, 57 - MIN_PITCH] = 1.0
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        lg = m.logits(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lg["frame"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0]
    m.eval()
    frame = m(x)[1][0].detach().numpy()
    assert frame[5:45, 57 - MIN_PITCH].mean() > 5 * np.delete(frame[5:45], 57 - MIN_PITCH, axis=1).mean()


def test_trains_resumes_and_exports_through_the_shared_tools(tmp_path):
    """The training loop (config chosen by ``arch``), resume and the ONNX exporter take the pitch
    model like the first architecture: parity <= 1e-4, dynamic batch and length, runtime loads it."""
    import json

    ort = pytest.importorskip("onnxruntime")
    from dawsep.train.export.transcriber import export_checkpoint, read_metadata
    from tests.train.test_transcriber import SineNotes

    from dawsep.train.run_folder import load_checkpoint
    from dawsep.train.train_transcriber import TrainConfig, train
    from dawsep.train.transcribers import config_from_dict

    cfg = config_from_dict(TINY.to_dict())
    assert isinstance(cfg, PitchTranscriberConfig)
    tc = TrainConfig(out=str(tmp_path / "run"), steps=4, batch=2, lr=3e-3, warmup=2, log_every=1,
                     checkpoint_every=2, valid_every=2, valid_items=2, workers=0, seed=3)
    train(tc, cfg, SineNotes(6, seed=1), {"clean": SineNotes(4, seed=2)}, log=lambda m: None)
    tc2 = TrainConfig(**{**tc.__dict__, "steps": 6})
    train(tc2, None, SineNotes(6, seed=1), {"clean": SineNotes(4, seed=2)}, log=lambda m: None)  # resumes
    state = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert state["step"] == 6 and state["model_config"]["arch"] == "pitch"
    out = str(tmp_path / "pe.onnx")
    export_checkpoint(str(tmp_path / "run" / "last.pt"), out, rtf_seconds=None)
    arch = json.loads(read_metadata(out)["dawsep.architecture"])
    assert arch["name"] == "PitchTranscriber" and arch["config"]["arch"] == "pitch"
    assert json.loads(read_metadata(out)["dawsep.metrics"])["onnx_parity_max_abs"] <= 1e-4
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    for shape in ((1, 16001), (2, 4807)):
        got = sess.run(None, {"audio": (np.random.default_rng(0).standard_normal(shape) * 0.2).astype(np.float32)})
        assert [g.shape for g in got] == [(shape[0], shape[1] // 320, N_KEYS)] * 4 + [(shape[0], shape[1] // 320, 1)]
    from dawsep.transcribe import Transcriber

    # The runtime reads the pitch model's metadata (rate, hop, lowest key) and decodes its output.
    t = Transcriber(out, threads=1).transcribe((np.random.default_rng(1).standard_normal((2, 44100)) * 0.1)
                                               .astype(np.float32), 44100)
    assert all(21 <= n.pitch <= 108 and 0 <= n.start_s < n.end_s <= 1.0 + 1e-6 for n in t.notes)

    # --init-from takes the pitch model from its checkpoint and from its ONNX export: same function
    from dawsep.train import init_from

    x = torch.randn(1, 8000)
    ref, _ = init_from.transcriber(str(tmp_path / "run" / "last.pt"))
    back, _ = init_from.transcriber(out)
    assert isinstance(back, PitchTranscriber) and isinstance(ref, PitchTranscriber)
    with torch.no_grad():
        for a, b in zip(ref.eval()(x), back.eval()(x)):
            assert torch.allclose(a, b, atol=1e-5)


def test_velocity_heads_grow_from_a_checkpoint_without_them(tmp_path):
    """``velocity_context`` and ``velocity_level`` add reads of the chunk's level and of each key's
    raw level to the velocity head: a run grown from a checkpoint without them starts with
    identical outputs (the new weights are zero), only their weights are new, every other mismatch
    is refused, and they survive ONNX export and ``--init-from`` the export."""
    import dataclasses

    from dawsep.train import init_from
    from dawsep.train.export.transcriber import export_checkpoint
    from dawsep.train.run_folder import save_atomic

    old = PitchTranscriber(TINY).eval()
    path = str(tmp_path / "old.pt")
    save_atomic({"model": old.state_dict(), "model_config": TINY.to_dict(), "step": 7}, path)
    grown_cfg = dataclasses.replace(TINY, velocity_context=True, velocity_level=True)
    grown, loaded = init_from.transcriber(path, grown_cfg)
    assert loaded.grown == ["velocity_ctx.weight", "velocity_lvl.weight"] and grown.cfg == grown_cfg
    x = torch.randn(2, 16000) * 0.3
    with torch.no_grad():
        for a, b in zip(old(x), grown.eval()(x)):
            assert torch.equal(a, b)
        # once trained, the velocity depends on the chunk's level, the other outputs still do not
        grown.velocity_ctx.weight.fill_(0.5)
        grown.velocity_lvl.weight.fill_(0.5)
        out = grown(x)
        assert not torch.allclose(out[3], old(x)[3])
        assert all(torch.equal(a, b) for i, (a, b) in enumerate(zip(old(x), out)) if i != 3)
    with pytest.raises(init_from.InitFromError):  # anything else that differs is still refused
        init_from.transcriber(path, dataclasses.replace(grown_cfg, temporal=8))
    ck = str(tmp_path / "grown.pt")
    save_atomic({"model": grown.state_dict(), "model_config": grown_cfg.to_dict(), "step": 1}, ck)
    with pytest.raises(init_from.InitFromError):  # and it is not dropped again
        init_from.transcriber(ck, TINY)
    # export and read back
    out = str(tmp_path / "grown.onnx")
    export_checkpoint(ck, out, rtf_seconds=None)
    back, _ = init_from.transcriber(out)
    assert back.cfg.velocity_context and torch.equal(back.velocity_ctx.weight, grown.velocity_ctx.weight)
    assert back.cfg.velocity_level and torch.equal(back.velocity_lvl.weight, grown.velocity_lvl.weight)
    # a checkpoint with one of them grows into both
    one = str(tmp_path / "one.pt")
    half = PitchTranscriber(dataclasses.replace(TINY, velocity_context=True))
    save_atomic({"model": half.state_dict(), "model_config": half.cfg.to_dict(), "step": 2}, one)
    assert init_from.transcriber(one, grown_cfg)[1].grown == ["velocity_lvl.weight"]


def test_the_velocity_head_can_learn_faster_than_the_rest(tmp_path):
    """``velocity_lr_scale``: the velocity head's parameters form their own AdamW group whose rate
    is the schedule's times the scale; 1 keeps the single group of earlier runs."""
    import dataclasses

    from dawsep.train.train_transcriber import TrainConfig, lr_at, param_groups, train
    from dawsep.train.run_folder import load_checkpoint
    from tests.train.test_transcriber import SineNotes

    m = PitchTranscriber(dataclasses.replace(TINY, velocity_context=True, velocity_level=True))
    assert len(param_groups(m, 1.0)) == 1
    rest, vel = param_groups(m, 20.0)
    assert vel["lr_scale"] == 20.0 and "lr_scale" not in rest
    names = {id(p): n for n, p in m.named_parameters()}
    assert sorted(names[id(p)] for p in vel["params"]) == [
        "velocity_ctx.weight", "velocity_fc.bias", "velocity_fc.weight", "velocity_lvl.weight"]
    assert len(rest["params"]) + len(vel["params"]) == len(list(m.parameters()))
    tc = TrainConfig(out=str(tmp_path / "run"), steps=3, batch=2, lr=1e-3, warmup=1, log_every=1,
                     checkpoint_every=3, valid_every=0, workers=0, seed=0, velocity_lr_scale=20.0)
    train(tc, m.cfg, SineNotes(4, seed=1), {}, log=lambda msg: None)
    groups = load_checkpoint(str(tmp_path / "run" / "last.pt"))["optimizer"]["param_groups"]
    assert [g.get("lr_scale", 1.0) for g in groups] == [1.0, 20.0]
    assert groups[1]["lr"] == pytest.approx(20 * groups[0]["lr"]) and groups[0]["lr"] == pytest.approx(lr_at(tc, 2))


def test_train_only_the_velocity_head_leaves_the_notes_untouched(tmp_path):
    """``train_only=("velocity",)``: every other weight and buffer (BatchNorm statistics
    included) stays bit-identical, so a shipped model's notes cannot move; ``select="loss"``
    keeps the checkpoint with the lowest mean valid loss."""
    import dataclasses
    import json

    from dawsep.train.run_folder import load_checkpoint
    from dawsep.train.train_transcriber import TrainConfig, train
    from dawsep.train.transcribers import build
    from tests.train.test_transcriber import SineNotes

    cfg = dataclasses.replace(TINY, velocity_context=True, velocity_level=True, dropout=0.2)
    tc = TrainConfig(out=str(tmp_path / "run"), steps=4, batch=2, lr=1e-2, warmup=1, log_every=1, checkpoint_every=4,
                     valid_every=1, valid_items=2, workers=0, seed=0, velocity_lr_scale=5.0,
                     train_only=("velocity",), select="loss")
    train(tc, cfg, SineNotes(4, seed=1), {"clean": SineNotes(2, seed=2)}, log=lambda msg: None)
    torch.manual_seed(tc.seed)
    start = build(cfg).state_dict()
    after = load_checkpoint(str(tmp_path / "run" / "last.pt"))["model"]
    frozen = [k for k in start if not k.startswith("velocity")]
    assert any("running_mean" in k for k in frozen)  # the test covers BatchNorm statistics
    for k in frozen:
        assert torch.equal(start[k], after[k]), k
    assert any(not torch.equal(start[k], after[k]) for k in start if k.startswith("velocity"))
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["valid"]["loss"] for r in log if "valid" in r}
    best = load_checkpoint(str(tmp_path / "run" / "best.pt"))
    assert best["metrics"]["loss"] == min(losses.values()) and best["step"] == min(losses, key=losses.get)


def test_harmonic_mixing_grows_from_a_checkpoint_without_it_and_reads_the_octave(tmp_path):
    """``harmonic_mixing`` starts as a no-op on a grown checkpoint (the same outputs), and once
    trained a key's onset depends on the features 12 semitones away but not 5 away; it survives
    ONNX export."""
    import dataclasses

    from dawsep.train import init_from
    from dawsep.train.export.transcriber import export_checkpoint
    from dawsep.train.run_folder import save_atomic
    from dawsep.train.transcriber_pe import HARMONIC_OFFSETS, _KeyMixing

    old = PitchTranscriber(TINY).eval()
    path = str(tmp_path / "old.pt")
    save_atomic({"model": old.state_dict(), "model_config": TINY.to_dict(), "step": 3}, path)
    cfg = dataclasses.replace(TINY, harmonic_mixing=True)
    grown, loaded = init_from.transcriber(path, cfg)
    assert loaded.grown == ["key_mixing.mix.bias", "key_mixing.mix.weight", "key_mixing.out.weight"]
    x = torch.randn(2, 16000) * 0.3
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(old(x), grown.eval()(x)))
        torch.nn.init.normal_(grown.key_mixing.out.weight, std=0.5)
        assert not torch.allclose(grown(x)[0], old(x)[0])
    # which keys a key reads: perturb key 40's features, see which outputs move
    mixing = _KeyMixing(4)
    torch.nn.init.normal_(mixing.out.weight)
    feats = torch.randn(1, 4, 5, 88)
    bumped = feats.clone()
    bumped[..., 40] += 1.0
    with torch.no_grad():
        moved = (mixing(bumped) - mixing(feats)).abs().sum(dim=(0, 1, 2)) > 0
    assert set(torch.nonzero(moved).flatten().tolist()) == {40} | {40 - s for s in HARMONIC_OFFSETS}
    ck = str(tmp_path / "grown.pt")
    save_atomic({"model": grown.state_dict(), "model_config": cfg.to_dict(), "step": 1}, ck)
    out = str(tmp_path / "grown.onnx")
    export_checkpoint(ck, out, rtf_seconds=None)
    back, _ = init_from.transcriber(out)
    assert back.cfg.harmonic_mixing and torch.equal(back.key_mixing.out.weight, grown.key_mixing.out.weight)
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grown(x), back.eval()(x)))
