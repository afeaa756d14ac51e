"""Worker processes for independent pieces of work (the cells of ``compare-attention``, the runs of the FuseMax
study), and the collector settings of a command's process.

A pool's workers fork from a forkserver (Linux) that imported the given modules and loaded the serial nest kernel
once, so each starts warm; each gets an equal share of the cores as Numba threads (one on a 2-core machine with
two workers, where the serial kernels run and the threaded ones are never compiled). Where there is no forkserver
the workers are spawned.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

GC_THRESHOLDS = (10_000, 20, 20)
"""Python's cyclic collector, as a command runs it: a search builds and drops millions of small objects (loop nests,
mappings, costs) beside memos that live for the whole run, and with the default thresholds (700, 10, 10) full
collections rescanning those memos took 15% of ``compare-attention``'s time (1.8 of 12 s, measured with
``gc.callbacks``). Nothing in attnscope relies on the collector to free memory in time: arrays go by reference
counts."""

WARM = "mappers.sweep.warm"
"""The module a forkserver imports last: it loads the serial nest kernel, which every worker then inherits."""


def tune_gc() -> None:
    """Set up the collector for a command's process (the CLI, a worker): what is alive now (the imported modules,
    their functions and tables) is frozen out of every later collection, and collections are rarer
    (:data:`GC_THRESHOLDS`)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def pool_context(preload: Sequence[str]) -> Any:
    """The workers' start method: a forkserver on Linux that imports ``preload`` and then loads the serial nest
    kernel (:data:`WARM`), started now so that it warms up while the caller prepares the work; else spawn. The
    preload list is the first caller's: a forkserver runs once per process (later workers import what they need
    when they unpickle their tasks)."""
    import multiprocessing
    import multiprocessing.forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*preload, WARM])
    multiprocessing.forkserver.ensure_running()
    return ctx


def worker_start(threads: int) -> None:
    """A worker's set-up: the command's collector settings and ``threads`` Numba threads."""
    import numba

    tune_gc()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def threads_per_worker(jobs: int) -> int:
    """Numba threads for each of ``jobs`` workers: an equal share of the cores, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


@contextlib.contextmanager
def worker_pool(jobs: int, preload: Sequence[str]) -> Iterator[ProcessPoolExecutor]:
    """``jobs`` worker processes (:func:`pool_context`, :func:`worker_start`); on any exception (Ctrl-C included)
    the queued tasks are cancelled and the running ones finished before it propagates, so no worker outlives the
    pool."""
    ctx = pool_context(preload)
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=worker_start, initargs=(threads_per_worker(jobs),)
    ) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
