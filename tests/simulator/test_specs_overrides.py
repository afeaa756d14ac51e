"""with_overrides' fast path (numbers only) gives the very spec the full path builds, and leaves faults to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsum.errors import SpecError
from simulator.specs import ARCHITECTURES, _numbers_replaced, _rebuilt, load_arch, with_overrides

PRESETS = {name: load_arch(name) for name in ARCHITECTURES}


def _mostly(valid, invalid):
    """Nine draws in ten from ``valid``."""
    return st.integers(0, 9).flatmap(lambda k: invalid if k == 0 else valid)


BAD = st.one_of(st.none(), st.just(True), st.just("x"), st.integers(-2, 0), st.floats(1e17, 1e20))
LEVEL_VALUES = {
    "capacity_words": st.one_of(st.integers(4, 26).map(lambda e: 2**e), st.integers(1, 2**26)),
    "bandwidth_bytes_per_s": st.one_of(st.floats(1e9, 1e13), st.none()),
    "read_bandwidth_bytes_per_s": st.one_of(st.floats(1e9, 1e13), st.none()),
    "write_bandwidth_bytes_per_s": st.one_of(st.floats(1e9, 1e13), st.none()),
    "read_energy_pj": st.floats(0, 1e4),
    "write_energy_pj": st.floats(0, 1e4),
    "area_um2": st.one_of(st.floats(0, 1e8), st.integers(0, 10**8)),
    "leakage_w": st.floats(0, 10),
}


def _level_override(spec):
    """A number for one level field (the level by name or by index), nine in ten valid by the field's check."""
    names = [lv.name for lv in spec.levels]
    where = st.one_of(st.sampled_from(names), st.integers(0, len(names)).map(lambda i: f"[{i}]"))
    return st.tuples(where, st.sampled_from(sorted(LEVEL_VALUES))).flatmap(
        lambda t: _mostly(LEVEL_VALUES[t[1]], BAD).map(
            lambda v: (f"levels{t[0]}.{t[1]}" if t[0].startswith("[") else f"levels.{t[0]}.{t[1]}", v)
        )
    )


def _array_override(spec):
    names = [a.name for a in spec.arrays]
    keys = st.sampled_from(["rows", "cols", "pes", "instances"])
    return st.tuples(st.sampled_from(names), keys, _mostly(st.integers(1, 1024), BAD)).map(
        lambda t: (f"arrays.{t[0]}.{t[1]}", t[2])
    )


@st.composite
def overrides(draw):
    name = draw(st.sampled_from(sorted(PRESETS)))
    spec = PRESETS[name]
    items = draw(
        st.lists(
            st.one_of(
                _level_override(spec),
                _array_override(spec),
                st.tuples(st.just("clock_hz"), _mostly(st.floats(1e6, 1e11), st.floats(1e11, 1e13))),
            ),
            max_size=5,
        )
    )
    return name, dict(items)


def _outcome(fn, spec, changes):
    try:
        return fn(spec, changes)
    except SpecError as exc:
        return f"SpecError: {exc}"


@settings(max_examples=300, deadline=None)
@given(case=overrides())
def test_fast_path_equals_the_full_path(case):
    name, changes = case
    spec = PRESETS[name]
    full = _outcome(_rebuilt, spec, changes)
    fast = _numbers_replaced(spec, changes)
    if fast is not None:  # the fast path answers only where the full path builds a spec, and builds the same one
        assert fast == full
        assert fast.origin == full.origin
        assert [lv.given for lv in fast.levels] == [lv.given for lv in full.levels]
    assert _outcome(with_overrides, spec, changes) == full  # faults: the full path's message


def test_sweep_numbers_take_the_fast_path_and_rederive_the_buffer():
    spec = PRESETS["fusemax-cloud"]
    changes = {"arrays.pe_2d.rows": 64, "arrays.pe_2d.cols": 64, "arrays.pe_1d.pes": 64, "clock_hz": 1.2e9,
               "levels.global_buffer.capacity_words": 1 << 20, "levels.dram.bandwidth_bytes_per_s": 5e11}  # fmt: skip
    fast = _numbers_replaced(spec, changes)
    assert fast is not None and fast == _rebuilt(spec, changes)
    buffer, base = fast.level("global_buffer"), spec.level("global_buffer")
    assert buffer.read_energy_pj < base.read_energy_pj  # a smaller SRAM: the technology model's energy re-derived
    assert fast.level("pe_reg_2d").instances == 64 * 64


@pytest.mark.parametrize(
    "changes",
    [
        {"levels.global_buffer.capacity_words": None},  # null only for the outermost level
        {"levels.global_buffer.capacity_words": 16},  # narrower than its 256-word access width
        {"clock_hz": 1e15},  # outside the physical range
        {"arrays.pe_2d.pes": 4},  # a 2-D array has rows and cols
        {"levels.nowhere.capacity_words": 4},
        {"compat": "fusemax-artifact"},  # not a number: the full path
    ],
)
def test_what_the_fast_path_leaves_to_the_full_path(changes):
    assert _numbers_replaced(PRESETS["fusemax-cloud"], changes) is None
