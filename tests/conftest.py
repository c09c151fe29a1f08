"""Shared fixtures: tiny ONNX models exported from random-weight torch modules (seconds, not hours).

Random weights are fine here: the tests check plumbing and physics (lengths, chunking,
mixture consistency, streaming == offline), never separation quality. The head is given
large random weights so the masks really depend on the input (the trained-from-scratch
initialisation would make every stem ``mix / 5``, hiding chunking mistakes).
"""
from __future__ import annotations

import dataclasses

import pytest

TINY_SEGMENT_SECONDS = 0.25


@pytest.fixture(scope="session")
def tiny_separator(tmp_path_factory) -> str:
    """Path of a tiny 5-stem softmax-mask U-Net separator ONNX (44.1 kHz, 0.25 s segments)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from dawsep.train.separators import UNetMask
    from dawsep.train.export.separator import export_model

    torch.manual_seed(0)
    model = UNetMask(channels=(4, 8), n_fft=256, hop=128, n_bins=64, mask="softmax")
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("models") / "tiny-separator.onnx"
    export_model(model.eval(), str(path), segment_seconds=TINY_SEGMENT_SECONDS, bench=False)
    return str(path)


def with_model(preset, model_path: str):
    """``preset`` with its ``[separate]`` model replaced (shipped presets name the default)."""
    if preset.separate is None:
        return preset
    return dataclasses.replace(preset, separate=dataclasses.replace(preset.separate, model=model_path))


@pytest.fixture(scope="session")
def tiny_transcriber(tmp_path_factory) -> str:
    """Path of a tiny random-weight transcriber ONNX (16 kHz, hop 320, 1 s segments)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from dawsep.train.transcriber import PianoTranscriber, TranscriberConfig
    from dawsep.train.export.transcriber import export

    torch.manual_seed(0)
    cfg = TranscriberConfig(n_fft=1024, n_mels=32, conv1=4, conv2=4, d_model=16, rnn=8, rnn_aux=8)
    model = PianoTranscriber(cfg).eval()
    path = tmp_path_factory.mktemp("models") / "tiny-transcriber.onnx"
    export(model, str(path), segment_samples=16000, rtf_seconds=None)
    return str(path)
