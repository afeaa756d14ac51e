"""Sweeps under faults (issue 16): oversized sweeps and expressions, writes through `query`, read-only or failing
stores, corrupted rows, stuck workers, interrupted and workerless Dask runs, two clients on one store.

No test depends on timing luck: faults are injected at fixed moments (a worker that stops itself, a store made
read-only before a given write, a bit flipped in a known value), and subprocesses run with generous timeouts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attnscope.cli import main
from einsum.errors import SpecError
from mappers.sweep import Store, read_sweep_file, run_sweep, sweep_points
from mappers.sweep.points import sweep_size
from mappers.sweep.runner import LocalPool, Outcome, Task
from tests.mappers.test_sweep import write_spec

ROOT = Path(__file__).resolve().parents[2]

HEAD = """\
name: faults
arch: fusemax-cloud
workload: {cascades: [fusemax], models: [BERT], seq_lens: [1K]}
"""
SMALL = (
    HEAD
    + """\
axes:
  pe_dim:
    paths: [arrays.pe_2d.rows, arrays.pe_2d.cols, arrays.pe_1d.pes]
    values: [32, 64, 128]
  buffer_words:
    paths: [levels.global_buffer.capacity_words]
    min: 32768
    max: 8388608
    scale: log
sampling: {method: lhs, points: POINTS, seed: 3}
metrics: [latency_s, energy_j, area_mm2]
"""
)


def small_spec(tmp_path: Path, points: int, extra: str = "") -> Path:
    return write_spec(tmp_path, SMALL.replace("POINTS", str(points)) + extra, f"small-{points}.yaml")


def cli(*argv: str, timeout: float = 120, check: int | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "attnscope.cli", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if check is not None:
        assert out.returncode == check, out.stderr
    return out


# ------------------------------------------------------------------------------------- 1. size and expression cost


GRID_5E11 = (
    HEAD
    + """\
axes:
  clock_hz: {min: 5.0e8, max: 1.5e9, count: 500000}
  buffer_words:
    paths: [levels.global_buffer.capacity_words]
    min: 32768
    max: 8388608
    count: 1000000
"""
)
LHS_1E12 = HEAD + "axes: {clock_hz: {min: 5.0e8, max: 1.5e9}}\nsampling: {method: lhs, points: 1000000000000}\n"


def test_size_limit_refuses_huge_grid_before_sampling(tmp_path, capsys):
    spec = write_spec(tmp_path, GRID_5E11)
    store = tmp_path / "s.sqlite"
    start = time.perf_counter()
    assert main(["sweep", str(spec), "--store", str(store), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "500,000,000,000 points (grid: 500,000 x 1,000,000 axis values x 1 workload)" in err
    assert "over the limit of 1,000,000 points" in err and "TiB of memory" in err and "--max-points" in err
    assert "Traceback" not in err and not store.exists()
    assert time.perf_counter() - start < 30  # nothing was sampled


def test_size_limit_refuses_huge_lhs_by_count_and_by_memory(tmp_path, capsys):
    spec = write_spec(tmp_path, LHS_1E12)
    store = tmp_path / "s.sqlite"
    assert main(["sweep", str(spec), "--store", str(store), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "1,000,000,000,000 points (lhs: 1,000,000,000,000 draws x 1 workload)" in err
    assert "limit of 1,000,000 points" in err and "PiB of memory" in err
    argv = ["sweep", str(spec), "--store", str(store), "--quiet", "--max-points", str(10**13)]
    assert main(argv) == 2  # within the raised limit, but not within this machine's memory
    err = capsys.readouterr().err
    assert "PiB of memory to sample and hold them; this machine has" in err and not store.exists()


def test_size_limit_flag_and_spec_key(tmp_path, capsys):
    spec = small_spec(tmp_path, 12)
    assert sweep_size(read_sweep_file(spec)).points == 12
    store = tmp_path / "s.sqlite"
    assert main(["sweep", str(spec), "--store", str(store), "--quiet", "--max-points", "10"]) == 2
    assert "12 points (lhs: 12 draws x 1 workload), over the limit of 10 points" in capsys.readouterr().err
    limited = write_spec(tmp_path, SMALL.replace("POINTS, seed: 3", "12, seed: 3, max_points: 10"), "limited.yaml")
    with pytest.raises(SpecError, match="over the limit of 10 points"):
        sweep_points(read_sweep_file(limited))
    assert main(["sweep", str(limited), "--store", str(store), "--quiet", "--workers", "1", "--max-points", "12"]) == 0
    bad = write_spec(tmp_path, SMALL.replace("POINTS, seed: 3", "12, max_points: -1"), "bad.yaml")
    with pytest.raises(SpecError, match=r"sampling\.max_points: expected a positive integer"):
        read_sweep_file(bad)


def test_derived_power_tower_is_refused_not_computed(tmp_path):
    expr = "10 ** 10 ** 10"
    spec = write_spec(tmp_path, SMALL.replace("POINTS", "4") + f"derived:\n  levels.global_buffer.area_um2: {expr}\n")
    out = cli("sweep", str(spec), "--store", str(tmp_path / "s.sqlite"), "--quiet", timeout=60)  # a hang times out
    assert out.returncode == 2, out.stderr
    assert f"derived.levels.global_buffer.area_um2: at the first point: expression {expr!r}" in out.stderr
    assert "10 ** 10 ** 10 would be about 2**3.32e+10" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("2 ** 4000 // 3", "2 ** 4000 would be about 2**4e+03"),
        ("2 ** 1023 * 2 ** 10", "2 ** 1023 * 2 ** 10 is about 10**311"),
        ("round(buffer_words, 10 ** 9)", "round to at most 400 digits"),
        ("(-8) ** 0.5 + buffer_words", "(-8) ** 0.5 is not a real number"),
        ("-" * 1001 + "1", "characters long; at most 1000 are read"),
    ],
)
def test_derived_expressions_have_bounded_cost(tmp_path, expr, fragment):
    text = SMALL.replace("POINTS", "4") + f"derived:\n  levels.global_buffer.area_um2: '{expr}'\n"
    with pytest.raises(SpecError) as err:
        read_sweep_file(write_spec(tmp_path, text))
    assert "derived.levels.global_buffer.area_um2: " in str(err.value) and fragment in str(err.value)


# ------------------------------------------------------------------------------------- 2. query is read-only


def test_query_refuses_attach_vacuum_into_and_writes(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    run_sweep(read_sweep_file(small_spec(tmp_path, 3)), store)
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    files = lambda: sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm")))  # noqa: E731
    before = files()
    statements = {
        f"VACUUM INTO '{tmp_path / 'copy.sqlite'}'": "VACUUM statements are refused",
        f"ATTACH '{tmp_path / 'new.sqlite'}' AS x": "ATTACH statements are refused",
        "DELETE FROM points": "DELETE statements are refused",
        "CREATE TEMP TABLE t (x)": "CREATE statements are refused",
        "PRAGMA user_version = 7": "PRAGMA statements are refused",
        "UPDATE points SET latency_s = 0": "UPDATE statements are refused",
    }
    for sql, fragment in statements.items():
        assert main(["query", str(store), sql]) == 2, sql
        err = capsys.readouterr().err
        assert "the store is opened read-only" in err and fragment in err, err
    assert files() == before  # no file created (the store's own WAL index aside)
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest
    assert main(["query", str(store), "PRAGMA table_info(points)", "--json"]) == 0
    assert main(["query", str(store), "SELECT count(*) AS n FROM results", "--json"]) == 0
    assert '"n": 3' in capsys.readouterr().out


# ------------------------------------------------------------------------------------- 3. read-only or failing store


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("PRAGMA query_only = 1", "attempt to write a readonly database"),  # the store turned read-only
        ("PRAGMA max_page_count = {pages}", "database or disk is full"),  # the disk filled up
    ],
)
def test_store_failing_mid_run_stops_cleanly_and_resumes(tmp_path, monkeypatch, capsys, fault, says):
    spec_path = small_spec(tmp_path, 12)
    store = tmp_path / "s.sqlite"
    original = Store.write
    calls = []

    def failing_write(self, rows, owner=None):
        calls.append(len(rows))
        if len(calls) == 2:  # the second batch meets the fault
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            self.conn.execute(fault.format(pages=pages))
        return original(self, rows, owner)

    monkeypatch.setattr(Store, "write", failing_write)
    argv = ["sweep", str(spec_path), "--store", str(store), "--workers", "1", "--chunk-size", "4", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{store}: cannot write to the store (SQLite: {says})" in err and "rerun to resume" in err, err
    assert "Traceback" not in err
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM points").fetchone()[0] == 4  # the first batch, whole
    monkeypatch.setattr(Store, "write", original)
    assert main(argv) == 0
    assert "4 already stored, 8 computed" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- 4. row checksums


def test_bit_flip_in_a_stored_value_is_detected_reported_and_recomputed(tmp_path, capsys):
    spec = read_sweep_file(small_spec(tmp_path, 6))
    store = tmp_path / "s.sqlite"
    run_sweep(spec, store)
    conn = sqlite3.connect(store)
    conn.execute("VACUUM")  # one copy of every value in the file (no stale ones in free space)
    cursor = conn.execute("SELECT * FROM points WHERE status = 'ok' ORDER BY key")
    names, rows = [d[0] for d in cursor.description], cursor.fetchall()
    conn.close()
    data = bytearray(store.read_bytes())
    # SQLite keeps a REAL as a big-endian IEEE double; take a metric value that no other cell shares
    key, column, value = next(
        (r[0], c, v) for r in rows for c, v in zip(names, r, strict=True)
        if c in ("latency_s", "energy_j", "area_mm2") and data.count(struct.pack(">d", v)) == 1
    )  # fmt: skip
    data[data.index(struct.pack(">d", value)) + 7] ^= 0x01  # its lowest mantissa bit
    store.write_bytes(bytes(data))
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"  # SQLite does not notice
        assert conn.execute(f"SELECT {column} FROM points WHERE key = ?", (key,)).fetchone()[0] != value
    with Store.open(store, readonly=True) as s:
        assert s.corrupt() == [key]
    assert main(["query", str(store), "SELECT count(*) FROM points"]) == 0
    err = capsys.readouterr().err
    assert "1 stored point(s) fail their checksum" in err and key in err
    assert main(["pareto", str(store), "--x", "area_mm2", "--y", "latency_s", "--json"]) == 0
    captured = capsys.readouterr()
    assert key in captured.err and "left out of the front" in captured.err and key not in captured.out
    again = run_sweep(spec, store)  # resume: the corrupted row is recomputed
    assert (again.corrupt, again.computed, again.skipped) == (1, 1, 5)
    with sqlite3.connect(store) as conn:
        assert conn.execute(f"SELECT {column} FROM points WHERE key = ?", (key,)).fetchone()[0] == value
    with Store.open(store, readonly=True) as s:
        assert s.corrupt() == []


# ------------------------------------------------------------------------------------- 5. stuck or lost pool workers


def stop_once(folder: str, chunk: list[Task]) -> list[Outcome]:
    """A chunk function whose worker stops itself (SIGSTOP) the first time it meets point p0."""
    marker = Path(folder) / "stopped"
    if any(t.key == "p0" for t in chunk) and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGSTOP)
    return [Outcome(t.key, (1.0,), None, 0.0) for t in chunk]


def hang_once(folder: str, chunk: list[Task]) -> list[Outcome]:
    """A chunk function that hangs the first time it meets point p4."""
    marker = Path(folder) / "hung"
    if any(t.key == "p4" for t in chunk) and not marker.exists():
        marker.touch()
        time.sleep(3600)
    return [Outcome(t.key, (1.0,), None, 0.0) for t in chunk]


def die_on_p5(folder: str, chunk: list[Task]) -> list[Outcome]:
    """A chunk function whose worker dies whenever it meets point p5."""
    if any(t.key == "p5" for t in chunk):
        os._exit(3)
    return [Outcome(t.key, (1.0,), None, 0.0) for t in chunk]


def pool_outcomes(tmp_path: Path, fn, **options) -> tuple[list[Outcome], int]:
    tasks = [Task(f"p{i}", (), "", ()) for i in range(12)]
    chunks = iter([tasks[i : i + 3] for i in range(0, 12, 3)])
    with LocalPool(2, **options) as pool:
        outcomes = [o for out in pool.run(fn, str(tmp_path), chunks) for o in out]
        return outcomes, pool.replaced


def test_stopped_pool_worker_is_replaced_and_its_chunk_rerun(tmp_path):
    outcomes, replaced = pool_outcomes(tmp_path, stop_once, stopped_after=0.5)
    assert sorted(o.key for o in outcomes) == sorted(f"p{i}" for i in range(12))  # every point, once
    assert replaced == 1 and all(o.error is None for o in outcomes)


def test_chunk_past_its_timeout_is_rerun_elsewhere(tmp_path):
    outcomes, replaced = pool_outcomes(tmp_path, hang_once, task_timeout=2.0)
    assert sorted(o.key for o in outcomes) == sorted(f"p{i}" for i in range(12))
    assert replaced == 1 and all(o.error is None for o in outcomes)


def test_point_that_kills_its_worker_is_recorded_as_failed(tmp_path):
    outcomes, replaced = pool_outcomes(tmp_path, die_on_p5)
    assert sorted(o.key for o in outcomes) == sorted(f"p{i}" for i in range(12))
    failed = [o for o in outcomes if o.error is not None]
    assert [o.key for o in failed] == ["p5"] and replaced == 2
    assert (
        "WorkerLost: no result after 2 tries; the last time its worker process died (exit status 3)" in failed[0].error
    )


# ------------------------------------------------------------------------------------- 6. Ctrl-C and Dask faults


@pytest.mark.parametrize("executor", [["--workers", "2"], ["--dask-local", "2"]])
def test_ctrl_c_exits_130_with_rerun_to_resume_and_no_traceback(tmp_path, executor):
    if executor[0] == "--dask-local":
        pytest.importorskip("distributed")
    points = 100_000  # far more than runs before the Ctrl-C (a point takes well under a millisecond now)
    spec, store = small_spec(tmp_path, points), tmp_path / "s.sqlite"
    argv = [sys.executable, "-m", "attnscope.cli", "sweep", str(spec), "--store", str(store), "--quiet"]
    proc = subprocess.Popen([*argv, "--chunk-size", "4", *executor], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and not stored_rows(store):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted; finished points are in" in err and "rerun to resume" in err
    assert "Traceback" not in err and "Error" not in err, err
    done = stored_rows(store)
    assert 0 < done < points
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store.open(store, readonly=True) as s:
        assert s.corrupt() == []


def _sigint_default() -> None:
    """In the child before exec: SIGINT as in a terminal's foreground job. A suite started in the background by a
    non-interactive shell ignores SIGINT, and its children inherit that (then Python installs no handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stored_rows(store: Path) -> int:
    try:
        with sqlite3.connect(store) as conn:
            return conn.execute("SELECT count(*) FROM points").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def die_once_on_p3(folder: str, chunk: list[Task]) -> list[Outcome]:
    """A chunk function whose worker dies the first time it meets point p3."""
    marker = Path(folder) / "died"
    if any(t.key == "p3" for t in chunk) and not marker.exists():
        marker.touch()
        os._exit(3)
    return [Outcome(t.key, (1.0,), None, 0.0) for t in chunk]


def dask_outcomes(tmp_path: Path, fn, workers: int, **options) -> tuple[list[Outcome], int]:
    pytest.importorskip("distributed")
    from mappers.sweep.runner import DaskPool

    def hung(*_):
        raise TimeoutError("the Dask sweep hung (no result in 240 s)")

    tasks = [Task(f"p{i}", (), "", ()) for i in range(12)]
    chunks = iter([tasks[i : i + 3] for i in range(0, 12, 3)])
    previous = signal.signal(signal.SIGALRM, hung)  # a hang fails this test instead of stalling the suite
    signal.alarm(240)
    try:
        with DaskPool(local_workers=workers, **options) as pool:
            outcomes = [o for out in pool.run(fn, str(tmp_path), chunks) for o in out]
            return outcomes, pool.replaced
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_dask_per_task_timeout_reruns_a_stopped_workers_chunk(tmp_path):
    outcomes, replaced = dask_outcomes(tmp_path, stop_once, 2, task_timeout=3.0)
    assert sorted(o.key for o in outcomes) == sorted(f"p{i}" for i in range(12))  # every point, once
    # the stopped worker is restarted by the chunk timeout or by a result it holds but cannot send (or not at all,
    # where the scheduler gave its chunk to the other worker first)
    assert replaced <= 2 and all(o.error is None for o in outcomes)
    assert (tmp_path / "stopped").exists()


def test_dask_resubmits_lost_tasks_when_every_worker_restarts(tmp_path):
    # the only worker dies holding the sweep's context: it is computed again, not lost with the worker
    outcomes, _ = dask_outcomes(tmp_path, die_once_on_p3, 1)
    assert sorted(o.key for o in outcomes) == sorted(f"p{i}" for i in range(12))
    assert all(o.error is None for o in outcomes) and (tmp_path / "died").exists()


def test_dask_scheduler_without_workers_exits_2(tmp_path, monkeypatch, capsys):
    distributed = pytest.importorskip("distributed")
    import mappers.sweep.runner as runner

    monkeypatch.setattr(runner, "WAIT_FOR_WORKERS", 1.0)
    spec, store = small_spec(tmp_path, 4), tmp_path / "s.sqlite"
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        argv = ["sweep", str(spec), "--store", str(store), "--quiet", "--scheduler", cluster.scheduler_address]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"the Dask scheduler {cluster.scheduler_address} has no workers (waited 1 s)" in err
    assert "rerun to resume" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------- 7. two runs on one store


def test_two_runs_on_one_store_share_the_points(tmp_path):
    spec = read_sweep_file(small_spec(tmp_path, 24))
    store = tmp_path / "s.sqlite"
    run_sweep(spec, store, force=True, chunk_size=24)  # create the store (and warm the caches) first
    with sqlite3.connect(store) as conn:
        conn.execute("DELETE FROM points")
    summaries = []
    runs = [threading.Thread(target=lambda: summaries.append(run_sweep(spec, store, chunk_size=1))) for _ in "ab"]
    for t in runs:
        t.start()
    for t in runs:
        t.join(120)
    assert len(summaries) == 2
    assert sum(s.computed for s in summaries) == 24  # between them, each point once
    for s in summaries:
        assert s.skipped + s.computed + s.by_others == 24
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT key) FROM points").fetchone() == (24, 24)
        assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0


def test_points_another_live_run_holds_are_left_to_it_and_waited_for(tmp_path):
    spec = read_sweep_file(small_spec(tmp_path, 12))
    reference, store = tmp_path / "reference.sqlite", tmp_path / "s.sqlite"
    run_sweep(spec, reference)
    keys = [p.key for p in sweep_points(spec)]
    other = f"{socket.gethostname()}:{os.getpid()}:other"  # a live run: this process, another owner
    with Store.open(store) as s:
        assert s.claim(keys[:3], other)[0] == keys[:3]
        s.conn.execute("UPDATE claims SET expires = ?", (time.time() + 3600,))  # no lapse while the test runs
    summaries = []
    mine = threading.Thread(target=lambda: summaries.append(run_sweep(spec, store, chunk_size=2)))
    mine.start()
    deadline = time.monotonic() + 120
    while stored_rows(store) < 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert stored_rows(store) == 9 and mine.is_alive()  # it did the rest and waits for the 3 held points
    with sqlite3.connect(reference) as conn:  # the other run finishes them
        cursor = conn.execute(f"SELECT * FROM points WHERE key IN ({','.join('?' * 3)})", keys[:3])
        rows = [dict(zip([d[0] for d in cursor.description], r, strict=True)) for r in cursor]
    with Store.open(store) as s:
        s.write([{k: v for k, v in r.items() if k != "checksum"} for r in rows], other)
    mine.join(60)
    assert not mine.is_alive()
    assert (summaries[0].computed, summaries[0].by_others) == (9, 3)


def test_claims_of_dead_or_lapsed_runs_are_taken_over(tmp_path):
    spec = read_sweep_file(small_spec(tmp_path, 12))
    store = tmp_path / "s.sqlite"
    keys = [p.key for p in sweep_points(spec)]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{socket.gethostname()}:{int(gone.stdout)}:dead"  # its process has exited
    with Store.open(store) as s:
        s.claim(keys[:3], dead)
        s.claim(keys[3:6], "elsewhere:1:lapsed")
        s.conn.execute("UPDATE claims SET expires = 0 WHERE owner = 'elsewhere:1:lapsed'")  # its lease ran out
    summary = run_sweep(spec, store)
    assert (summary.computed, summary.by_others) == (12, 0)
