"""Report rows built from pipeline designs, for the report writers of the lower layers.

:func:`attention_row` maps a user's attention cascade onto a target through :func:`attnscope.api.evaluate_case`
and turns its design into the :class:`~simulator.roofline.RooflineRow` of a model layer's attention kernel, so
``roofline --workload`` costs any cascade with the same mappers as ``map`` and ``compare-attention``.
"""

from __future__ import annotations

from collections.abc import Callable

from einsum.errors import AttnscopeError
from simulator.roofline import RooflineRow
from simulator.targets import load_target
from workloads.cases import case_for_model, load_workload, parse_params
from workloads.llm import LayerKernel


def attention_row(
    workload: str, target: str, *, dtype: str | None, param: str, phase: str
) -> tuple[Callable[[LayerKernel], RooflineRow], str]:
    """(row maker, report note) for a model layer whose attention is ``workload`` (module docstring)."""
    from attnscope.api import evaluate_case

    w = load_workload(workload)
    params = parse_params(param)
    tgt = load_target(target)
    if dtype is not None and tgt.kind == "device":
        tgt = load_target(tgt, dtype=dtype)
    declared_q = w.cascade.params.get("P")
    if declared_q is not None and phase == "prefill":
        raise AttnscopeError(
            f"{w.name} is a decode step (it declares `param P = {declared_q}`): use --phase decode, or a prefill "
            "cascade for --phase prefill"
        )

    def row(k: LayerKernel) -> RooflineRow:
        s = k.shape
        case = case_for_model(w, batch=s["batch"], heads=s["heads"], kv_heads=s["kv_heads"], head_dim=s["head_dim"],
                              seq=s["seq_kv"], seq_q=s["seq_q"], params=params)  # fmt: skip
        d = evaluate_case(case, tgt)
        if d.target_kind == "device":
            p = d.detail
            flops, exp_ops, bound_s = p.flops, p.exp_ops, p.roofline_s
        else:
            cost = d.detail
            flops = 2.0 * sum(e.ops.get("mac", 0) for e in cost.einsums.values()) + sum(
                n for e in cost.einsums.values() for kind, n in e.ops.items() if kind != "mac"
            )
            exp_ops = float(sum(e.ops.get("exp", 0) for e in cost.einsums.values()))
            bound_s = max(cost.compute_bound_s, cost.memory_s)
        return RooflineRow(k.name, tuple(e.name for e in case.cascade.einsums), flops, d.dram_bytes, exp_ops,
                           min(bound_s, d.latency_s), d.latency_s, d.bound,
                           {"workload": d.workload, "mapper": d.mapper, "description": d.description})  # fmt: skip

    note = (
        f"Attention is the cascade {w.name} ({w.source}), mapped onto the target by mapper "
        "choice (attnscope map); its row's time is the design's latency."
    )
    return row, note
