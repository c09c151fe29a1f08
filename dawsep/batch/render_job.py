"""The ``render`` job: each input file through a preset's chain (its ``[separate]`` step first,
unless the input already is that stem), streamed block by block.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dawsep.batch.fingerprints import model_hashes, settings_hash
from dawsep.batch.outputs import OutputOptions, OutputStream, preset_record, reporting, song_record
from dawsep.batch.songs import Song
from dawsep.errors import DawsepError, PresetError
from dawsep.metrics import STEMS


@dataclass
class RenderJob:
    """Render each input file through a preset's chain: ``OUT/<song>/<stem>.<ext>``.

    Streams the file in blocks (bounded memory for hour-long files); the output is aligned with
    the input and the same length, or longer by the effect tail with ``keep_tail``. A preset
    with a ``[separate]`` section separates its stem first (a model step at the model's rate),
    unless the input already is that stem: ``separate`` None (the default) skips the separation
    for a file named like the preset's stem (``bass.flac`` for the bass preset, as ``dawsep
    separate`` writes it), False never separates, True always does. The output is named after the
    stem it holds: the separated stem, else the input's own when it is named like a stem
    (``guitar.wav`` through a chain alone -> ``guitar.flac``), else the preset's stem.
    """

    preset: Any  # dawsep.presets.Preset
    output: OutputOptions | None = None  # None: the preset's [output]
    downmix: bool = False
    keep_tail: bool = False
    block_frames: int = 65536
    task: str = ""
    separate: bool | None = None

    def __post_init__(self):
        self.task = self.task or f"render:{self.preset.name}"
        if self.output is None:
            self.output = OutputOptions(self.preset.output.format, self.preset.output.bit_depth)
        self._chains: dict[bool, Any] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_chains"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._chains = {}

    def fingerprint(self) -> str:
        settings = {"preset": self.preset.sha256, "chain": self.preset.describe(), "output": asdict(self.output),
                    "downmix": self.downmix, "keep_tail": self.keep_tail,
                    "models": model_hashes(self.preset),
                    # the [separate] settings, which a caller (render --phase) may have changed
                    "separate": asdict(self.preset.separate) if self.preset.separate else None,
                    "separate_stems": self.separate}
        return settings_hash(settings)

    def setup(self, threads: int) -> None:
        from dawsep import runtime

        runtime.set_default_threads(threads)
        self._chains = {}
        self._chain_for(self.preset.separate is not None and self.separate is not False)

    def separates(self, song_path: str) -> bool:
        """Whether this input goes through the preset's [separate] step."""
        if self.preset.separate is None or self.separate is False:
            return False
        return self.separate is True or stem_name(song_path) != self.preset.stem

    def output_stem(self, song_path: str) -> str:
        """What the output is named after: the stem separated out of the input, else the input's
        own stem name when it has one (a chain on ``guitar.wav`` gives ``guitar.flac``), else the
        preset's stem."""
        name = stem_name(song_path)
        if self.separates(song_path) or name not in set(STEMS) | {self.preset.stem}:
            return self.preset.stem
        return name

    def _chain_for(self, separated: bool):
        if separated not in self._chains:
            p = self.preset if separated else replace(self.preset, separate=None)
            self._chains[separated] = p.build_chain()
        return self._chains[separated]

    def run(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep.errors import PluginError

        try:
            return self._render(song, staging)
        except PluginError as exc:  # e.g. a chain driven to inf: the preset's doing, named as such
            raise PresetError(self.preset.source, self.preset.key_of_step(getattr(exc, "step_index", None)),
                              str(exc)) from None

    def _render(self, song: Song, staging: Path) -> dict[str, Any]:
        from dawsep import audio

        separated = self.separates(song.path)
        chain = self._chain_for(separated)
        chain.reset()
        name = f"{self.output_stem(song.path)}.{self.output.format}"
        src = audio.info(song.path)
        # A chain with a model step runs at the model's rate: stream-resample there and back.
        rates = chain.model_sample_rates
        if len(rates) > 1:
            raise DawsepError(f"preset {self.preset.name!r} mixes model steps at {sorted(rates)} Hz")
        rate = next(iter(rates), src.sample_rate)
        chain.check_sample_rate(rate)
        with audio.stream(song.path, block_frames=self.block_frames, sample_rate=rate,
                          downmix=self.downmix) as reader, \
                OutputStream(staging / name, rate, src.sample_rate, None if self.keep_tail else src.frames,
                             self.output, skip=chain.latency_samples) as out:
            for block in reporting(reader):
                out.emit(chain(block, rate, reset=False))
            out.emit(chain.flush(rate, tail=self.keep_tail))
            out.finish()
        return song_record(song, src, [name], preset=preset_record(self.preset), chain=chain.descriptions,
                           models=[st.info.describe() for st in chain.model_steps if hasattr(st, "info")],
                           separated=separated)


def stem_name(path: str) -> str:
    """``/x/song/bass.flac`` -> ``bass``: the name a stem file has (how `dawsep separate` writes it)."""
    return Path(path).stem
