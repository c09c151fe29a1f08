"""Separators: in-graph STFT, architectures, training loop, ONNX export (tiny configs, fast)."""
from __future__ import annotations

import io
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


from dawsep.train.separators import OpenUnmix, TFCTDFUNet, UNetMask, build  # noqa: E402
from dawsep.train.waveform import ConvTasNet, Demucs  # noqa: E402
from dawsep.train.stft import ISTFT, STFT  # noqa: E402
from dawsep.train.run_folder import load_checkpoint  # noqa: E402
from dawsep.metrics import sdr_song  # noqa: E402
from dawsep.train.train_separator import TrainConfig, train  # noqa: E402
from dawsep.train.export import ort_session  # noqa: E402
from dawsep.train.export.separator import export_model  # noqa: E402

SPEC = dict(n_fft=256, hop=128, n_bins=64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation (and stalls badly when
    the 2 cores are busy with other work)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(arch: str):
    """``arch``: unet | tfctdf (``-softmax`` for the real ratio-mask head) | umx | umx-uni
    (unidirectional LSTM) | convtasnet | demucs | lasaft (``-film`` for the FiLM ablation)."""
    torch.manual_seed(0)
    if arch.startswith("lasaft"):
        from dawsep.train.lasaft import LaSAFTNet

        return LaSAFTNet(channels=(4, 6, 8), layers=2, bf=4, fold=2, n_latent=3, embed_dim=8, d_k=8,
                         modulation="film" if arch.endswith("film") else "gpocm", **SPEC)
    if arch.startswith("umx"):
        return OpenUnmix(hidden=16, layers=2, bidirectional=arch == "umx", **SPEC)
    if arch == "convtasnet":
        return ConvTasNet(filters=32, kernel=32, bottleneck=8, hidden=16, skip=8, blocks=3, repeats=1)
    if arch == "demucs":
        return Demucs(channels=8, depth=3, lstm_layers=1)
    arch, _, mask = arch.partition("-")
    spec = dict(SPEC, mask=mask or "complex")
    if arch == "unet":
        return UNetMask(channels=(4, 8, 8), **spec)
    return TFCTDFUNet(channels=(4, 6, 8), layers=2, bf=4, fold=2, **spec)


ARCH_MASKS = ["unet", "tfctdf", "unet-softmax", "tfctdf-softmax", "umx", "umx-uni"]
WAVEFORM = ["convtasnet", "demucs"]
CONDITIONED = ["lasaft", "lasaft-film"]  # per-stem sigmoid masks: no mixture consistency to test
ALL_ARCHS = ARCH_MASKS + WAVEFORM + CONDITIONED


def randomize(model):
    """Eval-mode statistics and an output layer far from its near-constant init, so parity means something."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        head = getattr(model, "head", None) or getattr(model, "fc3", None)
        if head is not None:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.3)
        else:  # waveform models: move every weight off its init
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


# ---------------------------------------------------------------- STFT
@pytest.mark.parametrize("n_fft,hop,n_bins", [(256, 64, None), (256, 128, None), (2048, 1024, None)])
def test_stft_perfect_reconstruction_both_paths(n_fft, hop, n_bins):
    for T in (1, 100, 1001, 5000):
        x = torch.randn(2, 2, T)
        for fft in (False, True):
            X = STFT(n_fft, hop, n_bins, use_fft=fft)(x)
            assert X.shape == (2, 2, 2, n_fft // 2 + 1, T // hop + 2)
            y = ISTFT(n_fft, hop, n_bins, use_fft=fft)(X, T)
            assert y.shape == x.shape
            assert (y - x).abs().max() <= 1e-5
        # the FFT path (eager training) and the convolution path (ONNX) are the same transform
        a, b = STFT(n_fft, hop, 40, use_fft=True)(x), STFT(n_fft, hop, 40, use_fft=False)(x)
        assert (a - b).abs().max() <= 1e-5 * max(1.0, float(a.abs().max()))
        ya, yb = ISTFT(n_fft, hop, 40, use_fft=True)(a, T), ISTFT(n_fft, hop, 40, use_fft=False)(a, T)
        assert (ya - yb).abs().max() <= 1e-5


def test_stft_onnx_export_dynamic_and_small():
    class RoundTrip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = STFT(2048, 1024, 768), ISTFT(2048, 1024, 768)

        def forward(self, x):
            return self.b(self.a(x), x.shape[-1])

    m, buf = RoundTrip(), io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 2, 4096),), buf, opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b", 2: "t"}, "y": {0: "b", 2: "t"}})
    assert len(buf.getvalue()) < 200_000  # DFT tables are generated in-graph, not stored (12 MB)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 2, 4096), (3, 2, 7777), (2, 2, 300)]:
        x = torch.randn(*shape)
        got = sess.run(None, {"x": x.numpy()})[0]
        assert np.abs(got - m(x).numpy()).max() <= 1e-5
        assert got.shape == shape


# ---------------------------------------------------------------- architectures
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_shapes_odd_lengths_and_config_round_trip(arch):
    m = tiny(arch).eval()
    with torch.no_grad():
        for B, T in [(1, 1), (3, 257), (2, 1001), (1, 4097)]:
            assert m(torch.randn(B, 2, T)).shape == (B, 5, 2, T)
    m2 = build(json.loads(json.dumps(m.config())))
    m2.load_state_dict(m.state_dict())
    x = torch.randn(1, 2, 999)
    with torch.no_grad():
        assert torch.equal(m(x), m2.eval()(x))


@pytest.mark.parametrize("arch", ARCH_MASKS)
def test_mixture_consistency(arch):
    m = randomize(tiny(arch))
    x = torch.randn(2, 2, 3000) * 0.3
    with torch.no_grad():
        y = m(x)
    low = STFT(**{k: SPEC[k] for k in ("n_fft", "hop")})  # stems sum to the mix below the cut-off
    below = ISTFT(SPEC["n_fft"], SPEC["hop"], SPEC["n_bins"])(low(x)[..., : SPEC["n_bins"], :], 3000)
    assert (y.sum(1) - below).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ARCH_MASKS)
def test_full_band_keeps_everything_above_the_cut_off(arch):
    """Same weights, full_band: the same stems for content under the cut-off, and the stems sum
    to the whole mixture (white noise, most of it above the tiny model's 11 kHz cut-off)."""
    m = randomize(tiny(arch))
    full = build(dict(m.config(), full_band=True)).eval()
    full.load_state_dict(m.state_dict())
    t = torch.arange(4000) / 44100
    tone = (0.3 * torch.sin(2 * torch.pi * 1000 * t)).repeat(1, 2, 1)
    x = torch.randn(1, 2, 4000) * 0.3
    with torch.no_grad():
        assert (full(tone) - m(tone))[..., 600:-600].abs().max() <= 1e-4  # edges are broadband clicks
        yf = full(x)
    assert (yf.sum(1) - x).abs().max() <= 1e-4  # masks sum to one (softmax, or the consistent projection)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_scale_equivariant(arch):
    """Every model normalises its input's level and restores it: separating a mix 4x louder gives
    stems 4x louder (a model that leaked absolute level, e.g. a missing denormalisation, fails)."""
    m = randomize(tiny(arch))
    x = torch.randn(1, 2, 3001) * 0.1
    with torch.no_grad():
        y, y4 = m(x), m(4 * x)
    assert (y4 - 4 * y).abs().max() <= 1e-4 * max(1.0, float(y4.abs().max()))
    assert float(y.abs().max()) > 1e-3  # not trivially zero


def test_unidirectional_umx_is_causal():
    """The unidirectional Open-Unmix variant's frame t sees no later frames: changing the input's
    second half leaves the first half's masks alone (up to the STFT window overlap); the
    bidirectional one does not."""
    for arch, causal in [("umx-uni", True), ("umx", False)]:
        m = randomize(tiny(arch))
        x = torch.randn(1, 2, 8192) * 0.1
        x2 = x.clone()
        x2[..., 4096:] = torch.randn(1, 2, 4096) * 0.1
        with torch.no_grad():
            d = (m(x) - m(x2))[..., : 4096 - SPEC["n_fft"]].abs().max()
        assert (float(d) <= 1e-5) == causal, (arch, float(d))


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_forward_is_pure(arch):
    m = randomize(tiny(arch))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 2, 3000)
    with torch.no_grad():
        a, b = m(x), m(x)
        single = m(x[1:])
    assert torch.equal(a, b)
    assert torch.allclose(a[1:], single, atol=1e-6)  # no coupling across the batch in eval mode
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


# ---------------------------------------------------------------- training
class ToyStems(torch.utils.data.Dataset):
    """Five separable 'instruments': noise in five disjoint bands, random gains; mix = sum."""

    def __init__(self, n: int = 10_000, T: int = 4096):
        self.n, self.T = n, T

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        spec = rng.standard_normal((5, 2, self.T // 2 + 1)) + 1j * rng.standard_normal((5, 2, self.T // 2 + 1))
        band = np.zeros((5, 1, self.T // 2 + 1))
        for k, (lo, hi) in enumerate([(5, 40), (60, 120), (150, 260), (300, 420), (450, 600)]):
            band[k, :, lo:hi] = 1.0
        stems = np.fft.irfft(spec * band, n=self.T).astype(np.float32)
        stems *= (0.2 * 10 ** rng.uniform(-0.5, 0.0, (5, 1, 1)) / stems.std(axis=-1, keepdims=True)).astype(np.float32)
        return {"mix": torch.from_numpy(stems.sum(0)), "stems": torch.from_numpy(stems)}


def toy_valid():
    ds = ToyStems(T=2 * 44100)
    return [(f"toy{i}", ds[10_000 + i]["stems"].numpy()) for i in range(2)]


def cfg(out, steps, **kw):
    base = dict(data=None, out=str(out), arch="tfctdf", steps=steps, batch_size=2, lr=3e-3, warmup=2,
                model={"channels": [4, 6, 8], "layers": 2, "bf": 4, "fold": 2, **SPEC},
                valid_every=0, workers=0, log_every=1, threads=1)  # tiny ops: a 2nd thread only adds sync
    base.update(kw)
    return TrainConfig(**base)


def _log(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_training_reduces_loss_and_validates(tmp_path):
    res = train(cfg(tmp_path, 60, lr=5e-3, valid_every=60), ToyStems(), toy_valid(), log=lambda m: None)
    recs = _log(tmp_path / "log.jsonl")
    losses = [r["loss"] for r in recs if r["type"] == "train"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    kinds = [r["type"] for r in recs]
    assert "baseline" in kinds and "valid" in kinds
    valid = [r for r in recs if r["type"] == "valid"][-1]
    base = [r for r in recs if r["type"] == "baseline"][0]
    assert valid["mean"] > base["mixture"]["mean"]  # learnt something beyond "return the mix"
    assert res["best"]["step"] == 60 and os.path.exists(tmp_path / "best.pt")
    ck = load_checkpoint(str(tmp_path / "best.pt"))  # weights_only loading works
    assert ck["model_config"]["arch"] == "tfctdf"


@pytest.mark.parametrize("arch", WAVEFORM)
def test_waveform_models_train_with_waveform_l1(tmp_path, arch):
    """Conv-TasNet and Demucs learn the toy bands from the waveform L1 alone (spec_weight 0)."""
    model = tiny(arch).config()
    model.pop("arch")
    res = train(cfg(tmp_path, 40, arch=arch, model=model, loss="l1", spec_weight=0.0, lr=1e-2), ToyStems(),
                log=lambda m: None)
    losses = [r["loss"] for r in _log(tmp_path / "log.jsonl") if r["type"] == "train"]
    assert res["step"] == 40 and all(r == 0.0 for r in
                                     [x["spec"] for x in _log(tmp_path / "log.jsonl") if x["type"] == "train"])
    # 40 steps on random-phase noise bands is little for a waveform model; a broken one stays at 1.0.
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3])


def test_masked_magnitudes_shortcut(tmp_path):
    """Open-Unmix's loss path: the masked magnitudes sum over stems to the mixture magnitude (the
    softmax masks sum to one), and training on them lowers the loss."""
    from dawsep.train.separation_losses import spectral_mask_loss

    m = randomize(tiny("umx"))
    x = torch.randn(2, 2, 5000) * 0.3
    with torch.no_grad():
        E = m.masked_magnitudes(x)
        X = m.stft(x)[..., : SPEC["n_bins"], :].pow(2).sum(2).sqrt()
        assert torch.allclose(E.sum(1), X, rtol=1e-4, atol=1e-5)
        loss, parts = spectral_mask_loss(m, x, torch.stack([x / 5] * 5, 1))
        assert parts["spec"] == pytest.approx(float(loss)) and float(loss) > 0
    with pytest.raises(ValueError):
        tiny("unet").masked_magnitudes(x)
    model = tiny("umx").config()
    model.pop("arch")
    train(cfg(tmp_path, 40, arch="umx", model=model, loss="mse_mag_spec", lr=1e-2), ToyStems(), log=lambda m: None)
    losses = [r["loss"] for r in _log(tmp_path / "log.jsonl") if r["type"] == "train"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


def test_resume_continues_identically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg(a, 6, arch="unet", model={"channels": [4, 8, 8], **SPEC}), ToyStems(), log=lambda m: None)
    train(cfg(b, 6, arch="unet", model={"channels": [4, 8, 8], **SPEC}), ToyStems(), log=lambda m: None, until=3)
    assert load_checkpoint(str(b / "last.pt"))["step"] == 3
    train(cfg(b, 6, arch="unet", model={"channels": [4, 8, 8], **SPEC}), ToyStems(), log=lambda m: None)
    ka, kb = load_checkpoint(str(a / "last.pt")), load_checkpoint(str(b / "last.pt"))
    assert ka["step"] == kb["step"] == 6
    for k in ka["model"]:
        assert torch.equal(ka["model"][k], kb["model"][k]), k
    la = [r["loss"] for r in _log(a / "log.jsonl")]
    lb = [r["loss"] for r in _log(b / "log.jsonl")]
    assert la == lb


def test_weight_average_is_validated_kept_and_resumed(tmp_path):
    """With ema_decay the separator validates and keeps (best.pt) the averaged weights, and a
    resumed run continues the average exactly."""
    a, b = tmp_path / "a", tmp_path / "b"
    kw = dict(arch="unet", model={"channels": [4, 8, 8], **SPEC}, ema_decay=0.7, valid_every=6)
    train(cfg(a, 6, **kw), ToyStems(), toy_valid(), log=lambda m: None)
    train(cfg(b, 6, **kw), ToyStems(), toy_valid(), log=lambda m: None, until=3)
    train(cfg(b, 6, **kw), ToyStems(), toy_valid(), log=lambda m: None)
    ka, kb = load_checkpoint(str(a / "last.pt")), load_checkpoint(str(b / "last.pt"))
    for k in ka["model"]:
        assert torch.equal(ka["ema"][k], kb["ema"][k]), k
    best = load_checkpoint(str(a / "best.pt"))
    assert best["step"] == 6 and best["train_config"]["ema_decay"] == 0.7
    assert any(not torch.equal(ka["model"][k], ka["ema"][k]) for k in ka["model"] if ka["model"][k].is_floating_point())
    for k in ka["model"]:
        assert torch.equal(best["model"][k], ka["ema"][k]), k


def test_sdr_conventions():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 3 * 44100)).astype(np.float32)
    assert sdr_song(ref, ref + 0.1 * ref) == pytest.approx(20.0, abs=1e-3)
    ref[:, :44100] = 0  # a silent chunk is skipped, not -inf
    assert sdr_song(ref, ref * 0.9) == pytest.approx(20.0, abs=1e-3)
    assert np.isnan(sdr_song(np.zeros((2, 44100)), np.ones((2, 44100))))


# ---------------------------------------------------------------- export
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_onnx_export_parity_and_metadata(tmp_path, arch):
    m = randomize(tiny(arch))
    out = str(tmp_path / f"{arch}.onnx")
    if arch.startswith("unet"):  # also the full-band graph (what shipping exports)
        m2 = build(dict(m.config(), full_band=True))
        m2.load_state_dict(m.state_dict())
        m = m2.eval()
    fig = export_model(m, out, segment_seconds=1.0, bench=False)
    assert fig["onnx_parity_max_abs"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["dawsep.kind"] == "separator"
    assert json.loads(meta["dawsep.stems"]) == ["piano", "bass", "drums", "guitar", "other"]
    assert meta["dawsep.sample_rate"] == "44100"
    assert int(meta["dawsep.segment_samples"]) == fig["segment_samples"] > 0
    assert json.loads(meta["dawsep.architecture"])["arch"] == arch.split("-")[0]
    for key in ("dawsep.version", "dawsep.train_data", "dawsep.metrics"):
        assert meta[key]
    json.loads(meta["dawsep.metrics"])
    sess = ort_session(out)
    assert [i.name for i in sess.get_inputs()] == ["mix"] and [o.name for o in sess.get_outputs()] == ["stems"]
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (3, 2, 2345)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert np.abs(sess.run(None, {"mix": x})[0] - ref).max() <= 1e-4
    # The runtime takes any architecture through the same Separator: input length and stems kept.
    from dawsep.separate import Separator

    stems = Separator(out, segment_seconds=0.05, threads=1).separate(x[0, :, :2001], 44100)
    assert list(stems) == ["piano", "bass", "drums", "guitar", "other"]
    assert all(v.shape == (2, 2001) and np.isfinite(v).all() for v in stems.values())


def test_cli_export_from_checkpoint(tmp_path):
    from click.testing import CliRunner

    from dawsep.train.cli import main

    train(cfg(tmp_path / "run", 2), ToyStems(), log=lambda m: None)
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["separator", "export", "--ckpt", str(tmp_path / "run" / "last.pt"),
                                  "--out", str(out), "--segment-seconds", "1", "--no-bench"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["onnx_parity_max_abs"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["dawsep.metrics"])["step"] == 2


def test_cli_resume_keeps_the_runs_options_unless_given(monkeypatch, tmp_path):
    """``separator train --out RUN`` on an existing run continues its recipe (loss, kinds,
    learning rate...) for options left at their defaults; options given on the line win."""
    from click.testing import CliRunner

    import dawsep.train.train_separator as tsep
    from dawsep.train.cli import main
    from dawsep.train.run_folder import save_atomic

    run = tmp_path / "run"
    run.mkdir()
    saved = tsep.TrainConfig(data=str(tmp_path), out=str(run), loss="mse_mag", kinds=("gen",), lr=3e-4, steps=2300)
    save_atomic({"train_config": saved.to_dict()}, str(run / "last.pt"))
    seen = []
    monkeypatch.setattr(tsep, "train", lambda cfg, *a, **kw: seen.append(cfg) or {})
    r = CliRunner().invoke(main, ["separator", "train", "--data", str(tmp_path), "--out", str(run), "--steps", "4000"])
    assert r.exit_code == 0, r.output
    cfg = seen[-1]
    assert cfg.loss == "mse_mag" and cfg.kinds == ("gen",) and cfg.lr == 3e-4
    assert cfg.steps == 4000  # given on the line
