"""What a chain is built from: the step descriptions (plain, picklable data: a chain is rebuilt from
them inside each worker), the :class:`ModelStep` protocol, and the registry of model step kinds
(``[[chain]] model = "<kind>"``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from dawsep.errors import PluginError

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


def describe_step(step: Any) -> str:
    """One step as a chain lists it: ``Gain(gain_db=-6.0)``, ``VST3(path)``, ``model:separate(...)``."""
    if isinstance(step, BuiltinStep):
        args = ", ".join(f"{k}={v!r}" for k, v in step.parameters.items())
        return f"{step.plugin}({args})"
    if isinstance(step, VST3Step):
        return f"VST3({step.path})"
    if isinstance(step, ModelStepSpec):
        args = ", ".join(f"{k}={v!r}" for k, v in step.options.items())
        return f"model:{step.kind}({args})"
    return getattr(step, "name", type(step).__name__)


def describe_steps(steps: Sequence[Any]) -> list[str]:
    """How :class:`Chain` would describe ``steps``, without building (loading) any of them."""
    return [describe_step(s) for s in steps]
