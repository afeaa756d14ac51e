"""Kernel models: roofline invariants, GEMM against microbenchmarks, attention against held-out published data."""

import csv
import doctest
import itertools
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simulator.gpu
from einsum.errors import RegistryError, SpecError
from simulator.device import device_from_dict, load_device
from simulator.gpu import calibrate_gemm, predict

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "validate" / "data" / "published-attention-h100.csv"
MAMF = {"h100-sxm": ((2048, 2048, 13312), 794.5), "a100-sxm": ((1024, 10240, 5120), 271.2)}


def test_module_doctests():
    assert doctest.testmod(simulator.gpu).failed == 0


# ------------------------------------------------------------------------------------------- invariants

DEVICES = ("a100-sxm", "h100-sxm", "h200", "l4", "rtx4090", "orin-agx", "orin-nano", "m2")
dims = st.sampled_from([1, 7, 16, 64, 100, 128, 512, 1000, 2048, 4096, 16384])


def _check_invariants(p, device, dtype="bf16"):
    spec = load_device(device)
    assert p.time_s >= p.roofline_s * (1 - 1e-12)
    assert p.tflops * 1e12 <= spec.tensor_peak_flops(dtype) * (1 + 1e-9)
    for part in p.parts:
        _check_invariants(part, device, dtype)


@settings(max_examples=60, deadline=None)
@given(device=st.sampled_from(DEVICES), m=dims, n=dims, k=dims, batch=st.sampled_from([1, 3, 32]))
def test_gemm_never_beats_its_roofline_or_the_dense_peak(device, m, n, k, batch):
    _check_invariants(predict(device, "gemm", m=m, n=n, k=k, batch=batch), device)


@settings(max_examples=40, deadline=None)
@given(
    device=st.sampled_from(("h100-sxm", "a100-sxm", "l4", "orin-agx")),
    kernel=st.sampled_from(("fa2", "fa3", "unfused", "decode")),
    seq=st.sampled_from([1, 64, 333, 1024, 4096]),
    ctx=st.sampled_from([1, 512, 3000, 8192]),
    head_dim=st.sampled_from([64, 128, 256]),
    heads=st.sampled_from([(8, 8), (32, 8), (16, 1)]),
    causal=st.booleans(),
)
def test_attention_never_beats_its_roofline_or_the_dense_peak(device, kernel, seq, ctx, head_dim, heads, causal):
    if kernel == "fa3" and load_device(device).tensor_instruction != "wgmma":
        kernel = "fa2"
    seq_kv = max(seq, ctx)
    p = predict(device, "sdpa", batch=2, heads=heads[0], kv_heads=heads[1], seq_q=seq, seq_kv=seq_kv,
                head_dim=head_dim, causal=causal, kernel=kernel)  # fmt: skip
    _check_invariants(p, device)
    assert p.bound in ("tensor", "sfu", "fma", "smem", "l2", "memory", "latency", "launch")


@pytest.mark.parametrize("op", [("copy", {"nbytes": 2**30}), ("exp", {"elements": 2**28}),
                                ("softmax", {"rows": 65536, "cols": 4096})])  # fmt: skip
def test_memory_bound_kernels_follow_the_calibrated_bandwidth(op):
    name, shape = op
    p = predict("h100-sxm", name, **shape)
    assert p.bound == "memory" and p.time_s >= p.roofline_s
    if name == "copy":  # the calibration anchor: ~3.0 TB/s read + write
        assert p.hbm_bytes / p.time_s == pytest.approx(3.0e12, rel=0.02)
    if name == "softmax":  # the QuACK anchor: ~2.0 TB/s for a library softmax
        assert p.hbm_bytes / p.time_s == pytest.approx(2.0e12, rel=0.03)


# ------------------------------------------------------------------------------------------- GEMM


@pytest.mark.parametrize("device", sorted(MAMF))
def test_gemm_calibration_reproduces_the_microbenchmark_it_came_from(device):
    (m, n, k), tflops = MAMF[device]
    assert predict(device, "gemm", m=m, n=n, k=k).tflops == pytest.approx(tflops, rel=0.01)
    assert calibrate_gemm(device, m=m, n=n, k=k, tflops=tflops) == pytest.approx(
        load_device(device).efficiency.gemm, abs=0.002
    )


@pytest.mark.parametrize("device", sorted(MAMF))
def test_large_gemms_within_15_percent_of_best_achievable(device):
    best = MAMF[device][1]
    for m in (4096, 8192, 16384):
        for n in (4096, 8192, 16384):
            for k in (4096, 8192, 16384):
                tflops = predict(device, "gemm", m=m, n=n, k=k).tflops
                assert abs(tflops / best - 1) <= 0.15, (device, m, n, k, tflops)


@pytest.mark.parametrize("device", sorted(MAMF))
def test_small_gemms_show_launch_and_wave_quantization(device):
    tiny = predict(device, "gemm", m=64, n=64, k=64)
    assert tiny.bound == "launch" and tiny.tflops < 1
    sizes = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    rates = [predict(device, "gemm", m=s, n=s, k=s).tflops for s in sizes]
    assert rates[0] < rates[3] < rates[5] < rates[-1]
    assert rates[4] < 0.75 * MAMF[device][1]  # 1024^3 is far from the best
    # wave quantization: growing M by one tile row past a full wave costs a partial extra wave (a sawtooth)
    rates = [(m, predict(device, "gemm", m=m, n=4096, k=8192)) for m in range(1024, 128 * 40 + 1, 128)]
    if load_device(device).tensor_instruction == "wgmma":
        # Hopper's persistent stream-K scheduler spreads the K steps of a partial last wave over every SM instead
        stream_k = [p for _, p in rates if p.tiles["stream_k"]]
        assert stream_k and all(p.tiles["waves"] % 1 > 0 for p in stream_k)
        assert min(p.tflops for _, p in rates[4:]) > 0.85 * max(p.tflops for _, p in rates)
        return
    # (the mapper re-tiles to soften it, as cuBLAS heuristics do)
    drops = [(a, b) for a, b in itertools.pairwise(rates) if b[1].tflops < 0.95 * a[1].tflops]
    assert drops, "no wave-quantization drop"
    for (_, _before), (_, after) in drops:
        assert after.tiles["waves"] % 1 > 0  # a partial last wave


def test_skinny_decode_gemms_match_the_published_h100_sweep():
    # vllm-project/vllm#49363: H100 torch bf16, N=12288, K=5376 (shared/reference/gpu/gemm-published.csv)
    for m, measured in ((1, 2.87), (16, 46.5), (64, 182.6), (128, 352.6)):
        assert predict("h100-sxm", "gemm", m=m, n=12288, k=5376).tflops == pytest.approx(measured, rel=0.15)
    assert predict("h100-sxm", "gemm", m=1, n=12288, k=5376).bound == "memory"


# ------------------------------------------------------------------------------------------- attention


def _published():
    with PUBLISHED.open() as f:
        return list(csv.DictReader(f))


def _error(row):
    p = predict("h100-sxm", "sdpa", batch=int(row["batch"]), heads=int(row["heads"]), kv_heads=int(row["kv_heads"]),
                seq_q=int(row["seq_len"]), head_dim=int(row["head_dim"]), causal=row["causal"] == "true",
                kernel=row["kernel"])  # fmt: skip
    return p.time_s / (float(row["time_ms"]) / 1e3) - 1


def test_published_attention_data_is_complete_and_held_out():
    rows = _published()
    assert len(rows) >= 90
    assert {r["kernel"] for r in rows} == {"fa2", "fa3", "unfused"}
    assert {int(r["head_dim"]) for r in rows} == {64, 128, 256}
    assert {r["causal"] for r in rows} == {"true", "false"}
    assert {int(r["seq_len"]) for r in rows} == {512, 1024, 2048, 4096, 8192, 16384}
    assert all(r["source"] for r in rows)
    # the calibration inputs are microbenchmarks only: no preset names an attention source
    for name in ("h100-sxm", "h200", "a100-sxm"):
        cal = load_device(name).efficiency.calibration
        assert "attention" not in (cal.data_file + cal.method).lower().replace("no attention timing", "")


def test_h100_attention_within_25_percent_of_published_on_average():
    rows = _published()
    errors = [abs(_error(r)) for r in rows]
    assert statistics.mean(errors) <= 0.25
    for kernel in ("fa2", "fa3", "unfused"):
        mine = [abs(_error(r)) for r in rows if r["kernel"] == kernel]
        assert statistics.mean(mine) <= 0.30, kernel


def test_attention_mapping_respects_the_mechanisms():
    def run(**kw):
        base = dict(batch=4, heads=32, kv_heads=32, seq_q=4096, head_dim=128)
        return predict("h100-sxm", "sdpa", **(base | kw))

    fa2, fa3, unfused = run(kernel="fa2"), run(kernel="fa3"), run(kernel="unfused")
    assert fa3.time_s < fa2.time_s < unfused.time_s
    assert unfused.hbm_bytes > 20 * fa3.hbm_bytes and len(unfused.parts) == 3
    causal = run(kernel="fa3", causal=True)
    assert causal.flops == pytest.approx(fa3.flops / 2, rel=0.01) and causal.time_s < 0.65 * fa3.time_s
    assert run(kernel="fa3", kv_heads=8).hbm_bytes < fa3.hbm_bytes  # GQA: K/V read once per group
    assert run(kernel="unfused", kv_heads=8).parts[0].kernel == "expand_kv"
    assert run(kernel="fa3", causal=True, window=1024).time_s < 0.6 * causal.time_s
    for p in (fa2, fa3):
        tile = p.tiles
        assert tile["smem_bytes"] <= load_device("h100-sxm").smem_bytes_per_sm and tile["regs_per_thread"] <= 255


def test_decode_splits_the_kv_cache_to_fill_the_sms():
    p = predict("h100-sxm", "sdpa", batch=1, heads=32, kv_heads=8, seq_q=1, seq_kv=32768, head_dim=128)
    assert p.kernel == "decode" and p.tiles["splits"] > 1 and p.bound in ("memory", "l2")
    kv_bytes = 2 * 8 * 32768 * 128 * 2
    assert kv_bytes / load_device("h100-sxm").dram_bytes_per_s < p.time_s < 6 * kv_bytes / 3.0e12
    one_split = predict("h100-sxm", "sdpa", batch=1, heads=32, kv_heads=8, seq_q=1, seq_kv=32768, head_dim=128,
                        kernel="fa3")  # fmt: skip
    assert one_split.time_s > 2 * p.time_s


@pytest.mark.parametrize(
    ("device", "kwargs", "fragment"),
    [
        (
            "a100-sxm",
            {"kernel": "fa3"},
            "fa3: needs warpgroup MMA (tensor_instruction wgmma, Hopper); a100-sxm has mma",
        ),
        ("a100-sxm", {"kernel": "fa2", "head_dim": 1024}, "smem_bytes_per_sm"),
        ("h100-sxm", {"kernel": "unfused", "seq_q": 131072, "batch": 8}, "(dram_bytes)"),
        ("h100-sxm", {"kernel": "flash"}, "unknown kernel 'flash'; allowed: fa2, fa3, unfused, decode, math"),
        ("h100-sxm", {"kv_heads": 5}, "must be a multiple of kv_heads"),
        ("h100-sxm", {"kernel": "fa2", "dtype": "fp32"}, "fa2: dtype fp32 not supported; it runs fp16, bf16"),
    ],
)
def test_shapes_that_cannot_run_name_the_limit(device, kwargs, fragment):
    base = dict(batch=1, heads=8, seq_q=1024, head_dim=128)
    dtype = kwargs.pop("dtype", "bf16")
    with pytest.raises(SpecError) as err:
        predict(device, "sdpa", dtype=dtype, **(base | kwargs))
    assert fragment in str(err.value)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(RegistryError) as err:
        predict("b300", "gemm", m=1, n=1, k=1)
    assert all(name in str(err.value) for name in ("a100-sxm", "h100-pcie", "h100-sxm", "h200", "m2-max"))
    with pytest.raises(SpecError, match="unknown op 'conv'; allowed: gemm, copy, exp, softmax, broadcast_add, sdpa"):
        predict("h100-sxm", "conv")
    with pytest.raises(SpecError, match="gemm: unknown shape keyword"):
        predict("h100-sxm", "gemm", m=1, n=1, k=1, heads=2)
    with pytest.raises(SpecError, match="unknown dtype 'int4'"):
        predict("h100-sxm", "gemm", dtype="int4", m=1, n=1, k=1)


def test_cpu_devices_run_torch_cpu_kernels():
    data = load_device("h100-sxm").to_dict()
    data.update(id="cpu-test", name="test CPU", kind="cpu", sm_count=16, clock_hz=3.0e9, tensor_instruction="none",
                tensor_tflops={"fp32": 1.5, "bf16": 3.0}, fp32_tflops=1.5, dram_bytes_per_s=1.0e11,
                smem_bytes_per_sm=2 * 2**20, launch_overhead_s=5e-6)  # fmt: skip
    cpu = device_from_dict(data)
    shape = {"batch": 1, "heads": 4, "seq_q": 512, "head_dim": 64}
    flash = predict(cpu, "sdpa", dtype="fp32", **shape)
    assert flash.kernel == "cpu-flash" and flash.tiles["block_m"] == 64 and flash.tiles["block_n"] == 512
    math_ = predict(cpu, "sdpa", dtype="fp32", kernel="math", **shape)
    kernels = [q.kernel for q in math_.parts]
    assert kernels[:2] == ["scale_q", "scale_k"] and kernels[-4:] == ["isneginf", "all_rows", "where_rows", "gemm"]
    unfused = predict(cpu, "sdpa", dtype="fp32", kernel="unfused", **shape)
    assert [q.kernel for q in unfused.parts] == ["gemm", "softmax", "gemm"]
    assert flash.time_s < unfused.time_s < math_.time_s  # fused < three kernels < torch's math chain
    with pytest.raises(SpecError, match="needs a GPU; cpu-test is a cpu device, which runs cpu-flash, math or unfused"):
        predict(cpu, "sdpa", batch=1, heads=4, seq_q=512, head_dim=64, kernel="fa2")


def test_cpu_flash_skips_the_key_blocks_above_the_diagonal_and_streams_warm_caches():
    cpu = load_device("cpu-ci")
    shape = {"batch": 1, "heads": 8, "seq_q": 2048, "head_dim": 64}
    full, causal = (predict(cpu, "sdpa", dtype="fp32", causal=c, **shape) for c in (False, True))
    # 256-row query blocks against 512-key blocks: 1+1+2+2+3+3+4+4 = 20 of 32 blocks per head
    assert (full.tiles["key_blocks_visited"], causal.tiles["key_blocks_visited"]) == (8 * 32, 8 * 20)
    assert causal.time_s / full.time_s == pytest.approx(20 / 32, rel=0.05)
    small = 8 * 2**20  # a copy whose 16 MiB working set stays in the last-level cache between calls
    assert small * 2 <= cpu.warm_cache_bytes
    cached = predict(cpu, "copy", dtype="fp32", nbytes=small)
    streamed = predict(cpu, "copy", dtype="fp32", nbytes=16 * small)
    assert cached.time_s < streamed.time_s / 16 and cached.time_s >= cached.roofline_s
