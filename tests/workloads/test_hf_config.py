"""Hugging Face config.json files as model shapes: the published configs, the families, and bad input."""

import json
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsum.errors import AttnscopeError, SpecError
from workloads.hf_config import FAMILIES, model_from_config, read_hf_config
from workloads.llm import experts_touched, kv_cache_bytes, layer_kernels
from workloads.model_shape import MLAShape, MoEShape
from workloads.models import MODELS, get_model, is_config_path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "models"
SHAPE_FIELDS = ("layers", "d_model", "heads", "kv_heads", "head_dim", "ffn", "vocab", "gated_ffn", "causal", "window")


def config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def write(tmp_path: Path, data, name: str = "model.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(("file", "zoo"), [("llama-3-8b.json", "llama3-8b"), ("mistral-7b-v0.1.json", "mistral-7b")])
def test_published_configs_equal_the_zoo_entries(file, zoo):
    shape, entry = get_model(str(CONFIGS / file)), MODELS[zoo]
    assert {f: getattr(shape, f) for f in SHAPE_FIELDS} == {f: getattr(entry, f) for f in SHAPE_FIELDS}
    assert shape.params() == entry.params() and shape.attention_kind == entry.attention_kind
    assert layer_kernels(shape, "decode", 8192, 4) == layer_kernels(entry, "decode", 8192, 4)


def test_bert_config_layer_equals_the_study_encoder():
    shape, entry = get_model(str(CONFIGS / "bert-base-uncased.json")), MODELS["bert"]
    assert {f: getattr(shape, f) for f in SHAPE_FIELDS} == {f: getattr(entry, f) for f in SHAPE_FIELDS}
    assert any("encoder: no LM head" in n for n in shape.notes)


def test_qwen2_and_gemma_and_neox():
    qwen = get_model(str(CONFIGS / "qwen2-7b.json"))
    assert (qwen.heads, qwen.kv_heads, qwen.head_dim, qwen.ffn, qwen.window) == (28, 4, 128, 18944, None)
    assert qwen.attention_kind == "gqa" and any("use_sliding_window is false" in n for n in qwen.notes)
    gemma = get_model(str(CONFIGS / "gemma-7b.json"))
    assert (gemma.d_model, gemma.heads, gemma.head_dim, gemma.gated_ffn) == (3072, 16, 256, True)
    assert any(n.startswith('hidden_act="gelu"') for n in gemma.notes)  # GeGLU costed as SiLU: said
    neox = get_model(str(CONFIGS / "gpt-neox-20b.json"))
    assert (neox.kv_heads, neox.head_dim, neox.gated_ffn, neox.rope.rotary_dim) == (64, 96, False, 24)


def test_deepseek_v2_lite_mla_and_moe():
    ds = get_model(str(CONFIGS / "deepseek-v2-lite.json"))
    assert ds.mla == MLAShape(512, None, 128, 64, 128)
    assert ds.moe == MoEShape(experts=64, active=6, expert_ffn=1408, shared_experts=2, dense_layers=1)
    assert (ds.head_dim, ds.v_head_dim, ds.attention_kind, ds.layers, ds.vocab) == (192, 128, "mla", 27, 102400)
    assert dict(ds.rope.scaling)["type"] == "yarn" and ds.rope.rotary_dim == 64
    # 15.7B parameters in the model card; the input embedding (102400 x 2048 = 0.21B) is counted once here
    assert 15.4e9 < ds.params() < 15.6e9
    assert kv_cache_bytes(ds, 4096, 2) == 27 * 2 * 4096 * (512 + 64) * 2
    assert ds.sizes(1024, ("E", "ER", "L"))["E"] == 128 and ds.sizes(1024)["E"] == 192
    assert ds.shape_fields()["mla"]["kv_lora_rank"] == 512  # plain data for sweep keys
    json.dumps(ds.shape_fields())
    assert "mla" not in MODELS["llama3-8b"].shape_fields()  # zoo keys unchanged


def test_mla_kernels_expanded_prefill_absorbed_decode():
    ds = get_model(str(CONFIGS / "deepseek-v2-lite.json"))
    pre = {k.name: k for k in layer_kernels(ds, "prefill", 1024, 2)}
    assert pre["q_kv_a_proj"].shape == {"m": 2048, "n": 16 * 192 + 512 + 64, "k": 2048, "batch": 1}
    assert pre["kv_b_proj"].shape == {"m": 2048, "n": 16 * (128 + 128), "k": 512, "batch": 1}
    assert (pre["attention"].shape["kv_heads"], pre["attention"].shape["head_dim"]) == (16, 192)
    assert pre["o_proj"].shape["k"] == 16 * 128
    dec = {k.name: k for k in layer_kernels(ds, "decode", 4096, 2)}
    assert "kv_b_proj" not in dec and dec["q_absorb"].shape == {"m": 2, "n": 512, "k": 128, "batch": 16}
    assert (dec["attention"].shape["kv_heads"], dec["attention"].shape["head_dim"]) == (1, 576)
    dense = {k.name for k in layer_kernels(ds, "decode", 4096, 2, dense=True)}
    assert "gate_up_proj" in dense and "router" not in dense


def test_moe_kernels_follow_uniform_routing():
    ds = get_model(str(CONFIGS / "deepseek-v2-lite.json"))
    ks = {k.name: k for k in layer_kernels(ds, "decode", 4096, 8)}
    touched = experts_touched(64, 6, 8)
    assert touched == 35  # 64 * (1 - (58/64)^8) = 34.3, rounded up
    assert ks["experts_gate_up_proj"].shape == {"m": 2, "n": 2 * 1408, "k": 2048, "batch": touched}
    assert ks["shared_gate_up_proj"].shape == {"m": 8, "n": 2 * 2 * 1408, "k": 2048, "batch": 1}
    assert ks["router"].shape["n"] == 64
    assert experts_touched(64, 6, 1) == 6 and experts_touched(64, 6, 10_000) == 64


def test_every_key_is_read_known_or_noted(tmp_path):
    data = {**config("llama-3-8b.json"), "my_new_key": 3, "attention_bias": True}
    shape = read_hf_config(write(tmp_path, data))
    assert "my_new_key: unknown key, not read" in shape.notes
    assert any(n.startswith("attention_bias=true: projection biases are not costed") for n in shape.notes)
    assert not any("bos_token_id" in n for n in shape.notes)  # inert keys are silent
    assert shape.name == "model" and is_config_path(str(tmp_path / "model.json"))


def test_a_checkpoint_folder_and_the_cache(tmp_path):
    folder = tmp_path / "Mistral-7B"
    folder.mkdir()
    write(folder, config("mistral-7b-v0.1.json"), "config.json")
    shape = get_model(str(folder))
    assert shape.name == "mistral-7b" and shape.window == 4096
    assert get_model(str(folder)) is shape  # read once per file version
    data = config("mistral-7b-v0.1.json") | {"sliding_window": None}
    (folder / "config.json").write_text(json.dumps(data) + "\n\n")
    assert get_model(str(folder)).window is None


def test_families_dispatch_by_model_type():
    assert set(FAMILIES) >= {"llama", "mistral", "qwen2", "gemma", "deepseek_v2", "deepseek_v3", "gpt_neox", "bert"}
    v3 = {**config("deepseek-v2-lite.json"), "model_type": "deepseek_v3", "q_lora_rank": 1536}
    shape = model_from_config(v3, "<v3>", "v3")
    assert shape.mla.q_lora_rank == 1536
    names = [k.name for k in layer_kernels(shape, "prefill", 256, 1)]
    assert names[:3] == ["q_kv_a_proj", "q_b_proj", "kv_b_proj"]


def test_qwen2_window_only_when_used():
    base = config("qwen2-7b.json")
    on = model_from_config({**base, "use_sliding_window": True, "max_window_layers": 0}, "<q>", "q")
    assert on.window == 131072 and on.attention_kind == "sliding-window"
    with pytest.raises(SpecError, match=r"max_window_layers: 4 layers of full attention"):
        model_from_config({**base, "use_sliding_window": True, "max_window_layers": 4}, "<q>", "q")


BAD = [
    ({"num_attention_heads": None}, r"model\.json: num_attention_heads: missing|model\.json:\d+: num_attention_heads"),
    ({"num_attention_heads": "32"}, r"model\.json:\d+: num_attention_heads: expected a positive integer, got '32'"),
    ({"num_attention_heads": -4}, r"model\.json:\d+: num_attention_heads: expected a positive integer, got -4"),
    ({"num_key_value_heads": 5}, r"model\.json:\d+: num_key_value_heads: 5 does not divide num_attention_heads=32"),
    ({"hidden_size": 4.5e3}, r"model\.json:\d+: hidden_size: expected a positive integer, got 4500\.0"),
    ({"model_type": "t5"}, r"model\.json:\d+: model_type: unsupported 't5' \(str\); supported: llama, mistral"),
    ({"sliding_window": "4K"}, r"model\.json:\d+: sliding_window: expected a positive integer or null"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_keys_name_file_line_and_key(tmp_path, change, message):
    data = {**config("mistral-7b-v0.1.json"), **change}
    data = {k: v for k, v in data.items() if not (k == "num_attention_heads" and v is None)}
    with pytest.raises(SpecError, match=message):
        get_model(str(write(tmp_path, data)))


def test_missing_key_and_several_problems_at_once(tmp_path):
    data = {k: v for k, v in config("llama-3-8b.json").items() if k not in ("vocab_size", "intermediate_size")}
    with pytest.raises(SpecError) as exc:
        get_model(str(write(tmp_path, data)))
    text = str(exc.value)
    assert "model.json: 2 problems in the Hugging Face config:" in text
    assert "model.json: intermediate_size: missing; expected a positive integer" in text
    assert "model.json: vocab_size: missing; expected a positive integer" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"model_type": "llama",\n  "hidden_size": 4096,,\n}', r"model\.json:2:\d+: invalid JSON: Expecting"),
        ("[1, 2]", r"model\.json: expected a JSON object of config keys, got \[1, 2\]"),
        ('{"a": 1, "a": 2}', r"model\.json: invalid JSON: key 'a' is given twice"),
        (b"\x89PNG\r\n\x1a\n\x00\xff", r"model\.json: not a JSON text file \(byte \d+ is not UTF-8\)"),
        ("", r"model\.json:1:1: invalid JSON"),
    ],
)
def test_files_that_are_not_config_json(tmp_path, content, message):
    path = tmp_path / "model.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpecError, match=message):
        get_model(str(path))


def test_missing_file_and_folder_without_config(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.json: cannot read the model config: No such file"):
        get_model(str(tmp_path / "nope.json"))
    with pytest.raises(SpecError, match=r"is a folder without a config\.json"):
        get_model(str(tmp_path))


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 1 << 20), st.floats(allow_nan=True), st.text(max_size=6))
_keys = st.sampled_from([f.name for f in fields(MLAShape)] + [
    "model_type", "hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
    "intermediate_size", "vocab_size", "head_dim", "sliding_window", "use_sliding_window", "max_window_layers",
    "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts", "first_k_dense_replace",
    "moe_layer_freq", "rope_theta", "rope_scaling", "rotary_pct", "hidden_act", "other",
])  # fmt: skip
_values = st.one_of(_scalar, st.sampled_from(sorted(FAMILIES)), st.lists(_scalar, max_size=2),
                    st.dictionaries(st.text(max_size=4), _scalar, max_size=2))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(["llama-3-8b.json", "mistral-7b-v0.1.json", "qwen2-7b.json", "deepseek-v2-lite.json",
                          "gpt-neox-20b.json", "bert-base-uncased.json", "gemma-7b.json"]),
    changes=st.dictionaries(_keys, _values, max_size=4),
    drop=st.lists(_keys, max_size=3),
)  # fmt: skip
def test_random_configs_give_a_shape_or_a_named_error_never_a_traceback(base, changes, drop):
    data = {k: v for k, v in {**config(base), **changes}.items() if k not in drop}
    try:
        shape = model_from_config(data, "<random>", "random")
    except AttnscopeError as exc:
        assert str(exc).startswith("<random>")
        return
    for f in ("layers", "d_model", "heads", "kv_heads", "head_dim", "ffn"):
        value = getattr(shape, f)
        assert isinstance(value, int) and not isinstance(value, bool) and value > 0, f
    assert shape.heads % shape.kv_heads == 0
    kernels = layer_kernels(shape, "decode", 512, 2)
    assert all(v > 0 for k in kernels if k.kind == "gemm" for v in k.shape.values())
    json.dumps(shape.shape_fields())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_a_traceback(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "c.json"
    path.write_bytes(data)
    with pytest.raises(AttnscopeError, match=r"c\.json"):
        read_hf_config(path)
