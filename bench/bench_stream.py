"""DAW streaming: block times of StreamingSeparator / the piano preset's StreamingChain against the
block deadline, declared latency, CPU load at real time (one thread, as a plugin would have)."""
from __future__ import annotations

import time

import numpy as np

SR = 44100


def _times(proc, seconds: float, block: int, seed: int = 0) -> np.ndarray:
    x = (np.random.default_rng(seed).standard_normal((2, int(seconds * SR))) * 0.1).astype(np.float32)
    out = []
    for i in range(0, x.shape[1] - block + 1, block):
        t = time.perf_counter()
        proc.process(x[:, i:i + block])
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000.0


def _paced(runner, seconds: float, block: int, seed: int = 0) -> np.ndarray:
    """Call ``runner.process`` at the pace of a real-time host; callback times in ms."""
    x = (np.random.default_rng(seed).standard_normal((2, int(seconds * SR))) * 0.1).astype(np.float32)
    out, t0 = [], time.perf_counter()
    for k, i in enumerate(range(0, x.shape[1] - block + 1, block)):
        wait = t0 + k * block / SR - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        t = time.perf_counter()
        runner.process(x[:, i:i + block])
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000.0


def _realtime_rows(seconds: float) -> list[str]:
    """The worker-thread runner, real-time paced, the whole process pinned to one core."""
    import os

    from dawsep.separate import Separator
    from dawsep.stream import RealtimeRunner, StreamingSeparator

    rows = []
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        sep = Separator("default", threads=1, segment_seconds=0.15)
        for block in (256, 512, 1024):
            buf = max(2048, 2 * block)
            with RealtimeRunner(StreamingSeparator(separator=sep, max_block_size=block), buf) as run:
                t = _paced(run, seconds, block)
                w = np.array(run.worker_ms)
                rows.append(f"| {block} | {1000 * block / SR:.1f} ms | {np.median(t):.3f} ms | {t.max():.2f} ms | "
                            f"{np.median(w):.2f} ms | {w.max():.1f} ms | {run.dropouts} / {len(t)} | "
                            f"{1000 * run.latency_samples / SR:.0f} ms | {w.sum() / 1000 / seconds:.0%} |")
    finally:
        os.sched_setaffinity(0, before)
    return rows


def run(quick: bool = False) -> str:
    from dawsep.presets import load_preset
    from dawsep.separate import Separator
    from dawsep.stream import StreamingChain, StreamingSeparator

    seconds = 10.0 if quick else 30.0
    lines = ["## Streaming (DAW backend)", "",
             f"{seconds:.0f} s of stereo noise at 44.1 kHz pushed block by block through the packaged default "
             "separator, one ONNX Runtime thread. `segment` is the separator chunk (the latency is one chunk); "
             "load = processing time / audio time. A block is late when its processing exceeds its duration.", "",
             "| processor | segment | block | latency | median block | worst block | deadline | late blocks | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for seg in (0.2, 1.0):
        sep = Separator("default", threads=1, segment_seconds=seg)
        for block in (256, 512, 1024):
            proc = StreamingSeparator(separator=sep, max_block_size=block)
            t = _times(proc, seconds, block)
            deadline = 1000.0 * block / SR
            lines.append(f"| StreamingSeparator | {seg:g} s | {block} | {1000 * proc.latency_samples / SR:.0f} ms | "
                         f"{np.median(t):.2f} ms | {t.max():.1f} ms | {deadline:.1f} ms | "
                         f"{int((t > deadline).sum())} / {len(t)} | {t.sum() / 1000 / seconds:.0%} |")
    proc = StreamingChain(load_preset("piano"), max_block_size=1024, segment_seconds=1.0)
    t = _times(proc, seconds, 1024)
    lines.append(f"| StreamingChain (piano preset) | 1 s | 1024 | {1000 * proc.latency_samples / SR:.0f} ms | "
                 f"{np.median(t):.2f} ms | {t.max():.1f} ms | {1000 * 1024 / SR:.1f} ms | "
                 f"{int((t > 1000 * 1024 / SR).sum())} / {len(t)} | {t.sum() / 1000 / seconds:.0%} |")
    lines += ["", "Inline, the separator runs a whole chunk inside the block that completes it, so that block is "
              "late whenever one model call takes longer than one block, even when the average load is low. "
              "`RealtimeRunner` (what `dawsep live` uses) moves the model to a worker thread and adds a buffer "
              "(here max(2048, 2 blocks) samples) to the latency; the audio thread only copies. Below, "
              f"{seconds:.0f} s paced in real time (a sleep until each block is due), the whole process pinned "
              "to **one core** (`sched_setaffinity`), separator chunk 0.15 s, one ONNX Runtime thread; "
              "a dropout is a block the worker had not finished when the host needed it.", "",
              "| block | deadline | callback median | callback worst | worker median | worker worst | dropouts | "
              "latency | load |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += _realtime_rows(seconds)
    lines += ["", "Command: `python -m bench.run --only stream`."]
    return "\n".join(lines)
