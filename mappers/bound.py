"""Lower bounds on the cost of every mapping of a tiling, for a branch-and-bound exhaustive search.

A *tiling* of a :class:`~mappers.space.MapSpace` fixes the spatial assignment and every temporal factor; its
points differ only in loop orders and bypass bits. For each tiling that fits at all (the smallest bypass
choice fits every level), :func:`tiling_bounds` computes a latency and an energy that no point of the tiling
beats under the cost model of :mod:`simulator.nest`:

* **Per-tensor relaxation.** Every word count of the model is a sum over tensors, so each tensor is given its
  own best choices: its own bypass bits (each kept/bypassed pattern of its column of the bypass table) and its
  own loop orders, where at every level the loops not indexing it run innermost. That order makes every
  residency count of the tensor (``F_c`` in :mod:`simulator.nest`) as small as any order can, at every level
  at once, and an input's words grow with each ``F_c``.
* **The output's partial sums.** Drains and updates grow with ``F_c``; read-backs are ``F_c * I_c - Z_c`` per
  tile. Above the fan-out and across it ``Z_c`` is exact (it does not depend on orders above, or grows with
  ``F_c`` so that read-backs still grow with it); below the fan-out ``Z_c`` follows the crossing link's, which
  is bounded above by its value with no reuse at all (``F = `` every step above), so read-backs there are
  bounded below (and by 0).
* **Latency** = max(compute cycles, every level's least words / its bandwidth); **energy** = every tensor's
  least storage energy + the compute energy of the padded points. Both are exact functions of the tiling
  otherwise (compute cycles, padded points, tiles).

A tiling whose bound cannot beat the best mapping found so far is skipped with all its points (bypass choices x
orders). The bounds are computed by a depth-first walk over the variables' factorizations that drops a whole
subtree as soon as the variables chosen so far overflow a level with the smallest bypass choice (the other
variables at their smallest extents), so tilings that cannot fit are never visited one by one.
"""

from __future__ import annotations

import numpy as np

from simulator.jit import kernel
from simulator.nest import occupancy_words, sharing_pes, steps_above, tile_and_distinct

__all__ = ["BOUND_SLACK", "keep_bounds", "tiling_bounds"]

BOUND_SLACK = 1e-12
"""Relative allowance for rounding: a bound is lowered by this fraction before it is compared, because the bound
and the cost kernel multiply the same factors in different orders (a few ulps, far below this)."""


def tiling_bounds(space, max_rows: int = 1 << 22, max_visits: int = 1 << 24):
    """(assignment, tiling, latency bound, energy bound) of every tiling of ``space`` that fits with some bypass
    choice, in the space's order (the least bounds over its fitting bypass choices); None when there are more
    than ``max_rows`` such tilings or the walk visits more than ``max_visits`` nodes (search them by walking)."""
    p, a = space.problem, space.nest_arch
    ext, min_ext = _extents(space)
    keep_min = np.logical_and.reduce(space.keep_table, axis=0)
    chains, n_chains, chain_of = _chains(space.keep_table)
    scratch = _scratch(space, chains)
    rows = min(max_rows, 1 << 18)
    while True:
        out = (np.empty(rows, np.int64), np.empty(rows, np.int64), np.empty(rows), np.empty(rows))
        n, next_s = _bounds(
            0, space.assign, space.assign_spatial, space.group_start, space.group_count, space.trows, ext,
            min_ext, p.incidence, p.is_output, a.capacity_words, int(a.spatial_level), space.keep_table, keep_min,
            chains, n_chains, chain_of, a.bandwidth_words_per_cycle, a.read_energy_pj_per_word,
            a.write_energy_pj_per_word, float(space.cycles_per_point), float(space.compute_energy_pj_per_point),
            max_visits, *out, *scratch,
        )  # fmt: skip
        if n == -2:
            return None
        if n >= 0 and next_s == space.num_assignments:
            return tuple(x[:n] for x in out)
        if rows >= max_rows:
            return None
        rows = min(max_rows, rows * 4)


def keep_bounds(space, tiling_s: np.ndarray, tiling_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64[n, K] latency and energy bounds of each bypass choice of the listed tilings (``inf``: overflows)."""
    p, a = space.problem, space.nest_arch
    ext, _ = _extents(space)
    out_lat = np.empty((len(tiling_s), space.num_keep))
    out_en = np.empty((len(tiling_s), space.num_keep))
    _keep_bounds(
        np.ascontiguousarray(tiling_s), np.ascontiguousarray(tiling_t), space.assign, space.assign_spatial,
        space.group_start, space.group_count, space.trows, ext, p.incidence, p.is_output, a.capacity_words,
        int(a.spatial_level), space.keep_table, space.order_table, space.order_count, a.bandwidth_words_per_cycle,
        a.read_energy_pj_per_word, a.write_energy_pj_per_word, float(space.cycles_per_point),
        float(space.compute_energy_pj_per_point), out_lat, out_en,
    )  # fmt: skip
    return out_lat, out_en


def _extents(space) -> tuple[np.ndarray, np.ndarray]:
    """float64[rows, L]: each factorization row's extent per level (its spatial part counted above the fan-out);
    float64[R, G, L]: the least of them per variable and group."""
    s = int(space.nest_arch.spatial_level)
    trows = space.trows.astype(np.float64)
    ext = np.flip(np.cumprod(np.flip(trows, axis=1), axis=1), axis=1)
    num_ranks, num_groups = space.group_count.shape
    min_ext = np.ones((num_ranks, num_groups, trows.shape[1]))
    for r in range(num_ranks):
        for g in np.flatnonzero(space.group_count[r]):
            lo, count = space.group_start[r, g], space.group_count[r, g]
            ext[lo : lo + count, :s] *= float(np.prod(space.group_spatial[r, g].astype(np.float64)))
            min_ext[r, g] = ext[lo : lo + count].min(axis=0)
    return np.ascontiguousarray(ext), min_ext


def _chains(keep_table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bool[T, C, L]: the distinct keep columns of each tensor in the bypass table; int64[T]: how many;
    int64[K, T]: which of them each bypass choice uses."""
    num_keep, num_levels, num_tensors = keep_table.shape
    chains = np.zeros((num_tensors, num_keep, num_levels), dtype=np.bool_)
    counts = np.zeros(num_tensors, dtype=np.int64)
    chain_of = np.zeros((num_keep, num_tensors), dtype=np.int64)
    for t in range(num_tensors):
        columns, index = np.unique(keep_table[:, :, t], axis=0, return_inverse=True)
        chains[t, : len(columns)] = columns
        counts[t] = len(columns)
        chain_of[:, t] = index.ravel()
    return chains[:, : counts.max()].copy(), counts, chain_of


@kernel
def _bound_one(
    temporal, spatial_rank, pes, extent, incidence, is_output, capacity, s, keep_table, chains, n_chains, chain_of,
    bandwidth, read_e, write_e, cycles_per_point, energy_per_point, chain_words, chain_energy, words,
    keep_latency, keep_energy,
):  # fmt: skip
    """Fill ``keep_latency[k]`` and ``keep_energy[k]`` with what no loop order of bypass choice ``k`` of this tiling
    beats (``inf`` where the choice overflows a level); see the module docstring."""
    num_levels, num_ranks = temporal.shape
    num_tensors = incidence.shape[0]
    above = steps_above(temporal)
    steps = above[num_levels]
    for t in range(num_tensors):
        group = sharing_pes(incidence, spatial_rank, t)
        for j in range(n_chains[t]):
            words[:] = 0.0
            energy = 0.0
            parent = 0
            zero_parent = 1.0
            distinct_parent = 1.0
            for c in range(1, num_levels + 1):
                if c < num_levels and not chains[t, j, c]:
                    continue
                instances = pes if c >= s else 1.0
                crossing = parent < s <= c
                tile, distinct = tile_and_distinct(temporal, extent, incidence, t, c)
                if c == num_levels:
                    residencies = steps
                else:
                    run = 1.0
                    for l in range(c - 1, -1, -1):
                        stop = False
                        for r in range(num_ranks):
                            b = temporal[l, r]
                            if b > 1.0:
                                if incidence[t, r]:
                                    stop = True
                                else:
                                    run *= b
                        if stop:
                            break
                    residencies = above[c] / run
                e, wp, wc, zero_next = _link(
                    t, parent, c, residencies, distinct, tile, instances, group, crossing, zero_parent,
                    distinct_parent, above[c], is_output, read_e, write_e, num_levels,
                )  # fmt: skip
                energy += e
                words[parent] += wp
                if c < num_levels:
                    words[c] += wc
                if is_output[t]:
                    zero_parent = zero_next
                    distinct_parent = distinct
                if c < num_levels:
                    parent = c
            for l in range(num_levels):
                chain_words[t, j, l] = words[l]
            chain_energy[t, j] = energy
    compute = steps * cycles_per_point
    compute_energy = steps * pes * energy_per_point
    for k in range(keep_table.shape[0]):
        ok = True
        latency = compute
        for l in range(1, num_levels):
            if occupancy_words(keep_table[k], extent, incidence, l) > capacity[l]:
                ok = False
        if not ok:
            keep_latency[k] = np.inf
            keep_energy[k] = np.inf
            continue
        energy = compute_energy
        for t in range(num_tensors):
            energy += chain_energy[t, chain_of[k, t]]
        for l in range(num_levels):
            words = 0.0
            for t in range(num_tensors):
                words += chain_words[t, chain_of[k, t], l]
            per_instance = words / pes if l >= s else words
            latency = max(latency, per_instance / bandwidth[l])
        keep_latency[k] = latency
        keep_energy[k] = energy


@kernel
def _link(
    t, parent, c, residencies, distinct, tile, instances, group, crossing, zero_parent, distinct_parent, above_c,
    is_output, read_e, write_e, num_levels,
):  # fmt: skip
    """One link of tensor ``t``'s chain (parent -> c) with ``residencies`` as in :mod:`simulator.nest`: returns
    (energy, words at the parent, words at c, zero-started residencies for the next link); read-backs below the
    fan-out are bounded below through ``zero_parent`` (an upper bound there)."""
    moved = residencies * instances * tile
    to_parent = moved / group if crossing else moved
    if is_output[t]:
        if crossing:
            zero = distinct * instances + (residencies - distinct) * (instances - instances / group)
            zero_next = distinct * instances + (above_c - distinct) * (instances - instances / group)
        else:
            zero = zero_parent * distinct / distinct_parent
            zero_next = zero
        read_back = max(0.0, (residencies * instances - zero) * tile)
        energy = read_back * read_e[parent] + to_parent * write_e[parent]
        at_parent = read_back + to_parent
        at_child = 0.0
        if c < num_levels:
            energy += read_back * write_e[c] + moved * read_e[c]
            at_child = read_back + moved
        return energy, at_parent, at_child, zero_next
    energy = to_parent * read_e[parent]
    at_child = 0.0
    if c < num_levels:
        energy += moved * write_e[c]
        at_child = moved
    return energy, to_parent, at_child, 0.0


@kernel
def _bound_ordered(
    temporal, spatial_rank, pes, extent, incidence, is_output, capacity, s, keep_table, order_table, order_count,
    bandwidth, read_e, write_e, cycles_per_point, energy_per_point, keep_latency, keep_energy,
):  # fmt: skip
    """Like :func:`_bound_one` with the tensors sharing each level's loop order: a residency count ``F_c`` of a
    tensor depends on the order of one level only (the innermost level above ``c`` with a loop indexing the
    tensor), so the least cost over orders is the sum over levels of the least over that level's distinct
    orders of the links it governs. Exact for inputs; the output's read-backs below the fan-out bounded below."""
    num_levels, num_ranks = temporal.shape
    num_tensors = incidence.shape[0]
    most = order_table.shape[2]
    above = steps_above(temporal)
    steps = above[num_levels]
    mask = np.zeros(num_levels, np.int64)
    for l in range(num_levels):
        for r in range(num_ranks):
            if temporal[l, r] > 1.0:
                mask[l] |= 1 << r
    # run[t, l, o]: the innermost run of loops not indexing t under order o of level l; stops[t, l]: whether
    # level l has a loop indexing t (the run then ends there whatever the order).
    run = np.ones((num_tensors, num_levels, most))
    stops = np.zeros((num_tensors, num_levels), np.bool_)
    for t in range(num_tensors):
        for l in range(num_levels):
            for r in range(num_ranks):
                if temporal[l, r] > 1.0 and incidence[t, r]:
                    stops[t, l] = True
            for o in range(order_count[l, mask[l]]):
                v = 1.0
                for k in range(num_ranks - 1, -1, -1):
                    r = order_table[l, mask[l], o, k]
                    b = temporal[l, r]
                    if b > 1.0 and incidence[t, r]:
                        break
                    v *= b
                run[t, l, o] = v
    acc_e = np.empty((num_levels, most))
    acc_w = np.empty((num_levels, most, num_levels))
    base_w = np.empty(num_levels)
    compute = steps * cycles_per_point
    compute_energy = steps * pes * energy_per_point
    for k in range(keep_table.shape[0]):
        ok = True
        for l in range(1, num_levels):
            if occupancy_words(keep_table[k], extent, incidence, l) > capacity[l]:
                ok = False
        if not ok:
            keep_latency[k] = np.inf
            keep_energy[k] = np.inf
            continue
        acc_e[:] = 0.0
        acc_w[:] = 0.0
        base_w[:] = 0.0
        base_e = compute_energy
        for t in range(num_tensors):
            group = sharing_pes(incidence, spatial_rank, t)
            parent = 0
            zero_parent = 1.0
            distinct_parent = 1.0
            for c in range(1, num_levels + 1):
                if c < num_levels and not keep_table[k, c, t]:
                    continue
                instances = pes if c >= s else 1.0
                crossing = parent < s <= c
                tile, distinct = tile_and_distinct(temporal, extent, incidence, t, c)
                governing = -1
                rest = 1.0
                if c < num_levels:
                    for l in range(c - 1, -1, -1):
                        if stops[t, l]:
                            governing = l
                            break
                        rest *= above[l + 1] / above[l]
                if governing < 0:
                    residencies = steps if c == num_levels else above[c] / rest
                    e, wp, wc, zero_next = _link(
                        t, parent, c, residencies, distinct, tile, instances, group, crossing, zero_parent,
                        distinct_parent, above[min(c, num_levels)], is_output, read_e, write_e, num_levels,
                    )  # fmt: skip
                    base_e += e
                    base_w[parent] += wp
                    if c < num_levels:
                        base_w[c] += wc
                else:
                    for o in range(order_count[governing, mask[governing]]):
                        residencies = above[c] / (rest * run[t, governing, o])
                        e, wp, wc, zero_next = _link(
                            t, parent, c, residencies, distinct, tile, instances, group, crossing, zero_parent,
                            distinct_parent, above[c], is_output, read_e, write_e, num_levels,
                        )  # fmt: skip
                        acc_e[governing, o] += e
                        acc_w[governing, o, parent] += wp
                        acc_w[governing, o, c] += wc
                zero_parent = zero_next
                distinct_parent = distinct
                if c < num_levels:
                    parent = c
        energy = base_e
        for l in range(num_levels):
            least = np.inf
            for o in range(order_count[l, mask[l]]):
                least = min(least, acc_e[l, o])
            energy += least
        latency = compute
        for w in range(num_levels):
            words = base_w[w]
            for l in range(num_levels):
                least = np.inf
                for o in range(order_count[l, mask[l]]):
                    least = min(least, acc_w[l, o, w])
                words += least
            per_instance = words / pes if w >= s else words
            latency = max(latency, per_instance / bandwidth[w])
        keep_latency[k] = latency
        keep_energy[k] = energy


def _scratch(space, chains):
    num_levels, num_tensors = space.num_levels, len(space.einsum.tensors)
    return (
        np.empty((num_tensors, chains.shape[1], num_levels)), np.empty((num_tensors, chains.shape[1])),
        np.empty(num_levels),
        np.empty(space.num_keep), np.empty(space.num_keep),
    )  # fmt: skip


@kernel
def _bounds(
    start, assign, assign_spatial, group_start, group_count, trows, ext, min_ext, incidence, is_output, capacity,
    s_level, keep_table, keep_min, chains, n_chains, chain_of, bandwidth, read_e, write_e, cycles_per_point,
    energy_per_point, max_visits, out_s, out_t, out_lat, out_en,
    chain_words, chain_energy, words, keep_latency, keep_energy,
):  # fmt: skip
    """Depth-first over the factorizations of each assignment from ``start`` on (module docstring); returns (rows
    written, assignments done); (-1, s) when the output is full, (-2, s) past ``max_visits`` nodes."""
    num_levels = trows.shape[1]
    num_ranks = assign.shape[1]
    num_tensors = incidence.shape[0]
    num_axes = assign_spatial.shape[1]
    n_cap = out_s.shape[0]
    counts = np.empty(num_ranks, np.int64)
    base = np.empty(num_ranks, np.int64)
    stride = np.empty(num_ranks, np.int64)
    digit = np.zeros(num_ranks, np.int64)
    spatial_rank = np.empty(num_ranks)
    # prefix[d, t, l]: product of the extents of the tensor's variables chosen at depths < d
    prefix = np.ones((num_ranks + 1, num_tensors, num_levels))
    suffix = np.ones((num_ranks + 1, num_tensors, num_levels))  # least extents of the variables at depths >= d
    temporal = np.empty((num_levels, num_ranks))
    extent = np.empty((num_levels, num_ranks))
    n = 0
    visits = 0
    s = start
    while s < assign.shape[0]:
        for r in range(num_ranks):
            g = assign[s, r]
            counts[r] = group_count[r, g]
            base[r] = group_start[r, g]
            f = 1.0
            for a in range(num_axes):
                f *= assign_spatial[s, a, r]
            spatial_rank[r] = f
        pes = 1.0
        for r in range(num_ranks):
            pes *= spatial_rank[r]
        stride[num_ranks - 1] = 1
        for r in range(num_ranks - 2, -1, -1):
            stride[r] = stride[r + 1] * counts[r + 1]
        for r in range(num_ranks - 1, -1, -1):
            for t in range(num_tensors):
                for l in range(num_levels):
                    m = min_ext[r, assign[s, r], l] if incidence[t, r] else 1.0
                    suffix[r, t, l] = suffix[r + 1, t, l] * m
        depth = 0
        digit[0] = 0
        while depth >= 0:
            if digit[depth] >= counts[depth]:
                depth -= 1
                if depth >= 0:
                    digit[depth] += 1
                continue
            visits += 1
            if visits > max_visits:
                return -2, s
            row = base[depth] + digit[depth]
            fits = True
            for l in range(1, num_levels):
                occ = 0.0
                for t in range(num_tensors):
                    v = prefix[depth, t, l] * (ext[row, l] if incidence[t, depth] else 1.0)
                    prefix[depth + 1, t, l] = v
                    if keep_min[l, t]:
                        occ += v * suffix[depth + 1, t, l]
                if occ > capacity[l]:
                    fits = False
            if not fits:
                digit[depth] += 1
                continue
            if depth < num_ranks - 1:
                depth += 1
                digit[depth] = 0
                continue
            if n >= n_cap:
                return -1, s
            t_index = 0
            for r in range(num_ranks):
                t_index += digit[r] * stride[r]
                rr = base[r] + digit[r]
                for l in range(num_levels):
                    temporal[l, r] = trows[rr, l]
                    extent[l, r] = ext[rr, l]
            _bound_one(
                temporal, spatial_rank, pes, extent, incidence, is_output, capacity, s_level, keep_table, chains,
                n_chains, chain_of, bandwidth, read_e, write_e, cycles_per_point, energy_per_point, chain_words,
                chain_energy, words, keep_latency, keep_energy,
            )  # fmt: skip
            lat = np.inf
            en = np.inf
            for k in range(keep_latency.shape[0]):
                lat = min(lat, keep_latency[k])
                en = min(en, keep_energy[k])
            if lat < np.inf:
                out_s[n] = s
                out_t[n] = t_index
                out_lat[n] = lat
                out_en[n] = en
                n += 1
            digit[depth] += 1
        s += 1
    return n, s


@kernel
def _keep_bounds(
    tiling_s, tiling_t, assign, assign_spatial, group_start, group_count, trows, ext, incidence, is_output, capacity,
    s_level, keep_table, order_table, order_count, bandwidth, read_e, write_e, cycles_per_point, energy_per_point,
    out_lat, out_en,
):  # fmt: skip
    """Per listed tiling and bypass choice: the latency and energy bounds (``inf`` where the choice overflows)."""
    num_levels = trows.shape[1]
    num_ranks = assign.shape[1]
    num_axes = assign_spatial.shape[1]
    spatial_rank = np.empty(num_ranks)
    temporal = np.empty((num_levels, num_ranks))
    extent = np.empty((num_levels, num_ranks))
    for i in range(tiling_s.shape[0]):
        s = tiling_s[i]
        x = tiling_t[i]
        pes = 1.0
        for r in range(num_ranks - 1, -1, -1):
            g = assign[s, r]
            rr = group_start[r, g] + x % group_count[r, g]
            x //= group_count[r, g]
            f = 1.0
            for a in range(num_axes):
                f *= assign_spatial[s, a, r]
            spatial_rank[r] = f
            pes *= f
            for l in range(num_levels):
                temporal[l, r] = trows[rr, l]
                extent[l, r] = ext[rr, l]
        _bound_ordered(
            temporal, spatial_rank, pes, extent, incidence, is_output, capacity, s_level, keep_table, order_table,
            order_count, bandwidth, read_e, write_e, cycles_per_point, energy_per_point, out_lat[i], out_en[i],
        )  # fmt: skip
