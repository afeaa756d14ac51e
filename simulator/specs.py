"""Hardware as data: architecture specs read from YAML into validated, frozen dataclasses.

A spec lists its storage levels from the outermost (DRAM) to the innermost (PE register files), its compute
arrays with the functional units of their PEs and the operators those support, and a compatibility setting that
switches the FuseMax artifact's modelling quirks on (default: all off, the corrected model). Validation collects
every problem and raises one :class:`~einsum.errors.SpecError` naming the file, line and dotted key of each. The cost
kernels never see these objects: :attr:`ArchSpec.flat` lowers a spec to numpy arrays once.

Assumptions: capacities, bandwidths and areas are per instance; a read or write energy is per access of
``access_width_words`` words and is charged pro rata per word; an operator's cycles are the sum of its unit
weights unless it gives ``cycles``; a null bandwidth is unbounded (the FuseMax study models none on chip); the
optional ``read_bandwidth_bytes_per_s``, ``write_bandwidth_bytes_per_s`` and ``ports`` of a level and
``fill_drain_cycles`` of an array are further limits the cascade cost model honours (:mod:`simulator.cost`).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from einsum.errors import RegistryError, SpecError
from einsum.yamlio import REQUIRED, Problems, finite, join, read_yaml, show
from simulator import technology as tech_model
from simulator.technology import Technology

OPERATORS: tuple[str, ...] = (
    *("mac", "mul", "add", "sub", "neg", "div", "max", "min", "select"),
    *("exp", "log", "sqrt", "sigmoid", "softplus", "relu"),
)
"""Operators a PE can support: the op kinds einsum.analysis counts, plus ``mac`` (a ``mul`` whose product feeds a
``sum`` reduction, which the cost model may charge as one fused action, as the FuseMax study does)."""
_COSTS = ("read_energy_pj", "write_energy_pj", "area_um2", "leakage_w")
"""A level's figures that the technology model derives where the YAML does not give them."""
_UNIT_COSTS = ("energy_pj", "area_um2", "leakage_w")
"""A functional unit's figures that the technology model derives where the YAML does not give them."""


@dataclass(frozen=True)
class Compat:
    """Switches for the FuseMax artifact's modelling quirks (fusemax-study.md §F); all off = corrected model."""

    reg_file_energy_one_instance: bool = False
    """Charge PE register-file accesses of a single PE, as the artifact did (§C.5, §F.1)."""
    drop_exp_energy: bool = False
    """Exp-unit actions cost 0 pJ (+Cascade's misspelled `exponentiatial` energy key, §F.2)."""
    drop_staging_energy: bool = False
    """Staging-level accesses cost 0 pJ (the artifact charges reg_file_1d only on the FuseMax arch, §F.2)."""
    exclude_adder_area: bool = False
    """Leave adders out of the area ("accounted for as part of the mac": collect_area, §C.5)."""
    arch_stall: bool = False
    """Add "+Architecture"'s stall of (2-D array columns) x (latency of the local-max Einsum) (§C.1, §F.4)."""
    sum_op_cycles: bool = False
    """Charge an element the sum of its ops' cycles on a pipelined array (§B, §F.3: FuseMax exp = 7 cycles)."""

    @property
    def label(self) -> str:
        """The name of the setting equal to these flags, else the flags that differ from the corrected model."""
        for name, setting in COMPAT_SETTINGS.items():
            if setting == self:
                return name
        return ", ".join(
            f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) != f.default
        )

    def to_dict(self) -> dict[str, Any]:
        """Every flag, as YAML would spell it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_ARTIFACT = {"reg_file_energy_one_instance": True, "exclude_adder_area": True}
COMPAT_SETTINGS: Mapping[str, Compat] = MappingProxyType(
    {
        "corrected": Compat(),
        "fusemax-artifact": Compat(**_ARTIFACT, sum_op_cycles=True),
        "fusemax-artifact-arch": Compat(**_ARTIFACT, arch_stall=True, sum_op_cycles=True),
        "fusemax-artifact-cascade": Compat(
            **_ARTIFACT, drop_exp_energy=True, drop_staging_energy=True, sum_op_cycles=True
        ),
        "fusemax-artifact-flat": Compat(**_ARTIFACT, drop_staging_energy=True),
        "fusemax-artifact-unfused": Compat(**_ARTIFACT, drop_staging_energy=True),
    }
)
"""Named compatibility settings: the corrected model and the artifact's quirks for each of its five configs."""


@dataclass(frozen=True)
class StorageLevel:
    """One level of the storage hierarchy; capacity, bandwidth and area are per instance."""

    name: str  # identifier, unique within the spec
    parent: str | None  # the next level outwards; None for the outermost level
    capacity_words: int | None  # words per instance; None = unbounded (outermost level only)
    instances: int  # copies of the level (one per PE for register files)
    per_pe_of: str | None  # array whose every PE holds one instance (instances derived from it), else None
    access_width_words: int  # words per read or write access (a 4096-bit row of 2-byte words = 256)
    bandwidth_bytes_per_s: float | None  # bytes/s per instance; None = unbounded
    read_energy_pj: float  # pJ per read access of access_width_words words
    write_energy_pj: float  # pJ per write access (fill or update) of access_width_words words
    area_um2: float  # um^2 per instance
    read_bandwidth_bytes_per_s: float | None = None  # bytes/s read out per instance; None = only the total limits
    write_bandwidth_bytes_per_s: float | None = None  # bytes/s written in (fills + updates); None = as above
    ports: int | None = None  # accesses (of access_width_words) per cycle per instance; None = unlimited
    banks: int | None = None  # SRAM banks per instance, for the technology model; None = 1
    leakage_w: float = 0.0  # W per instance (from the technology model, or given)
    given: tuple[str, ...] = _COSTS  # which of _COSTS the YAML gave; the others came from the technology model

    def to_dict(self, resolved: bool = False) -> dict[str, Any]:
        """The level as YAML would spell it (instances left out where per_pe_of derives them; of the energies,
        leakage and area only those the YAML gave, so that a changed capacity re-derives the others; all of them
        with ``resolved``)."""
        out: dict[str, Any] = {"name": self.name}
        if self.parent is not None:
            out["parent"] = self.parent
        out["capacity_words"] = self.capacity_words
        if self.per_pe_of is None:
            out["instances"] = self.instances
        else:
            out["per_pe_of"] = self.per_pe_of
        keys = ("access_width_words", "bandwidth_bytes_per_s", "read_energy_pj", "write_energy_pj", "area_um2")
        out |= {k: getattr(self, k) for k in keys if k in self.given or k not in _COSTS or resolved}
        out |= {"leakage_w": self.leakage_w} if "leakage_w" in self.given or resolved else {}
        return out | {k: v for k in (*_LIMIT_KEYS, "banks") if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class FunctionalUnit:
    """A functional unit inside every PE of an array."""

    name: str  # identifier (mac, add, max, exp, divide, ...)
    energy_pj: float  # pJ per action
    area_um2: float  # um^2 per PE
    leakage_w: float = 0.0  # W per PE (from the technology model, or given)
    given: tuple[str, ...] = _UNIT_COSTS  # which of _UNIT_COSTS the YAML gave; the others came from the model

    def to_dict(self, resolved: bool = False) -> dict[str, float]:
        """The unit as YAML would spell it: the figures the YAML gave (the technology model derives the rest);
        all of them with ``resolved``."""
        return {k: getattr(self, k) for k in _UNIT_COSTS if k in self.given or resolved}


@dataclass(frozen=True)
class Operator:
    """An operator a PE supports, done as a weighted combination of its functional units."""

    name: str  # one of OPERATORS
    weights: tuple[tuple[str, float], ...]  # (unit, actions per op), e.g. exp = (("mac", 6.0),)
    cycles: float  # PE cycles per op (default: the sum of the weights)

    def to_dict(self) -> dict[str, float]:
        """The weights, plus cycles where they differ from the weights' sum (so a weight override re-derives them)."""
        derived = self.cycles == sum(w for _, w in self.weights)
        return dict(self.weights) | ({} if derived else {"cycles": self.cycles})


@dataclass(frozen=True)
class ComputeArray:
    """A 2-D or 1-D array of identical PEs."""

    name: str  # identifier, unique within the spec (the presets use pe_2d and pe_1d)
    kind: str  # "2d" or "1d"
    shape: tuple[int, ...]  # PEs per dimension: (rows, cols) for 2d, (pes,) for 1d
    instances: int  # copies of the array working on separate tiles (TPU v3: 2 MXUs per core)
    fed_by: str  # innermost storage level whose words the PEs consume
    pipelined: bool  # True: a PE finishes one Einsum element per cycle whatever its ops; else cycles add up
    units: tuple[FunctionalUnit, ...]  # functional units in every PE
    ops: tuple[Operator, ...]  # operators the PEs support
    fill_drain_cycles: int = 0  # pipeline fill + drain per tile (systolic: rows + cols - 2); 0 = tiles stream

    @property
    def pe_count(self) -> int:
        """PEs in all instances of the array."""
        return self.instances * math.prod(self.shape)

    def unit(self, name: str) -> FunctionalUnit:
        """The functional unit called name."""
        return _named(self.units, name, f"array {self.name} has no unit")

    def op(self, name: str) -> Operator:
        """The operator called name; a miss lists the operators this array supports."""
        return _named(self.ops, name, f"array {self.name} does not support operator")

    def op_energy_pj(self, name: str) -> float:
        """pJ per op: the sum over its units of weight x unit energy (before any compat setting)."""
        return sum(w * self.unit(u).energy_pj for u, w in self.op(name).weights)

    def to_dict(self, resolved: bool = False) -> dict[str, Any]:
        """The array as YAML would spell it (without its name, which is its key; units as in FunctionalUnit)."""
        dims = dict(zip(("rows", "cols") if self.kind == "2d" else ("pes",), self.shape, strict=True))
        return {
            "kind": self.kind,
            **dims,
            "instances": self.instances,
            "fed_by": self.fed_by,
            "pipelined": self.pipelined,
            "units": {u.name: u.to_dict(resolved) for u in self.units},
            "ops": {o.name: o.to_dict() for o in self.ops},
        } | ({"fill_drain_cycles": self.fill_drain_cycles} if self.fill_drain_cycles else {})


@dataclass(frozen=True, eq=False)
class FlatArch:
    """A spec lowered to read-only numpy arrays for the cost kernels (L levels, A arrays, O ops, U units).

    Energies are as charged under the spec's compat setting (exp and staging energies may be 0); the
    register-file instance quirk is left to the cost model, which knows the access counts.
    """

    clock_hz: float  # Hz
    word_bytes: int  # bytes per word
    level_names: tuple[str, ...]  # L names, outermost first
    level_parent: np.ndarray  # int64[L], index of the next level outwards, -1 for the outermost
    level_capacity_words: np.ndarray  # float64[L], words per instance, inf = unbounded
    level_instances: np.ndarray  # int64[L], copies
    level_bandwidth_words_per_cycle: np.ndarray  # float64[L], words/cycle per instance, inf = unbounded
    level_access_width_words: np.ndarray  # int64[L], words per access
    level_read_energy_pj_per_word: np.ndarray  # float64[L], pJ per word read
    level_write_energy_pj_per_word: np.ndarray  # float64[L], pJ per word written
    level_area_um2: np.ndarray  # float64[L], um^2 per instance
    array_names: tuple[str, ...]  # A names
    array_rows: np.ndarray  # int64[A], PE rows (1 for a 1-D array)
    array_cols: np.ndarray  # int64[A], PE columns (the PE count of a 1-D array)
    array_instances: np.ndarray  # int64[A], copies of each array
    array_pe_count: np.ndarray  # int64[A], instances x rows x cols
    array_fed_by: np.ndarray  # int64[A], index of the level feeding the PEs
    array_pipelined: np.ndarray  # bool[A], one Einsum element per PE cycle
    op_names: tuple[str, ...]  # O names, = OPERATORS
    unit_names: tuple[str, ...]  # U names, union over the arrays, sorted
    op_supported: np.ndarray  # bool[A, O]
    op_cycles: np.ndarray  # float64[A, O], PE cycles per op, inf where unsupported
    op_unit_weights: np.ndarray  # float64[A, O, U], unit actions per op
    op_energy_pj: np.ndarray  # float64[A, O], pJ per op, inf where unsupported
    unit_energy_pj: np.ndarray  # float64[A, U], pJ per action, 0 where the array lacks the unit
    unit_area_um2: np.ndarray  # float64[A, U], um^2 per PE, 0 where the array lacks the unit


@dataclass(frozen=True)
class ArchSpec:
    """An accelerator: clock, word size, storage levels (outermost first), compute arrays, compat setting."""

    name: str  # preset or user name
    source: str  # citation for the figures
    clock_hz: float  # Hz
    word_bytes: int  # bytes per data word (2 for fp16/bf16)
    levels: tuple[StorageLevel, ...]  # outermost (DRAM) first; a level's parent is listed before it
    arrays: tuple[ComputeArray, ...]  # in file order
    staging_level: str | None  # level through which the arrays exchange values (FuseMax reg_file_1d), or None
    compat: Compat  # modelling quirks to mimic; Compat() is the corrected model
    origin: str = field(default="<dict>", compare=False)  # where the spec was read from, for messages
    technology: Technology | None = None  # node, supply, DRAM, datatype that derive the figures not given

    def level(self, name: str) -> StorageLevel:
        """The storage level called name; a miss lists the levels."""
        return _named(self.levels, name, f"{self.name} has no storage level")

    def array(self, name: str) -> ComputeArray:
        """The compute array called name; a miss lists the arrays."""
        return _named(self.arrays, name, f"{self.name} has no compute array")

    def path(self, array: str) -> tuple[StorageLevel, ...]:
        """The levels from the outermost one down to the level feeding the named array."""
        chain = [self.level(self.array(array).fed_by)]
        while chain[-1].parent is not None:
            chain.append(self.level(chain[-1].parent))
        return tuple(reversed(chain))

    def area_um2(self) -> float:
        """Total area in um^2: instances x area of every level plus every PE's units (adders out under compat)."""
        skip = {"add"} if self.compat.exclude_adder_area else set()
        levels = sum(lv.instances * lv.area_um2 for lv in self.levels)
        return levels + sum(a.pe_count * sum(u.area_um2 for u in a.units if u.name not in skip) for a in self.arrays)

    def leakage_w(self) -> float:
        """Total leakage power in W: instances x leakage of every level plus every PE's units."""
        levels = sum(lv.instances * lv.leakage_w for lv in self.levels)
        return levels + sum(a.pe_count * sum(u.leakage_w for u in a.units) for a in self.arrays)

    def to_dict(self, resolved: bool = False) -> dict[str, Any]:
        """The spec as plain YAML-ready data; ``spec_from_dict(spec.to_dict()) == spec``. ``resolved``: also every
        figure the technology model derived (as if given: a spec that no longer follows its capacities)."""
        return {
            "name": self.name,
            "source": self.source,
            "clock_hz": self.clock_hz,
            "word_bytes": self.word_bytes,
            "levels": [lv.to_dict(resolved) for lv in self.levels],
            "arrays": {a.name: a.to_dict(resolved) for a in self.arrays},
            "staging_level": self.staging_level,
            "compat": self.compat.to_dict(),
        } | ({} if self.technology is None else {"technology": self.technology.to_dict()})

    @cached_property
    def flat(self) -> FlatArch:
        """The spec as numpy arrays for the cost kernels (computed once)."""
        return _flatten(self)


def _named(items: tuple[Any, ...], name: str, miss: str) -> Any:
    for item in items:
        if item.name == name:
            return item
    raise SpecError(f"{miss} {name!r}; known: {', '.join(i.name for i in items) or 'none'}")


def _flatten(spec: ArchSpec) -> FlatArch:
    index = {lv.name: i for i, lv in enumerate(spec.levels)}
    units = tuple(sorted({u.name for a in spec.arrays for u in a.units}))
    n_arr, n_ops, n_units = len(spec.arrays), len(OPERATORS), len(units)
    unit_energy, unit_area = np.zeros((n_arr, n_units)), np.zeros((n_arr, n_units))
    supported = np.zeros((n_arr, n_ops), dtype=bool)
    cycles, energy = np.full((n_arr, n_ops), np.inf), np.full((n_arr, n_ops), np.inf)
    weights = np.zeros((n_arr, n_ops, n_units))
    for a, array in enumerate(spec.arrays):
        for unit in array.units:
            dropped = spec.compat.drop_exp_energy and unit.name == "exp"
            unit_energy[a, units.index(unit.name)] = 0.0 if dropped else unit.energy_pj
            unit_area[a, units.index(unit.name)] = unit.area_um2
        for op in array.ops:
            o = OPERATORS.index(op.name)
            supported[a, o], cycles[a, o] = True, op.cycles
            for unit_name, weight in op.weights:
                weights[a, o, units.index(unit_name)] = weight
            energy[a, o] = weights[a, o] @ unit_energy[a]
    staging = spec.staging_level if spec.compat.drop_staging_energy else None
    width = np.array([lv.access_width_words for lv in spec.levels], dtype=np.int64)
    per_word = spec.word_bytes * spec.clock_hz

    def level_energy(attr: str) -> np.ndarray:
        return np.array([0.0 if lv.name == staging else getattr(lv, attr) for lv in spec.levels]) / width

    return FlatArch(
        clock_hz=spec.clock_hz,
        word_bytes=spec.word_bytes,
        level_names=tuple(index),
        level_parent=_ro([-1 if lv.parent is None else index[lv.parent] for lv in spec.levels], np.int64),
        level_capacity_words=_ro([math.inf if lv.capacity_words is None else lv.capacity_words for lv in spec.levels]),
        level_instances=_ro([lv.instances for lv in spec.levels], np.int64),
        level_bandwidth_words_per_cycle=_ro(
            [math.inf if (b := lv.bandwidth_bytes_per_s) is None else b / per_word for lv in spec.levels]
        ),
        level_access_width_words=_ro(width, np.int64),
        level_read_energy_pj_per_word=_ro(level_energy("read_energy_pj")),
        level_write_energy_pj_per_word=_ro(level_energy("write_energy_pj")),
        level_area_um2=_ro([lv.area_um2 for lv in spec.levels]),
        array_names=tuple(a.name for a in spec.arrays),
        array_rows=_ro([a.shape[0] if a.kind == "2d" else 1 for a in spec.arrays], np.int64),
        array_cols=_ro([a.shape[-1] for a in spec.arrays], np.int64),
        array_instances=_ro([a.instances for a in spec.arrays], np.int64),
        array_pe_count=_ro([a.pe_count for a in spec.arrays], np.int64),
        array_fed_by=_ro([index[a.fed_by] for a in spec.arrays], np.int64),
        array_pipelined=_ro([a.pipelined for a in spec.arrays], bool),
        op_names=OPERATORS,
        unit_names=units,
        op_supported=_ro(supported, bool),
        op_cycles=_ro(cycles),
        op_unit_weights=_ro(weights),
        op_energy_pj=_ro(energy),
        unit_energy_pj=_ro(unit_energy),
        unit_area_um2=_ro(unit_area),
    )


def _ro(values: Any, dtype: Any = np.float64) -> np.ndarray:
    out = np.array(values, dtype=dtype)
    out.setflags(write=False)
    return out


# ----------------------------------------------------------------------------------------------- validation

_TOP_KEYS = ("name", "source", "clock_hz", "word_bytes", "levels", "arrays", "staging_level", "compat", "technology")
_LIMIT_KEYS = ("read_bandwidth_bytes_per_s", "write_bandwidth_bytes_per_s", "ports")
"""Optional per-level limits beside the total bandwidth (written out only where given)."""
_LEVEL_KEYS = (
    "name",
    "parent",
    "capacity_words",
    "instances",
    "per_pe_of",
    "access_width_words",
    "bandwidth_bytes_per_s",
    "read_energy_pj",
    "write_energy_pj",
    "area_um2",
    *_LIMIT_KEYS,
    "banks",
    "leakage_w",
)
_ARRAY_KEYS = ("kind", "rows", "cols", "pes", "instances", "fed_by", "pipelined", "units", "ops", "fill_drain_cycles")
_UNIT_KEYS = ("energy_pj", "area_um2", "leakage_w")
_TECH_KEYS = ("node_nm", "voltage_v", "dram", "datatype")
_COMPAT_KEYS = ("base", *(f.name for f in fields(Compat)))
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and bool(_NAME.match(v))


_IDENT: tuple[Callable[[Any], bool], str] = (_is_name, "a lower-case identifier like global_buffer")
"""The check of a level, array, unit or staging-level name (CHECKS has no such kind)."""
_CYCLES: tuple[Callable[[Any], bool], str] = (
    lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10**6,
    "a whole number of cycles in [0, 1000000]",
)


def spec_from_dict(data: Any, origin: str = "<dict>") -> ArchSpec:
    """Validate plain data (as loaded from YAML) and build the spec; every problem goes into one SpecError,
    each naming its file line where the data came from :func:`~einsum.yamlio.read_yaml`.

    >>> spec = spec_from_dict(load_arch("flat-edge").to_dict())
    >>> spec.array("pe_2d").shape
    (32, 32)
    """
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping with keys {', '.join(_TOP_KEYS)}, got {show(data)}")
    p = Problems(origin, "architecture spec")
    top = p.mapping(data, "", _TOP_KEYS)
    name, source = p.value(top, "", "name", "text"), p.value(top, "", "source", "text")
    clock_hz, word_bytes = p.value(top, "", "clock_hz", "clock_hz"), p.value(top, "", "word_bytes", "count")
    arrays = _read_arrays(p, top)
    levels = _read_levels(p, top, {a.name: a for a in arrays})
    staging = p.value(top, "", "staging_level", _IDENT, default=None, null=True)
    compat = _read_compat(p, top)
    tech = _read_technology(p, top, word_bytes)
    if tech is not None:
        levels, arrays = _derive(p, tech, word_bytes, levels, arrays, top)
    names = [lv.name for lv in levels if lv.name is not None]
    if staging is not None and levels and staging not in names:
        p.add("staging_level", f"no storage level {staging!r}; levels: {', '.join(names)}", top, "staging_level")
    for array in arrays:
        _check_feed(p, array, levels, top)
    p.raise_if_any()
    return ArchSpec(
        name, source, clock_hz, word_bytes, tuple(levels), tuple(arrays), staging, compat, origin, technology=tech
    )


def _read_levels(p: Problems, top: dict[Any, Any], arrays: Mapping[str, ComputeArray]) -> list[StorageLevel]:
    raw = top.get("levels", REQUIRED)
    if raw is REQUIRED or not isinstance(raw, list) or not raw:
        got = "nothing" if raw is REQUIRED else show(raw)
        p.add("levels", f"expected a non-empty list of levels, got {got}", top, "levels")
        return []
    levels: list[StorageLevel] = []
    optional = {"default": None} if "technology" in top else {}  # else every energy and area is required
    for i, item in enumerate(raw):
        path = f"levels[{i}]"
        m = p.mapping(item, path, _LEVEL_KEYS, raw, i)
        if m is None:
            continue
        name = p.value(m, path, "name", _IDENT)
        seen = [lv.name for lv in levels if lv.name is not None]
        if name in seen:
            p.add(join(path, "name"), f"duplicate level name {name!r}", m, "name")
        parent = p.value(m, path, "parent", _IDENT, default=seen[-1] if seen else None)
        if i == 0 and "parent" in m:
            p.add(join(path, "parent"), "the outermost level has no parent; remove the key", m, "parent")
        elif parent is not None and parent not in seen:
            p.add(join(path, "parent"), f"must name a level listed before this one: {', '.join(seen)}", m, "parent")
        if i > 0 and "capacity_words" in m and m["capacity_words"] is None:
            what = "null (unbounded) is allowed only for the outermost level"
            p.add(join(path, "capacity_words"), what, m, "capacity_words")
            capacity = None
        else:
            capacity = p.value(m, path, "capacity_words", "count", null=i == 0)
        instances = p.value(m, path, "instances", "count", default=1)
        per_pe_of = p.value(m, path, "per_pe_of", _IDENT, default=None)
        if per_pe_of is not None:
            if "instances" in m:
                p.add(join(path, "instances"), "give either instances or per_pe_of, not both", m, "instances")
            if per_pe_of in arrays:
                owner = arrays[per_pe_of]
                instances = owner.pe_count if owner.shape and owner.instances else None
            else:
                what = f"no compute array {per_pe_of!r}; arrays: {', '.join(arrays)}"
                p.add(join(path, "per_pe_of"), what, m, "per_pe_of")
        width = p.value(m, path, "access_width_words", "count")
        if width is not None and capacity is not None and width > capacity:
            what = f"{width} is larger than capacity_words ({capacity})"
            p.add(join(path, "access_width_words"), what, m, "access_width_words")
        levels.append(
            StorageLevel(
                name=name,
                parent=parent,
                capacity_words=capacity,
                instances=instances,
                per_pe_of=per_pe_of,
                access_width_words=width,
                bandwidth_bytes_per_s=p.value(m, path, "bandwidth_bytes_per_s", "bytes_per_s", null=True),
                read_energy_pj=p.value(m, path, "read_energy_pj", "nonnegative", **optional),
                write_energy_pj=p.value(m, path, "write_energy_pj", "nonnegative", **optional),
                area_um2=p.value(m, path, "area_um2", "nonnegative", **optional),
                banks=p.value(m, path, "banks", "count", default=None, null=True),
                leakage_w=p.value(m, path, "leakage_w", "nonnegative", default=None if optional else 0.0),
                given=tuple(k for k in _COSTS if k in m),
                read_bandwidth_bytes_per_s=p.value(
                    m, path, "read_bandwidth_bytes_per_s", "bytes_per_s", default=None, null=True
                ),
                write_bandwidth_bytes_per_s=p.value(
                    m, path, "write_bandwidth_bytes_per_s", "bytes_per_s", default=None, null=True
                ),
                ports=p.value(m, path, "ports", "count", default=None, null=True),
            )
        )
    return levels


def _read_arrays(p: Problems, top: dict[Any, Any]) -> list[ComputeArray]:
    raw = top.get("arrays", REQUIRED)
    if raw is REQUIRED or not isinstance(raw, dict) or not raw:
        got = "nothing" if raw is REQUIRED else show(raw)
        p.add("arrays", f"expected a non-empty mapping of arrays, got {got}", top, "arrays")
        return []
    arrays = []
    for name, item in raw.items():
        path = join("arrays", name)
        if not _is_name(name):
            p.add(path, f"array name must be {_IDENT[1]}", raw, name)
        m = p.mapping(item, path, _ARRAY_KEYS, raw, name)
        if m is None:
            continue
        kind = m.get("kind")
        dims = {"2d": ("rows", "cols"), "1d": ("pes",)}.get(kind) if isinstance(kind, str) else None
        if dims is None:
            p.add(join(path, "kind"), f"expected 2d or 1d, got {show(kind) if 'kind' in m else 'nothing'}", m, "kind")
            dims = ()
        for key in {"rows", "cols", "pes"} - set(dims):
            if key in m and dims:
                p.add(join(path, key), f"not used by a {kind} array, which takes {' and '.join(dims)}", m, key)
        shape = tuple(p.value(m, path, d, "count") for d in dims)
        units = _read_units(p, m, join(path, "units"), "technology" in top)
        arrays.append(
            ComputeArray(
                name=name,
                kind=kind,
                shape=shape if None not in shape else (),
                instances=p.value(m, path, "instances", "count", default=1),
                fed_by=p.value(m, path, "fed_by", _IDENT),
                pipelined=p.value(m, path, "pipelined", "flag", default=False),
                units=units,
                ops=_read_ops(p, m, join(path, "ops"), {u.name for u in units}),
                fill_drain_cycles=p.value(m, path, "fill_drain_cycles", _CYCLES, default=0),
            )
        )
    return arrays


def _read_units(p: Problems, array: dict[Any, Any], path: str, derivable: bool) -> tuple[FunctionalUnit, ...]:
    if "units" not in array:
        p.add(path, "missing; expected {unit: {energy_pj, area_um2}, ...}")
        return ()
    raw = array["units"]
    units = []
    for name, item in (p.mapping(raw, path, None, array, "units") or {}).items():
        upath = join(path, name)
        if not _is_name(name):
            p.add(upath, f"unit name must be {_IDENT[1]}", raw, name)
        m = p.mapping(item, upath, _UNIT_KEYS, raw, name)
        if m is not None:
            opt = {"default": None} if derivable else {}  # with a technology, what is not given is derived
            energy = p.value(m, upath, "energy_pj", "nonnegative", **opt)
            area = p.value(m, upath, "area_um2", "nonnegative", **opt)
            leak = p.value(m, upath, "leakage_w", "nonnegative", default=None if derivable else 0.0)
            units.append(FunctionalUnit(name, energy, area, leak, tuple(k for k in _UNIT_COSTS if k in m)))
    return tuple(units)


def _read_ops(p: Problems, array: dict[Any, Any], path: str, units: set[str]) -> tuple[Operator, ...]:
    if "ops" not in array:
        p.add(path, "missing; expected {op: {unit: weight, ...}, ...}")
        return ()
    raw = array["ops"]
    ops = []
    for name, item in (p.mapping(raw, path, None, array, "ops") or {}).items():
        opath = join(path, name)
        if name not in OPERATORS:
            p.add(opath, f"unknown operator; allowed: {', '.join(OPERATORS)}", raw, name)
        m = p.mapping(item, opath, None, raw, name)
        if m is None:
            continue
        weights = []
        for unit in m:
            if unit == "cycles":
                continue
            weight = p.value(m, opath, unit, "positive")
            if unit not in units:
                p.add(
                    join(opath, unit),
                    f"no energy entry: unit {unit!r} is not in this array's units "
                    f"({', '.join(sorted(units)) or 'none'})",
                    m,
                    unit,
                )
            weights.append((unit, weight))
        if not weights:
            p.add(opath, "needs at least one functional unit with its weight, e.g. {mac: 1}", raw, name)
        total = sum(w for _, w in weights if w is not None)
        ops.append(Operator(name, tuple(weights), p.value(m, opath, "cycles", "positive", default=float(total))))
    return tuple(ops)


def _read_compat(p: Problems, top: dict[Any, Any]) -> Compat:
    raw = top.get("compat", "corrected")
    named = isinstance(raw, str)  # a setting's name, else a mapping {base, flag: value, ...}
    m = p.mapping({"base": raw} if named else raw, "compat", _COMPAT_KEYS, top, "compat") or {}
    base = m.get("base", "corrected")
    if not (isinstance(base, str) and base in COMPAT_SETTINGS):
        what = f"unknown setting {show(base)}; allowed: {', '.join(COMPAT_SETTINGS)}"
        p.add("compat" if named else "compat.base", what, *((top, "compat") if named else (m, "base")))
        base = "corrected"
    flags = {}
    for f in fields(Compat):
        flags[f.name] = p.value(m, "compat", f.name, "flag", default=getattr(COMPAT_SETTINGS[base], f.name))
    return Compat(**flags)


def _read_technology(p: Problems, top: dict[Any, Any], word_bytes: Any) -> Technology | None:
    """The ``technology`` block: node (required), supply, DRAM type, datatype (default: by word size)."""
    if "technology" not in top:
        return None
    m = p.mapping(top["technology"], "technology", _TECH_KEYS, top, "technology")
    if m is None:
        return None
    node = p.value(m, "technology", "node_nm", "int")  # the model's check names the valid nodes and supplies
    voltage = p.value(m, "technology", "voltage_v", (finite, "a supply in volts"), default=None, null=True)
    dram = p.value(m, "technology", "dram", "text", default="HBM2")
    dtype = p.value(m, "technology", "datatype", "text", default=tech_model.DATATYPES.get(word_bytes, "fp16"))
    if None in (node, dram, dtype):
        return None
    tech = Technology(node, voltage, dram, dtype)
    problems = tech_model.technology_problems(tech)
    for key, what in problems.items():
        p.add(f"technology.{key}", what, m, key)
    return None if problems else tech


def _derive(
    p: Problems,
    tech: Technology,
    word_bytes: int | None,
    levels: list[StorageLevel],
    arrays: list[ComputeArray],
    top: dict[Any, Any],
) -> tuple[list[StorageLevel], list[ComputeArray]]:
    """Levels and arrays with every figure the YAML left out taken from the technology model: DRAM (the outermost
    level) from the DRAM energy per bit, the other levels as SRAM arrays, units by name and datatype."""
    if not word_bytes:
        return levels, arrays
    out_levels = []
    for i, lv in enumerate(levels):
        missing = {k for k in _COSTS if getattr(lv, k) is None}
        if not missing or lv.access_width_words is None or (i > 0 and lv.capacity_words is None):
            out_levels.append(lv)  # nothing to derive, or a size already reported as wrong
            continue
        bits = lv.access_width_words * word_bytes * 8
        try:
            if i == 0:
                energy = tech_model.dram_energy_pj_per_bit(tech) * bits
                cost = tech_model.MemoryCost(energy, energy, 0.0, 0.0)
            else:
                cost = tech_model.memory_cost(tech, lv.capacity_words * word_bytes, bits, lv.banks or 1, lv.ports or 1)
        except SpecError as exc:
            what = f"{str(exc).removeprefix('technology model: ')}; give {', '.join(sorted(missing))} explicitly"
            p.add(f"levels[{i}]", what, top.get("levels"), i)
            out_levels.append(lv)
            continue
        derived = {"read_energy_pj": cost.read_energy_pj, "write_energy_pj": cost.write_energy_pj,
                   "area_um2": cost.area_um2, "leakage_w": cost.leakage_w}  # fmt: skip
        out_levels.append(replace(lv, **{k: derived[k] for k in missing}))
    out_arrays = []
    for array in arrays:
        units = []
        for unit in array.units:
            missing = {k for k in _UNIT_COSTS if getattr(unit, k) is None}
            if not missing:
                units.append(unit)
                continue
            try:
                cost = tech_model.unit_cost(tech, unit.name)
            except SpecError as exc:
                path = join(join(join("arrays", array.name), "units"), unit.name)
                p.add(path, f"{str(exc).removeprefix('technology model: ')}; or give {', '.join(sorted(missing))}")
                units.append(unit)
                continue
            derived = {"energy_pj": cost.energy_pj, "area_um2": cost.area_um2, "leakage_w": cost.leakage_w}
            units.append(replace(unit, **{k: derived[k] for k in missing}))
        out_arrays.append(replace(array, units=tuple(units)))
    return out_levels, out_arrays


def _check_feed(p: Problems, array: ComputeArray, levels: list[StorageLevel], top: dict[Any, Any]) -> None:
    """fed_by names a level, and every level held per PE of this array lies on the array's path."""
    by_name = {lv.name: lv for lv in levels if lv.name is not None}
    if array.fed_by is None or not levels:
        return
    if array.fed_by not in by_name:
        path = join(join("arrays", array.name), "fed_by")
        what = f"no storage level {array.fed_by!r}; levels: {', '.join(by_name)}"
        p.add(path, what, top["arrays"][array.name], "fed_by")  # the array was read, so both are mappings
        return
    chain, name = set(), array.fed_by
    while name is not None and name not in chain and name in by_name:
        chain.add(name)
        name = by_name[name].parent
    raw = top["levels"]  # a level was read from each mapping item, in order
    for i, level in zip((i for i, item in enumerate(raw) if isinstance(item, dict)), levels, strict=True):
        if level.per_pe_of == array.name and level.name not in chain:
            p.add(
                f"levels[{i}].per_pe_of",
                f"{level.name} is not on the path to {array.name}'s fed_by ({array.fed_by}), so its PEs never read it",
                raw[i],
                "per_pe_of",
            )


# ----------------------------------------------------------------------------------------------- YAML, registry


def read_arch_file(path: str | Path, origin: str | None = None) -> ArchSpec:
    """Read and validate one YAML spec; origin (default: the path) prefixes every message."""
    origin = origin or str(path)
    return spec_from_dict(read_yaml(path, origin), origin)


_ARCHITECTURES: dict[str, Path] = {p.stem: p for p in sorted(Path(__file__).with_name("presets").glob("*.yaml"))}
ARCHITECTURES: Mapping[str, Path] = MappingProxyType(_ARCHITECTURES)
"""Registered architectures: name -> YAML file (the shipped presets, then whatever register_arch adds)."""


def register_arch(name: str, path: str | Path) -> None:
    """Register a YAML spec under name; names are never replaced."""
    if name in _ARCHITECTURES:
        raise RegistryError(f"architecture {name!r} is already registered ({_ARCHITECTURES[name]})")
    if not Path(path).is_file():
        raise SpecError(f"{path}: no such file")
    _ARCHITECTURES[name] = Path(path)


def load_arch(name_or_path: str | Path) -> ArchSpec:
    """The spec of a registered architecture, or of a YAML file given by path.

    >>> spec = load_arch("fusemax-cloud")
    >>> spec.level("global_buffer").capacity_words * spec.word_bytes == 16 * 2**20  # 16 MiB
    True
    """
    if isinstance(name_or_path, str) and name_or_path in _ARCHITECTURES:
        return read_arch_file(_ARCHITECTURES[name_or_path], _ARCHITECTURES[name_or_path].name)
    path = Path(name_or_path)
    if isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or "/" in str(name_or_path):
        return read_arch_file(path)
    raise RegistryError(
        f"unknown architecture {name_or_path!r}; registered: {', '.join(sorted(_ARCHITECTURES))} "
        "(or give the path of a .yaml file)"
    )


def with_overrides(spec: ArchSpec, overrides: Mapping[str, Any]) -> ArchSpec:
    """A new, re-validated spec with values replaced at dotted paths (list entries by name or [index]).

    >>> small = with_overrides(load_arch("fusemax-cloud"), {"arrays.pe_2d.rows": 128, "arrays.pe_2d.cols": 128})
    >>> small.array("pe_2d").pe_count, small.level("pe_reg_2d").instances
    (16384, 16384)

    Overrides that only set numbers of levels (capacity, bandwidths, energies, area, leakage), array sizes or the
    clock, with valid values, take a fast path (:func:`_numbers_replaced`) that checks just those values and
    re-derives just what depends on them: the same spec, without re-reading the unchanged parts.
    """
    fast = _numbers_replaced(spec, overrides)
    return fast if fast is not None else _rebuilt(spec, overrides)


_LEVEL_NUMBERS: Mapping[str, tuple[str, bool]] = MappingProxyType({
    "capacity_words": ("count", False),
    "bandwidth_bytes_per_s": ("bytes_per_s", True),
    "read_bandwidth_bytes_per_s": ("bytes_per_s", True),
    "write_bandwidth_bytes_per_s": ("bytes_per_s", True),
    "read_energy_pj": ("nonnegative", False),
    "write_energy_pj": ("nonnegative", False),
    "area_um2": ("nonnegative", False),
    "leakage_w": ("nonnegative", False),
})  # fmt: skip
"""Level fields the fast path of :func:`with_overrides` sets: field -> (check kind, null allowed), as
:func:`_read_levels` reads them (a null capacity, allowed for the outermost level only, takes the full path)."""
_ARRAY_NUMBERS = {"2d": ("rows", "cols"), "1d": ("pes",)}


def _numbers_replaced(spec: ArchSpec, overrides: Mapping[str, Any]) -> ArchSpec | None:
    """:func:`with_overrides`'s result when every override sets a number the fast path knows (``clock_hz``, a field
    of :data:`_LEVEL_NUMBERS`, an array's ``rows``/``cols``/``pes``/``instances``) to a valid value; else None (the
    full path then rebuilds and checks the whole spec, and names any fault). Values are checked as the reader checks
    them; a changed capacity re-derives the level's figures the technology model gave (and the access width is
    checked against it); a changed array re-counts the instances of the levels held per PE of it."""
    origin = f"{spec.origin} + overrides"
    p = Problems(origin, "architecture spec")
    clock = spec.clock_hz
    levels: dict[int, dict[str, Any]] = {}
    arrays: dict[int, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        try:
            steps = _steps(dotted, origin)
        except SpecError:
            return None
        if steps == ["clock_hz"]:
            clock = p.value({"clock_hz": value}, "", "clock_hz", "clock_hz")
        elif len(steps) == 3 and steps[0] == "levels" and steps[2] in _LEVEL_NUMBERS:
            i = _index(spec.levels, steps[1])
            if i is None:
                return None
            kind, null = _LEVEL_NUMBERS[steps[2]]
            null = null or (steps[2] == "capacity_words" and i == 0)
            levels.setdefault(i, {})[steps[2]] = p.value({steps[2]: value}, "", steps[2], kind, null=null)
        elif len(steps) == 3 and steps[0] == "arrays" and isinstance(steps[1], str):
            a = _index(spec.arrays, steps[1])
            if a is None or steps[2] not in (*_ARRAY_NUMBERS.get(spec.arrays[a].kind, ()), "instances"):
                return None
            arrays.setdefault(a, {})[steps[2]] = p.value({steps[2]: value}, "", steps[2], "count")
        else:
            return None
    if p.items:
        return None
    new_arrays = list(spec.arrays)
    for a, changes in arrays.items():
        array = spec.arrays[a]
        dims = dict(zip(_ARRAY_NUMBERS[array.kind], array.shape, strict=True))
        dims.update((k, v) for k, v in changes.items() if k != "instances")
        shape = tuple(dims[d] for d in _ARRAY_NUMBERS[array.kind])
        new_arrays[a] = _shared(array, shape=shape, instances=changes.get("instances", array.instances))
    changed = {new_arrays[a].name: new_arrays[a] for a in arrays}
    new_levels = list(spec.levels)
    for i, lv in enumerate(spec.levels):
        changes = dict(levels.get(i, {}))
        if lv.per_pe_of in changed:
            changes["instances"] = changed[lv.per_pe_of].pe_count
        if not changes:
            continue
        if changes.keys() == {"instances"}:
            new_levels[i] = _shared(lv, **changes)
            continue
        given = tuple(k for k in _COSTS if k in lv.given or k in changes)
        capacity = changes.get("capacity_words", lv.capacity_words)
        if capacity is not None and lv.access_width_words > capacity:
            return None
        missing = [k for k in _COSTS if k not in given]
        if "capacity_words" in changes and i > 0 and missing and spec.technology is not None and spec.word_bytes:
            bits = lv.access_width_words * spec.word_bytes * 8
            try:
                cost = tech_model.memory_cost(spec.technology, capacity * spec.word_bytes, bits, lv.banks or 1,
                                              lv.ports or 1)  # fmt: skip
            except SpecError:
                return None
            derived = {"read_energy_pj": cost.read_energy_pj, "write_energy_pj": cost.write_energy_pj,
                       "area_um2": cost.area_um2, "leakage_w": cost.leakage_w}  # fmt: skip
            changes.update((k, derived[k]) for k in missing)
        new_levels[i] = replace(lv, **changes, given=given)
    return replace(spec, clock_hz=clock, levels=tuple(new_levels), arrays=tuple(new_arrays), origin=origin)


_SHARED: dict[tuple, tuple[Any, Any]] = {}


def _shared(item: Any, **changes: Any) -> Any:
    """``replace(item, **changes)``, the same object for the same item and changes (a sweep's points share their
    arrays and per-PE levels among those of one size, so caches keyed by them hit). The entry keeps ``item``
    alive, so its id is its own."""
    key = (id(item), *changes.items())
    hit = _SHARED.get(key)
    if hit is None:
        if len(_SHARED) >= 4096:
            _SHARED.clear()
        hit = _SHARED[key] = (item, replace(item, **changes))
    return hit[1]


def _index(items: tuple[Any, ...], step: str | int) -> int | None:
    """The index of a list entry an override step names, as :func:`_locate` finds it (None: not found)."""
    if isinstance(step, int):
        return step if step < len(items) else None
    return next((i for i, item in enumerate(items) if item.name == step), None)


def _rebuilt(spec: ArchSpec, overrides: Mapping[str, Any]) -> ArchSpec:
    """with_overrides by the full path: the spec as data, the values replaced, the whole spec read and checked."""
    data, origin = spec.to_dict(), f"{spec.origin} + overrides"
    for dotted, value in overrides.items():
        steps = _steps(dotted, origin)
        node = data
        for i, step in enumerate(steps):
            where = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps[:i]).lstrip(".")
            key = _locate(
                node, step, i == len(steps) - 1, f"{origin}: override {dotted!r}: no {step!r} in {where or 'the spec'}"
            )
            if i == len(steps) - 1:
                node[key] = copy.deepcopy(value)
            else:
                node = node[key]
    return spec_from_dict(data, origin)


def _steps(dotted: str, origin: str) -> list[str | int]:
    hit = _STEPS.get(dotted)
    if hit is not None:
        return list(hit)
    steps: list[str | int] = []
    for part in dotted.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if m is None or not (m[1] or m[2]):
            raise SpecError(f"{origin}: override {dotted!r}: not a dotted path like levels.global_buffer.area_um2")
        steps += ([m[1]] if m[1] else []) + [int(i) for i in re.findall(r"\d+", m[2])]
    if len(_STEPS) < 4096:
        _STEPS[dotted] = tuple(steps)
    return steps


_STEPS: dict[str, tuple[str | int, ...]] = {}
"""Steps of the dotted paths already split (a sweep applies the same few paths to every point)."""


def _locate(node: Any, step: str | int, last: bool, miss: str) -> Any:
    """The key or index of step in node (a new key only at the last step); a miss lists what is there."""
    if isinstance(node, list):
        names = [item.get("name") if isinstance(item, dict) else None for item in node]
        if isinstance(step, int) and step < len(node):
            return step
        if step in names:
            return names.index(step)
        known = f"indices 0..{len(node) - 1} or names {', '.join(str(n) for n in names)}"
    elif isinstance(node, dict):
        if isinstance(step, str) and (last or step in node):
            return step
        known = f"keys {', '.join(map(str, node))}"
    else:
        known = f"no entries: it is the value {show(node)}"
    raise SpecError(f"{miss}; it has {known}")
