"""The fused one-pass search on every registered one-pass attention variant (issue 7): feasible designs that
respect the roofline, the tile-loop rules for partitions, decode and unpartitioned cascades, block-mask
skipping, the refusal of multi-pass cascades, and the schedule search against an exhaustive one."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from einsum.analysis import pass_analysis
from einsum.errors import ShapeError
from einsum.lower import lower
from mappers.cascade_search import FusedSearchError, plan_fused, schedules, search_fused
from simulator.roofline import arch_ceilings
from simulator.specs import load_arch
from workloads import get_cascade
from workloads.registry import CASCADES

SEQ_LENS = (1024, 4096)


def tile_passes(cascade) -> int:
    """Passes over the rank the recurrences walk (the tile rank, e.g. M1), else over the keys M."""
    walked = {v.upper() for v in cascade.recurrences.values()} or {"M"}
    return max(pass_analysis(cascade, rank).passes for rank in walked)


ONE_PASS = sorted(n for n, e in CASCADES.items() if tile_passes(e.cascade) == 1)
MULTI_PASS = sorted(n for n, e in CASCADES.items() if tile_passes(e.cascade) > 1)


@pytest.fixture(scope="module")
def arch():
    return load_arch("fusemax-cloud")


def roofline_s(lowered, arch) -> float:
    """max(total ops / peak op rate, compulsory DRAM bytes / DRAM bandwidth).

    A MAC is one op (one PE cycle), as ``LoweredEinsum.ops`` counts it; the peak op rate is every PE doing one
    op per cycle: the 2-D ceiling of :func:`simulator.roofline.arch_ceilings` counts a MAC as 2 FLOP, so it is
    halved, plus the 1-D array's op rate. Compulsory traffic reads every input and writes every output once.
    """
    ceilings = {c.name: c.value for c in arch_ceilings(arch)}
    peak_ops = sum(v / 2 if name.startswith("2-D") else v for name, v in ceilings.items() if "array" in name)
    ops = sum(n for e in lowered.einsums for n in e.ops().values())
    dram = next(v for name, v in ceilings.items() if name.startswith("DRAM"))
    words = sum(lowered.tensor_words[t] for t in (*lowered.inputs, *lowered.outputs))
    return max(ops / peak_ops, words * arch.word_bytes / dram)


def test_the_one_pass_set_covers_every_variant_with_one_pass_over_m():
    by_m = {n for n, e in CASCADES.items() if pass_analysis(e.cascade, "M").passes == 1}
    assert by_m <= set(ONE_PASS)
    assert "decode-splitk" in ONE_PASS  # its combine traverses the S split partials, not the cache
    assert MULTI_PASS and not set(MULTI_PASS) & set(ONE_PASS)


@pytest.mark.parametrize("seq", SEQ_LENS)
@pytest.mark.parametrize("name", ONE_PASS)
def test_every_one_pass_variant_has_a_feasible_design_above_its_roofline(arch, name, seq):
    entry = get_cascade(name)
    sizes = entry.sizes({"M": seq})  # P = M, or P = 1 for decode
    best, designs = search_fused(entry.cascade, sizes, arch)
    assert best.cost.feasible, best.description
    assert best.cost.latency_s >= roofline_s(lower(entry.cascade, sizes), arch) * (1 - 1e-9)
    assert all(0.0 <= u <= 1.0 + 1e-9 for u in best.cost.utilization.values()), best.cost.utilization
    assert all(best.cost.latency_s <= d.cost.latency_s for d in designs if d.cost.feasible)
    assert set(best.mapping.einsums) == {e.name for e in entry.cascade.einsums}
    assert set(best.binding) == set(best.mapping.einsums)


@pytest.mark.parametrize("name", MULTI_PASS)
def test_multi_pass_cascades_are_refused_with_a_pointer_to_search_passes(arch, name):
    entry = get_cascade(name)
    with pytest.raises(FusedSearchError, match=r"needs \d passes over M .*search_passes"):
        search_fused(entry.cascade, entry.sizes({"M": 1024}), arch)


def test_unsupported_operators_are_named_with_what_the_arrays_support(arch):
    entry = get_cascade("sigmoid-attention")
    flat = load_arch("flat-cloud")
    assert plan_fused(entry.cascade, entry.sizes({"M": 1024}), flat).arrays["SG"] == ("pe_1d",)  # no 2-D sigmoid
    with pytest.raises(FusedSearchError, match=r"no array of .* supports every operator of SG \(add, sigmoid\): pe_2d"):
        plan_fused(entry.cascade, entry.sizes({"M": 1024}), _without_op(flat, "sigmoid"))


def _without_op(arch, op):
    """The architecture with operator ``op`` taken off every array."""
    arrays = tuple(replace(a, ops=tuple(o for o in a.ops if o.name != op)) for a in arch.arrays)
    return replace(arch, arrays=arrays)


# -- the tile-loop rules -------------------------------------------------------------------------------------


def test_a_cascade_without_partition_tiles_the_rank_it_reduces(arch):
    entry = get_cascade("sigmoid-attention")
    sizes = entry.sizes({"M": 4096})
    plan = plan_fused(entry.cascade, sizes, arch)
    assert plan.key_rank == "M" and plan.tile_var == plan.key_var == "m"
    assert plan.tile_count * plan.tile_keys == sizes["M"]
    rows = max(a.shape[0] for a in arch.arrays if a.kind == "2d")
    assert plan.tile_keys <= rows and sizes["M"] % plan.tile_keys == 0
    assert plan.accumulators == {"AV"}  # summed across the tiles, in the buffer


def test_other_partitions_are_outer_loops_or_query_parts(arch):
    split = plan_fused(get_cascade("decode-splitk").cascade, get_cascade("decode-splitk").sizes({"M": 4096}), arch)
    assert (split.tile_var, split.outer_vars, split.inner_vars) == ("m1", ("s",), ("m0",))
    assert not {"GM", "WS", "DS", "NS", "AV"} & split.in_loop  # the combine runs after the loop
    sharded = plan_fused(get_cascade("s2-attention").cascade, get_cascade("s2-attention").sizes({"M": 4096}), arch)
    assert sharded.inner_vars == ("m0", "n")  # a tile is N blocks of M0 keys
    blocks = plan_fused(get_cascade("block-sparse").cascade, get_cascade("block-sparse").sizes({"M": 4096}), arch)
    assert blocks.query_vars == ("p0", "p1")  # the mask block's queries fill the columns first


def test_given_tile_sizes_are_kept_and_missing_ones_fill_the_rows(arch):
    entry = get_cascade("fusemax")
    rows = max(a.shape[0] for a in arch.arrays if a.kind == "2d")
    free = plan_fused(entry.cascade, {"B": 1, "H": 1, "E": 64, "F": 64, "M": 4096, "P": 4096}, arch)
    assert free.tile_keys == rows
    given = plan_fused(entry.cascade, entry.sizes({"M": 4096, "M0": rows // 2}), arch)
    assert given.tile_keys == rows // 2 and given.tile_count == 4096 // (rows // 2)


@pytest.mark.parametrize("name", ["decode", "decode-splitk"])
def test_decode_packs_the_heads_that_share_keys_into_the_columns(arch, name):
    entry = get_cascade(name)
    sizes = entry.sizes({"M": 4096})
    assert sizes["P"] == 1
    plan = plan_fused(entry.cascade, sizes, arch)
    assert plan.query_vars[0] == "r" and plan.columns["r"] == sizes["R"]
    assert plan.columns["p"] == 1
    best, _ = search_fused(entry.cascade, sizes, arch)
    assert best.cost.feasible


# -- block masks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", SEQ_LENS)
@pytest.mark.parametrize("name", ["block-sparse", "moba"])
def test_half_the_block_density_costs_less(arch, name, seq):
    entry = get_cascade(name)
    sizes = entry.sizes({"M": seq})

    def latency(density):
        return search_fused(entry.cascade, sizes, arch, density=density)[0].cost.latency_s

    dense, full, half, quarter = latency(None), latency({"BM": 1.0}), latency({"BM": 0.5}), latency({"BM": 0.25})
    assert full == pytest.approx(dense, rel=1e-12)  # every block kept: nothing to skip
    assert quarter < half < full


@pytest.mark.parametrize(
    ("name", "density", "message"),
    [
        ("block-sparse", {"MASK": 0.5}, "density given for 'MASK', which is not an input; its inputs are Q, K, V, BM"),
        ("block-sparse", {"BM": 0.0}, r"density of BM must lie in \(0, 1\], got 0.0"),
        ("block-sparse", {"K": 0.5}, r"skips tiles of a block mask, an input indexed by the tile rank M1"),
        ("sigmoid-attention", {"SB": 0.5}, "needs the key rank partitioned into tiles"),
    ],
)
def test_density_is_checked(arch, name, density, message):
    entry = get_cascade(name)
    with pytest.raises(ShapeError, match=message):
        search_fused(entry.cascade, entry.sizes({"M": 1024}), arch, density=density)


# -- the schedule search -------------------------------------------------------------------------------------


def exhaustive_cycles(plan) -> float:
    """The fewest tile cycles over every (array, stage) assignment that obeys the schedule rules."""
    order, best = plan.order, math.inf
    for arrays in itertools.product(*(plan.arrays[e] for e in order)):
        binding = dict(zip(order, arrays, strict=True))
        for stages in itertools.product(range(len(order)), repeat=len(order)):
            stage = dict(zip(order, stages, strict=True))
            if not _obeys(plan, binding, stage):
                continue
            loads: dict[tuple[int, str], float] = {}
            for e in order:
                loads[stage[e], binding[e]] = loads.get((stage[e], binding[e]), 0.0) + plan.cycles[e, binding[e]]
            used = {k for k, _ in loads}
            best = min(best, sum(max(v for (k, _), v in loads.items() if k == s) for s in used))
    return best


def _obeys(plan, binding, stage) -> bool:
    for e in plan.order:
        for p in plan.producers[e]:
            if stage[e] < stage[p] + (binding[p] != binding[e]):
                if e not in plan.tails:
                    return False
                if any(stage[r] < stage[e] + (binding[r] != binding[e]) for r in plan.carried_readers[e]):
                    return False
    return True


@pytest.mark.parametrize("name", ["sigmoid-attention", "softplus-attention"])
def test_schedule_search_finds_the_exhaustive_optimum(arch, name):
    entry = get_cascade(name)
    plan = plan_fused(entry.cascade, entry.sizes({"M": 1024}), arch)
    ranked, complete = schedules(plan, 1)
    assert complete >= 1
    assert ranked[0][0] == pytest.approx(exhaustive_cycles(plan), rel=1e-12)


def test_schedules_within_a_bound_stay_within_it(arch):
    entry = get_cascade("fusemax")
    plan = plan_fused(entry.cascade, entry.sizes({"M": 4096}), arch)
    best = schedules(plan, 1)[0][0][0]
    ranked, _ = schedules(plan, 8, within=best * 1.05)
    assert ranked and all(best <= c <= best * 1.05 * (1 + 1e-12) for c, _, _ in ranked)
    assert len({tuple(sorted(b.items())) for _, b, _ in ranked}) == len(ranked)  # distinct bindings
