"""Mappings as data: the loop nest of one Einsum, and how a cascade's Einsums share hardware and time.

An :class:`EinsumMapping` is a Timeloop-style loop nest over the Einsum's variables: per storage level, the
temporal loops (outermost first) with their bounds; per axis of the compute array, the spatial factors; per
level, the tensors it keeps (the others bypass it). A variable's bounds over all levels and axes multiply
to its size (a partitioned rank such as P = P2 x P1 x P0 is simply p split over three places).

A :class:`CascadeMapping` adds what crosses Einsum boundaries:

- ``placement``: where each intermediate lives between its producer and its consumers: ``dram``, a
  storage level (``global_buffer``, a staging level) or ``pe`` (kept in the PE registers: producer and
  consumers are fused on one array);
- ``in_place``: buffer reuse, (tensor, tensor whose buffer it overwrites) - e.g. FLAT's SN over QK;
- ``forwarded``: reads served where an earlier Einsum left the data: FLAT's SD sums SN as the PE produces
  it; a softmax pass re-reads the score row its first pass staged in the buffer;
- ``phases``: the schedule. Phases run one after another; in a phase, stages run one after another; in a
  stage, each array runs its Einsums back to back while the arrays overlap. A phase's DRAM transfers
  overlap its compute (latency = max of the two).
- ``spill``: whether a phase whose buffer overflows spills the excess to DRAM (else it is infeasible).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from einsum.errors import SpecError
from einsum.yamlio import Problems, read_yaml

Loops = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class EinsumMapping:
    """Loop nest of one Einsum on one compute array."""

    array: str
    """Compute array that runs the Einsum."""
    levels: tuple[str, ...]
    """Storage levels of the nest, outermost (DRAM) first, ending with the array's PE register level."""
    temporal: tuple[Loops, ...]
    """Per level: temporal loops (variable, bound), outermost first."""
    spatial: tuple[Loops, ...]
    """Per array axis (rows, cols; or pes): spatial factors (variable, factor)."""
    keep: tuple[frozenset[str], ...]
    """Per level: tensors held there (DRAM holds everything it backs)."""

    def __hash__(self) -> int:
        # Computed once: the cost model's memos look nests up by value many times per cascade mapping.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.array, self.levels, self.temporal, self.spatial, self.keep))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_hash", None)  # string hashes differ between processes: a copy hashes itself again
        return state

    def factors(self, var: str) -> int:
        """Product of the variable's bounds over all levels and axes."""
        total = 1
        for loops in (*self.temporal, *self.spatial):
            for v, bound in loops:
                if v == var:
                    total *= bound
        return total


@dataclass(frozen=True)
class Phase:
    """Einsums that share the buffer and overlap with their DRAM transfers."""

    stages: tuple[Mapping[str, tuple[str, ...]], ...]
    """Per stage: array -> Einsums it runs back to back; the arrays of a stage overlap."""
    stall_stage: int | None = None
    """Index of the stage before which "+Architecture" stalls (compat ``arch_stall`` only)."""
    stall_einsum: str | None = None
    """The Einsum whose latency times the array's columns is that stall."""

    @cached_property
    def einsums(self) -> tuple[str, ...]:
        """Every Einsum of the phase, stage by stage (worked out once: the stages are not changed after)."""
        return tuple(e for stage in self.stages for names in stage.values() for e in names)


@dataclass(frozen=True)
class CascadeMapping:
    """A whole cascade's mapping: per-Einsum loop nests, where intermediates live, and the schedule."""

    name: str
    einsums: Mapping[str, EinsumMapping]
    placement: Mapping[str, str]
    phases: tuple[Phase, ...]
    in_place: tuple[tuple[str, str], ...] = ()
    forwarded: tuple[tuple[str, str, str], ...] = ()
    """(tensor, consumer, level): the consumer finds the tensor already at ``level`` (``pe``: its producer's
    PE registers, same array and pass; a buffer: staged there by an earlier consumer of the phase), so
    nothing moves above that level for this read."""
    spill: bool = False
    notes: tuple[str, ...] = field(default=())
    """Human-readable choices (e.g. "FLAT: output-stationary, row block P1=1024"), for reports."""
    origin: str = field(default="", compare=False)
    """Where the mapping came from (a YAML file), named in error messages."""

    def array_of(self, einsum: str) -> str:
        return self.einsums[einsum].array


# ---------------------------------------------------------------------------------------------------------
# YAML form


_MAPPING_KEYS = ("name", "einsums", "placement", "phases", "in_place", "forwarded", "spill", "notes")
_DESIGN_KEYS = ("shape", "computed_tiles")
"""Keys a whole-cascade design adds to its mapping file (``attnscope map --save-mapping``): the rank sizes it was
made at and the key tiles a masked design computes; the ``mapping`` mapper reads them, the loop nests do not."""
_EINSUM_KEYS = ("array", "levels", "temporal", "spatial", "keep")
_PHASE_KEYS = ("stages", "stall_stage", "stall_einsum")


def mapping_to_dict(mapping: CascadeMapping) -> dict:
    """A mapping as plain YAML-ready data (``mapping_from_dict`` reads it back)."""
    einsums = {}
    for name, em in mapping.einsums.items():
        einsums[name] = {
            "array": em.array,
            "levels": list(em.levels),
            "temporal": {lv: [[v, b] for v, b in loops] for lv, loops in zip(em.levels, em.temporal, strict=True)},
            "spatial": [[[v, f] for v, f in loops] for loops in em.spatial],
            "keep": {lv: sorted(k) for lv, k in zip(em.levels[1:], em.keep[1:], strict=True)},
        }
    phases = []
    for ph in mapping.phases:
        entry: dict = {"stages": [{a: list(names) for a, names in st.items()} for st in ph.stages]}
        if ph.stall_einsum is not None:
            entry |= {"stall_stage": ph.stall_stage, "stall_einsum": ph.stall_einsum}
        phases.append(entry)
    return {
        "name": mapping.name,
        "einsums": einsums,
        "placement": dict(mapping.placement),
        "phases": phases,
        "in_place": [list(p) for p in mapping.in_place],
        "forwarded": [list(f) for f in mapping.forwarded],
        "spill": mapping.spill,
        "notes": list(mapping.notes),
    }


def mapping_from_dict(data: object, origin: str = "<mapping>") -> CascadeMapping:
    """Validate and build a mapping; every problem is reported with ``origin``, its line (data read from YAML)
    and its dotted key.

    >>> from einsum.yamlio import read_yaml_text_data
    >>> mapping_from_dict(read_yaml_text_data("einsums:\\n  QK: {levels: [dram], tempral: {}}\\n"), "m.yaml")
    Traceback (most recent call last):
      ...
    einsum.errors.SpecError: m.yaml: 3 problems in the mapping:
    m.yaml:2: einsums.QK.tempral: unknown key; allowed keys: array, levels, temporal, spatial, keep
    m.yaml: einsums.QK.array: expected the name of a compute array, e.g. pe_2d
    m.yaml: phases: expected a list of phases, each with stages: [{array: [Einsum, ...]}]
    """
    p = Problems(origin, "mapping")

    def loops_of(value: Any, path: str, container: Any, item: Any) -> Loops:
        if value is None:
            return ()
        if not isinstance(value, list):
            p.add(path, "expected a list of [variable, bound] pairs", container, item)
            return ()
        out = []
        for i, pair in enumerate(value):
            ok = isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)
            if not ok or isinstance(pair[1], bool) or not isinstance(pair[1], int) or pair[1] < 1:
                p.add(f"{path}[{i}]", f"expected [variable, positive integer bound], got {pair!r}", value, i)
                continue
            out.append((pair[0], pair[1]))
        return tuple(out)

    top = p.mapping(data, "", (*_MAPPING_KEYS, *_DESIGN_KEYS))
    if top is None:
        raise SpecError(p.message())
    einsums = {}
    raw_einsums = top.get("einsums")
    if not isinstance(raw_einsums, dict) or not raw_einsums:
        p.add("einsums", "expected a mapping of Einsum name -> loop nest", top, "einsums")
        raw_einsums = {}
    for name, raw in raw_einsums.items():
        path = f"einsums.{name}"
        em = p.mapping(raw, path, _EINSUM_KEYS, raw_einsums, name)
        if em is None:
            continue
        levels = em.get("levels")
        if not (isinstance(levels, list) and levels and all(isinstance(x, str) for x in levels)):
            p.add(f"{path}.levels", "expected a non-empty list of storage level names, outermost first", em, "levels")
            continue
        temporal_raw = p.mapping(em.get("temporal", {}), f"{path}.temporal", tuple(levels), em, "temporal") or {}
        temporal = tuple(loops_of(temporal_raw.get(lv), f"{path}.temporal.{lv}", temporal_raw, lv) for lv in levels)
        spatial_raw = em.get("spatial", [])
        if not isinstance(spatial_raw, list):
            p.add(f"{path}.spatial", "expected one list of [variable, factor] pairs per array axis", em, "spatial")
            spatial_raw = []
        spatial = tuple(loops_of(ax, f"{path}.spatial[{i}]", spatial_raw, i) for i, ax in enumerate(spatial_raw))
        keep_raw = p.mapping(em.get("keep", {}), f"{path}.keep", tuple(levels[1:]), em, "keep") or {}
        keep = [frozenset()] + [frozenset(keep_raw.get(lv) or ()) for lv in levels[1:]]
        array = em.get("array")
        if not isinstance(array, str):
            p.add(f"{path}.array", "expected the name of a compute array, e.g. pe_2d", em, "array")
            continue
        einsums[name] = EinsumMapping(array, tuple(levels), temporal, spatial, tuple(keep))
    phases = []
    raw_phases = top.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        p.add("phases", "expected a list of phases, each with stages: [{array: [Einsum, ...]}]", top, "phases")
        raw_phases = []
    for i, raw in enumerate(raw_phases):
        ph = p.mapping(raw, f"phases[{i}]", _PHASE_KEYS, raw_phases, i)
        if ph is None:
            continue
        raw_stages = ph.get("stages") or []
        if not isinstance(raw_stages, list):
            p.add(f"phases[{i}].stages", "expected a list of stages, each {array: [Einsum, ...]}", ph, "stages")
            raw_stages = []
        stages = []
        for j, st in enumerate(raw_stages):
            if not isinstance(st, dict) or not all(isinstance(v, list) for v in st.values()):
                p.add(f"phases[{i}].stages[{j}]", "expected {array: [Einsum, ...]}", raw_stages, j)
                continue
            stages.append({a: tuple(v) for a, v in st.items()})
        phases.append(Phase(tuple(stages), ph.get("stall_stage"), ph.get("stall_einsum")))
    placement = top.get("placement") or {}
    if not isinstance(placement, dict):
        p.add("placement", "expected {tensor: level name or pe}", top, "placement")
        placement = {}
    for data_key in ("in_place", "forwarded"):
        listed = top.get(data_key) or []
        if not isinstance(listed, list | tuple) or not all(isinstance(x, list | tuple) for x in listed):
            p.add(data_key, "expected a list of lists", top, data_key)
    p.raise_if_any()
    return CascadeMapping(
        name=str(top.get("name", origin)),
        einsums=einsums,
        placement=dict(placement),
        phases=tuple(phases),
        in_place=tuple(tuple(x) for x in top.get("in_place") or ()),
        forwarded=tuple(tuple(x) for x in top.get("forwarded") or ()),
        spill=bool(top.get("spill", False)),
        notes=tuple(top.get("notes") or ()),
        origin=origin,
    )


def load_mapping(path: str | Path) -> CascadeMapping:
    """Read a mapping YAML file (see :func:`mapping_to_dict` for the layout)."""
    return mapping_from_dict(read_yaml(path, str(path)), str(path))
