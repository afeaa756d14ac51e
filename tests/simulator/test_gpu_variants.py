"""Every registered attention variant on a GPU: physical invariants, masks as skipped tiles, and the mask
semantics checked against the cascades' own analysis."""

import doctest

import pytest

import simulator.kernels.variants as variants_module
from einsum.analysis import effective_points, tensor_sizes
from einsum.errors import SpecError
from simulator.device import load_device
from simulator.gpu import predict
from simulator.kernels.variants import MASKS, mask_tiles, predict_variant, variant_case, variant_names

DEVICE = "h100-sxm"
SHAPE = {"batch": 1, "heads": 32, "head_dim": 128}


def _shape(name: str, seq: int) -> dict:
    if name.startswith("decode"):
        return {**SHAPE, "seq_q": 1, "seq_kv": seq, "kv_heads": 8}
    return {**SHAPE, "seq_q": seq}


def test_module_doctests():
    assert doctest.testmod(variants_module).failed == 0


def test_every_registered_attention_cascade_has_a_gpu_model():
    import workloads

    attention = {n for n, e in workloads.CASCADES.items() if "attention" in e.tags}
    assert attention == set(variant_names())


@pytest.mark.parametrize("seq", [2048, 16384])
@pytest.mark.parametrize("name", variant_names())
def test_every_variant_respects_the_roofline_and_the_peak(name, seq):
    spec = load_device(DEVICE)
    p = predict_variant(DEVICE, name, **_shape(name, seq))
    case = variant_case(name, **_shape(name, seq))
    words = tensor_sizes(case.cascade, case.sizes)
    compulsory = sum(words[t] for t in (*case.cascade.inputs, *case.cascade.outputs)) * 2  # bf16
    bound = max(p.flops / spec.tensor_peak_flops("bf16"), compulsory / spec.dram_bytes_per_s)
    assert p.time_s >= bound * (1 - 1e-12)
    assert p.time_s >= p.roofline_s * (1 - 1e-12)
    assert 0 < p.tflops * 1e12 <= spec.tensor_peak_flops("bf16") * (1 + 1e-9)
    assert p.hbm_bytes >= compulsory * (1 - 1e-12)
    assert p.bound in ("tensor", "sfu", "fma", "smem", "l2", "memory", "launch")
    assert p.kernel.endswith(f":{name}")


def test_the_dense_cascade_as_a_variant_reproduces_the_flash_model():
    for causal, name in ((False, "attention-1pass"), (True, "attention-1pass-causal")):
        for kernel in ("fa3", "fa2"):
            dense = predict(DEVICE, "sdpa", seq_q=8192, causal=causal, kernel=kernel, **SHAPE)
            lowered = predict_variant(DEVICE, name, seq_q=8192, kernel=kernel, **SHAPE)
            assert lowered.tiles["key_tiles_visited"] == dense.tiles["key_tiles_visited"]
            assert lowered.time_s == pytest.approx(dense.time_s, rel=0.01)
            assert lowered.flops == pytest.approx(dense.flops, rel=1e-9)


def _compute_s(p) -> float:
    return max(v for k, v in p.times_s.items() if k not in ("memory", "launch"))


def _area(p) -> float:
    """Query-key pairs the visited tiles cover (the mapper may pick another tile at another density)."""
    return p.tiles["key_tiles_visited"] * p.tiles["block_m"] * p.tiles["block_n"]


def test_halving_block_density_halves_the_tiles_and_the_tensor_time():
    for name, seq in (("block-sparse", 16384), ("moba", 65536)):
        full, half = (predict_variant(DEVICE, name, seq_q=seq, params={"density": d}, **SHAPE) for d in (0.5, 0.25))
        assert _area(half) / _area(full) == pytest.approx(0.5, abs=0.05)  # moba always keeps the diagonal blocks
        assert _compute_s(half) / _compute_s(full) == pytest.approx(0.5, abs=0.06)
        assert half.flops / full.flops == pytest.approx(0.5, abs=0.05)


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


def test_gqa_reads_kv_once_per_kv_head_and_decode_split_k_helps_long_caches():
    mha = predict_variant(DEVICE, "attention-1pass", seq_q=8192, **SHAPE)
    gqa = predict_variant(DEVICE, "gqa", seq_q=8192, kv_heads=8, **SHAPE)
    assert gqa.hbm_bytes < mha.hbm_bytes and gqa.time_s == pytest.approx(mha.time_s, rel=0.02)
    one = predict_variant(DEVICE, "decode", **_shape("decode", 65536))
    split = predict_variant(DEVICE, "decode-splitk", **_shape("decode-splitk", 65536))
    assert split.time_s < one.time_s and split.tiles["splits"] > 1 == one.tiles["splits"]


@pytest.mark.parametrize(
    ("name", "params", "density"),
    [
        ("attention-1pass-causal", {}, None),
        ("sliding-window", {"window": 24}, None),
        ("streaming-llm", {"sinks": 3, "window": 20}, None),
        ("duo-attention", {"sinks": 3, "window": 20}, None),
        ("s2-attention", {"local_blocks": 2, "shards": 4, "block": 8}, None),
        ("block-sparse", {"block": 16, "density": 0.5}, 0.5),
        ("linear-attention-causal", {}, None),
    ],
)
def test_mask_tiles_count_the_pairs_the_cascade_leaves_and_cover_them(name, params, density):
    seq = 256
    case = variant_case(name, batch=1, heads=8, seq_q=seq, head_dim=4, params=params)
    analysed = effective_points(case.cascade, case.sizes, {"BM": density} if density else None)
    scores = {"linear-attention-causal": ("A",), "duo-attention": ("MQK", "MQKS")}.get(name, ("MQK",))
    heads = {"main": case.sizes.get("H"), "hs": case.sizes.get("HS")}
    bc = case.sizes["M0"] if name == "linear-attention-causal" else 8  # causal linear: the chunk is the tile
    for kind, pop, tensor in zip(MASKS[name], heads, scores, strict=False):
        counts = mask_tiles(kind, case.params, seq_q=seq, seq_kv=seq, br=16, bc=bc, heads=heads[pop],
                            head_shards=case.sizes.get("HN", 1))  # fmt: skip
        assert sum(c.pairs * c.heads for c in counts) == pytest.approx(analysed[tensor])
        for c in counts:
            assert (c.boundary <= c.visited).all()
            assert c.visited.sum() * 16 * bc >= c.pairs


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: predict_variant(DEVICE, "flash-sparse", seq_q=1024, **SHAPE),
         "variants with a GPU model: attention-3pass"),
        (lambda: predict(DEVICE, "sdpa", variant="slidingwindow", seq_q=1024, **SHAPE), "sliding-window"),
        (lambda: predict_variant(DEVICE, "moba", seq_q=1024, params={"windw": 8}, **SHAPE),
         "unknown parameter(s) windw; it takes density, block"),
        (lambda: predict_variant(DEVICE, "moba", seq_q=1024, params={"density": 1.5}, **SHAPE),
         "density must be a number in (0, 1], got 1.5"),
        (lambda: predict_variant(DEVICE, "sliding-window", seq_q=1024, kv_heads=8, **SHAPE),
         "kv_heads applies to gqa, decode, decode-splitk"),
        (lambda: predict(DEVICE, "sdpa", variant="moba", causal=True, seq_q=1024, **SHAPE), "drop causal"),
        (lambda: predict_variant(DEVICE, "moba", seq_q=1000, **SHAPE), "key block"),
        (lambda: predict_variant(DEVICE, "attention-3pass", seq_q=1 << 20, **SHAPE), "dram_bytes"),
        (lambda: predict_variant(DEVICE, "gqa", seq_q=1024, kernel="unfused", **SHAPE), "fa2 or fa3"),
        (lambda: predict_variant("cpu-ci", "gqa", seq_q=1024, **SHAPE), "needs a GPU"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_fault_and_the_valid_values(call, fragment):
    with pytest.raises(SpecError) as info:
        call()
    assert fragment in str(info.value)
