"""The one processor protocol that every effect follows, and the registry of effects by name.

An effect has two forms:

- a **functional form**: a pure function ``fn(x, sample_rate, **physical)`` of audio ``x`` (B, C, T) and physical
  parameters (each a tensor of shape (B,) or a float), differentiable in both; it lives beside the class;
- a **module form**: a subclass of `Effect`, whose ``forward(x, sample_rate, controls)`` takes normalized
  controls (B, n_params) in [0, 1], maps them to physical values with its `ParamSpec`s and calls ``process``.

Constructor arguments (backend, number of bands, seed, ...) are the effect's *config*: they are not learned, they
are saved in presets, and ``get_effect(name, **config)`` rebuilds the same effect.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from fxlens.errors import InvalidAudioError, ParameterError, UnknownEffectError
from fxlens.fx.params import ParamSpec

_REGISTRY: dict[str, type["Effect"]] = {}


def register_effect(cls: type["Effect"]) -> type["Effect"]:
    """Class decorator: make an effect available by its `name` (presets, CLI, RandomChain)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"effect name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def effect_names() -> list[str]:
    """Names of every registered effect, in registration order."""
    import fxlens.fx  # noqa: F401  (importing the package registers every effect)

    return list(_REGISTRY)


def effect_class(name: str) -> type["Effect"]:
    import fxlens.fx  # noqa: F401

    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownEffectError(f"unknown effect '{name}' (known: {known})") from None


def get_effect(name: str, **config) -> "Effect":
    """Build the effect called `name` with its config keyword arguments."""
    cls = effect_class(name)
    try:
        return cls(**config)
    except TypeError as e:
        raise ParameterError(f"bad config for effect '{name}': {e}") from None


def as_batch(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A parameter as a (B,) tensor on x's device and dtype (a float or a 0-d tensor is broadcast)."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ParameterError(f"a parameter must be a float or a tensor of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def bcast(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A parameter as a (B, 1, 1) tensor, ready to broadcast against audio (B, C, T)."""
    return as_batch(value, x)[:, None, None]


def check_audio(x: torch.Tensor, channels: int | None = None) -> None:
    """Raise `InvalidAudioError` unless x is a floating (B, C, T) tensor (with `channels` channels if given)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidAudioError(f"audio must be a float tensor of shape (batch, channels, samples), got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise InvalidAudioError(f"this effect needs {channels}-channel audio, got {x.shape[1]} channels")


class Effect(nn.Module):
    """Base class of every effect. Subclasses set `name`, `specs` and implement `process`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, specs: tuple[ParamSpec, ...]) -> None:
        super().__init__()
        self.specs: tuple[ParamSpec, ...] = tuple(specs)
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate parameter names {names}")

    # --- what subclasses provide -------------------------------------------------------------------------------
    def process(self, x: torch.Tensor, sample_rate: int, **params: torch.Tensor) -> torch.Tensor:
        """Apply the effect with physical parameters (each (B,)). Calls the functional form."""
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor keyword arguments that rebuild this effect (JSON-serializable)."""
        return {}

    def tail_seconds(self, params: dict[str, torch.Tensor]) -> float:
        """How long the output rings after the input stops (delay and reverb tails); 0 for memoryless effects."""
        return 0.0

    # --- shared machinery ---------------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return len(self.specs)

    @property
    def param_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def spec(self, name: str) -> ParamSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise ParameterError(f"effect '{self.name}' has no parameter '{name}' (it has: {', '.join(self.param_names)})")

    def forward(self, x: torch.Tensor, sample_rate: int, controls: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the effect with normalized controls (B, n_params) in [0, 1]; None means the defaults."""
        if controls is None:
            params = self.defaults(x)
        else:
            params = self.to_physical(controls)
        return self.process(x, sample_rate, **params)

    def to_physical(self, controls: torch.Tensor) -> dict[str, torch.Tensor]:
        if controls.dim() != 2 or controls.shape[1] != self.n_params:
            raise ParameterError(
                f"effect '{self.name}' takes controls of shape (batch, {self.n_params}), got {tuple(controls.shape)}"
            )
        return {s.name: s.to_physical(controls[:, i]) for i, s in enumerate(self.specs)}

    def to_normalized(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([s.to_normalized(params[s.name]) for s in self.specs], dim=1)

    def defaults(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {s.name: as_batch(s.default, x) for s in self.specs}

    def resolve(self, params: dict[str, float], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Check user-given physical values (unknown names, ranges) and fill the rest with defaults."""
        for key in params:
            self.spec(key)  # raises on unknown names
        out = {}
        for s in self.specs:
            value = s.check(params[s.name]) if s.name in params else s.default
            out[s.name] = as_batch(value, x)
        return out

    def extra_repr(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return cfg
