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

__all__ = [
    "__version__",
    "FxlensError",
    "AudioFileError",
    "InvalidAudioError",
    "UnknownEffectError",
    "ParameterError",
    "PresetError",
    "CheckpointError",
]
