"""The effects a chain step can be: pedalboard built-ins (the parameters we accept, with units in
their names, validation, construction) and external VST3 plugins (where they are looked for,
loading, parameter checks). Errors are :class:`PluginError`\\ s naming the key and what is allowed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

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
FREQUENCY_PARAMS = ("cutoff_frequency_hz", "cutoff_hz", "centre_frequency_hz")


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
