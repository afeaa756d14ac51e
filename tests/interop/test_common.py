"""The converters' shared parts: safe arithmetic, the Jinja subset, tags, names, the result's files."""

from __future__ import annotations

import math

import pytest

from attnscope.interop.common import (
    Converted,
    Tagged,
    arithmetic,
    default_name,
    dump_yaml,
    ident,
    read_tagged,
    render_jinja,
    tag_of,
)
from einsum.errors import SpecError


@pytest.mark.parametrize(
    ("text", "value"),
    [("1024*1024*8", 8388608), ("1 / (8 * 614e9)", 1 / (8 * 614e9)), ("inf", math.inf), (3, 3), ("2**10", 1024),
     ("-4 + 1", -3), ("__import__('os')", None), ("x.y", None), ("max(1, 2)", None), ("1 < 2", None),
     (True, None), ("9**999", None), ("1/0", None)],
)  # fmt: skip
def test_arithmetic_evaluates_numbers_only(text, value):
    assert arithmetic(text) == value


def test_jinja_subset():
    text = '{% set N = N | default(4*2) %}\n{% set S = "inf" %}\nsize: {{N}}\nother: {{ S }}\nsum: {{N + 1}}\n'
    assert render_jinja(text, "t.yaml") == "\n\nsize: 8\nother: inf\nsum: 9\n"
    assert render_jinja(text, "t.yaml", {"N": 3}).splitlines()[2] == "size: 3"
    with pytest.raises(SpecError, match=r"t.yaml:1: unsupported Jinja statement"):
        render_jinja("{% for x in y %}\n", "t.yaml")
    with pytest.raises(SpecError, match=r"t.yaml:1: \{\{ M \}\}: expected arithmetic of set names"):
        render_jinja("a: {{ M }}\n", "t.yaml")


def test_tags_are_read_safely_and_written_back(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("nodes:\n- !Component {name: x}\n- !!python/object:os.system {}\n")
    with pytest.raises(SpecError, match=r"a.yaml:3:3: invalid YAML"):
        read_tagged(path)
    path.write_text("nodes:\n- !Component {name: x, n: 1}\n")
    node = read_tagged(path)["nodes"][0]
    assert tag_of(node) == "!Component" and node["n"] == 1
    assert dump_yaml({"nodes": [Tagged("!Memory", name="m")]}) == "nodes:\n- !Memory\n  name: m\n"


def test_names():
    assert [ident(n) for n in ("GlobalBuffer", "DRAM", "PEInputBuffer", "PE_column", "MACC")] == [
        "global_buffer", "dram", "pe_input_buffer", "pe_column", "macc"]  # fmt: skip
    assert default_name("x/eyeriss_like_v03/arch.yaml") == "eyeriss-like-v03"
    assert default_name("x/3levelspatial.arch.yaml") == "x"
    assert default_name("designs/simba.yaml") == "simba"


def test_converted_writes_and_names_write_faults(tmp_path):
    result = Converted(files={"a/b.yaml": {"k": 1}, "w.einsum": "input A[M]\n"})
    result.drop("x.y", "why")
    paths = result.write(tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b.yaml").read_text() == "k: 1\n"
    assert result.to_dict(paths)["unrepresented"] == [{"key": "x.y", "why": "why"}]
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match=r"--out .*file.*cannot write"):
        result.write(tmp_path / "file")
