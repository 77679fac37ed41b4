"""Gain and stereo effects: Gain, Pan (constant power), StereoImager (mid/side width)."""

from __future__ import annotations

import math

import torch

from fxlens.fx.effect import Effect, bcast, check_audio, register_effect
from fxlens.fx.params import ParamSpec


def db_to_amplitude(db: torch.Tensor | float) -> torch.Tensor | float:
    """+6.02 dB doubles the amplitude: 10 ** (dB / 20)."""
    if isinstance(db, torch.Tensor):
        return torch.pow(10.0, db / 20.0)
    return 10.0 ** (db / 20.0)


def gain(x: torch.Tensor, sample_rate: int, gain_db: torch.Tensor | float) -> torch.Tensor:
    """Multiply by 10 ** (gain_db / 20)."""
    return x * db_to_amplitude(bcast(gain_db, x))


def constant_power_pan(x: torch.Tensor, sample_rate: int, pan: torch.Tensor | float) -> torch.Tensor:
    """Constant-power balance of a stereo signal; pan in [-1 (left), 1 (right)].

    Channel gains sqrt(2) * (cos t, sin t) with t = (pan + 1) * pi / 4: unity at the centre, and for a centred
    (L = R) source the total power gL^2 + gR^2 = 2 stays constant at every position (hard left is +3.01 dB on L).
    """
    check_audio(x, channels=2)
    theta = (bcast(pan, x) + 1.0) * (math.pi / 4)
    gains = math.sqrt(2.0) * torch.cat([torch.cos(theta), torch.sin(theta)], dim=1)  # (B, 2, 1)
    return x * gains


def stereo_imager(x: torch.Tensor, sample_rate: int, width: torch.Tensor | float) -> torch.Tensor:
    """Scale the side signal: M = (L + R) / 2, S = width * (L - R) / 2; width 0 = mono, 1 = unchanged, 2 = wide."""
    check_audio(x, channels=2)
    mid = 0.5 * (x[:, 0:1] + x[:, 1:2])
    side = 0.5 * (x[:, 0:1] - x[:, 1:2]) * bcast(width, x)
    return torch.cat([mid + side, mid - side], dim=1)


@register_effect
class Gain(Effect):
    name = "gain"
    description = "Level change in dB."

    def __init__(self) -> None:
        super().__init__((ParamSpec("gain_db", "dB", -24.0, 24.0, "dB", 0.0, "gain applied to every channel"),))

    def process(self, x, sample_rate, gain_db):
        return gain(x, sample_rate, gain_db)


@register_effect
class Pan(Effect):
    name = "pan"
    description = "Constant-power stereo balance."

    def __init__(self) -> None:
        super().__init__((ParamSpec("pan", "", -1.0, 1.0, "linear", 0.0, "-1 hard left, 0 centre, 1 hard right"),))

    def process(self, x, sample_rate, pan):
        return constant_power_pan(x, sample_rate, pan)


@register_effect
class StereoImager(Effect):
    name = "stereo_imager"
    description = "Mid/side stereo width."

    def __init__(self) -> None:
        super().__init__((ParamSpec("width", "", 0.0, 2.0, "linear", 1.0, "0 mono, 1 unchanged, 2 twice the side"),))

    def process(self, x, sample_rate, width):
        return stereo_imager(x, sample_rate, width)
