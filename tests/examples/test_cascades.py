"""The example cascades of ``examples/cascades`` against independent plain-numpy float64 references.

Each reference is written from the paper's formula on whole arrays or with explicit loops (softmax over a
boolean mask, the GLA recurrence step by step, NAT's window start per query); none of it uses attnscope
code. The structural claims of the files (one pass over M, linear work for GLA, about twice the work of
dense attention for differential attention, tile skipping for neighborhood attention) are checked with the
analyses of ``einsum.analysis``.
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from attnscope.api import load_cascade, run_cascade
from einsum.analysis import (
    effective_op_counts,
    effective_points,
    effective_total_ops,
    may_hold,
    op_counts,
    pass_analysis,
    total_ops,
    work_regions,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "cascades"
DIFF = str(EXAMPLES_DIR / "differential-attention.einsum")
GLA = str(EXAMPLES_DIR / "gated-linear-attention.einsum")
SINK = str(EXAMPLES_DIR / "mqa-learned-sink.einsum")
NAT = str(EXAMPLES_DIR / "neighborhood-attention-2d.einsum")
ALL = (DIFF, GLA, SINK, NAT)

MID = {"B": 2, "H": 2, "E": 3, "F": 2, "M1": 3, "M0": 4, "M": 12, "P": 10}  # a fixed mid-size shape, always tried
FEW = settings(max_examples=3, deadline=None)
seeds = st.integers(0, 2**31 - 1)

# -- references --------------------------------------------------------------------------------------------------


def causal_keep(M, P):
    """keep[m, p]: key m is visible to query p, which sits at position p + M - P."""
    return np.arange(M)[:, None] <= np.arange(P)[None, :] + M - P


def softmax_over_keys(scores, keep):
    """softmax over axis -2 (keys m) of scores[..., m, p], restricted to ``keep``."""
    s = np.where(keep, scores, -np.inf)
    w = np.exp(s - s.max(axis=-2, keepdims=True))
    return w / w.sum(axis=-2, keepdims=True)


def differential_reference(Q1, K1, Q2, K2, V, LAM):
    """Ye et al. 2025: (softmax(Q1 K1^T) - lambda softmax(Q2 K2^T)) V, causal."""
    keep = causal_keep(K1.shape[-1], Q1.shape[-1])
    a1 = softmax_over_keys(np.einsum("bhep,bhem->bhmp", Q1, K1), keep)
    a2 = softmax_over_keys(np.einsum("bhep,bhem->bhmp", Q2, K2), keep)
    diff = a1 - LAM[None, :, None, None] * a2
    return np.einsum("bhmp,bhfm->bhfp", diff, V)


def gla_reference(Q, K, V, A):
    """Yang et al. 2024, the recurrent form: S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t, with
    alpha_t = sigmoid(A_t)^(1/16); the query p reads S at its position p + M - P."""
    B, H, E, P = Q.shape
    M, F = K.shape[-1], V.shape[2]
    alpha = (1.0 / (1.0 + np.exp(-A))) ** (1.0 / 16.0)
    out = np.zeros((B, H, F, P))
    for b in range(B):
        for h in range(H):
            state = np.zeros((E, F))
            for t in range(M):
                state = alpha[b, h, :, t][:, None] * state + np.outer(K[b, h, :, t], V[b, h, :, t])
                p = t - (M - P)
                if p >= 0:
                    out[b, h, :, p] = state.T @ Q[b, h, :, p]
    return out


def sink_reference(Q, K, V, S):
    """gpt-oss: softmax over the causal scores with the sink logit S[h] appended as one more column, the
    sink's column dropped before the product with V; one K/V head for all query heads."""
    B, H, _, P = Q.shape
    M = K.shape[-1]
    scores = np.einsum("bhep,bem->bhmp", Q, K)
    scores = np.where(causal_keep(M, P), scores, -np.inf)
    sink = np.broadcast_to(S[None, :, None, None], (B, H, 1, P))
    full = np.concatenate([scores, sink], axis=2)
    w = np.exp(full - full.max(axis=2, keepdims=True))
    w = w / w.sum(axis=2, keepdims=True)
    return np.einsum("bhmp,bfm->bhfp", w[:, :, :M, :], V)


def nat_window_start(i, length, kernel=3):
    """NATTEN's window start (dilation 1): the window shifts inward at the borders instead of shrinking."""
    half = kernel // 2
    if i < half:
        return 0
    if i + half >= length:
        return length - kernel
    return i - half


def nat_reference(Q, K, V, height, width, kernel=3):
    """Hassani et al. 2023: query pixel (y, x) attends with softmax to the kernel x kernel keys of its
    neighborhood, by explicit loops over pixels; output laid out [B, H, F, height, width]."""
    B, H = Q.shape[:2]
    F = V.shape[2]
    out = np.zeros((B, H, F, height, width))
    for y in range(height):
        for x in range(width):
            sy, sx = nat_window_start(y, height, kernel), nat_window_start(x, width, kernel)
            keys = [ky * width + kx for ky in range(sy, sy + kernel) for kx in range(sx, sx + kernel)]
            q = Q[:, :, :, y * width + x]
            s = np.einsum("bhe,bhek->bhk", q, K[:, :, :, keys])
            w = np.exp(s - s.max(axis=-1, keepdims=True))
            w /= w.sum(axis=-1, keepdims=True)
            out[:, :, :, y, x] = np.einsum("bhk,bhfk->bhf", w, V[:, :, :, keys])
    return out


def check(out, ref):
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


# -- shapes ------------------------------------------------------------------------------------------------------


@st.composite
def tiled_shapes(draw):
    """Small sizes for the M = M1 * M0 cascades; queries are the last P of the M positions."""
    s = {
        "B": draw(st.integers(1, 2)),
        "H": draw(st.integers(1, 3)),
        "E": draw(st.integers(1, 4)),
        "F": draw(st.integers(1, 4)),
        "M1": draw(st.integers(1, 4)),
        "M0": draw(st.integers(1, 4)),
    }
    s["M"] = s["M1"] * s["M0"]
    s["P"] = draw(st.integers(1, s["M"]))
    return s


def scaled(inputs, **factors):
    return {name: arr * factors.get(name, 1.0) for name, arr in inputs.items()}


# -- numerics ----------------------------------------------------------------------------------------------------


@FEW
@example(s=MID, seed=1, scale=1.0)
@given(s=tiled_shapes(), seed=seeds, scale=st.sampled_from([0.3, 1.0, 3.0]))
def test_differential_attention_matches_the_papers_formula(s, seed, scale):
    drawn, _, _ = run_cascade(DIFF, s, seed=seed)
    inputs = scaled(drawn, Q1=scale, Q2=scale)
    _, out, _ = run_cascade(DIFF, s, inputs)
    check(out["AV"], differential_reference(*(inputs[n] for n in ("Q1", "K1", "Q2", "K2", "V", "LAM"))))


@FEW
@example(s=MID, seed=1, gate=10.0)
@given(s=tiled_shapes(), seed=seeds, gate=st.sampled_from([1.0, 10.0, 40.0]))
def test_gated_linear_attention_matches_the_recurrence(s, seed, gate):
    drawn, _, _ = run_cascade(GLA, s, seed=seed)
    inputs = scaled(drawn, A=gate)  # gate logits up to ~+-100: per-step decays from ~1e-3 to ~1
    _, out, _ = run_cascade(GLA, s, inputs)
    check(out["AV"], gla_reference(*(inputs[n] for n in ("Q", "K", "V", "A"))))


@FEW
@example(s=MID, seed=1, sink=1.0)
@given(s=tiled_shapes(), seed=seeds, sink=st.sampled_from([0.0, 1.0, 5.0]))
def test_mqa_learned_sink_matches_softmax_with_a_sink_column(s, seed, sink):
    drawn, _, _ = run_cascade(SINK, s, seed=seed)
    inputs = scaled(drawn, S=sink)
    _, out, _ = run_cascade(SINK, s, inputs)
    check(out["AV"], sink_reference(*(inputs[n] for n in ("Q", "K", "V", "S"))))


@FEW
@example(height=5, width=4, b=2, h=2, e=3, f=2, seed=1)
@given(
    height=st.integers(3, 6),
    width=st.integers(3, 6),
    b=st.integers(1, 2),
    h=st.integers(1, 2),
    e=st.integers(1, 4),
    f=st.integers(1, 4),
    seed=seeds,
)
def test_neighborhood_attention_matches_nat_windows(height, width, b, h, e, f, seed):
    s = {"B": b, "H": h, "E": e, "F": f, "MY": height, "MX": width, "PY": height, "PX": width}
    inputs, out, sizes = run_cascade(NAT, s, seed=seed)
    assert sizes["M"] == sizes["P"] == height * width
    check(out["AV"], nat_reference(inputs["Q"], inputs["K"], inputs["V"], height, width))


def test_sink_limits():
    """A very negative sink gives plain causal softmax; a dominant sink drives the output towards 0."""
    s = {"B": 1, "H": 2, "E": 3, "F": 2, "M1": 3, "M0": 2, "M": 6, "P": 4}
    drawn, _, _ = run_cascade(SINK, s, seed=7)
    Q, K, V = drawn["Q"], drawn["K"], drawn["V"]
    _, out, _ = run_cascade(SINK, s, {**drawn, "S": np.full(2, -1e4)})
    plain = np.einsum("bhmp,bfm->bhfp", softmax_over_keys(np.einsum("bhep,bem->bhmp", Q, K), causal_keep(6, 4)), V)
    check(out["AV"], plain)
    _, out, _ = run_cascade(SINK, s, {**drawn, "S": np.full(2, 1e3)})
    assert np.abs(out["AV"]).max() < 1e-300


# -- structure ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=lambda p: Path(p).stem)
def test_one_pass_over_m(path):
    analysis = pass_analysis(load_cascade(path).cascade, "M")
    assert analysis.passes == 1
    assert analysis.carried == ()


def test_every_example_starts_with_its_paper():
    for path in ALL:
        first = Path(path).read_text().splitlines()[0]
        assert first.startswith("# ") and "20" in first, first


def gla_sizes(M, M0=16):
    return {"B": 1, "H": 2, "E": 8, "F": 8, "M": M, "M0": M0, "P": M}


def test_gla_work_is_linear_in_m():
    c = load_cascade(GLA).cascade
    work = [sum(effective_total_ops(c, gla_sizes(M)).values()) for M in (256, 512, 1024)]
    assert 1.95 < work[1] / work[0] < 2.05
    assert 1.95 < work[2] / work[1] < 2.05
    # the intra-chunk products: M0 keys or fewer per query, not M
    points = effective_points(c, gla_sizes(512))
    assert points["QK"] == 2 * 8 * sum(q % 16 + 1 for q in range(512))
    assert points["XN"] == 2 * 8 * 8 * 512  # one state per query


def test_differential_attention_costs_about_twice_dense_attention():
    """Two score maps and two online softmaxes over one traversal: twice `attention-1pass` (the causal masks
    add one select per score, about 1% at these shapes), and twice `attention-1pass-causal` exactly but for
    the final combine."""
    c = load_cascade(DIFF).cascade
    for M in (256, 1024):
        s = {"B": 1, "H": 2, "E": 32, "F": 64, "M": M, "M0": 64, "P": M}
        mine = total_ops(c, s)
        for name, tolerance in (("attention-1pass", 0.02), ("attention-1pass-causal", 0.005)):
            ref = load_cascade(name)
            dense = total_ops(ref.cascade, ref.sizes(s))
            for kind in ("mul", "add", "exp", "max"):
                assert mine[kind] / dense[kind] == pytest.approx(2.0, rel=0.005), (name, kind)
            assert sum(mine.values()) / sum(dense.values()) == pytest.approx(2.0, rel=tolerance), name
        ref = load_cascade("attention-1pass-causal")
        effective = sum(effective_total_ops(c, s).values())
        assert effective / sum(effective_total_ops(ref.cascade, ref.sizes(s)).values()) == pytest.approx(2.0, rel=0.005)


NAT_32 = {"B": 1, "H": 1, "E": 16, "F": 16, "MY": 32, "MX": 32, "PY": 32, "PX": 32}


def test_neighborhood_attention_masked_work_is_a_small_fraction():
    c = load_cascade(NAT).cascade
    dense = sum(sum(k.values()) for k in op_counts(c, NAT_32).values())
    masked = sum(sum(k.values()) for k in effective_op_counts(c, NAT_32).values())
    assert masked / dense < 0.05
    # every query scores exactly its 9 neighbours (the window shifts at the borders, never shrinks)
    assert effective_points(c, NAT_32)["QK"] == 9 * 1024 * 16


def test_neighborhood_attention_skips_key_rows():
    """For each query pixel, only the 3 key rows of its window hold work: a tile skipper drops the other 29."""
    c = load_cascade(NAT).cascade
    region = work_regions(c, NAT_32)["QK"]
    my, py, px = np.meshgrid(np.arange(32), np.arange(32), np.arange(32), indexing="ij")
    low = {"b": 0, "h": 0, "e": 0, "mx": 0, "my": my, "py": py, "px": px}
    high = {"b": 0, "h": 0, "e": 15, "mx": 31, "my": my, "py": py, "px": px}
    live = np.broadcast_to(may_hold(region, low, high), my.shape)
    assert (live.sum(axis=0) == 3).all()


# -- costs: the files go through the same pipeline as registered cascades, on every target kind ----------------

TARGETS = ("fusemax-cloud", "flat-edge", "h100-sxm", "orin-agx")


def _latency(workload: str, target: str, seq: int) -> float:
    from attnscope.api import evaluate_case
    from simulator.targets import load_target
    from workloads.cases import case_for_model

    case = case_for_model(workload, batch=1, heads=32, kv_heads=8, head_dim=128, seq=seq)
    design = evaluate_case(case, load_target(target))
    assert design.feasible and 0 < design.utilization <= 1 + 1e-9 and design.spill_bytes >= 0
    return design.latency_s


@pytest.mark.parametrize("target", TARGETS)
def test_the_example_costs_are_the_ones_the_readme_explains(target):
    names = ("differential-attention", "mqa-learned-sink", "gated-linear-attention", "neighborhood-attention-2d")
    files = {name: str(EXAMPLES_DIR / f"{name}.einsum") for name in names}
    dense = _latency("attention-1pass-causal", target, 16384)
    cost = {name: _latency(path, target, 16384) for name, path in files.items()}
    if target != "flat-edge":  # where the 2-D array or the tensor cores bind: two maps cost two
        assert cost["differential-attention"] / dense == pytest.approx(2.0, rel=0.03)
    assert dense < cost["differential-attention"] < 2.1 * dense
    assert cost["mqa-learned-sink"] / dense == pytest.approx(1.0, rel=0.01)
    assert cost["neighborhood-attention-2d"] < 0.2 * dense  # almost every key tile skipped
    for name in ("gated-linear-attention", "neighborhood-attention-2d"):  # linear in the length
        growth = cost[name] / _latency(files[name], target, 4096)
        assert 3.7 <= growth <= 4.2, (name, growth)  # below 4 by the fixed costs: a memory-bound GPU kernel's launch
