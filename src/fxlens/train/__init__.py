"""Training: one module per objective (encoder, recognizer, estimator); each writes a checkpoint with a model card."""

import shlex
import sys


def command_line() -> str | None:
    """The `fxlens ...` command that is running, for model cards (None when called from Python)."""
    if sys.argv and "fxlens" in sys.argv[0]:
        return "fxlens " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return None
