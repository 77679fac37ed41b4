"""Worker processes for fxlens's CPU-bound loops (rendering stems and clips, precomputing batches, features).

Processes are spawned, not forked (torch's and fluidsynth's thread pools and state do not survive a fork), and each
runs one torch thread: N workers on N cores, not N x N threads contending. The standard library's
`concurrent.futures.ProcessPoolExecutor` does the work; this module only fixes how fxlens starts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from fxlens.errors import ParameterError


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    import torch

    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def spawn_pool(workers: int, initializer: Callable[..., None] | None = None,
               initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes, one torch thread each, `initializer(*initargs)` run in each."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                               initargs=(initializer, initargs))


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1) -> Iterator[Any]:
    """`fn(item)` for each item, yielded in the order of `items`: in this process when `workers` <= 1 (or there is
    at most one item), else in `workers` spawned processes (`fn` must be a module-level function). A failing item
    raises its exception where its result would have been yielded; the items not yet started are dropped.
    `workers` < 1 is a `ParameterError`."""
    if workers < 1:
        raise ParameterError(f"workers must be >= 1, got {workers}")
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with spawn_pool(min(workers, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()
