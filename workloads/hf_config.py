"""Hugging Face ``config.json`` files as zoo models (:class:`workloads.models.ModelShape`).

``--model path/to/config.json`` (or a folder holding one) works wherever a zoo id does:
:func:`workloads.models.get_model` reads the file with :func:`read_hf_config`. The ``model_type`` picks a
:class:`Family` from :data:`FAMILIES` (Llama, Mistral, Qwen2, Gemma, DeepSeek-V2/V3, GPT-NeoX, BERT); each
family says which keys it reads, whether its FFN is gated (gate, up and down projections) and whether it is a
decoder, and adds its own readers (sliding window, multi-head latent attention, mixture of experts).

Every key of the file is accounted for: read into the shape, known to have no effect on the cost (token ids,
dropouts, norm epsilons, dtypes...), known but not modelled (listed in the shape's ``notes`` with what is
assumed instead), or unknown (listed in ``notes``). A missing or invalid required key is an error naming the
file, the line and the key (:class:`einsum.yamlio.Problems`); every problem of a file is reported at once.

>>> shape = read_hf_config("examples/models/mistral-7b-v0.1.json")
>>> shape.heads, shape.kv_heads, shape.head_dim, shape.window, shape.attention_kind
(32, 8, 128, 4096, 'sliding-window')
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einsum.errors import SpecError
from einsum.yamlio import REQUIRED, Problems, read_yaml_text_data, show
from workloads.model_shape import MLAShape, ModelShape, MoEShape, RopeShape

__all__ = ["FAMILIES", "Family", "model_from_config", "read_hf_config"]

INERT = frozenset({
    "_name_or_path", "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "initializer_range",
    "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "attention_dropout", "hidden_dropout",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "use_cache", "tie_word_embeddings",
    "pretraining_tp", "max_position_embeddings", "gradient_checkpointing", "output_attentions",
    "output_hidden_states", "return_dict", "is_decoder", "quantization_config", "aux_loss_alpha", "seq_aux",
    "router_aux_loss_coef", "output_router_logits", "type_vocab_size", "position_embedding_type",
})  # fmt: skip
"""Keys that do not change what a forward pass computes or moves (ids, dropouts, norm epsilons, training-only
coefficients, the context limit): read past in silence."""

_ACTIVATION = "the FFN activation is costed as x * sigmoid(x) (one special-function op per element), exact for SiLU"


@dataclass(frozen=True)
class Family:
    """How one ``model_type`` (or a few that share a layout) maps onto a :class:`ModelShape`."""

    label: str  # the family's name in messages and sources
    gated_ffn: bool  # gate + up + down projections (SwiGLU/GeGLU) instead of two matmuls
    causal: bool  # decoder (causal mask, LM head) or encoder
    kv_heads_key: bool = True  # reads num_key_value_heads (GQA); else K/V heads = query heads
    head_dim_key: bool = True  # reads head_dim; else head dim = hidden_size / num_attention_heads
    lm_head: bool = True  # an LM head of vocab_size (BERT's config describes the encoder: no head costed)
    readers: tuple[Callable[[_Reader], None], ...] = ()  # family fields: sliding window, MLA, MoE, rope
    left_out: Mapping[str, tuple[tuple[Any, ...], str]] | None = None
    """Keys the family knows but does not model -> (the values the model is exact for, what is costed instead):
    noted when the config's value is not one of those."""
    inert: tuple[str, ...] = ()  # the family's own keys with no effect on the cost


@dataclass
class _Reader:
    """One config being read: its data, where problems go, and what the readers found."""

    data: Mapping[str, Any]
    p: Problems
    family: Family
    used: set[str]
    out: dict[str, Any]
    notes: list[str]

    def get(self, key: str, kind: str | tuple[Callable[[Any], bool], str], default: Any = REQUIRED,
            null: bool = False) -> Any:  # fmt: skip
        """``data[key]`` checked (:meth:`Problems.value`; required unless a default is given), marked as read."""
        self.used.add(key)
        return self.p.value(self.data, "", key, kind, default, null=null)


def _sliding_window(r: _Reader) -> None:
    """Mistral: ``sliding_window`` (null or absent: full attention)."""
    r.out["window"] = r.get("sliding_window", "count", None, null=True)


def _qwen2_window(r: _Reader) -> None:
    """Qwen2: ``sliding_window`` applies only with ``use_sliding_window``, and then to layers from
    ``max_window_layers`` on; a mix of windowed and full layers is refused (one layer stands for all)."""
    use = r.get("use_sliding_window", "flag", False)
    window = r.get("sliding_window", "count", None, null=True)
    start = r.get("max_window_layers", "int", 0)
    layers = r.data.get("num_hidden_layers")
    if not use:
        if window is not None:
            r.notes.append(f"sliding_window={window} is not used: use_sliding_window is false (full attention)")
        return
    if window is None:
        r.p.add("sliding_window", "missing; use_sliding_window is true, so give the window in tokens", r.data, None)
        return
    if isinstance(start, int) and isinstance(layers, int) and start >= layers:
        r.notes.append(f"use_sliding_window is true but max_window_layers={start} >= num_hidden_layers={layers}: "
                       "no layer uses the window (full attention)")  # fmt: skip
        return
    if isinstance(start, int) and start > 0:
        r.p.add("max_window_layers", f"{start} layers of full attention and the rest windowed: attnscope costs one "
                "layer for all of them and cannot represent the mix; set max_window_layers to 0 (all windowed) or "
                "use_sliding_window to false", r.data, "max_window_layers")  # fmt: skip
        return
    r.out["window"] = window


def _rope(r: _Reader) -> None:
    """``rope_theta`` / ``rotary_emb_base``, ``rotary_pct`` / ``partial_rotary_factor``, ``rope_scaling``."""
    theta = r.get("rope_theta", "positive", None)
    base = r.get("rotary_emb_base", "positive", None)
    theta = theta if theta is not None else base
    pct = r.get("rotary_pct", "fraction", None)
    pct = pct if pct is not None else r.get("partial_rotary_factor", "fraction", None)
    scaling = r.get("rope_scaling", (lambda v: isinstance(v, dict), "a mapping"), None, null=True)
    items: tuple[tuple[str, object], ...] = ()
    if scaling:
        items = tuple(sorted((str(k), v if isinstance(v, int | float | str | bool) or v is None else show(v))
                             for k, v in scaling.items()))  # fmt: skip
        r.notes.append("rope_scaling (" + ", ".join(f"{k}={v}" for k, v in items) + ") is recorded, not costed: "
                       "rotary embeddings are left out of the layer (elementwise)")  # fmt: skip
    head_dim = r.out.get("head_dim")
    rotary = None
    if r.out.get("mla") is not None:
        rotary = r.out["mla"].qk_rope_head_dim
    elif pct is not None and isinstance(head_dim, int):
        rotary = int(head_dim * pct)
    if theta is not None or rotary is not None or items:
        r.out["rope"] = RopeShape(theta, rotary, items)


def _mla(r: _Reader) -> None:
    """DeepSeek-V2/V3 multi-head latent attention: the five MLA sizes; head_dim becomes nope + rope."""
    latent = r.get("kv_lora_rank", "count")
    q_rank = r.get("q_lora_rank", "count", None, null=True)
    sizes = {k: r.get(k, "count") for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")}
    if latent is None or None in sizes.values():
        return
    r.out["mla"] = MLAShape(latent, q_rank, sizes["qk_nope_head_dim"], sizes["qk_rope_head_dim"], sizes["v_head_dim"])
    r.out["head_dim"] = sizes["qk_nope_head_dim"] + sizes["qk_rope_head_dim"]
    r.used.add("head_dim")


def _moe(r: _Reader) -> None:
    """DeepSeek mixture of experts: routed experts (null: dense), top-k, expert width, shared experts, the
    leading dense layers; ``moe_layer_freq`` other than 1 (MoE every k-th layer) is refused."""
    experts = r.get("n_routed_experts", "count", None, null=True)
    active = r.get("num_experts_per_tok", "count", None, null=True)
    width = r.get("moe_intermediate_size", "count", None, null=True)
    shared = r.get("n_shared_experts", "int", 0, null=True) or 0
    dense = r.get("first_k_dense_replace", "int", 0)
    freq = r.get("moe_layer_freq", "count", 1)
    if experts is None:
        return
    for key, value in (("num_experts_per_tok", active), ("moe_intermediate_size", width)):
        if value is None and key not in r.data:
            r.p.add(key, "missing; n_routed_experts is given, so expected a positive integer", r.data, None)
    layers = r.data.get("num_hidden_layers")
    if isinstance(active, int) and active > experts:
        r.p.add("num_experts_per_tok", f"{active} routed experts per token but only n_routed_experts={experts}", r.data,
                "num_experts_per_tok")  # fmt: skip
    if isinstance(shared, int) and shared < 0:
        r.p.add("n_shared_experts", f"expected an integer >= 0, got {shared}", r.data, "n_shared_experts")
    if isinstance(dense, int) and (dense < 0 or (isinstance(layers, int) and dense > layers)):
        r.p.add("first_k_dense_replace", f"expected an integer in [0, num_hidden_layers], got {dense}", r.data,
                "first_k_dense_replace")  # fmt: skip
    if freq not in (None, 1):
        r.p.add(
            "moe_layer_freq",
            f"{freq}: MoE every {freq}th layer is not represented (attnscope costs the MoE "
            "layers after first_k_dense_replace as one kind); only 1 is supported",
            r.data,
            "moe_layer_freq",
        )
    if None in (active, width, dense, freq) or not isinstance(shared, int) or shared < 0:
        return
    r.out["moe"] = MoEShape(experts, active, width, shared, dense)


_EXACT_ACT = ("silu", "swish")
_DEEPSEEK_LEFT_OUT = {
    "hidden_act": (_EXACT_ACT, _ACTIVATION),
    "topk_method": ((), "the router's GEMM is costed, its top-k selection is not"),
    "scoring_func": ((), "the router's scoring (softmax or sigmoid over the experts) is not costed"),
    "routed_scaling_factor": ((1, 1.0), "the scale of the experts' sum (elementwise) is not costed"),
    "ep_size": ((1,), "expert parallelism across devices is not modelled (one device holds every expert)"),
    "num_nextn_predict_layers": ((0,), "the multi-token-prediction module is not costed (num_hidden_layers are)"),
    "attention_bias": ((False,), "projection biases are not costed"),
}
_LLAMA_LEFT_OUT = {
    "hidden_act": (_EXACT_ACT, _ACTIVATION),
    "attention_bias": ((False,), "projection biases are not costed"),
    "mlp_bias": ((False,), "FFN biases are not costed"),
}
_ENCODER_LEFT_OUT = {
    "hidden_act": (_EXACT_ACT, _ACTIVATION),
    "use_parallel_residual": (
        (False,),
        "the layer is costed as sequential (attention, then FFN on its output); the "
        "parallel residual runs the same kernels",
    ),
}
_GEMMA_LEFT_OUT = {**_LLAMA_LEFT_OUT, "hidden_activation": (_EXACT_ACT, _ACTIVATION)}
_DEEPSEEK_INERT = ("n_group", "topk_group", "norm_topk_prob")  # which experts run, not how many: no cost change

_LLAMA = Family("Llama", gated_ffn=True, causal=True, readers=(_rope,), left_out=_LLAMA_LEFT_OUT)
_DEEPSEEK = Family(
    "DeepSeek",
    gated_ffn=True,
    causal=True,
    readers=(_mla, _moe, _rope),
    left_out=_DEEPSEEK_LEFT_OUT,
    inert=_DEEPSEEK_INERT,
)

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": Family("Mistral", gated_ffn=True, causal=True, readers=(_sliding_window, _rope),
                      left_out=_LLAMA_LEFT_OUT),
    "qwen2": Family("Qwen2", gated_ffn=True, causal=True, readers=(_qwen2_window, _rope),
                    left_out={**_LLAMA_LEFT_OUT, "attention_bias": ((False,), "Qwen2's Q/K/V biases are not costed")}),
    "gemma": Family("Gemma", gated_ffn=True, causal=True, readers=(_rope,), left_out=_GEMMA_LEFT_OUT),
    "deepseek_v2": _DEEPSEEK,
    "deepseek_v3": _DEEPSEEK,
    "gpt_neox": Family("GPT-NeoX", gated_ffn=False, causal=True, kv_heads_key=False, head_dim_key=False,
                       readers=(_rope,), left_out=_ENCODER_LEFT_OUT),
    "bert": Family("BERT", gated_ffn=False, causal=False, kv_heads_key=False, head_dim_key=False, lm_head=False,
                   left_out=_ENCODER_LEFT_OUT),
}  # fmt: skip
"""Supported ``model_type`` values -> their family."""


def model_from_config(data: Any, origin: str, name: str) -> ModelShape:
    """A :class:`ModelShape` named ``name`` from a parsed config (a mapping, as ``config.json`` holds);
    every problem is raised at once as one SpecError naming ``origin`` (and the line, where the data has it)."""
    p = Problems(origin, "Hugging Face config")
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a JSON object of config keys, got {show(data)}")
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        what = "missing" if "model_type" not in data else f"unsupported {show(model_type)}"
        p.add("model_type", f"{what}; supported: {', '.join(FAMILIES)}", data, "model_type")
        p.raise_if_any()
    family = FAMILIES[model_type]
    r = _Reader(data, p, family, {"model_type"}, {}, [])
    d = r.get("hidden_size", "count")
    heads = r.get("num_attention_heads", "count")
    layers = r.get("num_hidden_layers", "count")
    ffn = r.get("intermediate_size", "count")
    vocab = r.get("vocab_size", "count")
    kv_given = r.get("num_key_value_heads", "count", None, null=True) if family.kv_heads_key else None
    kv_heads = heads if kv_given is None else kv_given  # absent or null: one K/V head per query head
    head_dim = r.get("head_dim", "count", None, null=True) if family.head_dim_key else None
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads:
        p.add("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads={heads}; query heads are "
              "shared in equal groups by the K/V heads", data, "num_key_value_heads")  # fmt: skip
    if head_dim is None and isinstance(d, int) and isinstance(heads, int):  # absent or null: hidden / heads
        if d % heads and model_type not in ("deepseek_v2", "deepseek_v3"):  # MLA sets its own head dims
            p.add("hidden_size", f"{d} is not divisible by num_attention_heads={heads} and no head_dim is given",
                  data, "hidden_size")  # fmt: skip
        head_dim = d // heads
    r.out["head_dim"] = head_dim
    for reader in family.readers:
        reader(r)
    head_dim = r.out["head_dim"]
    p.raise_if_any()
    notes = r.notes
    for key in data:
        if key in r.used or key in INERT:
            continue
        if key in family.inert:
            continue
        exact, why = (family.left_out or {}).get(key, (None, ""))
        if exact is None:
            notes.append(f"{key}: unknown key, not read")
        elif not any(data[key] == v and type(data[key]) is type(v) for v in exact):
            notes.append(f"{key}={_short(data[key])}: {why}")
    if not family.lm_head:
        notes.append(f"{family.label} is an encoder: no LM head is costed (vocab_size {vocab} is the MLM head's)")
    return ModelShape(
        name=name,
        layers=layers,
        d_model=d,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn=ffn,
        vocab=vocab if family.lm_head else 0,
        gated_ffn=family.gated_ffn,
        causal=family.causal,
        window=r.out.get("window"),
        source=f"Hugging Face config {origin} ({family.label} family, model_type {model_type})",
        mla=r.out.get("mla"),
        moe=r.out.get("moe"),
        rope=r.out.get("rope"),
        notes=tuple(notes),
    )


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else show(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_hf_config(path: str | os.PathLike[str]) -> ModelShape:
    """A model from a ``config.json`` file (or a folder holding one); its name is the file's stem (the folder's
    name for ``config.json``). Read once per file version (path, size, modification time)."""
    origin = str(path)
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise SpecError(f"{origin}: is a folder without a config.json; give a Hugging Face config.json file")
        p, origin = p / "config.json", str(p / "config.json")
    try:
        st = p.stat()
    except OSError as exc:
        raise SpecError(f"{origin}: cannot read the model config: {exc.strerror}; give a Hugging Face config.json "
                        "file or a zoo model id") from None  # fmt: skip
    return _read(str(p.resolve()), origin, st.st_size, st.st_mtime_ns)


_CACHE: dict[tuple[str, str, int, int], ModelShape] = {}


def _read(resolved: str, origin: str, size: int, mtime_ns: int) -> ModelShape:
    key = (resolved, origin, size, mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = model_from_config(_parse(Path(resolved), origin), origin, _name(Path(origin)))
    return _CACHE[key]


def _name(path: Path) -> str:
    stem = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    return stem.lower() or "config"


class _Duplicate(Exception):
    """A key given twice in one JSON object (json keeps the last silently)."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _parse(path: Path, origin: str) -> Any:
    """JSON syntax checked by :mod:`json` (its line and column on a fault); the data read by the YAML loader,
    which remembers each key's line (JSON is YAML); where that loader refuses valid JSON, the JSON data."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{origin}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{origin}: not a JSON text file (byte {exc.start} is not UTF-8); a config.json is text"
        ) from None
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except _Duplicate as exc:
        raise SpecError(f"{origin}: invalid JSON: key {exc.args[0]!r} is given twice in one object") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{origin}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise SpecError(f"{origin}: invalid JSON: nested too deeply") from None
    try:
        lined = read_yaml_text_data(text, origin)
    except (SpecError, RecursionError):
        return data
    return lined if lined == data else data
