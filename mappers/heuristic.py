"""Simulated annealing over a :class:`~mappers.space.MapSpace`, for spaces too large to enumerate.

Many chains anneal side by side, so every step is one batch for the cost kernel: each chain proposes one
move, the batch is costed, and each chain accepts its proposal with the Metropolis rule on the log of the
objective (a move 1% worse is a step of about 0.01). Moves, drawn per chain:

* **factor** (45%): move one prime factor of a variable from one free place (a level's temporal bound or an
  axis's spatial factor) to another, keeping every axis within its size and its variable count;
* **resample** (10%): draw a variable's whole factorization afresh from the space's tables (this is how a
  chain changes a padded size or leaves a region the factor moves cannot leave);
* **order** (20%): give one level another of its distinct loop orders (the space's table for its active
  loops, so no move is spent on an order with the same reuse);
* **bypass** (10%): flip one free bypass bit;
* **spatial swap** (15%): hand one array axis to another variable: the axis's factors go back to temporal
  loops and prime factors of the new variable fill the axis greedily (one move across what would otherwise
  be a barrier of several worse single moves).

A move that cannot apply falls through to the next kind. Infeasible points pay a penalty that grows with
their overflow, so hot chains may cross them and cold ones do not stay. The temperature falls geometrically
from :data:`T_START` to :data:`T_END` over the budget (evaluations or time); at every tenth of the budget the
worst quarter of the chains restart from copies of the best quarter, and for the last fifth every chain
continues from the best point found (intensification). All randomness comes from one
``numpy.random.Generator`` and is drawn in Python, so a seed reproduces the search exactly whatever the
number of Numba threads.

The gap to the optimum is measured, not promised: ``tests/mappers/test_heuristic.py`` compares the
annealer with exhaustive search on several enumerable spaces at 10,000 evaluations (within 2% there; over
16 seeds on four such spaces the largest gap measured was 0.9%), and ``attnscope map`` prints the latency
and energy lower bounds of :meth:`~mappers.space.MapSpace.lower_bounds` beside every result.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from mappers.space import MapSpace
from simulator.jit import kernel
from simulator.nest import MappingBatch, NestCosts

__all__ = ["T_END", "T_START", "anneal"]

T_START = 0.3
"""Initial temperature, in units of log-cost (a move 30% worse is accepted with probability about 1/e)."""
T_END = 2e-4
"""Final temperature."""
_SECONDARY = 1e-3
"""Weight of the secondary key's log in a chain's score (ties on the primary go to the better secondary)."""
_PENALTY = 10.0
"""Score added per unit of log overflow ratio: infeasible points may be crossed while hot, never kept when cold."""
_PENALTY_BASE = 0.1
"""Score added to any infeasible point."""
_STATE = ("temporal", "spatial", "order", "keep")


def anneal(
    space: MapSpace,
    keys: Callable[[NestCosts], tuple[np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    progress: Callable[[], float],
    chains: int = 256,
) -> Generator[MappingBatch, NestCosts, None]:
    """Yield batches to cost; receive their costs with ``send``. Stops when ``progress()`` reaches 1.

    ``keys`` gives (primary, secondary) costs to minimise; ``progress`` the fraction of the budget spent.
    """
    num_init = 4 * chains
    init = space.sample(rng, num_init)
    costs = yield init
    score = _score(keys, costs)
    pick = np.argsort(score, kind="stable")[:chains]
    state = _take(init, pick)
    current = score[pick]
    best = _take(state, np.zeros(1, dtype=np.int64))
    best_score = float(current[0])
    proposal = _take(state, np.arange(chains))
    axis_sizes = space.nest_arch.array_axes
    min_pes = space.min_utilization * float(np.prod(axis_sizes.astype(np.float64)))
    next_restart, polished = 0.1, False
    while True:
        done = progress()
        if done >= 1.0:
            return
        if not polished and done >= 0.8:  # intensify: every chain continues, cold, from the best point
            polished = True
            for name in _STATE:
                getattr(state, name)[:] = getattr(best, name)
            current[:] = best_score
        elif done >= next_restart:  # the worst quarter restarts from copies of the best quarter
            next_restart += 0.1
            ranked = np.argsort(current, kind="stable")
            quarter = chains // 4
            if quarter:
                worst, good = ranked[-quarter:], ranked[:quarter]
                for name in _STATE:
                    getattr(state, name)[worst] = getattr(state, name)[good]
                current[worst] = current[good]
        temperature = T_START * (T_END / T_START) ** min(1.0, done)
        _propose(
            rng.random((chains, 32)), state.temporal, state.spatial, state.order, state.keep,
            proposal.temporal, proposal.spatial, proposal.order, proposal.keep,
            space.free_temporal, space.free_spatial, space.free_keep, space.order_table, space.order_count,
            axis_sizes, space.constraints.spatial_ranks_per_axis, min_pes, space.trows, space.group_start,
            space.group_count, space.group_spatial,
        )  # fmt: skip
        costs = yield proposal
        new = _score(keys, costs)
        delta = new - current
        accept = (delta <= 0) | (rng.random(chains) < np.exp(-np.maximum(delta, 0) / temperature))
        for name in _STATE:
            getattr(state, name)[accept] = getattr(proposal, name)[accept]
        current = np.where(accept, new, current)
        k = int(np.argmin(new))
        if new[k] < best_score:
            best_score = float(new[k])
            for name in _STATE:
                getattr(best, name)[0] = getattr(proposal, name)[k]


def _take(batch: MappingBatch, rows: np.ndarray) -> MappingBatch:
    return MappingBatch(
        *(np.ascontiguousarray(a[rows]) for a in (batch.temporal, batch.spatial, batch.order, batch.keep))
    )


def _score(keys: Callable[[NestCosts], tuple[np.ndarray, np.ndarray]], costs: NestCosts) -> np.ndarray:
    """log(primary) + a little log(secondary); infeasible points pay a penalty growing with the overflow."""
    primary, secondary = keys(costs)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.log(primary) + _SECONDARY * np.log(secondary)
        penalty = _PENALTY_BASE + _PENALTY * np.log(np.maximum(costs.overflow_ratio, 1.0))
    return np.where(costs.feasible, score, score + penalty)


@kernel
def _prime_factor(n, u):
    """One prime factor of n > 1, chosen by u in [0, 1) among its distinct primes."""
    primes = np.empty(32, np.int64)
    count = 0
    m = n
    p = 2
    while p * p <= m:
        if m % p == 0:
            primes[count] = p
            count += 1
            while m % p == 0:
                m //= p
        p += 1
    if m > 1:
        primes[count] = m
        count += 1
    return primes[min(int(u * count), count - 1)]


@kernel
def _axes_ok(spatial, axis_sizes, per_axis, min_pes):
    pes = 1.0
    for a in range(spatial.shape[0]):
        used = 1
        ranks = 0
        for r in range(spatial.shape[1]):
            used *= spatial[a, r]
            if spatial[a, r] > 1:
                ranks += 1
        if used > axis_sizes[a] or ranks > per_axis:
            return False
        pes *= used
    return pes >= min_pes


@kernel
def _factor_move(u, t, sp, free_t, free_sp, axis_sizes, per_axis, min_pes):
    """Move one prime factor between two free places of one variable; False if no such move applies."""
    num_levels, num_ranks = t.shape
    num_axes = sp.shape[0]
    places = num_levels + num_axes
    r = min(int(u[0] * num_ranks), num_ranks - 1)
    for attempt in range(num_ranks):
        rr = (r + attempt) % num_ranks
        sources = np.empty(places, np.int64)
        movable = np.empty(places, np.int64)
        ns = 0
        nm = 0
        for k in range(places):
            free = free_t[k, rr] if k < num_levels else free_sp[k - num_levels, rr]
            if not free:
                continue
            movable[nm] = k
            nm += 1
            value = t[k, rr] if k < num_levels else sp[k - num_levels, rr]
            if value > 1:
                sources[ns] = k
                ns += 1
        if ns == 0 or nm < 2:
            continue
        src = sources[min(int(u[1] * ns), ns - 1)]
        j = min(int(u[2] * (nm - 1)), nm - 2)  # among the movable places other than the source
        if movable[j] >= src:
            j += 1
        dst = movable[j]
        value = t[src, rr] if src < num_levels else sp[src - num_levels, rr]
        p = _prime_factor(value, u[3])
        if src < num_levels:
            t[src, rr] //= p
        else:
            sp[src - num_levels, rr] //= p
        if dst < num_levels:
            t[dst, rr] *= p
        else:
            sp[dst - num_levels, rr] *= p
        if _axes_ok(sp, axis_sizes, per_axis, min_pes):
            return True
        # undo
        if dst < num_levels:
            t[dst, rr] //= p
        else:
            sp[dst - num_levels, rr] //= p
        if src < num_levels:
            t[src, rr] *= p
        else:
            sp[src - num_levels, rr] *= p
    return False


@kernel
def _resample(u, t, sp, axis_sizes, per_axis, min_pes, trows, group_start, group_count, group_spatial):
    """Draw one variable's factorization afresh; False if the draws never fit the axes."""
    num_levels, num_ranks = t.shape
    num_axes = sp.shape[0]
    r = min(int(u[0] * num_ranks), num_ranks - 1)
    groups = 0
    for g in range(group_count.shape[1]):
        if group_count[r, g] > 0:
            groups += 1
    old_t = t[:, r].copy()
    old_sp = sp[:, r].copy()
    for attempt in range(3):
        pick = min(int(u[1 + 2 * attempt] * groups), groups - 1)
        g = 0
        seen = -1
        for gg in range(group_count.shape[1]):
            if group_count[r, gg] > 0:
                seen += 1
                if seen == pick:
                    g = gg
                    break
        row = group_start[r, g] + min(int(u[2 + 2 * attempt] * group_count[r, g]), group_count[r, g] - 1)
        for l in range(num_levels):
            t[l, r] = trows[row, l]
        for a in range(num_axes):
            sp[a, r] = group_spatial[r, g, a]
        if _axes_ok(sp, axis_sizes, per_axis, min_pes):
            return True
    t[:, r] = old_t
    sp[:, r] = old_sp
    return False


@kernel
def _spatial_swap(u, t, sp, free_t, free_sp, axis_sizes, per_axis, min_pes):
    """Give one array axis to another variable: the axis's free spatial factors go back to temporal loops,
    then prime factors of a new variable's temporal loops fill the axis greedily; False if nothing moves."""
    num_levels, num_ranks = t.shape
    num_axes = sp.shape[0]
    a = min(int(u[0] * num_axes), num_axes - 1)
    old_t = t.copy()
    old_sp = sp.copy()
    for r in range(num_ranks):
        if sp[a, r] > 1 and free_sp[a, r]:
            levels = 0
            for l in range(num_levels):
                if free_t[l, r]:
                    levels += 1
            if levels == 0:
                continue
            pick = min(int(u[1] * levels), levels - 1)
            for l in range(num_levels):
                if free_t[l, r]:
                    if pick == 0:
                        t[l, r] *= sp[a, r]
                        sp[a, r] = 1
                        break
                    pick -= 1
    room = axis_sizes[a]
    for r in range(num_ranks):
        room //= sp[a, r]
    candidates = 0
    for r in range(num_ranks):
        if free_sp[a, r]:
            candidates += 1
    moved = 1
    if candidates > 0:
        pick = min(int(u[2] * candidates), candidates - 1)
        rr = 0
        for r in range(num_ranks):
            if free_sp[a, r]:
                if pick == 0:
                    rr = r
                    break
                pick -= 1
        for k in range(12):
            levels = 0
            for l in range(num_levels):
                if free_t[l, rr] and t[l, rr] > 1:
                    levels += 1
            if levels == 0:
                break
            pick = min(int(u[3 + k] * levels), levels - 1)
            for l in range(num_levels):
                if free_t[l, rr] and t[l, rr] > 1:
                    if pick == 0:
                        p = _prime_factor(t[l, rr], (u[3 + k] * 997.0) % 1.0)
                        if moved * p <= room:
                            t[l, rr] //= p
                            sp[a, rr] *= p
                            moved *= p
                        break
                    pick -= 1
    changed = False
    for l in range(num_levels):
        for r in range(num_ranks):
            if t[l, r] != old_t[l, r]:
                changed = True
    if changed and _axes_ok(sp, axis_sizes, per_axis, min_pes):
        return True
    t[:, :] = old_t
    sp[:, :] = old_sp
    return False


@kernel
def _order_move(u, t, o, order_table, order_count):
    """Give one level a different distinct loop order (from the space's table); False if none has two."""
    num_levels, num_ranks = o.shape
    levels = num_levels - 1  # the innermost level's order never matters
    start = min(int(u[0] * max(levels, 1)), max(levels, 1) - 1)
    for attempt in range(levels):
        l = (start + attempt) % levels
        mask = 0
        for r in range(num_ranks):
            if t[l, r] > 1:
                mask |= 1 << r
        n = order_count[l, mask]
        if n < 2:
            continue
        pick = min(int(u[1] * n), n - 1)
        same = True
        for r in range(num_ranks):
            if order_table[l, mask, pick, r] != o[l, r]:
                same = False
        if same:
            pick = (pick + 1 + min(int(u[2] * (n - 1)), n - 2)) % n
        for r in range(num_ranks):
            o[l, r] = order_table[l, mask, pick, r]
        return True
    return False


@kernel
def _keep_move(u, k, free_keep):
    """Flip one free bypass bit; False if none is free."""
    n = 0
    for l in range(free_keep.shape[0]):
        for j in range(free_keep.shape[1]):
            if free_keep[l, j]:
                n += 1
    if n == 0:
        return False
    pick = min(int(u * n), n - 1)
    for l in range(free_keep.shape[0]):
        for j in range(free_keep.shape[1]):
            if free_keep[l, j]:
                if pick == 0:
                    k[l, j] = not k[l, j]
                    return True
                pick -= 1
    return False


@kernel
def _propose(
    u, cur_t, cur_sp, cur_o, cur_k, out_t, out_sp, out_o, out_k, free_t, free_sp, free_keep, order_table,
    order_count, axis_sizes, per_axis, min_pes, trows, group_start, group_count, group_spatial,
):  # fmt: skip
    """One proposal per chain: a copy of its state changed by one move (module docstring)."""
    for i in range(cur_t.shape[0]):
        out_t[i] = cur_t[i]
        out_sp[i] = cur_sp[i]
        out_o[i] = cur_o[i]
        out_k[i] = cur_k[i]
        x = u[i, 0]
        kind = 0 if x < 0.45 else (1 if x < 0.55 else (2 if x < 0.75 else (3 if x < 0.85 else 4)))
        for step in range(5):
            k = (kind + step) % 5
            if k == 0 and _factor_move(u[i, 1:5], out_t[i], out_sp[i], free_t, free_sp, axis_sizes, per_axis, min_pes):
                break
            if k == 1 and _resample(
                u[i, 5:12], out_t[i], out_sp[i], axis_sizes, per_axis, min_pes, trows, group_start, group_count,
                group_spatial,
            ):  # fmt: skip
                break
            if k == 2 and _order_move(u[i, 12:15], out_t[i], out_o[i], order_table, order_count):
                break
            if k == 3 and _keep_move(u[i, 15], out_k[i], free_keep):
                break
            if k == 4 and _spatial_swap(
                u[i, 16:31], out_t[i], out_sp[i], free_t, free_sp, axis_sizes, per_axis, min_pes
            ):  # fmt: skip
                break
