"""The attention variants (issue 7) against independent plain-numpy float64 references.

Each reference applies the variant's semantics directly on the whole (M, P) score matrix: masks as boolean
arrays, shared heads by repeating K/V, linear attention by its explicit products and cumulative sums. None
of it uses attnscope code.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from einsum.analysis import pass_analysis
from einsum.cascade import Cascade
from einsum.errors import ShapeError
from einsum.interpreter import random_inputs, run
from workloads import variants

VARIANTS = sorted(n for n, e in workloads.CASCADES.items() if "variant" in e.tags)
EXAMPLES = settings(max_examples=12, deadline=None)

# -- references ------------------------------------------------------------------------------------------------


def attend(scores, V, keep=True):
    """softmax over m of scores[..., m, p] restricted to ``keep``, times V[..., f, m]."""
    s = np.where(keep, scores, -np.inf)
    w = np.exp(s - s.max(axis=-2, keepdims=True))
    w /= w.sum(axis=-2, keepdims=True)
    return np.einsum("...mp,...fm->...fp", w, V)


def dot(Q, K):
    return np.einsum("...ep,...em->...mp", Q, K)


def positions(M, P):
    """Key positions m[:, None] and query positions q[None, :] = p + M - P."""
    return np.arange(M)[:, None], np.arange(P)[None, :] + M - P


def phi(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def check(out, ref):
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def run_variant(cascade, sizes, seed, scale, overrides=None):
    sizes = {k: v for k, v in sizes.items() if k in cascade.ranks}
    inputs = random_inputs(cascade, sizes, seed)
    for name in ("Q", "QS"):
        if name in inputs:
            inputs[name] = inputs[name] * scale
    inputs.update(overrides or {})
    return inputs, run(cascade, sizes, inputs)


@st.composite
def shapes(draw, m_parts=("M1", "M0")):
    """Small sizes; M is the product of the drawn parts of its partition."""
    s = {"B": draw(st.integers(1, 2)), "E": draw(st.integers(1, 4)), "F": draw(st.integers(1, 4))}
    s.update({part: draw(st.integers(1, 4)) for part in m_parts})
    s["M"] = int(np.prod([s[p] for p in m_parts]))
    s["P"] = draw(st.integers(1, s["M"]))
    return s


seeds = st.integers(0, 2**31 - 1)
scales = st.sampled_from([0.1, 1.0, 4.0])

# -- shared K/V heads --------------------------------------------------------------------------------------------


@EXAMPLES
@given(s=shapes(), g=st.integers(1, 3), r=st.integers(1, 3), seed=seeds, scale=scales)
def test_gqa_is_attention_with_kv_heads_repeated_per_group(s, g, r, seed, scale):
    c = workloads.get_cascade("gqa").cascade
    x, out = run_variant(c, {**s, "G": g, "R": r}, seed, scale)
    K, V = np.repeat(x["K"], r, axis=1), np.repeat(x["V"], r, axis=1)  # query head h uses KV head h // R
    ref = attend(dot(x["Q"], K), V)
    check(out["AV"].reshape(ref.shape), ref)


@EXAMPLES
@given(s=shapes(), h=st.integers(1, 3), seed=seeds, scale=scales)
def test_mqa_is_attention_with_one_kv_head(s, h, seed, scale):
    c = workloads.get_cascade("mqa").cascade
    x, out = run_variant(c, {**s, "H": h}, seed, scale)
    ref = attend(dot(x["Q"], x["K"][:, None]), x["V"][:, None])
    check(out["AV"], ref)


@pytest.mark.parametrize("name", ["mla", "mla-expanded"])
@EXAMPLES
@given(s=shapes(), h=st.integers(1, 3), l=st.integers(1, 4), er=st.integers(1, 3), seed=seeds, scale=scales)
def test_mla_is_attention_with_keys_and_values_from_the_latent(name, s, h, l, er, seed, scale):
    c = workloads.get_cascade(name).cascade
    x, out = run_variant(c, {**s, "H": h, "L": l, "ER": er}, seed, scale)
    K = np.einsum("hel,blm->bhem", x["WK"], x["CKV"])
    V = np.einsum("hfl,blm->bhfm", x["WV"], x["CKV"])
    scores = dot(x["Q"], K) + np.einsum("bhjp,bjm->bhmp", x["QR"], x["KR"])
    check(out["AV"], attend(scores, V))


# -- decoding --------------------------------------------------------------------------------------------------


def gqa_causal(x, r):
    K, V = np.repeat(x["K"], r, axis=1), np.repeat(x["V"], r, axis=1)
    scores = dot(x["Q"], K)
    m, q = positions(*scores.shape[-2:])
    return attend(scores, V, m <= q)


@EXAMPLES
@given(s=shapes(), g=st.integers(1, 2), r=st.integers(1, 3), p=st.integers(1, 3), seed=seeds, scale=scales)
def test_decode_is_dense_attention_of_the_last_p_positions(s, g, r, p, seed, scale):
    s["P"] = min(p, s["M"])
    c = workloads.get_cascade("decode").cascade
    x, out = run_variant(c, {**s, "G": g, "R": r}, seed, scale)
    ref = gqa_causal(x, r)
    check(out["AV"].reshape(ref.shape), ref)


@EXAMPLES
@given(s=shapes(("S", "M1", "M0")), r=st.integers(1, 2), p=st.integers(1, 4), seed=seeds, scale=scales)
def test_split_k_decode_equals_the_unsplit_computation(s, r, p, seed, scale):
    s["P"] = min(p, s["M"])  # P > 1 can mask whole splits for some queries
    c = workloads.get_cascade("decode-splitk").cascade
    x, out = run_variant(c, {**s, "G": 2, "R": r}, seed, scale)
    ref = gqa_causal(x, r)
    check(out["AV"].reshape(ref.shape), ref)


# -- windows, sinks, mixed heads ------------------------------------------------------------------------------------


@EXAMPLES
@given(s=shapes(), window=st.integers(1, 17), seed=seeds, scale=scales)
def test_sliding_window_is_dense_softmax_with_a_band_mask(s, window, seed, scale):
    c = Cascade.from_text(variants.sliding_window(window))
    x, out = run_variant(c, {**s, "H": 2}, seed, scale)
    m, q = positions(s["M"], s["P"])
    check(out["AV"], attend(dot(x["Q"], x["K"]), x["V"], (m <= q) & (m > q - window)))


@EXAMPLES
@given(s=shapes(), sinks=st.integers(1, 5), window=st.integers(1, 9), seed=seeds, scale=scales)
def test_streaming_llm_keeps_the_sinks_and_the_window(s, sinks, window, seed, scale):
    c = Cascade.from_text(variants.streaming_llm(sinks, window))
    x, out = run_variant(c, {**s, "H": 2}, seed, scale)
    m, q = positions(s["M"], s["P"])
    keep = (m <= q) & ((m > q - window) | (m < sinks))
    check(out["AV"], attend(dot(x["Q"], x["K"]), x["V"], keep))


@EXAMPLES
@given(
    s=shapes(), h=st.integers(1, 2), hs=st.integers(1, 2), sinks=st.integers(1, 3), window=st.integers(1, 6),
    seed=seeds, scale=scales,
)  # fmt: skip
def test_duo_attention_runs_full_and_streaming_heads(s, h, hs, sinks, window, seed, scale):
    c = Cascade.from_text(variants.duo_attention(sinks, window))
    x, out = run_variant(c, {**s, "H": h, "HS": hs}, seed, scale)
    m, q = positions(s["M"], s["P"])
    check(out["AV"], attend(dot(x["Q"], x["K"]), x["V"], m <= q))
    check(out["AVS"], attend(dot(x["QS"], x["KS"]), x["VS"], (m <= q) & ((m > q - window) | (m < sinks))))


def test_registered_window_cascades_are_the_builders_at_the_named_sizes():
    assert workloads.get_cascade("sliding-window").text == variants.sliding_window(variants.SLIDING_WINDOW)
    assert workloads.get_cascade("streaming-llm").text == variants.streaming_llm(
        variants.STREAMING_SINKS, variants.STREAMING_WINDOW
    )
    assert workloads.get_cascade("duo-attention").text == variants.duo_attention(
        variants.DUO_SINKS, variants.DUO_WINDOW
    )
    assert workloads.get_cascade("s2-attention").text == variants.s2_attention(variants.S2_LOCAL_BLOCKS)
    with pytest.raises(ShapeError, match="window must be a positive integer, got 0"):
        variants.sliding_window(0)


# -- block sparsity and sharded heads --------------------------------------------------------------------------------


def block_mask(rng, s, causal):
    """A random 0/1 mask [B,H,M1,P1]; every query keeps a block (for causal: the block of its own position)."""
    bm = (rng.random((s["B"], s["H"], s["M1"], s["P1"])) < 0.5).astype(float)
    if causal:
        q = np.arange(s["P"]) + s["M"] - s["P"]
        bm[:, :, q // s["M0"], np.arange(s["P"]) // s["P0"]] = 1.0
    else:
        bm[:, :, rng.integers(0, s["M1"], s["P1"]), np.arange(s["P1"])] = 1.0
    return bm


@pytest.mark.parametrize("name", ["block-sparse", "moba"])
@EXAMPLES
@given(s=shapes(), p1=st.integers(1, 3), p0=st.integers(1, 3), seed=seeds, scale=scales)
def test_block_sparse_is_dense_softmax_with_the_block_mask_expanded(name, s, p1, p0, seed, scale):
    s.update(H=2, P1=p1, P0=p0, P=p1 * p0)
    s["M1"] = max(s["M1"], -(-s["P"] // s["M0"]))  # M >= P
    s["M"] = s["M1"] * s["M0"]
    bm = block_mask(np.random.default_rng(seed), s, causal=name == "moba")
    c = workloads.get_cascade(name).cascade
    x, out = run_variant(c, s, seed, scale, {"BM": bm})
    m, q = positions(s["M"], s["P"])
    keep = bm[:, :, m // s["M0"], (q - s["M"] + s["P"]) // s["P0"]] == 1  # [B,H,M,P]
    if name == "moba":
        keep &= m <= q
    ref = attend(dot(x["Q"], x["K"]), x["V"], keep)
    check(out["AV"].reshape(ref.shape), ref)


@EXAMPLES
@given(
    m1=st.integers(1, 3), n=st.integers(1, 3), m0=st.integers(1, 3), hg=st.integers(1, 2), hn=st.integers(1, 3),
    local=st.integers(1, 3), p=st.integers(1, 27), seed=seeds, scale=scales,
)  # fmt: skip
def test_s2_attention_is_dense_softmax_with_strided_and_local_blocks(m1, n, m0, hg, hn, local, p, seed, scale):
    M = m1 * n * m0
    s = {"B": 1, "HG": hg, "HN": hn, "M1": m1, "N": n, "M0": m0, "M": M, "P": min(p, M), "E": 3, "F": 2}
    c = Cascade.from_text(variants.s2_attention(local))
    x, out = run_variant(c, s, seed, scale)
    m, q = positions(M, s["P"])
    kb, qb = m // m0, q // m0
    shard = np.arange(hg * hn)[:, None, None] % hn  # head h = hg*HN + hn has shard hn
    keep = (m <= q) & ((kb % n == shard) | (kb > qb - local))  # [H,M,P]
    ref = attend(dot(x["Q"], x["K"]), x["V"], keep)
    check(out["AV"].reshape(ref.shape), ref)


# -- linear, sigmoid, softplus ----------------------------------------------------------------------------------------


@EXAMPLES
@given(s=shapes(), seed=seeds, scale=scales)
def test_linear_attention_is_phi_q_times_phi_k_transpose_v(s, seed, scale):
    c = workloads.get_cascade("linear-attention").cascade
    x, out = run_variant(c, {**s, "H": 2}, seed, scale)
    fq, fk = phi(x["Q"]), phi(x["K"])
    num = np.einsum("bhep,bhef->bhfp", fq, np.einsum("bhem,bhfm->bhef", fk, x["V"]))
    den = np.einsum("bhep,bhe->bhp", fq, fk.sum(axis=-1))
    check(out["AV"], num / den[:, :, None])


@EXAMPLES
@given(s=shapes(), seed=seeds, scale=scales)
def test_causal_linear_attention_is_the_cumulative_sum_form(s, seed, scale):
    c = workloads.get_cascade("linear-attention-causal").cascade
    x, out = run_variant(c, {**s, "H": 2}, seed, scale)
    fq, fk = phi(x["Q"]), phi(x["K"])
    state = np.cumsum(np.einsum("bhem,bhfm->bhmef", fk, x["V"]), axis=2)  # S_t = sum_{m <= t} phi(k_m) v_m^T
    norm = np.cumsum(fk, axis=-1)  # z_t = sum_{m <= t} phi(k_m)
    q = np.arange(s["P"]) + s["M"] - s["P"]
    num = np.einsum("bhep,bhpef->bhfp", fq, state[:, :, q])
    den = np.einsum("bhep,bhep->bhp", fq, norm[..., q])
    check(out["AV"], num / den[:, :, None])


@EXAMPLES
@given(s=shapes(), seed=seeds, scale=scales)
def test_sigmoid_attention_is_unnormalised_sigmoid_weights(s, seed, scale):
    c = workloads.get_cascade("sigmoid-attention").cascade
    x, out = run_variant(c, {**s, "H": 2}, seed, scale)
    w = 1.0 / (1.0 + np.exp(-(dot(x["Q"], x["K"]) + x["SB"][None, :, None, None])))
    check(out["AV"], np.einsum("bhmp,bhfm->bhfp", w, x["V"]))


@EXAMPLES
@given(s=shapes(), seed=seeds, scale=scales)
def test_softplus_attention_is_l1_normalised_softplus_weights(s, seed, scale):
    c = workloads.get_cascade("softplus-attention").cascade
    x, out = run_variant(c, {**s, "H": 2}, seed, scale)
    z = dot(x["Q"], x["K"])
    w = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    w /= w.sum(axis=-2, keepdims=True)
    check(out["AV"], np.einsum("bhmp,bhfm->bhfp", w, x["V"]))


# -- registry and pass analysis -------------------------------------------------------------------------------------

PASSES_OVER_M = {
    "gqa": 1,
    "mqa": 1,
    "mla": 1,
    "mla-expanded": 1,
    "decode": 1,
    "decode-splitk": 3,  # the splits, then the combine's max over S and its weighted sums over S
    "sliding-window": 1,
    "streaming-llm": 1,
    "duo-attention": 1,
    "block-sparse": 1,
    "moba": 1,
    "s2-attention": 1,
    "linear-attention": 1,
    "linear-attention-causal": 1,
    "sigmoid-attention": 1,
    "softplus-attention": 1,
}


def test_every_variant_is_registered_tested_and_documented():
    assert sorted(PASSES_OVER_M) == VARIANTS
    assert len(workloads.CASCADES) >= 12
    for name in VARIANTS:
        entry = workloads.get_cascade(name)
        first = entry.text.splitlines()[0]
        assert first.startswith("# ") and "Depart" in entry.text, name
        assert entry.source and entry.summary, name


@pytest.mark.parametrize(("name", "passes"), sorted(PASSES_OVER_M.items()))
def test_passes_over_m(name, passes):
    assert pass_analysis(workloads.get_cascade(name).cascade, "M").passes == passes


def test_split_k_combine_runs_after_the_splits():
    a = pass_analysis(workloads.get_cascade("decode-splitk").cascade, "M")
    assert a.einsum_pass["RO"] == 1 and a.einsum_pass["GM"] == 2
    assert a.einsum_pass["WS"] == a.einsum_pass["NS"] == a.einsum_pass["AV"] == 3


@pytest.mark.parametrize("name", VARIANTS)
def test_default_sizes_are_complete_at_long_sequences(name):
    entry = workloads.get_cascade(name)
    for m in (1 << 10, 1 << 12, 3 * (1 << 12), 1 << 20):
        sizes = entry.sizes({"M": m})
        assert sizes["M"] == m and sizes["P"] == (1 if "decode" in entry.tags else m)


def test_default_sizes_derive_groups_splits_and_blocks():
    assert workloads.get_cascade("gqa").sizes({"H": 32})["G"] == 8
    assert workloads.get_cascade("gqa").sizes({"H": 32, "G": 4})["R"] == 8
    split = workloads.get_cascade("decode-splitk").sizes({"M": 1 << 16})
    assert (split["S"], split["M1"], split["M0"], split["P"]) == (16, 16, 256, 1)
    blocks = workloads.get_cascade("block-sparse").sizes({"M": 4096, "P": 512})
    assert (blocks["M0"], blocks["M1"], blocks["P0"], blocks["P1"]) == (128, 32, 128, 4)
    s2 = workloads.get_cascade("s2-attention").sizes({"M": 4096, "H": 32})
    assert (s2["N"], s2["HN"], s2["HG"], s2["M0"], s2["M1"]) == (8, 8, 4, 64, 8)
