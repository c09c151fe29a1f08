"""A pyo real-time host over :mod:`dawsep.stream` (the ``live`` extra: ``pip install 'dawsep[live]'``).

pyo runs the audio loop; once per block its server calls back into Python, where the input
block (filled by ``TableFill`` into a one-block ``DataTable``) goes through a
:class:`~dawsep.stream.StreamingChain` and the result is written into the table that
``TableScan`` plays. The callback runs before pyo computes each block, so it sees the previous
block's input: pyo adds exactly one block of delay on top of the chain's latency.

``offline=OUT`` renders a file through this same real-time path with pyo's offline server (as
fast as the CPU allows; this is how the tests run it without a sound card) and writes the output
aligned with the input, so it can be compared with ``dawsep render``. With a sound card,
``run_live`` plays (a file or a device input) to an output device in real time.

Block timing is measured in the callback: a block whose processing takes longer than its
duration (``block_size / sample_rate``) would be a dropout in a real-time server.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dawsep.errors import DawsepError


class LiveError(DawsepError):
    """pyo is missing, or the live set-up is inconsistent."""

    exit_code = 5


@dataclass
class LiveReport:
    """What a live or offline run measured."""

    blocks: int
    block_size: int
    sample_rate: int
    latency_samples: int  # the chain's plus pyo's one block
    block_ms: list[float] = field(default_factory=list, repr=False)
    output: str | None = None

    @property
    def deadline_ms(self) -> float:
        return 1000.0 * self.block_size / self.sample_rate

    @property
    def worst_ms(self) -> float:
        return max(self.block_ms, default=0.0)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.block_ms)) if self.block_ms else 0.0

    @property
    def overruns(self) -> int:
        """Blocks that took longer than their deadline (dropouts, in real time)."""
        return int(sum(t > self.deadline_ms for t in self.block_ms))

    def summary(self) -> str:
        return (f"{self.blocks} blocks of {self.block_size} at {self.sample_rate} Hz: median "
                f"{self.median_ms:.2f} ms, worst {self.worst_ms:.2f} ms against a {self.deadline_ms:.2f} ms "
                f"deadline, {self.overruns} overrun(s); latency {self.latency_samples} samples "
                f"({1000 * self.latency_samples / self.sample_rate:.0f} ms)")


def import_pyo():
    """pyo, imported quietly (it prints a note about WxPython on import)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import pyo
    except ImportError:
        raise LiveError("the live host needs pyo: pip install 'dawsep[live]'") from None
    return pyo


def run_live(preset, *, input_file: str | None = None, offline: str | None = None, block_size: int = 1024,
             sample_rate: int | None = None, input_device: int | None = None, output_device: int | None = None,
             segment_seconds: float | None = None, seconds: float | None = None) -> LiveReport:
    """Run ``preset``'s chain inside a pyo server. See the module docstring."""
    from dawsep import audio
    from dawsep.stream import StreamingChain

    pyo = import_pyo()
    if offline and not input_file:
        raise LiveError("--offline needs --input FILE")
    info = audio.info(input_file) if input_file else None
    sr = int(sample_rate or (info.sample_rate if info else 44100))
    if info and info.sample_rate != sr:
        raise LiveError(f"{input_file} is at {info.sample_rate} Hz; run the server at that rate (--sample-rate)")
    proc = StreamingChain(preset, max_block_size=block_size, sample_rate=sr, segment_seconds=segment_seconds)
    latency = proc.latency_samples + block_size
    times: list[float] = []

    with contextlib.redirect_stdout(io.StringIO()):  # pyo's "Offline Server rendering …" chatter
        if offline:
            server = pyo.Server(sr=sr, nchnls=2, buffersize=block_size, duplex=0, audio="offline").boot()
        else:
            server = pyo.Server(sr=sr, nchnls=2, buffersize=block_size, duplex=0 if input_file else 1)
            if input_device is not None:
                server.setInputDevice(int(input_device))
            if output_device is not None:
                server.setOutputDevice(int(output_device))
            server.boot()
    keep: dict = {}  # pyo objects and the numpy views into their buffers, released before shutdown
    tmp_dir = None
    try:
        if input_file:  # pyo's own reader knows WAV/AIFF only: decode anything else to a temp WAV
            tmp_dir = tempfile.TemporaryDirectory(prefix="dawsep-live-")
            input_file = _decode_to_wav(input_file, Path(tmp_dir.name) / "input.wav")
        keep["tin"] = tin = pyo.DataTable(size=block_size, chnls=2)
        keep["tout"] = tout = pyo.DataTable(size=block_size, chnls=2)
        vin = [np.asarray(tin.getBuffer(c)) for c in range(2)]  # zero-copy views of the tables
        vout = [np.asarray(tout.getBuffer(c)) for c in range(2)]
        if input_file:
            src = pyo.SfPlayer(input_file, loop=False)
            keep["player"] = src
        else:
            src = pyo.Input(chnl=[0, 1])
        keep["src"] = src
        keep["fill"] = pyo.TableFill(src, tin)
        keep["scan"] = pyo.TableScan(tout).out()
        block = np.empty((2, block_size), np.float32)
        primed = [False]

        def callback() -> None:
            # pyo calls back before it computes the graph, so the table holds the *previous*
            # block's input; the first call has none yet and is skipped rather than fed as
            # silence, which would shift the separator's chunk grid against the signal.
            if not primed[0]:
                primed[0] = True
                return
            t = time.perf_counter()
            block[0], block[1] = vin[0], vin[1]
            y = proc.process(block)
            vout[0][:], vout[1][:] = y[0], y[1]
            times.append(1000.0 * (time.perf_counter() - t))

        server.setCallback(callback)
        if offline:
            return _render_offline(server, info, offline, latency, block_size, times, sr)
        server.start()
        end = time.monotonic() + (seconds if seconds else (info.duration_s + latency / sr if info else 1e12))
        try:
            while time.monotonic() < end:
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        server.stop()
        return LiveReport(len(times), block_size, sr, latency, times)
    finally:
        # pyo frees table memory at shutdown whatever Python still holds: drop the numpy views
        # and the objects first, or a later access reads freed memory.
        vin = vout = callback = None  # noqa: F841
        keep.clear()
        with contextlib.redirect_stdout(io.StringIO()):
            server.shutdown()
        if tmp_dir is not None:
            tmp_dir.cleanup()


def _decode_to_wav(path: str, out: Path) -> str:
    """Stream any readable file into a float WAV at its own rate (bounded memory)."""
    from dawsep import audio

    src = audio.info(path)
    with audio.stream(path) as reader, audio.AudioWriter(out, src.sample_rate, channels=2, format="wav",
                                                         bit_depth=32) as writer:
        for block in reader:
            writer.write(block)
    return str(out)


def _render_offline(server, info, out: str, latency: int, block_size: int, times: list[float], sr: int) -> LiveReport:
    """Record the server's output to a temp file, then write it aligned and trimmed to ``out``."""
    from dawsep import audio

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    raw = out_path.with_name(f".{out_path.stem}.{os.getpid()}.pyo.wav")
    total = info.frames + latency
    try:
        server.recordOptions(dur=total / sr, filename=str(raw), fileformat=0, sampletype=3)
        with contextlib.redirect_stdout(io.StringIO()):
            server.start()  # offline: returns when the whole duration is rendered
        y, _ = audio.load(str(raw))
        y = y[:, latency:latency + info.frames]
        if y.shape[1] < info.frames:
            y = np.pad(y, ((0, 0), (0, info.frames - y.shape[1])))
        audio.save(str(out_path), y, sr)
    finally:
        raw.unlink(missing_ok=True)
    return LiveReport(len(times), block_size, sr, latency, times, output=str(out_path))
