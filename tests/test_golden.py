"""Golden outputs of the shipped models (as basic-pitch's test_inference pins its model).

The first ``SECONDS`` of the bundled demo song (a held-out soundfont) through the packaged default
separator and transcriber, compared with ``tests/golden/shipped_models.npz`` (written by
``scripts/make_goldens.py``): exact outputs to ``ATOL`` where stored exactly, frame energies to a
relative tolerance, and quality floors (piano SDR against the true piano stem, note F1 against its
MIDI). A model, runtime or chunking change that moves what users get fails here; one that is
meant to (a newly shipped model) regenerates the file in the same commit.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dawsep.audio import load

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(os.path.dirname(HERE), "demo")
GOLDEN = os.path.join(HERE, "golden", "shipped_models.npz")
SECONDS = 8.0
SR = 44100
EXACT = slice(int(3.0 * SR), int(3.05 * SR))  # 50 ms stored sample by sample
FRAME = 4410  # 100 ms energy frames
ATOL = 1e-4
#: How far quality may fall below the stored figure before the test fails.
SDR_MARGIN_DB, F1_MARGIN = 0.5, 0.05


def _frame_rms(x: np.ndarray) -> np.ndarray:
    """``(..., T)`` -> ``(..., T // FRAME)`` RMS per 100 ms frame."""
    n = x.shape[-1] // FRAME
    return np.sqrt((x[..., : n * FRAME].reshape(*x.shape[:-1], n, FRAME) ** 2).mean(-1))


def _sdr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / (((ref - est) ** 2).sum() + 1e-12) + 1e-12))


def _note_f1(ref: np.ndarray, est: list, tol_s: float = 0.05) -> float:
    """Onset-only note F1 (greedy one-to-one matching within ``tol_s`` at the same pitch)."""
    used, tp = set(), 0
    for on, _, p, _ in ref:
        for i, n in enumerate(est):
            if i not in used and n.pitch == int(p) and abs(n.start_s - on) <= tol_s:
                used.add(i)
                tp += 1
                break
    return 2 * tp / (len(ref) + len(est)) if len(ref) + len(est) else 1.0


def _label_notes(path: str, seconds: float) -> np.ndarray:
    """(N, 4) onset_s, offset_s, pitch, velocity of a MIDI file's notes starting before ``seconds``."""
    import mido

    t, active, out = 0.0, {}, []
    for msg in mido.MidiFile(path):
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            active[msg.note] = (t, msg.velocity)
        elif msg.type in ("note_on", "note_off") and msg.note in active:
            on, vel = active.pop(msg.note)
            out.append((on, t, msg.note, vel))
    arr = np.array(sorted(out), dtype=np.float64).reshape(-1, 4)
    return arr[arr[:, 0] < seconds - 0.05]


def measure() -> dict:
    """Run the shipped models on the demo excerpt; arrays to compare and figures to floor."""
    from dawsep.separate import Separator
    from dawsep.transcribe import Transcriber

    n = int(SECONDS * SR)
    mix, sr = load(os.path.join(DEMO, "demo_song.flac"))
    mix = mix[:, :n]
    piano_ref, _ = load(os.path.join(DEMO, "demo_song.reference", "piano.flac"))
    piano_ref = piano_ref[:, :n]
    sep = Separator("default", threads=1)
    stems = sep.separate_array(mix)  # (S, 2, n)
    k = sep.stems.index("piano")
    tr = Transcriber("default", threads=1)
    post = tr.posteriors(piano_ref, sr)
    notes = tr.transcribe(piano_ref, sr).notes
    ref_notes = _label_notes(os.path.join(DEMO, "demo_song.reference", "piano.mid"), SECONDS)
    return {
        "stems_exact": stems[..., EXACT].astype(np.float32),
        "stems_rms": _frame_rms(stems).astype(np.float32),
        "onset": post["onset"].astype(np.float32),
        "frame": post["frame"].astype(np.float32),
        "n_notes": len(notes),
        "piano_sdr_db": round(_sdr(piano_ref, stems[k]), 3),
        "note_f1_clean": round(_note_f1(ref_notes, notes), 4),
        "stems": list(sep.stems),
    }


@pytest.fixture(scope="module")
def golden():
    if not os.path.exists(GOLDEN):
        pytest.fail(f"{GOLDEN} missing: run scripts/make_goldens.py")
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files if k != "meta"} | json.loads(str(z["meta"]))


@pytest.fixture(scope="module")
def now():
    return measure()


def test_separator_output_is_pinned(golden, now):
    assert now["stems"] == golden["stems"]
    assert np.abs(now["stems_exact"] - golden["stems_exact"]).max() <= ATOL
    assert np.allclose(now["stems_rms"], golden["stems_rms"], rtol=1e-3, atol=ATOL)


def test_transcriber_output_is_pinned(golden, now):
    for k in ("onset", "frame"):
        assert now[k].shape == golden[k].shape
        assert np.abs(now[k] - golden[k]).max() <= ATOL, k
    assert now["n_notes"] == golden["n_notes"]


def test_quality_floors(golden, now):
    assert now["piano_sdr_db"] >= golden["piano_sdr_db"] - SDR_MARGIN_DB
    assert now["note_f1_clean"] >= golden["note_f1_clean"] - F1_MARGIN
    # and the models do something: better than silence and than no notes at all
    assert now["note_f1_clean"] > 0.3
