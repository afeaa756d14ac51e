"""Analytical cost of one Einsum under a batch of loop-nest mappings (Timeloop-style), as Numba kernels.

Everything crossing into the kernels is a plain numpy array, so a mapper can evaluate thousands of mappings
per call. The public entry point is :func:`evaluate_nest`; :func:`warm_up` compiles the kernels.

The loop nest
-------------
Storage levels are indexed ``0`` (DRAM, outermost) .. ``L-1`` (innermost, e.g. PE registers). Each level
``l`` owns one temporal loop per rank, bound ``temporal[l, r]``, nested in ``order[l]`` (outermost first).
One spatial fan-out sits directly above level ``s = spatial_level``: the spatial loops (bound
``spatial[a, r]`` on array axis ``a``) spread the iterations over the instances of levels ``s .. L-1``
(one instance per PE). The full nest, outermost first, is::

    level 0 loops, ..., level s-1 loops, spatial loops (axis 0 first), level s loops, ..., level L-1 loops

and below the innermost level sits the compute (one iteration point per PE per time step). The iteration
space is the *padded* one: a rank whose factors multiply to more than its size is padded, the padded
points are computed (and their data moved) like the others, and ``padded_points`` reports them.

Tiles. The tile of tensor ``t`` held by one instance of level ``l`` is the product over the ranks indexing
``t`` of the rank's extent at ``l``: the product of its temporal bounds at levels ``>= l``, times its
spatial factors when ``l < s`` (a level above the fan-out holds what all PEs below it work on).
Occupancy of a level (per instance) is the sum of the tiles of the tensors it keeps (one tile each, no
double buffering); a mapping is feasible when every level's occupancy fits its capacity and every array
axis fits its PEs. Inputs start in DRAM (no fills there) and the output ends there.

Access counts (the model; every count is in words, summed over the instances in use)
-----------------------------------------------------------------------------------
For each tensor, the chain of levels that keep it (DRAM always does; ``keep`` false = bypass) ends with
the compute as a pseudo-level with a one-word tile. Each link of the chain, parent ``p`` -> child ``c``:

* ``I_c`` = PEs in use (product of all spatial factors) if ``c >= s``, else 1.
* ``F_c`` = residencies of ``c``'s tile per instance = the product of the temporal bounds of all loops
  above ``c`` (levels ``< c``; spatial loops are not time) divided by the product of the innermost run of
  those loops whose rank does not index the tensor (loops of bound 1 do not end the run): during that run
  the resident tile is reused (stationarity). For the compute ``F`` = time steps: every point reads each
  operand and updates the output once (no reuse inside the arithmetic unit).
* ``D_c`` = distinct tiles an instance visits = product of the temporal bounds above ``c`` of the ranks
  indexing the tensor.
* The link is *crossing* when ``p < s <= c``. Only there do several instances share one parent: the PEs
  that differ only in spatial ranks not indexing the tensor (group size ``G``) need the same tile at the
  same time, so one parent read is **multicast** to all of them, and output partial sums from them are
  **reduced in the network** (one parent update per group).

Inputs: ``fills[c] += F_c * I_c * tile_c``; ``reads[p] += F_c * I_c * tile_c`` (``/ G`` on a crossing link).

Output (read-modify-write partial sums): every residency of ``c`` ends by draining its tile to ``p``
(``reads[c] += F_c * I_c * tile_c``, ``updates[p] += F_c * I_c * tile_c``, ``/ G`` on a crossing link).
A residency starts either from zero (no partial sum exists yet for it) or by reading back the partial sum
from ``p`` (``reads[p] += ...``, ``fills[c] += ...``). With ``Z_c`` the residencies that start from zero
(summed over instances), read-backs = ``(F_c * I_c - Z_c) * tile_c``, where

* DRAM: ``Z = 1``, ``D = 1`` (the output starts empty);
* non-crossing link: ``Z_c = Z_p * D_c / D_p`` (the first visit of each tile inside a zero-started parent
  residency starts from zero; with ``Z_p = D_p`` this is Timeloop's "updates minus first writes");
* crossing link: ``Z_c = D_c * I_c + (F_c - D_c) * (I_c - I_c / G)``: first visits start from zero, and on
  a revisit the parent's partial sum is read back into one instance of each reduction group only (the
  others start from zero, their sums are added by the reduction network).

For the compute pseudo-level the read-backs are the read half of the read-modify-write of each update.

Time, energy, utilisation
-------------------------
* ``compute_cycles = time steps * cycles_per_point`` (time steps = padded points / PEs in use).
* ``transfer_cycles[l] = (reads + fills + updates at l) / I_l / bandwidth[l]`` (per-instance bandwidth;
  DRAM and levels above the fan-out have one instance).
* ``latency_cycles = max(compute_cycles, max_l transfer_cycles[l])``: compute and every level's transfers
  are assumed to overlap perfectly (double buffering, no stalls, no fill/drain ramp).
* ``utilization = useful_points * cycles_per_point / (PEs * latency_cycles)``, PEs = all PEs of the array
  (or the PEs used, if an infeasible mapping uses more); useful points exclude padding.
* ``energy_pj = sum over levels and tensors of reads * read energy + (fills + updates) * write energy``.
  Compute energy and network (multicast, reduction) energy are not included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

from einsum.errors import SpecError
from simulator.jit import kernel

__all__ = [
    "ASSUMPTIONS",
    "MappingBatch",
    "NestArch",
    "NestCosts",
    "NestProblem",
    "bench_throughput",
    "evaluate_nest",
    "warm_up",
]

ASSUMPTIONS: tuple[str, ...] = (
    "One spatial fan-out, directly above `spatial_level`; levels from it inward have one instance per PE.",
    "Counts are for the padded iteration space: padded points are computed and their data moved.",
    "Reuse is only temporal stationarity: the innermost run of loops not indexing a tensor reuses its tile.",
    "The compute reads each operand and updates the output once per point (no reuse inside the PE's ALU).",
    "Across the fan-out, inputs are multicast (one parent read per distinct tile) and output partial sums "
    "are reduced in the network (one parent update per distinct tile).",
    "A read-back partial sum goes to one instance of each reduction group; the others start from zero.",
    "Compute and all transfers overlap perfectly: latency = max(compute, each level's words / bandwidth).",
    "Bandwidth is per instance; energy counts storage accesses only (no compute or network energy).",
)


@dataclass(frozen=True, eq=False)
class NestProblem:
    """One lowered Einsum: ranks, tensors and which rank indexes which tensor."""

    rank_sizes: np.ndarray
    """int64[R]: size of each rank (>= 1)."""
    incidence: np.ndarray
    """bool[T, R]: ``incidence[t, r]`` is true when rank ``r`` indexes tensor ``t``."""
    is_output: np.ndarray
    """bool[T]: true for the tensor the Einsum writes (read-modify-written partial sums)."""
    rank_names: tuple[str, ...] = ()
    """Rank names for messages (default ``R0, R1, ...``)."""
    tensor_names: tuple[str, ...] = ()
    """Tensor names for messages (default ``T0, T1, ...``)."""


@dataclass(frozen=True, eq=False)
class NestArch:
    """A storage hierarchy with one spatial fan-out, as arrays. Level 0 is DRAM, level L-1 the innermost."""

    capacity_words: np.ndarray
    """float64[L]: words one instance of each level holds (``inf`` for DRAM)."""
    instances: np.ndarray
    """int64[L]: copies of each level: 1 above ``spatial_level``, the array's PE count from it inward."""
    bandwidth_words_per_cycle: np.ndarray
    """float64[L]: words per cycle one instance moves, reads and writes together (``inf`` = unconstrained)."""
    read_energy_pj_per_word: np.ndarray
    """float64[L]: energy of reading one word, in pJ."""
    write_energy_pj_per_word: np.ndarray
    """float64[L]: energy of writing (fill or update) one word, in pJ."""
    spatial_level: int
    """Index of the level whose instances are spread over the PE array (1 .. L-1)."""
    array_axes: np.ndarray
    """int64[A]: PEs along each axis of the array (e.g. ``[256, 256]``)."""
    level_names: tuple[str, ...] = ()
    """Level names for messages (default ``L0, L1, ...``)."""


@dataclass(frozen=True, eq=False)
class MappingBatch:
    """N mappings of one Einsum onto one architecture, as arrays."""

    temporal: np.ndarray
    """int64[N, L, R]: temporal loop bound of rank r at level l (>= 1)."""
    spatial: np.ndarray
    """int64[N, A, R]: spatial factor of rank r on array axis a (>= 1)."""
    order: np.ndarray
    """int64[N, L, R]: loop order per level, a permutation of rank indices, outermost first."""
    keep: np.ndarray
    """bool[N, L, T]: whether level l holds tensor t (false = bypass); level 0 keeps every tensor."""

    @property
    def num_mappings(self) -> int:
        """N."""
        return int(self.temporal.shape[0])


@dataclass(frozen=True, eq=False)
class NestCosts:
    """Costs of each mapping of a batch. Word counts are summed over the instances in use."""

    reads_words: np.ndarray
    """float64[N, L, T]: words read out of each level (to children, or drained to the parent)."""
    fills_words: np.ndarray
    """float64[N, L, T]: words written into each level from its parent (fills and partial-sum read-backs)."""
    updates_words: np.ndarray
    """float64[N, L, T]: output words written into each level from below (drains, compute updates)."""
    occupancy_words: np.ndarray
    """float64[N, L]: words one instance of each level holds (sum of the kept tensors' tiles)."""
    feasible: np.ndarray
    """bool[N]: every level fits its capacity and every array axis fits its PEs."""
    overflow_ratio: np.ndarray
    """float64[N]: max over levels of occupancy / capacity and over axes of PEs used / PEs (> 1 = overflow)."""
    compute_cycles: np.ndarray
    """float64[N]: time steps (padded points / PEs used) x cycles per point."""
    transfer_cycles: np.ndarray
    """float64[N, L]: words moved by one instance of each level / its bandwidth."""
    latency_cycles: np.ndarray
    """float64[N]: max of compute cycles and every level's transfer cycles (perfect overlap)."""
    utilization: np.ndarray
    """float64[N]: useful points x cycles per point / (max(all PEs, PEs used) x latency cycles), in (0, 1]."""
    energy_pj: np.ndarray
    """float64[N]: storage access energy in pJ."""
    padded_points: np.ndarray
    """float64[N]: iteration points computed, padding included."""
    pes_used: np.ndarray
    """float64[N]: PEs in use (product of the spatial factors)."""
    useful_points: float
    """Iteration points of the unpadded problem (product of the rank sizes)."""

    @property
    def writes_words(self) -> np.ndarray:
        """float64[N, L, T]: fills + updates."""
        return self.fills_words + self.updates_words

    @property
    def padding_ratio(self) -> np.ndarray:
        """float64[N]: padded points / useful points (1 = no padding)."""
        return self.padded_points / self.useful_points


# --------------------------------------------------------------------------------------------------------
# Kernels: plain arrays in, preallocated arrays out. They also run as pure Python (NUMBA_DISABLE_JIT=1).


@kernel(inline="always")  # inlined by Numba: the kernel's speed
def steps_above(temporal):
    """float[L + 1]: the product of every temporal bound at levels < c, for c = 0 .. L (time steps elapsed per
    residency at level c; the last entry is all the steps). ``temporal`` is float/int [L, R] of one mapping."""
    num_levels, num_ranks = temporal.shape
    above = np.empty(num_levels + 1)
    above[0] = 1.0
    for l in range(num_levels):
        p = 1.0
        for r in range(num_ranks):
            p *= float(temporal[l, r])
        above[l + 1] = above[l] * p
    return above


@kernel(inline="always")  # inlined by Numba: the kernel's speed
def tile_and_distinct(temporal, extent, incidence, t, c):
    """(words of tensor ``t``'s tile resident at level ``c``, distinct tiles it takes over the loops above ``c``);
    at ``c = L`` (the compute) the tile is one word. ``extent`` [>= L, R] is one instance's tile extent per level."""
    num_levels, num_ranks = temporal.shape
    distinct = 1.0
    tile = 1.0
    for r in range(num_ranks):
        if incidence[t, r]:
            if c < num_levels:
                tile *= extent[c, r]
            for l in range(c):
                distinct *= float(temporal[l, r])
    return tile, distinct


@kernel(inline="always")  # inlined by Numba: the kernel's speed
def sharing_pes(incidence, spatial_rank, t):
    """PEs that share one tile of tensor ``t``: the product of the spatial factors of the ranks not indexing it."""
    group = 1.0
    for r in range(incidence.shape[1]):
        if not incidence[t, r]:
            group *= spatial_rank[r]
    return group


@kernel(inline="always")  # inlined by Numba: the kernel's speed
def occupancy_words(keep, extent, incidence, l):
    """Words resident at level ``l``: the tiles of the tensors ``keep`` [L, T] holds there."""
    occ = 0.0
    for t in range(incidence.shape[0]):
        if keep[l, t]:
            tile = 1.0
            for r in range(incidence.shape[1]):
                if incidence[t, r]:
                    tile *= extent[l, r]
            occ += tile
    return occ


@kernel
def _cost_one(
    i,
    incidence,
    is_output,
    capacity_words,
    bandwidth,
    read_energy,
    write_energy,
    array_axes,
    spatial_level,
    temporal,
    spatial,
    order,
    keep,
    cycles_per_point,
    useful_points,
    reads,
    fills,
    updates,
    occupancy,
    transfer_cycles,
    overflow_ratio,
    feasible,
    compute_cycles,
    latency_cycles,
    utilization,
    energy_pj,
    padded_points,
    pes_used,
):
    """Fill the outputs of mapping ``i`` (the model is in the module docstring)."""
    num_levels = temporal.shape[1]
    num_ranks = temporal.shape[2]
    num_tensors = incidence.shape[0]
    num_axes = spatial.shape[1]
    s = spatial_level
    reads[i] = 0.0  # the rows are accumulated below; output buffers are reused between batches
    fills[i] = 0.0
    updates[i] = 0.0

    # Spatial factors per rank, PEs in use, axis overflow.
    overflow = 0.0
    all_pes = 1.0
    spatial_rank = np.ones(num_ranks)
    pes = 1.0
    for a in range(num_axes):
        used = 1.0
        for r in range(num_ranks):
            f = float(spatial[i, a, r])
            used *= f
            spatial_rank[r] *= f
        pes *= used
        all_pes *= float(array_axes[a])
        overflow = max(overflow, used / float(array_axes[a]))

    # extent[l, r]: extent of rank r in one instance's tile at level l; row L is the compute (1 word).
    extent = np.ones((num_levels + 1, num_ranks))
    for l in range(num_levels - 1, -1, -1):
        for r in range(num_ranks):
            e = extent[l + 1, r] * float(temporal[i, l, r])
            if l == s - 1:
                e *= spatial_rank[r]
            extent[l, r] = e

    above = steps_above(temporal[i])
    steps = above[num_levels]

    for t in range(num_tensors):
        group = sharing_pes(incidence, spatial_rank, t)
        parent = 0
        zero_parent = 1.0  # residencies of the parent that start from zero (output only)
        distinct_parent = 1.0
        for c in range(1, num_levels + 1):
            if c < num_levels and not keep[i, c, t]:
                continue
            instances = pes if c >= s else 1.0
            crossing = parent < s <= c
            tile, distinct = tile_and_distinct(temporal[i], extent, incidence, t, c)
            if c == num_levels:
                residencies = steps
            else:
                run = 1.0
                for l in range(c - 1, -1, -1):
                    stop = False
                    for k in range(num_ranks - 1, -1, -1):
                        r = order[i, l, k]
                        b = float(temporal[i, l, r])
                        if b > 1.0 and incidence[t, r]:
                            stop = True
                            break
                        run *= b
                    if stop:
                        break
                residencies = above[c] / run
            moved = residencies * instances * tile
            to_parent = moved / group if crossing else moved
            if is_output[t]:
                if crossing:
                    zero = distinct * instances + (residencies - distinct) * (instances - instances / group)
                else:
                    zero = zero_parent * distinct / distinct_parent
                read_back = (residencies * instances - zero) * tile
                reads[i, parent, t] += read_back
                updates[i, parent, t] += to_parent
                if c < num_levels:
                    fills[i, c, t] += read_back
                    reads[i, c, t] += moved
                zero_parent = zero
                distinct_parent = distinct
            else:
                reads[i, parent, t] += to_parent
                if c < num_levels:
                    fills[i, c, t] += moved
            if c < num_levels:
                parent = c

    # Occupancy, transfers, energy.
    compute = steps * cycles_per_point
    latency = compute
    energy = 0.0
    for l in range(num_levels):
        occ = occupancy_words(keep[i], extent, incidence, l)
        occupancy[i, l] = occ
        overflow = max(overflow, occ / capacity_words[l])
        words = 0.0
        for t in range(num_tensors):
            words += reads[i, l, t] + fills[i, l, t] + updates[i, l, t]
            energy += reads[i, l, t] * read_energy[l] + (fills[i, l, t] + updates[i, l, t]) * write_energy[l]
        per_instance = words / pes if l >= s else words
        cycles = per_instance / bandwidth[l]
        transfer_cycles[i, l] = cycles
        latency = max(latency, cycles)

    overflow_ratio[i] = overflow
    feasible[i] = overflow <= 1.0
    compute_cycles[i] = compute
    latency_cycles[i] = latency
    utilization[i] = useful_points * cycles_per_point / (max(all_pes, pes) * latency)
    energy_pj[i] = energy
    padded_points[i] = steps * pes
    pes_used[i] = pes


@kernel
def _cost_batch_serial(
    incidence, is_output, capacity_words, bandwidth, read_energy, write_energy, array_axes, spatial_level,
    temporal, spatial, order, keep, cycles_per_point, useful_points,
    reads, fills, updates, occupancy, transfer_cycles, overflow_ratio, feasible, compute_cycles,
    latency_cycles, utilization, energy_pj, padded_points, pes_used,
):  # fmt: skip
    """All mappings on one thread (for callers that parallelise over processes)."""
    for i in range(temporal.shape[0]):
        _cost_one(
            i, incidence, is_output, capacity_words, bandwidth, read_energy, write_energy, array_axes,
            spatial_level, temporal, spatial, order, keep, cycles_per_point, useful_points,
            reads, fills, updates, occupancy, transfer_cycles, overflow_ratio, feasible, compute_cycles,
            latency_cycles, utilization, energy_pj, padded_points, pes_used,
        )  # fmt: skip


@kernel(parallel=True)
def _cost_batch_parallel(
    incidence, is_output, capacity_words, bandwidth, read_energy, write_energy, array_axes, spatial_level,
    temporal, spatial, order, keep, cycles_per_point, useful_points,
    reads, fills, updates, occupancy, transfer_cycles, overflow_ratio, feasible, compute_cycles,
    latency_cycles, utilization, energy_pj, padded_points, pes_used,
):  # fmt: skip
    """All mappings over Numba's thread pool (each mapping writes only its own rows). The index is passed as
    int64, the serial kernel's type, so that ``_cost_one`` is compiled once for both (prange counts in uint64)."""
    for i in numba.prange(temporal.shape[0]):
        _cost_one(
            np.int64(i), incidence, is_output, capacity_words, bandwidth, read_energy, write_energy, array_axes,
            spatial_level, temporal, spatial, order, keep, cycles_per_point, useful_points,
            reads, fills, updates, occupancy, transfer_cycles, overflow_ratio, feasible, compute_cycles,
            latency_cycles, utilization, energy_pj, padded_points, pes_used,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# Boundary: check every array, collect every problem, then call a kernel.


def _names(given: tuple[str, ...], count: int, prefix: str) -> tuple[str, ...]:
    return tuple(given) if len(given) == count else tuple(f"{prefix}{k}" for k in range(count))


def _check_array(
    problems: list[str], where: str, array: object, dtype: type, shape: tuple[int | None, ...], meaning: str
) -> bool:
    """Record a problem unless ``array`` is an ndarray of ``dtype`` and ``shape`` (None = any size)."""
    expected = np.dtype(dtype)
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    if not isinstance(array, np.ndarray):
        problems.append(f"{where} must be a numpy array {expected}[{dims}] ({meaning}), got {type(array).__name__}")
        return False
    if array.dtype != expected:
        problems.append(
            f"{where} has dtype {array.dtype}, expected {expected} ({meaning}); "
            f"convert with np.asarray(x, dtype=np.{expected})"
        )
        return False
    if array.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape, array.shape, strict=True)):
        problems.append(f"{where} has shape {array.shape}, expected [{dims}] ({meaning})")
        return False
    return True


def _list_mappings(indices: np.ndarray, describe, limit: int = 5) -> list[str]:
    shown = [describe(int(k)) for k in indices[:limit]]
    if len(indices) > limit:
        shown.append(f"... and {len(indices) - limit} more mappings")
    return shown


_BAD_TEMPORAL, _BAD_SPATIAL, _BAD_ORDER, _DRAM_BYPASS, _NOT_COVERED = 1, 2, 4, 8, 16


@kernel
def _check_mappings(rank_sizes, temporal, spatial, order, keep, flags):
    """Set ``flags[i]`` to the OR of the ``_BAD_*`` bits that mapping ``i`` violates (0 = well-formed)."""
    num_levels = temporal.shape[1]
    num_ranks = temporal.shape[2]
    seen = np.zeros(num_ranks, dtype=np.bool_)
    for i in range(temporal.shape[0]):
        f = 0
        for level in range(num_levels):
            seen[:] = False
            for k in range(num_ranks):
                if temporal[i, level, k] < 1:
                    f |= _BAD_TEMPORAL
                r = order[i, level, k]
                if r < 0 or r >= num_ranks or seen[r]:
                    f |= _BAD_ORDER
                else:
                    seen[r] = True
        for a in range(spatial.shape[1]):
            for r in range(num_ranks):
                if spatial[i, a, r] < 1:
                    f |= _BAD_SPATIAL
        for t in range(keep.shape[2]):
            if not keep[i, 0, t]:
                f |= _DRAM_BYPASS
        for r in range(num_ranks):
            covered = 1.0
            for level in range(num_levels):
                covered *= float(temporal[i, level, r])
            for a in range(spatial.shape[1]):
                covered *= float(spatial[i, a, r])
            if covered < rank_sizes[r]:
                f |= _NOT_COVERED
        flags[i] = f


def _describe_bad_mappings(
    flags: np.ndarray,
    problem: NestProblem,
    batch: MappingBatch,
    level_names: tuple[str, ...],
    rank_names: tuple[str, ...],
    tensor_names: tuple[str, ...],
) -> list[str]:
    """One message per bad mapping and kind of fault (at most five of each kind)."""
    num_ranks = batch.temporal.shape[2]

    def bad_order(n: int) -> str:
        level = next(l for l, row in enumerate(batch.order[n]) if sorted(row.tolist()) != list(range(num_ranks)))
        return (
            f"mapping {n}: loop order at level '{level_names[level]}' is {batch.order[n, level].tolist()}, "
            f"not a permutation of 0..{num_ranks - 1}"
        )

    def not_covered(n: int) -> str:
        temporal = np.prod(batch.temporal[n].astype(np.float64), axis=0)
        spatial = np.prod(batch.spatial[n].astype(np.float64), axis=0)
        r = int(np.argmax(temporal * spatial < problem.rank_sizes))
        return (
            f"mapping {n}: temporal x spatial factors of rank '{rank_names[r]}' multiply to "
            f"{temporal[r] * spatial[r]:.0f} (temporal {temporal[r]:.0f}, spatial {spatial[r]:.0f}), "
            f"rank size is {problem.rank_sizes[r]}"
        )

    describe = {
        _BAD_TEMPORAL: lambda n: f"mapping {n}: temporal bounds must be >= 1, got {batch.temporal[n].tolist()}",
        _BAD_SPATIAL: lambda n: f"mapping {n}: spatial factors must be >= 1, got {batch.spatial[n].tolist()}",
        _BAD_ORDER: bad_order,
        _DRAM_BYPASS: lambda n: (
            f"mapping {n}: level '{level_names[0]}' must keep every tensor, it bypasses "
            f"{[tensor_names[t] for t in np.flatnonzero(~batch.keep[n, 0])]}"
        ),
        _NOT_COVERED: not_covered,
    }
    messages: list[str] = []
    for bit, message in describe.items():
        messages += _list_mappings(np.flatnonzero(flags & bit), message)
    return messages


def _validate(problem: NestProblem, arch: NestArch, batch: MappingBatch, cycles_per_point: float) -> None:
    problems: list[str] = []
    p, a, b = "NestProblem", "NestArch", "MappingBatch"

    ok_sizes = _check_array(problems, f"{p}.rank_sizes", problem.rank_sizes, np.int64, (None,), "rank sizes")
    num_ranks = problem.rank_sizes.shape[0] if ok_sizes else None
    ok_inc = _check_array(
        problems, f"{p}.incidence", problem.incidence, np.bool_, (None, num_ranks), "tensor x rank incidence"
    )
    num_tensors = problem.incidence.shape[0] if ok_inc else None
    _check_array(problems, f"{p}.is_output", problem.is_output, np.bool_, (num_tensors,), "output flags")
    if ok_sizes and np.any(problem.rank_sizes < 1):
        problems.append(f"{p}.rank_sizes must all be >= 1, got {problem.rank_sizes.tolist()}")

    ok_cap = _check_array(
        problems, f"{a}.capacity_words", arch.capacity_words, np.float64, (None,), "words per instance"
    )
    num_levels = arch.capacity_words.shape[0] if ok_cap else None
    ok_inst = _check_array(problems, f"{a}.instances", arch.instances, np.int64, (num_levels,), "copies per level")
    ok_bw = _check_array(
        problems, f"{a}.bandwidth_words_per_cycle", arch.bandwidth_words_per_cycle, np.float64, (num_levels,),
        "words per cycle per instance",
    )  # fmt: skip
    ok_energy = [
        _check_array(problems, f"{a}.{name}", getattr(arch, name), np.float64, (num_levels,), "pJ per word")
        for name in ("read_energy_pj_per_word", "write_energy_pj_per_word")
    ]
    ok_axes = _check_array(problems, f"{a}.array_axes", arch.array_axes, np.int64, (None,), "PEs per array axis")
    num_axes = arch.array_axes.shape[0] if ok_axes else None
    level_names = _names(arch.level_names, num_levels or 0, "L")
    s = arch.spatial_level
    ok_s = isinstance(s, int | np.integer) and not isinstance(s, bool)
    if num_levels is not None and num_levels < 2:
        problems.append(f"{a} needs at least 2 levels (DRAM and one inside the fan-out), got {num_levels}")
    elif num_levels is not None and not (ok_s and 1 <= s <= num_levels - 1):
        problems.append(f"{a}.spatial_level must be an int in 1..{num_levels - 1} (level index), got {s!r}")
        ok_s = False
    if ok_cap and np.any(~(arch.capacity_words > 0)):
        problems.append(f"{a}.capacity_words must be > 0 (inf allowed), got {arch.capacity_words.tolist()}")
    if ok_bw and np.any(~(arch.bandwidth_words_per_cycle > 0)):
        problems.append(
            f"{a}.bandwidth_words_per_cycle must be > 0 (inf = unconstrained), "
            f"got {arch.bandwidth_words_per_cycle.tolist()}"
        )
    for ok, name in zip(ok_energy, ("read_energy_pj_per_word", "write_energy_pj_per_word"), strict=True):
        values = getattr(arch, name)
        if ok and np.any(~(np.isfinite(values) & (values >= 0))):
            problems.append(f"{a}.{name} must be finite and >= 0, got {values.tolist()}")
    if ok_axes and np.any(arch.array_axes < 1):
        problems.append(f"{a}.array_axes must all be >= 1, got {arch.array_axes.tolist()}")
    if ok_inst and ok_axes and ok_s and num_levels is not None and num_levels >= 2:
        total = int(np.prod(arch.array_axes))
        expected = np.where(np.arange(num_levels) >= s, total, 1)
        if not np.array_equal(arch.instances, expected):
            problems.append(
                f"{a}.instances is {arch.instances.tolist()}; with one fan-out above level "
                f"'{level_names[s]}' over {total} PEs it must be {expected.tolist()}"
            )

    if not (isinstance(cycles_per_point, float | int) and np.isfinite(cycles_per_point) and cycles_per_point > 0):
        problems.append(f"cycles_per_point must be a finite number > 0, got {cycles_per_point!r}")

    ok_t = _check_array(
        problems, f"{b}.temporal", batch.temporal, np.int64, (None, num_levels, num_ranks), "loop bounds [N, L, R]"
    )
    num_mappings = batch.temporal.shape[0] if ok_t else None
    ok_sp = _check_array(
        problems, f"{b}.spatial", batch.spatial, np.int64, (num_mappings, num_axes, num_ranks),
        "spatial factors [N, A, R]",
    )  # fmt: skip
    ok_o = _check_array(
        problems, f"{b}.order", batch.order, np.int64, (num_mappings, num_levels, num_ranks),
        "loop orders [N, L, R]",
    )  # fmt: skip
    ok_k = _check_array(
        problems, f"{b}.keep", batch.keep, np.bool_, (num_mappings, num_levels, num_tensors),
        "kept tensors [N, L, T]",
    )  # fmt: skip

    rank_names = _names(problem.rank_names, num_ranks or 0, "R")
    tensor_names = _names(problem.tensor_names, num_tensors or 0, "T")
    if ok_t and ok_sp and ok_o and ok_k and ok_sizes:
        flags = np.zeros(batch.temporal.shape[0], dtype=np.int64)
        _check_mappings(problem.rank_sizes, batch.temporal, batch.spatial, batch.order, batch.keep, flags)
        problems += _describe_bad_mappings(flags, problem, batch, level_names, rank_names, tensor_names)

    if problems:
        raise SpecError(
            f"evaluate_nest: {len(problems)} problem(s) with the inputs:\n" + "\n".join(f"  - {m}" for m in problems)
        )


def evaluate_nest(
    problem: NestProblem,
    arch: NestArch,
    batch: MappingBatch,
    *,
    cycles_per_point: float = 1.0,
    parallel: bool = True,
    check: bool = True,
    out: NestCosts | None = None,
) -> NestCosts:
    """Cost every mapping of ``batch`` for one Einsum on one architecture (model: module docstring).

    ``cycles_per_point`` weights one iteration point (e.g. 2 for an op that takes two cycles).
    ``parallel`` spreads the batch over Numba's threads; pass False inside worker processes.
    Raises :class:`einsum.errors.SpecError` listing every malformed input. ``check=False`` skips those
    checks, for callers whose inputs are well formed by construction (a search streaming the points of a
    :class:`mappers.space.MapSpace`, whose problem and architecture were checked once when it was built).
    ``out``: costs of a batch at least this large, whose arrays are reused (the result is a view of their first
    rows, overwritten by the next call), so a search streaming batches allocates its outputs once.

    >>> import numpy as np
    >>> gemm = NestProblem(np.array([4, 4, 4]), np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], bool),
    ...                    np.array([False, False, True]), ("M", "N", "K"), ("A", "B", "C"))
    >>> arch = NestArch(np.array([np.inf, 64.0]), np.array([1, 1]), np.array([np.inf, np.inf]),
    ...                 np.array([100.0, 1.0]), np.array([100.0, 1.0]), 1, np.array([1]))
    >>> batch = MappingBatch(np.array([[[1, 1, 1], [4, 4, 4]]]), np.ones((1, 1, 3), np.int64),
    ...                      np.array([[[0, 1, 2], [0, 1, 2]]]), np.ones((1, 2, 3), bool))
    >>> costs = evaluate_nest(gemm, arch, batch)
    >>> costs.reads_words[0, 0].tolist()  # DRAM: A and B read once, no partial sums read back
    [16.0, 16.0, 0.0]
    >>> float(costs.latency_cycles[0]), bool(costs.feasible[0])
    (64.0, True)
    """
    if check:
        _validate(problem, arch, batch, cycles_per_point)
    n, num_levels, _ = batch.temporal.shape
    useful = float(np.prod(problem.rank_sizes.astype(np.float64)))
    fits = out is not None and out.reads_words.shape[0] >= n and out.reads_words.shape[1:] == (
        num_levels, problem.incidence.shape[0])  # fmt: skip
    costs = _view(out, n, useful) if fits else empty_costs(n, num_levels, problem.incidence.shape[0], useful)
    # one thread (a worker's share of a 2-core machine): the serial kernel, so the threaded one is never compiled
    kernel = _cost_batch_parallel if parallel and numba.get_num_threads() > 1 else _cost_batch_serial
    c = np.ascontiguousarray  # one compiled specialisation: C-contiguous arrays only (copies only if needed)
    kernel(
        c(problem.incidence), c(problem.is_output), c(arch.capacity_words), c(arch.bandwidth_words_per_cycle),
        c(arch.read_energy_pj_per_word), c(arch.write_energy_pj_per_word), c(arch.array_axes),
        int(arch.spatial_level), c(batch.temporal), c(batch.spatial), c(batch.order), c(batch.keep),
        float(cycles_per_point), costs.useful_points,
        costs.reads_words, costs.fills_words, costs.updates_words, costs.occupancy_words, costs.transfer_cycles,
        costs.overflow_ratio, costs.feasible, costs.compute_cycles, costs.latency_cycles, costs.utilization,
        costs.energy_pj, costs.padded_points, costs.pes_used,
    )  # fmt: skip
    return costs


def empty_costs(n: int, num_levels: int, num_tensors: int, useful_points: float = 0.0) -> NestCosts:
    """Uninitialised cost arrays for ``n`` mappings (the kernel writes every element), e.g. for ``out=``."""
    shape3 = (n, num_levels, num_tensors)
    return NestCosts(
        reads_words=np.empty(shape3),
        fills_words=np.empty(shape3),
        updates_words=np.empty(shape3),
        occupancy_words=np.empty((n, num_levels)),
        feasible=np.empty(n, dtype=np.bool_),
        overflow_ratio=np.empty(n),
        compute_cycles=np.empty(n),
        transfer_cycles=np.empty((n, num_levels)),
        latency_cycles=np.empty(n),
        utilization=np.empty(n),
        energy_pj=np.empty(n),
        padded_points=np.empty(n),
        pes_used=np.empty(n),
        useful_points=useful_points,
    )


def _view(costs: NestCosts, n: int, useful_points: float) -> NestCosts:
    """The first ``n`` rows of every per-mapping array of ``costs``."""
    rows = {f: getattr(costs, f)[:n] for f in NestCosts.__dataclass_fields__ if f != "useful_points"}
    return NestCosts(**rows, useful_points=useful_points)


# --------------------------------------------------------------------------------------------------------
# Warm-up and a throughput benchmark on a 3-level GEMM.


def _gemm_problem(size: int) -> NestProblem:
    """C[m, n] = sum_k A[m, k] B[k, n] with M = N = K = ``size``."""
    return NestProblem(
        rank_sizes=np.array([size, size, size], dtype=np.int64),
        incidence=np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=np.bool_),
        is_output=np.array([False, False, True]),
        rank_names=("M", "N", "K"),
        tensor_names=("A", "B", "C"),
    )


def _three_level_arch(pe_side: int) -> NestArch:
    """DRAM, a 1 Mi-word global buffer, 64-word PE registers under a ``pe_side`` x ``pe_side`` array."""
    pes = pe_side * pe_side
    return NestArch(
        capacity_words=np.array([np.inf, 2.0**20, 64.0]),
        instances=np.array([1, 1, pes], dtype=np.int64),
        bandwidth_words_per_cycle=np.array([32.0, 128.0, 4.0]),
        read_energy_pj_per_word=np.array([62.4, 6.0, 0.5]),
        write_energy_pj_per_word=np.array([62.4, 7.0, 0.5]),
        spatial_level=2,
        array_axes=np.array([pe_side, pe_side], dtype=np.int64),
        level_names=("DRAM", "GLB", "REG"),
    )


def _random_power_of_two_batch(
    rng: np.random.Generator, n: int, log2_size: int, num_levels: int, num_axes: int, num_ranks: int, num_tensors: int
) -> MappingBatch:
    """Random exact factorizations of 2**log2_size per rank over levels and axes; random orders and bypass."""
    parts = num_levels + num_axes
    cuts = np.sort(rng.integers(0, log2_size + 1, size=(n, num_ranks, parts - 1)), axis=2)
    edges = np.concatenate([np.zeros((n, num_ranks, 1), np.int64), cuts, np.full((n, num_ranks, 1), log2_size)], axis=2)
    factors = np.left_shift(1, np.diff(edges, axis=2)).astype(np.int64)  # [n, R, parts]
    keep = rng.random((n, num_levels, num_tensors)) < 0.8
    keep[:, 0, :] = True
    return MappingBatch(
        temporal=np.ascontiguousarray(factors[:, :, :num_levels].transpose(0, 2, 1)),
        spatial=np.ascontiguousarray(factors[:, :, num_levels:].transpose(0, 2, 1)),
        order=np.argsort(rng.random((n, num_levels, num_ranks)), axis=2).astype(np.int64),
        keep=keep,
    )


def warm_up(parallel: tuple[bool, ...] = (False, True)) -> None:
    """Compile (or load from the on-disk cache) the kernels on a tiny problem: the serial one (``False``) and the
    threaded one (``True``; the serial one where Numba has one thread); a process that forks workers loads the serial
    one only (threads do not survive a fork)."""
    rng = np.random.default_rng(0)
    batch = _random_power_of_two_batch(rng, 4, 2, 3, 2, 3, 3)
    for threaded in parallel:
        evaluate_nest(_gemm_problem(4), _three_level_arch(2), batch, parallel=threaded)


def bench_throughput(n_mappings: int, *, parallel: bool = True, repeats: int = 3, seed: int = 0) -> float:
    """Evaluations per second of :func:`evaluate_nest` on random mappings of a 512^3 GEMM.

    The architecture is DRAM / 1 Mi-word buffer / 64-word registers under a 16 x 16 array; mappings are
    random exact power-of-two factorizations, orders and bypass bits (feasible or not). Returns the best of
    ``repeats`` timed calls after a warm-up; validation time is included, mapping generation is not.
    """
    if n_mappings < 1:
        raise SpecError(f"bench_throughput: n_mappings must be >= 1, got {n_mappings}")
    problem, arch = _gemm_problem(512), _three_level_arch(16)
    batch = _random_power_of_two_batch(np.random.default_rng(seed), n_mappings, 9, 3, 2, 3, 3)
    warm_up()
    best = np.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        evaluate_nest(problem, arch, batch, parallel=parallel)
        best = min(best, time.perf_counter() - start)
    return n_mappings / best
