"""The ``transcribe`` job: each recording (or piano stem) to MIDI, streamed at the model's rate."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dawsep.batch.fingerprints import settings_hash
from dawsep.batch.outputs import reporting, save_transcription, song_record
from dawsep.batch.songs import Song


@dataclass
class TranscribeJob:
    """Transcribe each recording (or piano stem) to ``OUT/<song>/piano.mid`` (+ ``extras``:
    ``png`` piano roll, ``json``/``csv`` note lists). Streams the file at the model's rate."""

    model: str = "default"
    options: Any = None  # dawsep.transcribe.DecodeOptions; None: defaults
    extras: tuple[str, ...] = ()
    downmix: bool = False
    block_frames: int = 65536
    task: str = "transcribe"
    bpm: float | None = None  # the MIDI file's tempo (None: 120, not estimated)

    def __post_init__(self):
        if self.options is None:
            from dawsep.transcribe import DecodeOptions

            self.options = DecodeOptions()
        self._trans = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_trans"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._trans = None

    def fingerprint(self) -> str:
        from dawsep import runtime

        path, _, sha = runtime.resolve(self.model, "transcriber")
        return settings_hash({"model": sha or runtime.file_sha256(path), "options": asdict(self.options),
                              "extras": list(self.extras), "downmix": self.downmix, "bpm": self.bpm})

    def setup(self, threads: int) -> None:
        from dawsep.transcribe import Transcriber

        self._trans = Transcriber(self.model, threads=threads)

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio
        from dawsep.transcribe import TranscriptionSink

        if self._trans is None:
            self.setup(1)
        t = self._trans
        src = audio.info(song.path)
        sink = TranscriptionSink(t, t.sample_rate, self.options)
        with audio.stream(song.path, block_frames=self.block_frames, sample_rate=t.sample_rate,
                          downmix=self.downmix) as reader:
            for block in reporting(reader):
                sink.push(block)
        result = sink.finish()
        result.duration_s = round(src.frames / src.sample_rate, 6)
        names = save_transcription(result, staging, "piano", self.extras, self.bpm, Path(song.path).name)
        return song_record(song, src, names, models=[t.info.describe()], notes=len(result.notes),
                           pedal_events=len(result.pedal))
