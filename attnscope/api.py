"""The Python API: the same operations as the CLI, returning plain data.

The flow every costing command follows is :func:`evaluate`, one stage per line::

    case = make_case(workload, shape, params)      # cascade + sizes + declared parameters, validated
    target = load_target(target)                   # spatial array or device, validated
    mapper = choose_mapper(case, target, mapper)   # the registry: the named one, or the first that applies
    design = mapper.run(case, target, ...)         # mapping + cost: one Design for both worlds

>>> info = describe_cascade("fusemax", {"M": 1024})
>>> info["passes"], len(info["einsums"])
(1, 12)
>>> d = evaluate("attention-1pass-causal", "h100-sxm", shape={"H": 32, "M": 4096, "E": 128, "F": 128})
>>> d.target_kind, d.energy_j is None, 0 < d.utilization <= 1
('device', True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import workloads
from einsum.analysis import key_ranks, op_counts, pass_analysis, tensor_sizes, total_ops
from einsum.backward import derive
from einsum.errors import ShapeError
from einsum.interpreter import random_inputs, run
from mappers.base import Design
from simulator.targets import Target, load_target
from workloads.cases import Case, Workload, make_case
from workloads.cases import load_workload as load_cascade

LoadedCascade = Workload

__all__ = ["Design", "LoadedCascade", "describe_cascade", "evaluate", "evaluate_case", "list_cascades",
           "load_cascade", "run_cascade"]  # fmt: skip


def evaluate(
    workload: str | Workload | Case,
    target: str | Target,
    *,
    shape: Mapping[str, int] | None = None,
    params: Mapping[str, float] | None = None,
    mapper: str | None = None,
    dtype: str | None = None,
    **options: Any,
) -> Design:
    """Cost a workload on a target: case -> target -> mapper -> design (module docstring).

    ``options`` go to the mapper: ``kernel`` (devices: ``fa2``/``fa3``), ``mapping`` (mapper ``mapping``:
    the mapping as plain data).
    """
    case = workload if isinstance(workload, Case) else make_case(workload, shape, params=params)
    return evaluate_case(case, load_target(target, dtype=dtype), mapper=mapper, **options)


def evaluate_case(case: Case, target: Target, *, mapper: str | None = None, **options: Any) -> Design:
    """The last two stages of :func:`evaluate` for a case and a target already built (loops reuse them)."""
    from mappers.catalog import map_case

    return map_case(case, target, mapper, **options)


def list_cascades(shape: Mapping[str, int] | None = None) -> list[dict]:
    """One row per registered cascade: passes over M, Einsum count and total ops at the (default) shape."""
    rows = []
    for name in sorted(workloads.CASCADES):
        loaded = load_cascade(name)
        sizes = loaded.sizes(shape)
        rows.append(
            {
                "name": name,
                "passes": pass_analysis(loaded.cascade, "M").passes,
                "einsums": len(loaded.cascade.einsums),
                "ops": sum(total_ops(loaded.cascade, sizes).values()),
                "shape": sizes,
                "summary": loaded.summary,
            }
        )
    return rows


def describe_cascade(
    name_or_path: str,
    shape: Mapping[str, int] | None = None,
    rank: str | None = None,
    direction: str = "fwd",
    form: str = "autodiff",
) -> dict:
    """Everything ``cascade show`` prints: the Einsums as text and the analyses at one shape.

    The pass analysis walks ``rank`` (default: the cascade's key rank, ``einsum.analysis.key_ranks``; a cascade
    without one, a plain matmul, has no pass analysis and ``pass_note`` says why). ``direction="bwd"``
    describes the backward cascade derived from it (``einsum.backward``: ``form`` ``autodiff``, reverse mode
    over the Einsums, or ``flash``, FlashAttention-2's recomputation from the saved row statistics), its
    passes walking the forward cascade's key rank.
    """
    loaded = load_cascade(name_or_path)
    c = loaded.cascade
    sizes = loaded.sizes(shape)
    note = ""
    summary = loaded.summary
    backward = None
    if direction not in ("fwd", "bwd"):
        raise ShapeError(f"direction {direction!r}: give fwd or bwd")
    if direction == "bwd":
        backward = derive(c, form)
        if rank is None:  # the backward walks the forward's key rank
            rank = key_ranks(c)[0] if c.recurrences or _has_key_rank(c) else None
        c = backward.cascade
        sizes = {r: v for r, v in sizes.items() if r in c.ranks}
        summary = f"backward pass ({backward.form}) of {loaded.cascade.name}: {loaded.summary}"
    if rank is not None and rank not in c.ranks:
        raise ShapeError(f"{c.name}: no rank {rank!r} to walk; its ranks are {', '.join(c.ranks)}")
    if rank is None:
        try:
            rank = key_ranks(c)[0]
        except ShapeError as exc:
            note = f"no pass analysis: {exc.args[0].split(': ', 1)[-1]}; give --rank R to walk one"
    analysis = pass_analysis(c, rank) if rank is not None else None
    extra = {}
    if backward is not None:
        extra = {
            "seeds": dict(backward.seeds),
            "gradients": {x: {"tensor": n, "ranks": list(r)} for x, (n, r) in backward.gradients.items()},
            "saved": dict(backward.saved),
        }
    return {
        "name": c.name,
        "direction": direction,
        **extra,
        "summary": summary,
        "source": loaded.source,
        "passes": analysis.passes if analysis else None,
        "pass_rank": rank if analysis else None,
        "pass_note": note,
        "einsum_passes": analysis.einsum_pass if analysis else {},
        "carried_between_passes": list(analysis.carried) if analysis else [],
        "einsums": [e.text for e in c.einsums],
        "partitions": {k: list(v) for k, v in c.partitions.items()},
        "inputs": {n: list(c.tensors[n].ranks) for n in c.inputs},
        "outputs": {n: list(c.tensors[n].ranks) for n in c.outputs},
        "shape": sizes,
        "ops": op_counts(c, sizes),
        "total_ops": total_ops(c, sizes),
        "tensor_elements": tensor_sizes(c, sizes),
        "text": c.text(),
    }


def _has_key_rank(c) -> bool:
    try:
        key_ranks(c)
    except ShapeError:
        return False
    return True


def run_cascade(
    name_or_path: str,
    shape: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    direction: str = "fwd",
    form: str = "autodiff",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """Execute a cascade with the reference interpreter.

    Inputs not given are drawn from ``seed`` (standard normal). Returns (inputs used, outputs, sizes).
    ``direction="bwd"`` runs the forward pass and then its derived backward cascade (``einsum.backward``,
    ``form`` as for :func:`describe_cascade`): the inputs are the forward inputs and the gradients of the
    outputs (``dAV``; drawn like the others when not given), the outputs the gradients of the inputs
    (``dQ``, ...) in their inputs' shapes.
    """
    loaded = load_cascade(name_or_path)
    sizes = loaded.sizes(shape)
    given = dict(inputs or {})
    backward = derive(loaded.cascade, form) if direction == "bwd" else None
    seeds = {} if backward is None else {name: o for o, name in backward.seeds.items()}
    unknown = sorted(set(given) - set(loaded.cascade.inputs) - set(seeds))
    if unknown:
        raise ShapeError(
            f"{loaded.cascade.name}: unknown input array(s) {', '.join(unknown)}; "
            f"its inputs are {', '.join((*loaded.cascade.inputs, *seeds))}"
        )
    drawn = random_inputs(loaded.cascade, sizes, seed)
    used = {n: given.get(n, drawn[n]) for n in loaded.cascade.inputs}
    if backward is None:
        return used, run(loaded.cascade, sizes, used), sizes
    values = {**used, **run(backward.forward, sizes, used, keep_intermediates=True)}
    rng = np.random.default_rng(seed + 1)
    for name, output in seeds.items():
        drawn_seed = rng.standard_normal(values[output].shape)
        used[name] = np.asarray(given.get(name, drawn_seed))
        if used[name].shape != values[output].shape:
            raise ShapeError(
                f"{loaded.cascade.name}: {name} has shape {used[name].shape}; the gradient of {output} has "
                f"{values[output].shape}"
            )
    arrays = backward.inputs(values, {output: used[name] for name, output in seeds.items()})
    out = run(backward.cascade, {r: v for r, v in sizes.items() if r in backward.cascade.ranks}, arrays)
    grads = backward.as_input_shapes(out, sizes)
    return used, {backward.gradients[x][0]: g for x, g in grads.items()}, sizes
