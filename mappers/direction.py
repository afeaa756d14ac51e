"""A case costed in a direction: the forward pass, the backward pass, or both (a training step's attention).

:func:`map_direction` is :func:`mappers.catalog.map_case` with a direction (``fwd``, ``bwd``, ``fwd+bwd``;
:data:`simulator.kernels.backward.DIRECTIONS`); ``compare-attention --direction`` and the sweeps' ``direction``
key run through it. A named ``mapper`` (and its options, a given ``mapping``) maps the forward pass; the
backward cascade is mapped by the first mapper that applies to it.

* **Spatial arrays.** The backward pass is a cascade like any other: :func:`backward_case` derives it from the
  case's forward cascade (:mod:`einsum.backward`: FlashAttention-2's recomputation form where the cascade has a
  softmax the derivation recognises, reverse mode over the Einsums recomputing the per-key values otherwise:
  ``einsum.backward.recompute_backward``) at the case's sizes, and the
  pipeline maps it (case -> target -> mapper -> design) exactly as it maps a forward cascade. ``fwd+bwd`` is
  the two designs one after the other (:func:`combine_designs`).
* **Devices.** The backward kernels of :mod:`simulator.kernels.backward` (FlashAttention-2/-3 backward, the
  unfused and math chains) cost the dense, causal and sliding-window attention shapes
  (:func:`simulator.gpu.sdpa_shape` recognises a case as one: its cascade is the one such a shape runs);
  ``predict --op sdpa --direction`` gives the prediction. A case that is not such a shape has no backward
  kernel on a device, and the error says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from einsum.backward import BackwardError, derive
from einsum.errors import AttnscopeError, SpecError
from mappers.base import Design
from simulator.kernels.backward import DIRECTIONS
from simulator.targets import Target
from workloads.cases import Case, free_parts

__all__ = ["DIRECTIONS", "DirectionDetail", "backward_case", "check_direction", "combine_designs", "map_direction"]


def check_direction(direction: Any, where: str = "direction") -> str:
    """The direction, or an error naming ``where`` (a flag or a key) and the valid values."""
    if direction not in DIRECTIONS:
        raise AttnscopeError(f"{where}: unknown direction {direction!r}; give one of {', '.join(DIRECTIONS)}")
    return direction


def backward_case(case: Case) -> Case:
    """The backward pass of ``case`` as a case: its derived backward cascade (module docstring) at the case's
    sizes (a partition the derivation adds is sized by :func:`workloads.cases.free_parts`), its mask densities
    kept. The form is FlashAttention-2's (recompute P per tile from the saved row statistics) where the
    cascade has a softmax, else reverse mode with the per-key values recomputed (``recompute``: the scores are
    not saved, a keys x queries tensor per head), else plain reverse mode."""
    for form in ("flash", "recompute"):
        try:
            back = derive(case.cascade, form)
            break
        except BackwardError:
            continue
    else:
        back = derive(case.cascade, "autodiff")
    given = {r: s for r, s in case.sizes.items() if r in back.cascade.ranks or r in back.cascade.params}
    sizes = back.cascade.rank_sizes(free_parts(back.cascade, given))
    density = {name: d for name, d in case.density.items() if name in back.cascade.inputs}
    return Case(f"{case.name}-bwd", back.cascade, sizes, density, case.source,
                f"backward of {case.name} ({back.form})")  # fmt: skip


@dataclass(frozen=True)
class DirectionDetail:
    """The two designs of a ``fwd+bwd`` design on an array (its ``detail``)."""

    fwd: Design
    bwd: Design

    @property
    def spill_bytes_by_level(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in (self.fwd, self.bwd):
            for level, b in (getattr(d.detail, "spill_bytes_by_level", None) or {}).items():
                out[level] = out.get(level, 0.0) + b
        return out

    @property
    def infeasible(self) -> tuple[str, ...]:
        return tuple(
            f"{name}: {why}"
            for name, d in (("fwd", self.fwd), ("bwd", self.bwd))
            for why in (getattr(d.detail, "infeasible", None) or ())
        )


def combine_designs(fwd: Design, bwd: Design) -> Design:
    """A training step on an array: the forward design, then the backward one. Latency, energy, DRAM traffic
    and spill add; the footprint is the larger; the bound is the longer pass's."""
    longer = fwd if fwd.latency_s >= bwd.latency_s else bwd
    latency = fwd.latency_s + bwd.latency_s
    energy = None if fwd.energy_j is None or bwd.energy_j is None else fwd.energy_j + bwd.energy_j
    busy = fwd.utilization * fwd.latency_s + bwd.utilization * bwd.latency_s
    return Design(
        workload=fwd.workload,
        shape=dict(fwd.shape),
        target=fwd.target,
        target_kind=fwd.target_kind,
        mapper=f"{fwd.mapper}+{bwd.mapper}",
        latency_s=latency,
        bound=longer.bound,
        dram_bytes=fwd.dram_bytes + bwd.dram_bytes,
        energy_j=energy,
        area_mm2=fwd.area_mm2,
        utilization=busy / latency if latency > 0 else 0.0,
        feasible=fwd.feasible and bwd.feasible,
        onchip_bytes=max(fwd.onchip_bytes, bwd.onchip_bytes),
        spill_bytes=fwd.spill_bytes + bwd.spill_bytes,
        mapping={"fwd": fwd.mapping, "bwd": bwd.mapping},
        description=f"fwd: {fwd.description}; bwd: {bwd.description}",
        notes=(*fwd.notes, *bwd.notes),
        detail=DirectionDetail(fwd, bwd),
    )


def map_direction(
    case: Case, target: Target, direction: str = "fwd", mapper: str | None = None, **options: Any
) -> Design:
    """Map ``case`` onto ``target`` in ``direction`` (module docstring). ``mapper`` and ``options`` are
    :func:`mappers.catalog.map_case`'s (``kernel`` on devices)."""
    from mappers.catalog import device_design, map_case

    check_direction(direction)
    if direction == "fwd":
        return map_case(case, target, mapper, **options)
    if target.kind == "device":
        from simulator.gpu import predict, sdpa_shape

        s = sdpa_shape(case)
        if s is None:
            raise SpecError(
                f"{case.name}: no backward kernel on a device for this cascade: the GPU backward kernels "
                "(FlashAttention-2/-3, unfused, math) cost the dense, causal and sliding-window attention shapes "
                "(attention-1pass, attention-1pass-causal, sliding-window, gqa); its derived backward cascade "
                "maps onto a spatial array (give an arch target)"
            )
        kernel = options.get("kernel")
        p = predict(target.spec, "sdpa", dtype=target.dtype, direction=direction, **s,
                    **({"kernel": kernel} if kernel else {}))  # fmt: skip
        design = device_design(case, target, p)
        if direction == "fwd+bwd":  # the footprint of the larger pass (each part's tiles, as device_design reads them)
            onchip = max(device_design(case, target, part).onchip_bytes for part in p.parts)
            design = replace(design, onchip_bytes=onchip)
        return design
    bcase = backward_case(case)
    back = map_case(bcase, target)  # the first mapper that applies to the backward cascade
    if direction == "bwd":
        return back
    return combine_designs(map_case(case, target, mapper, **options), back)
