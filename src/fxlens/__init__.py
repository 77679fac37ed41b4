"""fxlens: hear audio effects.

Layers import downward only: audio -> fx -> (features, data) -> models -> train/tasks/bench -> cli.
"""

__version__ = "0.1.0"

from fxlens.errors import (  # noqa: E402
    AudioFileError,
    CheckpointError,
    FxlensError,
    InvalidAudioError,
    ParameterError,
    PresetError,
    UnknownEffectError,
)

# Heavy entry points load on first use, so `import fxlens` stays fast.
_LAZY = {
    "load_encoder": ("fxlens.models.encoder", "load_encoder"),
    "analyze": ("fxlens.tasks.analyze", "analyze"),
    "match": ("fxlens.tasks.match", "match"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name == "audio":  # `fxlens.audio` without an explicit import
        import importlib

        return importlib.import_module("fxlens.audio")
    raise AttributeError(f"module 'fxlens' has no attribute '{name}'")


__all__ = [
    "__version__",
    "analyze",
    "load_encoder",
    "match",
    "FxlensError",
    "AudioFileError",
    "InvalidAudioError",
    "UnknownEffectError",
    "ParameterError",
    "PresetError",
    "CheckpointError",
]
