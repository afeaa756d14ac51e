"""Analyses: pass counts derived from the text, op counts against hand-counted formulas, tensor sizes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import workloads
from einsum.analysis import op_counts, pass_analysis, tensor_sizes, total_ops
from einsum.cascade import Cascade


@pytest.mark.parametrize(
    ("name", "passes"),
    [("attention-3pass", 3), ("attention-2pass", 2), ("attention-1pass", 1), ("fusemax", 1)],
)
def test_passes_over_m(name, passes):
    assert pass_analysis(workloads.get_cascade(name).cascade, "M").passes == passes
    assert pass_analysis(workloads.get_cascade(name + "-causal").cascade, "M").passes == passes


def test_pass_assignment_and_carried_tensors_of_three_pass():
    a = pass_analysis(workloads.get_cascade("attention-3pass").cascade, "M")
    assert a.einsum_pass == {"QK": 1, "GM": 1, "SN": 2, "SD": 2, "A": 3, "AV": 3}
    assert a.carried == ("QK", "SN")  # the M x P intermediates a multi-pass design must buffer or spill


def test_every_attention_cascade_needs_one_pass_over_other_ranks():
    for entry in workloads.CASCADES.values():
        for rank in ("P", "E", "F", "B", "H"):
            assert pass_analysis(entry.cascade, rank).passes == 1, (entry.name, rank)


def test_passes_follow_the_text_not_the_name():
    # Removing the max (an unstable softmax) removes a pass.
    text = """\
input Q[P,E], K[M,E]
S[m,p] = sum[e] Q[p,e] * K[m,e]
N[m,p] = exp(S[m,p])
D[p] = sum[m] N[m,p]
A[m,p] = N[m,p] / D[p]
"""
    assert pass_analysis(Cascade.from_text(text), "M").passes == 2


sizes_strategy = st.fixed_dictionaries(
    {
        "B": st.integers(1, 8),
        "H": st.integers(1, 16),
        "M1": st.integers(1, 8),
        "M0": st.integers(1, 64),
        "P": st.integers(1, 512),
        "E": st.integers(1, 128),
        "F": st.integers(1, 128),
    }
)


@given(sizes_strategy)
def test_three_pass_op_counts_by_hand(s):
    s = dict(s)
    s["M"] = s.pop("M1") * s.pop("M0")
    B, H, M, P, E, F = (s[k] for k in "BHMPEF")
    n = B * H * M * P
    ops = op_counts(workloads.get_cascade("attention-3pass").cascade, s)
    assert ops["QK"] == {"mul": n * E, "add": n * E}
    assert ops["GM"] == {"max": n}
    assert ops["SN"] == {"sub": n, "exp": n}
    assert ops["SD"] == {"add": n}
    assert ops["A"] == {"div": n}
    assert ops["AV"] == {"mul": n * F, "add": n * F}


@given(sizes_strategy)
def test_fusemax_op_counts_by_hand(s):
    B, H, M1, M0, P, E, F = (s[k] for k in ("B", "H", "M1", "M0", "P", "E", "F"))
    n = B * H * M1 * M0 * P  # score elements
    n1 = B * H * M1 * P  # one per M0 tile
    ops = op_counts(workloads.get_cascade("fusemax").cascade, {**s, "M": M1 * M0})
    assert ops == {
        "QK": {"mul": n * E, "add": n * E},
        "LM": {"max": n},
        "RM": {"max": n1},
        "SLN": {"sub": n, "exp": n},
        "SLD": {"add": n},
        "SLNV": {"mul": n * F, "add": n * F},
        "PRM": {"sub": n1, "exp": n1},
        "SPD": {"mul": n1},
        "RD": {"add": n1},
        "SPNV": {"mul": n1 * F},
        "RNV": {"add": n1 * F},
        "AV": {"div": B * H * F * P},
    }


def test_causal_mask_adds_one_select_per_score():
    s = {"B": 2, "H": 3, "M": 16, "P": 16, "E": 4, "F": 4, "M0": 4}
    plain = total_ops(workloads.get_cascade("fusemax").cascade, s)
    causal = total_ops(workloads.get_cascade("fusemax-causal").cascade, s)
    assert causal.pop("select") == 2 * 3 * 16 * 16
    assert causal == plain


def test_tensor_sizes_include_the_initial_step_of_recurrences():
    s = {"B": 2, "H": 3, "M": 16, "P": 5, "E": 4, "F": 7, "M0": 4}
    sizes = tensor_sizes(workloads.get_cascade("fusemax").cascade, s)
    assert sizes["Q"] == 2 * 3 * 4 * 5
    assert sizes["QK"] == 2 * 3 * 16 * 5
    assert sizes["RM"] == 2 * 3 * (4 + 1) * 5
    assert sizes["RNV"] == 2 * 3 * (4 + 1) * 7 * 5
    assert sizes["AV"] == 2 * 3 * 7 * 5


def test_key_rank_of_a_backward_pass_is_the_rank_most_einsums_reduce():
    """A derived backward pass reduces the queries (dK, dV), the keys (dQ) and, for a weight's gradient, the
    batch that every Einsum iterates: its key rank is the queries, which FlashAttention-2's backward walks."""
    from einsum.analysis import key_ranks
    from einsum.backward import derive
    from workloads import get_cascade

    for name in ("attention-1pass", "mla", "gqa"):
        assert key_ranks(derive(get_cascade(name).cascade, "flash").cascade) == ("P", "P"), name
    assert key_ranks(get_cascade("attention-3pass").cascade) == ("M", "M")  # max, sum and AV reduce M
