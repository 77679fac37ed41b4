"""Differentiable audio effects: functional forms, module forms, chains and presets.

Importing this package registers every effect (see `fxlens.fx.effect.register_effect`).
"""

from fxlens.fx import delay, distortion, dynamics, eq, reverb, stereo  # noqa: F401  (importing registers them)
from fxlens.fx.effect import Effect, effect_class, effect_names, get_effect, register_effect
from fxlens.fx.params import ParamSpec

__all__ = ["Effect", "ParamSpec", "effect_class", "effect_names", "get_effect", "register_effect"]
