"""Source separation at run time: ONNX Runtime + overlap-add chunking (no torch).

>>> sep = Separator()                          # the packaged default model
>>> stems = sep.separate(audio, 44100)         # {"piano": (2, T), "bass": (2, T), ...}

:class:`Separator` drives one :class:`~dawsep.chunking.OverlapAdd` engine; the offline call is
the engine fed the whole signal plus a flush, and :meth:`Separator.stream` hands out the same
engine for block-by-block use. :class:`SeparatorStep` puts one stem of it into a
:class:`~dawsep.chain.Chain` (a preset's ``[separate]`` section, or ``model = "separate"``).

A host that needs only some stems says so (``Separator(..., stems=("piano",))``): the separator
then returns those stems only, and on a model that can compute stems one at a time (metadata
``dawsep.stem_input``, the conditioned models) it runs the network for those stems only.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from dawsep import phase as phase_options
from dawsep import runtime
from dawsep.chain import register_model_step
from dawsep.chunking import DEFAULT_OVERLAP, OverlapAdd
from dawsep.errors import AudioFormatError, ModelError, PluginError, UnknownStemError

#: The stem that takes what a model running at another rate cannot see (above its band).
RESIDUAL_STEM = "other"

class Separator:
    """Waveform -> stems with a separator ONNX model (the contract in docs/plugin-contract.md).

    ``model``: a packaged model name (``"default"``) or a path to an ``.onnx`` file.
    ``segment_seconds``: chunk length (default: the model's ``dawsep.segment_samples``);
    ``overlap``: fraction of a chunk cross-faded with the next; ``threads``: ONNX Runtime
    intra-op threads (default: all cores, or the batch engine's share).
    ``phase``: post-processing of each chunk's stems against the mixture chunk (see
    :mod:`dawsep.phase`): ``"mixture"`` (the model's output), ``"griffin-lim"`` or ``"wiener"``;
    ``phase_iterations``: Griffin-Lim or Wiener EM iterations (default: the method's).
    A bad value raises ValueError naming the allowed ones.
    ``stems``: the stems to return, in this order (default: all the model's, in its order); a
    stem the model lacks raises :class:`~dawsep.errors.UnknownStemError`. With a model whose
    metadata names a ``dawsep.stem_input`` and ``phase="mixture"``, only these stems are
    computed (one network pass per stem instead of all); otherwise every stem is computed and
    these are kept (the phase post-processing needs all stems).
    """

    def __init__(self, model: str | os.PathLike = "default", *, segment_seconds: float | None = None,
                 overlap: float = DEFAULT_OVERLAP, threads: int | None = None, batch_size: int = 1,
                 phase: str = "mixture", phase_iterations: int | None = None,
                 stems: Sequence[str] | None = None):
        self.phase, self.phase_iterations = phase_options.check(phase, phase_iterations)
        self._refine = phase_options.refiner(self.phase, self.phase_iterations)
        self.model = runtime.load(model, "separator", threads)
        info = self.model.info
        if not info.stems:
            raise ModelError(f"{info.path}: separator metadata lists no stems (dawsep.stems)")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap}")
        self.info = info
        self.stems: tuple[str, ...] = info.stems
        # rows of the model's stems to keep (None: all); fed to the graph, or taken from its output
        self._feeds: dict[str, np.ndarray] = {}
        self._rows: list[int] | None = None
        if stems is not None:
            if isinstance(stems, str):
                stems = (stems,)
            wanted = tuple(dict.fromkeys(stems))
            if not wanted:
                raise ValueError("stems: ask for at least one stem (None: all)")
            for stem in wanted:
                if stem not in info.stems:
                    raise UnknownStemError(info.name, stem, info.stems)
            rows = [info.stems.index(stem) for stem in wanted]
            self.stems = wanted
            if rows == list(range(len(info.stems))):
                pass  # every stem in the model's order: the plain graph
            elif info.stem_input and self._refine is None:
                self._feeds = {info.stem_input: np.array(rows, np.int64)}
            else:
                self._rows = rows
        self.sample_rate: int = info.sample_rate
        self.segment = int(round(segment_seconds * info.sample_rate)) if segment_seconds else info.segment_samples
        if self.segment < 1024:
            raise ValueError(f"segment of {self.segment} samples is too short (at least 1024)")
        self.overlap = int(round(overlap * self.segment))
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return (f"Separator({self.info.name!r}, stems={list(self.stems)}, sample_rate={self.sample_rate}, "
                f"segment={self.segment}, overlap={self.overlap}, phase={self.phase!r}, "
                f"phase_iterations={self.phase_iterations})")

    @property
    def computes_selected_only(self) -> bool:
        """True when the network runs for :attr:`stems` only (a stem-input model asked for some
        of its stems), False when it computes every stem of the model."""
        return bool(self._feeds)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """``(batch, 2, segment)`` -> ``(batch, len(stems), 2, segment)``: the model, then the phase
        post-processing of each chunk (here, before the overlap-add, so the offline and the
        streaming paths share it and memory stays bounded by a chunk)."""
        y = self.model.run(["stems"], {"mix": batch, **self._feeds})[0]
        if self._refine is not None:
            y = np.stack([self._refine(batch[b], y[b]) for b in range(batch.shape[0])])
        return y if self._rows is None else y[:, self._rows]

    def stream(self) -> OverlapAdd:
        """A fresh chunking engine over this model: ``push((2, n)) -> (n_stems, 2, m)``, ``flush()``."""
        return OverlapAdd(self._run, self.segment, self.overlap, channels=2, n_out=len(self.stems),
                          batch_size=self.batch_size)

    def stem_index(self, stem: str) -> int:
        """Row of ``stem`` in this separator's output (:attr:`stems` order)."""
        if stem not in self.stems:
            raise UnknownStemError(self.info.name, stem, self.stems)
        return self.stems.index(stem)

    def separate_array(self, audio: np.ndarray) -> np.ndarray:
        """``(channels, samples)`` at the model's rate, 1 or 2 channels -> ``(n_stems, channels, samples)``."""
        x = _stereo(audio)
        engine = self.stream()
        y = np.concatenate([engine.push(x), engine.flush()], axis=2)
        return y.mean(axis=1, keepdims=True) if np.asarray(audio).ndim == 1 or audio.shape[0] == 1 else y

    def separate(self, audio: np.ndarray, sample_rate: int | None = None) -> dict[str, np.ndarray]:
        """``(channels, samples)`` (or ``(samples,)``) at ``sample_rate`` -> ``{stem: (channels, samples)}``.

        Any rate: resampled to the model's and back; stems have the input's length and channels.
        At another rate than the model's, what the model never sees (the input minus its round
        trip through the model's rate: above about 21 kHz for a 44.1 kHz model) is added to
        ``other``, so the stems still add up to the input.
        """
        from dawsep import audio as audio_io

        mono = np.ndim(audio) == 1
        x = audio_io.as_block(audio, max_channels=2, dtype=np.float32)
        if not np.isfinite(x).all():
            raise AudioFormatError("<array>", "audio contains NaN or infinite samples")
        sr = int(sample_rate or self.sample_rate)
        inner = audio_io.resample(x, sr, self.sample_rate) if sr != self.sample_rate else x
        y = self.separate_array(inner)
        out = {}
        for i, name in enumerate(self.stems):
            s = audio_io.resample(y[i], self.sample_rate, sr) if sr != self.sample_rate else y[i]
            s = _fit(s, x.shape[1])
            if sr != self.sample_rate and name == RESIDUAL_STEM:
                s = s + (x - _fit(audio_io.resample(inner, self.sample_rate, sr), x.shape[1]))
            out[name] = s[0] if mono else s
        return out


def _stereo(audio: np.ndarray) -> np.ndarray:
    from dawsep.audio import as_block

    x = as_block(audio, max_channels=2, dtype=np.float32)
    return np.repeat(x, 2, axis=0) if x.shape[0] == 1 else x


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


class SeparatorStep:
    """One stem of a separator as a chain :class:`~dawsep.chain.ModelStep`.

    ``process`` returns the same number of samples as it is given, delayed by
    ``latency_samples`` (the chunking engine's worst-case hold-back): a FIFO primed with that
    many zeros turns the engine's variable output into a fixed delay.
    """

    def __init__(self, stem: str, model: str = "default", overlap: float = DEFAULT_OVERLAP,
                 segment_seconds: float | None = None, separator: Separator | None = None,
                 phase: str = "mixture", phase_iterations: int | None = None):
        # its own separator computes this stem only (one pass on a stem-input model)
        self.separator = separator or Separator(model, overlap=overlap, segment_seconds=segment_seconds,
                                                phase=phase, phase_iterations=phase_iterations, stems=(stem,))
        self.index = self.separator.stem_index(stem)
        self.info = self.separator.info
        self.stem = stem
        self.name = f"separate:{stem}"
        self.sample_rate = self.separator.sample_rate
        self._engine = self.separator.stream()
        self.latency_samples = self._engine.max_delay
        self.reset()

    def reset(self) -> None:
        self._engine.reset()
        self._fifo = np.zeros((2, self.latency_samples), np.float32)
        self._channels: int | None = None

    def process(self, audio: np.ndarray, sample_rate: int, reset: bool) -> np.ndarray:
        if reset:
            self.reset()
        x = np.asarray(audio, dtype=np.float32)
        self._channels = self._channels or x.shape[0]
        y = self._engine.push(_stereo(x))[self.index]
        self._fifo = np.concatenate([self._fifo, y], axis=1)
        n = x.shape[1]
        out, self._fifo = self._fifo[:, :n], self._fifo[:, n:]
        return out.mean(axis=0, keepdims=True) if x.shape[0] == 1 else out


def _step_factory(stem: str, model: str = "default", overlap: float = DEFAULT_OVERLAP,
                  segment_seconds: float | None = None, phase: str = "mixture",
                  phase_iterations: int | None = None) -> SeparatorStep:
    try:
        return SeparatorStep(stem, model=model, overlap=float(overlap), segment_seconds=segment_seconds,
                             phase=phase, phase_iterations=phase_iterations)
    except ValueError as exc:  # a bad option in a preset's step: a PluginError naming it
        raise PluginError(f"model step 'separate': {exc}") from None


register_model_step("separate", _step_factory)
