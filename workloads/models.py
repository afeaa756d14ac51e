"""The model zoo: transformer shapes, one registry for every command, and the Einsums of a study layer.

One :class:`ModelShape` per model, keyed by a lower-case id (``llama3-8b``; the FuseMax study's ``bert``,
``trxl``, ``t5``, ``xlm``, also found by their study labels ``BERT``, ``TrXL``...). The decoders' numbers are
their Hugging Face ``config.json`` files; the study's encoders are its ``flat_validation.csv`` cloud rows
(the study costs one encoder layer of each, at its batch of 64; ``layers`` is the whole encoder's depth, from
the model's paper, for whole-model figures such as ``roofline``'s). :mod:`workloads.llm` builds a decoder or
encoder layer of any of them; :func:`layer_text` here builds the study's layer around a registered attention
cascade: Q/K/V projections of the tokens, the attention cascade, the output projection Z and the two FFN
matmuls, with no layer norm, activation or residual (K and V project the same tokens as Q: self-attention, M = P).
:func:`get_model` also takes the path of a Hugging Face ``config.json`` (:mod:`workloads.hf_config`), whose
shape may carry the MLA, MoE and rope parts of :mod:`workloads.model_shape`; the zoo's entries have none.

>>> m = get_model("llama3-8b")
>>> m.heads, m.kv_heads, m.head_dim, get_model("BERT").batch
(32, 8, 128, 64)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TextIO

from einsum.cascade import Cascade
from einsum.errors import RegistryError
from workloads.model_shape import ModelShape
from workloads.registry import get_cascade

_HF = "Hugging Face config.json of"
_STUDY = "layer shape: FuseMax study (Nayak et al., MICRO 2024), flat_validation.csv cloud rows"


def _study(label: str, layers: int, d: int, heads: int, head_dim: int, ffn: int, source: str) -> ModelShape:
    """A study encoder: its layer as the study costs it (no LM head), ``layers`` of them in the whole model."""
    return ModelShape(label.lower(), layers, d, heads, heads, head_dim, ffn, 0, False, False, None, source,
                      batch=64, label=label)  # fmt: skip


MODELS: dict[str, ModelShape] = {
    m.name: m
    for m in (
        ModelShape("llama2-7b", 32, 4096, 32, 32, 128, 11008, 32000, True, True, None,
                   f"{_HF} meta-llama/Llama-2-7b-hf; Touvron et al. 2023 (Llama 2) Table 1"),
        ModelShape("llama3-8b", 32, 4096, 32, 8, 128, 14336, 128256, True, True, None,
                   f"{_HF} meta-llama/Meta-Llama-3-8B; Llama 3 herd paper (Dubey et al. 2024) Table 3"),
        ModelShape("llama3-70b", 80, 8192, 64, 8, 128, 28672, 128256, True, True, None,
                   f"{_HF} meta-llama/Meta-Llama-3-70B; Llama 3 herd paper Table 3"),
        ModelShape("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, True, True, 4096,
                   f"{_HF} mistralai/Mistral-7B-v0.1; Jiang et al. 2023 (Mistral 7B) Table 1, sliding window 4096"),
        _study("BERT", 12, 768, 12, 64, 3072,
               f"{_STUDY} (BERT-Base); 12 layers: Devlin et al. 2019 (BERT), BERT-Base L=12, H=768, A=12"),
        _study("TrXL", 18, 1024, 16, 64, 4096,
               f"{_STUDY} (Transformer-XL); 18 layers: Dai et al. 2019 (Transformer-XL), WikiText-103 large model"),
        _study("T5", 6, 512, 8, 64, 2048,
               f"{_STUDY} (T5-small); 6 encoder layers: Raffel et al. 2020 (T5), T5-Small"),
        _study("XLM", 12, 2048, 16, 128, 8192,
               "layer shape: FuseMax study, XLM; 12 layers: Lample & Conneau 2019 (XLM), the 2048-wide MLM model"),
    )
}  # fmt: skip
"""The zoo, by id."""

MODEL_NAMES: tuple[str, ...] = (*MODELS, *(m.label for m in MODELS.values() if m.label))
"""Every name :func:`get_model` finds: the ids and the study labels."""


def is_config_path(name: object) -> bool:
    """Whether a model name is a path to a Hugging Face config (a ``.json`` file, or a folder holding
    ``config.json``) rather than a zoo id."""
    if not isinstance(name, str) or name.lower() in MODELS or name in MODEL_NAMES:
        return False
    return name.lower().endswith(".json") or "/" in name or Path(name).is_dir()


def get_model(name: str | ModelShape) -> ModelShape:
    """A model by id or study label (case does not matter), or a Hugging Face ``config.json`` by path
    (:func:`workloads.hf_config.read_hf_config`); a miss lists the known models."""
    if isinstance(name, ModelShape):
        return name
    if is_config_path(name):
        from workloads.hf_config import read_hf_config

        return read_hf_config(name)
    try:
        return MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise RegistryError(
            f"unknown model {name!r}; known models: {', '.join(MODELS)}, or a Hugging Face config.json path"
        ) from None


PROJECTIONS = """\
input X[B,P,D], XM[B,M,D], WQ[D,H,E], WK[D,H,E], WV[D,H,F], WZ[H,F,D], W1[D,S], W2[S,D]
Q[b,h,e,p] = sum[d] X[b,p,d] * WQ[d,h,e]
K[b,h,e,m] = sum[d] XM[b,m,d] * WK[d,h,e]
V[b,h,f,m] = sum[d] XM[b,m,d] * WV[d,h,f]
"""

OUTPUT_AND_FFN = """\
Z[b,p,d] = sum[h,f] AV[b,h,f,p] * WZ[h,f,d]
FFN1[b,p,s] = sum[d] Z[b,p,d] * W1[d,s]
FFN2[b,p,d] = sum[s] FFN1[b,p,s] * W2[s,d]
output FFN2
"""


def layer_text(attention: str = "attention-3pass") -> str:
    """Cascade text of one layer around a registered attention cascade (its Q, K, V become projections).

    ``XM`` holds the key/value tokens (the same array as ``X`` for self-attention).
    """
    body = [
        line for line in get_cascade(attention).text.splitlines() if not line.startswith(("input ", "output ", "#"))
    ]
    header = f"# One transformer layer with {attention}: projections, attention, output projection, FFN."
    return "\n".join([header, PROJECTIONS.rstrip(), *body, OUTPUT_AND_FFN.rstrip()]) + "\n"


def layer_cascade(attention: str = "attention-3pass") -> Cascade:
    """One layer as a validated cascade."""
    name = f"layer-{re.sub(r'[^a-z0-9-]', '', attention)}"
    return Cascade.from_text(layer_text(attention), name=name, origin=f"<{name}>")


def print_model_notes(model: str, stream: TextIO | None = None) -> None:
    """A command's stderr note of what a config model's reader left out (nothing for a zoo id)."""
    if is_config_path(model):
        for note in get_model(model).notes:
            print(f"note: {model}: {note}", file=stream or sys.stderr)
