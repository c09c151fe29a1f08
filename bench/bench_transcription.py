"""Piano transcription on held-out test songs (MuseScore General timbres, reserved composers):
mir_eval note F1 (onset 50 ms), note+offset F1, note+velocity F1 and frame F1, in three
conditions: (a) the clean piano stem, (b) the full mixture, (c) the piano stem separated by the
packaged default separator; beside Basic Pitch when it is installed (the optional ``bench``
extra), the transcriber's real-time factor on 2 cores, and what it writes where there is no
piano (false notes and pedal presses per minute on white and pink noise and on drums stems).
"""
from __future__ import annotations

import os
import time

import numpy as np

SR = 44100


def decode_options():
    """What the benchmark decodes with: what users get (the defaults of ``dawsep transcribe``,
    the piano preset and the Python API, defined once in :mod:`dawsep.defaults`)."""
    from dawsep.transcribe import DecodeOptions

    return DecodeOptions()


def _ours(transcriber, options):
    def run(audio):
        from dawsep.train.evaluate import notes_array

        return notes_array(transcriber.transcribe(audio, SR, options).notes)
    return run


def _basic_pitch():
    """Basic Pitch on its bundled ONNX model (no TensorFlow), or None when it is not installed."""
    try:
        import contextlib
        import io
        import logging

        logging.disable(logging.WARNING)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            from basic_pitch import ICASSP_2022_MODEL_PATH
            from basic_pitch.inference import Model, predict
            model = Model(ICASSP_2022_MODEL_PATH)
    except Exception:
        return None

    def run(audio):
        import tempfile

        import soundfile as sf

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.wav")
            sf.write(path, audio.T, SR, subtype="FLOAT")
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                _, _, events = predict(path, model)
        return np.array([(s, e, p, round(a * 127)) for s, e, p, a, *_ in events], float).reshape(-1, 4)
    return run


def false_notes(transcriber, root: str, quick: bool = False) -> list[str]:
    """Markdown lines: notes and sustain-pedal presses per minute that the transcriber writes on
    audio without any piano (every one is false), with the options users get (:func:`decode_options`)."""
    import soundfile as sf

    from dawsep.train.data.dataset import load_songs
    from dawsep.transcribe import PEDAL_MIN_S, decode

    seconds = 20 if quick else 60
    rng = np.random.default_rng(0)
    white = rng.standard_normal((2, SR * seconds))
    spec = np.fft.rfft(rng.standard_normal((2, SR * seconds)), axis=1)
    pink = np.fft.irfft(spec / np.sqrt(np.maximum(1.0, np.arange(spec.shape[1])))[None], n=SR * seconds, axis=1)
    pink /= pink.std()
    signals = {"white noise, -10 dBFS RMS": 0.316 * white, "white noise, -20 dBFS RMS": 0.1 * white,
               "pink noise, -20 dBFS RMS": 0.1 * pink}
    drums = []
    for song in load_songs(root, "test", None):
        if len(drums) == (4 if quick else 16):
            break
        d, _ = sf.read(os.path.join(song.path, "drums.flac"), frames=30 * SR, always_2d=True, dtype="float32")
        if np.sqrt(np.mean(d ** 2)) > 1e-3:  # songs with drums
            drums.append(d.T)
    if drums:
        x = np.concatenate(drums, axis=1)
        level = 20 * np.log10(np.sqrt(np.mean(x ** 2)))
        signals[f"drums stems of {len(drums)} test songs (30 s each, {level:.0f} dBFS RMS)"] = x
        signals["the same drums, +12 dB"] = np.clip(4.0 * x, -1.0, 1.0)
    o = decode_options()
    lines = ["", "### Where there is no piano", "",
             "Every note and pedal press written on audio without a piano is false. Per minute of audio, with "
             f"the options every route decodes with (`dawsep.defaults.DecodeOptions`: onset threshold "
             f"{o.onset_threshold}, frame threshold {o.frame_threshold}, minimum note {o.min_note_ms:g} ms). "
             "A pedal press counts only with a note sounding under it within its first "
             f"{PEDAL_MIN_S * 1000:.0f} ms (`dawsep.transcribe.OnlineDecoder`).", "",
             "| audio | notes/min | pedal presses/min |", "|---|---|---|"]
    for name, x in signals.items():
        post = transcriber.posteriors(x.astype(np.float32), SR)
        minutes = x.shape[1] / SR / 60
        n, p = decode(post, transcriber.hop_s, o, transcriber.min_pitch)
        lines.append(f"| {name} | {len(n) / minutes:.1f} | {len(p) / minutes:.1f} |")
    return lines


def run(quick: bool = False) -> str:
    from dawsep import runtime
    from dawsep.separate import Separator
    from dawsep.train.evaluate import f1_of, transcription_counts, transcription_songs
    from dawsep.transcribe import Transcriber

    root = os.environ.get("DAWSEP_DATA", os.path.expanduser("~/.cache/dawsep/data"))
    limit, seconds = (6, 20.0) if quick else (24, 30.0)
    songs = transcription_songs(root, limit, seconds)
    tr = Transcriber("default", threads=2)
    sep = Separator("default", threads=2)
    piano = sep.stems.index("piano")
    conds = {"(a) clean piano stem": lambda s: s[1], "(b) full mixture": lambda s: s[2],
             "(c) separated piano stem": lambda s: sep.separate_array(s[2])[piano]}
    options = decode_options()
    systems = {"dawsep": _ours(tr, options)}
    bp = _basic_pitch()
    if bp is not None:
        systems["Basic Pitch"] = bp
    counts = {(c, k): np.zeros((4, 3)) for c in conds for k in systems}
    wall = {k: 0.0 for k in systems}
    for s in songs:
        dur = s[1].shape[1] / SR
        for c, get in conds.items():
            x = get(s)
            for k, fn in systems.items():
                t = time.perf_counter()
                est = fn(x)
                wall[k] += time.perf_counter() - t
                counts[(c, k)] += transcription_counts(s[3], est, dur)
    n_ref = int(counts[(next(iter(conds)), "dawsep")][0, 1])
    info = runtime.resolve("default", "transcriber")[0]
    lines = ["## Piano transcription", "",
             f"{len(songs)} held-out test songs with piano (MuseScore General timbres, reserved composers), first "
             f"{seconds:.0f} s of each, {n_ref} reference notes. mir_eval: note F1 = onset within 50 ms (offsets "
             "ignored), note+offset = also offset within 20% of the note or 50 ms, note+velocity = mir_eval's "
             "velocity-aware matching (onset only), frame F1 on a 10 ms piano-roll grid. dawsep decodes with the "
             f"options users get (`dawsep.defaults.DecodeOptions`: onset threshold {options.onset_threshold}, "
             f"note ends: {options.note_ends}; the reference MIDI's note-offs are key releases).", "",
             "| condition | system | note F1 | note+offset F1 | note+velocity F1 | frame F1 |",
             "|---|---|---|---|---|---|"]
    for c in conds:
        for k in systems:
            f = [f1_of(counts[(c, k)][i]) for i in range(4)]
            lines.append(f"| {c} | {k} | **{f[0]:.3f}** | {f[1]:.3f} | {f[2]:.3f} | {f[3]:.3f} |")
    if bp is None:
        lines += ["", "Basic Pitch was not installed (`make bench-extras`), so it is not in the table."]
    x = (np.random.default_rng(0).standard_normal(SR * 60) * 0.1).astype(np.float32)
    tr.posteriors(x[:SR], SR)
    t = time.perf_counter()
    tr.posteriors(x, SR)
    rtf = 60.0 / (time.perf_counter() - t)
    lines += ["", f"Transcriber alone (`{os.path.basename(str(info))}`), 60 s of 44.1 kHz audio including the "
              f"resampling to 16 kHz, 2 ONNX Runtime threads: **{rtf:.0f}x real time**."]
    lines += false_notes(tr, root, quick)
    lines += ["", "Command: `python -m bench.run --only transcription`."]
    return "\n".join(lines)
