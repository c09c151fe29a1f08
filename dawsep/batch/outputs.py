"""What every batch job shares: output files streamed at the processing rate and resampled back
(:class:`OutputStream`), the band above a model's rate (:class:`HighBand`), reading with progress,
the MIDI and note-list files of a transcription, and the song's manifest record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dawsep import progress as song_progress
from dawsep.batch.songs import Song
from dawsep.presets import OutputConfig
from dawsep.runtime import file_sha256

#: how outputs are written: the preset's ``[output]`` type itself (one definition)
OutputOptions = OutputConfig


class OutputStream:
    """One output file fed at the processing rate: drops the first ``skip`` samples (a chain's
    latency), resamples back to the file's rate and writes exactly ``frames`` samples (or
    everything, with ``frames=None``)."""

    def __init__(self, path: Path, rate: int, file_rate: int, frames: int | None, output: OutputOptions,
                 skip: int = 0):
        from dawsep import audio

        self.back = audio.Resampler(rate, file_rate) if rate != file_rate else None
        self.writer = audio.AudioWriter(path, file_rate, channels=2, format=output.format,
                                        bit_depth=output.bit_depth)
        self.room, self.skip = frames, skip

    def __enter__(self):
        self.writer.__enter__()
        return self

    def __exit__(self, *exc):
        return self.writer.__exit__(*exc)

    def _write(self, y: np.ndarray) -> None:
        if self.room is not None:
            y = y[:, :self.room]
            self.room -= y.shape[1]
        if y.shape[1]:
            self.writer.write(y)

    def emit(self, y: np.ndarray, extra: np.ndarray | None = None) -> None:
        """Write ``y`` (processing rate); ``extra``: added after resampling, at the file's rate
        (as many samples as the resampler returns for ``y``)."""
        if self.skip:
            cut = min(self.skip, y.shape[1])
            y, self.skip = y[:, cut:], self.skip - cut
        z = self.back.process(y) if self.back is not None else y
        self._write(z + extra if extra is not None else z)

    def finish(self, extra: np.ndarray | None = None) -> None:
        """Flush the resampler and pad to the exact length (resampling there and back may round)."""
        if self.back is not None:
            z = self.back.flush()
            self._write(z + extra if extra is not None else z)
        if self.room:
            self._write(np.zeros((2, self.room), np.float32))


def song_record(song: Song, src, outputs: list[str], **extra) -> dict[str, Any]:
    """A song's manifest record: its outputs, the input's hash, duration and rate, and ``extra``."""
    return {"outputs": outputs, "input_sha256": file_sha256(song.path),
            "duration_s": round(src.frames / src.sample_rate, 3), "sample_rate": src.sample_rate, **extra}


def preset_record(preset) -> dict[str, Any]:
    """Which preset made a song's outputs, as the manifest names it."""
    return {"name": preset.name, "sha256": preset.sha256, "source": preset.source}


def reporting(reader) -> Iterator[np.ndarray]:
    """``reader``'s blocks, reporting how much of the song has been read (:mod:`dawsep.progress`)."""
    done, total = 0, max(1, reader.frames)
    for block in reader:
        yield block
        done += block.shape[1]
        song_progress.song_progress(done / total)


class HighBand:
    """The part of a file the model never sees when it runs at another rate: the input at its
    own rate minus the input sent to the model's rate and back (for 192 kHz, everything above
    about 21 kHz). Fed the model-rate mixture block by block, it returns that residual at the
    file's rate, aligned sample for sample with what :class:`OutputStream` writes for the same
    blocks (the same resampler, fed the same lengths). The file is read a second time, at its
    own rate, one block at a time."""

    def __init__(self, path: str, rate: int, file_rate: int, block_frames: int, downmix: bool):
        from dawsep import audio

        self.back = audio.Resampler(rate, file_rate, 2)
        self.reader = audio.stream(path, block_frames=block_frames, downmix=downmix)
        self.buf: list[np.ndarray] = []
        self.have = 0

    def _take(self, n: int) -> np.ndarray:
        while self.have < n:
            block = next(self.reader, None)
            if block is None:
                break
            self.buf.append(block)
            self.have += block.shape[1]
        x = np.concatenate(self.buf, axis=1) if len(self.buf) > 1 else (self.buf[0] if self.buf else
                                                                       np.zeros((2, 0), np.float32))
        out, rest = x[:, :n], x[:, n:]
        self.buf, self.have = ([rest] if rest.shape[1] else []), rest.shape[1]
        if out.shape[1] < n:
            out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
        return out

    def process(self, mix: np.ndarray) -> np.ndarray:
        low = self.back.process(mix)
        return self._take(low.shape[1]) - low

    def flush(self) -> np.ndarray:
        low = self.back.flush()
        return self._take(low.shape[1]) - low

    def close(self) -> None:
        self.reader.close()


def model_tag(model: str) -> str:
    """A model as a file-name part: a packaged name as it is, a path by its file name without
    ``.onnx`` (``~/m/my model.onnx`` -> ``my_model``)."""
    name = Path(str(model)).name
    name = name[:-5] if name.lower().endswith(".onnx") else name
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "model"


def save_transcription(result, staging: Path, stem: str, extras: tuple[str, ...],
                       bpm: float | None = None, source: str = "") -> list[str]:
    """Write ``result`` as ``<stem>.mid`` and ``<stem>.<ext>`` for each of ``extras``; returns the names."""
    names = [f"{stem}.mid"] + [f"{stem}.{ext}" for ext in extras]
    result.bpm, result.source = bpm, source
    for n in names:
        result.save(staging / n)
    return names
