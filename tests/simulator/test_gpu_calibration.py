"""Issue 15's model defects, each with the behaviour that fixes it: short kernels pay their fixed costs, decode
reaches the copy-calibrated bandwidth (and pays its split-K combine), and every calibrated device and dtype has
its own cited efficiencies (FP8 GEMMs apart from bf16)."""

import re

import pytest

from simulator.device import DEVICES, EFFICIENCY_KEYS, load_device
from simulator.gpu import calibrate_gemm, predict

# the GEMM microbenchmarks the presets are calibrated from (validate/data/published-gemm.csv, role calibration)
MAMF = {
    ("h100-sxm", "bf16"): ((2048, 2048, 13312), 794.5),
    ("h100-sxm", "fp8"): ((1024, 9216, 14336), 1402.6),
    ("h200", "bf16"): ((2048, 2048, 13312), 794.5),
    ("h200", "fp8"): ((1280, 4096, 12032), 1453.4),
    ("a100-sxm", "bf16"): ((1024, 10240, 5120), 271.2),
}


# -- fixed costs of short kernels --------------------------------------------------------------------------------


def test_a_512_token_fp8_kernel_pays_its_fill_and_drain():
    shape = {"batch": 32, "heads": 16, "head_dim": 128, "kernel": "fa3"}
    short = predict("h100-sxm", "sdpa", dtype="fp8", seq_q=512, **shape)
    long = predict("h100-sxm", "sdpa", dtype="fp8", seq_q=16384, **(shape | {"batch": 1}))
    for p in (short, long):
        assert p.tiles["fill_drain_s"] > 0
        assert p.time_s >= p.times_s["launch"] + p.tiles["fill_drain_s"]
    # the same tokens: the fixed costs weigh more on the short rows
    assert short.tiles["fill_drain_s"] / short.time_s > 2 * long.tiles["fill_drain_s"] / long.time_s
    # the first wave's Q tiles and first K/V tiles, the last wave's O tiles, at the calibrated bandwidth
    spec = load_device("h100-sxm")
    first = min(short.tiles["ctas"], spec.sm_count * short.tiles["ctas_per_sm"])
    bm, bn = short.tiles["block_m"], short.tiles["block_n"]
    heads = -(-first // (512 // bm))
    moved = first * bm * 128 + heads * 2 * bn * 128 + first * bm * 128
    expected = moved / (spec.dram_bytes_per_s * spec.efficiency.copy)
    assert short.tiles["fill_drain_s"] == pytest.approx(expected, rel=1e-6)


def test_gemm_fill_drain_and_stream_k_tails():
    small = predict("h100-sxm", "gemm", m=2048, n=512, k=512)
    assert small.tiles["fill_drain_s"] > 0.05 * small.time_s  # one wave: nothing hides the C tiles going out
    # a partial last wave on Hopper: the persistent stream-K schedule splits the K steps evenly over the SMs
    fp8 = predict("h100-sxm", "gemm", dtype="fp8", m=1024, n=9216, k=14336)
    assert fp8.tiles["stream_k"] and fp8.tiles["waves"] % 1 > 0
    # Ampere keeps data-parallel tiles: the partial wave costs a whole one
    a100 = predict("a100-sxm", "gemm", m=1024 + 128, n=4096, k=8192)
    assert not a100.tiles["stream_k"]


# -- decode: achievable bandwidth and the split-K combine --------------------------------------------------------


@pytest.mark.parametrize("device", ["a100-sxm", "h100-sxm", "h200"])
def test_decode_at_1m_context_reaches_the_copy_calibrated_bandwidth_fraction(device):
    spec = load_device(device)
    assert spec.efficiency.copy < 1.0
    p = predict(device, "sdpa", batch=1, heads=32, kv_heads=8, seq_q=1, seq_kv=2**20, head_dim=128, kernel="decode")
    kv_bytes = 2 * 8 * 2**20 * 128 * 2
    fraction = kv_bytes / p.time_s / spec.dram_bytes_per_s
    assert fraction == pytest.approx(spec.efficiency.copy, rel=0.02)
    assert fraction < spec.efficiency.copy


def test_short_context_decode_pays_launches_combine_and_fill():
    p = predict("h100-sxm", "sdpa", batch=1, heads=32, kv_heads=8, seq_q=1, seq_kv=1024, head_dim=128,
                kernel="decode")  # fmt: skip
    spec = load_device("h100-sxm")
    kv_bytes = 2 * 8 * 1024 * 128 * 2
    assert p.tiles["splits"] > 1 and p.tiles["combine_s"] > spec.launch_overhead_s
    assert p.times_s["launch"] == pytest.approx(2 * spec.launch_overhead_s)
    assert kv_bytes / p.time_s < 0.25 * spec.dram_bytes_per_s  # fixed costs, not bandwidth, set a 1K-token step


# -- per-device and per-dtype calibration ------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "measured"), sorted(MAMF.items()))
def test_each_device_and_dtype_reproduces_its_own_gemm_microbenchmark(key, measured):
    (device, dtype), ((m, n, k), tflops) = key, measured
    assert predict(device, "gemm", dtype=dtype, m=m, n=n, k=k).tflops == pytest.approx(tflops, rel=0.01)
    eff = load_device(device).efficiency
    assert calibrate_gemm(device, m=m, n=n, k=k, tflops=tflops, dtype=dtype) == pytest.approx(
        eff.gemm_fp8 if dtype == "fp8" else eff.gemm, abs=0.002
    )


def test_fp8_gemm_efficiency_is_its_own_and_leaves_bf16_alone():
    h100, h200 = load_device("h100-sxm").efficiency, load_device("h200").efficiency
    assert h100.gemm_fp8 != h100.gemm and h200.gemm_fp8 != h100.gemm_fp8  # H200 is not H100 with more bandwidth
    assert load_device("l4").efficiency.gemm_fp8 == load_device("l4").efficiency.gemm  # absent: follows gemm


def test_every_gpu_efficiency_line_cites_its_source():
    for name in DEVICES:
        spec = load_device(name)
        if spec.kind == "cpu":
            continue
        text = spec.origin and DEVICES[name].read_text()
        block = text[text.index("\nefficiency:") :]
        for key in EFFICIENCY_KEYS:
            line = re.search(rf"\n  {key}: [^\n]*", block)
            if line is None:  # absent: FP8 GEMMs follow gemm; broadcast defaults to the copy's rate (uncalibrated)
                assert key in ("gemm_fp8", "broadcast"), (name, key)
                continue
            comment = line.group(0).partition("#")[2]
            assert re.search(r"\[[A-Z]+\d*\]|uncalibrated|no calibration", comment), (name, key, comment)
            for tag in re.findall(r"\[([A-Z]+\d*)\]", comment):
                assert tag in spec.references, (name, tag)
        assert "attention" not in spec.efficiency.calibration.data_file.lower()
