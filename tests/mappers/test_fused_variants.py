"""The fused one-pass search on every registered one-pass attention variant (issue 7): feasible designs that
respect the roofline, the tile-loop rules for partitions, decode and unpartitioned cascades, block-mask and
static-mask tile skipping, the refusal of multi-pass cascades, and the schedule search against an exhaustive
one."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from einsum.analysis import effective_points, pass_analysis, work_regions
from einsum.cascade import Cascade
from einsum.errors import ShapeError
from einsum.lower import lower
from mappers.cascade_search import FusedSearchError, plan_fused, schedules, search_fused
from simulator.cost import evaluate_cascade
from simulator.roofline import arch_ceilings
from simulator.specs import load_arch
from workloads import get_cascade
from workloads.registry import CASCADES
from workloads.variants import (
    DUO_SINKS,
    DUO_WINDOW,
    S2_LOCAL_BLOCKS,
    SLIDING_WINDOW,
    STREAMING_SINKS,
    STREAMING_WINDOW,
    sliding_window,
    streaming_llm,
)

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


def roofline_s(cascade, sizes, arch) -> float:
    """max(ops no design can avoid / peak op rate, compulsory DRAM bytes / DRAM bandwidth).

    Ops: every point the analysis counts as work (:func:`einsum.analysis.effective_points`: a masked score,
    and the exp and sums that consume it, cost nothing) times the Einsum's ops per point; without a mask,
    every point. In a masked cascade the state updates of the tile loop (Einsums that iterate the tile but
    no key inside it and work everywhere: the running max, sum and output) are left out, since a kernel
    skips them with a fully masked tile, which a count of points cannot see. A MAC is one op (one PE cycle),
    as ``LoweredEinsum.ops`` counts it; the peak op rate is every PE doing one op per cycle: the 2-D ceiling
    of :func:`simulator.roofline.arch_ceilings` counts a MAC as 2 FLOP, so it is halved, plus the 1-D array's
    op rate. Compulsory traffic reads every input and writes every output once.
    """
    lowered = lower(cascade, sizes)
    points = effective_points(cascade, sizes)
    plan = plan_fused(cascade, sizes, arch)
    masked = any(points[e.name] < e.points for e in lowered.einsums)
    in_tile = {*plan.inner_vars, plan.key_var} - {None}

    def state_update(e) -> bool:
        return e.name in plan.in_loop and not in_tile & set(e.vars) and points[e.name] == e.points

    ceilings = {c.name: c.value for c in arch_ceilings(arch)}
    peak_ops = sum(v / 2 if name.startswith("2-D") else v for name, v in ceilings.items() if "array" in name)
    ops = sum(
        points[e.name] * sum(e.ops_per_point.values()) for e in lowered.einsums if not (masked and state_update(e))
    )
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
    assert best.cost.latency_s >= roofline_s(entry.cascade, sizes, arch) * (1 - 1e-9)
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


# -- static masks ----------------------------------------------------------------------------------------------


def masked(name: str) -> bool:
    """Whether a registered cascade has a static mask: some Einsum works only in part of its space."""
    entry = get_cascade(name)
    return any(r is not True for r in work_regions(entry.cascade, entry.sizes({"M": 1024})).values())


MASKED = sorted(n for n in ONE_PASS if masked(n))
UNMASKED = sorted(n for n in ONE_PASS if not masked(n))


def computed_tiles(design, plan, einsum: str) -> tuple[int, int]:
    """(tiles per query block, query blocks) of an Einsum in a design: its loop nest's tile and query loops."""
    outer = dict(design.mapping.einsums[einsum].temporal[0])
    return outer.get(plan.tile_var, 1), math.prod(outer.get(v, 1) for v in plan.query_vars)


def visible_tiles(sees, sizes, blocks: int, tile_keys: int, heads: int = 1) -> float:
    """Tiles per query block in which some query of the block sees some key, by brute force over every
    (query, key) pair and head: the total over blocks and heads / (blocks x heads). ``sees(q, k, head)`` is
    the mask's plain definition over the query's position ``q`` and the key's ``k``."""
    queries, keys = sizes["P"], sizes["M"]
    q = np.arange(queries)[:, None] + keys - queries
    k = np.arange(keys)[None, :]
    pairs = sum(
        int(sees(q, k, h).reshape(blocks, queries // blocks, keys // tile_keys, tile_keys).any(axis=(1, 3)).sum())
        for h in range(heads)
    )
    return pairs / (blocks * heads)


def rounded_up(tiles: float) -> int:
    """Tiles computed per query block: the average rounded up (at least one)."""
    return max(1, math.ceil(tiles - 1e-9))


def _causal(q, k, head):
    return k <= q


def _window(window, sinks=0):
    return lambda q, k, head: (k <= q) & ((k > q - window) | (k < sinks))


def _s2(sizes):
    """Head ``hn`` sees the key blocks ``n == hn`` of every tile and its last local blocks, causally."""
    m0, n = sizes["M0"], sizes["N"]
    return lambda q, k, hn: (k <= q) & ((k // m0 % n == hn) | (k // m0 * m0 + S2_LOCAL_BLOCKS * m0 > q))


def _chunk(sizes):
    """Chunked causal linear attention: a query works with the keys of its own chunk of M0 (and the state)."""
    m0 = sizes["M0"]
    return lambda q, k, head: k // m0 == q // m0


# variant -> (key length, {an Einsum of each skipping group: the mask's plain definition}, rank of the heads
# the mask depends on)
STATIC_MASKS = {
    "attention-1pass-causal": (8192, {"QK": lambda s: _causal}, None),
    "fusemax-causal": (8192, {"QK": lambda s: _causal}, None),
    "sliding-window": (16384, {"QK": lambda s: _window(SLIDING_WINDOW)}, None),
    "streaming-llm": (8192, {"QK": lambda s: _window(STREAMING_WINDOW, STREAMING_SINKS)}, None),
    "duo-attention": (8192, {"QK": lambda s: _causal, "QKS": lambda s: _window(DUO_WINDOW, DUO_SINKS)}, None),
    "s2-attention": (4096, {"QK": _s2}, "HN"),
    "linear-attention-causal": (8192, {"QK": _chunk, "XN": _chunk, "XD": _chunk}, None),
    "moba": (8192, {"QK": lambda s: _causal}, None),
}


def test_every_statically_masked_variant_has_a_brute_force_check():
    assert set(STATIC_MASKS) == set(MASKED) - {"decode", "decode-splitk"}  # decode's one query sees every key


@pytest.mark.parametrize("name", sorted(STATIC_MASKS))
def test_computed_tiles_are_those_some_query_of_the_block_sees(arch, name):
    seq, groups, head_rank = STATIC_MASKS[name]
    entry = get_cascade(name)
    sizes = entry.sizes({"M": seq})
    plan = plan_fused(entry.cascade, sizes, arch)
    best, designs = search_fused(entry.cascade, sizes, arch)
    heads = sizes[head_rank] if head_rank else 1
    for design in designs:
        for einsum, sees in groups.items():
            tiles, blocks = computed_tiles(design, plan, einsum)
            expected = rounded_up(visible_tiles(sees(sizes), sizes, blocks, plan.tile_keys, heads))
            assert tiles == expected, (design.mapping.name, einsum)
    assert computed_tiles(best, plan, next(iter(groups)))[0] < plan.tile_count


@pytest.mark.parametrize(
    ("name", "dense"), [("attention-1pass-causal", "attention-1pass"), ("fusemax-causal", "fusemax")]
)
def test_causal_costs_about_half_of_dense_at_long_lengths(arch, name, dense):
    entry = get_cascade(name)
    sizes = entry.sizes({"M": 16384})
    plan = plan_fused(entry.cascade, sizes, arch)
    best, _ = search_fused(entry.cascade, sizes, arch)
    reference, _ = search_fused(get_cascade(dense).cascade, sizes, arch)
    tiles, _ = computed_tiles(best, plan, "QK")
    ratio = best.cost.latency_s / reference.cost.latency_s
    assert ratio == pytest.approx(tiles / plan.tile_count, rel=0.02)  # compute-bound: latency follows the tiles
    assert ratio == pytest.approx(0.5, abs=0.05)


def test_a_sliding_window_costs_linearly_in_the_length_and_about_window_over_length_of_dense(arch):
    window = 1024
    cascade = Cascade.from_text(sliding_window(window), name="sliding-window-1024")
    dense = get_cascade("attention-1pass").cascade
    latency, reference = {}, {}
    for seq in (16384, 32768, 65536):
        sizes = get_cascade("sliding-window").sizes({"M": seq, "W": window})
        plan = plan_fused(cascade, sizes, arch)
        best, _ = search_fused(cascade, sizes, arch)
        latency[seq] = best.cost.latency_s
        # dense attention at the window's key tile (its own search would also choose the tile)
        reference[seq] = search_fused(dense, _only(dense, sizes), arch, tiles=(plan.tile_keys,))[0].cost.latency_s
        tiles, blocks = computed_tiles(best, plan, "QK")
        # The window spans window / M0 tiles, and the block's own queries and the tile rounding one more each.
        assert tiles <= (window + sizes["P"] // blocks) // plan.tile_keys + 1
        assert latency[seq] / reference[seq] == pytest.approx(tiles / plan.tile_count, rel=0.02)
    assert latency[32768] / latency[16384] == pytest.approx(2.0, rel=0.05)
    assert latency[65536] / latency[32768] == pytest.approx(2.0, rel=0.05)
    assert reference[65536] / reference[32768] == pytest.approx(4.0, rel=0.05)  # dense attention: quadratic


def _only(cascade, sizes):
    """The sizes of the ranks a cascade has (a window's W is not a rank of dense attention)."""
    return {k: v for k, v in sizes.items() if k in cascade.ranks}


@pytest.mark.parametrize("window", [256, 1024])
def test_sinks_cost_at_least_the_window_alone(arch, window):
    sizes = get_cascade("streaming-llm").sizes({"M": 32768, "W": window, "SINK": 4})
    window_cascade = Cascade.from_text(sliding_window(window), name="window")
    alone = search_fused(window_cascade, _only(window_cascade, sizes), arch)[0]
    sinks = search_fused(Cascade.from_text(streaming_llm(4, window), name="sinks"), sizes, arch)[0]
    assert sinks.cost.latency_s >= alone.cost.latency_s
    dense_cascade = get_cascade("attention-1pass").cascade
    dense = search_fused(dense_cascade, _only(dense_cascade, sizes), arch)[0]
    assert sinks.cost.latency_s < dense.cost.latency_s / 4


@pytest.mark.parametrize("name", MASKED)
def test_masked_designs_at_long_lengths_stay_above_their_roofline(arch, name):
    entry = get_cascade(name)
    sizes = entry.sizes({"M": 65536})
    best, designs = search_fused(entry.cascade, sizes, arch)
    bound = roofline_s(entry.cascade, sizes, arch)
    assert all(d.cost.latency_s >= bound * (1 - 1e-9) for d in designs if d.cost.feasible)
    assert best.cost.feasible


@pytest.mark.parametrize("name", [*UNMASKED, "decode", "decode-splitk"])
def test_a_cascade_without_a_tile_to_skip_computes_every_point(arch, name):
    entry = get_cascade(name)
    sizes = entry.sizes({"M": 4096})
    best, designs = search_fused(entry.cascade, sizes, arch)
    dense = lower(entry.cascade, best.lowered.sizes)  # at the key tile the search chose
    assert {n: c.ops for n, c in best.cost.einsums.items()} == {e.name: e.ops() for e in dense.einsums}
    assert evaluate_cascade(dense, arch, best.mapping) == best.cost  # the dense plan's own cost
    # per binding and key tile the query blocks are costed largest first, each better (latency, then energy) than
    # the one above it, until one is not (or none is left): the descent of search_fused, nothing more
    groups: dict = {}
    for d in designs:
        groups.setdefault((tuple(sorted(d.binding.items())), tuple(d.lowered.sizes.items())), []).append(d)
    for group in groups.values():
        group.sort(key=lambda d: -int(d.mapping.name.removeprefix("fused-P1=")))
        ranks = [(not d.cost.feasible, d.cost.latency_s, d.cost.energy_pj) for d in group]
        assert all(b < a for a, b in itertools.pairwise(ranks[:-1])), ranks


def test_key_only_state_computes_every_tile(arch):
    """Chunked causal linear attention: the state S += phi(K) V is built from every key tile once, whatever
    the queries see; the per-query work runs on the query's own chunk only."""
    entry = get_cascade("linear-attention-causal")
    sizes = entry.sizes({"M": 16384})
    best, _ = search_fused(entry.cascade, sizes, arch)
    dense = {e.name: e.ops() for e in lower(entry.cascade, sizes).einsums}
    for name in ("FK", "KV", "S", "KZ", "Z"):
        assert best.cost.einsums[name].ops == dense[name]
    for name in ("QK", "XN", "NI"):
        assert sum(best.cost.einsums[name].ops.values()) < sum(dense[name].values()) / 8


def test_block_and_static_masks_combine(arch):
    entry = get_cascade("moba")
    sizes = entry.sizes({"M": 8192})
    plan = plan_fused(entry.cascade, sizes, arch)
    for density in (0.5, 0.25):
        best, _ = search_fused(entry.cascade, sizes, arch, density={"BM": density})
        tiles, blocks = computed_tiles(best, plan, "QK")
        visible = visible_tiles(_causal, sizes, blocks, plan.tile_keys)
        # A tile covers P / blocks / P0 query blocks of the mask (elements of BM), each kept with `density`.
        covered = sizes["P"] // blocks // sizes["P0"]
        assert tiles == rounded_up(visible * (1 - (1 - density) ** covered))
        assert tiles < rounded_up(visible)


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
