"""Any attention cascade on a GPU (simulator.kernels.variants.predict_case): every registered one on a GPU and an
edge device, cascades written only as text, names that change nothing, and the kernels each structure gets."""

import doctest
import re

import pytest

import simulator.kernels.variants as variants_module
import workloads
from einsum.analysis import effective_points, tensor_sizes
from einsum.cascade import Cascade
from einsum.errors import AttnscopeError
from simulator.device import load_device
from simulator.gpu import predict
from simulator.kernels.variants import kernel_for, predict_case, predict_variant
from workloads.cases import Case, case_for_model, make_case

DEVICES = ("h100-sxm", "orin-agx")
MODEL = {"batch": 1, "heads": 32, "kv_heads": 8, "head_dim": 128}
SHAPE = {"batch": 1, "heads": 32, "head_dim": 128}
DEVICE = "h100-sxm"


def test_module_doctests():
    assert doctest.testmod(variants_module).failed == 0


def _check(p, case, device):
    spec = load_device(device)
    words = tensor_sizes(case.cascade, case.sizes)
    compulsory = sum(words[t] for t in (*case.cascade.inputs, *case.cascade.outputs)) * 2  # bf16
    bound = max(p.flops / spec.tensor_peak_flops("bf16"), compulsory / spec.dram_bytes_per_s)
    assert p.time_s >= bound * (1 - 1e-12)
    assert p.time_s >= p.roofline_s * (1 - 1e-12)
    assert 0 < p.tflops * 1e12 <= spec.tensor_peak_flops("bf16") * (1 + 1e-9)
    assert p.hbm_bytes >= compulsory * (1 - 1e-12)
    assert p.bound in ("tensor", "sfu", "fma", "smem", "l2", "memory", "launch")
    assert p.kernel.endswith(f":{case.name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(workloads.CASCADES))
def test_every_registered_cascade_has_a_cost_on_a_gpu_and_an_edge_device(name, device):
    case = case_for_model(name, seq=4096, **MODEL)
    _check(predict_case(device, case), case, device)


@pytest.mark.parametrize("name", ["attention-1pass-causal", "sliding-window", "moba", "s2-attention", "duo-attention",
                                  "linear-attention-causal", "decode-splitk", "attention-3pass-causal"])  # fmt: skip
def test_masked_cascades_at_long_lengths(name):
    case = case_for_model(name, seq=16384, **MODEL)
    _check(predict_case(DEVICE, case), case, DEVICE)


WINDOWED = """\
# A causal window written inline: nothing registered, nothing named.
input QQ[B,H,E,P], KK[B,H,E,M], VV[B,H,F,M]
param W = 64
partition M = M1 * M0
S[b,h,m1,m0,p] = sum[e] QQ[b,h,e,p] * KK[b,h,e,m1*M0+m0]
T[b,h,m1,m0,p] = where(m1*M0+m0 <= p + M - P, where(m1*M0+m0 + W > p + M - P, S[b,h,m1,m0,p], -inf), -inf)
init X[b,h,0,p] = -1e30
init Y[b,h,0,p] = 0
init Z[b,h,0,f,p] = 0
LX[b,h,m1,p] = max[m0] T[b,h,m1,m0,p]
X[b,h,m1+1,p] = max(X[b,h,m1,p], LX[b,h,m1,p])
U[b,h,m1,m0,p] = exp(T[b,h,m1,m0,p] - X[b,h,m1+1,p])
D[b,h,m1,p] = exp(X[b,h,m1,p] - X[b,h,m1+1,p])
LY[b,h,m1,p] = sum[m0] U[b,h,m1,m0,p]
Y[b,h,m1+1,p] = Y[b,h,m1,p] * D[b,h,m1,p] + LY[b,h,m1,p]
LZ[b,h,m1,f,p] = sum[m0] U[b,h,m1,m0,p] * VV[b,h,f,m1*M0+m0]
Z[b,h,m1+1,f,p] = Z[b,h,m1,f,p] * D[b,h,m1,p] + LZ[b,h,m1,f,p]
O[b,h,f,p] = Z[b,h,M1,f,p] / Y[b,h,M1,p]
output O
"""


def test_a_cascade_written_only_as_text_is_costed_and_visits_about_window_over_length_of_the_tiles(tmp_path):
    path = tmp_path / "my-window.einsum"
    path.write_text(WINDOWED)
    seq, window = 8192, 64
    case = make_case(str(path), {"B": 1, "H": 32, "E": 128, "F": 128, "M": seq, "P": seq, "M0": 128})
    p = predict_case(DEVICE, case)
    _check(p, case, DEVICE)
    dense = predict_case(DEVICE, make_case("attention-1pass", {"B": 1, "H": 32, "E": 128, "F": 128, "M": seq}))
    br, bc = p.tiles["block_m"], p.tiles["block_n"]
    blocks = 32 * seq // br
    assert p.tiles["key_tiles_visited"] <= blocks * ((window + br - 1) // bc + 2)  # the block's rows and its window
    assert p.tiles["key_tiles_visited"] >= blocks * (window + br - 1) // bc
    ratio = p.tiles["key_tiles_visited"] / dense.tiles["key_tiles_visited"] * (br * bc) / (
        dense.tiles["block_m"] * dense.tiles["block_n"])  # fmt: skip
    assert window / seq <= ratio <= (window + br + 2 * bc) / seq
    pairs = window * seq - window * (window - 1) / 2  # each query's last W keys (fewer for the first W - 1)
    assert p.flops == pytest.approx(dense.flops * pairs / seq**2, rel=1e-12)  # unmasked pairs only
    assert p.time_s < dense.time_s / 10


def _renamed(case: Case) -> Case:
    """The case with every tensor of its cascade renamed (T0, T1, ...)."""
    names = {t: f"T{i}" for i, t in enumerate(case.cascade.tensors)}
    lines = []
    for line in case.cascade.text().splitlines():
        if line.startswith(("output ", "density ")):
            head, rest = line.split(" ", 1)
            line = head + " " + re.sub(r"\b([A-Z][A-Z0-9_]*)\b", lambda m: names.get(m[1], m[1]), rest, count=0)
        elif not line.startswith("#"):
            line = re.sub(r"\b([A-Z][A-Z0-9_]*)\[", lambda m: names.get(m[1], m[1]) + "[", line)
        lines.append(line)
    cascade = Cascade.from_text("\n".join(lines) + "\n", name=case.name)
    assert set(cascade.tensors) == set(names.values())
    return Case(case.name, cascade, case.sizes, {names[t]: d for t, d in case.density.items()})


@pytest.mark.parametrize("name", list(workloads.CASCADES))
def test_renaming_every_tensor_changes_no_number(name):
    case = case_for_model(name, seq=2048, **MODEL)
    for device in ("h100-sxm", "a100-sxm"):
        a, b = predict_case(device, case), predict_case(device, _renamed(case))
        assert (a.time_s, a.flops, a.hbm_bytes, a.exp_ops, a.bound) == (b.time_s, b.flops, b.hbm_bytes, b.exp_ops,
                                                                        b.bound)  # fmt: skip
        assert dict(a.tiles) == dict(b.tiles) and a.times_s == b.times_s


def test_the_kernel_follows_the_structure():
    kinds = {n: kernel_for(case_for_model(n, seq=4096, **MODEL)) for n in workloads.CASCADES}
    assert {n for n, k in kinds.items() if k == "unfused"} == {
        "attention-3pass", "attention-3pass-causal", "attention-2pass", "attention-2pass-causal"}  # fmt: skip
    assert {n for n, k in kinds.items() if k == "decode"} == {"decode", "decode-splitk"}
    splitk = predict_case(DEVICE, case_for_model("decode-splitk", seq=65536, **MODEL, params={"splits": 8}))
    decode = predict_case(DEVICE, case_for_model("decode", seq=65536, **MODEL))
    assert (splitk.tiles["splits"], decode.tiles["splits"]) == (8, 1)  # the cascade fixes the split
    assert splitk.tiles["rows_per_tile"] == 4  # the R = 32 / 8 query heads of a K/V group share a tile
    assert splitk.time_s < decode.time_s
    # a one-pass cascade at one query runs the decode kernel unless a fused one is asked for
    one = make_case("gqa", {"B": 1, "H": 32, "G": 8, "E": 128, "F": 128, "P": 1, "M": 32768})
    assert predict_case(DEVICE, one).kernel == "decode:gqa"
    assert predict_case(DEVICE, one, kernel="fa3").kernel == "fa3:gqa"


def test_the_unfused_chain_derived_from_the_cascade_reproduces_the_sdpa_chain():
    for name, causal, rel in (("attention-3pass", False, 1e-12), ("attention-3pass-causal", True, 1e-12),
                              ("attention-2pass", False, 1e-3), ("attention-2pass-causal", True, 1e-3)):  # fmt: skip
        for device in ("h100-sxm", "orin-agx"):
            chain = predict_case(device, make_case(name, {"B": 2, "H": 16, "E": 128, "F": 128, "M": 4096}))
            sdpa = predict(device, "sdpa", batch=2, heads=16, seq_q=4096, head_dim=128, causal=causal,
                           kernel="unfused")  # fmt: skip
            assert chain.time_s == pytest.approx(sdpa.time_s, rel=rel)
            assert chain.flops == pytest.approx(sdpa.flops, rel=1e-12)
            assert chain.hbm_bytes == pytest.approx(sdpa.hbm_bytes, rel=rel)
            kinds = [q.kernel.split(":")[0] for q in chain.parts]
            assert kinds == ["gemm", *(["mask"] if causal else []), "rowwise", "gemm"]


def test_sdpa_on_the_fused_kernels_is_the_registered_case():
    for causal, window, kv, name in ((False, None, 32, "attention-1pass"), (True, None, 32, "attention-1pass-causal"),
                                     (True, 1024, 32, "sliding-window"), (False, None, 8, "gqa")):  # fmt: skip
        sdpa = predict(DEVICE, "sdpa", seq_q=8192, causal=causal, window=window, kv_heads=kv, kernel="fa3", **SHAPE)
        shape = {"B": 1, "H": 32, "E": 128, "F": 128, "M": 8192, **({"G": kv} if kv < 32 else {})}
        case = make_case(name, shape, params={"W": window} if window else None)
        assert sdpa.time_s == predict_case(DEVICE, case, kernel="fa3").time_s
        assert sdpa.kernel == "fa3"
    grouped = predict(DEVICE, "sdpa", seq_q=8192, causal=True, kv_heads=8, kernel="fa3", **SHAPE)
    full = predict(DEVICE, "sdpa", seq_q=8192, causal=True, kv_heads=32, kernel="fa3", **SHAPE)
    assert grouped.hbm_bytes < full.hbm_bytes and grouped.flops == full.flops


def _compute_s(p) -> float:
    return max(v for k, v in p.times_s.items() if k not in ("memory", "launch"))


def _area(p) -> float:
    """Query-key pairs the visited tiles cover (the mapper may pick another tile at another density)."""
    return p.tiles["key_tiles_visited"] * p.tiles["block_m"] * p.tiles["block_n"]


def test_block_masks_keep_each_block_with_its_density_independently():
    for name, seq in (("block-sparse", 16384), ("moba", 65536)):
        full, half = (predict_variant(DEVICE, name, seq_q=seq, params={"density": d}, **SHAPE) for d in (0.5, 0.25))
        assert _area(half) / _area(full) == pytest.approx(0.5, rel=1e-3)
        assert _compute_s(half) / _compute_s(full) == pytest.approx(0.5, abs=0.06)
        assert half.flops / full.flops == pytest.approx(0.5, rel=1e-3)
    # MoBA: the causal tiles, each kept with the density (the analysis's and the spatial mapper's semantics)
    moba = predict_variant(DEVICE, "moba", seq_q=16384, params={"density": 0.25}, **SHAPE)
    causal = predict_variant(DEVICE, "attention-1pass-causal", seq_q=16384, kernel="fa3", **SHAPE)
    case = make_case("moba", {"B": 1, "H": 32, "E": 128, "F": 128, "M": 16384})
    assert moba.flops == pytest.approx(causal.flops * 0.25, rel=1e-9)
    assert effective_points(case.cascade, case.sizes, case.density)["QK"] == pytest.approx(
        0.25 * 32 * 128 * 16384 * 16385 / 2)  # fmt: skip


def test_a_window_shorter_than_the_sequence_costs_less_than_causal_attention():
    causal = predict_variant(DEVICE, "attention-1pass-causal", seq_q=16384, **SHAPE)
    times = [predict_variant(DEVICE, "sliding-window", seq_q=16384, params={"window": w}, **SHAPE).time_s
             for w in (512, 2048, 8192)]  # fmt: skip
    assert times[0] < times[1] < times[2] < causal.time_s
    whole = predict_variant(DEVICE, "sliding-window", seq_q=4096, params={"window": 4096}, **SHAPE)
    same = predict_variant(DEVICE, "attention-1pass-causal", seq_q=4096, **SHAPE)
    assert _area(whole) == _area(same) and whole.time_s == pytest.approx(same.time_s, rel=0.01)
    sinks = predict_variant(DEVICE, "streaming-llm", seq_q=16384, **SHAPE)
    assert sinks.time_s < causal.time_s


def test_softmax_free_tiles_skip_the_max_and_rescale():
    def fma_per_pair(name):
        t = predict_variant(DEVICE, name, seq_q=4096, kernel="fa2", **SHAPE).tiles
        return t["tile_cycles"]["fma"] / (t["block_m"] * t["block_n"])

    dense = fma_per_pair("attention-1pass")
    assert fma_per_pair("sigmoid-attention") < dense
    assert fma_per_pair("softplus-attention") < dense


def test_linear_attention_is_memory_bound_at_small_head_dims_and_linear_in_length():
    a, b = (predict_variant(DEVICE, "linear-attention", batch=1, heads=32, head_dim=64, seq_q=s) for s in (8192, 65536))
    assert a.bound == b.bound == "memory"
    assert b.time_s / a.time_s == pytest.approx(8, rel=0.15)
    dense = predict_variant(DEVICE, "attention-1pass", batch=1, heads=32, head_dim=64, seq_q=65536)
    assert b.time_s < dense.time_s / 10


def test_gqa_reads_kv_once_per_kv_head_and_mla_tiles_carry_the_latent():
    mha = predict_variant(DEVICE, "attention-1pass", seq_q=8192, **SHAPE)
    gqa = predict_variant(DEVICE, "gqa", seq_q=8192, kv_heads=8, **SHAPE)
    assert gqa.hbm_bytes < mha.hbm_bytes and gqa.time_s == pytest.approx(mha.time_s, rel=0.02)
    mla = predict_variant(DEVICE, "mla", seq_q=8192, **SHAPE)  # latent 256 + RoPE 32 per key: wider tiles
    assert mla.tiles["smem_bytes"] > mha.tiles["smem_bytes"] or mla.tiles["block_n"] < mha.tiles["block_n"]


def test_duo_attention_heads_are_two_populations():
    duo = predict_variant(DEVICE, "duo-attention", seq_q=16384, **SHAPE)
    causal = predict_variant(DEVICE, "attention-1pass-causal", seq_q=16384, **SHAPE)
    assert "2 CTA population(s)" in duo.notes[0]
    assert 0.2 < duo.time_s / causal.time_s < 0.5  # a quarter of the heads causal, the rest a short window


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: predict_variant(DEVICE, "flash-sparse", seq_q=1024, **SHAPE), "registered cascades: attention-1pass"),
        (lambda: predict(DEVICE, "sdpa", variant="slidingwindow", seq_q=1024, **SHAPE), "sliding-window"),
        (lambda: predict_variant(DEVICE, "moba", seq_q=1024, params={"windw": 8}, **SHAPE),
         "unknown parameter 'windw'; it takes block"),
        (lambda: predict_variant(DEVICE, "moba", seq_q=1024, params={"density": 1.5}, **SHAPE),
         "density must be a fraction in (0, 1], got 1.5"),
        (lambda: predict_variant(DEVICE, "sliding-window", seq_q=1024, kv_heads=8, **SHAPE),
         "no K/V-head rank G, so kv_heads=8 cannot apply"),
        (lambda: predict(DEVICE, "sdpa", variant="moba", causal=True, seq_q=1024, **SHAPE), "drop causal"),
        (lambda: predict(DEVICE, "sdpa", window=512, seq_q=1024, kernel="fa3", **SHAPE), "needs causal=True"),
        (lambda: predict_variant(DEVICE, "moba", seq_q=1000, **SHAPE), "Bc dividing the key block 125"),
        (lambda: predict_variant(DEVICE, "attention-3pass", seq_q=1 << 20, **SHAPE), "dram_bytes"),
        (lambda: predict_variant(DEVICE, "gqa", seq_q=1024, kernel="unfused", **SHAPE), "runs kernel fa2 or fa3 or"),
        (lambda: predict_variant(DEVICE, "attention-3pass", seq_q=1024, kernel="fa3", **SHAPE),
         "a multi-pass cascade runs kernel unfused"),
        (lambda: predict_variant("cpu-ci", "gqa", seq_q=1024, **SHAPE), "needs a GPU"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_fault_and_the_valid_values(call, fragment):
    with pytest.raises(AttnscopeError) as info:
        call()
    assert fragment in str(info.value)
