"""The built-in mappers, registered in the order :func:`mappers.base.choose_mapper` tries them.

Spatial arrays (``arch``):

- ``fused``: one-pass cascades, the whole cascade in one tile loop (:func:`mappers.cascade_search.search_fused`:
  binding, schedule, query block, mask tile skipping), derived from the cascade alone.
- ``passes``: multi-pass cascades, the fusion space of :mod:`mappers.passes` derived from the cascade alone.
- ``mapping``: a mapping the user gives (YAML, ``--mapping``), costed as it is.
- ``flat``, ``fusemax-cascade``, ``fusemax-arch``, ``fusemax-binding``: the FuseMax study's hand-made
  designs (:mod:`mappers.flat`, :mod:`mappers.fusemax`). They name the Einsums of the study's cascades, so
  they apply only to a cascade with those Einsums (``attention-3pass``, ``fusemax``) and are never chosen
  automatically.

Devices (``device``):

- ``kernel``: the kernel the cascade becomes on a GPU, edge SoC or CPU
  (:func:`simulator.kernels.variants.predict_case`: fused tile program, decode/split-K, or the unfused
  chain, chosen from the cascade's structure), the kernel flavour optionally fixed (``fa2``, ``fa3``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from einsum.analysis import pass_analysis
from einsum.cascade import Cascade
from einsum.lower import LoweredCascade, lower
from mappers.base import Design, Mapper, MapperError, register_mapper
from simulator.targets import ArchTarget, DeviceTarget, Target

if TYPE_CHECKING:  # the spatial cost model (Numba) is imported where an array is mapped, not for devices
    from simulator.cost import CascadeCost
    from simulator.mapping import CascadeMapping
from workloads.cases import Case
from workloads.registry import get_cascade

# ---------------------------------------------------------------------------------------------- spatial arrays


def _lowered(case: Case) -> LoweredCascade:
    return _lower_cached(case.cascade, tuple(sorted(case.sizes.items())))


@lru_cache(maxsize=64)
def _lower_cached(cascade: Cascade, sizes: tuple) -> LoweredCascade:
    return lower(cascade, dict(sizes))


def arch_design(
    case: Case,
    target: ArchTarget,
    mapper: str,
    lowered: LoweredCascade,
    mapping: CascadeMapping,
    cost: CascadeCost,
    description: str = "",
    notes: tuple[str, ...] = (),
) -> Design:
    """A spatial design from a mapping and its :class:`~simulator.cost.CascadeCost`."""
    arch = target.spec
    compute = dict(cost.compute_s_by_array)
    busiest = max(compute, key=compute.__getitem__)
    bound = "memory" if cost.memory_s >= compute[busiest] else f"{busiest} ({arch.array(busiest).kind} array)"
    level = max(cost.level_s, key=cost.level_s.__getitem__, default=None)  # an on-chip level's bandwidth/ports
    if level is not None and cost.level_s[level] > max(cost.memory_s, compute[busiest]):
        bound = f"{level} bandwidth"
    words = lowered.tensor_words
    compulsory = sum(words[t] for t in (*lowered.inputs, *lowered.outputs)) * arch.word_bytes
    return Design(
        workload=case.name,
        shape=dict(case.sizes),
        target=arch.name,
        target_kind="arch",
        mapper=mapper,
        latency_s=cost.latency_s,
        bound=bound,
        dram_bytes=cost.dram_bytes,
        energy_j=cost.energy_pj * 1e-12,
        area_mm2=arch.area_um2() * 1e-6,
        utilization=max(cost.utilization.values(), default=0.0),
        feasible=cost.feasible,
        onchip_bytes=_onchip_words(cost, arch) * arch.word_bytes,
        spill_bytes=max(0.0, cost.dram_bytes - compulsory),
        mapping=_mapping_data(case, lowered, mapping),
        description=description or mapping.name,
        notes=tuple(dict.fromkeys((*mapping.notes, *notes, *cost.notes))),
        detail=cost,
    )


def _onchip_words(cost: CascadeCost, arch: Any) -> float:
    """The largest buffer occupancy; a spilling buffer holds its capacity (the excess is the spill)."""
    from simulator.cost import shared_buffer

    words = max(cost.buffer_occupancy_words, default=0.0)
    buffer = shared_buffer(arch)
    if cost.spill_bytes_by_level and buffer:
        words = min(words, float(arch.level(buffer).capacity_words))
    return words


def _mapping_data(case: Case, lowered: LoweredCascade, mapping: CascadeMapping) -> dict[str, Any]:
    """The mapping as YAML-ready data with the sizes it was costed at (``shape``: a fused design re-sizes the
    key tile to the array) and, where a mask let the design skip key tiles, the tiles each Einsum computes
    (``computed_tiles``: such a design is costed on a cut iteration space, which a mapping file cannot carry)."""
    from simulator.mapping import mapping_to_dict

    data: dict[str, Any] = {"shape": dict(lowered.sizes), **mapping_to_dict(mapping)}
    plain = _lower_cached(case.cascade, tuple(sorted(lowered.sizes.items())))
    cut = {e.name: dict(zip(e.vars, map(int, e.var_sizes), strict=True)) for e in lowered.einsums
           if tuple(e.var_sizes) != tuple(plain.einsum(e.name).var_sizes)}  # fmt: skip
    if cut:
        data["computed_tiles"] = cut
    return data


def _fused_density(case: Case) -> dict[str, float]:
    """Densities of the block masks the fused search skips tiles of: inputs indexed by the key rank's outer
    part and by no key inside a tile (``BM[b,h,m1,p1]``)."""
    parts = case.cascade.partitions.get("M", ())
    if len(parts) < 2:
        return {}
    inside = {"M", *parts[1:]}
    return {
        name: d
        for name, d in case.density.items()
        if parts[0] in case.cascade.tensors[name].ranks and not inside & set(case.cascade.tensors[name].ranks)
    }


_PLANNED: list = [None, None, None]
"""(case, target, plan) of the last fused plan :func:`_fused_applies` derived, so that the run that follows
reuses it (planning lowers and binds the whole cascade)."""


def _fused_applies(case: Case, target: Target) -> str | None:
    from mappers.cascade_search import FusedSearchError, plan_fused

    try:
        plan = plan_fused(case.cascade, case.sizes, target.spec)
    except FusedSearchError as exc:
        return str(exc)
    _PLANNED[:] = [case, target, plan]
    return None


def _fused_run(case: Case, target: ArchTarget, **_: Any) -> Design:
    from mappers.cascade_search import search_fused

    planned = _PLANNED[2] if _PLANNED[0] is case and _PLANNED[1] is target else None
    best, _ = search_fused(case.cascade, case.sizes, target.spec, density=_fused_density(case) or None, plan=planned)
    lowered = best.lowered or _lowered(case)
    return arch_design(case, target, "fused", lowered, best.mapping, best.cost, best.description, best.notes)


def _passes_applies(case: Case, target: Target) -> str | None:
    if "M" not in case.cascade.ranks:
        return "it has no key rank M to make passes over"
    passes = pass_analysis(case.cascade, "M").passes
    if passes <= 1:
        return "it needs one pass over M: the fused mapper maps it"
    from mappers.passes import recurrence_refusal

    return recurrence_refusal(_lowered(case))


def _passes_run(case: Case, target: ArchTarget, **_: Any) -> Design:
    from mappers.cascade_search import search_passes

    lowered = _lowered(case)
    best = search_passes(lowered, target.spec, best_only=True)["best"]
    return arch_design(case, target, "passes", lowered, best.mapping, best.cost, best.description, best.notes)


def _mapping_applies(case: Case, target: Target) -> str | None:
    return None if target.kind == "arch" else "a device's mapping is read by the kernel mapper (--mapping works)"


def _mapping_run(case: Case, target: ArchTarget, *, mapping: Mapping[str, Any] | None = None, **_: Any) -> Design:
    from einsum.yamlio import LineDict
    from simulator.cost import evaluate_cascade
    from simulator.mapping import mapping_from_dict

    if not isinstance(mapping, Mapping):
        raise MapperError("mapper 'mapping' costs a mapping you give: pass one (--mapping m.yaml)")
    origin = str(mapping.get("__origin__", "<mapping>"))
    if "computed_tiles" in mapping:
        raise MapperError(
            f"{origin}: this design skips the key tiles a mask hides (computed_tiles: "
            f"{', '.join(mapping['computed_tiles'])}); it is costed on a cut iteration space that a mapping file "
            "does not carry. Search it again (attnscope map without --mapping), or remove computed_tiles and the "
            "mapping is costed over every tile"
        )
    shape = mapping.get("shape", {})
    if not isinstance(shape, Mapping) or not all(isinstance(v, int) for v in shape.values()):
        raise MapperError(f"{origin}: shape: expected rank: size pairs, got {shape!r}")
    sizes = dict(case.sizes)
    for rank, size in shape.items():
        if rank not in sizes:
            raise MapperError(f"{origin}: shape.{rank}: {case.name} has no rank {rank}; its ranks: "
                              f"{', '.join(case.cascade.ranks)}")  # fmt: skip
        parent = case.cascade.parent_of.get(rank)
        if size != sizes[rank] and parent is None:
            raise MapperError(f"{origin}: shape.{rank} = {size}, but the case has {rank} = {sizes[rank]}: the mapping "
                              "was made for another shape")  # fmt: skip
        sizes[rank] = size  # a partition's parts may be re-tiled by the mapping
    data = LineDict((k, v) for k, v in mapping.items() if k not in ("__origin__", "shape"))
    data.lines = getattr(mapping, "lines", {})  # the file's lines, for messages
    built = mapping_from_dict(data, origin)
    lowered = _lower_cached(case.cascade, tuple(sorted(case.cascade.rank_sizes(sizes).items())))
    cost = evaluate_cascade(lowered, target.spec, built)
    return arch_design(case, target, "mapping", lowered, built, cost)


def _same_einsums(case: Case, template: str) -> str | None:
    """None when the case's cascade has the template cascade's Einsums (same text), else why not."""
    want = [e.text for e in get_cascade(template).cascade.einsums]
    have = [e.text for e in case.cascade.einsums]
    if want == have:
        return None
    missing = [t for t in want if t not in have]
    first = f"; e.g. it lacks `{missing[0]}`" if missing else ""
    return (
        f"the template is written for the Einsums of the {template!r} cascade, and {case.name!r} has others{first}. "
        "Search a design for it with the default mapper instead (attnscope map --workload ...)"
    )


def _study_arrays(target: Target) -> str | None:
    arch = target.spec
    names = {a.name for a in arch.arrays}
    if not {"pe_2d", "pe_1d"} <= names or "global_buffer" not in {lv.name for lv in arch.levels}:
        return (
            f"{arch.name} lacks the study's arrays pe_2d and pe_1d and its global_buffer (it has "
            f"{', '.join(sorted(names))}); the templates bind Einsums to those names"
        )
    if arch.array("pe_1d").shape[-1] < arch.array("pe_2d").shape[-1]:
        return (
            f"{arch.name}'s 1-D array ({arch.array('pe_1d').shape[-1]} PEs) is narrower than the 2-D array's "
            f"{arch.array('pe_2d').shape[-1]} columns; the study's templates spread one query per column on both"
        )
    return None


def _flat_applies(case: Case, target: Target) -> str | None:
    return _same_einsums(case, "attention-3pass") or _study_arrays(target)


def _flat_run(case: Case, target: ArchTarget, **_: Any) -> Design:
    from mappers.flat import search_flat

    lowered = _lowered(case)
    mapping, cost, _ = search_flat(lowered, target.spec)
    return arch_design(case, target, "flat", lowered, mapping, cost)


def _study_template(config: str) -> tuple[Any, Any]:
    def applies(case: Case, target: Target) -> str | None:
        return _same_einsums(case, "fusemax") or _study_arrays(target)

    def run(case: Case, target: ArchTarget, **_: Any) -> Design:
        from mappers.fusemax import fusemax_family

        sizes = {k: v for k, v in case.sizes.items() if k in ("B", "H", "E", "F", "M", "P")}
        d = fusemax_family(config, target.spec, sizes)
        return arch_design(case, target, f"fusemax-{config}", d.lowered, d.mapping, d.cost)

    return applies, run


# -------------------------------------------------------------------------------------------------- devices


def _kernel_applies(case: Case, target: Target) -> str | None:
    return None


def _kernel_run(
    case: Case, target: DeviceTarget, *, kernel: str | None = None, mapping: Mapping[str, Any] | None = None, **_: Any
) -> Design:
    from simulator.kernels.variants import predict_case

    tile = None
    if mapping is not None:  # a saved device design: its kernel, datatype and (fused) tile
        kernel, tile = _device_mapping(mapping, target, kernel)
    p = predict_case(target.spec, case, dtype=target.dtype, kernel=kernel, tile=tile)
    return device_design(case, target, p)


def _device_mapping(
    mapping: Mapping[str, Any], target: DeviceTarget, kernel: str | None
) -> tuple[str | None, tuple[int, int] | None]:
    """(kernel flavour, fused tile) of a device mapping file (``map --device ... --save-mapping``)."""
    origin = str(mapping.get("__origin__", "<mapping>"))
    name, dtype, tiles = mapping.get("kernel"), mapping.get("dtype"), mapping.get("tiles", {})
    if not isinstance(name, str) or not isinstance(tiles, Mapping):
        raise MapperError(f"{origin}: a device mapping has kernel: NAME (e.g. fa3:gqa) and tiles: {{...}}; got "
                          f"kernel {name!r}")  # fmt: skip
    if dtype is not None and dtype != target.dtype:
        raise MapperError(f"{origin}: dtype {dtype} was mapped; the target runs {target.dtype} (give --dtype {dtype})")
    flavour = name.split(":")[0]
    if kernel is not None and kernel != flavour:
        raise MapperError(f"{origin}: kernel {flavour} in the mapping, --kernel {kernel} on the command line")
    tile = None
    if flavour in ("fa2", "fa3") and "block_m" in tiles and "block_n" in tiles:
        tile = (int(tiles["block_m"]), int(tiles["block_n"]))
    return flavour, tile


def device_design(case: Case, target: DeviceTarget, p: Any) -> Design:
    """A device design from a :class:`~simulator.kernels.machine.KernelPrediction`."""
    spec = target.spec
    t = dict(p.tiles)
    onchip = 0.0
    if "smem_bytes" in t and "ctas_per_sm" in t and "ctas" in t:
        sms_used = min(spec.sm_count, math.ceil(t["ctas"] / t["ctas_per_sm"]))
        onchip = float(t["smem_bytes"] * t["ctas_per_sm"] * sms_used)
    peak = spec.tensor_tflops.get(target.dtype, 0.0) * 1e12
    compulsory = _device_compulsory(case, p.dtype, spec)
    return Design(
        workload=case.name,
        shape=dict(case.sizes),
        target=spec.id,
        target_kind="device",
        mapper="kernel",
        latency_s=p.time_s,
        bound=p.bound,
        dram_bytes=p.hbm_bytes,
        energy_j=None,
        area_mm2=None,
        utilization=min(1.0, p.flops / (p.time_s * peak)) if peak > 0 and p.time_s > 0 else 0.0,
        feasible=True,
        onchip_bytes=onchip,
        spill_bytes=max(0.0, p.hbm_bytes - compulsory),
        mapping={"kernel": p.kernel, "dtype": p.dtype, "tiles": t},
        description=p.kernel,
        notes=tuple(p.notes),
        detail=p,
    )


def _device_compulsory(case: Case, dtype: str, spec: Any) -> float:
    """Bytes of reading every input and writing every output once, at the device's element size."""
    from simulator.device import DTYPE_BYTES

    c = case.cascade
    words = sum(math.prod(c.tensors[t].shape(case.sizes)) for t in (*c.inputs, *c.outputs))
    return float(words) * DTYPE_BYTES.get(dtype, 2)


# ------------------------------------------------------------------------------------------------ registration

for _mapper in (
    Mapper("fused", "arch", "one-pass cascades: the whole cascade in one searched tile loop", _fused_applies,
           _fused_run),
    Mapper("passes", "arch", "multi-pass cascades: the fusion space derived from the cascade", _passes_applies,
           _passes_run),
    Mapper("mapping", "arch", "a given mapping (YAML), costed as it is", _mapping_applies, _mapping_run, auto=False),
    Mapper("flat", "arch", "FLAT's design of the FuseMax study (the attention-3pass cascade)", _flat_applies,
           _flat_run, auto=False),
    *(Mapper(f"fusemax-{c}", "arch", f"the FuseMax study's +{c.capitalize()} design (the fusemax cascade)",
             *_study_template(c), auto=False) for c in ("cascade", "arch", "binding")),
    Mapper("kernel", "device", "the GPU/edge/CPU kernel derived from the cascade", _kernel_applies, _kernel_run),
):  # fmt: skip
    register_mapper(_mapper)


def map_case(case: Case, target: Target, mapper: str | None = None, **options: Any) -> Design:
    """Map a case onto a target with the named mapper, or the first that applies; errors are the user's."""
    from mappers.base import choose_mapper

    return choose_mapper(case, target, mapper).run(case, target, **options)
