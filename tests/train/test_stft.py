"""The in-graph STFT/iSTFT (``dawsep.train.stft``): the two-stage matmul DFT against a direct numpy
reference over many sizes, perfect reconstruction, the band-limited inverse, no stored tables or
state-dict keys, and ONNX Runtime parity of the transforms and of a tiny separator."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dawsep.train.separators import TFCTDFUNet  # noqa: E402
from dawsep.train.stft import ISTFT, STFT, _split  # noqa: E402
from dawsep.train.export.separator import export_model  # noqa: E402

# (n_fft, hop, n_bins): the shipped separators' and transcriber's, hops that do not divide n_fft,
# non-powers of two (other factorisations: 384 = 16*24, 30 = 5*6, 34 = 2*17).
CASES = [(2048, 1024, 1025), (2048, 1024, 768), (2048, 320, 1025), (4096, 1024, None), (256, 64, 40),
         (256, 96, 100), (384, 128, None), (30, 7, None), (34, 8, None)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def _np_stft(x: np.ndarray, n_fft: int, hop: int, n_bins: int) -> np.ndarray:
    """Direct float64 reference: ``x [M, T]`` -> ``[M, 2, n_bins, T // hop + 2]``, frame ``j``
    the Hann-windowed samples ``[j*hop - n_fft/2, j*hop + n_fft/2)`` (zeros outside)."""
    n_frames = x.shape[-1] // hop + 2
    y = np.pad(x.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2 + hop)))
    frames = np.stack([y[:, j * hop: j * hop + n_fft] for j in range(n_frames)], -1)  # [M, n, N]
    X = np.fft.rfft(frames * _hann(n_fft)[:, None], axis=1)[:, :n_bins]
    return np.stack([X.real, X.imag], 1)


def _np_istft(X: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Reference inverse of ``X [M, 2, n_bins, N]``: bins above ``n_bins`` zero, the imaginary
    parts of DC and Nyquist ignored (``irfft``), windowed overlap-add / overlap-added ``w^2``."""
    m, _, f, n_frames = X.shape
    Z = np.zeros((m, n_fft // 2 + 1, n_frames), np.complex128)
    Z[:, :f] = X[:, 0] + 1j * X[:, 1]
    frames = np.fft.irfft(Z, n_fft, axis=1) * _hann(n_fft)[:, None]
    out = np.zeros((m, (n_frames - 1) * hop + n_fft))
    wsum = np.zeros(out.shape[-1])
    for j in range(n_frames):
        out[:, j * hop: j * hop + n_fft] += frames[:, :, j]
        wsum[j * hop: j * hop + n_fft] += _hann(n_fft) ** 2
    a = n_fft // 2
    return out[:, a: a + length] / wsum[a: a + length]


def test_split_factorises():
    for n in (2048, 4096, 384, 30, 17, 1):
        a, b = _split(n)
        assert a * b == n and a <= b and (a * a <= n)
    assert _split(2048) == (32, 64) and _split(17) == (1, 17)


@pytest.mark.parametrize("n_fft,hop,n_bins", CASES)
def test_matmul_stft_matches_direct_reference(n_fft, hop, n_bins):
    f = n_bins or n_fft // 2 + 1
    g = torch.Generator().manual_seed(n_fft + hop)
    for T in (1, n_fft // 2 - 1, 3 * n_fft + 5):
        x = torch.rand(2, 3, T, generator=g) - 0.5
        ref = _np_stft(x.reshape(6, T).numpy(), n_fft, hop, f).reshape(2, 3, 2, f, -1)
        for fft in (False, True):  # the graph form and the eager FFT are the same transform
            X = STFT(n_fft, hop, n_bins, use_fft=fft)(x)
            assert X.shape == ref.shape
            err = float(np.abs(X.numpy() - ref).max())
            assert err <= 2e-7 * np.sqrt(n_fft) * max(1.0, float(np.abs(ref).max())), (fft, T, err)


def test_normalized_scale():
    x = torch.rand(1, 1, 5000) - 0.5
    a = STFT(512, 128, normalized=True, use_fft=False)(x)
    b = STFT(512, 128, use_fft=False)(x) / np.sqrt(np.sum(_hann(512) ** 2))
    assert (a - b).abs().max() <= 1e-6 * b.abs().max()


@pytest.mark.parametrize("n_fft,hop,n_bins", CASES)
def test_matmul_istft_matches_reference_band_limited(n_fft, hop, n_bins):
    """Any spectrum (not only a consistent one): the one-sided inverse with DC/Nyquist counted
    once, bins above the cut-off taken as zero, divided by the overlap-added window."""
    f = n_bins or n_fft // 2 + 1
    g = torch.Generator().manual_seed(7 * n_fft + hop)
    for n_frames in (2, 9):
        length = (n_frames - 2) * hop + hop // 2 + 1
        X = torch.randn(2, 2, 2, f, n_frames, generator=g)
        ref = _np_istft(X.reshape(4, 2, f, n_frames).numpy(), n_fft, hop, length).reshape(2, 2, length)
        for fft in (False, True):
            y = ISTFT(n_fft, hop, n_bins, use_fft=fft)(X, length)
            assert y.shape == ref.shape
            err = float(np.abs(y.numpy() - ref).max())
            assert err <= 1e-5 * max(1.0, float(np.abs(ref).max())), (fft, n_frames, err)


@pytest.mark.parametrize("n_fft,hop", [(n, h) for n, h, _ in CASES])
def test_perfect_reconstruction(n_fft, hop):
    g = torch.Generator().manual_seed(3)
    for T in (1, 100, 2 * n_fft + 3):
        x = torch.randn(2, 2, T, generator=g)
        for fft in (False, True):
            y = ISTFT(n_fft, hop, use_fft=fft)(STFT(n_fft, hop, use_fft=fft)(x), T)
            assert y.shape == x.shape
            assert (y - x).abs().max() <= 1e-5 * max(1.0, float(x.abs().max()))


def test_no_state():
    """No tables and no state-dict keys: old checkpoints load into models holding these modules,
    and an export holds no initializer that is not a trained weight (init_from maps every one)."""
    for m in (STFT(2048, 1024, 768), ISTFT(2048, 1024, 768), STFT(2048, 320)):
        assert m.state_dict() == {} and not list(m.buffers()) and not list(m.parameters())


class _RoundTrip(torch.nn.Module):
    def __init__(self, n_fft: int, hop: int, n_bins: int):
        super().__init__()
        self.a, self.b = STFT(n_fft, hop, n_bins), ISTFT(n_fft, hop, n_bins)

    def forward(self, x):
        X = self.a(x)
        return self.b(X * torch.tanh(X), x.shape[-1]), X  # a nonlinear spectral edit, like a mask


@pytest.mark.parametrize("n_fft,hop,n_bins", [(2048, 1024, 1025), (2048, 320, 1025), (256, 96, 100)])
def test_onnx_matches_torch_at_untraced_lengths(n_fft, hop, n_bins):
    m, buf = _RoundTrip(n_fft, hop, n_bins), io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 2, 4 * n_fft),), buf, opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y", "X"],
                          dynamic_axes={"x": {0: "b", 2: "t"}, "y": {0: "b", 2: "t"}, "X": {0: "b", 4: "n"}})
    proto = onnx.load_from_string(buf.getvalue())
    assert not proto.graph.initializer  # tables generated in-graph, nothing stored
    ops = {n.op_type for n in proto.graph.node}
    assert "MatMul" in ops and not ops & {"Conv", "ConvTranspose"}
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for shape in [(1, 2, 4 * n_fft), (3, 2, 7777), (2, 2, 300), (1, 2, 1)]:
        x = torch.rand(*shape, generator=g) - 0.5
        y, X = sess.run(None, {"x": x.numpy()})
        with torch.no_grad():
            ry, rX = m(x)  # eager: the FFT path
        assert y.shape == shape and X.shape == tuple(rX.shape)
        assert np.abs(X - rX.numpy()).max() <= 1e-5 * max(1.0, float(rX.abs().max()))
        assert np.abs(y - ry.numpy()).max() <= 1e-4


def test_tiny_separator_export_parity(tmp_path):
    """A tiny mask model (full band, as shipped) through the exporter: ONNX Runtime (matmul DFT)
    against eager torch (FFT) within 1e-4, and the graph holds only trained weights."""
    torch.manual_seed(0)
    model = TFCTDFUNet(channels=(4, 6, 8), layers=2, bf=4, fold=2, n_fft=512, hop=256, n_bins=128,
                       mask="softmax", full_band=True).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape) * 0.3)  # masks far from uniform
    out = str(tmp_path / "tiny.onnx")
    fig = export_model(model, out, segment_seconds=0.5, bench=False)
    assert fig["onnx_parity_max_abs"] <= 1e-4
    proto = onnx.load(out)
    n_weights = len([k for k in model.state_dict() if not k.endswith("num_batches_tracked")])
    assert len(proto.graph.initializer) <= n_weights
    assert not {n.op_type for n in proto.graph.node if "stft" in n.name} & {"Conv", "ConvTranspose"}
