"""Attention backward kernels (simulator/kernels/backward.py): structure, invariants, speed, CLI."""

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsum.errors import AttnscopeError, SpecError
from simulator.device import load_device
from simulator.gpu import predict
from simulator.kernels.backward import BWD_FLOP_RATIO, bwd_candidates
from simulator.kernels.machine import machine

GRID = [
    (device, kernel, d, causal)
    for device, kernels in (("a100-sxm", ("fa2", "unfused")), ("h100-sxm", ("fa2", "fa3", "unfused")))
    for kernel, d, causal in itertools.product(kernels, (64, 128, 256), (False, True))
]


def _sdpa(device, kernel, d, causal, seq, direction):
    # the FlashAttention papers' setup: batch x seq = 16K tokens, heads x head_dim = 2048
    return predict(device, "sdpa", batch=max(1, 16384 // seq), heads=2048 // d, seq_q=seq, head_dim=d,
                   causal=causal, kernel=kernel, direction=direction)  # fmt: skip


@pytest.mark.parametrize(("device", "kernel", "d", "causal"), GRID)
def test_fwd_bwd_on_the_acceptance_grid_is_fast_and_never_beats_the_roofline(device, kernel, d, causal):
    spec = load_device(device)
    for seq in (512, 16384):
        start = time.perf_counter()
        both = _sdpa(device, kernel, d, causal, seq, "fwd+bwd")
        assert time.perf_counter() - start < 2.0
        fwd, bwd = both.parts
        assert both.time_s == pytest.approx(fwd.time_s + bwd.time_s)
        assert bwd.flops == pytest.approx(BWD_FLOP_RATIO * fwd.flops, rel=1e-9)
        for p in (bwd, *bwd.parts):
            assert p.time_s >= p.roofline_s * (1 - 1e-12)
            assert p.tflops * 1e12 <= spec.tensor_peak_flops("bf16") * (1 + 1e-9)
        # docs/gpu.md, "Backward": what sets the ratio per kernel and length (the unfused causal forward pays its
        # mask add and softmax over every score; its backward has no mask kernel)
        low, high = (1.5, 4.5) if kernel in ("fa2", "fa3") else (1.1, 2.5)
        assert low < bwd.time_s / fwd.time_s < high


def test_fused_backward_recomputes_p_per_tile_and_keeps_its_traffic_linear():
    short = _sdpa("h100-sxm", "fa3", 128, False, 2048, "bwd")
    long = _sdpa("h100-sxm", "fa3", 128, False, 16384, "bwd")  # same tokens: 8x longer rows, 1/8 the batch
    names = [p.kernel for p in long.parts]
    assert names == ["fa3-bwd-preprocess", "fa3-bwd-main", "fa3-bwd-dq-convert"]
    main = long.parts[1]
    # one exp per (row, key) pair of every visited tile: P is recomputed from the saved row statistics
    assert main.exp_ops == main.tiles["query_tiles_visited"] * main.tiles["block_m"] * main.tiles["block_n"]
    assert long.hbm_bytes == pytest.approx(short.hbm_bytes, rel=0.01)  # no seq x seq matrix reaches DRAM
    unfused = _sdpa("h100-sxm", "unfused", 128, False, 16384, "bwd")
    assert unfused.hbm_bytes > 20 * long.hbm_bytes


def test_causal_backward_visits_the_lower_triangle():
    full = predict("a100-sxm", "sdpa", batch=1, heads=16, seq_q=8192, head_dim=128, kernel="fa2", direction="bwd")
    causal = predict("a100-sxm", "sdpa", batch=1, heads=16, seq_q=8192, head_dim=128, kernel="fa2", causal=True,
                     direction="bwd")  # fmt: skip
    f, c = full.parts[1].tiles, causal.parts[1].tiles
    blocks_q, blocks_k = 8192 // c["block_m"], 8192 // c["block_n"]
    assert f["query_tiles_visited"] == 16 * (8192 // f["block_m"]) * (8192 // f["block_n"])
    ratio = c["block_n"] // c["block_m"] or 1
    assert c["query_tiles_visited"] == pytest.approx(16 * blocks_q * (blocks_k + 1) / 2, rel=0.05 * ratio)
    assert 0.45 < causal.time_s / full.time_s < 0.65
    assert causal.flops == pytest.approx(full.flops / 2, rel=1e-3)


def test_grouped_kv_heads_sum_dk_dv_over_the_group():
    gqa = predict("h100-sxm", "sdpa", batch=1, heads=32, kv_heads=8, seq_q=4096, head_dim=128, kernel="fa3",
                  direction="bwd")  # fmt: skip
    assert gqa.parts[-1].kernel == "dkv-group-sum"
    unfused = predict("h100-sxm", "sdpa", batch=1, heads=32, kv_heads=8, seq_q=4096, head_dim=128,
                      kernel="unfused", direction="bwd")  # fmt: skip
    assert [p.kernel for p in unfused.parts][:2] == ["gemm:dV=P^T.dO", "gemm:dP=dO.V^T"]
    assert unfused.parts[-1].kernel == "dkv-group-sum"


def test_backward_tiles_fit_the_sm():
    for device, kernel in (("a100-sxm", "fa2"), ("h100-sxm", "fa2"), ("h100-sxm", "fa3")):
        m = machine(load_device(device), "bf16", legacy_mma=kernel == "fa2")
        for d in (64, 128, 256):
            tiles = bwd_candidates(m, kernel, d)
            assert tiles, (device, kernel, d)
            for t in tiles:
                assert t.smem_bytes <= m.spec.smem_bytes_per_sm and t.regs_per_thread <= 255


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"kernel": "decode", "seq_q": 1, "seq_kv": 4096}, "kernel decode has no backward pass"),
        ({"direction": "sideways"}, "unknown direction 'sideways'; allowed: fwd, bwd, fwd+bwd"),
        ({"variant": "gqa"}, "drop variant 'gqa'"),
        ({"kernel": "unfused", "seq_q": 65536, "batch": 16}, "(dram_bytes)"),
        ({"kernel": "fa3", "dtype": "fp8"}, "fa3 backward: dtype fp8 not supported"),
    ],
)
def test_backward_shapes_that_cannot_run_say_why(kwargs, fragment):
    base = {"batch": 1, "heads": 8, "seq_q": 1024, "head_dim": 128, "direction": "bwd"}
    dtype = kwargs.pop("dtype", "bf16")
    with pytest.raises(SpecError) as err:
        predict("h100-sxm", "sdpa", dtype=dtype, **(base | kwargs))
    assert fragment in str(err.value)


def test_cli_takes_the_direction(capsys):
    from attnscope.cli import main

    argv = ["predict", "--device", "a100-sxm", "--op", "sdpa", "--batch", "2", "--heads", "16", "--seq", "2K",
            "--head-dim", "128", "--causal", "--kernel", "fa2", "--direction", "fwd+bwd", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert '"kernel": "fa2+fa2-bwd"' in out and '"bwd":' in out
    assert main(["predict", "--device", "a100-sxm", "--op", "gemm", "--m", "8", "--n", "8", "--k", "8",
                 "--direction", "bwd"]) == 2  # fmt: skip
    assert "--direction does not apply to --op gemm" in capsys.readouterr().err


def test_roofline_train_phase_costs_every_kernel_forward_and_backward(tmp_path):
    from simulator.roofline import model_rows

    prefill = model_rows("llama3-8b", "prefill", 2048, 1, device="h100-sxm")
    train = model_rows("llama3-8b", "train", 2048, 1, device="h100-sxm")
    assert train.phase == "train" and [r.kernel for r in train.rows] == [r.kernel for r in prefill.rows]
    for fwd, both in zip(prefill.rows, train.rows, strict=True):
        ratio = {"qkv_proj": 3.0, "o_proj": 3.0, "gate_up_proj": 3.0, "down_proj": 3.0, "attention": 3.5}
        if fwd.kernel in ratio:  # two gradient GEMMs per GEMM; attention's backward is 2.5x its forward
            assert both.flops == pytest.approx(ratio[fwd.kernel] * fwd.flops, rel=1e-9), fwd.kernel
        assert both.predicted_s > 1.5 * fwd.predicted_s
    assert train.head.flops == pytest.approx(3 * 2048 * prefill.head.flops, rel=1e-9)  # every token's logits
    assert train.tokens_per_s < prefill.tokens_per_s / 2
    with pytest.raises(AttnscopeError, match="--phase train is modelled on a device"):
        model_rows("llama3-8b", "train", 2048, 1, arch="fusemax-cloud")


def test_a_sliding_window_backward_visits_only_the_band():
    shape = {"batch": 1, "heads": 16, "seq_q": 16384, "head_dim": 128, "kernel": "fa3", "causal": True}
    causal = predict("h100-sxm", "sdpa", direction="bwd", **shape)
    window = predict("h100-sxm", "sdpa", direction="bwd", window=1024, **shape)
    c, w = causal.parts[1].tiles, window.parts[1].tiles
    per_key_block = w["query_tiles_visited"] / (16 * 16384 / w["block_n"])
    assert per_key_block <= (1024 + w["block_n"]) / w["block_m"] + 1
    assert window.time_s < 0.25 * causal.time_s and c["query_tiles_visited"] > 6 * w["query_tiles_visited"]


@settings(max_examples=40, deadline=None)
@given(
    device=st.sampled_from(("h100-sxm", "a100-sxm", "h200", "l4", "orin-agx", "rtx4090")),
    kernel=st.sampled_from(("fa2", "fa3", "unfused", "math")),
    seq=st.sampled_from([64, 333, 1024, 4096]),
    extra_keys=st.sampled_from([0, 100, 2048]),
    head_dim=st.sampled_from([64, 128, 256]),
    heads=st.sampled_from([(8, 8), (32, 8), (16, 1)]),
    causal=st.booleans(),
)
def test_backward_never_beats_its_roofline_or_names_the_limit(device, kernel, seq, extra_keys, head_dim, heads, causal):
    spec = load_device(device)
    try:
        p = predict(device, "sdpa", batch=2, heads=heads[0], kv_heads=heads[1], seq_q=seq, seq_kv=seq + extra_keys,
                    head_dim=head_dim, causal=causal, kernel=kernel, direction="bwd")  # fmt: skip
    except SpecError as exc:  # fa3 off Hopper, a tile that does not fit: named, never a crash
        assert any(w in str(exc) for w in ("wgmma", "smem_bytes_per_sm", "dram_bytes")), str(exc)
        return
    for part in (p, *p.parts):
        assert part.time_s >= part.roofline_s * (1 - 1e-12) and part.time_s > 0
        assert part.tflops * 1e12 <= spec.tensor_peak_flops("bf16") * (1 + 1e-9)
