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

The callback only copies: the chain runs on a worker thread (:class:`~dawsep.stream.RealtimeRunner`),
which adds ``buffer_samples`` (default two blocks) to the latency and absorbs the one block per
model chunk that costs a whole chunk. Live, a worker that falls behind costs a dropout (silence,
counted) and never a late callback; offline, the callback waits for the worker, so the render is
deterministic. Both the callback's time and the worker's are reported against the block deadline.

``midi_file``/``midi_output_device``: the preset's transcriber listens to the same input
(:class:`~dawsep.stream.StreamingTranscriber`, on the worker too) and its note-on/off and pedal
events go to a MIDI output device (at their sample offsets within the block) and/or a type-1
MIDI file, placed at the time they were played.
"""
from __future__ import annotations

import collections
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
    latency_samples: int  # the chain's, the worker's buffer and pyo's one block
    block_ms: list[float] = field(default_factory=list, repr=False)   # the callback (audio thread)
    output: str | None = None
    worker_ms: list[float] = field(default_factory=list, repr=False)  # the chain on the worker
    dropouts: int = 0
    midi_events: int = 0
    midi_file: str | None = None

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
        w = self.worker_ms
        text = (f"{self.blocks} blocks of {self.block_size} at {self.sample_rate} Hz: callback median "
                f"{self.median_ms:.2f} ms, worst {self.worst_ms:.2f} ms against a {self.deadline_ms:.2f} ms "
                f"deadline, {self.overruns} overrun(s); worker median "
                f"{float(np.median(w)) if w else 0.0:.2f} ms, worst {max(w, default=0.0):.2f} ms; "
                f"{self.dropouts} dropout(s); latency {self.latency_samples} samples "
                f"({1000 * self.latency_samples / self.sample_rate:.0f} ms)")
        if self.midi_file or self.midi_events:
            text += f"; {self.midi_events} MIDI event(s)" + (f" -> {self.midi_file}" if self.midi_file else "")
        return text


def import_pyo():
    """pyo, imported quietly (it prints a note about WxPython on import)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import pyo
    except ImportError:
        raise LiveError("the live host needs pyo: pip install 'dawsep[live]'") from None
    return pyo


class _ChainAndMidi:
    """The worker's job per block: the chain's audio, and (optionally) the transcriber's events,
    kept as ``(sample position in the input, message)``."""

    def __init__(self, chain, transcriber, to_device: bool = False):
        self.chain, self.transcriber, self.to_device = chain, transcriber, to_device
        self.max_block_size, self.latency_samples = chain.max_block_size, chain.latency_samples
        self.events: list = []        # everything, for the MIDI file
        self.pending = collections.deque()  # (offset in the output block stream, message) for a device
        self._pos = 0

    def process(self, block):
        y = self.chain.process(block)
        if self.transcriber is not None:
            t = self.transcriber
            for off, msg in t.process(block):
                self.events.append((self._pos + off - t.latency_samples, msg))
                if self.to_device:  # drained by the callback; without a device it would only grow
                    self.pending.append((self._pos + off, msg))
        self._pos += block.shape[-1]
        return y

    def reset(self):
        self.chain.reset()
        if self.transcriber is not None:
            self.transcriber.reset()
        self.events.clear()
        self.pending.clear()
        self._pos = 0


def run_live(preset, *, input_file: str | None = None, offline: str | None = None, block_size: int = 1024,
             sample_rate: int | None = None, input_device: int | None = None, output_device: int | None = None,
             segment_seconds: float | None = None, seconds: float | None = None, buffer_samples: int | None = None,
             midi_file: str | None = None, midi_output_device: int | None = None) -> LiveReport:
    """Run ``preset``'s chain inside a pyo server. See the module docstring."""
    from dawsep import audio
    from dawsep.stream import RealtimeRunner, StreamingChain

    pyo = import_pyo()
    if offline and not input_file:
        raise LiveError("--offline needs --input FILE")
    want_midi = midi_file is not None or midi_output_device is not None
    if want_midi and preset.transcribe is None:
        raise LiveError(f"preset {preset.name!r} has no [transcribe] section: no MIDI to send")
    info = audio.info(input_file) if input_file else None
    sr = int(sample_rate or (info.sample_rate if info else 44100))
    if info and info.sample_rate != sr:
        raise LiveError(f"{input_file} is at {info.sample_rate} Hz; run the server at that rate (--sample-rate)")
    chain = StreamingChain(preset, max_block_size=block_size, sample_rate=sr, segment_seconds=segment_seconds)
    transcriber = None
    if want_midi:
        from dawsep.stream import StreamingTranscriber
        from dawsep.transcribe import options_from_preset

        transcriber = StreamingTranscriber(preset.transcribe.model, max_block_size=block_size, sample_rate=sr,
                                           options=options_from_preset(preset.transcribe))
    job = _ChainAndMidi(chain, transcriber, to_device=midi_output_device is not None)
    proc = RealtimeRunner(job, buffer_samples, realtime=not offline)
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
            if midi_output_device is not None:
                server.setMidiOutputDevice(int(midi_output_device))
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
        sent = [0]  # samples the callback has handed on, to place MIDI events in its blocks

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
            if midi_output_device is not None:
                _send_midi(server, job.pending, sent[0], block_size, sr)
            sent[0] += block_size
            times.append(1000.0 * (time.perf_counter() - t))

        server.setCallback(callback)
        if offline:
            # run on until the transcriber has decided the input's last notes too
            run_on = max(latency, (transcriber.latency_samples + latency) if transcriber else 0)
            report = _render_offline(server, info, offline, latency, block_size, times, sr, run_on)
            return _finish(report, proc, job, midi_file)
        server.start()
        end = time.monotonic() + (seconds if seconds else (info.duration_s + latency / sr if info else 1e12))
        try:
            while time.monotonic() < end:
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        server.stop()
        return _finish(LiveReport(len(times), block_size, sr, latency, times), proc, job, midi_file)
    finally:
        proc.close()
        # pyo frees table memory at shutdown whatever Python still holds: drop the numpy views
        # and the objects first, or a later access reads freed memory.
        vin = vout = callback = None  # noqa: F841
        keep.clear()
        with contextlib.redirect_stdout(io.StringIO()):
            server.shutdown()
        if tmp_dir is not None:
            tmp_dir.cleanup()


def _send_midi(server, pending, start: int, block_size: int, sr: int) -> None:
    """Send the events due in the block that starts at output sample ``start`` (timestamps in ms)."""
    while pending and pending[0][0] < start + block_size:
        pos, msg = pending.popleft()
        ms = max(0, pos - start) * 1000 // sr
        if msg.type == "note_on":
            server.noteout(msg.note, msg.velocity, msg.channel + 1, ms)
        elif msg.type == "note_off":
            server.noteout(msg.note, 0, msg.channel + 1, ms)
        elif msg.type == "control_change":
            server.ctlout(msg.control, msg.value, msg.channel + 1, ms)


def _finish(report: LiveReport, proc, job: _ChainAndMidi, midi_file: str | None) -> LiveReport:
    if not proc.realtime:
        proc.drain()
    report.worker_ms = list(proc.worker_ms)
    report.dropouts = proc.dropouts
    report.midi_events = len(job.events)
    if midi_file is not None:
        write_events_midi(job.events, report.sample_rate, midi_file)
        report.midi_file = str(midi_file)
    return report


def write_events_midi(events, sample_rate: int, path: str) -> None:
    """``[(sample position, mido.Message), ...]`` -> a type-1 MIDI file, as ``dawsep transcribe``
    writes them (:func:`dawsep.transcribe.midi_from_events`), saved atomically."""
    from dawsep.transcribe import midi_from_events, write_midi

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # the transcriber already orders messages at one position (offs before ons): keep that order
    timed = [(max(0, pos) / sample_rate, i, msg) for i, (pos, msg) in enumerate(events)]
    write_midi(midi_from_events(timed), path)


def _decode_to_wav(path: str, out: Path) -> str:
    """Stream any readable file into a float WAV at its own rate (bounded memory)."""
    from dawsep import audio

    src = audio.info(path)
    with audio.stream(path) as reader, audio.AudioWriter(out, src.sample_rate, channels=2, format="wav",
                                                         bit_depth=32) as writer:
        for block in reader:
            writer.write(block)
    return str(out)


def _render_offline(server, info, out: str, latency: int, block_size: int, times: list[float], sr: int,
                    run_on: int) -> LiveReport:
    """Record the server's output to a temp file, then write it aligned and trimmed to ``out``."""
    from dawsep import audio

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    raw = out_path.with_name(f".{out_path.stem}.{os.getpid()}.pyo.wav")
    total = info.frames + run_on
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
