"""Model shapes and the Einsums of one transformer layer."""

import numpy as np
import pytest

from einsum.analysis import op_counts
from einsum.errors import RegistryError
from einsum.interpreter import random_inputs, run
from tests.reference import softmax_attention
from workloads.models import MODELS, get_model, layer_cascade


def test_model_shapes_match_the_study():
    assert (MODELS["BERT"].D, MODELS["BERT"].H, MODELS["BERT"].S) == (768, 12, 3072)
    assert (MODELS["TrXL"].D, MODELS["TrXL"].H, MODELS["TrXL"].S) == (1024, 16, 4096)
    assert (MODELS["T5"].D, MODELS["T5"].H, MODELS["T5"].S) == (512, 8, 2048)
    xlm = MODELS["XLM"]
    assert (xlm.B, xlm.D, xlm.E, xlm.F, xlm.H, xlm.S) == (64, 2048, 128, 128, 16, 8192)
    with pytest.raises(RegistryError, match="known models: BERT, TrXL, T5, XLM"):
        get_model("GPT")


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
