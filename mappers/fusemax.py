"""The FuseMax study's designs as mapping templates: each a cascade + architecture + mapping (no formula per design).

- ``unfused``: 3-pass cascade; QK and AV mapped by the mapper; every intermediate through DRAM.
- ``flat``: 3-pass cascade fused on the FLAT architecture; FLAT's choices from :mod:`mappers.flat`.
- ``cascade`` (+Cascade): the FuseMax 1-pass cascade on the FLAT architecture (softmax on the 1-D array).
- ``arch`` (+Architecture): the FuseMax architecture, 2-D array runs LM/SLN/SLD too, one tile at a time.
- ``binding`` (FuseMax): the same, with the 2-D and 1-D work of consecutive tiles interleaved.

The FuseMax-family mappings tile P = P2 x P1 x P0 and M = M1 x M0 with M0 = P0 = the array width, keep
the query-row state (Q, RM, RD, RNV) for P1 x P0 queries in the global buffer, stream K and V tiles, and
take the largest P1 whose state fits the buffer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from einsum.errors import SpecError
from einsum.lower import LoweredCascade, lower
from mappers.templates import divisors, loop_nest
from simulator.cost import CascadeCost, evaluate_cascade, phase_occupancy
from simulator.mapping import CascadeMapping, Phase
from simulator.specs import ArchSpec
from workloads import get_cascade

BUFFER = "global_buffer"

#: which array runs each Einsum of the FuseMax cascade
FUSEMAX_BINDINGS: Mapping[str, Mapping[str, str]] = {
    "cascade": {"QK": "pe_2d", "SLNV": "pe_2d"},  # everything else on the 1-D array
    "arch": {"QK": "pe_2d", "LM": "pe_2d", "SLN": "pe_2d", "SLD": "pe_2d", "SLNV": "pe_2d"},
    "binding": {"QK": "pe_2d", "LM": "pe_2d", "SLN": "pe_2d", "SLD": "pe_2d", "SLNV": "pe_2d"},
}

#: the schedules: per stage, array -> Einsums (the interleaving is what "+Binding" adds)
FUSEMAX_SCHEDULES: Mapping[str, Phase] = {
    "cascade": Phase(
        stages=(
            {
                "pe_2d": ("QK", "SLNV"),
                "pe_1d": ("LM", "RM", "SLN", "SLD", "PRM", "SPD", "RD", "SPNV", "RNV", "AV"),
            },
        )
    ),
    "arch": Phase(
        stages=(
            {"pe_2d": ("QK", "LM"), "pe_1d": ("RD", "AV")},
            {"pe_1d": ("RM",)},
            {"pe_2d": ("SLN", "SLD"), "pe_1d": ("PRM", "SPD")},
            {"pe_2d": ("SLNV",), "pe_1d": ("SPNV", "RNV")},
        ),
        stall_stage=1,
        stall_einsum="LM",
    ),
    "binding": Phase(
        stages=(
            {"pe_2d": ("QK", "LM"), "pe_1d": ("RD", "RNV", "AV")},
            {"pe_1d": ("RM",)},
            {"pe_2d": ("SLN", "SLD"), "pe_1d": ("PRM", "SPD")},
            {"pe_2d": ("SLNV",), "pe_1d": ("SPNV",)},
        )
    ),
}

STATE = ("RM", "RD", "RNV")


@dataclass(frozen=True)
class StudyDesign:
    """One evaluated design of the study's family."""

    config: str
    mapping: CascadeMapping
    cost: CascadeCost
    lowered: LoweredCascade


def fusemax_family(
    config: str, arch: ArchSpec, sizes: Mapping[str, int], lowered: LoweredCascade | None = None
) -> StudyDesign:
    """A FuseMax-family design (cascade, arch, binding) with the largest P1 whose buffer state fits.

    ``lowered``: the fusemax cascade already lowered at ``sizes`` with M0 = the array width (callers that
    evaluate many architectures of one shape pass it to skip lowering).
    """
    width = arch.array("pe_2d").shape[-1]
    lowered = lowered or lower(get_cascade("fusemax").cascade, {**sizes, "M0": width})
    if lowered.sizes["P"] % width:
        raise SpecError(
            f"the FuseMax {config} design tiles the queries by the 2-D array's width: P = {lowered.sizes['P']} "
            f"must be a multiple of {width} on {arch.name}"
        )
    p_tiles = lowered.sizes["P"] // width
    best = None
    for p1 in reversed(divisors(p_tiles)):
        mapping, occupancy = _tried(config, lowered, arch, p1)
        if occupancy <= arch.level(BUFFER).capacity_words or p1 == 1:
            best = mapping
            break
    cost = evaluate_cascade(lowered, arch, best)
    return StudyDesign(config, best, cost, lowered)


_TRIED: OrderedDict[tuple, tuple[LoweredCascade, CascadeMapping, float]] = OrderedDict()
_TRIED_SIZE = 1024


def _tried(config: str, lowered: LoweredCascade, arch: ArchSpec, p1: int) -> tuple[CascadeMapping, float]:
    """:func:`fusemax_mapping` and its phase's buffer occupancy, memoized by what they read of the spec (its arrays'
    shapes, kinds, feeds and the staging level), so specs that differ in numbers share one mapping object (and
    :func:`simulator.cost.cascade_plan` its plan). The entry keeps ``lowered`` alive: its id stays its own."""
    arrays = tuple((a.name, a.kind, a.shape, a.instances, a.fed_by) for a in arch.arrays)
    key = (config, id(lowered), p1, arch.staging_level, arrays)
    hit = _TRIED.get(key)
    if hit is not None:
        _TRIED.move_to_end(key)
        return hit[1], hit[2]
    mapping = fusemax_mapping(config, lowered, arch, p1)
    occupancy = phase_occupancy(lowered, mapping, mapping.phases[0], BUFFER)
    _TRIED[key] = (lowered, mapping, occupancy)
    if len(_TRIED) > _TRIED_SIZE:
        _TRIED.popitem(last=False)
    return mapping, occupancy


def fusemax_mapping(config: str, lowered: LoweredCascade, arch: ArchSpec, p1: int) -> CascadeMapping:
    """The tiled, fused mapping of the FuseMax cascade for one configuration and query-tile count P1."""
    binding = FUSEMAX_BINDINGS[config]
    width = arch.array("pe_2d").shape[-1]
    s = lowered.sizes
    p2 = s["P"] // (width * p1)
    outer = [("b", s["B"]), ("h", s["H"]), ("p", p2), ("m1", s["M1"])]
    middle = [("p", p1)]
    placement: dict[str, str] = {t: BUFFER for t in STATE}
    for e in lowered.einsums:
        if e.name in STATE or e.name in lowered.outputs:
            continue
        here = binding.get(e.name, "pe_1d")
        readers = {binding.get(c, "pe_1d") for c in lowered.consumers.get(e.name, ())}
        if readers <= {here}:
            placement[e.name] = "pe"
        elif config == "cascade" and e.name in ("QK", "SLN"):
            placement[e.name] = BUFFER  # +Cascade stages whole score tiles in the buffer for the other array
        else:
            placement[e.name] = arch.staging_level or BUFFER
    keeps = {"Q", "K", "V", *STATE} | {t for t, where in placement.items() if where == BUFFER}
    nests = {}
    for e in lowered.einsums:
        array = binding.get(e.name, "pe_1d")
        spatial = ("m0", "p") if arch.array(array).kind == "2d" else ("p",)
        nests[e.name] = loop_nest(e, arch, array, outer, middle, spatial, keeps)
    return CascadeMapping(
        name=f"{config}-P1={p1}",
        einsums=nests,
        placement=placement,
        phases=(FUSEMAX_SCHEDULES[config],),
        notes=(f"P = P2 x P1 x P0 = {p2} x {p1} x {width}; M = M1 x M0 = {s['M1']} x {width}",),
    )
