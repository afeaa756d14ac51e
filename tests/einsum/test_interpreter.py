"""The reference interpreter against independent numpy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from einsum.cascade import Cascade
from einsum.errors import ShapeError
from einsum.interpreter import random_inputs, run
from tests.reference import softmax_attention

ATTENTION = sorted(n for n, e in workloads.CASCADES.items() if "softmax" in e.tags)


@st.composite
def attention_shapes(draw):
    m0 = draw(st.sampled_from([1, 2, 4, 8]))
    m = m0 * draw(st.integers(1, 6))
    return {
        "B": draw(st.integers(1, 2)),
        "H": draw(st.integers(1, 3)),
        "M": m,
        "P": draw(st.integers(1, m)),
        "E": draw(st.integers(1, 6)),
        "F": draw(st.integers(1, 6)),
        "M0": m0,
    }


@pytest.mark.parametrize("name", ATTENTION)
@settings(max_examples=25, deadline=None)
@given(shape=attention_shapes(), seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.1, 1.0, 8.0]))
def test_cascade_computes_softmax_attention(name, shape, seed, scale):
    entry = workloads.get_cascade(name)
    cascade = entry.cascade
    sizes = {k: v for k, v in shape.items() if k in cascade.ranks}
    inputs = random_inputs(cascade, sizes, seed)
    inputs["Q"] = inputs["Q"] * scale
    out = run(cascade, sizes, inputs)["AV"]
    ref = softmax_attention(inputs["Q"], inputs["K"], inputs["V"], causal="causal" in entry.tags)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_registry_has_the_foundation_cascades():
    for name in ("attention-3pass", "attention-2pass", "attention-1pass", "fusemax"):
        assert name in workloads.CASCADES and name + "-causal" in workloads.CASCADES


def test_gemm_and_keep_intermediates():
    c = Cascade.from_text("input A[M,K], B[K,N]\nC[m,n] = sum[k] A[m,k] * B[k,n]")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    out = run(c, {"M": 3, "K": 4, "N": 5}, {"A": a, "B": b}, keep_intermediates=True)
    np.testing.assert_allclose(out["C"], a @ b)
    assert set(out) == {"A", "B", "C"}


def test_running_max_recurrence_over_partitioned_rank():
    text = """\
input X[M,P]
partition M = M1 * M0
init RM[0,p] = -inf
LM[m1,p] = max[m0] X[m1*M0+m0,p]
RM[m1+1,p] = max(RM[m1,p], LM[m1,p])
OUT[p] = RM[M1,p] - 0
"""
    c = Cascade.from_text(text)
    x = np.random.default_rng(1).standard_normal((12, 5))
    out = run(c, {"M": 12, "M0": 4, "P": 5}, {"X": x}, keep_intermediates=True)
    np.testing.assert_allclose(out["OUT"], x.max(axis=0))
    np.testing.assert_allclose(out["RM"][1:], np.maximum.accumulate(x.reshape(3, 4, 5).max(axis=1), axis=0))


def test_elementwise_functions_and_min_reduce():
    c = Cascade.from_text(
        "input X[M,N]\nY[m,n] = sigmoid(X[m,n]) + softplus(X[m,n]) - relu(-X[m,n]) * sqrt(exp(X[m,n]))\n"
        "Z[n] = min[m] Y[m,n]"
    )
    x = np.random.default_rng(2).standard_normal((4, 3))
    out = run(c, {"M": 4, "N": 3}, {"X": x}, keep_intermediates=True)
    y = 1 / (1 + np.exp(-x)) + np.log1p(np.exp(x)) - np.maximum(-x, 0) * np.sqrt(np.exp(x))
    np.testing.assert_allclose(out["Y"], y)
    np.testing.assert_allclose(out["Z"], y.min(axis=0))


def test_input_shape_errors_name_the_tensor_and_ranks():
    entry = workloads.get_cascade("attention-3pass")
    sizes = entry.sizes({"M": 8, "E": 2, "F": 2})
    inputs = random_inputs(entry.cascade, sizes)
    inputs["K"] = inputs["K"][..., :4]
    with pytest.raises(ShapeError, match=r"input K has shape \(1, 1, 2, 4\); expected \[B=1, H=1, E=2, M=8\]"):
        run(entry.cascade, sizes, inputs)
    with pytest.raises(ShapeError, match="missing input array"):
        run(entry.cascade, sizes, {"Q": inputs["Q"]})


def test_rank_sizes_derive_and_check_partitions():
    c = workloads.get_cascade("fusemax").cascade
    base = {"B": 1, "H": 1, "P": 4, "E": 2, "F": 2}
    assert c.rank_sizes({**base, "M": 1024, "M0": 256})["M1"] == 4
    assert c.rank_sizes({**base, "M1": 2, "M0": 3})["M"] == 6
    with pytest.raises(ShapeError, match="M=1000 is not divisible by M0=256"):
        c.rank_sizes({**base, "M": 1000, "M0": 256})
    with pytest.raises(ShapeError, match="does not hold for M=8, M1=3, M0=2"):
        c.rank_sizes({**base, "M": 8, "M1": 3, "M0": 2})
    with pytest.raises(ShapeError, match="give a size for M0 \\(part of partition M = M1 \\* M0\\)"):
        c.rank_sizes({**base, "M": 8})
    with pytest.raises(ShapeError, match="unknown rank Z; its ranks are"):
        c.rank_sizes({**base, "M": 8, "M0": 2, "Z": 1})
    with pytest.raises(ShapeError, match="rank M must be a positive integer"):
        c.rank_sizes({**base, "M": 0, "M0": 2})


def test_out_of_range_index_is_reported():
    c = Cascade.from_text("input X[M]\nY[m] = X[m+1]")
    with pytest.raises(ShapeError, match=r"index m\+1 of X spans 1\.\.4 but X has 4 elements along M"):
        c.rank_sizes({"M": 4})


def test_size_only_rank_in_a_mask_condition():
    text = """\
input Q[B,H,E,P], K[B,H,E,M], V[B,H,F,M]
QK[b,h,m,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m]
MQK[b,h,m,p] = where(m > p + M - P - W, QK[b,h,m,p], -inf)
GM[b,h,p] = max[m] MQK[b,h,m,p]
SN[b,h,m,p] = exp(MQK[b,h,m,p] - GM[b,h,p])
SD[b,h,p] = sum[m] SN[b,h,m,p]
AV[b,h,f,p] = sum[m] SN[b,h,m,p] * V[b,h,f,m] / SD[b,h,p]
"""
    c = Cascade.from_text(text)
    assert "W" in c.size_ranks and "W" in c.ranks
    with pytest.raises(ShapeError, match="give a size for W"):
        c.rank_sizes({"B": 1, "H": 1, "E": 2, "F": 2, "M": 8, "P": 8})
    sizes = {"B": 1, "H": 1, "E": 2, "F": 2, "M": 8, "P": 8, "W": 8}
    inputs = random_inputs(c, sizes, seed=3)
    # W = M: no key falls below the window, so this is plain attention
    np.testing.assert_allclose(
        run(c, sizes, inputs)["AV"], softmax_attention(inputs["Q"], inputs["K"], inputs["V"]), rtol=1e-9
    )
    # W = 3: query p sees keys m > p - 3
    scores = np.einsum("bhep,bhem->bhmp", inputs["Q"], inputs["K"])
    keep = np.arange(8)[:, None] > np.arange(8)[None, :] - 3
    weights = np.exp(np.where(keep, scores, -np.inf) - np.where(keep, scores, -np.inf).max(axis=2, keepdims=True))
    weights /= weights.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(
        run(c, {**sizes, "W": 3}, inputs)["AV"], np.einsum("bhmp,bhfm->bhfp", weights, inputs["V"]), rtol=1e-9
    )
