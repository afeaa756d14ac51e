"""mappers/direction.py: a case costed forward, backward or both, on devices (the GPU backward kernels) and on
spatial arrays (the derived backward cascade through the pipeline). Expected figures come from the models."""

import json

import pytest

from attnscope.cli import main
from einsum.backward import derive
from einsum.errors import AttnscopeError, SpecError
from mappers.catalog import map_case
from mappers.direction import backward_case, combine_designs, map_direction
from simulator.gpu import predict, sdpa_case, sdpa_shape
from simulator.targets import load_target
from workloads.cases import case_for_shape, load_workload, make_case
from workloads.models import get_model

LLAMA = get_model("llama3-8b")


def _case(name: str, seq: int = 1024):
    return case_for_shape(load_workload(name), LLAMA, batch=1, seq=seq, params={})


@pytest.mark.parametrize(
    "s",
    [
        {"causal": False, "window": None, "kv_heads": 8},
        {"causal": True, "window": None, "kv_heads": 8},
        {"causal": True, "window": 512, "kv_heads": 8},
        {"causal": False, "window": None, "kv_heads": 2},
        {"causal": True, "window": None, "kv_heads": 2},
    ],
)
def test_sdpa_shape_inverts_sdpa_case(s):
    shape = {"batch": 2, "heads": 8, "seq_q": 1024, "seq_kv": 1024, "head_dim": 64, **s}
    assert sdpa_shape(sdpa_case(shape)) == shape


@pytest.mark.parametrize("name", ["moba", "attention-3pass", "decode", "mqa", "linear-attention"])
def test_cases_that_no_sdpa_shape_runs_are_not_taken_for_one(name):
    assert sdpa_shape(_case(name)) is None


@pytest.mark.parametrize("name", ["attention-1pass-causal", "gqa", "sliding-window"])
def test_device_directions_are_the_gpu_backward_kernels(name):
    case, tgt = _case(name, 4096), load_target("h100-sxm")
    s = sdpa_shape(case)
    fwd = map_direction(case, tgt, "fwd")
    assert fwd.latency_s == pytest.approx(map_case(case, tgt).latency_s, rel=1e-12)
    bwd = map_direction(case, tgt, "bwd")
    assert bwd.latency_s == pytest.approx(predict("h100-sxm", "sdpa", direction="bwd", **s).time_s, rel=1e-12)
    both = map_direction(case, tgt, "fwd+bwd")
    assert both.latency_s == pytest.approx(fwd.latency_s + bwd.latency_s, rel=1e-9)
    assert both.description == "fa3+fa3-bwd" and bwd.description == "fa3-bwd"
    assert both.onchip_bytes == max(fwd.onchip_bytes, bwd.onchip_bytes) > 0


def test_a_cascade_without_a_backward_kernel_on_a_device_says_so():
    with pytest.raises(SpecError, match="moba: no backward kernel on a device"):
        map_direction(_case("moba"), load_target("h100-sxm"), "bwd")


def test_a_decode_shape_has_no_backward_on_a_device():
    case = make_case("gqa", {"B": 1, "H": 32, "G": 8, "P": 1, "M": 4096, "E": 128, "F": 128})
    with pytest.raises(SpecError, match="kernel decode has no backward pass"):
        map_direction(case, load_target("h100-sxm"), "bwd")


def test_backward_case_is_the_derived_cascade_at_the_forward_sizes():
    case = _case("attention-1pass")
    back = backward_case(case)
    assert back.cascade.text() == derive(case.cascade, "flash").cascade.text()  # a softmax: the recomputation form
    assert all(back.sizes[r] == case.sizes[r] for r in back.sizes if r in case.sizes)
    assert back.cascade.outputs == ("dQ", "dK", "dV")
    linear = backward_case(_case("linear-attention"))  # no softmax: reverse mode, the per-key values recomputed
    assert linear.summary.endswith("(recompute)")


@pytest.mark.parametrize("name", ["attention-1pass", "moba", "attention-3pass"])
def test_array_directions_map_the_derived_backward_cascade(name):
    case, tgt = _case(name), load_target("fusemax-cloud")
    fwd = map_direction(case, tgt, "fwd")
    bwd = map_direction(case, tgt, "bwd")
    expected = map_case(backward_case(case), tgt)
    assert (bwd.latency_s, bwd.energy_j, bwd.dram_bytes) == pytest.approx(
        (expected.latency_s, expected.energy_j, expected.dram_bytes), rel=1e-12
    )
    both = map_direction(case, tgt, "fwd+bwd")
    assert both.latency_s == pytest.approx(fwd.latency_s + bwd.latency_s, rel=1e-12)
    assert both.energy_j == pytest.approx(fwd.energy_j + bwd.energy_j, rel=1e-12)
    assert both.dram_bytes == pytest.approx(fwd.dram_bytes + bwd.dram_bytes, rel=1e-12)
    assert both.onchip_bytes == max(fwd.onchip_bytes, bwd.onchip_bytes)
    assert both.bound == (fwd if fwd.latency_s >= bwd.latency_s else bwd).bound
    # the backward of attention does 2.5x the forward's matrix work (recompute QK, then four products)
    assert bwd.latency_s > fwd.latency_s


def test_combined_design_reports_both_passes_and_their_spill():
    case, tgt = _case("attention-1pass"), load_target("fusemax-cloud")
    fwd, bwd = map_case(case, tgt), map_case(backward_case(case), tgt)
    both = combine_designs(fwd, bwd)
    assert both.mapping == {"fwd": fwd.mapping, "bwd": bwd.mapping}
    assert both.detail.fwd is fwd and both.detail.bwd is bwd
    spill = both.detail.spill_bytes_by_level
    for level in set(fwd.detail.spill_bytes_by_level) | set(bwd.detail.spill_bytes_by_level):
        assert spill[level] == pytest.approx(
            fwd.detail.spill_bytes_by_level.get(level, 0.0) + bwd.detail.spill_bytes_by_level.get(level, 0.0)
        )


def test_unknown_direction_names_where_it_came_from():
    with pytest.raises(AttnscopeError, match=r"--direction: unknown direction 'up'; give one of fwd, bwd, fwd\+bwd"):
        from mappers.direction import check_direction

        check_direction("up", "--direction")


def test_map_takes_the_direction(capsys):
    argv = ["map", "--workload", "attention-1pass-causal", "--device", "h100-sxm", "--shape",
            "B=1,H=16,M=4K,P=4K,E=128,F=128", "--json"]  # fmt: skip
    assert main([*argv, "--direction", "fwd+bwd"]) == 0
    both = json.loads(capsys.readouterr().out)
    s = {"batch": 1, "heads": 16, "seq_q": 4096, "head_dim": 128, "causal": True}
    assert both["latency_s"] == pytest.approx(predict("h100-sxm", "sdpa", direction="fwd+bwd", **s).time_s)
    assert both["description"] == "fa3+fa3-bwd"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--arch", "fusemax-cloud", "--einsum", "QK"], "--direction bwd costs a whole cascade's backward pass; drop"),
        (["--device", "h100-sxm", "--save-mapping", "m.yaml"], "--direction bwd with --save-mapping: a saved mapping"),
        (["--device", "h100-sxm", "--workload", "moba"], "moba: no backward kernel on a device"),
    ],
)
def test_map_direction_combos_that_cannot_run_exit_2(capsys, tmp_path, monkeypatch, extra, fragment):
    monkeypatch.chdir(tmp_path)
    workload = [] if "--workload" in extra else ["--workload", "attention-1pass"]
    assert main(["map", *workload, *extra, "--direction", "bwd"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_every_registered_cascade_has_a_backward_cost_or_a_reason_on_an_array():
    """Every registered cascade's derived backward cascade through compare-attention on an array: a number, or
    the reason no mapper maps it (an AttnscopeError turned into the row's status); never an exception."""
    from attnscope.compare_attention import compare_attention
    from workloads import CASCADES

    study = compare_attention(model="bert", seqs=(256,), arch="fusemax-cloud", variants=list(CASCADES),
                              direction="bwd")  # fmt: skip
    assert [r.variant for r in study.rows] == list(CASCADES)
    for r in study.rows:
        if r.status == "ok":
            assert r.latency_s is not None and r.latency_s > 0, r
        else:
            assert r.latency_s is None and r.status.startswith(("infeasible: ", "no spatial mapping: ")), r
            assert "defect" not in r.status, r
    # the split-K decode's backward reverses its recurrences in two passes: refused by the multi-pass planner
    # with the reason (it was a KeyError on the reversed recurrence's carry), after the fused mapper's refusal
    (splitk,) = [r for r in study.rows if r.variant == "decode-splitk"]
    assert "passes: decode-splitk-bwd has recurrences (dRO_rev reads dRO_carry" in splitk.status
    # the reverse-mode rules negate (d(1/x) = -1/x^2 dx): every preset array negates on its adder, so the linear
    # and softplus variants' backward cascades map (they were refused for the operator set)
    assert not [r for r in study.rows if "supports every operator" in r.status]
    assert {r.variant for r in study.rows if r.status == "ok"} >= {
        "linear-attention", "linear-attention-causal", "softplus-attention"}  # fmt: skip


def test_every_preset_array_with_an_adder_negates():
    """``neg`` (a subtraction from zero) on the adder wherever ``sub`` is: the backward cascades use it."""
    from simulator.specs import ARCHITECTURES, load_arch

    checked = 0
    for name in ARCHITECTURES:
        for array in load_arch(name).arrays:
            ops = {op.name: (op.weights, op.cycles) for op in array.ops}
            if "sub" in ops:
                assert ops.get("neg") == ops["sub"], (name, array.name)
                checked += 1
    assert checked >= 7  # both arrays of fusemax-cloud, flat-cloud and flat-edge; tpu-v3-like's


@pytest.mark.parametrize("name", ["attention-1pass", "gqa", "mla", "mla-expanded", "sigmoid-attention"])
def test_a_one_pass_backward_costs_two_to_four_forwards_on_an_array(name):
    """FlashAttention-2's backward does 2.5x the forward's matrix products (QK recomputed, then dV, dP, dQ, dK).
    mla's weight gradients (dWK, dWV: products of inputs alone) used to loop the latent rank at DRAM for every
    Einsum and its key rank was the batch (~500x); sigmoid attention's saved sigmoid left no query rank to
    spread (~800x)."""
    from attnscope.compare_attention import compare_attention

    lat = {d: compare_attention(model="bert", seqs=(1024,), arch="fusemax-cloud", variants=[name], direction=d)
           .rows[0].latency_s for d in ("fwd", "bwd")}  # fmt: skip
    assert 2.0 <= lat["bwd"] / lat["fwd"] <= 4.0, lat
