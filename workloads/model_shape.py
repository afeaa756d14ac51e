"""What a transformer is, as the cost models read it: :class:`ModelShape` and its optional parts.

The zoo (:mod:`workloads.models`) and the Hugging Face reader (:mod:`workloads.hf_config`) both make these; a
shape may carry multi-head latent attention (:class:`MLAShape`), mixture-of-experts (:class:`MoEShape`) and rope
(:class:`RopeShape`) fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields

from einsum.errors import ShapeError


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
