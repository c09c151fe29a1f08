"""Separation quality on the held-out test split, through the shipped runtime path.

Models are run as users run them: the ONNX file through :class:`dawsep.separate.Separator`
(chunking and cross-fades included), never the torch module. Songs are the ``test`` split's
mixtures (kinds ``gen`` and ``m21``: every stem rendered), whose soundfonts (MuseScore General)
and music21 composers never appear in training or validation.

Metric (docs/separation.md conventions): per stem and song, 10·log10(|s|²/|s − ŝ|²) on 1 s chunks,
median over chunks whose reference is not silent, then median over songs
(:mod:`dawsep.metrics`). It is the energy-ratio SDR of the MDX
challenges, chunked as museval does, without BSSEval's 512-tap distortion filter (which would
forgive linear filtering and cost minutes per song on 2 cores); beside it the same metric for
the mixture-as-estimate (floor) and the IRM oracle (masking upper bound) on the same audio.
"""
from __future__ import annotations

import dataclasses

import os
import time

import numpy as np

from dawsep.metrics import sdr_stems, summarize
from dawsep.train.data.score import STEMS


def test_songs(root: str, limit: int | None = None, seconds: float | None = None):
    """``[(name, stems (5, 2, T))]`` for the test split's full-band mixtures (evenly spaced if limited)."""
    from dawsep.train.data.dataset import load_songs, read_excerpt

    songs = load_songs(root, "test", ("gen", "m21"))
    if not songs:
        raise FileNotFoundError(f"no test songs under {root}; build the corpus with `make data`")
    if limit and limit < len(songs):
        idx = np.unique(np.linspace(0, len(songs) - 1, limit).round().astype(int))
        songs = [songs[i] for i in idx]
    out = []
    for s in songs:
        n = s.samples if seconds is None else min(s.samples, int(seconds * 44100))
        out.append((s.meta["name"], np.stack([read_excerpt(s, k, 0, n) for k in STEMS])))
    return out


def irm_oracle(stems: np.ndarray, n_fft: int, hop: int, n_bins: int) -> np.ndarray:
    """Ideal ratio mask (power, mixture phase) from the true stems, with the model's STFT and
    cut-off: the upper bound of a real-valued mask. ``stems [S, 2, T]`` -> ``[S, 2, T]``."""
    import torch

    from dawsep.train.stft import ISTFT, STFT

    x = torch.from_numpy(np.ascontiguousarray(stems, np.float32))
    S = STFT(n_fft, hop, n_bins, use_fft=True)(x)  # [S, 2, 2, F, N]
    p = S.pow(2).sum(2, keepdim=True)
    mask = p / (p.sum(0, keepdim=True) + 1e-12)
    X = S.sum(0, keepdim=True)
    return ISTFT(n_fft, hop, n_bins, use_fft=True)(mask * X, x.shape[-1]).numpy()


def baselines(songs, n_fft: int = 2048, hop: int = 1024, n_bins: int = 768) -> dict:
    """Mixture-as-estimate, ``mix / 5`` and the IRM oracle (with the model's STFT and cut-off)."""
    mix_rows, uni_rows, irm_rows = [], [], []
    for _, stems in songs:
        mix = stems.sum(0)
        mix_rows.append(sdr_stems(stems, np.broadcast_to(mix, stems.shape)))
        uni_rows.append(sdr_stems(stems, np.broadcast_to(mix / len(stems), stems.shape)))
        irm_rows.append(sdr_stems(stems, irm_oracle(stems, n_fft, hop, n_bins)))
    return {"mixture": summarize(mix_rows), "uniform": summarize(uni_rows), "irm": summarize(irm_rows)}


def evaluate_model(model_path: str, songs, threads: int = 2, overlap: float | None = None,
                   segment_seconds: float | None = None, **separator_options) -> dict:
    """SDR table of one separator ONNX over ``songs``, plus its real-time factor on them.
    ``segment_seconds`` (default: the model's) and ``separator_options`` (e.g. ``phase``) go to
    :class:`~dawsep.separate.Separator`."""
    from dawsep.separate import DEFAULT_OVERLAP, Separator

    sep = Separator(model_path, threads=threads, overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                    segment_seconds=segment_seconds, **separator_options)
    order = [sep.stems.index(s) for s in STEMS]
    rows, audio_s, wall = [], 0.0, 0.0
    for _, stems in songs:
        mix = stems.sum(0)
        t = time.perf_counter()
        est = sep.separate_array(mix)[order]
        wall += time.perf_counter() - t
        audio_s += mix.shape[1] / sep.sample_rate
        rows.append(sdr_stems(stems, est))
    res = summarize(rows)
    res.update(songs=len(rows), rtf=round(audio_s / wall, 2), threads=threads,
               bytes=os.path.getsize(sep.info.path), arch=sep.info.architecture.get("arch"))
    return res


# ------------------------------------------------------------- transcription ----
# mir_eval (the `bench` extra) scores notes; reference notes are the test songs' piano.mid.

FRAME_S = 0.01  # frame-F1 grid
SCORES = ("note", "note+offset", "note+velocity", "frame")


def transcription_songs(root: str, limit: int, seconds: float, split: str = "test", separated: bool = False):
    """Songs with piano (the test split unless told): ``[(name, piano (2, T), mix (2, T), notes (N, 4)
    onset/offset/pitch/velocity, pedal spans (K, 2)[, separated piano (2, T) or None])]``, evenly
    spaced over the split, the first ``seconds`` of each (notes cut there). ``separated``: add the
    shipped separator's piano where ``dawsep-train data separate-piano`` wrote one."""
    from dawsep.train.data.dataset import load_songs, read_excerpt
    from dawsep.train.data.score import read_label_midi
    from dawsep.train.data.separated import SEPARATED_STEM, has_separated

    songs = [s for s in load_songs(root, split, None) if s.meta.get("piano_notes", 0) > 0]
    if not songs:
        raise FileNotFoundError(f"no {split} songs with piano under {root}; build the corpus with `make data`")
    idx = np.unique(np.linspace(0, len(songs) - 1, min(limit, len(songs))).round().astype(int))
    out = []
    for i in idx:
        s = songs[i]
        n = min(s.samples, int(seconds * 44100))
        stems = np.stack([read_excerpt(s, k, 0, n) for k in STEMS])
        notes, pedal = read_label_midi(os.path.join(s.path, "piano.mid"))
        notes = notes[notes[:, 0] < n / 44100 - 0.05]
        notes[:, 1] = np.minimum(notes[:, 1], n / 44100)
        row = (s.meta["name"], stems[0], stems.sum(0), notes, pedal_spans(pedal, n / 44100))
        if separated:
            row += (read_excerpt(s, SEPARATED_STEM, 0, n) if has_separated(s.path) else None,)
        out.append(row)
    return out


def pedal_spans(events: np.ndarray, duration: float) -> np.ndarray:
    """CC64 events ``(M, 2)`` [time s, value] -> ``(K, 2)`` [down s, up s] spans (>= 64 is down)."""
    spans, down = [], None
    for t, v in events:
        if v >= 64 and down is None:
            down = float(t)
        elif v < 64 and down is not None:
            spans.append((down, float(t)))
            down = None
    if down is not None:
        spans.append((down, duration))
    return np.array([(a, min(b, duration)) for a, b in spans if a < duration], float).reshape(-1, 2)


def pedal_counts(ref: np.ndarray, est: np.ndarray, duration: float) -> np.ndarray:
    """``(3,)`` (matched, n_ref, n_est) 10 ms frames with the pedal down: pedal on/off F1's counts."""
    def roll(spans):
        r = np.zeros(int(np.ceil(duration / FRAME_S)) + 1, bool)
        for a, b in spans:
            r[int(round(a / FRAME_S)):int(round(b / FRAME_S))] = True
        return r
    a, b = roll(ref), roll(est)
    return np.array([(a & b).sum(), a.sum(), b.sum()], float)


def velocity_errors(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    """|velocity error| in MIDI units of every note matched on onset (50 ms) and pitch."""
    import mir_eval

    if not (len(ref) and len(est)):
        return np.zeros(0)
    hz = lambda p: 440.0 * 2.0 ** ((np.asarray(p, float) - 69) / 12)  # noqa: E731
    ri = np.maximum(ref[:, :2], ref[:, :1] + np.array([[0, 1e-3]]))
    ei = np.maximum(est[:, :2], est[:, :1] + np.array([[0, 1e-3]]))
    pairs = mir_eval.transcription.match_notes(ri, hz(ref[:, 2]), ei, hz(est[:, 2]), offset_ratio=None)
    return np.array([abs(ref[i, 3] - est[j, 3]) for i, j in pairs], float)


def _roll(notes: np.ndarray, duration: float) -> np.ndarray:
    roll = np.zeros((int(np.ceil(duration / FRAME_S)) + 1, 128), bool)
    for on, off, p, _ in notes:
        a = int(round(on / FRAME_S))
        roll[a:max(int(round(off / FRAME_S)), a + 1), int(p)] = True
    return roll


def transcription_counts(ref: np.ndarray, est: np.ndarray, duration: float) -> np.ndarray:
    """``(4, 3)`` counts (matched, n_ref, n_est) for ``SCORES``: mir_eval note matching with onsets
    within 50 ms (offsets ignored / within 20% or 50 ms / velocity-aware) and a 10 ms frame grid.
    Notes are ``(N, 4)`` rows of onset s, offset s, MIDI pitch, velocity."""
    import mir_eval

    def hz(p):
        return 440.0 * 2.0 ** ((np.asarray(p, float) - 69) / 12)

    out = np.zeros((4, 3))
    if len(ref) and len(est):
        # mir_eval wants strictly positive durations
        ri = np.maximum(ref[:, :2], ref[:, :1] + np.array([[0, 1e-3]]))
        ei = np.maximum(est[:, :2], est[:, :1] + np.array([[0, 1e-3]]))
        rp, ep = hz(ref[:, 2]), hz(est[:, 2])
        out[0, 0] = len(mir_eval.transcription.match_notes(ri, rp, ei, ep, offset_ratio=None))
        out[1, 0] = len(mir_eval.transcription.match_notes(ri, rp, ei, ep, offset_ratio=0.2))
        out[2, 0] = len(mir_eval.transcription_velocity.match_notes(ri, rp, ref[:, 3], ei, ep, est[:, 3],
                                                                    offset_ratio=None))
    out[:3, 1], out[:3, 2] = len(ref), len(est)
    a, b = _roll(ref, duration), _roll(est, duration)
    out[3] = ((a & b).sum(), a.sum(), b.sum())
    return out


def notes_array(notes) -> np.ndarray:
    """``NoteEvent``s -> ``(N, 4)`` rows of onset s, offset s, MIDI pitch, velocity (the scoring layout)."""
    return np.array([(n.start_s, n.end_s, n.pitch, n.velocity) for n in notes], float).reshape(-1, 4)


def f1_of(counts) -> float:
    tp, n_ref, n_est = counts
    p, r = (tp / n_est if n_est else 0.0), (tp / n_ref if n_ref else 0.0)
    return float(2 * p * r / (p + r)) if p + r else 0.0


def evaluate_transcriber(model_path: str, songs, separator=None, threads: int = 2, options=None) -> dict:
    """F1 per score for the clean stem and the mixture (and the separated stem with ``separator``),
    decoded with ``options`` (default: ``DecodeOptions()``, what users get; ``dawsep/defaults.py``)."""
    from dawsep.transcribe import DecodeOptions, Transcriber

    tr = Transcriber(model_path, threads=threads)
    opts = options or DecodeOptions()
    conds = {"clean": lambda s: s[1], "mix": lambda s: s[2]}
    if separator is not None:
        k = separator.stems.index("piano")
        conds["separated"] = lambda s: separator.separate_array(s[2])[k]
    counts = {c: np.zeros((4, 3)) for c in conds}
    pedal = {c: np.zeros(3) for c in conds}
    vel_err: dict[str, list] = {c: [] for c in conds}
    for s in songs:
        dur = s[1].shape[1] / 44100
        for c, get in conds.items():
            t = tr.transcribe(get(s), 44100, opts)
            est = notes_array(t.notes)
            counts[c] += transcription_counts(s[3], est, dur)
            vel_err[c].extend(velocity_errors(s[3], est))
            if len(s) > 4:
                pedal[c] += pedal_counts(s[4], np.array([(p.start_s, p.end_s) for p in t.pedal], float).reshape(-1, 2), dur)
    res = {c: {name: round(f1_of(counts[c][i]), 4) for i, name in enumerate(SCORES)} for c in conds}
    for c in conds:  # velocity error in MIDI units over onset-matched notes; pedal-down frame F1
        res[c]["velocity_mae"] = round(float(np.mean(vel_err[c])), 2) if vel_err[c] else None
        res[c]["pedal"] = round(f1_of(pedal[c]), 4) if pedal[c][1] else None
    return res | {"songs": len(songs), "notes": int(counts["clean"][0, 1])}


def tune_thresholds(model_path: str, root: str, limit: int = 16, seconds: float = 30.0,
                    onsets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), offsets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0),
                    frames=(0.2, 0.3, 0.4, 0.5, 0.6), threads: int = 2, conditions=("clean", "mix")) -> dict:
    """Decoding thresholds chosen on the **valid** split (the test split only reports): the onset
    threshold by note F1, then, at that onset threshold, the offset threshold by note+offset F1
    (1.0 turns offset peaks off: notes end where their frames stop), then, at both, the frame
    threshold (how long a note is held) by frame F1, reported with the note and note+offset F1
    it gives. The counts of ``conditions`` (``clean``, ``mix``, ``separated``: the shipped
    separator's piano, where the corpus has it) are summed."""
    from dawsep.transcribe import DecodeOptions, Transcriber, decode

    column = {"clean": 1, "mix": 2, "separated": 5}
    bad = set(conditions) - set(column)
    if bad:
        raise ValueError(f"unknown conditions {sorted(bad)}; allowed: {sorted(column)}")
    tr = Transcriber(model_path, threads=threads)
    songs = transcription_songs(root, limit, seconds, split="valid", separated="separated" in conditions)
    posts = [(s, tr.posteriors(s[column[c]], 44100)) for s in songs for c in conditions
             if s[column[c]] is not None]  # solo-piano songs have no separated piano

    def counts(onset, offset, frame=DecodeOptions.frame_threshold):
        c = np.zeros((4, 3))
        for s, post in posts:
            opts = dataclasses.replace(DecodeOptions(), onset_threshold=onset, offset_threshold=offset,
                                       frame_threshold=frame)
            notes, _ = decode(post, tr.hop_s, opts, tr.min_pitch)
            c += transcription_counts(s[3], notes_array(notes), s[1].shape[1] / 44100)
        return c

    def score(c, which):
        return round(f1_of(c[which]), 4)

    by_onset = {t: score(counts(t, 0.5), 0) for t in onsets}
    best_on = max(by_onset, key=by_onset.get)
    by_offset = {t: score(counts(best_on, t), 1) for t in offsets}
    best_off = max(by_offset, key=by_offset.get)
    at_frame = {t: counts(best_on, best_off, t) for t in frames}
    by_frame = {t: {"frame_f1": score(c, 3), "note_f1": score(c, 0), "note_offset_f1": score(c, 1)}
                for t, c in at_frame.items()}
    best_frame = max(by_frame, key=lambda t: by_frame[t]["frame_f1"])
    return {"onset_threshold": best_on, "offset_threshold": best_off, "frame_threshold": best_frame,
            "note_f1_by_onset": by_onset, "note_offset_f1_by_offset": by_offset, "by_frame": by_frame,
            "songs": len(songs), "items": len(posts), "conditions": list(conditions), "split": "valid"}
