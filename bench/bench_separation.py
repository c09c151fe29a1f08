"""Separation quality on the held-out test split and speed on 2 cores, for every packaged separator.

Quality: SDR per stem (dawsep.train.evaluate: museval-style 1 s chunks, median over chunks then
over songs, MDX energy-ratio SDR) through the ONNX runtime path, beside the IRM oracle and the
mixture on the same songs; an INT8 dynamic-quantisation trial of the default model.
Speed: `dawsep separate` of a 3-minute song (decode, separate, write 5 FLACs) and ONNX Runtime
vs torch eager on a 10 s clip, 2 threads each.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_render import dawsep_cmd, memory_growth, synth_song, timed
from dawsep.metrics import STEMS  # the test split's stems, defined once


def _data_root() -> str:
    return os.environ.get("DAWSEP_DATA", os.path.expanduser("~/.cache/dawsep/data"))


def _row(label: str, res: dict, *extra: str) -> str:
    cells = " | ".join(f"{res['sdr'][s]:+.2f}" for s in STEMS)
    return f"| {label} | {cells} | **{res['mean']:+.2f}** | " + " | ".join(extra) + " |"


LIVE_SEGMENT_S = 1.0  # a DAW-friendly model chunk for the streaming columns


def _latency_ms(path: str, segment_seconds: float | None = None) -> float:
    """What :class:`~dawsep.stream.StreamingSeparator` declares to a host, in ms at 44.1 kHz."""
    from dawsep.stream import StreamingSeparator

    return StreamingSeparator(path, 1024, segment_seconds=segment_seconds).latency_samples / 44.1


def _quantize(src: str, dst: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)


def _torch_vs_onnx(path: str, seconds: float = 10.0, threads: int = 2) -> tuple[float, float]:
    """Real-time factors (ORT, torch eager) of one forward pass over a ``seconds`` clip."""
    import torch

    from dawsep import runtime
    from dawsep.train.separators import build

    m = runtime.load(path, "separator", threads=threads)
    x = np.random.default_rng(0).uniform(-0.3, 0.3, (1, 2, int(seconds * 44100))).astype(np.float32)

    def best(fn, n=3):
        fn()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return seconds / min(times)

    ort_rtf = best(lambda: m.run(["stems"], {"mix": x}))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = build(m.info.architecture).eval()  # speed does not depend on the weights
    xt = torch.from_numpy(x)
    with torch.no_grad():
        torch_rtf = best(lambda: model(xt))
    torch.set_num_threads(before)
    return ort_rtf, torch_rtf


def run(quick: bool = False) -> str:
    from dawsep import runtime
    from dawsep.chunking import DEFAULT_OVERLAP
    from dawsep.train.evaluate import baselines, evaluate_model, test_songs

    root = _data_root()
    models = [(name, str(runtime.MODELS_DIR / e["file"])) for _, name, e in runtime.list_models("separator")]
    if not models:
        raise RuntimeError("no packaged separator models")
    default = dict(models)["default"]
    info = runtime.load(default, "separator", threads=1).info
    arch = info.architecture
    lines = ["## Separation", ""]
    songs = test_songs(root, limit=4 if quick else None)
    live_songs = songs[:: max(1, len(songs) // 16)][:16]
    seconds = sum(s.shape[-1] for _, s in songs) / 44100
    lines += [f"Held-out test split: {len(songs)} songs ({seconds / 60:.1f} min; kinds gen + m21, MuseScore General "
              f"timbres and reserved composers, never seen in training or validation). SDR in dB, median over "
              f"songs of the median over 1 s chunks (energy-ratio SDR, museval chunking; see "
              f"`dawsep/train/evaluate.py`). Models run through the ONNX runtime path (`Separator`, "
              f"{DEFAULT_OVERLAP:.0%} overlap-add, mixture phase), 2 threads. *RTF*: audio seconds per wall "
              f"second of `Separator` on these songs (decoded audio in memory). *Latency*: what "
              f"`StreamingSeparator` declares to a host with the model's own chunk; *live*: with "
              f"{LIVE_SEGMENT_S:g} s chunks, its latency and mean SDR on {len(live_songs)} of the songs "
              f"(how much each architecture loses with a short context).", "",
              "| estimate | " + " | ".join(STEMS) + " | mean | params | ONNX | steps | RTF | latency | "
              f"live {LIVE_SEGMENT_S:g} s: latency, SDR |",
              "|---|" + "---|" * (len(STEMS) + 7)]
    base = baselines(songs, arch.get("n_fft", 2048), arch.get("hop", 1024), arch.get("n_bins", 768))
    blank = ("",) * 6
    lines.append(_row("mixture (floor)", base["mixture"], *blank))
    lines.append(_row("mix / 5 (untrained mask start)", base["uniform"], *blank))
    results = {}
    for name, path in models:
        res = evaluate_model(path, songs, threads=2)
        results[name] = res
        prov = {}
        prov_file = Path(path).with_suffix(".json")
        if prov_file.exists():
            prov = json.loads(prov_file.read_text())
        live = evaluate_model(path, live_songs, threads=2, segment_seconds=LIVE_SEGMENT_S)
        a = runtime.load(path, "separator", threads=1).info.architecture
        label = f"`{name}`: {a.get('arch')}" + (" (unidirectional)" if a.get("bidirectional") is False else "")
        lines.append(_row(label, res, f"{prov.get('params', 0) / 1e6:.2f} M",
                          f"{res['bytes'] / 1e6:.1f} MB", f"{prov.get('steps_trained', '?')}", f"{res['rtf']:.1f}x",
                          f"{_latency_ms(path) / 1000:.1f} s",
                          f"{_latency_ms(path, LIVE_SEGMENT_S):.0f} ms, {live['mean']:+.2f}"))
    with tempfile.TemporaryDirectory() as tmp:
        q = os.path.join(tmp, "int8.onnx")
        try:
            _quantize(default, q)
            res = evaluate_model(q, songs, threads=2)
            delta = res["mean"] - results["default"]["mean"]
            keep = "kept" if abs(delta) <= 0.2 and res["rtf"] > results["default"]["rtf"] else "not shipped"
            lines.append(_row("`default` INT8 dynamic (trial)", res, "", f"{res['bytes'] / 1e6:.1f} MB", "",
                              f"{res['rtf']:.1f}x", "", f"Δ mean {delta:+.2f} dB: {keep}"))
        except Exception as exc:  # report, keep the rest of the section
            lines.append(f"| `default` INT8 dynamic (trial) | failed: {exc!r} |")
    lines.append(_row(f"IRM oracle (n_fft {arch.get('n_fft')}, {arch.get('n_bins')} bins)", base["irm"],
                      *blank[:-1], "upper bound of a real mask with this STFT"))
    lines += ["", "Speed on 2 cores:", "", "| measurement | value |", "|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song3min.flac"
        synth_song(song, 30.0 if quick else 180.0)
        dur = 30.0 if quick else 180.0
        rss_of = {}
        for name, path in models:
            wall, rss = timed([*dawsep_cmd(), "separate", str(song), "-o", str(Path(tmp) / f"out-{name}"),
                               "-m", name, "-q"])
            rss_of[name] = rss
            lines.append(f"| `dawsep separate` {dur / 60:.0f}-min song, `{name}`, 5 FLAC stems | "
                         f"{wall:.1f} s = **{dur / wall:.1f}x real time**, peak RSS {rss} MB |")
        # bounded memory: a file five times longer must not need more memory
        long_s = 60.0 if quick else 900.0
        long_song = Path(tmp) / "song-long.flac"
        synth_song(long_song, long_s, seed=1)
        wall, rss = timed([*dawsep_cmd(), "separate", str(long_song), "-o", str(Path(tmp) / "out-long"), "-q"])
        lines.append(f"| `dawsep separate` {long_s / 60:.0f}-min song, `default` | {wall:.1f} s = "
                     f"{long_s / wall:.1f}x real time, peak RSS **{rss} MB** "
                     f"({memory_growth(long_s, rss, dur, rss_of['default'])}) |")
    for name, path in models:
        ort_rtf, torch_rtf = _torch_vs_onnx(path)
        lines.append(f"| one 10 s forward, `{name}`: ONNX Runtime vs torch eager | "
                     f"{ort_rtf:.1f}x vs {torch_rtf:.1f}x real time ({ort_rtf / torch_rtf:.2f}x) |")
    lines += ["", "Command: `python -m bench.run --only separation` (corpus from `make data`, "
              "`DAWSEP_DATA` to point elsewhere)."]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(run(quick="--quick" in sys.argv))
