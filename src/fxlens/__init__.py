"""fxlens: hear audio effects.

Layers import downward only: audio -> fx -> (features, data) -> models -> train/tasks/bench -> cli.
"""

__version__ = "0.1.0"

import os as _os

# torchcomp's CPU compressor is a numba-parallel kernel; numba starts its OpenMP pool with NUMBA_NUM_THREADS (default:
# every core), and that pool is the one torch's intra-op threads share, so after the first compressor call torch ran
# on every core too, whatever OMP_NUM_THREADS said (`OMP_NUM_THREADS=1 fxlens bench match` ran two threads a process,
# one of them spinning at OpenMP barriers: ~30 % of its CPU time). Follow OMP_NUM_THREADS when the user set it.
if _os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(_os.environ["OMP_NUM_THREADS"]) > 0:
    _os.environ.setdefault("NUMBA_NUM_THREADS", _os.environ["OMP_NUM_THREADS"])

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
    "FxlensError",
    "AudioFileError",
    "InvalidAudioError",
    "UnknownEffectError",
    "ParameterError",
    "PresetError",
    "CheckpointError",
]
