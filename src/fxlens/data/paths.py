"""Where fxlens keeps its data: ``$FXLENS_DATA``, else ``~/.cache/fxlens`` (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir"]


def default_data_dir() -> Path:
    """The default ``--data-dir``: ``$FXLENS_DATA`` if set (``~`` expanded), else ``~/.cache/fxlens``.

    The folder is not created here; writers create what they write.
    """
    env = os.environ.get("FXLENS_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fxlens"
