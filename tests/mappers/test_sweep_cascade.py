"""The ``cascade`` sweep strategy: any cascade (registered or a file) on arrays and devices through the pipeline;
a file's path is read relative to the spec, and its content is part of the point keys."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from attnscope.api import evaluate_case
from einsum.errors import SpecError
from mappers.sweep import read_sweep_file, run_sweep
from simulator.targets import load_target
from workloads.cases import case_for_model
from workloads.models import get_model

WINDOW = """\
# a causal window written by hand
input Q[B,H,E,P], K[B,H,E,M], V[B,H,F,M]
param W = 128
S[b,h,m,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m]
T[b,h,m,p] = where(m <= p + M - P, where(m > p + M - P - W, S[b,h,m,p], -inf), -inf)
AV[b,h,f,p] = sum[m] exp(T[b,h,m,p]) * V[b,h,f,m]
"""

SPEC = """\
name: mine
workload: {models: [llama3-8b], seq_lens: [512, 1K]}
mapping: {strategy: cascade, batch: 1, params: "window=64"}
axes:
  device: [flat-edge, orin-agx]
  workload: [sliding-window, cascades/window.einsum]
"""


def rows(store: Path) -> list[dict]:
    with sqlite3.connect(store) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY key")]


def test_a_file_cascade_is_swept_on_arrays_and_devices_and_its_edits_recompute_its_points(tmp_path):
    (tmp_path / "cascades").mkdir()
    cascade = tmp_path / "cascades" / "window.einsum"
    cascade.write_text(WINDOW)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(textwrap.dedent(SPEC))
    store = tmp_path / "s.sqlite"
    first = run_sweep(read_sweep_file(spec_path), store)
    assert first.computed == 8 and first.errors == 0
    shape = get_model("llama3-8b")
    for r in rows(store):  # the same design as the pipeline gives for that case and target
        workload = str(tmp_path / r["workload"]) if r["workload"].endswith(".einsum") else r["workload"]
        case = case_for_model(workload, batch=1, heads=shape.heads, kv_heads=shape.kv_heads,
                              head_dim=shape.head_dim, seq=r["seq_len"], params={"window": 64})  # fmt: skip
        d = evaluate_case(case, load_target(r["device"]))
        assert r["latency_s"] == d.latency_s and r["mapper"] == d.mapper and r["bound"] == d.bound
        assert (r["energy_j"] is None) == (d.target_kind == "device")
    assert run_sweep(read_sweep_file(spec_path), store).computed == 0  # resumes: nothing left
    cascade.write_text(WINDOW.replace("a causal window", "a causal sliding window"))
    again = run_sweep(read_sweep_file(spec_path), store)
    assert again.computed == 4  # the file's points only (2 targets x 2 lengths)


@pytest.mark.parametrize(
    ("axis", "fragment"),
    [
        ("[nonesuch]", "unknown cascade 'nonesuch'"),
        ("[missing.einsum]", "cannot read cascade file"),
        ("[nonesuch.txt]", "unknown cascade 'nonesuch.txt'"),
    ],
)
def test_a_bad_workload_value_is_a_spec_error_naming_the_axis(tmp_path, axis, fragment):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(textwrap.dedent(SPEC).replace("[sliding-window, cascades/window.einsum]", axis))
    with pytest.raises(SpecError) as info:
        read_sweep_file(spec_path)
    assert fragment in str(info.value) and "axes.workload" in str(info.value)
