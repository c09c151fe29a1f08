"""Effect chains: pedalboard built-ins, external VST3 plugins and model steps in one ordered list.

A :class:`Chain` is called like a pedalboard plugin, ``chain(audio, sample_rate, reset=True)``,
with ``audio`` shaped ``(channels, samples)``. With ``reset=False`` it keeps its state between
calls, so a file can be streamed block by block; the concatenated blocks followed by
:meth:`Chain.flush` equal the whole-file result delayed by :attr:`Chain.latency_samples`.
The whole-file call is implemented as ``reset()`` + one streaming call + flush, so the two paths
agree by construction.

Consecutive pedalboard steps (built-ins and stereo VST3s) run as one ``pedalboard.Pedalboard``.
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from dawsep.errors import PluginError

# --------------------------------------------------------------------------------------------
# Built-in plugins: the parameters we accept, with units in the names as pedalboard has them.


@dataclass(frozen=True)
class ParamSpec:
    """Allowed values of one built-in parameter."""

    kind: str  # "float" | "int" | "bool" | "choice" | "path"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind in ("float", "int"):
            return f"a number in [{self.minimum:g}, {self.maximum:g}]"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)
        return "a file path"

    def check(self, value: Any) -> Any:
        """Return the normalised value or raise ``ValueError`` saying what is allowed."""
        if self.kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"got {value!r} ({type(value).__name__}); expected {self.describe()}")
            if self.kind == "int" and float(value) != int(value):
                raise ValueError(f"got {value!r}; expected a whole number in [{self.minimum:g}, {self.maximum:g}]")
            if not math.isfinite(value) or not (self.minimum <= value <= self.maximum):
                raise ValueError(f"{value!r} is out of range; expected {self.describe()}")
            return int(value) if self.kind == "int" else float(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"got {value!r}; expected {self.describe()}")
            return value
        if self.kind == "choice":
            if isinstance(value, bool) or value not in self.choices:
                raise ValueError(f"got {value!r}; expected {self.describe()}")
            return self.choices[self.choices.index(value)]  # 24.0 -> 24: the allowed value itself
        if not isinstance(value, str) or not value:
            raise ValueError(f"got {value!r}; expected {self.describe()}")
        return value


def _f(lo: float, hi: float) -> ParamSpec:
    return ParamSpec("float", lo, hi)


_FREQ = _f(1.0, 96000.0)
# dawsep addition: pedalboard's Highpass/LowpassFilter is one pole (6 dB/octave), too gentle to
# remove rumble or hiss; steeper slopes cascade poles (see make_builtin). Default 24 dB/octave.
_SLOPE = ParamSpec("choice", choices=(6, 12, 18, 24, 36, 48))
DEFAULT_SLOPE_DB_PER_OCTAVE = 24
_Q = _f(0.025, 40.0)
_UNIT = _f(0.0, 1.0)

#: name -> {parameter: spec}. Ranges follow pedalboard's own checks where it has them and
#: musically sane bounds where it does not (pedalboard accepts e.g. gain_db=1e9 silently).
BUILTINS: Mapping[str, Mapping[str, ParamSpec]] = MappingProxyType({
    "Gain": {"gain_db": _f(-120.0, 60.0)},
    "Invert": {},
    "HighpassFilter": {"cutoff_frequency_hz": _FREQ, "slope_db_per_octave": _SLOPE},
    "LowpassFilter": {"cutoff_frequency_hz": _FREQ, "slope_db_per_octave": _SLOPE},
    "HighShelfFilter": {"cutoff_frequency_hz": _FREQ, "gain_db": _f(-48.0, 48.0), "q": _Q},
    "LowShelfFilter": {"cutoff_frequency_hz": _FREQ, "gain_db": _f(-48.0, 48.0), "q": _Q},
    "PeakFilter": {"cutoff_frequency_hz": _FREQ, "gain_db": _f(-48.0, 48.0), "q": _Q},
    "LadderFilter": {
        "mode": ParamSpec("choice", choices=("LPF12", "HPF12", "BPF12", "LPF24", "HPF24", "BPF24")),
        "cutoff_hz": _FREQ, "resonance": _UNIT, "drive": _f(1.0, 100.0),
    },
    "Compressor": {"threshold_db": _f(-96.0, 0.0), "ratio": _f(1.0, 100.0),
                   "attack_ms": _f(0.01, 1000.0), "release_ms": _f(1.0, 10000.0)},
    "Limiter": {"threshold_db": _f(-96.0, 0.0), "release_ms": _f(1.0, 10000.0)},
    "NoiseGate": {"threshold_db": _f(-120.0, 0.0), "ratio": _f(1.0, 100.0),
                  "attack_ms": _f(0.01, 1000.0), "release_ms": _f(1.0, 10000.0)},
    "Clipping": {"threshold_db": _f(-96.0, 0.0)},
    "Distortion": {"drive_db": _f(0.0, 100.0)},
    "Bitcrush": {"bit_depth": _f(1.0, 32.0)},
    "Reverb": {"room_size": _UNIT, "damping": _UNIT, "wet_level": _UNIT, "dry_level": _UNIT,
               "width": _UNIT, "freeze_mode": _UNIT},
    "Delay": {"delay_seconds": _f(0.0, 30.0), "feedback": _UNIT, "mix": _UNIT},
    "Chorus": {"rate_hz": _f(0.0, 100.0), "depth": _UNIT, "centre_delay_ms": _f(0.0, 100.0),
               "feedback": _f(-1.0, 1.0), "mix": _UNIT},
    "Phaser": {"rate_hz": _f(0.0, 100.0), "depth": _UNIT, "centre_frequency_hz": _FREQ,
               "feedback": _f(-1.0, 1.0), "mix": _UNIT},
    "PitchShift": {"semitones": _f(-72.0, 72.0)},
    "Convolution": {"impulse_response_filename": ParamSpec("path"), "mix": _UNIT},
})

# Left out on purpose: MP3Compressor (block-size dependent, so streaming != offline),
# Resample/GSMFullRateCompressor (codec simulations), and instruments.

# Parameters that must stay below Nyquist at the rate the chain runs at.
_FREQUENCY_PARAMS = ("cutoff_frequency_hz", "cutoff_hz", "centre_frequency_hz")


def validate_builtin(plugin: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Check a built-in's name and parameters; returns them normalised.

    Raises :class:`PluginError` whose message names the offending key and what is allowed;
    :mod:`dawsep.presets` re-raises it with the preset file attached.
    """
    spec = BUILTINS.get(plugin)
    if spec is None:
        raise PluginError(f"unknown plugin {plugin!r}; built-ins are: {', '.join(sorted(BUILTINS))}"
                          " (use vst3 = \"path/to/Plugin.vst3\" for external plugins)")
    clean: dict[str, Any] = {}
    for key, value in parameters.items():
        if key not in spec:
            allowed = ", ".join(spec) or "none"
            raise PluginError(f"{plugin} has no parameter {key!r}; allowed: {allowed}", parameter=key)
        try:
            clean[key] = spec[key].check(value)
        except ValueError as exc:
            raise PluginError(f"{plugin}.{key}: {exc}", parameter=key) from None
    return clean


def check_impulse_response(path: str) -> Path:
    """The Convolution impulse response as a path, refused unless it is a readable audio file
    (pedalboard passes audio through unchanged when it cannot use the file)."""
    from dawsep import audio
    from dawsep.errors import AudioFormatError

    p = Path(path).expanduser()
    if not p.is_file():
        raise PluginError(f"Convolution: impulse response {path!r} not found")
    try:
        audio.info(p)
    except AudioFormatError as exc:
        raise PluginError(f"Convolution: impulse response {path!r} is not usable audio: {exc.reason}") from None
    return p


def make_builtin(plugin: str, parameters: Mapping[str, Any]):
    """Instantiate a validated pedalboard built-in."""
    import pedalboard

    clean = validate_builtin(plugin, parameters)
    cls = getattr(pedalboard, plugin)
    if plugin == "LadderFilter" and "mode" in clean:
        clean["mode"] = getattr(pedalboard.LadderFilter.Mode, clean["mode"])
    if plugin == "Convolution":
        path = clean.pop("impulse_response_filename", None)
        if path is None:
            raise PluginError("Convolution needs impulse_response_filename")
        ir = check_impulse_response(path)
        try:
            return cls(str(ir), **clean)
        except Exception as exc:  # pedalboard raises RuntimeError for unreadable IRs
            raise PluginError(f"Convolution: cannot load impulse response {path!r}: {exc}") from None
    if plugin in ("HighpassFilter", "LowpassFilter"):
        return _cascaded_pass_filter(cls, clean.get("cutoff_frequency_hz", 50.0 if plugin[0] == "H" else 20000.0),
                                     clean.get("slope_db_per_octave", DEFAULT_SLOPE_DB_PER_OCTAVE), plugin[0] == "H")
    try:
        return cls(**clean)
    except (ValueError, TypeError) as exc:
        raise PluginError(f"{plugin}: {exc}") from None


def _cascaded_pass_filter(cls, cutoff_hz: float, slope_db_per_octave: int, highpass: bool):
    """``n = slope / 6`` identical one-pole sections, tuned so the cascade is -3 dB at the cutoff.

    Each section's |H|² is 1/(1 + (fc_i/f)²) (high-pass); n of them reach 1/2 at f = fc when
    fc_i = fc·√(2^(1/n) − 1) (high-pass), or fc / √(2^(1/n) − 1) (low-pass).
    """
    import pedalboard

    n = slope_db_per_octave // 6
    if n == 1:
        return cls(cutoff_frequency_hz=cutoff_hz)
    k = math.sqrt(2 ** (1 / n) - 1)
    fc = cutoff_hz * k if highpass else cutoff_hz / k
    return pedalboard.Pedalboard([cls(cutoff_frequency_hz=fc) for _ in range(n)])


# --------------------------------------------------------------------------------------------
# Step descriptions (plain, picklable data: a chain is rebuilt from them inside each worker).


@dataclass(frozen=True)
class BuiltinStep:
    """A pedalboard built-in by class name, e.g. ``BuiltinStep("Gain", {"gain_db": -6})``."""

    plugin: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VST3Step:
    """An external VST3 plugin by path; parameters by the plugin's own (python-ised) names."""

    path: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    plugin_name: str | None = None  # for bundles holding several plugins


@dataclass(frozen=True)
class ModelStepSpec:
    """A model step by kind (registered with :func:`register_model_step`) and its options."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


StepSpec = Union[BuiltinStep, VST3Step, ModelStepSpec]


@runtime_checkable
class ModelStep(Protocol):
    """What a model (separator stem, denoiser, …) must offer to sit in a chain.

    ``process`` takes and returns ``(channels, samples)`` float32 of the same length, delayed by
    ``latency_samples``; with ``reset=False`` it continues from its previous state.
    ``sample_rate`` is the rate the model needs (``None``: any); offline calls resample to it
    and back, streaming calls must already run at it.
    """

    name: str
    sample_rate: int | None
    latency_samples: int

    def process(self, audio: np.ndarray, sample_rate: int, reset: bool) -> np.ndarray: ...

    def reset(self) -> None: ...


_MODEL_STEPS: dict[str, Callable[..., ModelStep]] = {}


def register_model_step(kind: str, factory: Callable[..., ModelStep]) -> None:
    """Make ``[[chain]] model = "<kind>"`` available; ``factory(**options)`` builds the step."""
    _MODEL_STEPS[kind] = factory


def model_step_kinds() -> list[str]:
    _load_model_step_providers()
    return sorted(_MODEL_STEPS)


def _load_model_step_providers() -> None:
    # Runtime modules that provide model steps register themselves on import; import them
    # lazily so `dawsep --help` and plain effect chains never load onnxruntime.
    import importlib

    for module in ("dawsep.separate", "dawsep.transcribe"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def vst3_folders() -> list[Path]:
    """Where a VST3 named by a relative path is looked for, in order: ``$VST3_PATH`` (folders
    separated by ``:``), ``~/.vst3``, ``/usr/lib/vst3``, ``/usr/local/lib/vst3``."""
    env = [Path(p).expanduser() for p in os.environ.get("VST3_PATH", "").split(os.pathsep) if p.strip()]
    return env + [Path("~/.vst3").expanduser(), Path("/usr/lib/vst3"), Path("/usr/local/lib/vst3")]


def resolve_vst3(path: str | Path) -> Path:
    """An absolute VST3 path as it is; a relative one found in :func:`vst3_folders` (never next
    to a preset file or in the working folder: loading a plugin runs its code)."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".vst3":
        raise PluginError(f"{p}: not a VST3 plugin (pedalboard on Linux loads .vst3 bundles only)")
    if p.is_absolute():
        if not p.exists():
            raise PluginError(f"{p}: VST3 plugin not found")
        return p
    folders = vst3_folders()
    for folder in folders:
        if folder.is_absolute() and (folder / p).exists():
            return folder / p
    raise PluginError(f"{p}: VST3 plugin not found in the standard VST3 folders "
                      f"({', '.join(map(str, folders))}); a relative path is looked up there only, "
                      "never next to the preset: give an absolute path")


def load_vst3(path: str | Path, parameters: Mapping[str, Any] | None = None,
              plugin_name: str | None = None):
    """Load a VST3 with ``pedalboard.load_plugin`` and set parameters, validated against the
    plugin's own ranges. A relative ``path`` is looked up in :func:`vst3_folders`. Errors name
    the plugin path and list what is allowed. Loading a plugin runs its code."""
    import pedalboard

    p = resolve_vst3(path)
    try:
        plugin = pedalboard.load_plugin(str(p), plugin_name=plugin_name)
    except (ImportError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[-1].strip()
        raise PluginError(f"{p}: cannot load VST3 plugin: {reason}") from None
    for key, value in (parameters or {}).items():
        if key not in plugin.parameters:
            raise PluginError(f"{p}: plugin {plugin.name!r} has no parameter {key!r}; "
                              f"allowed: {', '.join(plugin.parameters)}")
        param = plugin.parameters[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise PluginError(f"{p}: {key}: got {value!r}; expected a number or one of its named values")
        if isinstance(value, (int, float)) and param.range and param.range[0] is not None:
            lo, hi = param.range[0], param.range[1]
            if not (lo <= value <= hi):
                raise PluginError(f"{p}: {key}={value!r} is out of range [{lo:g}, {hi:g}]")
        try:
            setattr(plugin, key, value)
        except (ValueError, TypeError) as exc:
            raise PluginError(f"{p}: {key}={value!r}: {exc}") from None
    return plugin


# --------------------------------------------------------------------------------------------
# Stages: how steps actually run.

_PRIME = 8192  # silence each pedalboard stage sees after a reset, and its largest block (see _BoardStage)


class _BoardStage:
    """Consecutive pedalboard plugins run as one Pedalboard.

    Two pedalboard behaviours would make block-wise output differ from whole-file output:
    it guesses each buffer's channel layout from its shape (forgotten on reset, so a first
    block of 1 or 2 samples reads as mono), and it re-prepares plugins, restarting e.g. the
    Chorus LFO, whenever a block is larger than any before. So after every reset a stage
    processes ``_PRIME`` samples of silence, in the whole-file path too, and never hands
    pedalboard a block larger than that.
    """

    def __init__(self, plugins: list, factories: list | None = None):
        import pedalboard

        self._pedalboard = pedalboard
        self.plugins = plugins
        # Built-ins are rebuilt on reset: pedalboard's reset() keeps e.g. Chorus/Phaser LFO
        # phase, so a reset stream would not equal a fresh render.
        self.factories = factories or [None] * len(plugins)
        self.board = pedalboard.Pedalboard(plugins)
        self._primed = False
        self._drop = 0

    @property
    def latency_samples(self) -> int:
        return sum(int(getattr(p, "reported_latency_samples", 0) or 0) for p in self.plugins)

    def reset(self) -> None:
        self.plugins = [f() if f else p for p, f in zip(self.plugins, self.factories)]
        self.board = self._pedalboard.Pedalboard(self.plugins)
        self.board.reset()
        self._primed = False
        self._drop = 0

    def process(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        if not self._primed:
            primed = self.board.process(np.zeros((audio.shape[0], _PRIME), np.float32), sample_rate, reset=False)
            self._drop = _PRIME - primed.shape[1]  # priming output still held back by latency
            self._primed = True
        if audio.shape[1] > _PRIME:
            return np.concatenate([self.process(audio[:, i:i + _PRIME], sample_rate)
                                   for i in range(0, audio.shape[1], _PRIME)], axis=1)
        y = self.board.process(audio, sample_rate, reset=False)
        # pedalboard compensates plugin latency in streaming by returning short buffers until
        # the latency is filled; pad in front so every block keeps its length and the stream
        # is simply delayed by latency_samples.
        if self._drop:
            k = min(self._drop, y.shape[1])
            y, self._drop = y[:, k:], self._drop - k
        n = audio.shape[1]
        if y.shape[1] < n:
            y = np.concatenate([np.zeros((y.shape[0], n - y.shape[1]), np.float32), y], axis=1)
        elif y.shape[1] > n:
            raise PluginError(f"plugin returned {y.shape[1]} samples for a block of {n}")
        return y


class _PerChannelStage:
    """A mono VST3 plugin on stereo audio: one instance per channel."""

    def __init__(self, plugins: list):
        self.instances = plugins
        self.stages = [_BoardStage([p]) for p in plugins]

    @property
    def latency_samples(self) -> int:
        return self.stages[0].latency_samples

    def reset(self) -> None:
        for s in self.stages:
            s.reset()

    def process(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        if audio.shape[0] > len(self.stages):
            raise PluginError(f"mono plugin {self.instances[0].name!r} was set up for "
                              f"{len(self.stages)} channel(s), got {audio.shape[0]}")
        return np.concatenate([s.process(audio[c:c + 1], sample_rate)
                               for c, s in enumerate(self.stages[:audio.shape[0]])], axis=0)


class _ModelStage:
    def __init__(self, step: ModelStep):
        self.step = step

    @property
    def latency_samples(self) -> int:
        return int(self.step.latency_samples)

    def reset(self) -> None:
        self.step.reset()

    def process(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        need = self.step.sample_rate
        if need is not None and int(need) != int(sample_rate):
            raise PluginError(f"model step {self.step.name!r} runs at {need} Hz, the stream is at "
                              f"{sample_rate:g} Hz; resample the stream first")
        out = np.asarray(self.step.process(audio, int(sample_rate), False), dtype=np.float32)
        if out.shape != audio.shape:
            raise PluginError(f"model step {self.step.name!r} returned shape {out.shape} for input {audio.shape}")
        return out


def _delay_seconds(plugin) -> float:
    """How far apart in time the plugin's output can repeat its input (0 if it has no delay line):
    pedalboard's Delay and Chorus by their settings, an external plugin by its longest parameter in
    seconds or milliseconds (e.g. ZamDelay's ``time_ms``), a nested Pedalboard by its plugins."""
    import pedalboard

    if isinstance(plugin, pedalboard.Pedalboard):
        return max((_delay_seconds(p) for p in plugin), default=0.0)
    if isinstance(plugin, pedalboard.Delay):
        return float(plugin.delay_seconds)
    if isinstance(plugin, pedalboard.Chorus):
        return float(plugin.centre_delay_ms) / 1000.0
    params = getattr(plugin, "parameters", None)
    if not isinstance(params, Mapping):
        return 0.0
    longest = 0.0
    for key, param in params.items():
        unit = str(getattr(param, "units", "") or getattr(param, "label", "") or "").strip().lower()
        scale = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "seconds": 1.0}.get(unit)
        if scale is None:
            continue
        try:
            longest = max(longest, float(getattr(plugin, key)) * scale)
        except (TypeError, ValueError, AttributeError):
            continue
    return longest


def _is_mono_only(plugin) -> bool:
    """Whether ``plugin`` refuses a stereo buffer but takes a mono one (then it runs once per
    channel). Decided by trying both, never by reading the plugin's error message; a plugin
    that refuses both raises its stereo error."""
    try:
        plugin.process(np.zeros((2, 64), np.float32), 44100.0, reset=True)
        return False
    except ValueError as stereo_error:
        try:
            plugin.process(np.zeros((1, 64), np.float32), 44100.0, reset=True)
        except ValueError:
            raise stereo_error from None
        return True
    finally:
        plugin.reset()


# --------------------------------------------------------------------------------------------


def _describe(step: Any) -> str:
    if isinstance(step, BuiltinStep):
        args = ", ".join(f"{k}={v!r}" for k, v in step.parameters.items())
        return f"{step.plugin}({args})"
    if isinstance(step, VST3Step):
        return f"VST3({step.path})"
    if isinstance(step, ModelStepSpec):
        args = ", ".join(f"{k}={v!r}" for k, v in step.options.items())
        return f"model:{step.kind}({args})"
    return getattr(step, "name", type(step).__name__)


class Chain:
    """An ordered list of steps, callable as ``chain(audio, sample_rate, reset=True)``.

    Steps may be :class:`BuiltinStep`, :class:`VST3Step`, :class:`ModelStepSpec`, a pedalboard
    plugin instance, or any :class:`ModelStep`. Audio is ``(channels, samples)`` with 1 or 2
    channels; output has the same shape.
    """

    def __init__(self, steps: Sequence[Any] = ()):
        from dawsep.errors import DawsepError

        self.steps = list(steps)
        self.descriptions = [_describe(s) for s in self.steps]
        self._stages: list = []
        self._stage_steps: list[range] = []  # which steps each stage runs
        pending: list = []  # consecutive pedalboard plugins, merged into one board
        factories: list = []

        def add(stage, first: int, last: int) -> None:
            self._stages.append(stage)
            self._stage_steps.append(range(first, last + 1))

        def close_board(upto: int) -> None:
            if pending:
                add(_BoardStage(list(pending), list(factories)), upto - len(pending), upto - 1)
                pending.clear()
                factories.clear()

        for i, step in enumerate(self.steps):
            try:
                self._add_step(i, step, pending, factories, add, close_board)
            except DawsepError as exc:
                exc.step_index = i  # which step: a preset turns it into its key
                raise
        close_board(len(self.steps))
        self._delay_seen = 0  # samples of leading latency already emitted in this stream
        self._channels: int | None = None

    def _add_step(self, i: int, step: Any, pending: list, factories: list, add, close_board) -> None:
        """Build step ``i``: pedalboard plugins join ``pending`` (run as one board), others close it."""
        import pedalboard

        if isinstance(step, BuiltinStep):
            pending.append(make_builtin(step.plugin, step.parameters))
            factories.append(lambda step=step: make_builtin(step.plugin, step.parameters))
        elif isinstance(step, VST3Step):
            plugin = load_vst3(step.path, step.parameters, step.plugin_name)
            if _is_mono_only(plugin):
                close_board(i)
                twin = load_vst3(step.path, step.parameters, step.plugin_name)
                add(_PerChannelStage([plugin, twin]), i, i)
            else:
                pending.append(plugin)
                factories.append(None)
        elif isinstance(step, ModelStepSpec):
            close_board(i)
            add(_ModelStage(build_model_step(step)), i, i)
        elif isinstance(step, pedalboard.Plugin):
            pending.append(step)
            factories.append(None)
        elif isinstance(step, ModelStep):
            close_board(i)
            add(_ModelStage(step), i, i)
        else:
            raise PluginError(f"not a chain step: {step!r}")

    def __repr__(self) -> str:
        return f"Chain([{', '.join(self.descriptions)}])"

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def latency_samples(self) -> int:
        """Delay between input and output in streaming use (sum of the steps' latencies)."""
        return sum(s.latency_samples for s in self._stages)

    @property
    def longest_delay_seconds(self) -> float:
        """The longest delay line in the chain (Delay, Chorus, a VST3 delay's time parameter): echoes
        can be this far apart, so :meth:`flush` waits at least this long in silence before it
        decides a tail has ended."""
        plugins = [p for s in self._stages if isinstance(s, _BoardStage) for p in s.plugins]
        plugins += [p for s in self._stages if isinstance(s, _PerChannelStage) for p in s.instances[:1]]
        return max((_delay_seconds(p) for p in plugins), default=0.0)

    @property
    def model_steps(self) -> list:
        """The chain's model steps (ONNX-backed ones expose ``info``, a ``runtime.ModelInfo``)."""
        return [s.step for s in self._stages if isinstance(s, _ModelStage)]

    @property
    def model_sample_rates(self) -> set[int]:
        return {int(s.step.sample_rate) for s in self._stages
                if isinstance(s, _ModelStage) and s.step.sample_rate}

    def reset(self) -> None:
        """Forget all state (tails, envelopes, model context)."""
        for s in self._stages:
            s.reset()
        self._channels = None

    def process(self, audio: np.ndarray, sample_rate: float, reset: bool = True) -> np.ndarray:
        """Process ``audio`` ``(channels, samples)``.

        ``reset=True``: a whole signal; output is aligned with the input (latency removed) and the
        same length (effect tails beyond the end are cut; see :meth:`render` to keep them).
        ``reset=False``: one block of a stream; output is the same length, delayed by
        :attr:`latency_samples`.
        """
        x = _as_block(audio)
        if reset:
            return self.render(x, sample_rate, keep_tail=False)
        if self._channels is None:
            self._channels = x.shape[0]
        elif x.shape[0] != self._channels:
            raise PluginError(f"stream changed from {self._channels} to {x.shape[0]} channels without reset()")
        for stage, steps in zip(self._stages, self._stage_steps):
            y = stage.process(x, float(sample_rate))
            if not _finite(y):
                self._non_finite(x, steps)
            x = y
        return x

    __call__ = process

    def _non_finite(self, x: np.ndarray, steps: range) -> None:
        if not _finite(x):
            raise PluginError("the audio given to the chain contains NaN or infinite samples")
        if len(steps) == 1:
            which = f"step {steps[0] + 1} ({self.descriptions[steps[0]]})"
        else:
            names = ", ".join(self.descriptions[i].split("(")[0] for i in steps)
            which = f"steps {steps[0] + 1}-{steps[-1] + 1} ({names})"
        raise PluginError(f"{which} produced non-finite samples (NaN or inf): the settings drive the signal "
                          "out of range (too much gain or feedback?)")

    def flush(self, sample_rate: float, tail: bool = True, max_seconds: float = 30.0,
              silence: float = 1e-5) -> np.ndarray:
        """End a stream: feed silence and return what comes out, shape ``(channels, n)``.

        ``tail=False``: exactly :attr:`latency_samples` samples, i.e. the input's last samples.
        ``tail=True``: also the effect tail (reverbs, delays): silence is fed until the output has
        stayed below ``silence`` (linear peak) for longer than the chain's longest delay line
        (:attr:`longest_delay_seconds`, so a later echo is never cut off) and at least 0.1 s, at
        most ``max_seconds``; the tail ends at its last sample at or above ``silence``.
        """
        channels = self._channels or 2
        lat = self.latency_samples
        if not tail:
            if lat <= 0:
                return np.zeros((channels, 0), np.float32)
            return self.process(np.zeros((channels, lat), np.float32), sample_rate, reset=False)
        block = max(1024, int(sample_rate) // 10)
        quiet_needed = max(block, int(math.ceil((1.25 * self.longest_delay_seconds + 0.05) * sample_rate)))
        out: list[np.ndarray] = []
        emitted, limit = 0, int(max_seconds * sample_rate) + lat
        last_loud = 0  # samples emitted up to and including the last one at or above `silence`
        while emitted < limit:
            y = self.process(np.zeros((channels, block), np.float32), sample_rate, reset=False)
            out.append(y)
            loud = np.flatnonzero(np.max(np.abs(y), axis=0, initial=0.0) >= silence)
            if loud.size:
                last_loud = emitted + int(loud[-1]) + 1
            emitted += block
            if emitted >= lat + block and emitted - last_loud >= quiet_needed:
                break
        return np.concatenate(out, axis=1)[:, :max(lat, last_loud)]

    def render(self, audio: np.ndarray, sample_rate: float, keep_tail: bool = False) -> np.ndarray:
        """Whole-signal render, built from the streaming path: reset, one block, flush.

        Model steps that need another rate get the audio resampled to it and back.
        Returns ``(channels, samples)`` aligned with the input; with ``keep_tail`` the effect
        tail after the end is appended.
        """
        x = _as_block(audio)
        rates = self.model_sample_rates
        if rates and rates != {int(sample_rate)}:
            return self._render_resampled(x, sample_rate, keep_tail)
        self.reset()
        n = x.shape[1]
        y = self.process(x, sample_rate, reset=False)
        full = np.concatenate([y, self.flush(sample_rate, tail=keep_tail)], axis=1)[:, self.latency_samples:]
        return full if keep_tail else full[:, :n]

    def _render_resampled(self, x: np.ndarray, sample_rate: float, keep_tail: bool) -> np.ndarray:
        from dawsep import audio as audio_io

        if len(self.model_sample_rates) > 1:
            raise PluginError(f"chain mixes model steps at {sorted(self.model_sample_rates)} Hz; use one rate")
        (rate,) = self.model_sample_rates
        inner = audio_io.resample(x, int(sample_rate), rate)
        y = self.render(inner, rate, keep_tail=keep_tail)
        back = audio_io.resample(y, rate, int(sample_rate))
        if keep_tail:
            return back
        n = x.shape[1]
        if back.shape[1] < n:
            back = np.pad(back, ((0, 0), (0, n - back.shape[1])))
        return back[:, :n]

    def check_sample_rate(self, sample_rate: float) -> None:
        """Raise :class:`PluginError` if a filter frequency is at or above Nyquist."""
        nyquist = sample_rate / 2
        for step in self.steps:
            if isinstance(step, BuiltinStep):
                for key in _FREQUENCY_PARAMS:
                    f = step.parameters.get(key)
                    if f is not None and f >= nyquist:
                        raise PluginError(f"{step.plugin}.{key}={f:g} Hz is at or above Nyquist "
                                          f"({nyquist:g} Hz) for {sample_rate:g} Hz audio")


def model_step_options(kind: str) -> tuple[str, ...] | None:
    """The options a registered model step takes (None: unknown kind, or any keyword)."""
    _load_model_step_providers()
    factory = _MODEL_STEPS.get(kind)
    if factory is None:
        return None
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_model_step_options(kind: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`PluginError` naming an option ``kind`` does not take, and the allowed ones
    (``model`` names the step kind in a preset, so it is not listed)."""
    allowed = model_step_options(kind)
    if allowed is None:
        return
    for key in options:
        if key not in allowed:
            shown = ", ".join(a for a in allowed if a != "model") or "none"
            raise PluginError(f"model step {kind!r} has no option {key!r}; allowed: {shown}", parameter=key)


def build_model_step(spec: ModelStepSpec) -> ModelStep:
    _load_model_step_providers()
    factory = _MODEL_STEPS.get(spec.kind)
    if factory is None:
        known = ", ".join(sorted(_MODEL_STEPS)) or "none installed"
        raise PluginError(f"unknown model step {spec.kind!r}; available: {known}")
    check_model_step_options(spec.kind, spec.options)
    try:
        return factory(**dict(spec.options))
    except TypeError as exc:
        raise PluginError(f"model step {spec.kind!r}: {exc}") from None


def _finite(a: np.ndarray) -> bool:
    # a float64 sum is finite iff every sample is (float32 cannot overflow it); one pass, no copy
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is the answer, not a warning
        return a.size == 0 or bool(np.isfinite(np.sum(a, dtype=np.float64)))


def describe_steps(steps: Sequence[Any]) -> list[str]:
    """How :class:`Chain` would describe ``steps``, without building (loading) any of them."""
    return [_describe(s) for s in steps]


def _as_block(audio: np.ndarray) -> np.ndarray:
    from dawsep.audio import as_block

    return np.ascontiguousarray(as_block(audio, max_channels=2), dtype=np.float32)
