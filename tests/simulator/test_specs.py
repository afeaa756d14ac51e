"""Architecture specs: presets, golden values from the FuseMax study, validation messages, overrides, flat views."""

import doctest
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import simulator.specs
from einsum.errors import RegistryError, SpecError
from simulator.specs import (
    ARCHITECTURES,
    COMPAT_SETTINGS,
    OPERATORS,
    Compat,
    load_arch,
    register_arch,
    spec_from_dict,
    with_overrides,
)

MiB, GiB = 2**20, 2**30
DELETE = object()


def _edit(data, path, value):
    """Set (or delete with DELETE) the entry at a dotted path with [i] indices, in place."""
    steps = [int(s) if s.isdigit() else s for s in re.findall(r"[^.\[\]]+", path)]
    for step in steps[:-1]:
        data = data[step]
    if value is DELETE:
        del data[steps[-1]]
    else:
        data[steps[-1]] = value


def _at(data, path):
    for step in path.split("."):
        data = next(x for x in data if x["name"] == step) if isinstance(data, list) else data[step]
    return data


def _write(tmp_path, data, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def _published(name):
    """A study preset with the FuseMax study's 45 nm figures given explicitly and no technology block, so that
    every energy and area is required as in any spec without one (validate/fusemax/accelergy-45nm.yaml)."""
    from validate.fusemax.study import study_preset

    data = study_preset(name, True).to_dict()
    del data["technology"]
    return spec_from_dict(data, f"{name}.yaml")


@pytest.fixture
def fusemax():
    return _published("fusemax-cloud")


# ------------------------------------------------------------------------------------------------ presets


def test_the_four_presets_are_registered():
    assert {"fusemax-cloud", "flat-cloud", "flat-edge", "tpu-v3-like"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_preset_loads_cites_and_round_trips(name):
    spec = load_arch(name)
    assert spec.name == name == ARCHITECTURES[name].stem
    assert len(spec.source) > 40
    assert ARCHITECTURES[name].read_text().startswith("#")  # a comment citing the source
    assert spec.compat == Compat()  # presets describe hardware; quirks are opt-in
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict(), sort_keys=False))) == spec
    assert {a.name for a in spec.arrays} == {"pe_2d", "pe_1d"}
    assert hash(spec) == hash(load_arch(name))


GOLDEN = [
    # (preset, what, expected) -- figures from fusemax-study.md §B and §C.5
    ("fusemax-cloud", lambda s: s.clock_hz, 940e6),
    ("fusemax-cloud", lambda s: s.word_bytes, 2),
    ("fusemax-cloud", lambda s: s.level("global_buffer").capacity_words, 8 * MiB),
    ("fusemax-cloud", lambda s: s.level("global_buffer").capacity_words * s.word_bytes, 16 * MiB),
    ("fusemax-cloud", lambda s: s.level("global_buffer").access_width_words, 256),
    ("fusemax-cloud", lambda s: s.level("global_buffer").read_energy_pj, 12512.760572),
    ("fusemax-cloud", lambda s: s.level("global_buffer").write_energy_pj, 15751.460572),
    ("fusemax-cloud", lambda s: s.level("global_buffer").area_um2, 84201374.52),
    ("fusemax-cloud", lambda s: s.level("dram").bandwidth_bytes_per_s, 400 * GiB),
    ("fusemax-cloud", lambda s: s.level("dram").read_energy_pj / s.level("dram").access_width_words, 62.4),
    ("fusemax-cloud", lambda s: s.level("dram").capacity_words, None),
    ("fusemax-cloud", lambda s: s.level("pe_reg_2d").instances, 65536),
    ("fusemax-cloud", lambda s: s.level("pe_reg_2d").capacity_words, 12),
    ("fusemax-cloud", lambda s: s.level("pe_reg_2d").read_energy_pj, 2.190435),
    ("fusemax-cloud", lambda s: s.level("pe_reg_1d").instances, 256),
    ("fusemax-cloud", lambda s: s.level("pe_reg_1d").write_energy_pj, 1.906455),
    ("fusemax-cloud", lambda s: s.level("reg_file_1d").capacity_words, 8192),
    ("fusemax-cloud", lambda s: s.staging_level, "reg_file_1d"),
    ("fusemax-cloud", lambda s: s.array("pe_2d").shape, (256, 256)),
    ("fusemax-cloud", lambda s: s.array("pe_1d").pe_count, 256),
    ("fusemax-cloud", lambda s: s.array("pe_2d").unit("mac").energy_pj, 17.1645),
    ("fusemax-cloud", lambda s: s.array("pe_2d").unit("max").energy_pj, 0.028036),
    ("fusemax-cloud", lambda s: s.array("pe_1d").unit("divide").energy_pj, 36.251153),
    ("fusemax-cloud", lambda s: s.array("pe_2d").op("sub").cycles + s.array("pe_2d").op("exp").cycles, 7),
    ("fusemax-cloud", lambda s: s.array("pe_1d").op_energy_pj("exp"), 6 * 17.1645),
    ("fusemax-cloud", lambda s: s.array("pe_2d").op("min").weights, (("max", 1.0),)),
    ("fusemax-cloud", lambda s: [u.name for u in s.array("pe_1d").units], ["mac", "add", "max", "divide"]),
    ("flat-cloud", lambda s: s.level("global_buffer").capacity_words * s.word_bytes, 32 * MiB),
    ("flat-cloud", lambda s: s.level("global_buffer").read_energy_pj, 23854.664592),
    ("flat-cloud", lambda s: s.level("global_buffer").write_energy_pj, 27097.564592),
    ("flat-cloud", lambda s: s.level("pe_reg_2d").read_energy_pj, 2.182395),
    ("flat-cloud", lambda s: s.array("pe_1d").unit("exp").energy_pj, 94.6475),
    ("flat-cloud", lambda s: s.array("pe_1d").op("exp").cycles, 1),
    ("flat-cloud", lambda s: s.array("pe_1d").pipelined, True),
    # the study's FLAT 2-D array: no max or exp (softmax on the 1-D array); neg (a subtraction from zero) added on
    # its adder for the backward cascades
    ("flat-cloud", lambda s: sorted(o.name for o in s.array("pe_2d").ops), ["add", "mac", "mul", "neg", "sub"]),
    ("flat-edge", lambda s: s.array("pe_2d").shape + s.array("pe_1d").shape, (32, 32, 32)),
    ("flat-edge", lambda s: s.level("global_buffer").capacity_words * s.word_bytes, 512 * 2**10),
    ("flat-edge", lambda s: s.level("dram").bandwidth_bytes_per_s, 50 * GiB),
    ("tpu-v3-like", lambda s: (s.array("pe_2d").shape, s.array("pe_2d").instances), ((128, 128), 2)),
    ("tpu-v3-like", lambda s: s.level("mxu_reg").instances, 2 * 128 * 128),
    ("tpu-v3-like", lambda s: s.level("vmem").capacity_words * s.word_bytes, 16 * MiB),
    # 2 cores x (2 x 128 x 128 MACs) x 2 FLOP x clock ~ 123 bf16 TFLOPS per chip (Cloud TPU v3 docs)
    ("tpu-v3-like", lambda s: round(2 * s.array("pe_2d").pe_count * 2 * s.clock_hz / 1e12), 123),
]


@pytest.mark.parametrize(("preset", "what", "expected"), GOLDEN)
def test_preset_values_match_the_study(preset, what, expected):
    spec = _published(preset) if preset in ("fusemax-cloud", "flat-cloud") else load_arch(preset)
    assert what(spec) == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize(
    ("preset", "area_um2"),
    [("fusemax-cloud", 1.3030e9), ("flat-cloud", 1.3918e9)],  # iso-area figures of fusemax-study.md §B
)
def test_area_with_the_artifact_rule_matches_the_study(preset, area_um2):
    spec = with_overrides(_published(preset), {"compat": "fusemax-artifact"})
    assert spec.area_um2() == pytest.approx(area_um2, rel=1e-4)
    assert _published(preset).area_um2() > spec.area_um2()  # the corrected rule counts the adders


def test_fusemax_2d_array_area_is_the_pareto_value(fusemax):
    array, reg = fusemax.array("pe_2d"), fusemax.level("pe_reg_2d")
    per_pe = reg.area_um2 + array.unit("mac").area_um2 + array.unit("max").area_um2
    assert array.pe_count * per_pe == pytest.approx(1_207_950_953.68, abs=0.01)  # §C.5, without the 256 dummies


def test_path_from_dram_to_each_array(fusemax):
    assert [lv.name for lv in fusemax.path("pe_2d")] == ["dram", "global_buffer", "reg_file_1d", "pe_reg_2d"]
    assert [lv.name for lv in fusemax.path("pe_1d")] == ["dram", "global_buffer", "pe_reg_1d"]


def test_lookups_name_what_exists(fusemax):
    with pytest.raises(SpecError, match="does not support operator 'exp'; known: mac, mul, add, sub"):
        load_arch("flat-cloud").array("pe_2d").op("exp")
    with pytest.raises(SpecError, match="no storage level 'l2'; known: dram, global_buffer"):
        fusemax.level("l2")


def test_operators_cover_every_op_kind_einsum_counts():
    analysis = pytest.importorskip("einsum.analysis")
    syntax = pytest.importorskip("einsum.syntax")
    kinds = {*analysis.OP_KINDS.values(), *analysis.REDUCE_KINDS.values(), *syntax.UNARY_FUNCS, *syntax.BINARY_FUNCS}
    assert kinds | {"neg", "select"} <= set(OPERATORS)


# ------------------------------------------------------------------------------------------------ flat view


def test_flat_view_holds_plain_read_only_arrays(fusemax):
    f = fusemax.flat
    assert f is fusemax.flat  # computed once
    assert f.level_names == ("dram", "global_buffer", "reg_file_1d", "pe_reg_2d", "pe_reg_1d")
    assert f.level_parent.tolist() == [-1, 0, 1, 2, 1]
    assert f.level_capacity_words.tolist() == [math.inf, 8 * MiB, 8192, 12, 32]
    assert f.level_instances.tolist() == [1, 1, 1, 65536, 256]
    assert f.level_bandwidth_words_per_cycle[0] == pytest.approx(400 * GiB / 2 / 940e6)
    assert np.isinf(f.level_bandwidth_words_per_cycle[1:]).all()
    assert f.level_read_energy_pj_per_word[1] == pytest.approx(12512.760572 / 256)
    assert f.level_write_energy_pj_per_word[0] == pytest.approx(62.4)
    assert f.array_names == ("pe_2d", "pe_1d")
    assert f.array_pe_count.tolist() == [65536, 256]
    assert (f.array_rows.tolist(), f.array_cols.tolist()) == ([256, 1], [256, 256])
    assert f.array_fed_by.tolist() == [3, 4]
    assert f.op_names == OPERATORS
    assert f.unit_names == ("add", "divide", "mac", "max")
    exp, div, mac = OPERATORS.index("exp"), OPERATORS.index("div"), f.unit_names.index("mac")
    assert f.op_unit_weights[0, exp, mac] == 6 and f.op_cycles[0, exp] == 6
    assert f.op_energy_pj[1, exp] == pytest.approx(6 * 17.1645)
    assert not f.op_supported[0, div] and np.isinf(f.op_cycles[0, div]) and np.isinf(f.op_energy_pj[0, div])
    for name in ("level_capacity_words", "level_instances", "op_cycles", "op_energy_pj", "array_pe_count"):
        arr = getattr(f, name)
        assert isinstance(arr, np.ndarray) and arr.dtype in (np.float64, np.int64) and not arr.flags.writeable


def test_flat_view_charges_energies_under_the_compat_setting():
    spec = with_overrides(_published("flat-cloud"), {"compat": "fusemax-artifact-cascade"})
    f, exp = spec.flat, OPERATORS.index("exp")
    assert f.op_energy_pj[1, exp] == 0.0 and f.unit_energy_pj[1, f.unit_names.index("exp")] == 0.0
    assert f.level_read_energy_pj_per_word[f.level_names.index("reg_file_1d")] == 0.0
    assert _published("flat-cloud").flat.op_energy_pj[1, exp] == pytest.approx(94.6475)
    assert spec.array("pe_1d").op_energy_pj("exp") == pytest.approx(94.6475)  # the spec itself is unchanged


# ------------------------------------------------------------------------------------------------ compat


def test_compat_settings_and_labels(fusemax):
    assert COMPAT_SETTINGS["corrected"] == Compat() and Compat().label == "corrected"
    artifact = with_overrides(fusemax, {"compat": "fusemax-artifact"}).compat
    assert artifact.label == "fusemax-artifact" and not artifact.arch_stall
    assert artifact.reg_file_energy_one_instance and not artifact.drop_exp_energy
    mixed = with_overrides(fusemax, {"compat": {"base": "fusemax-artifact", "arch_stall": True}}).compat
    assert mixed == COMPAT_SETTINGS["fusemax-artifact-arch"]
    custom = with_overrides(fusemax, {"compat.drop_exp_energy": True}).compat
    assert custom.label == "drop_exp_energy=True"


def test_every_compat_flag_is_documented():
    source = Path(simulator.specs.__file__).read_text()
    for name in Compat().to_dict():
        assert re.search(rf"    {name}: .*\n    \"\"\".+\"\"\"", source), name


# ------------------------------------------------------------------------------------------------ validation

BAD_SPECS = [
    # (dotted path to edit, new value or DELETE, fragment of the message)
    ("clock_mhz", 940, "bad.yaml: clock_mhz: unknown key; allowed keys: name, source, clock_hz, word_bytes"),
    ("levels[1].capcity_words", 5, "levels[1].capcity_words: unknown key; allowed keys: name, parent, capacity_"),
    ("clock_hz", "fast", "bad.yaml: clock_hz: expected a number in [1e+06, 1e+11] Hz (1 MHz to 100 GHz), got 'fast'"),
    ("clock_hz", 0, "clock_hz: expected a number in [1e+06, 1e+11] Hz (1 MHz to 100 GHz), got 0"),
    ("levels[1].capacity_words", -5, "bad.yaml: levels[1].capacity_words: expected a positive integer, got -5"),
    ("levels[1].capacity_words", 1.5, "levels[1].capacity_words: expected a positive integer, got 1.5"),
    ("levels[1].capacity_words", None, "levels[1].capacity_words: null (unbounded) is allowed only for the outer"),
    ("levels[1].read_energy_pj", -1.0, "levels[1].read_energy_pj: expected a number >= 0, got -1.0"),
    ("word_bytes", DELETE, "bad.yaml: word_bytes: missing; expected a positive integer"),
    ("source", "  ", "source: expected a non-empty string, got '  ' (str)"),
    ("levels", [], "levels: expected a non-empty list of levels, got []"),
    ("levels[2].name", "global_buffer", "levels[2].name: duplicate level name 'global_buffer'"),
    ("levels[1].name", "Global Buffer", "levels[1].name: expected a lower-case identifier like global_buffer"),
    ("levels[1].parent", "pe_reg_2d", "levels[1].parent: must name a level listed before this one: dram"),
    ("levels[0].parent", "dram", "levels[0].parent: the outermost level has no parent"),
    ("levels[3].instances", 65536, "levels[3].instances: give either instances or per_pe_of, not both"),
    ("levels[3].per_pe_of", "pe_3d", "levels[3].per_pe_of: no compute array 'pe_3d'; arrays: pe_2d, pe_1d"),
    ("levels[4].per_pe_of", "pe_2d", "levels[4].per_pe_of: pe_reg_1d is not on the path to pe_2d's fed_by"),
    ("levels[3].access_width_words", 16, "levels[3].access_width_words: 16 is larger than capacity_words (12)"),
    ("arrays.pe_2d.rows", DELETE, "arrays.pe_2d.rows: missing; expected a positive integer"),
    ("arrays.pe_2d.rows", True, "arrays.pe_2d.rows: expected a positive integer, got True (bool)"),
    ("arrays.pe_1d.rows", 1, "arrays.pe_1d.rows: not used by a 1d array, which takes pes"),
    ("arrays.pe_2d.kind", "3d", "arrays.pe_2d.kind: expected 2d or 1d, got '3d' (str)"),
    ("arrays.pe_2d.fed_by", "pe_reg", "arrays.pe_2d.fed_by: no storage level 'pe_reg'; levels: dram, global_buffer"),
    ("arrays.pe_2d.units.mac.energy_pj", DELETE, "arrays.pe_2d.units.mac.energy_pj: missing; expected a number"),
    (
        "arrays.pe_1d.ops.exp",
        {"exp": 1},
        "arrays.pe_1d.ops.exp.exp: no energy entry: unit 'exp' is not in this array's units (add, divide, mac, max)",
    ),
    (
        "arrays.pe_1d.ops.exponentiatial",
        {"mac": 6},
        "arrays.pe_1d.ops.exponentiatial: unknown operator; allowed: mac, mul, add, sub, neg, div, max, min",
    ),
    ("arrays.pe_2d.ops.mac", {"mac": 0}, "arrays.pe_2d.ops.mac.mac: expected a positive number, got 0"),
    ("arrays.pe_2d.ops.mac", {"cycles": 1}, "arrays.pe_2d.ops.mac: needs at least one functional unit"),
    ("arrays.pe_2d.ops.mac", {"mac": 1, "cycles": -1}, "arrays.pe_2d.ops.mac.cycles: expected a positive number"),
    ("arrays", {}, "arrays: expected a non-empty mapping of arrays, got {}"),
    ("staging_level", "staging", "staging_level: no storage level 'staging'; levels: dram, global_buffer"),
    ("compat", "fusemax", "compat: unknown setting 'fusemax' (str); allowed: corrected, fusemax-artifact,"),
    ("compat", {"arch_stall": "yes"}, "compat.arch_stall: expected"),
    ("compat", {"drop_exp": True}, "compat.drop_exp: unknown key; allowed keys: base, reg_file_energy_one_instance"),
]


def _check_lines(message, file):
    """Every problem of message that names a line of file: that line holds the key at fault. Returns the message
    without the line numbers (``bad.yaml:12: key: ...`` -> ``bad.yaml: key: ...``)."""
    lines = file.read_text().splitlines()
    for number, key in re.findall(rf"{re.escape(file.name)}:(\d+): ([^:]+): ", message):
        last = re.split(r"[.\[]", key)[-1]
        assert re.match(rf"\s*(- )?{re.escape(last)}:", lines[int(number) - 1]), (key, lines[int(number) - 1])
    return re.sub(rf"({re.escape(file.name)}):\d+: ", r"\1: ", message)


@pytest.mark.parametrize(("path", "value", "fragment"), BAD_SPECS, ids=[f"{p}={v!r}" for p, v, _ in BAD_SPECS])
def test_bad_spec_is_reported_with_file_line_key_and_what_is_allowed(tmp_path, fusemax, path, value, fragment):
    data = fusemax.to_dict()
    _edit(data, path, value)
    file = _write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_arch(file)
    message = str(info.value)
    assert fragment in _check_lines(message, file)
    if "missing" not in fragment:  # a key that is there is named with its line
        assert re.search(r"bad\.yaml:\d+: ", message), message


def test_a_problem_in_a_yaml_file_is_reported_with_its_line(tmp_path, fusemax):
    text = yaml.safe_dump(fusemax.to_dict(), sort_keys=False).replace("word_bytes: 2\n", "word_bytes: two\n")
    text = text.replace("  write_energy_pj: 249.6\n", "  write_energy_pj: -1\n", 1)  # levels[0], dram
    word, energy = (text.splitlines().index(line) + 1 for line in ("word_bytes: two", "  write_energy_pj: -1"))
    with pytest.raises(SpecError) as info:
        load_arch(_write(tmp_path, text))
    origin = tmp_path / "bad.yaml"
    assert str(info.value).splitlines() == [
        f"{origin}: 2 problems in the architecture spec:",
        f"{origin}:{word}: word_bytes: expected a positive integer, got 'two' (str)",
        f"{origin}:{energy}: levels[0].write_energy_pj: expected a number >= 0, got -1",
    ]


def test_a_spec_built_in_python_has_no_lines(fusemax):
    with pytest.raises(SpecError) as info:
        with_overrides(fusemax, {"word_bytes": 0})
    assert str(info.value) == "fusemax-cloud.yaml + overrides: word_bytes: expected a positive integer, got 0"


def test_every_problem_is_collected(tmp_path, fusemax):
    data = fusemax.to_dict()
    for path, value, _ in [BAD_SPECS[0], BAD_SPECS[4], BAD_SPECS[19], BAD_SPECS[25]]:
        _edit(data, path, value)
    file = _write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_arch(file)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}: 4 problems in the architecture spec:")
    for _, _, fragment in [BAD_SPECS[0], BAD_SPECS[4], BAD_SPECS[19], BAD_SPECS[25]]:
        assert fragment in _check_lines(message, file)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\nlevels: [\n  - a\nsource: y\n", "bad.yaml:3:3: invalid YAML"),
        ("name: x\nsource: y\nname: z\n", "bad.yaml:3:1: invalid YAML: duplicate key 'name' (first given on line 1)"),
        ("name: x\nsource: \x07\n", "bad.yaml:2: invalid YAML: control characters are not allowed"),
        ("- name: x\n", "bad.yaml: expected a mapping with keys name, source, clock_hz"),
        ("", "bad.yaml: expected a mapping with keys name, source"),
    ],
)
def test_yaml_problems_name_file_and_line(tmp_path, text, fragment):
    with pytest.raises(SpecError) as info:
        load_arch(_write(tmp_path, text))
    assert fragment in str(info.value)


def test_exponent_notation_reads_as_a_number(tmp_path, fusemax):
    text = yaml.safe_dump(fusemax.to_dict(), sort_keys=False).replace("clock_hz: 940000000.0", "clock_hz: 1e9")
    assert "clock_hz: 1e9" in text
    assert load_arch(_write(tmp_path, text, "fast.yaml")).clock_hz == 1e9


# ------------------------------------------------------------------------------------------------ registry


def test_registry_miss_lists_the_names():
    with pytest.raises(RegistryError, match="unknown architecture 'fusemax'; registered: flat-cloud, flat-edge, "):
        load_arch("fusemax")


def test_register_and_load_by_name_and_path(tmp_path, fusemax):
    path = _write(tmp_path, fusemax.to_dict() | {"name": "mine"}, "mine.yaml")
    register_arch("test-mine", path)
    try:
        assert load_arch("test-mine").name == "mine"
        assert load_arch(path) == load_arch(str(path)) == load_arch("test-mine")
        with pytest.raises(RegistryError, match="'test-mine' is already registered"):
            register_arch("test-mine", path)
    finally:
        simulator.specs._ARCHITECTURES.pop("test-mine")
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read"):
        load_arch(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="no such file"):
        register_arch("test-nothing", tmp_path / "nothing.yaml")


# ------------------------------------------------------------------------------------------------ overrides

OVERRIDES = [
    # (overrides, what, expected)
    ({"arrays.pe_2d.rows": 128}, lambda s: (s.array("pe_2d").pe_count, s.level("pe_reg_2d").instances), (32768,) * 2),
    ({"arrays.pe_1d.pes": 512}, lambda s: s.flat.level_instances[-1], 512),
    ({"levels.global_buffer.capacity_words": 4 * MiB}, lambda s: s.level("global_buffer").capacity_words, 4 * MiB),
    ({"levels[1].capacity_words": 4 * MiB}, lambda s: s.flat.level_capacity_words[1], 4 * MiB),
    ({"levels.dram.bandwidth_bytes_per_s": 800 * GiB}, lambda s: s.level("dram").bandwidth_bytes_per_s, 800 * GiB),
    ({"clock_hz": 1e9}, lambda s: s.flat.level_bandwidth_words_per_cycle[0], 400 * GiB / 2 / 1e9),
    ({"arrays.pe_2d.ops.exp.mac": 8}, lambda s: s.array("pe_2d").op("exp").cycles, 8),  # cycles re-derived
    ({"arrays.pe_2d.ops.exp": {"mac": 6, "cycles": 2}}, lambda s: s.array("pe_2d").op("exp").cycles, 2),
    ({"arrays.pe_1d.pipelined": True}, lambda s: bool(s.flat.array_pipelined[1]), True),
    ({"compat.sum_op_cycles": True}, lambda s: s.compat.sum_op_cycles, True),
    ({"staging_level": None}, lambda s: s.staging_level, None),
]


@pytest.mark.parametrize(("overrides", "what", "expected"), OVERRIDES)
def test_overrides_change_what_they_name(fusemax, overrides, what, expected):
    spec = with_overrides(fusemax, overrides)
    assert what(spec) == (pytest.approx(expected) if isinstance(expected, float) else expected)
    assert (spec.name, spec.source, spec.level("global_buffer").area_um2) == (fusemax.name, fusemax.source, 84201374.52)
    assert fusemax == _published("fusemax-cloud")  # the original is untouched


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            {"levels.global_buffer.capacity_words": 0},
            "fusemax-cloud.yaml + overrides: levels[1].capacity_words: expected a positive integer, got 0",
        ),
        ({"arrays.pe_2d.rows": 2.5}, "arrays.pe_2d.rows: expected a positive integer, got 2.5"),
        ({"arrays.pe_2d.row": 128}, "arrays.pe_2d.row: unknown key; allowed keys: kind, rows, cols, pes"),
        (
            {"levels.glbal_buffer.area_um2": 1.0},
            "override 'levels.glbal_buffer.area_um2': no 'glbal_buffer' in "
            "levels; it has indices 0..4 or names dram, global_buffer, reg_file_1d, pe_reg_2d, pe_reg_1d",
        ),
        ({"levels[9].area_um2": 1.0}, "no 9 in levels; it has indices 0..4"),
        ({"arrays.pe_3d.rows": 1}, "no 'pe_3d' in arrays; it has keys pe_2d, pe_1d"),
        ({"clock_hz.value": 1}, "no 'value' in clock_hz; it has no entries: it is the value 940000000.0"),
        ({"levels..name": "x"}, "override 'levels..name': not a dotted path"),
    ],
)
def test_bad_overrides_are_reported(fusemax, overrides, fragment):
    with pytest.raises(SpecError) as info:
        with_overrides(fusemax, overrides)
    assert fragment in str(info.value)


_VALID_OVERRIDES = st.one_of(
    st.tuples(st.just("arrays.pe_2d.rows"), st.integers(1, 1024)),
    st.tuples(st.just("arrays.pe_2d.cols"), st.integers(1, 1024)),
    st.tuples(st.just("arrays.pe_1d.pes"), st.integers(1, 4096)),
    st.tuples(st.just("levels.global_buffer.capacity_words"), st.integers(256, 2**40)),
    st.tuples(st.just("levels.pe_reg_2d.capacity_words"), st.integers(1, 4096)),
    st.tuples(st.just("levels.dram.bandwidth_bytes_per_s"), st.floats(1e6, 1e15)),
    st.tuples(st.just("levels.global_buffer.read_energy_pj"), st.floats(0, 1e6)),
    st.tuples(st.just("arrays.pe_1d.units.mac.energy_pj"), st.floats(0, 1e3)),
    st.tuples(st.just("arrays.pe_2d.ops.exp.mac"), st.integers(1, 16)),
    st.tuples(st.just("clock_hz"), st.floats(1e6, 1e10)),
    st.tuples(st.just("compat.arch_stall"), st.booleans()),
    st.tuples(st.just("compat.reg_file_energy_one_instance"), st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_VALID_OVERRIDES, min_size=1, max_size=4, unique_by=lambda kv: kv[0]))
def test_valid_overrides_round_trip(overrides):
    base = _published("fusemax-cloud")
    spec = with_overrides(base, dict(overrides))
    data = spec.to_dict()
    for path, value in overrides:
        assert _at(data, path) == value
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(data, sort_keys=False))) == spec
    assert with_overrides(spec, {path: _at(base.to_dict(), path) for path, _ in overrides}) == base


def test_docstring_examples_run():
    assert doctest.testmod(simulator.specs).failed == 0
