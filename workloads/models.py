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
shape may carry multi-head latent attention (:class:`MLAShape`), mixture-of-experts (:class:`MoEShape`) and rope
(:class:`RopeShape`) fields; the zoo's entries have none.

>>> m = get_model("llama3-8b")
>>> m.heads, m.kv_heads, m.head_dim, get_model("BERT").batch
(32, 8, 128, 64)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from einsum.cascade import Cascade
from einsum.errors import RegistryError, ShapeError
from workloads.registry import get_cascade


@dataclass(frozen=True)
class MLAShape:
    """Multi-head latent attention (DeepSeek-V2/V3): keys and values come from one cached latent per token."""

    kv_lora_rank: int  # L: the latent each token caches (shared by all heads)
    q_lora_rank: int | None  # the query's compression rank; None: the query is projected from the tokens directly
    qk_nope_head_dim: int  # E: per-head query/key dims without rotary embedding
    qk_rope_head_dim: int  # ER: decoupled rotary dims (one key head shared by all heads, cached with the latent)
    v_head_dim: int  # F: per-head value dims


@dataclass(frozen=True)
class MoEShape:
    """A mixture-of-experts FFN: each token runs ``active`` of ``experts`` routed experts plus the shared ones."""

    experts: int  # routed experts per MoE layer
    active: int  # routed experts each token runs (top-k)
    expert_ffn: int  # each expert's FFN width (gated, like the dense FFN)
    shared_experts: int = 0  # experts every token runs, each expert_ffn wide (DeepSeek)
    dense_layers: int = 0  # the first layers keep a dense FFN of width ``ffn`` (DeepSeek's first_k_dense_replace)


@dataclass(frozen=True)
class RopeShape:
    """Rotary position embedding as the config gives it (the layer models leave rotary embeddings out)."""

    theta: float | None  # rope_theta (rotary_emb_base)
    rotary_dim: int | None  # head dims that rotate (GPT-NeoX's rotary_pct x head_dim; MLA's qk_rope_head_dim)
    scaling: tuple[tuple[str, object], ...] = ()  # rope_scaling's items (type, factor, ...), sorted


@dataclass(frozen=True)
class ModelShape:
    """Per-layer shape of a transformer, its depth and vocabulary; all sizes in elements."""

    name: str  # registry id, lower case
    layers: int  # decoder (or encoder) layers
    d_model: int  # D
    heads: int  # H query heads
    kv_heads: int  # G key/value heads (= heads without GQA)
    head_dim: int  # E = F
    ffn: int  # S
    vocab: int  # LM-head width (0: no LM head)
    gated_ffn: bool  # gate + up + down (SwiGLU) instead of two matmuls
    causal: bool  # decoder (causal mask) or encoder
    window: int | None  # sliding-window attention span in tokens (Mistral), None = full
    source: str  # where the numbers come from
    batch: int = 1
    """The batch the model is studied at by default (the FuseMax study's 64)."""
    label: str = ""
    """The name a study gives it (``BERT``), found like the id."""
    mla: MLAShape | None = None
    """Multi-head latent attention (``head_dim`` is then the query/key head dim, nope + rope)."""
    moe: MoEShape | None = None
    """Mixture-of-experts FFN (``ffn`` is then the dense layers' FFN width)."""
    rope: RopeShape | None = None
    """Rotary embedding fields, where a config gives them (data only: rotary embeddings are not costed)."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """What the config reader left out or assumed (unknown keys, fields not modelled), for reports."""

    @property
    def group(self) -> int:
        """R: query heads per K/V head."""
        return self.heads // self.kv_heads

    @property
    def v_head_dim(self) -> int:
        """F: the value head dim (MLA's v_head_dim, else ``head_dim``)."""
        return self.mla.v_head_dim if self.mla else self.head_dim

    @property
    def attention_kind(self) -> str:
        """The registered attention cascade the model's own attention is: ``mla`` (latent K/V), ``sliding-window``,
        ``gqa`` (fewer K/V heads than query heads) or ``attention-1pass`` (multi-head)."""
        if self.mla:
            return "mla"
        if self.window:
            return "sliding-window"
        return "gqa" if self.kv_heads < self.heads else "attention-1pass"

    def params(self) -> int:
        """Weights per layer times layers, plus the LM head (embeddings tied or not, counted once); MoE layers
        count every expert (all are resident) and the router."""
        d, h = self.d_model, self.heads
        if self.mla:
            a = self.mla
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            q = d * h * qk if a.q_lora_rank is None else a.q_lora_rank * (d + h * qk)
            attn = q + d * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * h * (a.qk_nope_head_dim
                   + a.v_head_dim) + h * a.v_head_dim * d  # fmt: skip
        else:
            attn = d * self.head_dim * (h * 2 + self.kv_heads * 2)
        per = 3 if self.gated_ffn else 2
        ffn = d * self.ffn * per
        if self.moe is None:
            return self.layers * (attn + ffn) + self.vocab * d
        m = self.moe
        moe_ffn = d * m.expert_ffn * per * (m.experts + m.shared_experts) + d * m.experts
        return self.layers * attn + m.dense_layers * ffn + (self.layers - m.dense_layers) * moe_ffn + self.vocab * d

    def shape_fields(self) -> dict[str, object]:
        """The layer's shape as plain data (what keys a device sweep's points), without the study defaults; the
        MLA, MoE and rope fields only where the model has them (a zoo entry's fields are as they always were)."""
        skip = ("batch", "label", "mla", "moe", "rope", "notes")
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        for name in ("mla", "moe", "rope"):
            part = getattr(self, name)
            if part is not None:
                out[name] = {k: [list(i) for i in v] if k == "scaling" else v for k, v in asdict(part).items()}
        return out

    def sizes(self, seq_len: int, ranks: Iterable[str] = ()) -> dict[str, int]:
        """The study layer's rank sizes at ``seq_len`` tokens (M = P = seq_len) and the default batch. An MLA
        model adds its latent ``L`` and rope ``ER`` sizes, and its value head dim is ``F``; ``E`` is its q/k head
        dim (nope + rope), or the nope part alone for a cascade (of ``ranks``) with a separate rope rank ``ER``."""
        out = {
            "B": self.batch,
            "D": self.d_model,
            "E": self.head_dim,
            "F": self.v_head_dim,
            "H": self.heads,
            "S": self.ffn,
            "M": seq_len,
            "P": seq_len,
        }
        if self.mla:
            out.update(L=self.mla.kv_lora_rank, ER=self.mla.qk_rope_head_dim)
            if "ER" in ranks:
                out["E"] = self.mla.qk_nope_head_dim
        return out

    def layer_matmuls(self, seq_len: int) -> dict[str, tuple[int, int, int]]:
        """The six per-layer matmuls as (tokens, reduction K, outputs N), in the study's order."""
        if self.mla or self.moe:
            raise ShapeError(f"{self.name}: the study's six-matmul layer has no {'MLA' if self.mla else 'MoE'} form; "
                             "use workloads.llm's layer (roofline) for this model")  # fmt: skip
        tokens, d, hd, f = self.batch * seq_len, self.d_model, self.head_dim * self.heads, self.ffn
        return {
            "Q": (tokens, d, hd),
            "K": (tokens, d, hd),
            "V": (tokens, d, hd),
            "Z": (tokens, hd, d),
            "FFN1": (tokens, d, f),
            "FFN2": (tokens, f, d),
        }


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
