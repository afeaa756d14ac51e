"""Malformed Timeloop and AccelForge input: exit 2 naming the file, the dotted key and what was expected; no
traceback for any input (hypothesis)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnscope.cli import main
from attnscope.interop.accelforge import import_workload
from attnscope.interop.common import Converted, read_tagged, render_jinja
from attnscope.interop.timeloop import import_arch, import_problem
from einsum.errors import AttnscopeError

DATA = Path(__file__).parent / "data"

GOOD_ARCH = """architecture:
  version: 0.3
  subtree:
  - name: system
    local:
    - {name: DRAM, class: DRAM, attributes: {width: 64, word-bits: 16}}
    - {name: buf, class: SRAM, attributes: {depth: 1024, width: 64, word-bits: 16}}
    - {name: mac, class: intmac}
"""
GEMM = """problem:
  shape:
    name: gemm
    dimensions: [M, N, K]
    data_spaces:
    - {name: A, projection: [[[M]], [[K]]]}
    - {name: B, projection: [[[K]], [[N]]]}
    - {name: Z, projection: [[[M]], [[N]]], read_write: true}
  instance: {M: 8, N: 8, K: 8}
"""

CASES = {
    "depth not a number": (
        {"a.yaml": GOOD_ARCH.replace("depth: 1024", "depth: lots")},
        ["a.yaml", "architecture.subtree[0].local[1].attributes.depth", "expected the depth in rows"],
    ),
    "unknown v0.4 tag and bad fan-out": (
        {
            "a.yaml": "architecture:\n  nodes:\n  - !Container {name: s}\n  - !Component {name: D, class: DRAM}\n"
            "  - !Foo {name: x}\n  - !Container {name: PE, spatial: {meshX: -3}}\n"
            "  - !Component {name: mac, class: intmac}\n"
        },
        [
            "a.yaml:5",
            "architecture.nodes[2]",
            "unknown tag !Foo; expected !Container",
            "a.yaml:6",
            "architecture.nodes[3].spatial.meshX",
            "expected a positive integer",
        ],
    ),
    "tag on a list": (
        {"a.yaml": "architecture:\n  nodes:\n  - !Component [1, 2]\n"},
        ["a.yaml:3", "tag !Component is allowed only on a mapping"],
    ),
    "no compute": (
        {"a.yaml": GOOD_ARCH.replace("    - {name: mac, class: intmac}\n", "")},
        ["a.yaml", "architecture: no compute component"],
    ),
    "problem size missing": (
        {"a.yaml": GOOD_ARCH, "p.yaml": GEMM.replace("K: 8}", "Q: 8}")},
        ["p.yaml", "problem.instance.K", "expected the size of dimension K (a positive integer), got nothing"],
    ),
    "projection names no dimension": (
        {"a.yaml": GOOD_ARCH, "p.yaml": GEMM.replace("[[K]], [[N]]]", "[[K]], [[X]]]")},
        ["p.yaml", "problem.shape.data_spaces[1].projection[1][0]", "'X' is not a dimension of the problem"],
    ),
    "mapping factor and type": (
        {
            "a.yaml": GOOD_ARCH,
            "p.yaml": GEMM,
            "m.yaml": "mapping:\n- {target: buf, type: temporal, factors: M=8 X=3}\n- {target: buf, type: sideways}\n",
        },
        [
            "m.yaml:2",
            "mapping[0].factors",
            "expected DIM=N with DIM one of M, N, K",
            "m.yaml:3",
            "mapping[1].type",
            "expected temporal, spatial, bypass or datatype",
        ],
    ),
    "mapping factors do not multiply to the problem": (
        {
            "a.yaml": GOOD_ARCH,
            "p.yaml": GEMM,
            "m.yaml": "mapping:\n- {target: buf, type: temporal, factors: M=8 N=8 K=4}\n",
        },
        ["m.yaml", "mapping: the factors of K multiply to 4, the problem's K is 8"],
    ),
    "ERT energy not a number": (
        {
            "a.yaml": GOOD_ARCH,
            "e.yaml": "ERT:\n  tables:\n  - name: system.buf\n    actions:\n    - {name: read, energy: hot}\n",
        },
        ["e.yaml", "ERT.tables[0].actions[0].energy", "expected an energy in pJ >= 0, got 'hot'"],
    ),
    "no section": (
        {"a.yaml": "hello: 1\n"},
        ["a.yaml", "expected one of the keys architecture, problem, mapping, ERT, ART"],
    ),
    "bad YAML": ({"a.yaml": "architecture: [1,\n"}, ["a.yaml:", "invalid YAML"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_timeloop_exits_2_naming_file_key_and_expectation(case, tmp_path, capsys):
    files, expected = CASES[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code = main(["import", "timeloop", *(str(tmp_path / n) for n in files), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for part in expected:
        assert part in err, (part, err)


AF_CASES = {
    "unevaluable size": (
        DATA / "accelforge" / "tpu_v4i.yaml",
        ["tpu_v4i.yaml:", "arch.nodes[5].size", "expected a size in bits", "weight.bits_per_value if weight else 0"],
    ),
}


@pytest.mark.parametrize("case", sorted(AF_CASES))
def test_malformed_accelforge_exits_2(case, tmp_path, capsys):
    path, expected = AF_CASES[case]
    code = main(["import", "accelforge", str(path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    for part in expected:
        assert part in err, (part, err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workload:\n  rank_sizes: {M: 4}\n  einsums: ['Z[m] = A[m, k]']\n", "no size for rank K"),
        ("workload:\n  rank_sizes: {M: 4, K: -1}\n  einsums: ['Z[m] = A[m]']\n", "workload.rank_sizes.K"),
        ("workload:\n  rank_sizes: {M: 4}\n  einsums: ['Z m = A[m]']\n", "workload.einsums[0]"),
        (
            "workload:\n  rank_sizes: {M: 4, P: 4}\n  einsums: ['B[m] = A[m]', 'C[p] = B[M: p]']\n",
            "B is written by an Einsum with rank M",
        ),
        ("{% if x %}\nworkload: {}\n", "unsupported Jinja statement"),
        ("workload:\n  rank_sizes: {M: {{ nope }}}\n", "expected arithmetic of set names"),
    ],
)
def test_malformed_accelforge_workloads(text, expected, tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(text)
    code = main(["import", "accelforge", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and expected in err, err


# ----------------------------------------------------------------------------------------------- no traceback

_ARCH_FILES = [
    DATA / "timeloop" / "eyeriss_like_v03" / "arch.yaml",
    DATA / "timeloop" / "eyeriss_like_v04" / "arch.yaml",
    DATA / "timeloop" / "simple_output_stationary_v03" / "arch.yaml",
]
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(data, path, value):
    data = copy.deepcopy(data)
    if not path:
        return value
    node = data
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(_ARCH_FILES) - 1), pick=st.integers(0, 10**6), value=JUNK)
def test_any_corrupted_architecture_is_an_error_or_an_import(which, pick, value):
    data = read_tagged(_ARCH_FILES[which])["architecture"]
    paths = list(_paths(data))
    corrupted = _replace(data, paths[pick % len(paths)], value)
    try:
        import_arch(corrupted, "fuzz.yaml")
    except AttnscopeError as exc:
        assert "fuzz.yaml" in str(exc)


@settings(max_examples=150, deadline=None)
@given(pick=st.integers(0, 10**6), value=JUNK)
def test_any_corrupted_problem_is_an_error_or_an_import(pick, value):
    data = read_tagged(DATA / "timeloop" / "three_level_spatial_v04" / "input.yaml")["problem"]
    paths = list(_paths(data))
    try:
        import_problem(_replace(data, paths[pick % len(paths)], value), "fuzz.yaml", Converted())
    except AttnscopeError as exc:
        assert "fuzz.yaml" in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ABZmnkpe_[], :*=+-0123456789{}%|", max_size=40))
def test_any_einsum_string_is_an_error_or_an_import(text):
    data = {"rank_sizes": {"M": 4, "N": 4, "K": 4}, "einsums": [text]}
    try:
        import_workload(data, "fuzz.yaml", Converted())
    except AttnscopeError as exc:
        assert "fuzz.yaml" in str(exc)
    try:
        render_jinja(text, "fuzz.yaml")
    except AttnscopeError as exc:
        assert "fuzz.yaml" in str(exc)


@settings(max_examples=150, deadline=None)
@given(pick=st.integers(0, 10**6), value=JUNK)
def test_any_corrupted_accelforge_architecture_is_an_error_or_an_import(pick, value):
    from attnscope.interop.accelforge import import_arch as import_af_arch

    data = read_tagged(DATA / "accelforge" / "simple.yaml",
                       text=render_jinja((DATA / "accelforge" / "simple.yaml").read_text(), "af",
                                         {"GlobalBufferSize": 2**20}))["arch"]  # fmt: skip
    paths = list(_paths(data))
    try:
        import_af_arch(_replace(data, paths[pick % len(paths)], value), "fuzz.yaml", Converted())
    except AttnscopeError as exc:
        assert "fuzz.yaml" in str(exc)
