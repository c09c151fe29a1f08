"""The conditioned LaSAFT-GPoCM separator: its blocks, conditioning, training, the ONNX stem
input and the runtime's one-stem path (tiny configs, fast)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from dawsep.errors import ModelError, UnknownStemError  # noqa: E402
from dawsep.train.export import ort_session  # noqa: E402
from dawsep.train.export.separator import STEM_INPUT, export_model, restamp  # noqa: E402
from dawsep.train.lasaft import GPoCM, LaSAFT, LaSAFTNet  # noqa: E402
from dawsep.train.separation_losses import conditioned_loss, sample_stems, separation_loss, spectral_mask_loss  # noqa: E402
from dawsep.train.separators import build  # noqa: E402
from dawsep.train.stft import STFT  # noqa: E402
from dawsep.train.run_folder import load_checkpoint  # noqa: E402
from dawsep.train.train_separator import TrainConfig, train  # noqa: E402

from test_separators import SPEC, ToyStems, _log, _one_thread, randomize  # noqa: E402,F401

STEMS = ("piano", "bass", "drums", "guitar", "other")
TINY = dict(channels=(4, 6, 8), layers=2, bf=4, fold=2, n_latent=3, embed_dim=8, d_k=8, **SPEC)


def tiny(modulation: str = "gpocm", mask: str = "sigmoid") -> LaSAFTNet:
    torch.manual_seed(0)
    return LaSAFTNet(modulation=modulation, mask=mask, **TINY)


def rand_model(modulation: str = "gpocm", mask: str = "sigmoid") -> LaSAFTNet:
    """Eval mode, a random head and condition embedding, BatchNorm statistics measured on random
    mixtures (random statistics would let the features fade over the depth of the network and
    every stem look alike), so that the stems really differ."""
    m = randomize(tiny(modulation, mask))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        m.embedding.weight.normal_(0.0, 2.0, generator=g)
        bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
        for b in bns:
            b.reset_running_stats()
            b.momentum = None  # cumulative average over the calibration batches
        m.train()
        for _ in range(3):
            m(torch.randn(4, 2, 4000, generator=g) * 0.3)
        for b in bns:
            b.momentum = 0.1
    return m.eval()


# ---------------------------------------------------------------- blocks
def test_lasaft_is_attention_over_latent_tdf_copies():
    """Output = sum_l softmax(Q K^T / sqrt(d_k))_l * ReLU(BN(W_l h)): the copies computed one by
    one from slices of the stacked second layer, the weights from the condition alone."""
    torch.manual_seed(0)
    blk = LaSAFT(channels=3, f=16, bf=4, n_latent=4, embed_dim=5, d_k=6).eval()
    with torch.no_grad():
        for bn in (blk.shared[1], blk.copies[1]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
        x, z = torch.randn(2, 3, 7, 16), torch.randn(2, 5)
        w = blk.attention(z)
        assert w.shape == (2, 4) and torch.allclose(w.sum(1), torch.ones(2))
        h = blk.shared(x)
        lin, bn = blk.copies[0], blk.copies[1]
        want = 0
        for ll in range(4):
            v = h @ lin.weight[ll * 16:(ll + 1) * 16].t()  # [2, 3, 7, 16]
            v = (v - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
            v = torch.relu(v * bn.weight[:, None, None] + bn.bias[:, None, None])
            want = want + w[:, ll, None, None, None] * v
        assert torch.allclose(blk(x, z), want, atol=1e-5)
        assert not torch.allclose(blk.attention(z[:1]), blk.attention(z[1:]))  # condition-dependent


def test_gpocm_is_a_gated_pointwise_convolution():
    """``x * sigmoid(omega x + beta)`` with omega a per-item channel-mixing matrix (inter-channel,
    unlike FiLM): checked against an explicit sum over input channels."""
    torch.manual_seed(0)
    mod = GPoCM(channels=3, embed_dim=4)
    x, z = torch.randn(2, 3, 5, 6), torch.randn(2, 4)
    with torch.no_grad():
        p = mod.generate(z)
        omega, beta = p[:, :9].reshape(2, 3, 3), p[:, 9:]
        pre = torch.stack([sum(omega[:, c, j, None, None] * x[:, j] for j in range(3)) + beta[:, c, None, None]
                           for c in range(3)], 1)
        assert torch.allclose(mod(x, z), x * torch.sigmoid(pre), atol=1e-6)
        x2 = x.clone()
        x2[:, 1] += 1.0  # channel 1 changes the gate of channel 0: channel mixing
        assert not torch.allclose(mod(x2, z)[:, 0], mod(x, z)[:, 0])


def test_rejects_masks_that_couple_the_stems():
    with pytest.raises(ValueError, match="per-stem mask"):
        LaSAFTNet(mask="softmax", **TINY)
    with pytest.raises(ValueError, match="consistent"):
        LaSAFTNet(consistent=True, **TINY)
    with pytest.raises(ValueError, match="modulation"):
        LaSAFTNet(modulation="concat", **TINY)


# ---------------------------------------------------------------- the network
@pytest.mark.parametrize("modulation,mask", [("gpocm", "sigmoid"), ("film", "sigmoid"), ("gpocm", "complex")])
def test_shapes_and_config_round_trip(modulation, mask):
    m = tiny(modulation, mask).eval()
    with torch.no_grad():
        for B, T in [(1, 1), (3, 257), (2, 4097)]:
            x = torch.randn(B, 2, T)
            assert m(x).shape == (B, 5, 2, T)
            assert m(x, torch.tensor([[3, 1]] * B)).shape == (B, 2, 2, T)
    cfg = json.loads(json.dumps(m.config()))
    assert cfg["arch"] == "lasaft" and cfg["modulation"] == modulation and cfg["mask"] == mask
    m2 = build(cfg)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(1, 2, 999)
    with torch.no_grad():
        assert torch.equal(m(x), m2.eval()(x))


@pytest.mark.parametrize("modulation", ["gpocm", "film"])
def test_conditions_select_different_stems_and_stand_alone(modulation):
    """Each condition gives its own stem; a stem asked for alone (or in any order, or with
    different stems per batch item) equals the same stem of the all-stem call."""
    m = rand_model(modulation)
    x = torch.randn(2, 2, 3000) * 0.3
    with torch.no_grad():
        full = m(x)  # [2, 5, 2, T]
        scale = float(full.abs().max())
        for a in range(5):
            for b in range(a + 1, 5):
                assert float((full[:, a] - full[:, b]).abs().max()) > 1e-2 * scale, (a, b)
        for s in range(5):
            alone = m(x, torch.tensor([[s], [s]]))
            assert (alone[:, 0] - full[:, s]).abs().max() <= 1e-5
        mixed = m(x, torch.tensor([[4, 0], [2, 2]]))
        assert (mixed[0] - full[0, [4, 0]]).abs().max() <= 1e-5
        assert (mixed[1] - full[1, [2, 2]]).abs().max() <= 1e-5


def test_one_stem_runs_the_network_once():
    """What a one-stem request costs: the conditioned part of the network sees B items, not
    B x 5; the shared first TFC sees B items either way."""
    m = rand_model()
    seen = {}
    m.dec[-1].register_forward_hook(lambda mod, args, out: seen.__setitem__("dec", args[0].shape[0]))
    m.first.register_forward_hook(lambda mod, args, out: seen.__setitem__("first", args[0].shape[0]))
    x = torch.randn(3, 2, 2000)
    with torch.no_grad():
        m(x)
        assert seen == {"dec": 15, "first": 3}
        m(x, torch.tensor([[1]] * 3))
        assert seen == {"dec": 3, "first": 3}


def test_scale_equivariant_and_pure():
    m = rand_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 2, 3001) * 0.1
    with torch.no_grad():
        y, y4, again, single = m(x), m(4 * x), m(x), m(x[1:])
    assert (y4 - 4 * y).abs().max() <= 1e-4 * max(1.0, float(y4.abs().max()))
    assert torch.equal(y, again) and torch.allclose(y[1:], single, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_starts_at_mix_over_five():
    """An untrained sigmoid head starts every stem at mix / 5 (below the cut-off), as the
    multi-head models do."""
    m = tiny().eval()
    t = torch.arange(6000) / 44100
    x = (0.3 * torch.sin(2 * torch.pi * 1000 * t)).repeat(1, 2, 1)
    with torch.no_grad():
        y = m(x)
    assert (y - x[:, None] / 5)[..., 1000:-1000].abs().max() <= 0.02 * 0.3


# ---------------------------------------------------------------- training
def test_sample_stems_is_a_pure_function_of_seed_and_step():
    a = sample_stems(7, 4, 5, 2, seed=1)
    assert a.shape == (4, 2) and a.dtype == torch.int64
    assert torch.equal(a, sample_stems(7, 4, 5, 2, seed=1))
    assert not torch.equal(a, sample_stems(8, 4, 5, 2, seed=1))
    assert all(len(set(r.tolist())) == 2 for r in a) and int(a.min()) >= 0 and int(a.max()) < 5
    assert torch.equal(sample_stems(0, 3, 5, 0), torch.arange(5).expand(3, 5))
    drawn = torch.cat([sample_stems(s, 4, 5, 1) for s in range(200)]).flatten()
    assert set(drawn.tolist()) == set(range(5))  # every stem gets trained


@pytest.mark.parametrize("kind", ["mse_mag", "mse_mag_spec", "l1"])
def test_conditioned_loss_estimates_the_all_stem_loss(kind):
    """Drawing every stem gives exactly the multi-head loss; the mean over the five one-stem
    draws gives it too (the estimator is unbiased: the normaliser is every stem's energy)."""
    m = rand_model()
    ds = ToyStems(T=4096)
    mix = torch.stack([ds[i]["mix"] for i in range(2)])
    ref = torch.stack([ds[i]["stems"] for i in range(2)])
    st = STFT(m.n_fft, m.hop, m.n_bins, normalized=True)
    with torch.no_grad():
        full, _ = conditioned_loss(m, mix, ref, torch.arange(5).expand(2, 5), st, kind)
        if kind == "mse_mag_spec":
            want, _ = spectral_mask_loss(m, mix, ref)
        else:
            want, _ = separation_loss(m(mix), ref, st, 1.0, kind)
        assert float(full) == pytest.approx(float(want), rel=1e-5)
        singles = [float(conditioned_loss(m, mix, ref, torch.full((2, 1), s), st, kind)[0]) for s in range(5)]
    assert np.mean(singles) == pytest.approx(float(want), rel=1e-4)
    assert np.std(singles) > 0  # the stems do differ


def test_training_step_reduces_the_loss_on_a_fixed_batch():
    m = tiny().train()
    ds = ToyStems(T=8192)
    mix = torch.stack([ds[i]["mix"] for i in range(4)])
    ref = torch.stack([ds[i]["stems"] for i in range(4)])
    ids = sample_stems(0, 4, 5, 1)
    st = STFT(m.n_fft, m.hop, m.n_bins, normalized=True)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(11):
        loss, _ = conditioned_loss(m, mix, ref, ids, st, "mse_mag")
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[1] < losses[0]
    assert losses[-1] < 0.6 * losses[0]


def _cfg(out, steps, **kw):
    base = dict(data=None, out=str(out), arch="lasaft", steps=steps, batch_size=2, lr=5e-3, warmup=2,
                model={**TINY, "channels": list(TINY["channels"])}, loss="mse_mag", valid_every=0, workers=0,
                log_every=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_loop_trains_validates_and_resumes(tmp_path):
    """The ``dawsep-train separator train --arch lasaft`` loop: the loss falls (every stem drawn,
    so the logged loss is comparable from step to step), validation separates every stem, and a
    resumed run (one drawn stem per item, the default) redraws the same stems."""
    from test_separators import toy_valid

    res = train(_cfg(tmp_path / "a", 40, valid_every=40, stems_per_item=0), ToyStems(), toy_valid(),
                log=lambda m: None)
    recs = _log(tmp_path / "a" / "log.jsonl")
    losses = [r["loss"] for r in recs if r["type"] == "train"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    valid = [r for r in recs if r["type"] == "valid"][-1]
    base = [r for r in recs if r["type"] == "baseline"][0]
    assert sorted(valid["sdr"]) == sorted(STEMS) and valid["mean"] > base["mixture"]["mean"]
    assert res["best"]["step"] == 40
    assert load_checkpoint(str(tmp_path / "a" / "best.pt"))["model_config"]["arch"] == "lasaft"

    b, c = tmp_path / "b", tmp_path / "c"
    train(_cfg(b, 6), ToyStems(), log=lambda m: None)
    train(_cfg(c, 6), ToyStems(), log=lambda m: None, until=3)
    train(_cfg(c, 6), ToyStems(), log=lambda m: None)
    kb, kc = load_checkpoint(str(b / "last.pt")), load_checkpoint(str(c / "last.pt"))
    assert kb["train_config"]["stems_per_item"] == 1
    for k in kb["model"]:
        assert torch.equal(kb["model"][k], kc["model"][k]), k
    assert [r["loss"] for r in _log(b / "log.jsonl")] == [r["loss"] for r in _log(c / "log.jsonl")]


# ---------------------------------------------------------------- export and runtime
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    m = rand_model()
    path = str(tmp_path_factory.mktemp("lasaft") / "lasaft.onnx")
    fig = export_model(m, path, segment_seconds=0.25, bench=False)
    return m, path, fig


def test_export_parity_all_stems_and_stem_input(exported):
    m, path, fig = exported
    assert fig["onnx_parity_max_abs"] <= 1e-4 and fig["onnx_parity_stem_input_max_abs"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["dawsep.stem_input"] == STEM_INPUT
    assert json.loads(meta["dawsep.stems"]) == list(STEMS)
    assert json.loads(meta["dawsep.architecture"])["arch"] == "lasaft"
    sess = ort_session(path, threads=1)
    # the plain contract: `mix` is the only required input
    assert [i.name for i in sess.get_inputs()] == ["mix"] and [o.name for o in sess.get_outputs()] == ["stems"]
    assert [i.name for i in sess.get_overridable_initializers()] == [STEM_INPUT]
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (3, 2, 2345)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert np.abs(sess.run(None, {"mix": x})[0] - ref).max() <= 1e-4
    for ids in ([2], [4, 1], [0, 1, 2, 3, 4], [3, 3]):
        got = sess.run(None, {"mix": x, STEM_INPUT: np.array(ids, np.int64)})[0]
        assert got.shape == (3, len(ids), 2, 2345)
        assert np.abs(got - ref[:, ids]).max() <= 1e-4


def test_export_keeps_the_plain_contract_for_other_archs(tiny_separator):
    meta = {p.key: p.value for p in onnx.load(tiny_separator).metadata_props}
    assert "dawsep.stem_input" not in meta
    sess = ort_session(tiny_separator, threads=1)
    assert [i.name for i in sess.get_inputs()] == ["mix"] and not sess.get_overridable_initializers()


def test_runtime_one_stem_equals_that_stem_of_all(exported):
    from dawsep.separate import Separator, SeparatorStep

    _, path, _ = exported
    x = (0.1 * np.random.default_rng(0).standard_normal((2, 30000))).astype(np.float32)
    full = Separator(path, threads=1)
    assert full.stems == STEMS and full.info.stem_input == STEM_INPUT and not full.computes_selected_only
    every = full.separate(x, 44100)
    for stems in (("drums",), ("other", "piano")):
        sep = Separator(path, threads=1, stems=stems)
        assert sep.stems == stems and sep.computes_selected_only
        got = sep.separate(x, 44100)
        assert list(got) == list(stems)
        for s in stems:
            assert got[s].shape == x.shape and np.abs(got[s] - every[s]).max() <= 1e-4
    # the streaming path (chunk by chunk) gives the same one stem
    engine = Separator(path, threads=1, stems=("bass",)).stream()
    y = np.concatenate([engine.push(x[:, :7000]), engine.push(x[:, 7000:]), engine.flush()], axis=2)
    assert y.shape == (1, 2, x.shape[1]) and np.abs(y[0] - every["bass"]).max() <= 1e-4
    # a chain step builds a one-stem separator of its own
    step = SeparatorStep("guitar", model=path)
    assert step.separator.stems == ("guitar",) and step.separator.computes_selected_only and step.index == 0
    with pytest.raises(UnknownStemError):
        Separator(path, threads=1, stems=("vocals",))
    with pytest.raises(UnknownStemError):
        SeparatorStep("vocals", model=path)


def test_runtime_phase_post_processing_sees_every_stem(exported):
    """Wiener filtering shares the mixture among all stems, so a subset is cut from the full
    computation, never filtered on its own."""
    from dawsep.separate import Separator

    _, path, _ = exported
    x = (0.1 * np.random.default_rng(1).standard_normal((2, 20000))).astype(np.float32)
    every = Separator(path, threads=1, phase="wiener").separate(x, 44100)
    sep = Separator(path, threads=1, phase="wiener", stems=("piano",))
    assert not sep.computes_selected_only
    assert np.abs(sep.separate(x, 44100)["piano"] - every["piano"]).max() <= 1e-5


def test_runtime_subset_of_a_model_without_stem_input(tiny_separator):
    """Backward compatible: a multi-head model asked for some stems computes all and returns those."""
    from dawsep.separate import Separator

    x = (0.1 * np.random.default_rng(2).standard_normal((2, 15000))).astype(np.float32)
    full = Separator(tiny_separator, threads=1)
    assert full.info.stem_input == "" and full.stems == STEMS
    every = full.separate(x, 44100)
    sep = Separator(tiny_separator, threads=1, stems=("guitar", "bass"))
    assert not sep.computes_selected_only and sep.stems == ("guitar", "bass")
    got = sep.separate(x, 44100)
    assert list(got) == ["guitar", "bass"] and all(np.array_equal(got[s], every[s]) for s in got)


def test_runtime_rejects_a_stem_input_the_graph_lacks(tmp_path, tiny_separator):
    import shutil

    from dawsep.separate import Separator

    bad = tmp_path / "bad.onnx"
    shutil.copy(tiny_separator, bad)
    restamp(str(bad), {"dawsep.stem_input": "which_stems"})
    with pytest.raises(ModelError, match="which_stems"):
        Separator(str(bad), threads=1)
