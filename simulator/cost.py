"""Cost of a whole cascade under a :class:`~simulator.mapping.CascadeMapping`: one model for every design.

Per Einsum, the loop-nest kernel (:mod:`simulator.nest`) gives access counts per level and tensor and the
compute time steps. The cascade model then adds what crosses Einsum boundaries:

* **Where tensors live.** An intermediate placed in the global buffer (or a staging level, or the PE
  registers) never touches the levels above it: the producer's drains and the consumers' fills from those
  levels are dropped. A tensor in a staging level is written once and read once per consumer on another
  array.
* **Buffer occupancy per phase.** The sum over buffer-resident tensors of their largest tile in the phase
  (tensors that overwrite another in place share its buffer), plus, for every tensor handed between two
  arrays through the buffer, a double buffer of the producer's spatial tile. Above capacity a phase is
  infeasible, or, when the mapping spills, a fraction ``1 - capacity/occupancy`` of every buffered
  tensor's buffer accesses also goes to DRAM (and that share of a buffered DRAM tensor's own traffic is
  served from there instead): the *spill*, reported in bytes and by level (``spill_bytes_by_level``).
* **Staging capacity.** A tensor placed in the staging level is handed from its producer's array to another
  array one spatial tile at a time, double buffered: per phase the staging level holds twice the producer's
  spatial tile of each such tensor; above its capacity the design is infeasible (staging never spills).
* **Every other capacity.** Each Einsum's loop nest must fit every level it uses (and its spatial loops the
  array's PEs); only the shared buffer's overflow is judged per phase as above. An infeasible design keeps
  its numbers for inspection, but ``feasible`` is False and ``infeasible`` names each level at fault, what it
  needs and what it holds.
* **Compute time.** An Einsum's time steps x cycles per point; a point costs the sum of its ops' cycles,
  or on a pipelined array the busiest functional unit's actions.
* **Bandwidth of every level.** Per phase, the words each level moves (reads out, fills and updates in, after
  the placement rules) over its limits, per instance (a per-PE level's words are spread evenly over all its
  instances, an optimistic assumption): ``bandwidth_bytes_per_s`` bounds reads + writes,
  ``read_bandwidth_bytes_per_s`` the reads, ``write_bandwidth_bytes_per_s`` the fills and updates, and
  ``ports`` the accesses of ``access_width_words`` words per cycle. DRAM's words per phase are its tensors'
  (a tensor several phases touch splits them by accesses). A null limit is unbounded (the FuseMax study
  models no on-chip bandwidth, so its presets leave them null).
* **Systolic fill and drain.** An array with ``fill_drain_cycles`` (its pipeline depth: rows + columns - 2 for
  a systolic 2-D array whose operands enter at one edge) pays them once per iteration of an Einsum's
  DRAM-level loops (each tile the buffer receives starts a new wavefront that cannot overlap the previous
  one's drain), added to that Einsum's compute time. Default 0: the study's assumption that consecutive tiles
  stream back to back (fusemax-study.md §F.5).
* **Schedule.** Phases add up; a phase takes max(its stages' compute, its DRAM time, every on-chip level's
  time); a stage takes the slowest array's sum of Einsum times. So the latency is at least the compute bound
  and every level's bandwidth bound.
* **Energy** = actions x per-action energy: ops x functional-unit energies; words x per-word energy of
  each level (access energy / access width); all PE-register instances (one instance under the compat
  flag ``reg_file_energy_one_instance``); plus leakage = the spec's leakage power x latency (0 where none);
  plus, on a spec priced by the technology model, the on-chip wires between the shared buffer and the arrays
  (:func:`wire_energy_pj`: the ``wires`` entry of the breakdown).
* **Utilization** of an array = its useful work (points x cycles per point / PEs) / latency.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from einsum.errors import SpecError
from einsum.lower import LoweredCascade, LoweredEinsum
from simulator.mapping import CascadeMapping, EinsumMapping, Phase
from simulator.nest import MappingBatch, NestArch, NestCosts, NestProblem, evaluate_nest
from simulator.specs import ArchSpec, ComputeArray, StorageLevel
from simulator.technology import wire_energy_pj_per_bit_mm

DRAM = 0


@dataclass(frozen=True)
class EinsumCost:
    """Cost of one Einsum inside the cascade."""

    name: str
    array: str
    compute_cycles: float
    busy_cycles: float  # useful points x cycles per point / PEs of the array
    cycles_per_point: float
    ops: Mapping[str, int]
    energy_pj: Mapping[str, float]  # by component: "compute", level names


@dataclass(frozen=True)
class CascadeCost:
    """Cost of a cascade mapping on an architecture. Times in seconds, traffic in bytes, energy in pJ."""

    latency_s: float
    dram_bytes: float
    energy_pj: float
    feasible: bool
    utilization: Mapping[str, float]  # array -> busy fraction of the latency
    einsum_utilization: Mapping[str, float]  # Einsum -> its array's busy fraction of the latency due to it
    einsums: Mapping[str, EinsumCost]
    energy_breakdown_pj: Mapping[str, float]  # component -> pJ
    dram_bytes_by_tensor: Mapping[str, float]
    buffer_occupancy_words: tuple[float, ...]  # per phase
    spill_fraction: tuple[float, ...]  # per phase
    compute_s_by_array: Mapping[str, float]
    memory_s: float
    compute_bound_s: float  # max over arrays of useful work / peak: the roofline compute bound
    notes: tuple[str, ...] = field(default=())
    infeasible: tuple[str, ...] = field(default=())
    """Why the design does not fit: per level at fault, what it needs and what it holds (empty when feasible)."""
    spill_bytes_by_level: Mapping[str, float] = field(default_factory=dict)
    """Per level that overflowed: bytes of its accesses a spilling phase sends to DRAM instead (the share
    ``1 - capacity/occupancy`` of them), part of ``dram_bytes``."""
    level_s: Mapping[str, float] = field(default_factory=dict)
    """Per on-chip level: seconds its bandwidth, ports and read/write limits need, summed over the phases (a
    lower bound on the latency, like ``memory_s`` for DRAM); levels without limits are left out."""

    @property
    def spill_bytes(self) -> float:
        """All spilled bytes (see ``spill_bytes_by_level``)."""
        return float(sum(self.spill_bytes_by_level.values()))

    @property
    def bound_s(self) -> float:
        """The largest lower bound on the latency: compute, DRAM or an on-chip level's bandwidth."""
        return max(self.compute_bound_s, self.memory_s, *self.level_s.values())


def evaluate_cascade(lowered: LoweredCascade, arch: ArchSpec, mapping: CascadeMapping) -> CascadeCost:
    """Cost a cascade mapping (the model is in the module docstring)."""
    plan = cascade_plan(lowered, arch, mapping)
    buffer = plan.buffer
    occupancy, spill = list(plan.occupancy), []
    capacity = float(arch.level(buffer).capacity_words) if buffer else math.inf
    words = plan.traffic.on(arch, own=mapping.spill and any(occ > capacity for occ in occupancy))
    problems: list[str] = []
    staging = arch.staging_level
    for i, phase in enumerate(mapping.phases):
        occ = occupancy[i]
        ps = 0.0
        if occ > capacity:
            if mapping.spill:
                ps = 1.0 - capacity / occ
            else:
                problems.append(_overflow(buffer, f"phase {i}", occ, capacity, arch.word_bytes))
        spill.append(ps)
        if ps:
            words.spill(phase, ps)
        held = plan.staging_occupancy[i]
        if held > arch.level(staging).capacity_words if staging else False:
            problems.append(_overflow(staging, f"phase {i} (hand-offs between arrays)", held,
                                      arch.level(staging).capacity_words, arch.word_bytes))  # fmt: skip

    einsum_costs = dict(plan.einsum_costs)
    compute_cycles = plan.compute_cycles
    capacities = _capacities(arch)
    for e in lowered.einsums:
        if not _nest_fits(plan.fits[e.name], capacities):
            problems += _nest_overflows(e, arch, mapping.einsums[e.name], plan.nest_costs[e.name], buffer)

    clock = arch.clock_hz
    dram_bw = arch.level(arch.levels[DRAM].name).bandwidth_bytes_per_s or math.inf
    latency_cycles = 0.0
    array_busy: dict[str, float] = {a.name: 0.0 for a in arch.arrays}
    array_compute: dict[str, float] = {a.name: 0.0 for a in arch.arrays}
    memory_s = 0.0
    level_s: dict[str, float] = {}
    for phase, comp in zip(mapping.phases, plan.phase_compute_cycles, strict=True):
        mem_s = max(words.phase_dram_words(phase) * arch.word_bytes / dram_bw, words.phase_level_s(phase, DRAM))
        memory_s += mem_s
        slowest = mem_s
        for li in range(1, len(arch.levels)):
            t = words.phase_level_s(phase, li)
            if t:
                level_s[arch.levels[li].name] = level_s.get(arch.levels[li].name, 0.0) + t
                slowest = max(slowest, t)
        latency_cycles += max(comp, slowest * clock)
        for name in phase.einsums:
            array_compute[mapping.array_of(name)] += compute_cycles[name] / clock
    for c in einsum_costs.values():
        array_busy[c.array] += c.busy_cycles

    energy = words.energy_by_component()
    energy |= {"wires": wires} if (wires := wire_energy_pj(arch, mapping, words)) else {}
    energy["compute"] = sum(c.energy_pj["compute"] for c in einsum_costs.values())
    latency_s = latency_cycles / clock
    energy |= {"leakage": leak * latency_s * 1e12} if (leak := arch.leakage_w()) else {}  # W x s, in pJ
    dram_words = words.dram_by_tensor()
    util = {a: (b / latency_cycles if latency_cycles else 0.0) for a, b in array_busy.items()}
    einsum_util = {n: (c.busy_cycles / latency_cycles if latency_cycles else 0.0) for n, c in einsum_costs.items()}
    return CascadeCost(
        latency_s=latency_s,
        dram_bytes=sum(dram_words.values()) * arch.word_bytes,  # = words.total_dram_words()
        energy_pj=float(sum(energy.values())),
        feasible=not problems,
        utilization=util,
        einsum_utilization=einsum_util,
        einsums=einsum_costs,
        energy_breakdown_pj=energy,
        dram_bytes_by_tensor={t: w * arch.word_bytes for t, w in dram_words.items()},
        buffer_occupancy_words=tuple(occupancy),
        spill_fraction=tuple(spill),
        compute_s_by_array=array_compute,
        memory_s=memory_s,
        compute_bound_s=max(array_busy.values()) / clock,
        notes=mapping.notes,
        infeasible=tuple(dict.fromkeys(problems)),
        spill_bytes_by_level={buffer: words.spilled_words() * arch.word_bytes} if any(spill) else {},
        level_s=level_s,
    )


@dataclass(frozen=True, eq=False)
class CascadePlan:
    """What :func:`evaluate_cascade` derives from the cascade, the mapping and the *structure* of a spec (its
    :func:`spec_structure`) alone: the checked mapping, every Einsum's access counts, the words per level and
    tensor before spills, the buffer and staging occupancy per phase, and each Einsum's compute time. The capacities,
    bandwidths, per-word energies, leakage and clock are applied per spec (a sweep point varies only those)."""

    lowered: LoweredCascade
    mapping: CascadeMapping
    arch: ArchSpec
    """The spec the plan was made on."""
    nest_costs: Mapping[str, NestCosts]
    """Per Einsum: the kernel's counts with every capacity unbounded, so ``overflow_ratio`` is the array axes'
    alone; :func:`_nest_fits` applies a spec's capacities exactly as the kernel does."""
    fits: Mapping[str, tuple[float, tuple[tuple[str, float], ...]]]
    """Per Einsum: the array axes' overflow ratio and each level's occupancy, for :func:`_nest_fits`."""
    buffer: str | None
    traffic: _Traffic
    occupancy: tuple[float, ...]
    staging_occupancy: tuple[float, ...]
    compute_cycles: Mapping[str, float]
    phase_compute_cycles: tuple[float, ...]
    einsum_costs: Mapping[str, EinsumCost]


_PLAN_CACHE: OrderedDict[tuple[int, int, tuple], CascadePlan] = OrderedDict()
_PLAN_CACHE_SIZE = 512
"""Plans of recent (cascade, mapping, spec structure) triples, keyed by identity of the lowered cascade and the
mapping (which the plan keeps alive, and which must not be changed after costing) and by the structure's value."""


def spec_structure(arch: ArchSpec) -> tuple:
    """Everything of a spec a :class:`CascadePlan` depends on: all but the levels' capacities, bandwidths, ports,
    energies, areas and leakage, the clock and the technology (which set those figures). The arrays count by value,
    through :func:`_arrays_token`."""
    levels = tuple((lv.name, lv.parent, lv.instances, lv.per_pe_of, lv.access_width_words) for lv in arch.levels)
    return (arch.word_bytes, arch.staging_level, arch.compat, _arrays_token(arch.arrays), levels)


_TOKENS: dict[tuple[ComputeArray, ...], int] = {}
_TOKENS_BY_ID: dict[tuple[int, ...], tuple[tuple[ComputeArray, ...], int]] = {}
_NEXT_TOKEN = itertools.count()


def _arrays_token(arrays: tuple[ComputeArray, ...]) -> int:
    """A number that stands for these arrays' value (equal arrays, one number; never reused for another value). The
    value (units, operators and all) is hashed once per set of array objects: specs that share their array objects
    (:func:`simulator.specs.with_overrides` of numbers) look the number up by identity; an entry keeps its arrays
    alive, so their ids are theirs."""
    ids = tuple(map(id, arrays))
    hit = _TOKENS_BY_ID.get(ids)
    if hit is None:
        token = _TOKENS.get(arrays)
        if token is None:
            if len(_TOKENS) >= 4096:
                _TOKENS.clear()  # a value seen again gets a new number: its plans are made again, never mixed up
            token = _TOKENS[arrays] = next(_NEXT_TOKEN)
        if len(_TOKENS_BY_ID) >= 4096:
            _TOKENS_BY_ID.clear()
        hit = _TOKENS_BY_ID[ids] = (arrays, token)
    return hit[1]


def cascade_plan(lowered: LoweredCascade, arch: ArchSpec, mapping: CascadeMapping) -> CascadePlan:
    """The :class:`CascadePlan` of a mapping on specs of ``arch``'s structure (memoized: the mapping is checked and
    its loop nests validated and costed by the kernel once per structure, not once per spec)."""
    key = (id(lowered), id(mapping), spec_structure(arch))
    plan = _PLAN_CACHE.get(key)
    if plan is not None:
        _PLAN_CACHE.move_to_end(key)
        return plan
    _check_mapping(lowered, arch, mapping)  # with the nests built from it, all that evaluate_nest would check
    nest_costs: dict[str, NestCosts] = {}
    compute_cycles: dict[str, float] = {}
    einsum_costs: dict[str, EinsumCost] = {}
    for e in lowered.einsums:
        nest_costs[e.name], einsum_costs[e.name] = _einsum_plan(e, arch, mapping.einsums[e.name])
        compute_cycles[e.name] = einsum_costs[e.name].compute_cycles
    buffer = shared_buffer(arch)
    plan = CascadePlan(
        lowered=lowered,
        mapping=mapping,
        arch=arch,
        nest_costs=nest_costs,
        fits={name: _fit(nc, mapping.einsums[name]) for name, nc in nest_costs.items()},
        buffer=buffer,
        traffic=_Traffic(lowered, arch, mapping, nest_costs, buffer),
        occupancy=tuple(phase_occupancy(lowered, mapping, ph, buffer) for ph in mapping.phases),
        staging_occupancy=tuple(staging_occupancy(lowered, mapping, ph, arch.staging_level) for ph in mapping.phases),
        compute_cycles=compute_cycles,
        phase_compute_cycles=tuple(_phase_compute_cycles(ph, compute_cycles, mapping, arch) for ph in mapping.phases),
        einsum_costs=einsum_costs,
    )
    _PLAN_CACHE[key] = plan
    if len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
        _PLAN_CACHE.popitem(last=False)
    return plan


_EINSUM_PLANS: OrderedDict[tuple[int, int, EinsumMapping], tuple[LoweredEinsum, ArchSpec, NestCosts, EinsumCost]] = (
    OrderedDict()
)


def _einsum_plan(e: LoweredEinsum, arch: ArchSpec, em: EinsumMapping) -> tuple[NestCosts, EinsumCost]:
    """One Einsum's part of a :class:`CascadePlan` (its nest's counts and its compute cost on the array), for a
    nest that has passed :func:`_check_mapping`; memoized like :func:`_plan_nest` (the objects are only read)."""
    key = (id(e), id(arch), em)
    hit = _EINSUM_PLANS.get(key)
    if hit is not None and hit[0] is e and hit[1] is arch:
        _EINSUM_PLANS.move_to_end(key)
        return hit[2], hit[3]
    nc = _plan_nest(e, arch, em, check=False)
    array = arch.array(em.array)
    cpp = cycles_per_point(e, array, arch.compat.sum_op_cycles)
    cycles = nest_compute_cycles(e, arch, em, nc)
    busy = e.points * cpp / array.pe_count
    cost = EinsumCost(e.name, em.array, cycles, busy, cpp, e.ops(), {"compute": _compute_energy(e, array, arch)})
    _EINSUM_PLANS[key] = (e, arch, nc, cost)
    if len(_EINSUM_PLANS) > _NEST_CACHE_SIZE:
        _EINSUM_PLANS.popitem(last=False)
    return nc, cost


def _fit(nc: NestCosts, em: EinsumMapping) -> tuple[float, tuple[tuple[str, float], ...]]:
    """A loop nest costed with unbounded capacities: its array axes' overflow ratio (the kernel's
    ``overflow_ratio`` then) and each level's occupancy."""
    return float(nc.overflow_ratio[0]), tuple((n, float(nc.occupancy_words[0, li])) for li, n in enumerate(em.levels))


def _capacities(arch: ArchSpec) -> dict[str, float]:
    """Words per instance of every level, as the kernel takes them (unbounded: inf)."""
    return {lv.name: math.inf if lv.capacity_words is None else float(lv.capacity_words) for lv in arch.levels}


def _nest_fits(fit: tuple[float, tuple[tuple[str, float], ...]], capacities: Mapping[str, float]) -> bool:
    """The kernel's feasibility test (:mod:`simulator.nest`) of a nest's :func:`_fit` at these capacities: the
    same divisions, the same maximum, so the same answer."""
    overflow, occupancies = fit
    for level, words in occupancies:
        overflow = max(overflow, words / capacities[level])
    return overflow <= 1.0


def _overflow(level: str, where: str, need: float, have: float, word_bytes: int) -> str:
    """One infeasibility, in words: the level, where, what it needs and holds, and by how much."""
    return (f"{level}: {where} needs {need:,.0f} words ({need * word_bytes / 2**20:,.4g} MiB), it holds "
            f"{have:,.0f} ({have * word_bytes / 2**20:,.4g} MiB): {need - have:,.0f} words over, "
            f"{need / have:.3g}x")  # fmt: skip


def _nest_overflows(
    e: LoweredEinsum, arch: ArchSpec, em: EinsumMapping, nc: NestCosts, buffer: str | None
) -> list[str]:
    """The capacities an Einsum's loop nest exceeds (the shared buffer's overflow is judged per phase)."""
    out = []
    for li, name in enumerate(em.levels):
        cap = arch.level(name).capacity_words
        need = float(nc.occupancy_words[0, li])
        if cap is not None and need > cap and name != buffer:
            per = " per instance" if arch.level(name).instances > 1 else ""
            out.append(_overflow(name, f"{e.name}'s tiles{per}", need, cap, arch.word_bytes))
    pes = arch.array(em.array).pe_count
    used = float(nc.pes_used[0])
    if used > pes:
        out.append(f"{em.array}: {e.name}'s spatial loops use {used:,.0f} PEs, the array has {pes:,}")
    at_buffer = buffer in em.levels and nc.occupancy_words[0, em.levels.index(buffer)] > (
        arch.level(buffer).capacity_words or math.inf
    )
    if not out and not at_buffer:
        axes = [f for loops in em.spatial for _, f in loops]
        out.append(f"{em.array}: {e.name}'s spatial loops {em.spatial} do not fit the array's axes "
                   f"{arch.array(em.array).shape} (factors {axes})")  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------------
# Per-Einsum pieces


def _check_mapping(lowered: LoweredCascade, arch: ArchSpec, mapping: CascadeMapping) -> None:
    problems = []
    names = {e.name for e in lowered.einsums}
    missing = names - set(mapping.einsums)
    if missing:
        problems.append(f"no loop nest for Einsum(s) {', '.join(sorted(missing))}")
    known = {a.name for a in arch.arrays}
    for i, ph in enumerate(mapping.phases):
        for j, stage in enumerate(ph.stages):
            for array in stage:
                if array not in known:
                    problems.append(f"phases[{i}].stages[{j}]: unknown array {array!r}")
    scheduled = [e for ph in mapping.phases for e in ph.einsums]
    if sorted(scheduled) != sorted(names):
        problems.append(
            f"the phases must schedule every Einsum exactly once; scheduled {sorted(scheduled)}, "
            f"Einsums {sorted(names)}"
        )
    levels = {lv.name for lv in arch.levels}
    places = levels | {"pe"}
    for t, where in mapping.placement.items():
        if where not in places:
            problems.append(f"placement.{t}: unknown place {where!r}; allowed: pe, {', '.join(sorted(levels))}")
    for name in set(mapping.einsums) - names:
        problems.append(f"einsums.{name}: no such Einsum; the cascade has {', '.join(sorted(names))}")
    for e in lowered.einsums:
        em = mapping.einsums.get(e.name)
        if em is not None:
            problems += _nest_problems(e, arch, em)
    if problems:
        where = f"{mapping.origin}: " if mapping.origin else ""
        raise SpecError(f"{where}mapping {mapping.name}: " + "; ".join(problems))


_NEST_PROBLEMS: dict[tuple[int, int, EinsumMapping], tuple[LoweredEinsum, ArchSpec, tuple[str, ...]]] = {}


def _nest_problems(e: LoweredEinsum, arch: ArchSpec, em: EinsumMapping) -> tuple[str, ...]:
    """What is wrong with one Einsum's loop nest on the architecture (empty: nothing), for :func:`_check_mapping`;
    memoized by the identity of the Einsum and the spec (the entry keeps both alive) and the (frozen) nest: the
    mappings a search checks share most of their nests."""
    key = (id(e), id(arch), em)
    hit = _NEST_PROBLEMS.get(key)
    if hit is not None and hit[0] is e and hit[1] is arch:
        return hit[2]
    problems: list[str] = []
    arrays = {a.name: a for a in arch.arrays}
    levels = {lv.name for lv in arch.levels}
    path = f"einsums.{e.name}"
    if em.array not in arrays:
        problems.append(f"{path}.array: unknown array {em.array!r}; {arch.name} has {', '.join(arrays)}")
    elif unknown_levels := [lv for lv in em.levels if lv not in levels]:
        problems.append(f"{path}.levels: unknown {unknown_levels}; {arch.name} has {', '.join(sorted(levels))}")
    else:
        if len(em.spatial) > len(arrays[em.array].shape) + (arrays[em.array].instances > 1):
            problems.append(f"{path}.spatial: {len(em.spatial)} axes, array {em.array} has {arrays[em.array].shape}")
        for var in {v for loops in (*em.temporal, *em.spatial) for v, _ in loops} - set(e.vars):
            problems.append(f"{path}: unknown variable {var!r}; {e.name} iterates {', '.join(e.vars)}")
        for kind, groups in (("temporal", em.temporal), ("spatial", em.spatial)):
            for li, loops in enumerate(groups):
                for var, bound in loops:
                    whole = isinstance(bound, int | np.integer) or (isinstance(bound, float) and bound.is_integer())
                    if isinstance(bound, bool) or not whole or bound < 1:
                        problems.append(f"{path}.{kind}[{li}]: {var} has bound {bound!r}; a bound is a positive "
                                        "integer")  # fmt: skip
        for li, loops in enumerate(em.temporal):
            names = [v for v, _ in loops]
            for var in sorted({v for v in names if names.count(v) > 1}):
                problems.append(f"{path}.temporal[{li}]: {var} is looped over twice; a level has one loop per "
                                "variable (multiply the bounds)")  # fmt: skip
        for tensors in em.keep[1:]:
            for t in set(tensors) - set(e.tensors):
                problems.append(f"{path}.keep: {t} is not a tensor of {e.name} ({', '.join(e.tensors)})")
        for var, size in zip(e.vars, e.var_sizes, strict=True):
            if em.factors(var) < size:
                problems.append(
                    f"einsums.{e.name}: the bounds of {var} multiply to {em.factors(var)}, its rank has size {size}"
                )
    if len(_NEST_PROBLEMS) >= _NEST_CACHE_SIZE:
        _NEST_PROBLEMS.clear()
    _NEST_PROBLEMS[key] = (e, arch, tuple(problems))
    return _NEST_PROBLEMS[key][2]


_NEST_CACHE: OrderedDict[tuple[int, int, EinsumMapping], tuple[LoweredEinsum, ArchSpec, NestCosts]] = OrderedDict()
_NEST_CACHE_SIZE = 4096
"""Nest costs of recent (Einsum, architecture, loop nest) triples: a cascade search costs many cascade mappings
that share most of their loop nests. Keyed by identity of the lowered Einsum and the architecture, which the
entry keeps alive, and by the (frozen) loop nest."""


def einsum_nest(e: LoweredEinsum, arch: ArchSpec, em: EinsumMapping) -> NestCosts:
    """Evaluate one Einsum's loop nest with the kernel (a batch of one mapping), memoized (callers only read). The
    nest is checked by :func:`_nest_problems` (what :func:`_check_mapping` checks of it: all that
    :func:`simulator.nest.evaluate_nest` would check of a nest on a validated spec, and cheaper)."""
    key = (id(e), id(arch), em)
    hit = _NEST_CACHE.get(key)
    if hit is not None:
        _NEST_CACHE.move_to_end(key)
        return hit[2]
    if problems := _nest_problems(e, arch, em):
        raise SpecError(f"loop nest of {e.name}: " + "; ".join(problems))
    costs = _nest_uncached(e, arch, em, check=False)
    _NEST_CACHE[key] = (e, arch, costs)
    if len(_NEST_CACHE) > _NEST_CACHE_SIZE:
        _NEST_CACHE.popitem(last=False)
    return costs


_PLAN_NEST_CACHE: OrderedDict[tuple[int, int, EinsumMapping], tuple[LoweredEinsum, ArchSpec, NestCosts]] = OrderedDict()


def _plan_nest(e: LoweredEinsum, arch: ArchSpec, em: EinsumMapping, check: bool = True) -> NestCosts:
    """:func:`_nest_uncached` with every capacity unbounded (a :class:`CascadePlan`'s nest), memoized like
    :func:`einsum_nest` (same key, same bound): the mappings a search costs share most of their loop nests (a
    multi-pass search: about 100 distinct nests in 4,500 of its cascade mappings' nests). ``check=False``: the
    mapping has passed :func:`_check_mapping`."""
    key = (id(e), id(arch), em)
    hit = _PLAN_NEST_CACHE.get(key)
    if hit is not None:
        _PLAN_NEST_CACHE.move_to_end(key)
        return hit[2]
    costs = _nest_uncached(e, arch, em, unbounded=True, check=check)
    _PLAN_NEST_CACHE[key] = (e, arch, costs)
    if len(_PLAN_NEST_CACHE) > _NEST_CACHE_SIZE:
        _PLAN_NEST_CACHE.popitem(last=False)
    return costs


def nest_compute_cycles(e: LoweredEinsum, arch: ArchSpec, em: EinsumMapping, nc: NestCosts | None = None) -> float:
    """An Einsum's compute cycles on its array as a :class:`CascadePlan` charges them: the nest's time steps x
    :func:`cycles_per_point`, plus the array's fill and drain once per DRAM-level iteration. They depend on the
    nest's loops, not on what its levels keep. ``nc``: the nest's costs (:func:`_plan_nest`) when at hand."""
    array = arch.array(em.array)
    if nc is None:
        if problems := _nest_problems(e, arch, em):  # all that evaluate_nest would check, and cheaper
            raise SpecError(f"loop nest of {e.name}: " + "; ".join(problems))
        nc = _plan_nest(e, arch, em, check=False)
    cycles = float(nc.compute_cycles[0]) * cycles_per_point(e, array, arch.compat.sum_op_cycles)
    if array.fill_drain_cycles:
        cycles += array.fill_drain_cycles * math.prod(b for _, b in em.temporal[0])
    return cycles


BANDWIDTHS = ("none", "dram", "all")
"""Which levels' bandwidths a nest is held to: ``none`` (the cascade model costs transfers per phase),
``dram`` (the outermost only) or ``all`` (every level's, as its spec gives it)."""


def nest_arch(
    arch: ArchSpec, levels: Sequence[str], array: str, axes: Sequence[int] | None = None, *, bandwidth: str
) -> NestArch:
    """The architecture of one Einsum's loop nest as the Numba kernel takes it (the one lowering of a spec).

    ``levels`` outermost first (DRAM first); the spatial fan-out sits at the array's first per-PE level (the last
    level if none is; never DRAM), and every level from there inward has one instance per PE. ``axes``: the
    PEs along each axis of the array (default: the array's shape, then its instance count if replicated).
    """
    specs = [arch.level(n) for n in levels]
    spec = arch.array(array)
    if axes is None:
        axes = spec.shape if spec.instances == 1 else (*spec.shape, spec.instances)
    spatial_level = max(1, next((i for i, lv in enumerate(specs) if lv.per_pe_of == array), len(specs) - 1))
    n_pes = math.prod(axes)
    per_word = arch.word_bytes * arch.clock_hz
    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {BANDWIDTHS}, got {bandwidth!r}")
    held = {"none": 0, "dram": 1, "all": len(specs)}[bandwidth]
    return NestArch(
        capacity_words=np.array([math.inf if lv.capacity_words is None else float(lv.capacity_words) for lv in specs]),
        instances=np.array([n_pes if i >= spatial_level else 1 for i in range(len(specs))], dtype=np.int64),
        bandwidth_words_per_cycle=np.array(
            [_words_per_cycle(lv, per_word) if i < held else math.inf for i, lv in enumerate(specs)]
        ),
        read_energy_pj_per_word=np.array([lv.read_energy_pj / lv.access_width_words for lv in specs]),
        write_energy_pj_per_word=np.array([lv.write_energy_pj / lv.access_width_words for lv in specs]),
        spatial_level=spatial_level,
        array_axes=np.array(axes, dtype=np.int64),
        level_names=tuple(levels),
    )


def _words_per_cycle(level: StorageLevel, per_word: float) -> float:
    return math.inf if level.bandwidth_bytes_per_s is None else level.bandwidth_bytes_per_s / per_word


def nest_problem(e: LoweredEinsum) -> NestProblem:
    """The Einsum as the Numba kernel takes it."""
    return NestProblem(
        e.var_sizes.astype(np.int64), e.incidence.astype(bool), e.is_output.astype(bool), e.vars, e.tensors
    )


def _nest_uncached(
    e: LoweredEinsum, arch: ArchSpec, em: EinsumMapping, unbounded: bool = False, check: bool = True
) -> NestCosts:
    """``unbounded``: every capacity infinite (for a :class:`CascadePlan`, whose specs differ in capacities).
    ``check=False`` skips :func:`simulator.nest.evaluate_nest`'s input checks, for a mapping that has passed
    :func:`_check_mapping` (known variables, one loop per variable and level, positive bounds covering every rank;
    the arrays below are built well formed from it and from the validated spec)."""
    levels = [arch.level(n) for n in em.levels]
    nest = nest_arch(arch, em.levels, em.array, bandwidth="none")  # transfers are costed per phase
    if unbounded:
        nest = replace(nest, capacity_words=np.full(len(levels), math.inf))
    axes = nest.array_axes
    n_levels, n_ranks = len(levels), len(e.vars)
    temporal = np.ones((1, n_levels, n_ranks), dtype=np.int64)
    order = np.tile(np.arange(n_ranks, dtype=np.int64), (1, n_levels, 1))
    for li, loops in enumerate(em.temporal):
        listed = [e.vars.index(v) for v, _ in loops]
        for v, bound in loops:
            temporal[0, li, e.vars.index(v)] = bound
        order[0, li] = listed + [r for r in range(n_ranks) if r not in listed]
    spatial = np.ones((1, len(axes), n_ranks), dtype=np.int64)
    for ai, loops in enumerate(em.spatial):
        for v, factor in loops:
            spatial[0, ai, e.vars.index(v)] = factor
    keep = np.zeros((1, n_levels, len(e.tensors)), dtype=bool)
    keep[0, 0, :] = True
    for li in range(1, n_levels):
        for ti, t in enumerate(e.tensors):
            keep[0, li, ti] = t in em.keep[li]
    return evaluate_nest(nest_problem(e), nest, MappingBatch(temporal, spatial, order, keep), parallel=False,
                         check=check)  # fmt: skip


def cycles_per_point(e: LoweredEinsum, array: ComputeArray, sum_op_cycles: bool) -> float:
    """PE cycles per iteration point: ops' cycles added up, or the busiest unit on a pipelined array."""
    if not e.ops_per_point:
        return 1.0  # a copy still occupies the PE for a cycle
    for op in e.ops_per_point:
        array.op(op)  # raises with the operators the array supports
    if array.pipelined and not sum_op_cycles:
        per_unit: dict[str, float] = {}
        for op, count in e.ops_per_point.items():
            for unit, weight in array.op(op).weights:
                per_unit[unit] = per_unit.get(unit, 0.0) + count * weight
        return max(1.0, max(per_unit.values()))
    return float(sum(count * array.op(op).cycles for op, count in e.ops_per_point.items()))


def _compute_energy(e: LoweredEinsum, array: ComputeArray, arch: ArchSpec) -> float:
    a = [x.name for x in arch.arrays].index(array.name)
    flat = arch.flat
    return float(sum(n * flat.op_energy_pj[a, flat.op_names.index(op)] for op, n in e.ops().items()))


def shared_buffer(arch: ArchSpec) -> str | None:
    """The on-chip buffer every array shares, which holds the tiles and state of a fused cascade and whose
    capacity decides spills: the first level below DRAM that is neither per PE nor replicated (None if none)."""
    shared = [lv.name for lv in arch.levels[1:] if lv.per_pe_of is None and lv.instances == 1]
    return shared[0] if shared else None


def _phase_compute_cycles(
    phase: Phase, compute_cycles: Mapping[str, float], mapping: CascadeMapping, arch: ArchSpec
) -> float:
    total = 0.0
    for i, stage in enumerate(phase.stages):
        if arch.compat.arch_stall and phase.stall_stage == i and phase.stall_einsum:
            stalled = arch.array(mapping.array_of(phase.stall_einsum))
            total += stalled.shape[-1] * compute_cycles[phase.stall_einsum]
        total += max((sum(compute_cycles[e] for e in names) for names in stage.values()), default=0.0)
    return total


def phase_occupancy(lowered: LoweredCascade, mapping: CascadeMapping, phase: Phase, buffer: str | None) -> float:
    """Words held in the shared buffer during a phase (see the module docstring)."""
    if buffer is None:
        return 0.0
    held, handoff = occupancy_parts(lowered, mapping, phase, buffer)
    return held + handoff


_Occupied = tuple[CascadeMapping, LoweredCascade, Phase, tuple[float, float]]
_OCCUPANCY: OrderedDict[tuple[int, int, int, str], _Occupied] = OrderedDict()


def occupancy_parts(lowered: LoweredCascade, mapping: CascadeMapping, phase: Phase, buffer: str) -> tuple[float, float]:
    """The two parts of :func:`phase_occupancy`: the tiles the phase's nests keep in the buffer (in-place
    tensors sharing one), and the double buffers of the hand-offs placed there between arrays. Memoized by the
    identity of the mapping (which must not change after costing), of the cascade and of the phase (the entry keeps
    all three alive), so a search that tests a mapping's fit and then costs it works it out once."""
    key = (id(mapping), id(lowered), id(phase), buffer)
    hit = _OCCUPANCY.get(key)
    if hit is not None and hit[0] is mapping and hit[1] is lowered and hit[2] is phase:
        _OCCUPANCY.move_to_end(key)
        return hit[3]
    tiles: dict[str, float] = {}
    for name in phase.einsums:
        e = lowered.einsum(name)
        em = mapping.einsums[name]
        if buffer not in em.levels:
            continue
        for t, words in _kept_tile_words(e, em, buffer):
            tiles[t] = max(tiles.get(t, 0.0), words)
    alias = dict(mapping.in_place)
    classes: dict[str, float] = {}
    for t, words in tiles.items():
        root = t
        while root in alias and alias[root] in tiles:
            root = alias[root]
        classes[root] = max(classes.get(root, 0.0), words)
    handoff = 0.0
    for t in tiles:
        if mapping.placement.get(t) != buffer or t not in lowered.producer:
            continue
        producer = mapping.einsums[lowered.producer[t]]
        if any(mapping.array_of(c) != producer.array for c in lowered.consumers.get(t, ())):
            e = lowered.einsum(lowered.producer[t])
            handoff += 2 * spatial_tile_words(e, producer, 0)
    parts = (sum(classes.values()), handoff)
    _OCCUPANCY[key] = (mapping, lowered, phase, parts)
    if len(_OCCUPANCY) > _PLAN_CACHE_SIZE:
        _OCCUPANCY.popitem(last=False)
    return parts


def staging_occupancy(lowered: LoweredCascade, mapping: CascadeMapping, phase: Phase, staging: str | None) -> float:
    """Words the staging level holds during a phase: a double buffer of the producer's spatial tile of every
    tensor placed there that the phase's Einsums produce (see the module docstring)."""
    if staging is None:
        return 0.0
    held = 0.0
    for name in phase.einsums:
        if mapping.placement.get(name) == staging:
            held += 2 * spatial_tile_words(lowered.einsum(name), mapping.einsums[name], 0)
    return held


_KEPT_TILES: dict[tuple[int, EinsumMapping, str], tuple[LoweredEinsum, tuple[tuple[str, float], ...]]] = {}


def _kept_tile_words(e: LoweredEinsum, em: EinsumMapping, level: str) -> tuple[tuple[str, float], ...]:
    """(tensor, :func:`_tile_words`) of each tensor the nest keeps at ``level`` (one of its levels), memoized by
    the Einsum's identity (the entry keeps it alive) and the (frozen) nest: a search asks for the same few."""
    key = (id(e), em, level)
    hit = _KEPT_TILES.get(key)
    if hit is not None and hit[0] is e:
        return hit[1]
    li = em.levels.index(level)
    words = tuple((t, _tile_words(e, em, ti, li)) for ti, t in enumerate(e.tensors) if t in em.keep[li])
    if len(_KEPT_TILES) >= 16384:
        _KEPT_TILES.clear()
    _KEPT_TILES[key] = (e, words)
    return words


def _tile_words(e: LoweredEinsum, em: EinsumMapping, ti: int, level: int) -> float:
    """Words of tensor ``ti``'s tile held by one instance of ``level`` (Timeloop's tile: extents below)."""
    spatial_level = len(em.levels) - 1
    extent = {v: 1 for v in e.vars}
    for li in range(level, len(em.levels)):
        for v, bound in em.temporal[li]:
            extent[v] *= bound
    if level < spatial_level:
        for loops in em.spatial:
            for v, factor in loops:
                extent[v] *= factor
    return float(math.prod(min(extent[v], e.var_size(v)) for v, on in zip(e.vars, e.incidence[ti], strict=True) if on))


def spatial_tile_words(e: LoweredEinsum, em: EinsumMapping, ti: int) -> float:
    """Words of tensor ``ti`` the whole array produces or consumes in one time step."""
    factors = {v: 1 for v in e.vars}
    for loops in em.spatial:
        for v, f in loops:
            factors[v] *= f
    return float(math.prod(factors[v] for v, on in zip(e.vars, e.incidence[ti], strict=True) if on))


# ---------------------------------------------------------------------------------------------------------
# Word accounting across Einsums


def wire_energy_pj(arch: ArchSpec, mapping: CascadeMapping, words: _Traffic) -> float:
    """pJ of the on-chip wires that carry words between the shared buffer and the arrays' PEs, on a spec priced by
    the technology model (0 without one, and for a buffer whose access energies the spec gives: a given access
    energy is taken as the whole cost of the access, wires included - so the FuseMax study's published figures,
    which charge no wires, are unchanged).

    Per bit, the technology model's wire energy per mm (:func:`simulator.technology.wire_energy_pj_per_bit_mm`)
    times a distance derived from the array's area (:func:`array_side_mm`): the buffer sits beside the array, and
    a word it sends is carried along one side of the square the array's PEs occupy - broadcast along a row or
    column of PEs, or to the 1-D array's PEs - and a word written back crosses it once too. Hops between
    neighbouring PEs are the PE registers' accesses and are not counted again. Every wire bit is charged as
    switching (activity 1: an upper bound). Words are the buffer's reads towards the levels below it and the
    updates it receives from them, per Einsum, on the Einsum's array; fills from DRAM are not counted."""
    if arch.technology is None or words.buffer is None or not words.to_pes:
        return 0.0
    level = arch.level(words.buffer)
    derived = ("read_energy_pj" not in level.given, "write_energy_pj" not in level.given)
    if not any(derived):
        return 0.0
    per_word_mm = wire_energy_pj_per_bit_mm(arch.technology) * 8 * arch.word_bytes
    sides = {a.name: array_side_mm(arch, a) for a in arch.arrays}
    total = 0.0
    for name in sorted(words.to_pes):  # a fixed order: sums equal in every process
        down, up = words.to_pes[name]
        total += (down * derived[0] + up * derived[1]) * per_word_mm * sides[mapping.array_of(name)]
    return total


def array_side_mm(arch: ArchSpec, array: ComputeArray) -> float:
    """Side (mm) of the square an array's PEs occupy: sqrt of their functional units' and per-PE levels' area."""
    units = array.pe_count * sum(u.area_um2 for u in array.units)
    registers = sum(lv.instances * lv.area_um2 for lv in arch.levels if lv.per_pe_of == array.name)
    return math.sqrt(units + registers) * 1e-3


_EINSUM_WORDS: OrderedDict[tuple, tuple[LoweredEinsum, ArchSpec, tuple, tuple, float]] = OrderedDict()


def _einsum_words(
    e: LoweredEinsum,
    arch: ArchSpec,
    em: EinsumMapping,
    nc: NestCosts,
    homes: tuple[str, ...],
    sources: tuple[str | None, ...],
    buffer: str | None,
) -> tuple[tuple[tuple[str, str, float, float], ...], tuple[tuple[int, float], ...], float]:
    """One Einsum's words after the placement rules, for :class:`_Traffic`: the (level, tensor, reads, writes) it
    adds, in order, the words the buffer sends to its PEs and gets back (index 0 and 1, in order), and its DRAM
    words. ``homes``: each tensor's placement; ``sources``: where each tensor is forwarded from (None: it is not).
    Memoized by the Einsum's and the spec's identity (the entry keeps them alive; ``nc`` is their nest's costs),
    the nest and the placement: a search costs many cascade mappings that share most of their Einsums' nests."""
    key = (id(e), id(arch), em, homes, sources, buffer)
    hit = _EINSUM_WORDS.get(key)
    if hit is not None and hit[0] is e and hit[1] is arch:
        _EINSUM_WORDS.move_to_end(key)
        return hit[2], hit[3], hit[4]
    adds: list[tuple[str, str, float, float]] = []
    pes: list[tuple[int, float]] = []
    dram_words = 0.0
    for ti, t in enumerate(e.tensors):
        home, source = homes[ti], sources[ti]
        # A tensor whose home is outside this nest (the PE registers, a staging level) moves only
        # inside the PEs here; the staging accesses are added by _staging.
        home_index = em.levels.index(home) if home in em.levels else len(em.levels) - 1
        first = len(em.levels) - 1 if source == "pe" else (em.levels.index(source) if source else 0)
        for li, level in enumerate(em.levels):
            if li < first:
                continue  # the data is already at its source level
            if source and li == first and source != "pe":
                r = float(nc.reads_words[0, li, ti])
                adds.append((level, t, r, 0.0))  # no fill: it is already there
                if level == buffer:
                    pes.append((0, r))
                continue
            r = float(nc.reads_words[0, li, ti])
            w = float(nc.fills_words[0, li, ti] + nc.updates_words[0, li, ti])
            if li < home_index:
                continue  # the tensor never reaches levels above its home
            if li == home_index and home != "dram":
                # Fills from above and drains to above do not happen: it lives here.
                w = float(nc.updates_words[0, li, ti])
                if li + 1 < len(em.levels) or e.is_output[ti]:
                    drained = float(nc.updates_words[0, li - 1, ti]) if li > 0 else 0.0
                    r = max(0.0, r - drained) if e.is_output[ti] else r
            adds.append((level, t, r, w))
            if level == buffer:  # reads go down towards the PEs, updates come up from them
                pes += [(0, r), (1, float(nc.updates_words[0, li, ti]))]
            if li == DRAM:
                dram_words += r + w
    out = (tuple(adds), tuple(pes), dram_words)
    _EINSUM_WORDS[key] = (e, arch, *out)
    if len(_EINSUM_WORDS) > _NEST_CACHE_SIZE:
        _EINSUM_WORDS.popitem(last=False)
    return out


class _Traffic:
    """Words moved per (level, tensor), after the placement rules; energy per component."""

    def __init__(
        self,
        lowered: LoweredCascade,
        arch: ArchSpec,
        mapping: CascadeMapping,
        nest_costs: Mapping[str, NestCosts],
        buffer: str | None,
    ):
        self.arch = arch
        self.mapping = mapping
        self.lowered = lowered
        self.buffer = buffer
        self.reads: dict[tuple[str, str], float] = {}  # (level, tensor) -> words
        self.writes: dict[tuple[str, str], float] = {}
        self.by_einsum_dram: dict[str, float] = {}
        self.spilled: dict[str, float] = {}  # einsum -> extra DRAM words charged to its phase
        self.by_einsum: dict[tuple[str, str], list[float]] = {}  # (einsum, level) -> [reads, writes]
        self.to_pes: dict[str, list[float]] = {}  # einsum -> [words the buffer sends below, words it gets back]
        self._einsum = ""
        self._share_memo: dict[int, tuple[set[str], dict[str, float]]] = {}
        staging = arch.staging_level
        forwarded = {(t, consumer): level for t, consumer, level in mapping.forwarded}
        for e in lowered.einsums:
            em = mapping.einsums[e.name]
            homes = tuple(mapping.placement.get(t, "dram") for t in e.tensors)
            sources = tuple(forwarded.get((t, e.name)) for t in e.tensors)
            adds, pes, dram_words = _einsum_words(e, arch, em, nest_costs[e.name], homes, sources, buffer)
            self._einsum = e.name
            for level, t, r, w in adds:
                self._add(level, t, r, w)
            if pes:
                below = self.to_pes.setdefault(e.name, [0.0, 0.0])
                for i, words in pes:
                    below[i] += words
            if staging and mapping.placement and any(mapping.placement.get(t) == staging for t in e.tensors):
                self._staging(e, em, staging)
            self.by_einsum_dram[e.name] = dram_words

    def on(self, arch: ArchSpec, own: bool = True) -> _Traffic:
        """These words on another spec of the same structure (:func:`spec_structure`); ``own``: with dicts of their
        own, for a caller that spills (:meth:`spill` is the one method that changes them), else sharing this one's."""
        out = copy.copy(self)
        out.arch = arch
        if own:
            out.reads, out.writes, out.spilled = dict(self.reads), dict(self.writes), dict(self.spilled)
            out.by_einsum = {k: list(v) for k, v in self.by_einsum.items()}
        return out

    def _add(self, level: str, tensor: str, r: float, w: float) -> None:
        self.reads[level, tensor] = self.reads.get((level, tensor), 0.0) + r
        self.writes[level, tensor] = self.writes.get((level, tensor), 0.0) + w
        rw = self.by_einsum.setdefault((self._einsum, level), [0.0, 0.0])
        rw[0] += r
        rw[1] += w

    def phase_level_s(self, phase: Phase, index: int) -> float:
        """Seconds level ``index`` needs in a phase under its limits (module docstring); DRAM's total bandwidth
        is applied by the caller to :meth:`phase_dram_words`, so only its read/write and port limits here."""
        level = self.arch.levels[index]
        limits = (level.bandwidth_bytes_per_s if index != DRAM else None, level.read_bandwidth_bytes_per_s,
                  level.write_bandwidth_bytes_per_s, level.ports)  # fmt: skip
        if all(x is None for x in limits):
            return 0.0
        reads = writes = 0.0
        for name in phase.einsums:
            r, w = self.by_einsum.get((name, level.name), (0.0, 0.0))
            reads, writes = reads + r, writes + w
        per_instance = self.arch.word_bytes / level.instances  # bytes per word, spread over the instances
        total, read_bw, write_bw, ports = limits
        times = [0.0]
        if total:
            times.append((reads + writes) * per_instance / total)
        if read_bw:
            times.append(reads * per_instance / read_bw)
        if write_bw:
            times.append(writes * per_instance / write_bw)
        if ports:
            accesses = (reads + writes) / level.instances / level.access_width_words
            times.append(accesses / ports / self.arch.clock_hz)
        return max(times)

    def spilled_words(self) -> float:
        """Words of the buffer's accesses the spills sent to DRAM."""
        return float(sum(self.spilled.values()))

    def _staging(self, e: LoweredEinsum, em: EinsumMapping, staging: str) -> None:
        """A tensor in the staging level: written once by its producer, read once by each consumer."""
        words = self.lowered.tensor_words
        for t in e.tensors:
            if self.mapping.placement.get(t) != staging:
                continue
            if t == e.name:
                self._add(staging, t, 0.0, float(words[t]))
            elif self.mapping.array_of(self.lowered.producer.get(t, e.name)) != em.array:
                self._add(staging, t, float(words[t]), 0.0)

    def spill(self, phase: Phase, ps: float) -> None:
        """Charge a spilled share of the phase's buffer accesses to DRAM."""
        buffered = {t for (lv, t) in (*self.reads, *self.writes) if lv == self.buffer}
        touched = {t for name in phase.einsums for t in self.lowered.einsum(name).tensors}
        for t in sorted(buffered & touched):
            extra = ps * (self.reads.get((self.buffer, t), 0.0) + self.writes.get((self.buffer, t), 0.0))
            dram = self.arch.levels[DRAM].name
            if (dram, t) in self.reads or (dram, t) in self.writes:
                # a buffered DRAM tensor: that share of its own traffic is what the spill already moves
                self.reads[dram, t] = self.reads.get((dram, t), 0.0) * (1 - ps)
                self.writes[dram, t] = self.writes.get((dram, t), 0.0) * (1 - ps)
            first = phase.einsums[0]
            self._einsum = first
            self._add(dram, t, extra, 0.0)
            self.spilled[first] = self.spilled.get(first, 0.0) + extra

    def dram_by_tensor(self) -> dict[str, float]:
        dram = self.arch.levels[DRAM].name
        out: dict[str, float] = {}
        for (lv, t), w in list(self.reads.items()) + list(self.writes.items()):
            if lv == dram:
                out[t] = out.get(t, 0.0) + w
        return out

    def total_dram_words(self) -> float:
        return sum(self.dram_by_tensor().values())

    def phase_dram_words(self, phase: Phase) -> float:
        """DRAM words of a phase: those of its Einsums' tensors (spills included)."""
        dram = self.arch.levels[DRAM].name
        tensors, shared = self._shares(phase)
        return sum(
            w * shared[t]
            for (lv, t), w in list(self.reads.items()) + list(self.writes.items())
            if lv == dram and t in tensors
        )

    def _shares(self, phase: Phase) -> tuple[set[str], dict[str, float]]:
        """The phase's tensors and their DRAM shares, worked out once per phase (they depend on the mapping only)."""
        hit = self._share_memo.get(id(phase))  # the phases are the mapping's, which this object keeps alive
        if hit is None:
            tensors = {t for name in phase.einsums for t in self.lowered.einsum(name).tensors}
            hit = self._share_memo[id(phase)] = (tensors, self._phase_share(tensors))
        return hit

    def _phase_share(self, tensors: set[str]) -> dict[str, float]:
        """A tensor touched by several phases splits its DRAM words between them by their accesses."""
        touched = [self._phase_tensors(ph) for ph in self.mapping.phases]
        return {t: 1.0 / max(1, sum(1 for ts in touched if t in ts)) for t in tensors}

    def _phase_tensors(self, phase: Phase) -> set[str]:
        return {t for name in phase.einsums for t in self.lowered.einsum(name).tensors}

    def energy_by_component(self) -> dict[str, float]:
        out: dict[str, float] = {}
        compat = self.arch.compat
        levels = {lv.name: lv for lv in self.arch.levels}
        for key in sorted(set(self.reads) | set(self.writes)):  # a fixed order: sums equal in every process
            level = levels[key[0]]
            per_read = level.read_energy_pj / level.access_width_words
            per_write = level.write_energy_pj / level.access_width_words
            if compat.drop_staging_energy and key[0] == self.arch.staging_level:
                per_read = per_write = 0.0
            scale = 1.0 / level.instances if (compat.reg_file_energy_one_instance and level.per_pe_of) else 1.0
            pj = (self.reads.get(key, 0.0) * per_read + self.writes.get(key, 0.0) * per_write) * scale
            out[key[0]] = out.get(key[0], 0.0) + pj
        return out
