"""The `fxlens` command's entry point: choose the memory allocator, then hand over to `fxlens.cli`.

glibc's malloc maps every large block (over its 32 MiB mmap ceiling: a batch of stereo stems is 45 MB) afresh and
unmaps it when freed, so each new tensor starts with zeroed pages that the kernel must fault in: rendering effect
batches spent 40 % of its CPU time in the kernel. jemalloc with purging off keeps freed pages for the next tensor
(`fxlens data pairs`: 1.55x less CPU time, about 2x less wall time with two builders side by side;
docs/benchmarks.md, "The memory allocator"). The allocator is chosen before the
interpreter starts, so the command re-executes itself once with jemalloc preloaded when Debian's libjemalloc2 is
installed (install.sh installs it). FXLENS_MALLOC=system keeps glibc's. Only the standard library is imported
before that, so the second start costs one interpreter start-up (~0.05 s).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping, Sequence

JEMALLOC_GLOB = "/usr/lib/*-linux-gnu/libjemalloc.so.2"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # never hand freed pages back (the fault is the cost)


def jemalloc_environment(environ: Mapping[str, str], libraries: Sequence[str] | None = None) -> dict | None:
    """The environment to re-execute fxlens with under jemalloc, or None: already preloaded, turned off by
    FXLENS_MALLOC=system, or no libjemalloc installed (`libraries`: the candidates, default JEMALLOC_GLOB's)."""
    if environ.get("FXLENS_MALLOC", "jemalloc") != "jemalloc" or "jemalloc" in environ.get("LD_PRELOAD", ""):
        return None
    found = sorted(glob.glob(JEMALLOC_GLOB)) if libraries is None else list(libraries)
    if not found:
        return None
    preload = " ".join(p for p in (found[0], environ.get("LD_PRELOAD", "")) if p)
    return {**environ, "LD_PRELOAD": preload, "MALLOC_CONF": environ.get("MALLOC_CONF", JEMALLOC_CONF)}


def run() -> None:
    env = jemalloc_environment(os.environ)
    if env is not None:
        try:
            os.execve(sys.executable, [sys.executable, "-m", "fxlens.cli", *sys.argv[1:]], env)
        except OSError:
            pass  # could not re-execute: carry on with the system allocator
    from fxlens.cli import run as cli_run

    cli_run()
