"""Derived backward cascades (einsum.backward) against central finite differences and float64 references.

Every registered cascade and every example cascade (examples/cascades/*.einsum) gets a backward cascade by
reverse mode; the interpreter runs it in float64 and its gradients must match central finite differences of
the forward cascade to 1e-6 relative, element by element at one small shape and along random directions at
shapes hypothesis draws. A registered cascade without a backward cascade must be listed in UNDIFFERENTIABLE
with the reason (none is today), so a new entry that cannot be differentiated fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workloads
from einsum import backward
from einsum.analysis import key_ranks, pass_analysis
from einsum.backward import BackwardError, derive_backward, flash_backward, recompute_backward
from einsum.cascade import Cascade
from einsum.interpreter import random_inputs, run
from workloads.cases import load_workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "cascades").glob("*.einsum"))
UNDIFFERENTIABLE: dict[str, str] = {}
"""Registered cascades with no derived backward cascade, and why (each must raise BackwardError)."""
FLASH = {
    "attention-1pass", "attention-1pass-causal", "attention-2pass", "attention-2pass-causal", "attention-3pass",
    "attention-3pass-causal", "fusemax", "fusemax-causal", "gqa", "mqa", "mla", "mla-expanded", "decode",
    "sliding-window", "streaming-llm", "block-sparse", "moba", "s2-attention", "duo-attention",
    "examples/cascades/differential-attention.einsum", "examples/cascades/neighborhood-attention-2d.einsum",
}  # fmt: skip
"""Registered cascades whose softmaxes the FlashAttention-2 form recognises (each normalised by its own
denominator; duo-attention has two, differential attention two inside one expression). The others are
refused with a message: no softmax (linear, sigmoid, softplus, gated linear), per-split softmaxes combined
afterwards (decode-splitk), or a sink in the denominator (mqa-learned-sink)."""
TOLERANCE = 1e-6


def _cascade(case: str) -> Cascade:
    return load_workload(case).cascade


def _draw_sizes(cascade: Cascade, pick) -> dict[str, int]:
    """Small sizes: each partition part and each unpartitioned rank from ``pick(rank)``; parents are derived.
    A query rank P is at most the keys M (every query sees a key under the causal masks)."""
    sizes = {}
    for rank in cascade.ranks:
        if rank in cascade.partitions:
            continue
        sizes[rank] = pick(rank)
    full = cascade.rank_sizes(sizes)
    if "P" in full and "M" in full and full["P"] > full["M"] and "P" not in cascade.partitions:
        sizes["P"] = full["M"]
    if "PY" in sizes and "MY" in sizes:  # the 2-D image: queries and keys are the same pixels
        sizes["PY"], sizes["PX"] = sizes["MY"], sizes["MX"]
    return sizes


def _inputs(cascade: Cascade, full: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    x = random_inputs(cascade, full, seed)
    rng = np.random.default_rng(seed + 1)
    for name in cascade.densities:  # 0/1 masks; key block 0 is kept, so every query sees a key
        mask = rng.integers(0, 2, x[name].shape).astype(float)
        mask[..., 0, :] = 1.0
        x[name] = mask
    return x


def _loss(cascade, full, x, seeds) -> float:
    out = run(cascade, full, x)
    return sum(float(np.sum(out[o] * s)) for o, s in seeds.items())


def _backward_gradients(b, full, x, seeds) -> dict[str, np.ndarray]:
    values = {**x, **run(b.forward, full, x, keep_intermediates=True)}
    sizes = {r: v for r, v in full.items() if r in b.cascade.ranks}
    out = run(b.cascade, sizes, b.inputs(values, seeds))
    return b.as_input_shapes(out, full)


def _setup(cascade: Cascade, sizes: dict[str, int], seed: int):
    full = cascade.rank_sizes(sizes)
    x = _inputs(cascade, full, seed)
    out = run(cascade, full, x)
    rng = np.random.default_rng(seed + 2)
    seeds = {o: rng.standard_normal(out[o].shape) for o in cascade.outputs}
    return full, x, seeds


def _elementwise_error(cascade, b, full, x, seeds, eps=1e-6) -> float:
    grads = _backward_gradients(b, full, x, seeds)
    worst = 0.0
    for name, g in grads.items():
        numeric = np.zeros_like(x[name])
        for i in np.ndindex(x[name].shape):
            plus, minus = {**x, name: x[name].copy()}, {**x, name: x[name].copy()}
            plus[name][i] += eps
            minus[name][i] -= eps
            numeric[i] = (_loss(cascade, full, plus, seeds) - _loss(cascade, full, minus, seeds)) / (2 * eps)
        assert np.all(np.isfinite(g)), name
        worst = max(worst, float(np.max(np.abs(numeric - g)) / max(np.max(np.abs(numeric)), 1e-4)))
    return worst


def _directional_error(cascade, b, full, x, seeds, seed, eps=1e-5) -> float:
    grads = _backward_gradients(b, full, x, seeds)
    rng = np.random.default_rng(seed + 3)
    worst = 0.0
    for name, g in grads.items():
        u = rng.standard_normal(x[name].shape)
        plus, minus = {**x, name: x[name] + eps * u}, {**x, name: x[name] - eps * u}
        numeric = (_loss(cascade, full, plus, seeds) - _loss(cascade, full, minus, seeds)) / (2 * eps)
        analytic = float(np.sum(g * u))
        # relative to the derivative, or to 1e-3 where it vanishes (linear attention with E = 1 does not depend
        # on Q): there the difference quotient is rounding noise of order 1e-16 |loss| / eps
        scale = max(abs(numeric), float(np.linalg.norm(g) * np.linalg.norm(u)) * 1e-3, 1e-3)
        worst = max(worst, abs(numeric - analytic) / scale)
    return worst


CASES = sorted(workloads.CASCADES) + [str(p.relative_to(ROOT)) for p in EXAMPLES]


def _fixed_sizes(cascade: Cascade) -> dict[str, int]:
    small = {"B": 1, "E": 2, "F": 2, "L": 2, "ER": 2, "H": 2, "HS": 1, "G": 1, "R": 2, "HG": 1, "HN": 2}
    return _draw_sizes(cascade, lambda r: small.get(r, 3 if r in ("MY", "MX", "PY", "PX") else 2))


def test_every_registered_cascade_is_covered():
    assert len(workloads.CASCADES) >= 24
    assert set(UNDIFFERENTIABLE) <= set(workloads.CASCADES)
    for name, why in UNDIFFERENTIABLE.items():
        with pytest.raises(BackwardError):
            derive_backward(_cascade(name))
        assert why
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("case", [c for c in CASES if c not in UNDIFFERENTIABLE])
def test_backward_matches_finite_differences_elementwise(case):
    cascade = _cascade(case)
    b = derive_backward(cascade)
    assert set(b.gradients) == {x for x in cascade.inputs if x not in cascade.densities}
    full, x, seeds = _setup(cascade, _fixed_sizes(cascade), seed=0)
    assert _elementwise_error(cascade, b, full, x, seeds) < TOLERANCE


_BACKWARDS: dict[str, object] = {}


def _derived(case: str):
    if case not in _BACKWARDS:
        _BACKWARDS[case] = derive_backward(_cascade(case))
    return _BACKWARDS[case]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from([c for c in CASES if c not in UNDIFFERENTIABLE]), data=st.data())
def test_backward_matches_finite_differences_over_shapes(case, data):
    cascade = _cascade(case)
    b = _derived(case)
    sizes = _draw_sizes(cascade, lambda r: data.draw(st.integers(1, 3 if r in ("MY", "MX", "PY", "PX") else 2), r))
    seed = data.draw(st.integers(0, 2**16), "seed")
    full, x, seeds = _setup(cascade, sizes, seed)
    assert _directional_error(cascade, b, full, x, seeds, seed) < TOLERANCE


# -- an independent float64 reference: torch autograd of the formula -----------------------------------------


def _torch_attention(q, k, v, kind, causal=False, window=None, bias=None):
    import torch

    s = torch.einsum("bhep,bhem->bhmp", q, k)
    m, p = s.shape[2], s.shape[3]
    pos_m = torch.arange(m)[:, None]
    pos_q = torch.arange(p)[None, :] + m - p
    keep = torch.ones(m, p, dtype=torch.bool)
    if causal:
        keep &= pos_m <= pos_q
    if window is not None:
        keep &= pos_m > pos_q - window
    if kind == "softmax":
        w = torch.softmax(s.masked_fill(~keep, -math.inf), dim=2)
    elif kind == "sigmoid":
        w = torch.sigmoid(s + bias[None, :, None, None])
    return torch.einsum("bhmp,bhfm->bhfp", w, v)


@pytest.mark.parametrize(
    ("case", "kind", "options"),
    [
        ("attention-1pass", "softmax", {}),
        ("fusemax-causal", "softmax", {"causal": True}),
        ("attention-3pass-causal", "softmax", {"causal": True}),
        ("sliding-window", "softmax", {"causal": True, "window": 3}),
        ("sigmoid-attention", "sigmoid", {}),
        ("gqa", "softmax", {}),
        ("linear-attention", "linear", {}),
    ],
)
@pytest.mark.parametrize("form", ["autodiff", "flash", "recompute"])
def test_gradients_match_torch_autograd(case, kind, options, form):
    torch = pytest.importorskip("torch")
    cascade = _cascade(case)
    if form == "flash" and case not in FLASH:
        with pytest.raises(BackwardError, match="no FlashAttention-2 form"):
            flash_backward(cascade)
        return
    b = {"autodiff": derive_backward, "flash": flash_backward, "recompute": recompute_backward}[form](cascade)
    sizes = {"B": 2, "M": 8, "M0": 2, "P": 6, "E": 3, "F": 2}
    sizes |= {"G": 2, "R": 2} if case == "gqa" else {"H": 2}
    sizes |= {"W": 3} if case == "sliding-window" else {}
    sizes = {r: n for r, n in sizes.items() if r in cascade.ranks}
    full, x, seeds = _setup(cascade, sizes, seed=5)
    grads = _backward_gradients(b, full, x, seeds)
    t = {n: torch.tensor(a, dtype=torch.float64, requires_grad=True) for n, a in x.items()}
    q, k, v = t["Q"], t["K"], t["V"]
    if case == "gqa":  # query head g*R + r reads K/V head g
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    if kind == "linear":
        phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
        num = torch.einsum("bhep,bhem,bhfm->bhfp", phi_q, phi_k, v)
        out = num / torch.einsum("bhep,bhem->bhp", phi_q, phi_k)[:, :, None, :]
    else:
        out = _torch_attention(q, k, v, kind, bias=t.get("SB"), **options)
    (out * torch.tensor(seeds["AV"]).reshape(out.shape)).sum().backward()  # gqa: AV[b,g,r,f,p]
    for name, g in grads.items():
        ref = t[name].grad.numpy()
        assert np.max(np.abs(g - ref)) <= 1e-10 * max(1.0, np.max(np.abs(ref))), name


# -- the FlashAttention-2 form -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_flash_form_where_recognised_equals_autodiff_and_takes_one_pass(case):
    cascade = _cascade(case)
    if case not in FLASH:
        with pytest.raises(BackwardError, match="no FlashAttention-2 form"):
            flash_backward(cascade)
        return
    b = flash_backward(cascade)
    text = b.cascade.text()
    lse = {t for t in b.saved if t.startswith("LSE")}
    assert lse and set(b.forward.outputs) == {*cascade.outputs, *lse}
    saved = set(b.saved) - set(cascade.inputs)
    softmax_output = {t for t in saved if f"D{t}[" in text}  # O of D = rowsum(dO * O) (OL of mla)
    values = {t for t in saved if f"{t}[" in next(x for x in text.splitlines() if x.startswith("dP["))}  # VC
    assert saved <= {*cascade.outputs, *lse, *softmax_output, *values}, saved  # P, the scores recomputed
    assert "exp(" in text and "- LSE" in text
    assert pass_analysis(b.cascade, "M").passes == 1
    full, x, seeds = _setup(cascade, _fixed_sizes(cascade), seed=1)
    flash = _backward_gradients(b, full, x, seeds)
    auto = _backward_gradients(derive_backward(cascade), full, x, seeds)
    for name in auto:
        assert np.allclose(flash[name], auto[name], rtol=1e-10, atol=1e-12), name


def test_flash_refuses_a_softmax_with_a_sink_in_the_denominator():
    sink = _cascade("examples/cascades/mqa-learned-sink.einsum")
    with pytest.raises(BackwardError, match="no FlashAttention-2 form"):
        flash_backward(sink)


# -- structure, errors and the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["fusemax", "linear-attention-causal", "examples/cascades/gated-linear-attention.einsum"]
)
def test_backward_text_parses_back_to_the_same_cascade(case):
    b = derive_backward(_cascade(case))
    again = Cascade.from_text(b.cascade.text(), name="again")
    assert [e.text for e in again.einsums] == [e.text for e in b.cascade.einsums]
    assert again.outputs == b.cascade.outputs


def test_recurrences_run_backwards_as_recurrences():
    b = derive_backward(_cascade("fusemax"))
    assert set(b.cascade.recurrences.values()) == {"m1"}
    assert "RM" in b.saved and b.saved["RM"] == "RM_w"  # an iterative tensor saved as its written steps
    assert "M1-m1-1" in b.cascade.text()  # forward values read at the reversed step
    assert pass_analysis(b.cascade, "M").passes == 2


def test_missing_rule_names_the_einsum_and_the_operator(monkeypatch):
    monkeypatch.delitem(backward.RULES, "exp")
    with pytest.raises(BackwardError, match=r"PRM: no derivative rule for operator 'exp' in `PRM\[b,h,m1,p\] = exp"):
        derive_backward(_cascade("fusemax"))


def test_bad_outputs_and_inputs_are_named():
    c = _cascade("attention-3pass")
    with pytest.raises(BackwardError, match="'QK' is not an output"):
        derive_backward(c, outputs=("QK",))
    with pytest.raises(BackwardError, match="'X' is not an input"):
        derive_backward(c, wrt=("X",))
    only_v = derive_backward(c, wrt=("V",))
    assert set(only_v.gradients) == {"V"} and "K" not in only_v.cascade.inputs


def test_masks_with_a_density_are_not_differentiated():
    b = derive_backward(_cascade("block-sparse"))
    assert "BM" not in b.gradients and set(b.gradients) == {"Q", "K", "V"}


def test_relu_and_min_use_the_step_function():
    c = Cascade.from_text("input A[M], B[M]\nY[m] = relu(A[m]) + min(A[m], B[m])")
    text = derive_backward(c).cascade.text()
    assert "step(A[m])" in text and "step(A[m] - B[m])" in text
    full, x, seeds = _setup(c, {"M": 5}, seed=3)
    assert _elementwise_error(c, derive_backward(c), full, x, seeds) < TOLERANCE


def test_cli_shows_the_backward_cascade_with_its_passes(capsys):
    from attnscope.cli import main

    assert main(["cascade", "show", "fusemax", "--direction", "bwd", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["direction"] == "bwd" and info["name"] == "fusemax-bwd"
    assert info["passes"] == 2 and info["pass_rank"] == "M"
    assert info["gradients"]["K"] == {"tensor": "dK", "ranks": ["B", "H", "E", "M1", "M0"]}
    assert info["seeds"] == {"AV": "dAV"}
    assert main(["cascade", "show", "fusemax", "--direction", "bwd", "--form", "flash"]) == 0
    text = capsys.readouterr().out
    assert "passes over M: 1" in text and "P[b,h,m1,m0,p] = exp(QK[b,h,m1,m0,p] - LSE[b,h,p])" in text
    assert main(["cascade", "show", "sigmoid-attention", "--direction", "bwd", "--form", "flash"]) == 2
    assert "no FlashAttention-2 form" in capsys.readouterr().err
    assert main(["cascade", "show", "sigmoid-attention", "--direction", "bwd", "--form", "recompute"]) == 0
    text = capsys.readouterr().out
    assert "backward pass (recompute)" in text and "input SG" not in text and "SG[b,h,m,p] = sigmoid(" in text


# -- the local rules on random expressions ------------------------------------------------------------------


def _expressions(depth: int):
    """Random value expressions over A[m,n] and B[n] (smooth almost everywhere; log and sqrt of positives,
    exp and division of bounded values)."""
    leaf = st.sampled_from(["A[m,n]", "B[n]", "0.5", "A[m,n]"])
    if depth == 0:
        return leaf
    sub = _expressions(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-", "*"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(sub, sub).map(lambda t: f"({t[0]} / (1.5 + sigmoid({t[1]})))"),
        st.tuples(st.sampled_from(["sigmoid", "softplus", "relu", "-"]), sub).map(lambda t: f"{t[0]}({t[1]})"),
        sub.map(lambda t: f"exp(sigmoid({t}) - 0.5)"),  # bounded: exp(exp(exp(x))) overflows
        st.tuples(st.sampled_from(["log", "sqrt"]), sub).map(lambda t: f"{t[0]}(1 + softplus({t[1]}))"),
        st.tuples(st.sampled_from(["max", "min"]), sub, sub).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(st.sampled_from(["m <= n", "m + 1 == n", "n > 0"]), sub, sub).map(
            lambda t: f"where({t[0]}, {t[1]}, {t[2]})"
        ),
    )


@settings(max_examples=80, deadline=None)
@given(body=_expressions(3), reduce=st.sampled_from(["", "sum[n] ", "max[n] ", "min[n] "]), seed=st.integers(0, 99))
def test_local_rules_match_finite_differences_on_random_expressions(body, reduce, seed):
    out = "Y[m]" if reduce else "Y[m,n]"
    text = f"input A[M,N], B[N]\n{out} = {reduce}{body} + 0.25 * A[m,n] * B[n]"
    cascade = Cascade.from_text(text)
    b = derive_backward(cascade)
    full, x, seeds = _setup(cascade, {"M": 2, "N": 3}, seed)
    assert _elementwise_error(cascade, b, full, x, seeds) < TOLERANCE


@pytest.mark.parametrize(
    ("text", "sizes", "expected"),
    [  # a reversed read, a partial read (the last key of each block), a tensor read plainly and through its
        # partition (the gradient in the parts), a recurrence read at v, v+1 and its last step from outside
        ("input A[M]\nY[m] = A[M-1-m] * A[m]", {"M": 4}, "dY[M-m-1]"),
        ("input A[M]\npartition M = M1 * M0\nY[m1] = A[m1*M0+M0-1] * 2", {"M": 6, "M0": 3}, "m1*M0+M0-1 == m"),
        (
            "input A[M], B[M]\npartition M = M1 * M0\nX[m] = exp(A[m])\nY[m1,m0] = X[m1*M0+m0] * B[m1*M0+m0]\n"
            "Z[m] = X[m] * B[m]\noutput Y, Z",
            {"M": 6, "M0": 3},
            "dA[m1,m0]",
        ),
        (
            "input A[M], B[M]\npartition M = M1 * M0\ninit T[0,m0] = 1\nT[m1+1,m0] = T[m1,m0] * A[m1*M0+m0] + "
            "B[m1*M0+m0]\nY[m0] = T[M1,m0]\nW[m1,m0] = T[m1,m0] * T[m1+1,m0]\noutput Y, W",
            {"M": 6, "M0": 2},
            "dT_shift[m1+1,m0]",
        ),
    ],
)
def test_reads_are_scattered_back_by_their_index(text, sizes, expected):
    cascade = Cascade.from_text(text)
    b = derive_backward(cascade)
    assert expected in b.cascade.text()
    full, x, seeds = _setup(cascade, sizes, seed=4)
    assert _elementwise_error(cascade, b, full, x, seeds) < TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_cascade_show_bwd_reports_passes_for_every_cascade(case):
    from attnscope import api

    shape = {"M": 64, "M0": 16, "P": 64} if case.endswith(".einsum") else {"M": 256}
    shape |= {"B": 1, "H": 2, "E": 8, "F": 8} if case.endswith(".einsum") else {}
    if "neighborhood" in case:
        shape = {"B": 1, "H": 1, "M": 64, "P": 64, "MX": 8, "PX": 8, "E": 8, "F": 8}
    info = api.describe_cascade(case, shape, direction="bwd")
    forward = api.describe_cascade(case, shape)
    assert info["pass_rank"] == forward["pass_rank"] and info["passes"] >= 1
    assert info["name"].endswith("-bwd") and set(info["gradients"]) <= set(forward["inputs"])
    if case in FLASH:
        assert api.describe_cascade(case, shape, direction="bwd", form="flash")["passes"] == 1


@pytest.mark.parametrize("form", ["autodiff", "flash"])
def test_cli_runs_the_backward_cascade_against_a_numpy_reference(form, tmp_path, capsys):
    """``cascade run --direction bwd``: the gradients of causal softmax attention, checked against the
    textbook formulas written in numpy (independent of the cascades)."""
    from attnscope.cli import main

    out = tmp_path / "g.npz"
    args = ["cascade", "run", "fusemax-causal", "--shape", "B=1,H=2,M=8,M0=4,P=6,E=4,F=3", "--seed", "7"]
    assert main([*args, "--direction", "bwd", "--form", form, "--save-inputs", "--out", str(out)]) == 0
    capsys.readouterr()
    d = np.load(out)
    q, k, v, do = d["Q"], d["K"], d["V"], d["dAV"]
    s = np.einsum("bhep,bhem->bhmp", q, k)
    m, p = s.shape[2], s.shape[3]
    s = np.where(np.arange(m)[:, None] <= np.arange(p)[None, :] + m - p, s, -np.inf)
    w = np.exp(s - s.max(axis=2, keepdims=True))
    w /= w.sum(axis=2, keepdims=True)
    o = np.einsum("bhmp,bhfm->bhfp", w, v)
    dv = np.einsum("bhmp,bhfp->bhfm", w, do)
    dw = np.einsum("bhfp,bhfm->bhmp", do, v)
    ds = w * (dw - np.einsum("bhfp,bhfp->bhp", do, o)[:, :, None, :])
    dq, dk = np.einsum("bhmp,bhem->bhep", ds, k), np.einsum("bhmp,bhep->bhem", ds, q)
    for name, ref in (("dQ", dq), ("dK", dk), ("dV", dv)):
        assert np.allclose(d[name], ref, rtol=1e-10, atol=1e-12), name
    given = tmp_path / "in.npz"
    np.savez(given, dAV=np.zeros_like(do))
    assert main([*args, "--direction", "bwd", "--inputs", str(given), "--out", str(out)]) == 0
    assert all(not np.any(np.load(out)[n]) for n in ("dQ", "dK", "dV"))  # a zero seed: zero gradients


# -- the recomputation form ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_recompute_form_saves_no_per_key_value_and_matches_finite_differences(case):
    """Every cascade has a form that saves nothing indexed by the keys but a recurrence's steps (the scores
    and what maps them are recomputed), with the same gradients."""
    cascade = _cascade(case)
    b = recompute_backward(cascade)
    assert b.form == "recompute"
    key = key_ranks(cascade)[0]
    keyish = {key, *cascade.partitions.get(key, ())}
    for t in set(b.saved) - set(cascade.inputs) - set(cascade.outputs):
        tensor = cascade.tensors[t]
        assert not keyish & set(tensor.ranks) or t in cascade.recurrences or tensor.iterative_dim is not None, t
    full, x, seeds = _setup(cascade, _fixed_sizes(cascade), seed=2)
    assert _elementwise_error(cascade, b, full, x, seeds) < TOLERANCE


def test_sigmoid_attention_recomputes_its_scores_and_saves_nothing():
    b = recompute_backward(_cascade("sigmoid-attention"))
    assert set(b.saved) == {"Q", "K", "V", "SB"}  # not SG[B,H,M,P]: recomputed as FlashSigmoid does
    assert b.cascade.text().count("sigmoid(QK[b,h,m,p] + SB[h])") == 1
