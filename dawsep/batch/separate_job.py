"""The ``separate`` job: each song into stems in one streamed separation pass, a preset's stem
through its chain, and the preset's transcription of that stem to MIDI.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dawsep.batch.fingerprints import chain_file_hashes, preset_model, settings_hash
from dawsep.batch.outputs import (HighBand, OutputOptions, OutputStream, model_tag, preset_record, reporting,
                                  save_transcription, song_record)
from dawsep.batch.songs import Song
from dawsep.chunking import DEFAULT_OVERLAP
from dawsep.errors import PresetError


@dataclass
class SeparateJob:
    """Separate each song into stems: ``OUT/<song>/<stem>.<ext>`` (demucs-style).

    ``stems``: which stems to write (default: all the model's, or only the preset's stem when a
    preset is given). With ``preset``, its stem is rendered through the preset's chain (the
    others are written raw). ``two_stems``: write ``<stem>`` and ``no_<stem>`` (mixture minus
    the stem) instead. ``phase``/``phase_iterations``: the post-processing of
    :mod:`dawsep.phase` (None: the preset's, else ``mixture``; the preset's iterations go with
    the preset's phase only). One separation pass feeds every output; memory stays bounded on
    hour-long files (the chunking engine holds about two segments).
    """

    model: str = "default"
    stems: tuple[str, ...] | None = None
    preset: Any = None  # dawsep.presets.Preset | None
    two_stems: str | None = None
    output: OutputOptions | None = None
    overlap: float = DEFAULT_OVERLAP
    segment_seconds: float | None = None
    downmix: bool = False
    keep_tail: bool = False
    block_frames: int = 65536
    transcribe: bool = True  # with a preset that has [transcribe]: also <stem>.mid
    extras: tuple[str, ...] = ()  # more transcription outputs: "png", "json", "csv"
    midi_bpm: float | None = None  # the MIDI file's tempo (None: 120, not estimated)
    phase: str | None = None
    phase_iterations: int | None = None
    task: str = ""

    def __post_init__(self):
        from dawsep.phase import check

        cfg = self.preset.separate if self.preset is not None else None
        phase, iterations = self.phase or "mixture", self.phase_iterations
        if cfg is not None:
            if self.model == "default":
                self.model = cfg.model
            cfg = cfg.with_phase(self.phase, self.phase_iterations)
            phase, iterations = cfg.phase, cfg.phase_iterations
        self.phase, self.phase_iterations = check(phase, iterations)
        if self.output is None:
            p = self.preset.output if self.preset is not None else None
            self.output = OutputOptions(p.format, p.bit_depth) if p else OutputOptions()
        # a separator other than the default (or the preset's own) goes into the names and the task,
        # so `-m umx` writes piano.umx.flac beside the default's piano.flac instead of over it
        chosen = cfg.model if cfg is not None else "default"
        self.output_tag = "" if self.model == chosen else f".{model_tag(self.model)}"
        self.task = self.task or ("separate" + (f":{self.preset.name}" if self.preset is not None else "")
                                  + (f"@{self.output_tag[1:]}" if self.output_tag else ""))
        self._sep = self._chain = self._trans = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_sep", "_chain", "_trans")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._sep = self._chain = self._trans = None

    @property
    def transcribes(self) -> bool:
        return bool(self.transcribe and self.preset is not None and self.preset.transcribe is not None
                    and not self.two_stems)

    def _resolve_transcriber(self):
        return preset_model(self.preset, "transcribe", self.preset.transcribe.model, "transcriber",
                            " (the preset transcribes to MIDI; pass --no-midi to write the stem only)")

    def _model_from_preset(self) -> bool:
        return self.preset is not None and self.preset.separate is not None and self.model == self.preset.separate.model

    def _resolve_separator(self):
        from dawsep import runtime

        if self._model_from_preset():
            return preset_model(self.preset, "separate", self.model, "separator")
        return runtime.resolve(self.model, "separator")

    def fingerprint(self) -> str:
        from dawsep import runtime

        path, _, sha = self._resolve_separator()
        trans = None
        if self.transcribes:
            tpath, _, tsha = self._resolve_transcriber()
            trans = [tsha or runtime.file_sha256(tpath), list(self.extras), self.midi_bpm]
        settings = {"model": sha or runtime.file_sha256(path), "transcriber": trans,
                    "stems": self.stems, "two_stems": self.two_stems,
                    "preset": self.preset.sha256 if self.preset is not None else None,
                    "chain": (self.preset.describe() + chain_file_hashes(self.preset.chain)
                              if self.preset is not None else None),
                    "output": asdict(self.output), "overlap": self.overlap, "segment": self.segment_seconds,
                    "downmix": self.downmix, "keep_tail": self.keep_tail,
                    "phase": [self.phase, self.phase_iterations]}
        return settings_hash(settings)

    def setup(self, threads: int) -> None:
        from dawsep.separate import Separator

        self._resolve_separator()  # a bad model named by a preset: the preset's file and key
        self._sep = Separator(self.model, overlap=self.overlap, segment_seconds=self.segment_seconds,
                              threads=threads, phase=self.phase, phase_iterations=self.phase_iterations,
                              stems=self._needed_stems())
        self.plan()  # unknown stems fail here, before any song
        if self.preset is not None and self.preset.chain:
            self._chain = replace(self.preset, separate=None).build_chain()  # errors name the preset's keys
        self._trans = None
        if self.transcribes:
            from dawsep.transcribe import Transcriber

            self._resolve_transcriber()
            self._trans = Transcriber(self.preset.transcribe.model, threads=threads)

    def _needed_stems(self) -> tuple[str, ...] | None:
        """The stems this job writes (None: all): a model that takes the stem as an input
        (``dawsep.stem_input``) then computes only these."""
        if self.two_stems:
            return (self.two_stems,)
        chained = self.preset.stem if self.preset is not None else None
        wanted = list(self.stems) if self.stems else ([chained] if chained else None)
        if wanted and chained and chained not in wanted:
            wanted.insert(0, chained)
        return tuple(wanted) if wanted else None

    def plan(self) -> list[tuple[str, int | None, bool]]:
        """``(output name, stem index or None for "no_<stem>", through the preset chain)``."""
        sep = self._sep
        if self.two_stems:
            i = sep.stem_index(self.two_stems)
            return [(self.two_stems, i, False), (f"no_{self.two_stems}", None, False)]
        chained = self.preset.stem if self.preset is not None else None
        wanted = list(self.stems) if self.stems else ([chained] if chained else list(sep.stems))
        if chained and chained not in wanted:
            wanted.insert(0, chained)
        return [(s, sep.stem_index(s), s == chained and self._has_chain()) for s in wanted]

    @property
    def separator(self):
        """The loaded :class:`~dawsep.separate.Separator` (None before :meth:`setup`)."""
        return self._sep

    def weak_stems(self, below_db: float | None = None) -> list[tuple[str, float]]:
        """``(stem, SDR dB)`` for each stem this job writes that its model scored below
        ``below_db`` (default :data:`dawsep.defaults.WEAK_STEM_SDR_DB`) on its held-out test split,
        from the model's metadata (a model without that measurement: none)."""
        from dawsep.defaults import WEAK_STEM_SDR_DB

        if self._sep is None:
            self.setup(1)
        if self._sep is None:  # not loaded (a job set up elsewhere): nothing measured to report
            return []
        limit = WEAK_STEM_SDR_DB if below_db is None else below_db
        sdr = (self._sep.info.metrics.get("test") or {}).get("sdr") or {}
        stems = [name for name, idx, _ in self.plan() if idx is not None]
        return [(s, float(sdr[s])) for s in stems if isinstance(sdr.get(s), (int, float)) and sdr[s] < limit]

    def _has_chain(self) -> bool:
        return self.preset is not None and bool(self.preset.chain)

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep.errors import PluginError

        try:
            return self._separate(song, staging)
        except PluginError as exc:  # the preset's chain (e.g. driven to inf): named as the preset's
            if self.preset is None:
                raise
            raise PresetError(self.preset.source, "chain", str(exc)) from None

    def _separate(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio
        from dawsep.separate import RESIDUAL_STEM

        if self._sep is None:
            self.setup(1)
        sep, chain = self._sep, self._chain
        plan = self.plan()
        sink = None
        if self._trans is not None:
            from dawsep.transcribe import TranscriptionSink, options_from_preset

            sink = TranscriptionSink(self._trans, sep.sample_rate, options_from_preset(self.preset.transcribe))
            t_index = sep.stem_index(self.preset.stem)
        rate = sep.sample_rate
        src = audio.info(song.path)
        if chain is not None:
            chain.reset()
            chain.check_sample_rate(rate)
        engine = sep.stream()
        names = [f"{name}{self.output_tag}.{self.output.format}" for name, _, _ in plan]
        pending_mix = np.zeros((2, 0), np.float32)  # input not yet matched by engine output
        # A file at another rate than the model's: what the model never saw (above its band,
        # e.g. 22-96 kHz of a 192 kHz file) goes into "other" / "no_<stem>", so the stems still
        # add up to the input.
        takers = [i for i, (_, idx, _) in enumerate(plan) if idx is None] or \
            [i for i, (name, _, chained) in enumerate(plan) if name == RESIDUAL_STEM and not chained]
        rest = [bool(takers) and i == takers[0] for i in range(len(plan))]
        high = HighBand(song.path, rate, src.sample_rate, self.block_frames, self.downmix) \
            if src.sample_rate != rate and takers else None

        def route(y: np.ndarray, mix: np.ndarray, outs: list[OutputStream]) -> None:
            if sink is not None:
                sink.push(y[t_index])  # the raw separated stem, before the chain's effects
            extra = high.process(mix) if high is not None else None
            for (name, idx, chained), out, gets in zip(plan, outs, rest):
                sig = y[idx] if idx is not None else mix - y[plan[0][1]]
                out.emit(chain(sig, rate, reset=False) if chained else sig, extra if gets else None)

        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(audio.stream(song.path, block_frames=self.block_frames, sample_rate=rate,
                                                      downmix=self.downmix))
            if high is not None:
                stack.callback(high.close)
            outs = [stack.enter_context(OutputStream(
                staging / n, rate, src.sample_rate,
                None if (self.keep_tail and chained) else src.frames, self.output,
                skip=chain.latency_samples if chained else 0)) for n, (_, _, chained) in zip(names, plan)]
            for block in reporting(reader):
                pending_mix = np.concatenate([pending_mix, block], axis=1)
                y = engine.push(block)
                m = y.shape[2]
                route(y, pending_mix[:, :m], outs)
                pending_mix = pending_mix[:, m:]
            y = engine.flush()
            route(y, pending_mix[:, :y.shape[2]], outs)
            extra = high.flush() if high is not None else None
            for (name, idx, chained), out, gets in zip(plan, outs, rest):
                if chained:
                    out.emit(chain.flush(rate, tail=self.keep_tail))
                out.finish(extra if gets else None)
        models = [sep.info.describe()]
        if sink is not None:
            result = sink.finish()
            result.duration_s = round(src.frames / src.sample_rate, 6)
            names += save_transcription(result, staging, self.preset.stem + self.output_tag, self.extras,
                                        self.midi_bpm, f"{Path(song.path).name} ({self.preset.stem} stem)")
            models.append(self._trans.info.describe())
        return song_record(song, src, names, models=models,
                           preset=preset_record(self.preset) if self.preset is not None else None,
                           chain=chain.descriptions if chain is not None else [],
                           separation={"overlap": sep.overlap, "segment_samples": sep.segment,
                                       "phase": sep.phase, "phase_iterations": sep.phase_iterations,
                                       "residual_above_model_band": plan[takers[0]][0] if high is not None else None})
