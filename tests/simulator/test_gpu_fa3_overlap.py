"""FlashAttention-3's forward overlap (simulator/kernels/attention.py): ping-pong of consumer warpgroups, the
2-stage GEMM-softmax pipeline inside one warpgroup, and the wgmma latency exposed at each wait."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.device import load_device
from simulator.gpu import predict
from simulator.kernels.attention import (
    WGMMA_LATENCY_CYCLES,
    FlashTile,
    tile_cycles,
    tile_ops,
    wgmma_wait_cycles,
)
from simulator.kernels.machine import machine


def _tile(m, br, bc, d):
    """Cycles and parts of one fa3 key tile of br query rows (br / 64 consumer warpgroups)."""
    ops, _ = tile_ops(br, bc, d)
    t = FlashTile(br, bc, 4 * (br // 64 + 1), 2, 1, 0, 0)
    e = m.elem_bytes
    return tile_cycles(m, "fa3", t, ops, kv_tile_bytes=2 * bc * d * e, q_tile_bytes=br * d * e)


def test_the_exposed_wait_is_the_cited_latency_less_the_last_wgmmas_own_tensor_time():
    m = machine(load_device("h100-sxm"), "bf16")
    # m64n256k16 occupies the tensor cores for 2*64*256*16 FLOP / rate > 128 cycles: nothing left to expose
    assert 2 * 64 * 256 * 16 / m.tensor_rate > WGMMA_LATENCY_CYCLES
    assert wgmma_wait_cycles(m, 256) == 0.0
    # m64n128k16: half the occupancy, the rest of the 128 cycles is exposed
    assert wgmma_wait_cycles(m, 128) == pytest.approx(WGMMA_LATENCY_CYCLES - 2 * 64 * 128 * 16 / m.tensor_rate)
    assert 0 < wgmma_wait_cycles(m, 128) < wgmma_wait_cycles(m, 64) < WGMMA_LATENCY_CYCLES
    # fp8 wgmma steps K by 32: the same occupancy in cycles at its own (doubled) rate
    m8 = machine(load_device("h100-sxm"), "fp8")
    assert wgmma_wait_cycles(m8, 128) == pytest.approx(WGMMA_LATENCY_CYCLES - 2 * 64 * 128 * 32 / m8.tensor_rate)


def test_two_warpgroups_hide_the_softmax_one_does_not():
    m = machine(load_device("h100-sxm"), "bf16")
    d, bc = 128, 128
    two, p2 = _tile(m, 128, bc, d)
    one, p1 = _tile(m, 64, bc, d)
    # two warpgroups: the tile takes the GEMM time; the exp is not added to it (the old T + S form)
    assert two == pytest.approx(p2["tensor"]) and two < p2["tensor"] + p2["sfu"]
    assert p2["chain"] < p2["tensor"]
    # one warpgroup: its own PV GEMM covers only part of its softmax; the chain (S GEMM, exposed wait,
    # exp and FP32 work) sets the tile
    g = p1["tensor"] / 2
    assert one == pytest.approx(p1["chain"])
    assert one == pytest.approx(g + wgmma_wait_cycles(m, bc) + p1["sfu"] + p1["fma"])
    assert one > p1["tensor"]
    # per query row, two warpgroups are faster than one
    assert two / 128 < one / 64


def test_fp8_doubles_the_gemm_rate_and_at_head_dim_64_the_exp_binds():
    # Shah et al. section 3.1: with FP8 the matmul throughput doubles but the exponential's stays the same;
    # at head dim 64 the tile's exps take longer than its GEMMs, so no overlap can hide them
    m = machine(load_device("h100-sxm"), "fp8")
    cycles, parts = _tile(m, 128, 128, 64)
    assert parts["sfu"] > parts["tensor"] and cycles == pytest.approx(parts["sfu"])
    bf16, _ = _tile(machine(load_device("h100-sxm"), "bf16"), 128, 128, 64)
    assert cycles > bf16 / 2  # half the GEMM time, but not half the tile


def test_long_sequence_d128_forward_is_tensor_bound_at_the_gemm_rate():
    spec = load_device("h100-sxm")
    p = predict(spec, "sdpa", batch=2, heads=16, seq_q=8192, head_dim=128, kernel="fa3")
    parts = p.tiles["tile_cycles"]
    assert p.bound == "tensor" and p.tiles["block_m"] >= 128
    assert max(parts.values()) == parts["tensor"] > parts["chain"]
    # the serialized form max(T + S, F, M) would cap it at T / (T + S) of the GEMM-calibrated rate
    gemm_tflops = spec.tensor_tflops["bf16"] * spec.efficiency.gemm
    assert p.tflops > gemm_tflops * parts["tensor"] / (parts["tensor"] + parts["sfu"])
    assert p.tflops < gemm_tflops


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(("bf16", "fp8")),
    groups=st.integers(1, 3),
    bc=st.sampled_from((64, 80, 128, 176)),
    d=st.sampled_from((64, 128, 256)),
)
def test_fa3_tile_lies_between_its_busiest_unit_and_full_serialization(dtype, groups, bc, d):
    m = machine(load_device("h100-sxm"), dtype)
    cycles, p = _tile(m, 64 * groups, bc, d)
    busiest = max(p["tensor"], p["sfu"], p["fma"], p["smem"], p["l2"])
    serial = p["tensor"] + p["sfu"] + p["fma"] + wgmma_wait_cycles(m, bc) + wgmma_wait_cycles(m, d)
    assert busiest <= cycles <= max(serial, busiest) + 1e-9
