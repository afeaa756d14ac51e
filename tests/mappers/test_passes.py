"""Tests of mappers.passes: multi-pass fusion designs from the cascade and the architecture alone."""

from __future__ import annotations

import pytest

from einsum.cascade import Cascade
from einsum.errors import SpecError
from einsum.lower import lower
from mappers.cascade_search import search_passes
from mappers.flat import flat_choices, flat_mapping, search_flat
from mappers.passes import pass_choices, pass_mapping, plan_passes, recurrence_refusal, search_pass_designs
from simulator.cost import evaluate_cascade
from simulator.specs import load_arch, with_overrides
from validate.fusemax.report import read_reference, reference_dir
from validate.fusemax.study import FLAT_ROW_BLOCKS, SEQ_LENS, attention_sizes
from workloads import get_cascade
from workloads.attention import THREE_PASS

ARCH = load_arch("flat-cloud")
THREE = get_cascade("attention-3pass").cascade
PUBLISHED_FLAT = read_reference(reference_dir()).get("attn-flat", {})
FLAT_ROWS = sorted(k for k in PUBLISHED_FLAT if k[0] in ("BERT", "TrXL", "T5"))


def lowered(model: str, seq: str, cascade: Cascade = THREE):
    return lower(cascade, attention_sizes(model, SEQ_LENS[seq]))


def test_the_plan_is_derived_from_the_cascade():
    plan = plan_passes(lowered("BERT", "1K"), ARCH)
    assert (plan.batch_vars, plan.query_var, plan.pass_var) == (("b", "h"), "p", "m")
    assert plan.passes == {"QK": 1, "GM": 1, "SN": 2, "SD": 2, "A": 3, "AV": 3}
    assert plan.contractions == ("QK", "AV") and plan.weights == {"QK": "K", "AV": "V"}
    assert plan.arrays["QK"] == ("pe_2d",)
    # softmax on any array that supports its operators: FLAT's 2-D PEs add (SD) but have no max or exp
    assert plan.arrays["SD"] == ("pe_1d", "pe_2d") and plan.arrays["GM"] == plan.arrays["SN"] == ("pe_1d",)
    assert plan.primary == ("Q", "K", "V", "AV")


@pytest.mark.parametrize("model,seq", [("BERT", "1K"), ("BERT", "256K"), ("TrXL", "64K")])
def test_the_generic_space_contains_every_flat_choice_at_the_same_cost(model, seq):
    low = lowered(model, seq)
    plan = plan_passes(low, ARCH)
    own = [c for c in pass_choices(plan, ARCH) if not c.softmax_where(plan)]  # FLAT's: softmax on the 1-D array
    generic = {(c.fusion, {d for _, d in c.dataflow}.pop(), c.p1, c.on_chip): c for c in own}
    flat = flat_choices(low.sizes["P"], ARCH.array("pe_2d").shape[-1])
    assert len(generic) == len(flat)
    for fc in flat:
        fusion = "fused" if fc.stationarity == "output" else "spilled"
        choice = generic[fusion, fc.stationarity, fc.p1, fc.on_chip]
        mine = evaluate_cascade(low, ARCH, pass_mapping(plan, ARCH, choice))
        theirs = evaluate_cascade(low, ARCH, flat_mapping(low, ARCH, fc))
        assert mine.latency_s == pytest.approx(theirs.latency_s, rel=1e-9), fc
        assert mine.energy_pj == pytest.approx(theirs.energy_pj, rel=1e-9), fc


@pytest.mark.skipif(not FLAT_ROWS, reason="shared/reference/fusemax not found beside the checkout")
@pytest.mark.parametrize("model,seq", FLAT_ROWS, ids=lambda x: x)
def test_search_from_the_cascade_alone_is_within_5_percent_of_flat(model, seq):
    # FLAT as the study ran it: its row blocks and sizing rule, softmax on the 1-D array
    study = search_passes(lowered(model, seq), ARCH, row_blocks=FLAT_ROW_BLOCKS, pairing="flat", policy="study")
    published = PUBLISHED_FLAT[model, seq]["latency"]
    assert study["flat_policy"].cost.latency_s == pytest.approx(published, rel=0.05)
    assert study["flat_policy"].description.startswith("FLAT: ")
    # the general search (blocks, binding and dataflow chosen) never does worse
    assert search_passes(lowered(model, seq), ARCH)["best"].cost.latency_s <= published * 1.05


@pytest.mark.parametrize("model,seq", [("BERT", "4K"), ("BERT", "256K")])
def test_flat_policy_costs_what_flats_own_search_costs(model, seq):
    low = lowered(model, seq)
    _, cost, _ = search_flat(low, ARCH)
    policy = search_passes(low, ARCH)["flat_policy"]
    assert policy.cost.latency_s == pytest.approx(cost.latency_s, rel=1e-9)
    assert policy.cost.energy_pj == pytest.approx(cost.energy_pj, rel=1e-9)


def test_independent_dataflows_widen_the_space_and_never_lose():
    low = lowered("BERT", "256K")
    _, paired = search_pass_designs(low, ARCH, row_blocks=FLAT_ROW_BLOCKS)
    _, anyway = search_pass_designs(low, ARCH, row_blocks=FLAT_ROW_BLOCKS, pairing="any")
    assert len(anyway) == 9 * len(paired)  # 2 contractions x 3 dataflows, for each hand-off mode
    assert anyway[0].cost.latency_s <= paired[0].cost.latency_s
    assert {d.choice for d in paired} <= {d.choice for d in anyway}


def test_no_einsum_or_tensor_name_is_assumed():
    renames = {"QK": "S", "GM": "Mx", "SN": "Nm", "SD": "Dn", "AV": "O", "A": "W", "Q": "X", "K": "Y", "V": "Z"}
    text = THREE_PASS
    for old, new in sorted(renames.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f"{old}[", f"{new}[").replace(f"output {old}", f"output {new}")
    renamed = Cascade.from_text(text, name="renamed")
    a = search_passes(lowered("BERT", "16K"), ARCH)["best"]
    b = search_passes(lowered("BERT", "16K", renamed), ARCH)["best"]
    assert b.cost.latency_s == pytest.approx(a.cost.latency_s, rel=1e-12)
    assert b.cost.energy_pj == pytest.approx(a.cost.energy_pj, rel=1e-9)
    assert b.mapping.placement["S"] == a.mapping.placement["QK"]


def test_two_pass_cascade_is_searched_and_saves_the_third_pass():
    for seq in ("1K", "256K"):
        two = search_passes(lowered("BERT", seq, get_cascade("attention-2pass").cascade), ARCH)
        three = search_passes(lowered("BERT", seq), ARCH)
        assert two["best"].cost.feasible
        # The 2-pass cascade trades A's M x P divisions for F x P ones: less 1-D work.
        assert two["best"].cost.latency_s < three["best"].cost.latency_s
    plan = plan_passes(lowered("BERT", "1K", get_cascade("attention-2pass").cascade), ARCH)
    assert plan.contractions == ("QK", "SNV") and plan.arrays["AV"] == ("pe_1d",)  # AV divides


def test_causal_cascades_run_where_an_array_selects_and_say_why_not_elsewhere():
    causal = get_cascade("attention-3pass-causal").cascade
    ops = ARCH.array("pe_1d").to_dict()["ops"]
    no_select = with_overrides(ARCH, {"arrays.pe_1d.ops": {k: v for k, v in ops.items() if k != "select"}})
    with pytest.raises(SpecError, match=r"MQK needs operators select.*pe_1d \(1d\): mac, mul"):
        search_passes(lowered("BERT", "1K", causal), no_select)
    selecting = ARCH if "select" in ops else with_overrides(ARCH, {"arrays.pe_1d.ops.select": {"max": 1}})
    masked = search_passes(lowered("BERT", "1K", causal), selecting)["best"]
    assert masked.mapping.einsums["MQK"].array == "pe_1d"
    # The mask is one more 1-D Einsum per score and skips no work in this model: slower than unmasked.
    assert masked.cost.latency_s > search_passes(lowered("BERT", "1K"), selecting)["best"].cost.latency_s
    two = search_passes(lowered("BERT", "1K", get_cascade("attention-2pass-causal").cascade), selecting)
    assert two["best"].cost.feasible and two["best"].mapping.einsums["MQK"].array == "pe_1d"


def test_bad_arguments_name_what_is_valid():
    plan = plan_passes(lowered("BERT", "1K"), ARCH)
    with pytest.raises(ValueError, match="expected one of flat, searched, any"):
        pass_choices(plan, ARCH, pairing="mixed")
    with pytest.raises(ValueError, match="positive integers"):
        pass_choices(plan, ARCH, row_blocks=(0,))
    no_2d_mac = with_overrides(ARCH, {"arrays.pe_2d.ops": {"add": {"add": 1}}})
    with pytest.raises(SpecError, match=r"QK needs operators mac.*2-D array"):
        plan_passes(lowered("BERT", "1K"), no_2d_mac)
    softmax_only = Cascade.from_text(
        "input X[B,N,P], W[B,N]\nY[b,n,p] = exp(X[b,n,p]) * W[b,n]\nS[b,p] = sum[n] Y[b,n,p]\noutput S", name="sm"
    )
    with pytest.raises(SpecError, match="no contraction"):
        plan_passes(lower(softmax_only, {"B": 2, "N": 8, "P": 4}), ARCH)


def test_a_recurrence_is_refused_with_its_reads_named_never_a_key_error():
    """A recurrence reads a value written after it in dataflow order (its previous step); the planner's loop
    nests treat every point as independent, so it refuses (it used to fail looking up the unplanned step)."""
    arch = load_arch("fusemax-cloud")
    sizes = {"B": 1, "H": 1, "E": 64, "F": 64, "M": 1024, "P": 256, "M1": 4, "M0": 256}
    online = lower(get_cascade("attention-1pass").cascade, sizes)
    why = recurrence_refusal(online)
    assert why is not None and "RM reads RM" in why and "RL reads RL" in why
    with pytest.raises(SpecError, match="attention-1pass has recurrences"):
        plan_passes(online, arch)
    three = lower(get_cascade("attention-3pass").cascade, {r: n for r, n in sizes.items() if r not in ("M1", "M0")})
    assert recurrence_refusal(three) is None
