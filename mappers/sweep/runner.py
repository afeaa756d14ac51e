"""Running a sweep: the coordinator hands chunks of points to workers and is the store's only writer.

The flow, one line per stage::

    points  = sweep_points(spec)                     # sample the axes x workloads, hash every point
    store   = Store.open(path)                       # refuse foreign or corrupt files
    pending = points not yet in the store            # (all of them with force)
    for outcomes in executor.run(evaluate_chunk, context, chunks(pending)):   # workers evaluate
        store.write(rows(outcomes))                  # one transaction per finished chunk

A point of a device sweep carries its target (:mod:`mappers.sweep.targets`) by name; the context carries the
targets as plain data, so workers evaluate the very preset content whose fingerprint is in the point's key.

Executors: in-process (one worker), a local process pool (default: all cores), or Dask distributed (a
LocalCluster or a scheduler address). Workers only compute and send outcomes back; a point whose
evaluation raises is recorded with its error and the sweep goes on. Each worker keeps its caches
(lowered cascades per shape) across the chunks it runs, and pool workers exit when the coordinator dies.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError
from mappers.sweep.metrics import resolve_metric
from mappers.sweep.points import MODEL_VERSION, Point, canonical_json, sweep_points
from mappers.sweep.spec import SweepSpec, spec_summary
from mappers.sweep.store import Store, unwritable, utc_now
from mappers.sweep.strategies import Strategy, get_strategy
from mappers.sweep.targets import Target, resolve_in_worker
from simulator.specs import ArchSpec, with_overrides


@dataclass(frozen=True)
class SweepContext:
    """What every worker needs besides its points (sent with each chunk)."""

    arch: ArchSpec | None  # the base architecture (preset + fixed overrides); None for a device sweep
    strategy: str
    params: tuple[tuple[str, Any], ...]  # the spec's strategy parameters (a task's own, if given, win)
    metrics: tuple[str, ...]  # metric columns, in order
    targets: tuple[Target, ...] = ()  # device sweeps: the device axis's targets (as plain data)


@dataclass(frozen=True)
class Task:
    """One point as a worker sees it."""

    key: str
    overrides: tuple[tuple[str, Any], ...]
    cascade: str
    sizes: tuple[tuple[str, Any], ...]
    params: tuple[tuple[str, Any], ...] = ()  # the point's strategy parameters (empty: the context's)
    target: str = ""  # device sweeps: the name of the point's target
    model: str = ""  # device sweeps: the zoo model
    seq_len: int = 0  # device sweeps: the sequence length


@dataclass(frozen=True)
class Outcome:
    """A worker's answer for one point: metric values in context order (None: the model gives none), or the error."""

    key: str
    values: tuple[float | str | None, ...] | None
    error: str | None
    seconds: float


def evaluate_chunk(context: SweepContext, tasks: Sequence[Task]) -> list[Outcome]:
    """Evaluate points one after another; an exception is recorded as that point's error."""
    strategy = get_strategy(context.strategy)
    if strategy.point_kind == "device":
        return _evaluate_on_targets(context, strategy, tasks)
    metrics = [resolve_metric(name, context.arch) for name in context.metrics]
    out = []
    for task in tasks:
        start = time.perf_counter()
        try:
            arch = with_overrides(context.arch, dict(task.overrides)) if task.overrides else context.arch
            cost = strategy.evaluate(arch, task.cascade, dict(task.sizes), dict(task.params or context.params))
            values, error = tuple(float(m.value(arch, cost)) for m in metrics), None
        except Exception as exc:  # recorded in the store: a failing point must not stop the sweep
            values, error = None, f"{type(exc).__name__}: {exc}"
        out.append(Outcome(task.key, values, error, time.perf_counter() - start))
    return out


def _evaluate_on_targets(context: SweepContext, strategy: Strategy, tasks: Sequence[Task]) -> list[Outcome]:
    """Device sweeps: each task runs on its target (rebuilt from the context's plain data, cached per worker)."""
    targets = {t.name: t for t in context.targets}
    out = []
    for task in tasks:
        start = time.perf_counter()
        try:
            target = resolve_in_worker(targets[task.target], task.overrides)
            result = strategy.evaluate(target, task.model, task.seq_len, dict(task.params or context.params))
            values, error = tuple(_stored(result[m]) for m in context.metrics), None
        except Exception as exc:  # recorded in the store: a failing point must not stop the sweep
            values, error = None, f"{type(exc).__name__}: {exc}"
        out.append(Outcome(task.key, values, error, time.perf_counter() - start))
    return out


def _stored(value: Any) -> float | str | None:
    """A metric value as the store keeps it: None (NULL), a name, or a float."""
    return value if value is None or isinstance(value, str) else float(value)


# ---------------------------------------------------------------------------------------------------- executors

ChunkFn = Callable[[SweepContext, Sequence[Task]], list[Outcome]]


class Executor:
    """Runs chunks and yields their outcomes as they finish (at most a few chunks per worker in flight)."""

    workers: int = 1
    description: str = "in-process"

    def run(self, fn: ChunkFn, context: SweepContext, chunks: Iterator[list[Task]]) -> Iterator[list[Outcome]]:
        for chunk in chunks:
            yield fn(context, chunk)

    def close(self) -> None:
        """Release workers and clusters."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _watch_parent() -> None:
    """In a pool worker: exit as soon as the coordinator is gone (e.g. SIGKILLed), instead of lingering.

    The sentinel of ``multiprocessing.parent_process()`` is the coordinator's end of a pipe: it becomes
    readable when the coordinator dies, whichever process (a forkserver) forked the worker.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="attnscope-parent-watch", daemon=True).start()


class LocalPool(Executor):
    """A pool of local worker processes (forkserver on Linux, so workers start from a clean, warm image)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.description = f"local pool, {workers} workers"
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["mappers.sweep.runner"])
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_watch_parent)

    def run(self, fn: ChunkFn, context: SweepContext, chunks: Iterator[list[Task]]) -> Iterator[list[Outcome]]:
        pending: set[Future] = set()
        try:
            while True:
                for chunk in _take(chunks, 2 * self.workers - len(pending)):
                    pending.add(self.pool.submit(fn, context, chunk))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenProcessPool as exc:
            raise AttnscopeError(
                f"a worker process died ({exc}); the points finished so far are stored: rerun to resume"
            ) from None
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskPool(Executor):
    """Dask distributed: a LocalCluster of n worker processes, or an existing scheduler (tcp://host:8786)."""

    def __init__(self, local_workers: int | None = None, scheduler: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise AttnscopeError(
                "Dask execution needs dask.distributed: pip install 'dask[distributed]' (or drop --dask-local "
                "and --scheduler to use the local process pool)"
            ) from None
        import logging

        self.cluster = None
        try:
            if scheduler is not None:
                self.client = Client(scheduler, timeout="20s")
                self.description = f"dask scheduler {scheduler}"
            else:
                self.cluster = LocalCluster(
                    n_workers=local_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.ERROR,
                )  # fmt: skip
                self.client = Client(self.cluster)
                self.description = f"dask LocalCluster, {local_workers} workers"
        except (OSError, TimeoutError) as exc:
            raise AttnscopeError(f"cannot reach the Dask scheduler {scheduler or '(local)'}: {exc}") from None
        threads = self.client.nthreads()
        self.workers = max(1, sum(threads.values()))

    def run(self, fn: ChunkFn, context: SweepContext, chunks: Iterator[list[Task]]) -> Iterator[list[Outcome]]:
        from distributed import as_completed

        shared = self.client.scatter(context, broadcast=True)
        running = as_completed()
        for chunk in _take(chunks, 2 * self.workers):
            running.add(self.client.submit(fn, shared, chunk, pure=False))
        try:
            for future in running:
                try:
                    result = future.result()
                except Exception as exc:  # a worker lost; dask already retried the task elsewhere
                    raise AttnscopeError(
                        f"a Dask task failed ({type(exc).__name__}: {exc}); the points finished so far are stored: "
                        "rerun to resume"
                    ) from None
                future.release()
                for chunk in _take(chunks, 1):
                    running.add(self.client.submit(fn, shared, chunk, pure=False))
                yield result
        finally:
            for future in running.futures:
                future.cancel()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _take(chunks: Iterator[list[Task]], n: int) -> list[list[Task]]:
    out = []
    for _ in range(max(0, n)):
        chunk = next(chunks, None)
        if chunk is None:
            break
        out.append(chunk)
    return out


def make_executor(workers: int | None = None, dask_local: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor the CLI flags ask for: Dask if dask_local or scheduler, else a pool of workers (1: in-process)."""
    if dask_local is not None and scheduler is not None:
        raise AttnscopeError("give either --dask-local N or --scheduler ADDRESS, not both")
    if scheduler is not None or dask_local is not None:
        if dask_local is not None and dask_local < 1:
            raise AttnscopeError(f"--dask-local: expected a positive number of workers, got {dask_local}")
        return DaskPool(local_workers=dask_local, scheduler=scheduler)
    workers = available_cores() if workers is None else workers
    if workers < 1:
        raise AttnscopeError(f"--workers: expected a positive number, got {workers}")
    return Executor() if workers == 1 else LocalPool(workers)


# ---------------------------------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class SweepSummary:
    """What a run did."""

    sweep: str
    store: str
    points: int  # points in the sample (a point drawn twice counts twice)
    unique: int  # distinct points (distinct keys)
    skipped: int  # already in the store
    computed: int  # evaluated by this run
    errors: int  # of those, how many failed
    seconds: float
    executor: str
    corrupt: int = 0  # stored rows that failed their checksum (corrupted on disk), recomputed by this run

    @property
    def rate(self) -> float:
        """Points evaluated per second."""
        return self.computed / self.seconds if self.seconds else 0.0


def chunk_size_for(pending: int, workers: int) -> int:
    """Enough chunks to balance the workers (8 each), at most 64 points (a fraction of a second) per chunk."""
    return max(1, min(64, math.ceil(pending / (8 * workers))))


def run_sweep(
    spec: SweepSpec,
    store_path: str | Path,
    *,
    force: bool = False,
    retry_errors: bool = False,
    executor: Executor | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    max_points: int | None = None,
) -> SweepSummary:
    """Evaluate every point of spec not yet in the store (all of them with force); see the module docstring.

    max_points: the size limit (default: the spec's ``sampling.max_points``, else 1,000,000); a larger sweep is
    refused before anything is sampled or stored."""
    start = time.perf_counter()
    points = sweep_points(spec, max_points)
    unique = list({p.key: p for p in reversed(points)}.values())[::-1]
    columns = spec.metric_columns()
    metrics = tuple(columns)
    try:
        with Store.open(store_path) as store:
            store.ensure_columns({**dict.fromkeys(spec.columns, ""), **columns})
            info = {
                "spec_yaml": spec.text,
                "spec_json": canonical_json(spec_summary(spec)),
                "origin": spec.origin,
                "arch_fingerprint": spec.fingerprint(),
                "model_version": MODEL_VERSION,
            }
            store.record_sweep(spec.name, info, [p.key for p in points])
            corrupt: list[str] = []  # rows whose values fail their checksum: recomputed
            done = set() if force else store.finished((p.key for p in unique), not retry_errors, corrupt)
            pending = [p for p in unique if p.key not in done]
            context = SweepContext(spec.arch, spec.mapping.strategy, spec.mapping.params, metrics, spec.targets)
            own = executor is None
            executor = executor or Executor()
            errors = 0
            try:
                if pending:
                    errors = _run(spec, store, pending, executor, context, metrics, progress, chunk_size)
            finally:
                if own:
                    executor.close()
    except sqlite3.Error as exc:  # the store failed outside a write (a read, the connection): same advice
        raise unwritable(store_path, exc) from None
    return SweepSummary(
        sweep=spec.name,
        store=str(store_path),
        points=len(points),
        unique=len(unique),
        skipped=len(unique) - len(pending),
        computed=len(pending),
        errors=errors,
        seconds=time.perf_counter() - start,
        executor=executor.description,
        corrupt=len(corrupt),
    )


def _run(
    spec: SweepSpec,
    store: Store,
    pending: list[Point],
    executor: Executor,
    context: SweepContext,
    metrics: Sequence[str],
    progress: bool,
    chunk_size: int | None,
) -> int:
    from tqdm import tqdm

    by_key = {p.key: p for p in pending}
    size = chunk_size or chunk_size_for(len(pending), executor.workers)
    tasks = (
        Task(p.key, p.overrides, p.workload.cascade, tuple(sorted(p.sizes.items())) if p.target is None else (),
             p.params, p.target.name if p.target is not None else "", p.workload.model, p.workload.seq_len)
        for p in pending
    )  # fmt: skip
    chunks = iter(_chunked(tasks, size))
    errors = 0
    with tqdm(total=len(pending), desc=spec.name, unit="pt", disable=not progress, file=sys.stderr,
              dynamic_ncols=True, smoothing=0.05) as bar:  # fmt: skip
        for outcomes in executor.run(evaluate_chunk, context, chunks):
            rows = [_row(by_key[o.key], o, spec, metrics) for o in outcomes]
            store.write(rows)
            errors += sum(o.error is not None for o in outcomes)
            bar.update(len(outcomes))
            if errors:
                bar.set_postfix_str(f"{errors} failed", refresh=False)
    return errors


def _chunked(items: Iterable[Task], size: int) -> Iterator[list[Task]]:
    chunk: list[Task] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _row(point: Point, outcome: Outcome, spec: SweepSpec, metrics: Sequence[str]) -> dict[str, Any]:
    values = outcome.values or (None,) * len(metrics)
    return {
        "key": point.key,
        "status": "ok" if outcome.error is None else "error",
        "error": outcome.error,
        "cascade": point.workload.cascade or None,
        "model": point.workload.model,
        "seq_len": point.workload.seq_len,
        "strategy": spec.mapping.strategy,
        "model_version": MODEL_VERSION,
        "inputs_json": canonical_json(point.inputs()),
        "seconds": outcome.seconds,
        "finished_at": utc_now(),
        **point.values,
        **dict(zip(metrics, values, strict=True)),
    }
