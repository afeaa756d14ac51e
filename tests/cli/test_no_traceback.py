"""Property tests of issue 16: random Einsum text and random spec data never raise anything but attnscope's own
errors (which the CLI prints as exit 2 with the fault named): no traceback, ever."""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einsum.analysis import op_counts
from einsum.cascade import Cascade
from einsum.errors import AttnscopeError
from einsum.interpreter import random_inputs, run
from einsum.yamlio import read_yaml_text_data
from mappers.constraints import constraints_from_dict
from mappers.sweep.spec import sweep_from_dict
from simulator.device import DEVICES, device_from_dict
from simulator.mapping import mapping_from_dict
from simulator.specs import load_arch, spec_from_dict
from validate.harness.sweep import sweep_from_dict as plan_from_dict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("ATTNSCOPE_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    "input", "output", "partition", "init", "param", "density", "where", "sum", "max", "min", "exp", "sqrt",
    "Q", "K", "V", "S", "M", "P", "E", "M1", "M0", "m", "p", "e", "m1", "m0", "[", "]", "(", ")", ",", "=", ":",
    "+", "-", "*", "/", "<", "<=", "==", "0", "1", "2.5", "1e9", "inf", "\n", " ", "#", "\t", "Ω", "２", "\x00",
]  # fmt: skip
VALID = "input Q[E,P], K[E,M]\nS[m,p] = sum[e] Q[e,p] * K[e,m]\n"


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=60), st.integers(0, len(VALID)))
def test_random_einsum_text_parses_or_names_its_fault(tokens, at):
    text = VALID[:at] + " ".join(tokens) + VALID[at:]
    try:
        cascade = Cascade.from_text(text, name="fuzz")
        sizes = cascade.rank_sizes({r: 4 for r in cascade.ranks if r not in cascade.parent_of})
        op_counts(cascade, sizes)
        run(cascade, sizes, random_inputs(cascade, sizes))
    except AttnscopeError:
        pass


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["dram", "pe_2d", "global_buffer", "QK", "m", "fa2", "grid", "sum"]),
)  # fmt: skip
KEYS = st.sampled_from([
    "name", "source", "levels", "arrays", "clock_hz", "word_bytes", "capacity_words", "einsums", "phases",
    "placement", "targets", "target", "type", "factors", "axes", "sampling", "method", "cases", "op", "shapes",
    "values", "id", "sm_count", "tensor_tflops", "kind", "rows", "cols", "mapping", "strategy", "derived",
])  # fmt: skip
DATA = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                    max_leaves=25)  # fmt: skip

READERS = {
    "arch": lambda d: spec_from_dict(d, "fuzz.yaml"),
    "device": lambda d: device_from_dict(d, "fuzz.yaml"),
    "mapping": lambda d: mapping_from_dict(d, "fuzz.yaml"),
    "constraints": lambda d: constraints_from_dict(d, "fuzz.yaml"),
    "sweep": lambda d: sweep_from_dict(d, "fuzz.yaml", ROOT),
    "plan": lambda d: plan_from_dict(d, "fuzz.yaml"),
}


@SETTINGS
@given(st.sampled_from(sorted(READERS)), DATA)
def test_random_spec_data_is_read_or_refused_by_name(kind, data):
    with contextlib.suppress(AttnscopeError):
        READERS[kind](data)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


VALID_SPECS = {
    "arch": load_arch("flat-edge").to_dict(),
    "device": yaml.safe_load(DEVICES["orin-agx"].read_text()),
    "sweep": yaml.safe_load((ROOT / "examples/sweeps/fusemax-pe-buffer.yaml").read_text()),
}


@SETTINGS
@given(st.sampled_from(sorted(VALID_SPECS)), st.data())
def test_a_real_spec_with_one_value_replaced_is_read_or_refused_by_name(kind, draw):
    data = copy.deepcopy(VALID_SPECS[kind])
    path = draw.draw(st.sampled_from(_paths(data)[1:]))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = draw.draw(DATA)
    with contextlib.suppress(AttnscopeError):
        READERS[kind](data)


@SETTINGS
@given(st.text(max_size=200))
def test_random_yaml_text_parses_or_names_its_line(text):
    try:
        read_yaml_text_data(text, "fuzz.yaml")
    except AttnscopeError as exc:
        assert str(exc).startswith("fuzz.yaml")
