"""The fused search's schedule branch and bound (mappers.cascade_search.schedules, a Numba kernel) against the
search as it was written in Python, kept here as the reference: the same bindings, schedules and cycles in the same
order, and the same count of complete assignments, on the registered one-pass cascades and on random cycles (ties
included)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsum.errors import AttnscopeError
from mappers.cascade_search import NEGLIGIBLE, VISITS, plan_fused, schedules
from simulator.specs import load_arch
from workloads import CASCADES
from workloads.cases import case_for_shape, load_workload
from workloads.models import get_model


def reference_schedules(plan, keep: int = 16, within: float | None = None):
    """The schedule search as it was written in Python (mappers.cascade_search.schedules before its kernel)."""
    order = plan.order
    n = len(order)
    arrays_all = sorted({a for able in plan.arrays.values() for a in able})
    width = len(arrays_all)
    cyc = plan.cycles
    least = [min(cyc[e, a] for a in plan.arrays[e]) for e in order]
    rest = [sum(least[i:]) for i in range(n + 1)]
    minor = {e for e, c in zip(order, least, strict=True) if c <= NEGLIGIBLE * rest[0] / width}
    forced = [dict.fromkeys(arrays_all, 0.0) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        forced[i] = dict(forced[i + 1])
        if len(plan.arrays[order[i]]) == 1:
            forced[i][plan.arrays[order[i]][0]] += cyc[order[i], plan.arrays[order[i]][0]]

    best: dict[tuple[str, ...], tuple[float, dict[str, int]]] = {}  # binding -> (cycles, stage of each Einsum)
    bound = [math.inf if within is None else within * (1 + 1e-12)]
    complete = [0]
    binding: dict[str, str] = {}
    stage: dict[str, int] = {}
    loads: dict[tuple[int, str], float] = {}
    stage_max: list[float] = []
    totals = dict.fromkeys(arrays_all, 0.0)
    cost = [0.0]
    visits = [0]

    # Two arrays: the remaining Einsums' least possible makespan, splitting them fractionally between the
    # arrays (each starts on its faster array; work moves to the other one, best exchange rate first).
    flexible: list[list[tuple[float, float, float]]] = [[] for _ in range(n + 1)]  # (c1 / c0, c0, c1)
    if width == 2:
        first, second = arrays_all
        for i in range(n):
            both = [e for e in order[i:] if len(plan.arrays[e]) == 2]
            flexible[i] = sorted((cyc[e, second] / cyc[e, first], cyc[e, first], cyc[e, second]) for e in both)

    def balanced(i: int) -> float:
        first, second = arrays_all
        load = [totals[first] + forced[i][first], totals[second] + forced[i][second]]
        for _, c0, c1 in flexible[i]:
            load[c1 < c0] += min(c0, c1)
        # Move work to the less loaded array, cheapest exchange first, until the two balance.
        if load[0] > load[1]:
            moves = [(c0, c1) for _, c0, c1 in flexible[i] if c0 <= c1]  # ascending c1/c0: cheapest moves first
            for c0, c1 in moves:
                gap = load[0] - load[1]
                if gap <= 0:
                    break
                f = min(1.0, gap / (c0 + c1))
                load[0] -= f * c0
                load[1] += f * c1
        elif load[1] > load[0]:
            moves = [(c0, c1) for _, c0, c1 in reversed(flexible[i]) if c1 < c0]  # descending c1/c0
            for c0, c1 in moves:
                gap = load[1] - load[0]
                if gap <= 0:
                    break
                f = min(1.0, gap / (c0 + c1))
                load[1] -= f * c1
                load[0] += f * c0
        return max(load)

    def cut(i: int) -> bool:
        """Whether the lower bound reaches the bound: the stages so far plus the remaining least work beyond the
        idle time (spread), no array's own work, and with two arrays the balanced split (the cheap parts first:
        the same answer as comparing their maximum)."""
        limit = bound[0]
        idle = width * cost[0] - sum(totals.values())
        if cost[0] + max(0.0, (rest[i] - idle) / width) >= limit:
            return True
        at = forced[i]
        if max(totals[a] + at[a] for a in arrays_all) >= limit:
            return True
        return (balanced(i) if width == 2 else 0.0) >= limit

    def record() -> None:
        complete[0] += 1
        key = tuple(binding[e] for e in order)
        if key in best and best[key][0] <= cost[0]:
            return
        best[key] = (cost[0], dict(stage))
        if within is None and len(best) > keep:
            del best[max(best, key=lambda k: best[k][0])]
        if within is None and len(best) == keep:
            bound[0] = max(c for c, _ in best.values())

    def places(name: str) -> list[tuple[float, int, str]]:
        """(added time, stage, array) of the places tried for an Einsum, cheapest first."""
        top = len(stage_max)
        found = set()
        for a in plan.arrays[name]:
            low = max((stage[p] + (binding[p] != a) for p in plan.producers[name]), default=0)
            limit = -1
            if name in plan.tails:  # or at the start of the next tile, before its readers there
                limit = min(
                    (stage[r] - (binding[r] != a) for r in plan.carried_readers[name] if r in stage), default=top
                )
            c = cyc[name, a]
            tried = [(c if s == top else max(0.0, loads.get((s, a), 0.0) + c - stage_max[s]), s)
                     for s in range(top + 1) if s >= low or s <= limit]  # fmt: skip
            cheapest = min(tried)
            found |= {(cheapest[0], cheapest[1], a), (tried[0][0], tried[0][1], a), (c, top, a)}
        ranked = sorted(found)
        return ranked[:1] if name in minor else ranked

    def visit(i: int) -> None:
        visits[0] += 1
        if (within is not None and len(best) >= keep) or (best and visits[0] > VISITS):
            return
        if cut(i):
            return
        if i == n:
            record()
            return
        name = order[i]
        for delta, s, a in places(name):
            c = cyc[name, a]
            binding[name], stage[name] = a, s
            opened = s == len(stage_max)
            if opened:
                stage_max.append(0.0)
            old_max = stage_max[s]
            loads[s, a] = loads.get((s, a), 0.0) + c
            stage_max[s] = max(old_max, loads[s, a])
            totals[a] += c
            cost[0] += delta
            visit(i + 1)
            cost[0] -= delta
            totals[a] -= c
            stage_max[s] = old_max
            loads[s, a] -= c
            if loads[s, a] <= 0.0:
                del loads[s, a]
            if opened:
                stage_max.pop()
            del binding[name], stage[name]

    visit(0)
    out = []
    for key, (cycles, stage_of) in sorted(best.items(), key=lambda kv: kv[1][0]):
        bound_to = dict(zip(order, key, strict=True))
        stages = tuple(
            {a: es for a in arrays_all if (es := tuple(e for e in order if stage_of[e] == k and bound_to[e] == a))}
            for k in sorted(set(stage_of.values()))
        )
        out.append((cycles, bound_to, stages))
    return out, complete[0]


def _plans():
    out = []
    for arch in ("fusemax-cloud", "flat-edge"):
        spec = load_arch(arch)
        for name in sorted(CASCADES):
            for seq in (1024, 65536):
                try:
                    case = case_for_shape(load_workload(name), get_model("bert"), batch=1, seq=seq, params={})
                    out.append((f"{arch}-{name}-{seq}", plan_fused(case.cascade, case.sizes, spec)))
                except AttnscopeError:  # multi-pass cascades (FusedSearchError), shapes a variant refuses
                    continue
    return out


PLANS = _plans()


def test_the_registry_gives_plans_of_one_and_two_arrays():
    assert len(PLANS) >= 30
    assert {len({a for able in p.arrays.values() for a in able}) for _, p in PLANS} >= {2}


@pytest.mark.parametrize("name,plan", PLANS, ids=[n for n, _ in PLANS])
def test_the_kernel_is_the_python_search(name, plan):
    for keep in (1, 4, 16):
        assert schedules(plan, keep) == reference_schedules(plan, keep), keep
    best = schedules(plan, 1)[0][0][0]
    for within in (best, best * 1.05, best * 2.0):
        assert schedules(plan, 8, within=within) == reference_schedules(plan, 8, within=within), within


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_kernel_is_the_python_search_on_random_cycles(data):
    """Cycles drawn from a few values (ties between places and bindings) and from a wide range (negligible
    Einsums): the same search, step for step."""
    _, plan = data.draw(st.sampled_from(PLANS))
    values = data.draw(st.sampled_from([(1.0, 2.0, 3.0), (1.0, 1.0, 4.0), (0.001, 1.0, 1000.0)]))
    cycles = {key: data.draw(st.sampled_from(values)) * (1 + (key[1] > "pe_1")) for key in plan.cycles}
    plan = replace(plan, cycles=cycles)
    keep = data.draw(st.sampled_from([1, 3, 16]))
    assert schedules(plan, keep) == reference_schedules(plan, keep)
    best = schedules(plan, 1)[0][0][0]
    assert schedules(plan, keep, within=best * 1.1) == reference_schedules(plan, keep, within=best * 1.1)
