"""Tests of simulator.nest: a brute-force loop-nest walker, hand-counted cases, invariants, validation.

The brute force shares no code with the kernel: it lists the loop nest, steps through every time step and
every PE, tracks which tile of each tensor is resident in every instance of every level (and, for the
output, which elements hold a partial sum), and counts each transfer as it happens.
"""

from __future__ import annotations

import doctest
import itertools
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einsum.errors import SpecError
from simulator.nest import (
    ASSUMPTIONS,
    MappingBatch,
    NestArch,
    NestCosts,
    NestProblem,
    bench_throughput,
    evaluate_nest,
    warm_up,
)

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------------
# Brute force


def brute_force(rank_sizes, incidence, is_output, spatial_level, temporal, spatial, order, keep):
    """Walk the loop nest of one mapping; return reads, fills, updates [L][T], time steps and points."""
    num_levels, num_ranks = len(temporal), len(rank_sizes)
    num_tensors, num_axes = len(is_output), len(spatial)
    s = spatial_level

    # The nest, outermost first: (kind, level or axis, rank, bound).
    nest = []
    start = {}  # level -> position of its first loop in the nest
    for level in range(num_levels):
        if level == s:
            nest += [("space", a, r, int(spatial[a][r])) for a in range(num_axes) for r in range(num_ranks)]
        start[level] = len(nest)
        nest += [("time", level, int(r), int(temporal[level][r])) for r in order[level]]
    start[num_levels] = len(nest)  # the compute: a one-word tile

    stride = []
    for k, (_, _, rank, _) in enumerate(nest):
        stride.append(int(np.prod([b for (_, _, r, b) in nest[k + 1 :] if r == rank], dtype=np.int64)))

    def extent(level, rank):  # levels above the fan-out enclose the spatial loops
        return int(np.prod([b for (_, _, r, b) in nest[start[level] :] if r == rank], dtype=np.int64))

    ranks_of = [[r for r in range(num_ranks) if incidence[t][r]] for t in range(num_tensors)]

    def tile_id(level, t, coords):
        return tuple(coords[r] // extent(level, r) for r in ranks_of[t])

    def tile_size(level, t):
        return int(np.prod([extent(level, r) for r in ranks_of[t]], dtype=np.int64))

    def elements(level, t, tid):
        ranges = [
            range(i * extent(level, r), (i + 1) * extent(level, r)) for i, r in zip(tid, ranks_of[t], strict=True)
        ]
        return set(itertools.product(*ranges))

    time_loops = [k for k, loop in enumerate(nest) if loop[0] == "time"]
    space_loops = [k for k, loop in enumerate(nest) if loop[0] == "space"]
    pes = list(itertools.product(*[range(nest[k][3]) for k in space_loops]))

    reads = np.zeros((num_levels, num_tensors))
    fills = np.zeros((num_levels, num_tensors))
    updates = np.zeros((num_levels, num_tensors))
    chains = [[level for level in range(num_levels) if keep[level][t]] for t in range(num_tensors)]
    resident = defaultdict(dict)  # (t, level) -> {instance: tile id}
    valid = defaultdict(set)  # (t, level, instance) -> output elements holding a partial sum

    def instances_of(level):
        return pes if level >= s else [()]

    def drain(t, chain, level, leaving):
        """Drain the tiles in ``leaving`` ({instance: tile id}) of ``level`` into its parent."""
        parent = chain[chain.index(level) - 1]
        size = tile_size(level, t)
        reads[level, t] += size * len(leaving)
        if parent < s <= level:  # reduced in the network: one update per distinct tile
            for tid in set(leaving.values()):
                updates[parent, t] += size
                valid[(t, parent, ())] |= elements(level, t, tid)
        else:
            for inst, tid in leaving.items():
                updates[parent, t] += size
                valid[(t, parent, inst if parent >= s else ())] |= elements(level, t, tid)
        for inst in leaving:
            del resident[(t, level)][inst]

    def step(coords_of):
        for t in range(num_tensors):
            chain = chains[t]
            wanted = {}
            for level in chain[1:]:
                wanted[level] = {inst: tile_id(level, t, coords_of[inst if inst else pes[0]])
                                 for inst in instances_of(level)}  # fmt: skip
                if level < s:
                    assert len({tile_id(level, t, coords_of[pe]) for pe in pes}) == 1
            if is_output[t]:
                for level in reversed(chain[1:]):
                    current = resident[(t, level)]
                    leaving = {i: tid for i, tid in current.items() if wanted[level][i] != tid}
                    if leaving:
                        drain(t, chain, level, leaving)
            for j, level in enumerate(chain[1:], start=1):
                parent = chain[j - 1]
                size = tile_size(level, t)
                arriving = {i: tid for i, tid in wanted[level].items() if resident[(t, level)].get(i) != tid}
                crossing = parent < s <= level
                if not is_output[t]:
                    fills[level, t] += size * len(arriving)
                    reads[parent, t] += size * (len(set(arriving.values())) if crossing else len(arriving))
                else:
                    groups = defaultdict(list)
                    for inst, tid in arriving.items():
                        groups[tid if crossing else (tid, inst)].append(inst)
                    for members in groups.values():
                        tid = arriving[members[0]]
                        elems = elements(level, t, tid)
                        parent_valid = valid[(t, parent, members[0] if parent >= s else ())]
                        held = len(elems & parent_valid)
                        assert held in (0, len(elems)), "partially valid tile"
                        for k, inst in enumerate(sorted(members)):
                            owner = k == 0 and held > 0
                            valid[(t, level, inst)] = set(elems) if owner else set()
                        if held:
                            reads[parent, t] += size
                            fills[level, t] += size
                resident[(t, level)].update(arriving)
            innermost = chain[-1]
            points = {pe: tuple(coords_of[pe][r] for r in ranks_of[t]) for pe in pes}
            if not is_output[t]:
                reads[innermost, t] += len(pes) if innermost >= s else len(set(points.values()))
            else:
                targets = [(pe, e) for pe, e in points.items()] if innermost >= s else [
                    ((), e) for e in sorted(set(points.values()))
                ]  # fmt: skip
                for inst, e in targets:
                    held = valid[(t, innermost, inst)]
                    if e in held:
                        reads[innermost, t] += 1
                    updates[innermost, t] += 1
                    held.add(e)

    steps = 0
    for time_index in itertools.product(*[range(nest[k][3]) for k in time_loops]):
        steps += 1
        coords_of = {}
        for pe in pes:
            coords = [0] * num_ranks
            for k, i in zip(time_loops, time_index, strict=True):
                coords[nest[k][2]] += i * stride[k]
            for k, i in zip(space_loops, pe, strict=True):
                coords[nest[k][2]] += i * stride[k]
            coords_of[pe] = coords
        step(coords_of)
    for t in range(num_tensors):  # final drains of the output, innermost first
        if is_output[t]:
            for level in reversed(chains[t][1:]):
                if resident[(t, level)]:
                    drain(t, chains[t], level, dict(resident[(t, level)]))
    occupancy = [sum(tile_size(level, t) for t in range(num_tensors) if keep[level][t]) for level in range(num_levels)]
    return reads, fills, updates, steps, steps * len(pes), occupancy


# ------------------------------------------------------------------------------------------------------
# Helpers


def make_arch(num_levels, spatial_level, axes, capacity=None, bandwidth=None, read_e=None, write_e=None):
    pes = int(np.prod(axes))
    inf = np.full(num_levels, np.inf)
    return NestArch(
        capacity_words=inf.copy() if capacity is None else np.asarray(capacity, np.float64),
        instances=np.array([1 if level < spatial_level else pes for level in range(num_levels)], np.int64),
        bandwidth_words_per_cycle=inf.copy() if bandwidth is None else np.asarray(bandwidth, np.float64),
        read_energy_pj_per_word=np.ones(num_levels) if read_e is None else np.asarray(read_e, np.float64),
        write_energy_pj_per_word=np.ones(num_levels) if write_e is None else np.asarray(write_e, np.float64),
        spatial_level=spatial_level,
        array_axes=np.asarray(axes, np.int64),
    )


def gemm(m, n, k):
    """C[m, n] = sum_k A[m, k] B[k, n]; ranks M, N, K; tensors A, B, C."""
    return NestProblem(
        rank_sizes=np.array([m, n, k], np.int64),
        incidence=np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], np.bool_),
        is_output=np.array([False, False, True]),
        rank_names=("M", "N", "K"),
        tensor_names=("A", "B", "C"),
    )


def one_mapping(temporal, spatial, order, keep):
    return MappingBatch(
        temporal=np.asarray([temporal], np.int64),
        spatial=np.asarray([spatial], np.int64),
        order=np.asarray([order], np.int64),
        keep=np.asarray([keep], np.bool_),
    )


A, B, C = 0, 1, 2
M, N, K = 0, 1, 2


# ------------------------------------------------------------------------------------------------------
# Brute force vs kernel on random small problems and mappings


@st.composite
def cases(draw, max_levels=3, budget=256):
    num_ranks = draw(st.integers(1, 3))
    num_levels = draw(st.integers(2, max_levels))
    s = draw(st.integers(1, num_levels - 1))
    num_axes = draw(st.integers(0, 2))
    num_inputs = draw(st.integers(1, 3))
    num_tensors = num_inputs + 1
    incidence = [[draw(st.booleans()) for _ in range(num_ranks)] for _ in range(num_tensors)]
    is_output = [False] * num_inputs + [True]
    num_mappings = draw(st.integers(1, 3))
    mappings = []
    sizes = None
    for _ in range(num_mappings):
        remaining = budget
        temporal = np.ones((num_levels, num_ranks), np.int64)
        spatial = np.ones((num_axes, num_ranks), np.int64)
        slots = [("t", level, r) for level in range(num_levels) for r in range(num_ranks)]
        slots += [("s", a, r) for a in range(num_axes) for r in range(num_ranks)]
        for kind, x, r in draw(st.permutations(slots)):
            f = draw(st.integers(1, max(1, min(3, remaining))))
            remaining //= f
            (temporal if kind == "t" else spatial)[x, r] = f
        products = temporal.prod(axis=0) * spatial.prod(axis=0)
        if sizes is None:
            sizes = [draw(st.integers(max(1, (int(p) + 1) // 2), int(p))) for p in products]
        else:  # later mappings must cover the same sizes: pad the outermost loop if needed
            for r in range(num_ranks):
                while temporal[:, r].prod() * spatial[:, r].prod() < sizes[r]:
                    temporal[0, r] += 1
        order = np.array([draw(st.permutations(range(num_ranks))) for _ in range(num_levels)], np.int64)
        keep = np.array([[True] * num_tensors] + [[draw(st.booleans()) for _ in range(num_tensors)]
                                                  for _ in range(num_levels - 1)])  # fmt: skip
        mappings.append((temporal, spatial, order, keep))
    axes = [int(np.max([m[1][a].prod() for m in mappings])) for a in range(num_axes)]
    problem = NestProblem(
        rank_sizes=np.array(sizes, np.int64),
        incidence=np.array(incidence, np.bool_).reshape(num_tensors, num_ranks),
        is_output=np.array(is_output),
    )
    batch = MappingBatch(
        temporal=np.stack([m[0] for m in mappings]),
        spatial=np.stack([m[1] for m in mappings]).reshape(num_mappings, num_axes, num_ranks),
        order=np.stack([m[2] for m in mappings]),
        keep=np.stack([m[3] for m in mappings]),
    )
    return problem, make_arch(num_levels, s, np.array(axes, np.int64)), batch


def check_against_brute_force(problem, arch, batch):
    costs = evaluate_nest(problem, arch, batch)
    for n in range(batch.num_mappings):
        reads, fills, updates, steps, points, occupancy = brute_force(
            problem.rank_sizes.tolist(), problem.incidence.tolist(), problem.is_output.tolist(),
            arch.spatial_level, batch.temporal[n].tolist(), batch.spatial[n].tolist(), batch.order[n].tolist(),
            batch.keep[n].tolist(),
        )  # fmt: skip
        np.testing.assert_array_equal(costs.reads_words[n], reads, err_msg="reads")
        np.testing.assert_array_equal(costs.fills_words[n], fills, err_msg="fills")
        np.testing.assert_array_equal(costs.updates_words[n], updates, err_msg="updates")
        np.testing.assert_array_equal(costs.occupancy_words[n], occupancy, err_msg="occupancy")
        assert costs.compute_cycles[n] == steps
        assert costs.padded_points[n] == points


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_kernel_matches_brute_force(case):
    check_against_brute_force(*case)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(max_levels=4, budget=512))
def test_kernel_matches_brute_force_deeper(case):
    check_against_brute_force(*case)


def test_brute_force_spatial_reduction_with_read_back():
    """K spread over PEs while partial sums of C are read back into PE registers (owner semantics)."""
    problem = gemm(2, 2, 4)
    arch = make_arch(3, 2, [2])
    # DRAM: k2 outside m2 -> C tiles revisited; GLB bypasses C; spatial k2; registers hold C.
    batch = one_mapping(
        temporal=[[2, 1, 2], [1, 2, 1], [1, 1, 1]],
        spatial=[[1, 1, 2]],
        order=[[K, M, N], [M, N, K], [M, N, K]],
        keep=[[1, 1, 1], [1, 1, 0], [1, 1, 1]],
    )
    check_against_brute_force(problem, arch, batch)
    costs = evaluate_nest(problem, arch, batch)
    # C in each PE register: 8 residencies (k2 m2 at DRAM, n2 at GLB), 4 distinct; 16 drains reduced in
    # pairs to 8 DRAM updates; the 4 revisits read the partial sum back into one PE of each pair.
    assert costs.updates_words[0, 0, C] == 8
    assert costs.reads_words[0, 0, C] == 4
    assert costs.fills_words[0, 2, C] == 4


# ------------------------------------------------------------------------------------------------------
# Hand-counted cases


def test_everything_fits_gives_compulsory_traffic():
    problem = gemm(4, 6, 5)
    arch = make_arch(2, 1, [1], capacity=[np.inf, 4 * 5 + 5 * 6 + 4 * 6])
    costs = evaluate_nest(
        problem, arch, one_mapping([[1, 1, 1], [4, 6, 5]], [[1, 1, 1]], [[M, N, K]] * 2, [[1] * 3] * 2)
    )
    assert costs.reads_words[0, 0].tolist() == [20, 30, 0]
    assert costs.updates_words[0, 0].tolist() == [0, 0, 24]
    assert costs.fills_words[0, 1].tolist() == [20, 30, 0]
    # Compute: 120 points read A and B from level 1 and update C there; the first update of each C needs no read.
    assert costs.reads_words[0, 1].tolist() == [120, 120, 120 - 24 + 24]  # RMW reads + drain to DRAM
    assert costs.updates_words[0, 1].tolist() == [0, 0, 120]
    assert costs.feasible[0] and costs.occupancy_words[0, 1] == 74
    assert costs.compute_cycles[0] == 120 and costs.utilization[0] == 1.0


def test_output_stationary_gemm():
    """DRAM loops m4 n4 k4 (k innermost), registers hold one word of each tensor."""
    costs = evaluate_nest(
        gemm(4, 4, 4), make_arch(2, 1, [1]),
        one_mapping([[4, 4, 4], [1, 1, 1]], [[1, 1, 1]], [[M, N, K], [M, N, K]], [[1, 1, 1], [1, 1, 1]]),
    )  # fmt: skip
    assert costs.reads_words[0, 0].tolist() == [64, 64, 0]  # A, B refetched every point; C never read back
    assert costs.updates_words[0, 0, C] == 16  # each C written once
    assert costs.fills_words[0, 1].tolist() == [64, 64, 0]
    assert costs.updates_words[0, 1, C] == 64
    assert costs.reads_words[0, 1].tolist() == [64, 64, 48 + 16]  # 64 updates - 16 first writes, 16 drains


def test_weight_stationary_gemm_rereads_partial_sums():
    """Order k, n, m (m innermost): B[k, n] stays, C is re-read once per k after the first."""
    costs = evaluate_nest(
        gemm(4, 4, 4), make_arch(2, 1, [1]),
        one_mapping([[4, 4, 4], [1, 1, 1]], [[1, 1, 1]], [[K, N, M], [M, N, K]], [[1, 1, 1], [1, 1, 1]]),
    )  # fmt: skip
    assert costs.reads_words[0, 0, B] == 16  # compulsory: stationary
    assert costs.reads_words[0, 0, A] == 64
    assert costs.updates_words[0, 0, C] == 64  # drained every point
    assert costs.reads_words[0, 0, C] == 48  # read back for k = 1, 2, 3
    assert costs.fills_words[0, 1, C] == 48


def test_spatial_4x4_gemm():
    """M = N = 8, K = 4; DRAM m2 n2, GLB k4, spatial m4 x n4, registers one word each."""
    arch = make_arch(3, 2, [4, 4])
    costs = evaluate_nest(
        gemm(8, 8, 4), arch,
        one_mapping(
            temporal=[[2, 2, 1], [1, 1, 4], [1, 1, 1]],
            spatial=[[4, 1, 1], [1, 4, 1]],
            order=[[M, N, K]] * 3,
            keep=[[1, 1, 1]] * 3,
        ),
    )  # fmt: skip
    # GLB tiles are 4 x 4 = 16 words; A is reused across n at DRAM, B is fetched once per m tile.
    assert costs.reads_words[0, 0].tolist() == [32, 64, 0]
    assert costs.updates_words[0, 0, C] == 64
    assert costs.fills_words[0, 1].tolist() == [32, 64, 0]
    # Registers: every PE refills A and B every step (256 words each); multicast divides GLB reads by 4.
    assert costs.fills_words[0, 2].tolist() == [256, 256, 0]
    assert costs.reads_words[0, 1].tolist() == [64, 64, 64]  # C: 64 drains to DRAM, no read-backs
    assert costs.updates_words[0, 1, C] == 64
    assert costs.updates_words[0, 2, C] == 256
    assert costs.reads_words[0, 2].tolist() == [256, 256, 192 + 64]
    assert costs.pes_used[0] == 16 and costs.compute_cycles[0] == 16
    assert costs.utilization[0] == 1.0
    assert costs.occupancy_words[0].tolist() == [32 + 32 + 64, 48, 3]


def test_padding_is_reported_and_computed():
    costs = evaluate_nest(
        gemm(3, 4, 4), make_arch(2, 1, [1]),
        one_mapping([[2, 1, 1], [2, 4, 4]], [[1, 1, 1]], [[M, N, K]] * 2, [[1, 1, 1]] * 2),
    )  # fmt: skip
    assert costs.padded_points[0] == 64 and costs.useful_points == 48
    assert costs.padding_ratio[0] == pytest.approx(64 / 48)
    assert costs.utilization[0] == pytest.approx(48 / 64)


def test_latency_energy_and_bandwidth():
    arch = make_arch(2, 1, [1], bandwidth=[1.0, np.inf], read_e=[10.0, 1.0], write_e=[20.0, 2.0])
    costs = evaluate_nest(
        gemm(4, 4, 4), arch,
        one_mapping([[4, 4, 4], [1, 1, 1]], [[1, 1, 1]], [[M, N, K]] * 2, [[1, 1, 1]] * 2),
        cycles_per_point=0.5,
    )  # fmt: skip
    dram_words = 64 + 64 + 16
    assert costs.transfer_cycles[0].tolist() == [dram_words, 0.0]
    assert costs.compute_cycles[0] == 32 and costs.latency_cycles[0] == dram_words
    assert costs.utilization[0] == pytest.approx(64 * 0.5 / dram_words)
    level1 = (64 + 64 + 64) * 1.0 + (64 + 64 + 64) * 2.0  # reads A, B, C (48 RMW + 16 drains); fills + updates
    assert costs.energy_pj[0] == pytest.approx((64 + 64) * 10.0 + 16 * 20.0 + level1)


def test_register_bypass_reads_parent_with_multicast():
    """A bypasses the registers: each step the GLB feeds A to the 4 PEs spread over N with one read."""
    costs = evaluate_nest(
        gemm(2, 4, 2), make_arch(3, 2, [4]),
        one_mapping([[1, 1, 1], [2, 1, 2], [1, 1, 1]], [[1, 4, 1]], [[M, N, K]] * 3, [[1, 1, 1], [1, 1, 1], [0, 1, 1]]),
    )  # fmt: skip
    assert costs.reads_words[0, 1, A] == 4  # 4 steps x 1 multicast read
    assert costs.reads_words[0, 1, B] == 16  # B is indexed by N: no sharing, 4 steps x 4 PEs
    assert costs.fills_words[0, 2, B] == 16


# ------------------------------------------------------------------------------------------------------
# Invariants on larger random batches


def random_gemm_batch(rng, n, sizes, num_levels, num_axes):
    """Random exact factorizations (divisor splits), orders and bypass bits."""
    num_ranks = len(sizes)
    temporal = np.ones((n, num_levels, num_ranks), np.int64)
    spatial = np.ones((n, num_axes, num_ranks), np.int64)
    for i in range(n):
        for r, size in enumerate(sizes):
            rest = size
            slots = [("t", level) for level in range(num_levels)] + [("s", a) for a in range(num_axes)]
            rng.shuffle(slots)
            for kind, x in slots[:-1]:
                divisors = [d for d in range(1, rest + 1) if rest % d == 0]
                f = int(rng.choice(divisors))
                (temporal if kind == "t" else spatial)[i, x, r] = f
                rest //= f
            kind, x = slots[-1]
            (temporal if kind == "t" else spatial)[i, x, r] *= rest
    keep = rng.random((n, num_levels, 3)) < 0.7
    keep[:, 0] = True
    order = np.argsort(rng.random((n, num_levels, num_ranks)), axis=2).astype(np.int64)
    return MappingBatch(temporal, spatial, order, keep)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_invariants(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.choice([4, 6, 8, 12, 16], size=3)]
    problem = gemm(*sizes)
    arch = make_arch(
        3, 2, [4, 4], capacity=[np.inf, 512.0, 8.0], bandwidth=[4.0, 64.0, 2.0],
        read_e=[100.0, 5.0, 1.0], write_e=[100.0, 6.0, 1.0],
    )  # fmt: skip
    batch = random_gemm_batch(rng, 200, sizes, 3, 2)
    costs = evaluate_nest(problem, arch, batch, cycles_per_point=1.0)
    m, n, k = sizes
    assert np.all(costs.reads_words[:, 0, A] >= m * k)
    assert np.all(costs.reads_words[:, 0, B] >= k * n)
    assert np.all(costs.updates_words[:, 0, C] >= m * n)
    assert np.all(costs.reads_words[:, 0, C] == costs.updates_words[:, 0, C] - m * n)
    assert np.all(costs.utilization <= 1.0 + 1e-12) and np.all(costs.utilization > 0)
    assert np.all(costs.latency_cycles >= costs.compute_cycles)
    dram_words = costs.reads_words[:, 0].sum(axis=1) + costs.writes_words[:, 0].sum(axis=1)
    assert np.allclose(costs.transfer_cycles[:, 0], dram_words / 4.0)
    assert np.all(costs.latency_cycles >= dram_words / 4.0 - 1e-9)
    assert np.all(costs.padded_points == m * n * k)
    assert np.all(costs.compute_cycles * costs.pes_used == m * n * k)
    # Feasibility is exactly: tiles fit and spatial factors fit.
    fits = np.all(costs.occupancy_words <= arch.capacity_words, axis=1)
    fits &= np.all(batch.spatial.prod(axis=2) <= arch.array_axes, axis=1)
    np.testing.assert_array_equal(costs.feasible, fits)
    assert np.all(costs.feasible == (costs.overflow_ratio <= 1.0))
    assert np.all(costs.energy_pj > 0)
    serial = evaluate_nest(problem, arch, batch, parallel=False)
    np.testing.assert_array_equal(serial.latency_cycles, costs.latency_cycles)
    np.testing.assert_array_equal(serial.reads_words, costs.reads_words)


def test_tile_overflow_is_infeasible_with_ratio():
    arch = make_arch(2, 1, [1], capacity=[np.inf, 10.0])
    costs = evaluate_nest(
        gemm(4, 4, 4), arch, one_mapping([[1, 1, 1], [4, 4, 4]], [[1, 1, 1]], [[M, N, K]] * 2, [[1, 1, 1]] * 2)
    )
    assert not costs.feasible[0]
    assert costs.overflow_ratio[0] == pytest.approx(48 / 10)


def test_spatial_overflow_is_infeasible_with_ratio():
    costs = evaluate_nest(
        gemm(8, 8, 1), make_arch(2, 1, [4, 4]),
        one_mapping([[1, 1, 1], [1, 1, 1]], [[8, 1, 1], [1, 8, 1]], [[M, N, K]] * 2, [[1, 1, 1]] * 2),
    )  # fmt: skip
    assert not costs.feasible[0]
    assert costs.overflow_ratio[0] == 2.0


# ------------------------------------------------------------------------------------------------------
# Validation at the boundary


def good_inputs():
    problem = gemm(4, 4, 4)
    arch = make_arch(2, 1, [2])
    batch = one_mapping([[2, 2, 4], [1, 1, 1]], [[2, 2, 1]], [[M, N, K]] * 2, [[1, 1, 1]] * 2)
    return problem, arch, batch


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda p, a, b: (p, a, MappingBatch(b.temporal.astype(np.int32), b.spatial, b.order, b.keep)),
         "MappingBatch.temporal has dtype int32, expected int64"),
        (lambda p, a, b: (p, a, MappingBatch(b.temporal[:, :1], b.spatial, b.order, b.keep)),
         "MappingBatch.temporal has shape (1, 1, 3), expected [?, 2, 3]"),
        (lambda p, a, b: (p, a, MappingBatch(b.temporal * np.array([1, 1, 0]), b.spatial, b.order, b.keep)),
         "mapping 0: temporal bounds must be >= 1"),
        (lambda p, a, b: (p, a, MappingBatch(np.array([[[2, 2, 2], [1, 1, 1]]]), b.spatial, b.order, b.keep)),
         "mapping 0: temporal x spatial factors of rank 'K' multiply to 2 (temporal 2, spatial 1), rank size is 4"),
        (lambda p, a, b: (p, a, MappingBatch(b.temporal, b.spatial, np.array([[[0, 0, 1], [0, 1, 2]]]), b.keep)),
         "mapping 0: loop order at level 'L0' is [0, 0, 1], not a permutation of 0..2"),
        (lambda p, a, b: (p, a, MappingBatch(b.temporal, b.spatial, b.order, np.array([[[1, 0, 1], [1, 1, 1]]], bool))),
         "mapping 0: level 'L0' must keep every tensor, it bypasses ['B']"),
        (lambda p, a, b: (p, make_arch(2, 1, [8]), b), None),
        (lambda p, a, b: (p, NestArch(a.capacity_words, np.array([1, 1]), a.bandwidth_words_per_cycle,
                                      a.read_energy_pj_per_word, a.write_energy_pj_per_word, 1, a.array_axes), b),
         "NestArch.instances is [1, 1]; with one fan-out above level 'L1' over 2 PEs it must be [1, 2]"),
        (lambda p, a, b: (p, NestArch(a.capacity_words, a.instances, a.bandwidth_words_per_cycle,
                                      a.read_energy_pj_per_word, a.write_energy_pj_per_word, 2, a.array_axes), b),
         "NestArch.spatial_level must be an int in 1..1"),
        (lambda p, a, b: (p, NestArch(a.capacity_words, a.instances, np.array([np.inf, 0.0]),
                                      a.read_energy_pj_per_word, a.write_energy_pj_per_word, 1, a.array_axes), b),
         "bandwidth_words_per_cycle must be > 0"),
        (lambda p, a, b: (NestProblem(p.rank_sizes, p.incidence, p.is_output[:2]), a, b),
         "NestProblem.is_output has shape (2,), expected [3]"),
        (lambda p, a, b: (NestProblem([4, 4, 4], p.incidence, p.is_output), a, b),
         "NestProblem.rank_sizes must be a numpy array int64[?]"),
    ],
)  # fmt: skip
def test_validation_messages(change, fragment):
    problem, arch, batch = change(*good_inputs())
    if fragment is None:  # a valid variation (wider array than needed)
        evaluate_nest(problem, arch, batch)
        return
    with pytest.raises(SpecError) as excinfo:
        evaluate_nest(problem, arch, batch)
    assert fragment in str(excinfo.value)


def test_validation_collects_every_problem():
    problem, arch, _ = good_inputs()
    bad = MappingBatch(
        np.array([[[1, 2, 4], [1, 1, 1]], [[2, 2, 4], [1, 1, 1]]]),
        np.ones((2, 1, 3), np.int64),
        np.array([[[0, 1, 2], [0, 1, 2]], [[0, 1, 1], [0, 1, 2]]]),
        np.ones((2, 2, 3), bool),
    )
    with pytest.raises(SpecError) as excinfo:
        evaluate_nest(problem, arch, bad, cycles_per_point=0.0)
    text = str(excinfo.value)
    assert "4 problem(s)" in text
    assert "cycles_per_point must be a finite number > 0" in text
    assert "mapping 0: temporal x spatial factors of rank 'M' multiply to 1" in text
    assert "mapping 1: temporal x spatial factors of rank 'M' multiply to 2" in text
    assert "mapping 1: loop order at level 'L0'" in text


# ------------------------------------------------------------------------------------------------------
# Warm-up, benchmark helper, pure-Python mode


def test_docstring_example():
    import simulator.nest

    assert doctest.testmod(simulator.nest).failed == 0


def test_warm_up_and_bench_helper_run():
    warm_up()
    assert bench_throughput(200, repeats=1) > 0
    assert len(ASSUMPTIONS) >= 5
    assert isinstance(evaluate_nest(*good_inputs()), NestCosts)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already running without JIT")
def test_this_file_passes_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__,
         "-k", "not deeper and not passes_without_jit"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
