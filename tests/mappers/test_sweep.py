"""Design-space sweeps: specs, points, the store, resumption after SIGKILL, Dask, Pareto fronts, the CLI."""

from __future__ import annotations

import csv
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnscope.cli import main
from einsum.errors import SpecError
from mappers.fusemax import fusemax_family
from mappers.sweep import Store, StoreError, pareto_front, read_sweep_file, run_sweep, sweep_points
from mappers.sweep.metrics import axis_label
from mappers.sweep.runner import SweepContext, Task, evaluate_chunk
from mappers.sweep.strategies import get_strategy
from simulator.specs import load_arch, with_overrides

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sweeps" / "fusemax-pe-buffer.yaml"

SMALL = """\
name: small
arch: fusemax-cloud
workload: {cascades: [fusemax], models: [BERT], seq_lens: [1K]}
mapping: {strategy: fixed-binding, config: binding}
axes:
  pe_dim:
    paths: [arrays.pe_2d.rows, arrays.pe_2d.cols, arrays.pe_1d.pes]
    values: [32, 64, 96, 128]        # 96 does not divide M = 1024: those points fail and are recorded
  buffer_words:
    paths: [levels.global_buffer.capacity_words]
    min: 32768
    max: 8388608
    scale: log
derived:
  levels.global_buffer.area_um2: base('levels.global_buffer.area_um2') * buffer_words / 8388608
sampling: {method: lhs, points: POINTS, seed: 7}
metrics: [latency_s, energy_j, area_mm2]
"""


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def small_spec(tmp_path: Path, points: int) -> Path:
    return write_spec(tmp_path, SMALL.replace("POINTS", str(points)), f"small-{points}.yaml")


def stored(path: Path) -> list[tuple]:
    """Every point row, without the columns that legitimately differ between runs (timings)."""
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(points)") if r[1] not in ("seconds", "finished_at")]
        return conn.execute(f"SELECT {', '.join(columns)} FROM points ORDER BY key").fetchall()


def count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


# ---------------------------------------------------------------------------------------------------- specs


def test_example_spec_grid_and_keys():
    spec = read_sweep_file(EXAMPLE)
    points = sweep_points(spec)
    assert len(points) == 6 * 10 and len({p.key for p in points}) == 60
    buffers = sorted({p.values["buffer_words"] for p in points})
    assert buffers[0] == 65536 and buffers[-1] == 33554432 and len(buffers) == 10
    first = points[0]
    assert dict(first.overrides)["arrays.pe_1d.pes"] == first.values["pe_dim"]
    assert "levels.global_buffer.area_um2" not in dict(first.overrides)  # the technology model prices each size
    assert [p.key for p in sweep_points(read_sweep_file(EXAMPLE))] == [p.key for p in points]  # stable keys


def test_latin_hypercube_uses_every_stratum_once(tmp_path):
    spec = read_sweep_file(small_spec(tmp_path, 40))
    points = sweep_points(spec)
    logs = np.log([p.values["buffer_words"] for p in points])
    strata = np.floor((logs - np.log(32768)) / (np.log(8388608) - np.log(32768)) * 40).astype(int)
    assert sorted(np.clip(strata, 0, 39)) == list(range(40))
    assert [p.values["pe_dim"] for p in points].count(32) == 10  # a discrete axis: each value in 1/4 of strata


def test_fixed_binding_matches_fusemax_family():
    base = load_arch("fusemax-cloud")
    sizes = {"B": 64, "E": 64, "F": 64, "H": 12, "M": 4096, "P": 4096}
    strategy = get_strategy("fixed-binding")
    for overrides in (
        {},
        {"arrays.pe_2d.rows": 64, "arrays.pe_2d.cols": 64, "arrays.pe_1d.pes": 64},
        {"levels.global_buffer.capacity_words": 123457, "clock_hz": 7.0e8},
        {"levels.global_buffer.capacity_words": 1000},
    ):
        arch = with_overrides(base, overrides)
        for config in ("binding", "arch"):
            assert (
                strategy.evaluate(arch, "fusemax", sizes, {"config": config})
                == fusemax_family(config, arch, sizes).cost
            )


BAD_SPECS = [
    ("axes: {arrays.pe_3d.rows: [1, 2]}", "axes.arrays.pe_3d.rows: path arrays.pe_3d.rows: override"),
    ("axes: {arrays.pe_2d.rowz: [1, 2]}", "arrays.pe_2d.rowz: unknown key; allowed keys: kind, rows, cols"),
    ("axes: {arrays.pe_2d.rows: []}", "axes.arrays.pe_2d.rows.values: empty axis; give at least one value"),
    ("axes: {pe: {paths: [arrays.pe_2d.rows], values: []}}", "axes.pe.values: empty axis"),
    ("axes: {arrays.pe_2d.rows: [64, 2.5]}", "axes.arrays.pe_2d.rows.values[1]: wrong type: the path holds an integer"),
    ("axes: {arrays.pe_2d.rows: [64, big]}", "values[1]: wrong type: the path holds an integer, got 'big' (str)"),
    ("axes: {clock_hz: [1.0e9, fast]}", "axes.clock_hz.values[1]: wrong type: the path holds a number"),
    ("axes: {arrays.pe_2d.rows: [0]}", "value 0 is refused: arrays.pe_2d.rows: expected a positive integer"),
    ("axes: {pe: {values: [1]}}", "axes.pe: a named axis needs paths"),
    ("axes: {pe: {paths: [clock_hz], min: 1.0e9, max: 2.0e9}}", "grid sampling needs count"),
    ("axes: {pe: {paths: [clock_hz], min: 2.0e9, max: 1.0e9, count: 2}}", "min (2000000000.0) must be below max"),
    ("axes: {pe: {paths: [arrays.pe_2d.rows], min: 1, max: 9, count: 2, integer: false}}", "must be integer"),
    ("axes: {pe: {paths: [clock_hz], values: [1.0e9], step: 2}}", "axes.pe.step: unknown key; allowed keys: paths"),
    ("sampling: {method: sobol}", "sampling.method: got 'sobol' (str); allowed: grid, random, lhs"),
    ("sampling: {method: lhs}", "sampling.points: missing; lhs sampling needs a positive integer"),
    ("mapping: {strategy: magic}", "mapping.strategy: unknown strategy 'magic' (str); registered: fixed-binding"),
    ("mapping: {strategy: fixed-binding, config: flat}", "mapping.config: got 'flat'; allowed: binding, arch, cascade"),
    ("workload: {cascades: [attention-3pass], models: [BERT], seq_lens: [1K]}",
     "workload.cascades[0]: unknown or unsupported cascade 'attention-3pass' (str) by strategy fixed-binding"),
    ("workload: {cascades: [fusemax], models: [GPT9], seq_lens: [1K]}", "workload.models[0]: unknown or unsupported"),
    ("workload: {cascades: [fusemax], models: [BERT], seq_lens: []}", "workload.seq_lens: empty"),
    ("workload: {cascades: [[], []], models: [BERT], seq_lens: [1K]}",  # lists listed twice: named, not a TypeError
     "workload.cascades[1]: unknown or unsupported cascade [] (list)"),
    ("workload: {cascades: [fusemax], models: [BERT], seq_lens: [1Q]}", "workload.seq_lens[0]: expected a positive"),
    ("metrics: [latency_s, speed]", "metrics[1]: unknown metric 'speed'; known: latency_s, energy_pj"),
    ("derived: {levels.dram.area_um2: 2 * nope}", "derived.levels.dram.area_um2: expression '2 * nope': unknown name"),
    ("derived: {levels.dram.area_um2: __import__('os')}", "unknown function '__import__'"),
    ("arch: nowhere-cloud", "arch: unknown architecture 'nowhere-cloud'; registered:"),
    ("colour: blue", "colour: unknown key; allowed keys: name, description, arch"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "fragment"), BAD_SPECS)
def test_malformed_specs_name_file_key_and_allowed_values(tmp_path, change, fragment):
    base = {
        "name": "name: bad",
        "arch": "arch: fusemax-cloud",
        "workload": "workload: {cascades: [fusemax], models: [BERT], seq_lens: [1K]}",
        "axes": "axes: {arrays.pe_2d.rows: [64]}",
    }
    key = change.split(":")[0]
    lines = [line for k, line in base.items() if k != key] + [change]
    path = write_spec(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(SpecError) as err:
        read_sweep_file(path)
    message = str(err.value)
    assert fragment in message
    assert f"{path}:" in message  # the file, with the line of the key where known


def test_spec_errors_carry_lines_and_are_all_collected(tmp_path):
    path = write_spec(
        tmp_path,
        """\
        name: bad
        arch: fusemax-cloud
        workload: {cascades: [fusemax], models: [BERT], seq_lens: [1K]}
        axes:
          arrays.pe_2d.rows: []
          clock_hz: [fast]
        """,
    )
    with pytest.raises(SpecError) as err:
        read_sweep_file(path)
    message = str(err.value)
    assert "2 problems in the sweep spec" in message
    assert f"{path}:5: axes.arrays.pe_2d.rows.values: empty axis" in message
    assert f"{path}:6: axes.clock_hz.values[0]: wrong type" in message
    duplicate = write_spec(tmp_path, "name: a\nname: b\n", "dup.yaml")
    with pytest.raises(SpecError, match=r"dup.yaml:2:1: invalid YAML: duplicate key 'name' \(first given on line 1\)"):
        read_sweep_file(duplicate)


# ---------------------------------------------------------------------------------------------------- the store


def test_resume_force_and_failures_recorded(tmp_path):
    spec = read_sweep_file(small_spec(tmp_path, 24))
    store = tmp_path / "s.sqlite"
    first = run_sweep(spec, store)
    assert first.computed == first.unique == 24 and first.skipped == 0
    assert 0 < first.errors < 24  # pe_dim 96 fails; the sweep goes on
    errors = count(store, "SELECT count(*) FROM points WHERE status = 'error' AND error LIKE 'ShapeError:%M0=96%'")
    assert errors == first.errors == count(store, "SELECT count(*) FROM points WHERE pe_dim = 96")
    again = run_sweep(spec, store)
    assert again.computed == 0 and again.skipped == 24
    retry = run_sweep(spec, store, retry_errors=True)
    assert retry.computed == first.errors
    before = stored(store)
    forced = run_sweep(spec, store, force=True)
    assert forced.computed == 24 and stored(store) == before
    assert count(store, "SELECT count(*) FROM points") == 24
    assert count(store, "SELECT count(*) FROM results WHERE sweep = 'small'") == 24


def test_foreign_and_corrupt_files_are_refused_untouched(tmp_path):
    spec = read_sweep_file(small_spec(tmp_path, 2))
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER, amount REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    text = tmp_path / "notes.sqlite"
    text.write_text("my notes, not a database\n" * 10)
    corrupt = tmp_path / "corrupt.sqlite"
    run_sweep(spec, corrupt)
    data = bytearray(corrupt.read_bytes())
    data[100:4096] = os.urandom(3996)  # keep the header, wreck the schema page
    corrupt.write_bytes(bytes(data))
    other = tmp_path / "v9.sqlite"
    run_sweep(spec, other)
    with sqlite3.connect(other) as conn:
        conn.execute("PRAGMA user_version = 9")
    cases = [
        (foreign, "an SQLite database that is not an attnscope store (application_id 0x0, tables: invoices)"),
        (text, "not an attnscope store (not an SQLite database"),
        (corrupt, "refusing to"),
        (other, "an attnscope store of schema version 9; this attnscope reads version 1"),
    ]
    for path, fragment in cases:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(StoreError) as err:
            run_sweep(spec, path)
        assert fragment in str(err.value) and str(path) in str(err.value)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path.name} was modified"
        assert main(["query", str(path), "SELECT 1"]) == 2
    with pytest.raises(StoreError, match="no such store; run `attnscope sweep SPEC --store"):
        Store.open(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert run_sweep(spec, empty).computed == 2  # an empty file is a new store


def test_query_is_read_only_and_exports(tmp_path, capsys):
    spec = read_sweep_file(small_spec(tmp_path, 6))
    store = tmp_path / "s.sqlite"
    run_sweep(spec, store)
    assert main(["query", str(store), "DELETE FROM points"]) == 2
    assert "the store is opened read-only" in capsys.readouterr().err
    assert count(store, "SELECT count(*) FROM points") == 6
    sql = "SELECT key, pe_dim, latency_s FROM points WHERE status = 'ok' ORDER BY key"
    assert main(["query", str(store), sql, "--csv", str(tmp_path / "out.csv")]) == 0
    with (tmp_path / "out.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"key", "pe_dim", "latency_s"}
    pq = pytest.importorskip("pyarrow.parquet")
    assert main(["query", str(store), sql, "--parquet", str(tmp_path / "out.parquet")]) == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["key", "pe_dim", "latency_s"] and table.num_rows == len(rows)


# ---------------------------------------------------------------------------------------------------- execution


# Results must not depend on the hash seed (test_values_independent_of_hash_seed); the sweeps below run with
# the seed Dask's nanny gives its workers, 6640, as a deployment would.
PINNED = {**os.environ, "PYTHONHASHSEED": "6640"}


def cli_sweep(spec: Path, store: Path, *flags: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "attnscope.cli", "sweep", str(spec), "--store", str(store), "--quiet", *flags]
    out = subprocess.run(argv, cwd=ROOT, env=PINNED, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def rows(store: Path) -> int:
    """Points stored so far (0 before the store exists)."""
    if not store.exists() or not count(store, "SELECT count(*) FROM sqlite_master WHERE name = 'points'"):
        return 0
    return count(store, "SELECT count(*) FROM points")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_at_a_random_moment_loses_and_duplicates_nothing(tmp_path):
    spec_path = small_spec(tmp_path, 1200)  # enough that a kill lands mid-sweep on a fast machine
    reference = tmp_path / "reference.sqlite"
    cli_sweep(spec_path, reference, "--workers", "1")  # uninterrupted
    store = tmp_path / "killed.sqlite"
    argv = [sys.executable, "-m", "attnscope.cli", "sweep", str(spec_path), "--store", str(store)]
    argv += ["--workers", "2", "--chunk-size", "4", "--quiet"]
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    kills = []
    for attempt in range(2):
        before = rows(store)
        proc = subprocess.Popen(argv, cwd=ROOT, env=PINNED, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:  # until this run is storing points
            if rows(store) > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))  # then a random moment
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(rows(store))
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = _group_alive(proc.pid)
        if orphans:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not orphans, f"workers outlived their killed coordinator (seed {seed}, attempt {attempt})"
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    unique = len({p.key for p in sweep_points(read_sweep_file(spec_path))})
    assert 0 < kills[0] <= kills[1] < unique, f"the kills should land mid-sweep: rows after each {kills}"
    rerun = cli_sweep(spec_path, store, "--workers", "2")
    assert f"{kills[-1]} already stored, {unique - kills[-1]} computed" in rerun.stdout
    assert count(store, "SELECT count(*) FROM points") == unique, f"seed {seed}"
    assert count(store, "SELECT count(DISTINCT key) FROM points") == unique
    assert stored(store) == stored(reference), f"values differ from the uninterrupted run (seed {seed})"


def test_dask_local_cluster_matches_local_pool(tmp_path):
    pytest.importorskip("distributed")
    spec_path = small_spec(tmp_path, 16)
    cli_sweep(spec_path, tmp_path / "local.sqlite", "--workers", "2")
    out = cli_sweep(spec_path, tmp_path / "dask.sqlite", "--dask-local", "2")
    assert "dask LocalCluster, 2 workers" in out.stdout
    assert stored(tmp_path / "dask.sqlite") == stored(tmp_path / "local.sqlite")


def test_values_independent_of_hash_seed():
    code = (
        "from mappers.sweep.strategies import get_strategy; from simulator.specs import load_arch, with_overrides; "
        "a = with_overrides(load_arch('fusemax-cloud'), {'arrays.pe_2d.rows': 32, 'arrays.pe_2d.cols': 32, "
        "'arrays.pe_1d.pes': 32, 'levels.global_buffer.capacity_words': 47127}); "
        "s = dict(B=64, E=64, F=64, H=12, M=1024, P=1024); "
        "print(repr(get_strategy('fixed-binding').evaluate(a, 'fusemax', s, {'config': 'binding'}).energy_pj))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("0", "1")
    }  # fmt: skip
    assert len(outs) == 1, outs


def test_evaluate_chunk_records_errors_and_continues():
    spec = read_sweep_file(EXAMPLE)
    context = SweepContext(spec.arch, "fixed-binding", (("config", "binding"),), ("latency_s", "util_pe_2d"))
    sizes = (("B", 64), ("E", 64), ("F", 64), ("H", 12), ("M", 4096), ("P", 4096))
    tasks = [
        Task("bad", (("arrays.pe_2d.cols", 96),), "fusemax", sizes),
        Task("good", (("arrays.pe_2d.cols", 128),), "fusemax", sizes),
    ]
    bad, good = evaluate_chunk(context, tasks)
    assert bad.values is None and bad.error.startswith("ShapeError: fusemax: M=4096 is not divisible by M0=96")
    assert good.error is None and good.values[0] > 0 and 0 < good.values[1] <= 1


# ---------------------------------------------------------------------------------------------------- Pareto


def brute_force_front(values: np.ndarray) -> list[int]:
    n = len(values)
    return [
        i
        for i in range(n)
        if not any(np.all(values[j] <= values[i]) and np.any(values[j] < values[i]) for j in range(n) if j != i)
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda k: st.tuples(
            st.lists(st.lists(st.sampled_from([0.0, 1.0, 2.5, 3.0, -1.0, 1e9]), min_size=k, max_size=k), max_size=40),
            st.lists(st.booleans(), min_size=k, max_size=k),
        )
    )
)
def test_pareto_front_is_exactly_the_non_dominated_points(case):
    rows, maximize = case
    k = len(maximize)
    values = np.array(rows, dtype=float).reshape(len(rows), k)
    expected = brute_force_front(values * np.where(maximize, -1.0, 1.0))
    assert pareto_front(values, maximize).tolist() == expected


def test_pareto_cli_front_csv_and_labelled_plot(tmp_path, capsys, monkeypatch):
    spec = read_sweep_file(EXAMPLE)
    store = tmp_path / "pe.sqlite"
    run_sweep(spec, store)
    labels = {}
    import matplotlib.axes

    for name in ("set_xlabel", "set_ylabel"):
        original = getattr(matplotlib.axes.Axes, name)

        def spy(self, text, *a, _name=name, _original=original, **kw):
            labels[_name] = text
            return _original(self, text, *a, **kw)

        monkeypatch.setattr(matplotlib.axes.Axes, name, spy)
    argv = ["pareto", str(store), "--x", "area_mm2", "--y", "latency_s", "--color", "energy_j"]
    argv += ["--plot", str(tmp_path / "front.png"), "--csv", str(tmp_path / "front.csv"), "--json"]
    assert main(argv) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert labels == {"set_xlabel": "area (mm²)", "set_ylabel": "latency (s)"}
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT key, area_mm2, latency_s FROM points WHERE status='ok' AND feasible=1").fetchall()
    expected = {rows[i][0] for i in brute_force_front(np.array([r[1:] for r in rows]))}
    assert {r["key"] for r in out["front"]} == expected and out["candidates"] == len(rows)
    with (tmp_path / "front.csv").open() as f:
        assert {r["key"] for r in csv.DictReader(f)} == expected
    shipped = EXAMPLE.with_name("fusemax-pe-buffer-front.csv")
    with shipped.open() as f:
        assert {r["key"] for r in csv.DictReader(f)} == expected, "re-render the example: see its header comment"
    assert main(["pareto", str(store), "--x", "area", "--y", "latency_s"]) == 2
    assert "no column 'area'; columns:" in capsys.readouterr().err


def test_axis_labels_carry_units():
    assert axis_label("energy_j") == "energy (J)"
    assert axis_label("util_pe_2d") == "pe_2d utilization"
    assert axis_label("buffer_words") == "buffer (words)"
    assert axis_label("levels_dram_bandwidth_bytes_per_s") == "levels dram bandwidth (B/s)"


def test_sweep_package_imports_no_optional_dependencies():
    code = (
        "import sys, mappers.sweep, attnscope.cli; attnscope.cli.build_parser(); "
        "optional = ('dask', 'distributed', 'pyarrow', 'matplotlib', 'tqdm', 'torch'); "
        "print(sorted(m for m in optional if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_docstring_examples(monkeypatch):
    import doctest

    import mappers.sweep
    import mappers.sweep.pareto
    import mappers.sweep.points
    import mappers.sweep.spec

    monkeypatch.chdir(ROOT)  # the examples read examples/sweeps/
    for module in (mappers.sweep, mappers.sweep.spec, mappers.sweep.points, mappers.sweep.pareto):
        assert doctest.testmod(module).failed == 0, module.__name__
