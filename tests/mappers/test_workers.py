"""Worker processes (mappers.workers): a warm forkserver, a share of the cores each, the command's collector."""

import gc
import os

import pytest

from mappers.workers import GC_THRESHOLDS, threads_per_worker, tune_gc, worker_pool


def _what_a_worker_has(x: int) -> tuple[int, int, tuple[int, int, int], int]:
    import numba

    return x * x, numba.get_num_threads(), gc.get_threshold(), os.getpid()


def test_a_pool_runs_tasks_in_workers_with_their_share_of_threads_and_the_tuned_collector():
    with worker_pool(2, ("mappers.workers",)) as pool:
        results = list(pool.map(_what_a_worker_has, range(6)))
    assert [r[0] for r in results] == [x * x for x in range(6)]
    assert {r[1] for r in results} == {threads_per_worker(2)}
    assert {r[2] for r in results} == {GC_THRESHOLDS}
    assert os.getpid() not in {r[3] for r in results}


def test_threads_per_worker_shares_the_cores_and_never_gives_none():
    cpus = os.cpu_count() or 1
    assert threads_per_worker(1) == cpus
    assert threads_per_worker(cpus) == 1
    assert threads_per_worker(10 * cpus) == 1


def test_an_exception_in_the_pool_cancels_what_is_queued_and_waits_for_what_runs():
    with pytest.raises(KeyError), worker_pool(2, ("mappers.workers",)) as pool:
        futures = [pool.submit(_what_a_worker_has, x) for x in range(500)]
        raise KeyError("stop")
    assert all(f.done() for f in futures)  # nothing left running or queued once the error is raised
    assert any(f.cancelled() for f in futures)


def test_tune_gc_sets_the_thresholds_and_freezes_what_is_alive():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
