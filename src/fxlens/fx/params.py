"""Parameter declarations: every effect parameter has a name, a unit, a range, a scale and a default.

Models speak in normalized controls in [0, 1]; presets, reports and the functional forms speak in physical units.
`ParamSpec` converts between the two:

- ``linear``: physical = min + u * (max - min)
- ``dB``:     the same mapping, on a value expressed in decibels (marks the unit for reports and plots)
- ``log``:    physical = min * (max / min) ** u  (frequencies, times, ratios: equal steps per octave/decade)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from fxlens.errors import ParameterError

SCALES = ("linear", "log", "dB")


@dataclass(frozen=True)
class ParamSpec:
    """One effect parameter: `name`, `unit` (e.g. "dB", "Hz", "ms", ":1", ""), range [min, max], scale, default."""

    name: str
    unit: str
    min: float
    max: float
    scale: str = "linear"
    default: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"{self.name}: scale must be one of {SCALES}, not {self.scale!r}")
        if not self.min < self.max:
            raise ValueError(f"{self.name}: min {self.min} must be below max {self.max}")
        if self.scale == "log" and self.min <= 0:
            raise ValueError(f"{self.name}: a log-scaled parameter needs min > 0")
        if not self.min <= self.default <= self.max:
            raise ValueError(f"{self.name}: default {self.default} outside [{self.min}, {self.max}]")

    def to_physical(self, u: torch.Tensor) -> torch.Tensor:
        """Map normalized controls u in [0, 1] to physical values (differentiable, no clamping)."""
        if self.scale == "log":
            return self.min * torch.exp(u * math.log(self.max / self.min))
        return self.min + u * (self.max - self.min)

    def to_normalized(self, value: torch.Tensor) -> torch.Tensor:
        """Map physical values to normalized controls in [0, 1] (the inverse of `to_physical`)."""
        if self.scale == "log":
            return torch.log(value / self.min) / math.log(self.max / self.min)
        return (value - self.min) / (self.max - self.min)

    def check(self, value: float) -> float:
        """Return `value` as a float if it lies in [min, max]; raise `ParameterError` otherwise."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter '{self.name}' must be a number, got {value!r}") from None
        if not math.isfinite(v):
            raise ParameterError(f"parameter '{self.name}' must be finite, got {v}")
        tol = 1e-6 * max(1.0, abs(self.max - self.min))
        if v < self.min - tol or v > self.max + tol:
            raise ParameterError(
                f"parameter '{self.name}' = {v:g} {self.unit} is outside its range "
                f"[{self.min:g}, {self.max:g}] {self.unit}".rstrip()
            )
        return v

    def to_dict(self) -> dict:
        return asdict(self)
