"""The model zoo: shapes, layer cascades for prefill and decode, and the kernel grouping of the Einsums."""

import doctest

import pytest

import workloads.llm
from einsum.analysis import op_counts
from einsum.errors import RegistryError, ShapeError
from workloads.llm import (
    PHASES,
    head_kernel,
    kv_cache_bytes,
    layer_cascade,
    layer_kernels,
    layer_sizes,
)
from workloads.models import MODELS, get_model


def test_module_doctests():
    assert doctest.testmod(workloads.llm).failed == 0


@pytest.mark.parametrize(
    ("name", "layers", "d", "heads", "kv", "ffn", "vocab"),
    [
        ("llama2-7b", 32, 4096, 32, 32, 11008, 32000),
        ("llama3-8b", 32, 4096, 32, 8, 14336, 128256),
        ("llama3-70b", 80, 8192, 64, 8, 28672, 128256),
        ("mistral-7b", 32, 4096, 32, 8, 14336, 32000),
    ],
)
def test_zoo_shapes_match_the_published_configs(name, layers, d, heads, kv, ffn, vocab):
    s = get_model(name)
    assert (s.layers, s.d_model, s.heads, s.kv_heads, s.ffn, s.vocab) == (layers, d, heads, kv, ffn, vocab)
    assert s.head_dim * s.heads == d and s.gated_ffn and s.causal and s.source
    assert (s.window == 4096) == (name == "mistral-7b")


def test_study_models_are_in_the_zoo():
    assert {"bert", "trxl", "t5", "xlm"} <= set(MODELS)
    assert not get_model("bert").causal and get_model("bert").kv_heads == get_model("bert").heads


def test_unknown_model_lists_the_zoo():
    with pytest.raises(RegistryError, match="known models: llama2-7b, llama3-8b, llama3-70b, mistral-7b, bert"):
        get_model("llama4")
    with pytest.raises(ShapeError, match="unknown phase 'train'; allowed: prefill, decode"):
        layer_sizes(get_model("llama3-8b"), "train", 1, 1)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("phase", PHASES)
def test_every_layer_cascade_parses_and_kernels_cover_each_einsum_once(name, phase):
    cascade = layer_cascade(name, phase)
    covered = [e for k in layer_kernels(get_model(name), phase, seq=256, batch=2) for e in k.einsums]
    assert sorted(covered) == sorted(e.name for e in cascade.einsums)


def test_gqa_op_counts_and_decode_reads_the_cache():
    shape = get_model("llama3-8b")
    sizes = layer_sizes(shape, "prefill", 512, 2)
    ops = op_counts(layer_cascade("llama3-8b", "prefill"), sizes)
    assert ops["QK"]["mul"] == 2 * 32 * 512 * 512 * 128  # H = G x R query heads
    assert ops["K"]["mul"] == 2 * 512 * 4096 * 8 * 128  # only G = 8 K heads are projected
    dec = layer_cascade("llama3-8b", "decode")
    assert "KC" in dec.inputs and "VC" in dec.inputs and {"KN", "VN"} <= set(dec.outputs)
    d = layer_sizes(shape, "decode", 4096, 8)
    assert (d["P"], d["M"]) == (1, 4096)
    assert layer_sizes(get_model("mistral-7b"), "decode", 32768, 1)["M"] == 4096  # sliding window
    attn = next(k for k in layer_kernels(shape, "decode", 4096, 8) if k.kind == "attention")
    assert attn.shape | {} == {"batch": 8, "heads": 32, "kv_heads": 8, "seq_q": 1, "seq_kv": 4096,
                               "head_dim": 128, "causal": False, "window": None}  # fmt: skip
    assert kv_cache_bytes(shape, 4096, 8) == 2 * 32 * 8 * 4096 * 8 * 128 * 2
    assert head_kernel(shape, 8).shape == {"m": 8, "n": 128256, "k": 4096, "batch": 1}
    assert head_kernel(get_model("bert"), 8) is None
