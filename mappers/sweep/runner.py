"""Running a sweep: the coordinator hands chunks of points to workers and is this run's only writer.

The flow, one line per stage::

    points  = sweep_points(spec)                     # size checked first; sample the axes x workloads, hash
    store   = Store.open(path)                       # refuse foreign or corrupt files
    pending = points not yet in the store            # (all of them with force)
    for outcomes in executor.run(evaluate_chunk, context, claimed_chunks(pending)):   # workers evaluate
        store.write(rows(outcomes))                  # one transaction per finished chunk (releases its claims)
    wait for the points another run claimed         # finished by it, or taken over when it died

A point of a device sweep carries its target (:mod:`mappers.sweep.targets`) by name; the context carries the
targets as plain data, so workers evaluate the very preset content whose fingerprint is in the point's key.

Executors: in-process (one worker), a local process pool (default: all cores), or Dask distributed (a
LocalCluster or a scheduler address). Workers only compute and send outcomes back; a point whose
evaluation raises is recorded with its error and the sweep goes on. Each worker keeps its caches
(lowered cascades per shape) across the chunks it runs, and pool workers exit when the coordinator dies.
A pool worker that dies, stays stopped or overruns the chunk timeout is replaced and its chunk rerun
(:class:`LocalPool`). Ctrl-C, a failing store or a failed Dask run stop the sweep with a message; the points
stored so far are kept (rerun to resume).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError
from mappers.sweep.metrics import resolve_metric
from mappers.sweep.points import MODEL_VERSION, Point, canonical_json, sweep_points
from mappers.sweep.spec import SweepSpec, spec_summary
from mappers.sweep.store import LEASE_SECONDS, Store, new_owner, unwritable, utc_now
from mappers.sweep.strategies import Strategy, get_strategy
from mappers.sweep.targets import Target, resolve_in_worker
from mappers.workers import pool_context
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


STOPPED_AFTER = 10.0
"""Seconds a pool worker may stay stopped (SIGSTOP, state T) before its chunk is given to another worker."""
MIN_TASK_TIMEOUT = 300.0
"""The default per-chunk timeout: this many seconds, or 20x the slowest point seen so far times the chunk's
points, whichever is longer (``--task-timeout`` sets a fixed one)."""


STARTUP_TIMEOUT = 120.0
"""Seconds a worker may take to start on a chunk it was sent (a new worker imports its modules first)."""


def _stopped(pid: int) -> bool:
    """Whether a process is stopped (Linux /proc; elsewhere never)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    end = data.rfind(b")")
    return data[end + 2 : end + 3] in (b"T", b"t")


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """A pool worker: run (task id, fn, context, chunk) messages; answer (task id, None, None) on starting one,
    then (task id, True, result) or (task id, False, error)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    _watch_parent()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task, fn, context, chunk = message
        conn.send((task, None, None))  # started: the chunk timeout counts from here
        try:
            reply = (task, True, fn(context, chunk))
        except Exception as exc:  # evaluate_chunk records point errors itself; this is a bug or an unpicklable value
            reply = (task, False, f"{type(exc).__name__}: {exc}")
        conn.send(reply)


@dataclass
class _Worker:
    process: Any  # multiprocessing Process
    conn: multiprocessing.connection.Connection
    task: int | None = None  # the chunk it runs
    acknowledged: bool = False  # the worker has unpickled the chunk and runs it
    started: float = 0.0  # when the chunk was sent, then when the worker acknowledged it
    stopped_since: float | None = None


@dataclass
class _Chunk:
    tasks: list[Task]
    tries: int = 0  # how many workers it was lost on (stuck or died)


class _Feed:
    """The chunks to hand out: lost ones first (:attr:`again`), then new ones from the iterator."""

    def __init__(self, chunks: Iterator[list[Task]]):
        self.chunks = chunks
        self.again: list[_Chunk] = []
        self.exhausted = False

    def next(self) -> _Chunk | None:
        if self.again:
            return self.again.pop(0)
        tasks = None if self.exhausted else next(self.chunks, None)
        self.exhausted = tasks is None
        return None if tasks is None else _Chunk(tasks)


class _Retrying(Executor):
    """What both pools share: the chunk timeout, and what becomes of a chunk taken from its worker.

    task_timeout: seconds a chunk may run; None: the longer of :data:`MIN_TASK_TIMEOUT` and 20x the slowest
    point seen times the chunk's points. A lost chunk runs again split into single points; a point lost twice is
    recorded as failed, with the reason (``--retry-errors`` retries it)."""

    task_timeout: float | None = None
    slowest: float = 0.0  # seconds per point, the slowest chunk so far
    replaced: int = 0  # workers killed or lost and replaced

    def _timeout(self, chunk: _Chunk) -> float:
        if self.task_timeout is not None:
            return self.task_timeout
        return max(MIN_TASK_TIMEOUT, 20.0 * self.slowest * len(chunk.tasks))

    def _finished(self, chunk: _Chunk, seconds: float) -> None:
        self.slowest = max(self.slowest, seconds / max(1, len(chunk.tasks)))

    @staticmethod
    def _rerun(chunk: _Chunk, why: str) -> tuple[list[Outcome] | None, list[_Chunk]]:
        """(outcomes to record, chunks to run again) for a chunk lost because ``why``."""
        if chunk.tries >= 1 and len(chunk.tasks) == 1:
            reason = (f"WorkerLost: no result after {chunk.tries + 1} tries; the last time {why}; "
                      "rerun with --retry-errors to try again")  # fmt: skip
            return [Outcome(t.key, None, reason, 0.0) for t in chunk.tasks], []
        return None, [_Chunk([t], chunk.tries + 1) for t in chunk.tasks]


class LocalPool(_Retrying):
    """A pool of local worker processes (forkserver on Linux, so workers start from a clean, warm image).

    Each worker runs one chunk at a time. A chunk whose worker dies, stays stopped for ``stopped_after``
    seconds, or runs past the chunk timeout is taken from it (the worker is killed and replaced) and run again
    elsewhere (:class:`_Retrying`). A chunk's result is used once, so no point is stored twice.
    """

    def __init__(self, workers: int, task_timeout: float | None = None, stopped_after: float = STOPPED_AFTER):
        self.workers = workers
        self.task_timeout = task_timeout
        self.stopped_after = stopped_after
        self.description = f"local pool, {workers} workers"
        # the forkserver imports and loads the kernel while the points are sampled
        self.ctx = pool_context(("mappers.sweep.runner",))
        self.pool: list[_Worker] = []

    def _spawn(self) -> _Worker:
        mine, theirs = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=_worker_main, args=(theirs,), daemon=True, name="attnscope-sweep-worker")
        process.start()
        theirs.close()
        return _Worker(process, mine)

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker (stuck, stopped or dead) and start another in its place."""
        with contextlib.suppress(ProcessLookupError, OSError):
            os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.join(5)
        worker.conn.close()
        self.pool[self.pool.index(worker)] = self._spawn()
        self.replaced += 1

    def run(self, fn: ChunkFn, context: SweepContext, chunks: Iterator[list[Task]]) -> Iterator[list[Outcome]]:
        while len(self.pool) < self.workers:
            self.pool.append(self._spawn())
        running: dict[int, _Chunk] = {}
        feed = _Feed(chunks)
        ids = itertools.count()
        while True:
            for worker in self.pool:  # hand out work
                if worker.task is not None:
                    continue
                chunk = feed.next()
                if chunk is None:
                    break
                task = next(ids)
                running[task] = chunk
                worker.task, worker.started, worker.stopped_since = task, time.monotonic(), None
                worker.acknowledged = False
                worker.conn.send((task, fn, context, chunk.tasks))
            busy = [w for w in self.pool if w.task is not None]
            if not busy:
                return
            ready = multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5
            )
            for worker in busy:
                result = None
                if worker.conn in ready or worker.process.sentinel in ready:
                    with contextlib.suppress(EOFError, OSError):
                        while worker.task is not None and worker.conn.poll():
                            task, ok, payload = worker.conn.recv()
                            if ok is None:  # the worker has the chunk and starts on it
                                worker.started, worker.acknowledged = time.monotonic(), True
                                continue
                            chunk = running.pop(task)
                            worker.task = None
                            if not ok:
                                raise AttnscopeError(f"a sweep worker failed: {payload}")
                            self._finished(chunk, time.monotonic() - worker.started)
                            result = payload
                    if result is None and worker.task is not None and not worker.process.is_alive():
                        code = worker.process.exitcode
                        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                        yield from self._lost(worker, running, feed.again, f"its worker process died ({why})")
                        continue
                if result is not None:
                    yield result
                elif worker.task is not None:
                    yield from self._check_stuck(worker, running, feed.again)

    def _check_stuck(self, worker: _Worker, running: dict[int, _Chunk], again: list[_Chunk]) -> Iterator[list[Outcome]]:
        now = time.monotonic()
        chunk = running[worker.task]
        if _stopped(worker.process.pid):
            worker.stopped_since = worker.stopped_since or now
            if now - worker.stopped_since >= self.stopped_after:
                yield from self._lost(worker, running, again, f"its worker process was stopped for "
                                      f"{now - worker.stopped_since:.0f} s")  # fmt: skip
                return
        else:
            worker.stopped_since = None
        limit = self._timeout(chunk) if worker.acknowledged else max(self._timeout(chunk), STARTUP_TIMEOUT)
        if now - worker.started > limit:
            yield from self._lost(worker, running, again, f"it ran past the chunk timeout of {limit:.0f} s")

    def _lost(
        self, worker: _Worker, running: dict[int, _Chunk], again: list[_Chunk], why: str
    ) -> Iterator[list[Outcome]]:
        """Take a chunk from its worker (replaced); run it again as single points, or record a point lost twice."""
        chunk = running.pop(worker.task)
        worker.task = None
        self._replace(worker)
        failed, rerun = self._rerun(chunk, why)
        again.extend(rerun)
        if failed:
            yield failed

    def close(self) -> None:
        for worker in self.pool:
            if worker.task is None:
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(None)
            else:
                with contextlib.suppress(ProcessLookupError, OSError):
                    os.kill(worker.process.pid, signal.SIGKILL)
        for worker in self.pool:
            worker.process.join(5)
            if worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError, OSError):
                    os.kill(worker.process.pid, signal.SIGKILL)
                worker.process.join(5)
            worker.conn.close()
        self.pool = []


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Ignore SIGINT while starting worker processes: they inherit the ignoring (through exec too), so a
    terminal's Ctrl-C reaches only this process, which stops them. SIGINT is also blocked meanwhile, so a
    Ctrl-C in that window stays pending (Linux keeps a blocked signal even if ignored) and arrives after."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


WAIT_FOR_WORKERS = 30.0
"""Seconds a sweep waits for a Dask scheduler that has no workers before giving up (exit 2)."""
POLL_S = 0.5
"""Seconds between the Dask coordinator's looks at running chunks (for the chunk timeout)."""


def _context(context: SweepContext) -> SweepContext:
    return context


class DaskPool(_Retrying):
    """Dask distributed: a LocalCluster of n worker processes, or an existing scheduler (tcp://host:8786).

    A scheduler without workers is waited for :data:`WAIT_FOR_WORKERS` seconds, then refused; a task that
    fails or a scheduler that goes away stops the sweep with a message (the points finished are stored). A
    chunk running past its timeout (a stopped or hung worker) is cancelled, its worker restarted, and the chunk
    run again (:class:`_Retrying`); a chunk's result is used once. The timeout counts from when the scheduler
    reports the chunk running, so chunks queued behind it are not charged for the wait."""

    def __init__(self, local_workers: int | None = None, scheduler: str | None = None,
                 task_timeout: float | None = None):  # fmt: skip
        self.task_timeout = task_timeout
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise AttnscopeError(
                "Dask execution needs dask.distributed: pip install 'dask[distributed]' (or drop --dask-local "
                "and --scheduler to use the local process pool)"
            ) from None
        import logging

        self.cluster = None
        self.client = None
        try:
            if scheduler is not None:
                self.client = Client(scheduler, timeout="20s")
                self.description = f"dask scheduler {scheduler}"
            else:
                with _sigint_blocked():  # the workers inherit the block: Ctrl-C is the coordinator's alone
                    self.cluster = LocalCluster(
                        n_workers=local_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )  # fmt: skip
                self.client = Client(self.cluster)
                self.description = f"dask LocalCluster, {local_workers} workers"
            if not self.client.nthreads():
                self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS)
            threads = self.client.nthreads()
        except (OSError, TimeoutError) as exc:
            where, connected = scheduler or "(local)", self.client is not None
            self.close()
            if connected:  # the scheduler answered; wait_for_workers timed out
                raise AttnscopeError(
                    f"the Dask scheduler {where} has no workers (waited {WAIT_FOR_WORKERS:.0f} s); start some "
                    f"(dask worker {where}) and rerun to resume"
                ) from None
            raise AttnscopeError(f"cannot reach the Dask scheduler {where}: {exc}; rerun to resume") from None
        except BaseException:
            self.close()
            raise
        self.workers = max(1, sum(threads.values()))

    def run(self, fn: ChunkFn, context: SweepContext, chunks: Iterator[list[Task]]) -> Iterator[list[Outcome]]:
        from distributed import wait

        live: dict[Any, _Chunk] = {}  # futures not yet answered -> their chunk
        started: dict[str, tuple[float, str]] = {}  # key -> (when first seen running, on which worker)
        feed = _Feed(chunks)
        # A Ctrl-C raised inside one of distributed's blocking calls leaves it logging a traceback (its sync's
        # cancel callback); so SIGINT only marks the run here, and the loop raises KeyboardInterrupt between calls.
        interrupts: list[int] = []
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupts.append(signum))
        try:
            # The context as a task's result, not scattered data: if every worker holding it is lost, the
            # scheduler computes it again instead of failing the tasks that need it.
            shared = self.client.submit(_context, context, pure=False)

            def top_up() -> None:
                while len(live) < 2 * self.workers:
                    chunk = feed.next()
                    if chunk is None:
                        return
                    live[self.client.submit(fn, shared, chunk.tasks, pure=False)] = chunk

            top_up()
            while live:
                if interrupts:
                    raise KeyboardInterrupt
                with contextlib.suppress(TimeoutError):  # distributed's wait raises when nothing finished
                    wait(list(live), timeout=POLL_S, return_when="FIRST_COMPLETED")
                finished = [future for future in live if future.done()]
                now = time.monotonic()
                for future in finished:
                    chunk = live.pop(future)
                    try:  # a finished chunk's result lives on its worker, which may since have stopped answering
                        result = future.result(timeout=self._timeout(chunk))
                    except TimeoutError:
                        why = f"its result could not be fetched within {self._timeout(chunk):.0f} s"
                        self._restart(self._holders(future))
                        with contextlib.suppress(Exception):
                            future.cancel()
                        failed, rerun = self._rerun(chunk, why)
                        feed.again.extend(rerun)
                        if failed:
                            yield failed
                        continue
                    future.release()
                    began = started.pop(future.key, None)
                    if began is not None:
                        self._finished(chunk, now - began[0])
                    yield result
                lost = self._stuck(live, started, now)
                for future, why in lost:
                    failed, rerun = self._rerun(live.pop(future), why)
                    feed.again.extend(rerun)
                    if failed:
                        yield failed
                top_up()
        except (AttnscopeError, GeneratorExit):
            raise
        except Exception as exc:  # a task failed on every worker dask tried, the scheduler went away...
            raise AttnscopeError(
                f"the Dask run failed ({type(exc).__name__}: {exc}); the points finished so far are stored: "
                "rerun to resume"
            ) from None
        finally:
            for future in list(live):
                with contextlib.suppress(Exception):
                    future.cancel()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if interrupts:  # a Ctrl-C during the last calls, after the loop's check
                raise KeyboardInterrupt

    def _stuck(
        self, live: dict[Any, _Chunk], started: dict[str, tuple[float, str]], now: float
    ) -> list[tuple[Any, str]]:
        """The futures running past their chunk timeout, cancelled, their workers restarted (where a nanny can)."""
        processing = self.client.processing()  # {worker address: [keys running or queued there]}
        where = {key: address for address, keys in processing.items() for key in keys}
        lost, stuck_workers = [], set()
        for future, chunk in live.items():
            if future.key not in where:
                continue
            since, address = started.setdefault(future.key, (now, where[future.key]))
            limit = self._timeout(chunk)
            if now - since > limit:
                lost.append((future, f"it ran past the chunk timeout of {limit:.0f} s on {address}"))
                stuck_workers.add(address)
        for future, _ in lost:
            started.pop(future.key, None)
            with contextlib.suppress(Exception):
                future.cancel()
        self._restart(stuck_workers)
        return lost

    def _holders(self, future: Any) -> set[str]:
        """The workers holding a future's result (none known when the scheduler cannot say)."""
        with contextlib.suppress(Exception):
            return set(self.client.who_has(future).get(future.key, ()))
        return set()

    def _restart(self, workers: set[str]) -> None:
        """Restart stuck workers (where a nanny can; the scheduler drops one without a nanny when it stops
        answering)."""
        if workers:
            with contextlib.suppress(Exception):
                self.client.restart_workers(sorted(workers), timeout=60)
            self.replaced += len(workers)

    def close(self) -> None:
        """Close the client and the local cluster; errors while closing (after Ctrl-C, a lost scheduler) are
        not the user's: they are dropped."""
        for thing in (self.client, self.cluster):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self.client = self.cluster = None


def _take(chunks: Iterator[list[Task]], n: int) -> list[list[Task]]:
    out = []
    for _ in range(max(0, n)):
        chunk = next(chunks, None)
        if chunk is None:
            break
        out.append(chunk)
    return out


def make_executor(
    workers: int | None = None,
    dask_local: int | None = None,
    scheduler: str | None = None,
    task_timeout: float | None = None,
) -> Executor:
    """The executor the CLI flags ask for: Dask if dask_local or scheduler, else a pool of workers (1: in-process);
    task_timeout: seconds a chunk may run (default: see :class:`_Retrying`)."""
    if dask_local is not None and scheduler is not None:
        raise AttnscopeError("give either --dask-local N or --scheduler ADDRESS, not both")
    if task_timeout is not None and not task_timeout > 0:  # NaN included
        raise AttnscopeError(f"--task-timeout: expected a positive number of seconds, got {task_timeout}")
    if scheduler is not None or dask_local is not None:
        if dask_local is not None and dask_local < 1:
            raise AttnscopeError(f"--dask-local: expected a positive number of workers, got {dask_local}")
        return DaskPool(local_workers=dask_local, scheduler=scheduler, task_timeout=task_timeout)
    workers = available_cores() if workers is None else workers
    if workers < 1:
        raise AttnscopeError(f"--workers: expected a positive number, got {workers}")
    return Executor() if workers == 1 else LocalPool(workers, task_timeout)


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
    by_others: int = 0  # pending points another run on the store computed meanwhile

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
    refused before anything is sampled or stored. Another run on the same store shares the work: points it has
    claimed are left to it (and waited for), see :mod:`mappers.sweep.store`."""
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
            run = _Run(spec, store, executor, context, metrics, force, retry_errors)
            try:
                if pending:
                    run.all(pending, progress, chunk_size)
            finally:
                run.end()
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
        computed=run.computed,
        errors=run.errors,
        seconds=time.perf_counter() - start,
        executor=executor.description,
        corrupt=len(corrupt),
        by_others=run.by_others,
    )


WAIT_POLL = 0.5
"""Seconds between looks at the points another run holds, once this run has done all it could."""


class _Run:
    """One run's evaluation of the pending points, shared with any other run on the store through claims."""

    def __init__(self, spec: SweepSpec, store: Store, executor: Executor, context: SweepContext,
                 metrics: Sequence[str], force: bool, retry_errors: bool):  # fmt: skip
        self.spec, self.store, self.executor, self.context, self.metrics = spec, store, executor, context, metrics
        self.force, self.retry_errors = force, retry_errors
        self.owner = new_owner()
        self.computed = self.errors = self.by_others = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def all(self, pending: list[Point], progress: bool, chunk_size: int | None) -> None:
        from tqdm import tqdm

        by_key = {p.key: p for p in pending}
        size = chunk_size or chunk_size_for(len(pending), self.executor.workers)
        self._renewer = threading.Thread(target=self._renew, name="attnscope-sweep-lease", daemon=True)
        self._renewer.start()
        with tqdm(total=len(pending), desc=self.spec.name, unit="pt", disable=not progress, file=sys.stderr,
                  dynamic_ncols=True, smoothing=0.05) as bar:  # fmt: skip
            todo = pending
            while todo:
                held: list[str] = []
                for outcomes in self.executor.run(evaluate_chunk, self.context, self._claimed(todo, size, held, bar)):
                    self.store.write([_row(by_key[o.key], o, self.spec, self.metrics) for o in outcomes], self.owner)
                    self.computed += len(outcomes)
                    self.errors += sum(o.error is not None for o in outcomes)
                    bar.update(len(outcomes))
                    if self.errors:
                        bar.set_postfix_str(f"{self.errors} failed", refresh=False)
                todo = [by_key[k] for k in self._wait(held, bar)]

    def _claimed(self, todo: list[Point], size: int, held: list[str], bar: Any) -> Iterator[list[Task]]:
        """Chunks of the points this run claims; points finished or held by another run are left out (the held
        ones are appended to held)."""
        for start in range(0, len(todo), size):
            batch = {p.key: p for p in todo[start : start + size]}
            claimed, done, busy = self.store.claim(list(batch), self.owner, not self.force, not self.retry_errors)
            held += busy
            self.by_others += len(done)
            bar.update(len(done))
            if claimed:
                yield [_task(batch[k]) for k in claimed]

    def _wait(self, held: list[str], bar: Any) -> list[str]:
        """Wait until the points another run holds are finished by it, or free to claim (their owner died, or
        let them go); the free ones."""
        while held:
            done, free, held = self.store.held(held, self.owner)
            self.by_others += len(done)
            bar.update(len(done))
            if free:
                return free
            if held:
                bar.set_postfix_str(f"waiting for {len(held)} points another run computes", refresh=True)
                time.sleep(WAIT_POLL)
        return []

    def _renew(self) -> None:
        """Renew this run's claims every quarter lease, on a connection of its own, until the run ends."""
        conn = None
        try:
            conn = sqlite3.connect(self.store.path, timeout=30, isolation_level=None)
            while not self._stop.wait(LEASE_SECONDS / 4):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + LEASE_SECONDS,
                                                                                    self.owner))  # fmt: skip
        except sqlite3.Error:
            return
        finally:
            if conn is not None:
                conn.close()

    def end(self) -> None:
        """Stop renewing and release this run's claims (finished or not)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)
        try:
            self.store.release(self.owner)
        except (AttnscopeError, sqlite3.Error):  # this connection cannot write: try a fresh one, else leave the
            fresh = contextlib.closing(sqlite3.connect(self.store.path, timeout=5, isolation_level=None))
            with contextlib.suppress(sqlite3.Error), fresh as conn:  # (or the claims lapse: process gone, lease out)
                conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))


def _task(p: Point) -> Task:
    sizes = tuple(sorted(p.sizes.items())) if p.target is None else ()
    target = p.target.name if p.target is not None else ""
    return Task(p.key, p.overrides, p.workload.cascade, sizes, p.params, target, p.workload.model, p.workload.seq_len)


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
