"""A sweep's fast path (cascade plans, shared mappings, with_overrides of numbers) gives the values a fresh
evaluation of each point gives, also when a pool worker unpickles the context for every chunk."""

from __future__ import annotations

import pickle
from pathlib import Path

from mappers import fusemax
from mappers.sweep.metrics import resolve_metric
from mappers.sweep.points import sweep_points
from mappers.sweep.runner import SweepContext, _task, evaluate_chunk
from mappers.sweep.spec import read_sweep_file
from mappers.sweep.strategies import get_strategy
from simulator import cost, specs

SPEC = """
name: fast-path-check
arch: fusemax-cloud
workload: {cascades: [fusemax], models: [BERT], seq_lens: [1K]}
mapping: {strategy: fixed-binding}
axes:
  config: {values: [binding, arch, cascade]}
  pe_dim: {paths: [arrays.pe_2d.rows, arrays.pe_2d.cols, arrays.pe_1d.pes], values: [16, 64, 256]}
  buffer_words: {paths: [levels.global_buffer.capacity_words], min: 4096, max: 33554432, scale: log}
  levels.dram.bandwidth_bytes_per_s: {min: 1.0e11, max: 2.0e12, scale: log}
  levels.reg_file_1d.capacity_words: {values: [64, 256, 1048576]}
  clock_hz: {paths: [clock_hz], min: 5.0e8, max: 1.5e9}
sampling: {method: lhs, points: 60, seed: 3}
metrics: [latency_s, energy_j, dram_bytes, area_mm2]
"""


def test_fast_path_values_equal_a_fresh_evaluation_of_each_point(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(SPEC)
    spec = read_sweep_file(path)
    ctx = SweepContext(spec.arch, spec.mapping.strategy, spec.mapping.params, tuple(spec.metric_columns()))
    tasks = [_task(p) for p in sweep_points(spec)]
    fast = []
    cost._PLAN_CACHE.clear()  # (plans of earlier tests)
    for i in range(0, len(tasks), 8):  # every chunk gets its own copy of the context, as a pool worker does
        fast += evaluate_chunk(pickle.loads(pickle.dumps(ctx)), tasks[i : i + 8])
    assert len(cost._PLAN_CACHE) < len(tasks)  # plans were shared between points and chunks
    strategy = get_strategy(ctx.strategy)
    metrics = [resolve_metric(m, ctx.arch) for m in ctx.metrics]
    infeasible = 0
    for task, outcome in zip(tasks, fast, strict=True):
        cost._PLAN_CACHE.clear()
        fusemax._TRIED.clear()
        arch = specs._rebuilt(ctx.arch, dict(task.overrides))  # the full path: the spec read and checked again
        fresh = strategy.evaluate(arch, task.cascade, dict(task.sizes), dict(task.params or ctx.params))
        assert outcome.error is None
        assert outcome.values == tuple(float(m.value(arch, fresh)) for m in metrics), task.overrides
        infeasible += not fresh.feasible
    assert 0 < infeasible < len(tasks)  # both kinds of point were compared
