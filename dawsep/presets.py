"""Per-instrument presets: TOML data validated into frozen dataclasses.

A preset says which stem to extract (``[separate]``), which chain to render it through
(``[[chain]]``), how to transcribe it (``[transcribe]``, piano) and how to write it
(``[output]``). Presets are data, never code: they are parsed with :mod:`tomllib` only.
Every error is a :class:`PresetError` naming the file, the key and what is allowed.
"""
from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from dawsep.audio import DEFAULT_BIT_DEPTH as _PCM_DEFAULT, WRITE_FORMATS as FORMATS
from dawsep.chain import (BUILTINS, BuiltinStep, Chain, ModelStepSpec, StepSpec, VST3Step, check_impulse_response,
                          check_model_step_options, describe_steps, validate_builtin)
from dawsep.defaults import NOTE_ENDS, DecodeOptions
from dawsep.errors import ModelError, PluginError, PresetError
from dawsep.metrics import STEMS  # noqa: F401  (the corpus's stems, which the shipped presets cover)
from dawsep.phase import MAX_ITERATIONS, PHASES
DEFAULT_BIT_DEPTH = {fmt: (_PCM_DEFAULT if depths else None) for fmt, depths in FORMATS.items()}


@dataclass(frozen=True)
class SeparateConfig:
    """Which stem the preset extracts, with which separator model and phase post-processing
    (:mod:`dawsep.phase`; ``phase_iterations`` None: the method's default)."""

    stem: str
    model: str = "default"
    phase: str = "mixture"
    phase_iterations: int | None = None

    def with_phase(self, phase: str | None, iterations: int | None) -> "SeparateConfig":
        """This config with a caller's phase options over it: a given phase wins, and the
        preset's own iterations stay only with the preset's own phase."""
        phase = phase or self.phase
        if iterations is None and phase == self.phase:
            iterations = self.phase_iterations
        return replace(self, phase=phase, phase_iterations=iterations)


_DECODE = DecodeOptions()  # the one definition of the decoding defaults (dawsep.defaults)


@dataclass(frozen=True)
class TranscribeConfig:
    """Note-decoding settings for the transcriber (piano): a key the preset leaves out takes the
    tuned default of :class:`dawsep.defaults.DecodeOptions`."""

    model: str = "default"
    onset_threshold: float = _DECODE.onset_threshold
    frame_threshold: float = _DECODE.frame_threshold
    offset_threshold: float = _DECODE.offset_threshold
    min_note_ms: float = _DECODE.min_note_ms
    pedal: bool = _DECODE.pedal
    note_ends: str = _DECODE.note_ends  # pedal: sounding note ends | key: estimated key releases (+ CC64)


@dataclass(frozen=True)
class OutputConfig:
    format: str = "flac"
    bit_depth: int | None = 24


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    chain: tuple[StepSpec, ...] = ()
    separate: SeparateConfig | None = None
    transcribe: TranscribeConfig | None = None
    output: OutputConfig = field(default_factory=OutputConfig)
    source: str = "<string>"
    sha256: str = ""

    @property
    def stem(self) -> str:
        """The stem name outputs are written under (``other`` when the preset names none)."""
        return self.separate.stem if self.separate else "other"

    def steps(self, **separate_options: Any) -> tuple[StepSpec, ...]:
        """The chain's steps, led by the ``[separate]`` step when the preset has one
        (``separate_options``, e.g. ``segment_seconds``, go to that step). Plain data: nothing
        is loaded."""
        if self.separate is None:
            return self.chain
        sep = self.separate
        opts = {"stem": sep.stem, "model": sep.model, "phase": sep.phase,
                "phase_iterations": sep.phase_iterations, **separate_options}
        return (ModelStepSpec("separate", opts),) + self.chain

    def describe(self) -> list[str]:
        """The chain's step descriptions without loading anything (no plugin code runs)."""
        return describe_steps(self.steps())

    def build_chain(self, **separate_options: Any) -> Chain:
        """Instantiate the chain (:meth:`steps`). Loading a VST3 plugin runs its code. Plugin
        problems become a PresetError, model problems a ModelError, both naming this file and
        the key (``separate.model``, ``chain[2]``)."""
        try:
            return Chain(self.steps(**separate_options))
        except (PluginError, ModelError) as exc:
            key = self.key_of_step(getattr(exc, "step_index", None), model=isinstance(exc, ModelError))
            if isinstance(exc, ModelError):
                raise ModelError(f"{self.source} [{key}]: {exc}") from None
            raise PresetError(self.source, key, str(exc)) from None

    def key_of_step(self, index: int | None, model: bool = False) -> str:
        """The preset key of step ``index`` of :meth:`steps` (``separate`` leads when present)."""
        if index is None:
            return "chain"
        if self.separate is not None:
            if index == 0:
                return "separate.model" if model else "separate"
            index -= 1
        return f"chain[{index}]"


# --------------------------------------------------------------------------------------------

_TOP_KEYS = {"name", "description", "separate", "chain", "transcribe", "output"}
MAX_DEPTH = 6  # tables and arrays inside each other; the deepest real preset needs 4
MAX_BYTES = 1 << 20


def _expect(source: str, key: str, value: Any, types: type | tuple, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise PresetError(source, key, f"got {value!r}; expected {what}")
    if not isinstance(value, types):
        raise PresetError(source, key, f"got {value!r} ({type(value).__name__}); expected {what}")
    return value


def _number(source: str, key: str, value: Any, lo: float, hi: float) -> float:
    _expect(source, key, value, (int, float), f"a number in [{lo:g}, {hi:g}]")
    if not (lo <= value <= hi):
        raise PresetError(source, key, f"{value!r} is out of range; expected a number in [{lo:g}, {hi:g}]")
    return float(value)


def _unknown(source: str, section: str, table: Mapping, allowed) -> None:
    for key in table:
        if key not in allowed:
            where = f"{section}.{key}" if section else key
            raise PresetError(source, where, f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _parse_separate(source: str, t: Any) -> SeparateConfig:
    _expect(source, "separate", t, dict, "a table")
    _unknown(source, "separate", t, {"stem", "model", "phase", "phase_iterations"})
    model = _expect(source, "separate.model", t.get("model", "default"), str, "a model name or .onnx path")
    stems = _model_stems(model)  # the model's own metadata says which stems it has
    what = f"one of {', '.join(stems)} (the stems of separator model {model!r})" if stems else "a stem name"
    if "stem" not in t:
        raise PresetError(source, "separate.stem", f"missing; expected {what}")
    stem = _expect(source, "separate.stem", t["stem"], str, what)
    if not stem or (stems and stem not in stems):
        raise PresetError(source, "separate.stem", f"{stem!r} is not a stem; expected {what}")
    allowed = ", ".join(PHASES)
    phase = _expect(source, "separate.phase", t.get("phase", "mixture"), str, f"one of {allowed}")
    if phase not in PHASES:
        raise PresetError(source, "separate.phase", f"{phase!r} is not allowed; expected one of {allowed}")
    iterations = t.get("phase_iterations")
    if iterations is not None:
        what = f"an integer in [0, {MAX_ITERATIONS}]"
        _expect(source, "separate.phase_iterations", iterations, int, what)
        if not 0 <= iterations <= MAX_ITERATIONS:
            raise PresetError(source, "separate.phase_iterations", f"{iterations} is out of range; expected {what}")
    return SeparateConfig(stem=stem, model=model, phase=phase, phase_iterations=iterations)


def _model_stems(model: str) -> tuple[str, ...] | None:
    """The stems separator ``model`` lists in its metadata, or None when it cannot be read now
    (a missing or broken model is reported, naming the preset's key, when the chain is built)."""
    from dawsep import runtime
    from dawsep.errors import DawsepError

    try:
        return runtime.model_stems(model)
    except DawsepError:
        return None


def _parse_transcribe(source: str, t: Any) -> TranscribeConfig:
    _expect(source, "transcribe", t, dict, "a table")
    d = TranscribeConfig()
    _unknown(source, "transcribe", t, set(d.__dataclass_fields__))
    kw: dict[str, Any] = {}
    for key in ("onset_threshold", "frame_threshold", "offset_threshold"):
        if key in t:
            kw[key] = _number(source, f"transcribe.{key}", t[key], 0.0, 1.0)
    if "min_note_ms" in t:
        kw["min_note_ms"] = _number(source, "transcribe.min_note_ms", t["min_note_ms"], 0.0, 10000.0)
    if "pedal" in t:
        kw["pedal"] = _expect(source, "transcribe.pedal", t["pedal"], bool, "true or false")
    if "model" in t:
        kw["model"] = _expect(source, "transcribe.model", t["model"], str, "a model name or .onnx path")
    if "note_ends" in t:
        allowed = " or ".join(NOTE_ENDS)
        v = _expect(source, "transcribe.note_ends", t["note_ends"], str, allowed)
        if v not in NOTE_ENDS:
            raise PresetError(source, "transcribe.note_ends", f"{v!r} is not allowed; expected {allowed}")
        kw["note_ends"] = v
    return TranscribeConfig(**kw)


def _parse_output(source: str, t: Any) -> OutputConfig:
    _expect(source, "output", t, dict, "a table")
    _unknown(source, "output", t, {"format", "bit_depth"})
    fmt = _expect(source, "output.format", t.get("format", "flac"), str, f"one of {', '.join(FORMATS)}")
    if fmt not in FORMATS:
        raise PresetError(source, "output.format", f"{fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    depths = FORMATS[fmt]
    depth = t.get("bit_depth", DEFAULT_BIT_DEPTH[fmt])
    if depth is not None and not depths:
        raise PresetError(source, "output.bit_depth", f"{fmt} has no bit depth setting; remove the key")
    if depth is not None:
        _expect(source, "output.bit_depth", depth, int, f"one of {depths}")
        if depth not in depths:
            raise PresetError(source, "output.bit_depth", f"{depth} is not allowed for {fmt}; expected one of {depths}")
    return OutputConfig(format=fmt, bit_depth=depth)


def _parse_step(source: str, i: int, t: Any, base: Path | None) -> StepSpec:
    where = f"chain[{i}]"
    _expect(source, where, t, dict, "a table")
    kinds = [k for k in ("plugin", "vst3", "model") if k in t]
    if len(kinds) != 1:
        raise PresetError(source, where, "each step needs exactly one of: plugin (a pedalboard built-in: "
                          f"{', '.join(sorted(BUILTINS))}), vst3 (a .vst3 path) or model")
    kind = kinds[0]
    if kind == "plugin":
        name = _expect(source, f"{where}.plugin", t["plugin"], str, "a built-in plugin name")
        params = {k: v for k, v in t.items() if k != "plugin"}
        try:
            clean = validate_builtin(name, params)
        except PluginError as exc:
            bad = exc.parameter if exc.parameter in params else None
            raise PresetError(source, f"{where}.{bad}" if bad else f"{where}.plugin", str(exc)) from None
        if name == "Convolution" and "impulse_response_filename" in clean:
            try:
                check_impulse_response(clean["impulse_response_filename"])
            except PluginError as exc:
                raise PresetError(source, f"{where}.impulse_response_filename", str(exc)) from None
        return BuiltinStep(name, clean)
    if kind == "vst3":
        _unknown(source, where, t, {"vst3", "parameters", "plugin_name"})
        raw = _expect(source, f"{where}.vst3", t["vst3"], str, "a path to a .vst3 bundle")
        if not raw.lower().rstrip("/").endswith(".vst3"):
            raise PresetError(source, f"{where}.vst3", f"{raw!r} is not a .vst3 bundle "
                              "(pedalboard on Linux loads VST3 plugins only)")
        # absolute, or looked up in the standard VST3 folders when loaded (chain.resolve_vst3):
        # never next to the preset, which may have come with the plugin from anywhere
        path = Path(raw).expanduser()
        params = _expect(source, f"{where}.parameters", t.get("parameters", {}), dict, "a table of parameters")
        for k, v in params.items():
            _expect(source, f"{where}.parameters.{k}", v, (int, float, str), "a number or a named value")
        name = t.get("plugin_name")
        if name is not None:
            _expect(source, f"{where}.plugin_name", name, str, "a plugin name inside the bundle")
        return VST3Step(str(path), dict(params), name)
    kind_name = _expect(source, f"{where}.model", t["model"], str, "a model step kind")
    options = {k: v for k, v in t.items() if k != "model"}
    try:
        check_model_step_options(kind_name, options)
    except PluginError as exc:
        bad = exc.parameter if exc.parameter in options else None
        raise PresetError(source, f"{where}.{bad}" if bad else where, str(exc)) from None
    return ModelStepSpec(kind_name, options)


def _check_depth(source: str, value: Any, key: str, depth: int = 0) -> None:
    if isinstance(value, (dict, list)):
        if depth >= MAX_DEPTH:
            raise PresetError(source, key, f"nested deeper than {MAX_DEPTH} levels of tables and arrays")
        if isinstance(value, dict):
            subs = ((f"{key}.{k}" if key else k, v) for k, v in value.items())
        else:
            subs = ((f"{key}[{i}]", v) for i, v in enumerate(value))
        for sub, v in subs:
            _check_depth(source, v, sub, depth + 1)


def parse_preset(text: str, source: str = "<string>", base: Path | None = None) -> Preset:
    """Parse and validate preset TOML (a leading UTF-8 byte order mark is allowed). ``base`` is
    accepted for compatibility and unused: relative VST3 paths are looked up in the standard
    VST3 folders, never next to the preset (:func:`dawsep.chain.resolve_vst3`)."""
    text = text[1:] if text.startswith("\ufeff") else text
    if len(text) > MAX_BYTES:
        raise PresetError(source, None, f"is {len(text)} characters long; a preset is at most {MAX_BYTES}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(source, None, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise PresetError(source, None, f"nested too deeply to read (at most {MAX_DEPTH} levels of tables "
                                        "and arrays)") from None
    _check_depth(source, data, "")
    _unknown(source, "", data, _TOP_KEYS)
    name = _expect(source, "name", data.get("name", Path(source).stem), str, "a string")
    description = _expect(source, "description", data.get("description", ""), str, "a string")
    chain_raw = data.get("chain", [])
    _expect(source, "chain", chain_raw, list, "an array of tables ([[chain]])")
    return Preset(
        name=name,
        description=description,
        chain=tuple(_parse_step(source, i, t, base) for i, t in enumerate(chain_raw)),
        separate=_parse_separate(source, data["separate"]) if "separate" in data else None,
        transcribe=_parse_transcribe(source, data["transcribe"]) if "transcribe" in data else None,
        output=_parse_output(source, data.get("output", {})),
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def _builtin_dir():
    return resources.files("dawsep._presets")


def list_presets() -> list[str]:
    """Names of the presets shipped with dawsep."""
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a shipped preset by bare name, or a user preset by path: anything with a ``/`` or a
    ``.toml`` suffix (a file or folder in the working folder named like a shipped preset is
    never taken for it). Validating loads no plugin."""
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s or os.sep in s or isinstance(name_or_path, Path):
        path = Path(s).expanduser()
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise PresetError(path, None, f"cannot read preset: {exc.strerror if isinstance(exc, OSError) else exc}") from None
        return parse_preset(text, str(path), base=path.resolve().parent)
    names = list_presets()
    if s not in names:
        raise PresetError(s, None, f"no such preset; shipped presets: {', '.join(names)} (or pass a path to a .toml file)")
    res = _builtin_dir() / f"{s}.toml"
    return parse_preset(res.read_text(encoding="utf-8"), f"presets/{s}.toml")
