"""Model shapes and the Einsums of one transformer layer."""

import numpy as np
import pytest

from einsum.analysis import op_counts
from einsum.errors import RegistryError
from einsum.interpreter import random_inputs, run
from tests.reference import softmax_attention
from workloads.models import MODELS, get_model, layer_cascade


def test_model_shapes_match_the_study():
    for label, (d, h, s) in {"BERT": (768, 12, 3072), "TrXL": (1024, 16, 4096), "T5": (512, 8, 2048)}.items():
        m = get_model(label)
        assert (m.d_model, m.heads, m.ffn, m.batch) == (d, h, s, 64) and m.label == label
    xlm = get_model("xlm").sizes(1024)
    assert (xlm["B"], xlm["D"], xlm["E"], xlm["F"], xlm["H"], xlm["S"]) == (64, 2048, 128, 128, 16, 8192)
    with pytest.raises(RegistryError, match=r"known models: llama2-7b, .*, bert, trxl, t5, xlm"):
        get_model("GPT")


def test_one_zoo_for_every_command():
    assert get_model("BERT") is get_model("bert") is MODELS["bert"]
    assert get_model("llama3-8b").batch == 1 and "batch" not in get_model("llama3-8b").shape_fields()


@pytest.mark.parametrize("model", list(MODELS))
def test_layer_matmul_ops_equal_the_gemm_formulas(model):
    shape = MODELS[model]
    sizes = {**shape.sizes(1024), "M0": 256}
    ops = op_counts(layer_cascade("fusemax"), sizes)
    for name, (tokens, k, n) in shape.layer_matmuls(1024).items():
        assert ops[name] == {"mul": tokens * k * n, "add": tokens * k * n}


def test_layer_executes_projection_attention_and_ffn():
    c = layer_cascade("attention-1pass")
    sizes = c.rank_sizes({"B": 2, "D": 6, "E": 3, "F": 4, "H": 2, "S": 5, "M": 8, "P": 8, "M0": 4})
    inputs = random_inputs(c, sizes, seed=4)
    inputs["XM"] = inputs["X"].copy()  # self-attention
    out = run(c, sizes, inputs)["FFN2"]
    x = inputs["X"]
    q = np.einsum("bpd,dhe->bhep", x, inputs["WQ"])
    k = np.einsum("bpd,dhe->bhep", x, inputs["WK"])
    v = np.einsum("bpd,dhf->bhfp", x, inputs["WV"])
    z = np.einsum("bhfp,hfd->bpd", softmax_attention(q, k, v), inputs["WZ"])
    ref = z @ inputs["W1"] @ inputs["W2"]
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)
