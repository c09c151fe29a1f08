"""The defaults users get, each defined once.

The command line, the presets loader, the Python API and the benchmarks import these; nothing
else states them (``tests/test_defaults.py`` fails if a route decodes with anything else). This
module imports nothing heavy, so ``dawsep --help`` can show the values and stay instant.

Retuning the transcriber's decoding (say, after retraining it) means changing the field
defaults of :class:`DecodeOptions` here, and nothing else: the piano preset, ``dawsep
transcribe``, ``Transcriber.transcribe``, the streaming transcriber and ``make bench`` follow.
"""
from __future__ import annotations

from dataclasses import dataclass

#: how notes end in the MIDI: "pedal" where they stop sounding (a note held by the sustain pedal
#: lasts until the pedal lifts, as the model hears it), "key" at the estimated key release (the
#: CC64 events then sustain it). Measured on 12 held-out test songs (30 s each), note+offset F1
#: is the same for both within 0.01 (clean 0.328 / 0.325, mixture 0.217 / 0.224) and frame F1 is
#: 0.01 higher with "pedal"; "pedal" is also the only rule live MIDI can follow (a key release is
#: known only once the pedal lifts). So "pedal" is the default everywhere, and the benchmarks
#: measure it.
NOTE_ENDS = ("pedal", "key")


@dataclass(frozen=True)
class DecodeOptions:
    """How transcriber posteriors become notes: thresholds on the posteriors (0-1), the minimum
    note length, the sustain pedal and the note-end rule (:data:`NOTE_ENDS`).

    The defaults are the tuned ones, chosen on the ``valid`` split for the shipped model by
    ``tune_thresholds`` (24 songs x 30 s, clean + mix + separated, counts summed; the test split
    only reports): session 11's model, onset threshold by note F1 (0.670 / **0.684** / 0.681 at
    0.5 / 0.6 / 0.7), then offset threshold by note+offset F1 (**0.334** / 0.316 / 0.264 at 0.2 /
    0.3 / 0.5), then frame threshold by frame F1 (0.559 / **0.562** / 0.556 at 0.2 / 0.3 / 0.4).
    History in docs/transcription.md.
    """

    onset_threshold: float = 0.6
    frame_threshold: float = 0.3
    offset_threshold: float = 0.2
    min_note_ms: float = 30.0
    pedal: bool = True
    pedal_threshold: float = 0.5
    note_ends: str = "pedal"

    def __post_init__(self):
        for name in ("onset_threshold", "frame_threshold", "offset_threshold", "pedal_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.min_note_ms < 0:
            raise ValueError(f"min_note_ms must be >= 0, got {self.min_note_ms}")
        if self.note_ends not in NOTE_ENDS:
            raise ValueError(f"note_ends must be one of {', '.join(NOTE_ENDS)}, got {self.note_ends!r}")


#: fraction of each separator chunk cross-faded with the next: 10% of a ~10 s chunk (1 s). Measured
#: on 16 test songs: mean SDR 2.717 dB against 2.729 at 25% (within the song-to-song noise), for
#: 1.2x the speed.
DEFAULT_OVERLAP = 0.1

#: the chunk (seconds) offline transcription runs a model on when its graph takes any length
#: (the packaged ones do; a graph with a fixed length gets its ``dawsep.segment_samples``). Each
#: chunk's first and last second are context, computed and thrown away, so a 5 s chunk wastes 40 %
#: of the work and a 20 s one 10 %. Streams pass their own, shorter chunk (latency).
TRANSCRIBE_SEGMENT_S = 20.0

#: ``dawsep separate`` warns (once per run) about a requested stem whose model scored below this
#: SDR on its held-out test split (the model's metadata): below it a stem carries clearly audible
#: other instruments. For scale, on that split: every stem as a fifth of the mixture +1.1 dB, the
#: ideal ratio mask +7.6 dB.
WEAK_STEM_SDR_DB = 3.0

#: the tempo a MIDI file is written at unless one is given (``--midi-tempo``): dawsep does not
#: estimate tempo (see :func:`dawsep.transcribe.midi_from_events`)
DEFAULT_BPM = 120.0
