"""Transcription metrics beyond note F1: pedal-down frame F1 and velocity error (issue 19)."""
from __future__ import annotations

import numpy as np
import pytest

from dawsep.train.evaluate import f1_of, pedal_counts, pedal_spans, velocity_errors


def test_pedal_spans_from_cc64_events():
    ev = np.array([[0.5, 127], [0.9, 100], [1.5, 0], [2.0, 64], [3.0, 10], [4.0, 127]])
    assert pedal_spans(ev, 5.0).tolist() == [[0.5, 1.5], [2.0, 3.0], [4.0, 5.0]]
    assert pedal_spans(np.zeros((0, 2)), 5.0).shape == (0, 2)
    assert pedal_spans(np.array([[6.0, 127]]), 5.0).shape == (0, 2)  # after the excerpt


def test_pedal_f1_counts_down_frames():
    ref = np.array([[1.0, 2.0]])
    assert f1_of(pedal_counts(ref, ref, 3.0)) == 1.0
    half = pedal_counts(ref, np.array([[1.5, 2.5]]), 3.0)  # 0.5 s overlap of 1 s each
    assert half.tolist() == [50, 100, 100] and f1_of(half) == pytest.approx(0.5)
    assert f1_of(pedal_counts(ref, np.zeros((0, 2)), 3.0)) == 0.0


def test_velocity_errors_over_onset_matched_notes():
    pytest.importorskip("mir_eval")
    ref = np.array([[0.0, 0.5, 60, 80], [1.0, 1.5, 64, 40], [2.0, 2.5, 67, 100]])
    est = np.array([[0.02, 0.4, 60, 70], [1.03, 1.4, 64, 52], [2.3, 2.6, 67, 100], [0.0, 0.3, 72, 90]])
    # the third is 300 ms late (unmatched); the extra C5 matches nothing
    assert sorted(velocity_errors(ref, est).tolist()) == [10.0, 12.0]
    assert velocity_errors(ref, np.zeros((0, 4))).size == 0
