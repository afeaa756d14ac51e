"""FLAT's mapping choices (Kao et al., ASPLOS 2023), searched rather than looked up.

FLAT fuses the 3-pass softmax cascade: QK on the 2-D array writes a block of score rows into the global
buffer, the 1-D array runs the softmax over it in place (SN overwrites QK, A overwrites SN) and AV reads A
back into the 2-D array. The choices per (workload, architecture):

- **stationarity**: output-stationary (QK and AV accumulate in the PEs; the score block lives in the
  buffer) or weight-stationary (K and V stay in the PEs, the scores go through DRAM and the softmax
  streams one query row at a time);
- **fusion granularity**: a whole head (P1 = P) or a block of P1 query rows: every power-of-two block that
  divides P down to an eighth of the array width (:func:`mappers.passes.block_sizes`), or ``row_blocks`` x
  the array width when given (the FuseMax study's FLAT: 1, 2, 4);
- **placement** of Q, K, V and AV: in the buffer ("on") or streamed from DRAM into the PEs ("off").

Two policies choose among them (:func:`search_flat`):

- ``model`` (the default): the lowest latency (then energy) among the choices whose buffer occupancy fits
  the cost model's own accounting (score block, operand tiles and the double-buffered hand-off tiles
  between the arrays): FLAT's dataflow with no self-inflicted spill. Only when none fits, the fastest that
  spills. Per (stationarity, placement) the head, the largest block that fits and the next larger one are
  costed (:func:`mappers.passes.pick_blocks`).
- ``study``: the FuseMax study's FLAT: prefer the fused output-stationary dataflow at the coarsest
  granularity whose score block fits FLAT's sizing rule (the block and the buffered operand tiles within the
  buffer, not counting the hand-off tiles); if no block fits, fall back to weight-stationary. Among the
  placements, lowest latency, then lowest energy. The cost model then charges the real occupancy, hand-offs
  included, and spills the excess. Only the study's own mappings (``validate/fusemax``) use it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from einsum.errors import SpecError
from einsum.lower import LoweredCascade
from mappers.passes import block_sizes, pick_blocks, share_pes
from mappers.templates import loop_nest
from simulator.cost import CascadeCost, evaluate_cascade, occupancy_parts, phase_occupancy
from simulator.mapping import CascadeMapping, Phase
from simulator.specs import ArchSpec

BUFFER = "global_buffer"
SOFTMAX = ("GM", "SN", "SD", "A")
POLICIES = ("model", "study")

PHASE = Phase(stages=({"pe_2d": ("QK", "AV"), "pe_1d": SOFTMAX},))


@dataclass(frozen=True)
class FlatChoice:
    """One point of FLAT's choice space."""

    stationarity: str  # "output" or "weight"
    p1: int  # query rows per fused block (P = head granularity)
    on_chip: frozenset[str]  # which of Q, K, V, AV the buffer holds

    def describe(self, p: int) -> str:
        gran = "head" if self.p1 == p else f"row block P1={self.p1}"
        on = ",".join(sorted(self.on_chip)) or "none"
        return f"FLAT: {self.stationarity}-stationary, {gran}, on chip: {on}"


def flat_mapping(lowered: LoweredCascade, arch: ArchSpec, choice: FlatChoice) -> CascadeMapping:
    """The mapping of the 3-pass cascade for one FLAT choice."""
    s = lowered.sizes
    width = arch.array("pe_2d").shape[-1]
    p2 = s["P"] // choice.p1
    outer = [("b", s["B"]), ("h", s["H"]), ("p", p2)]
    on = set(choice.on_chip)
    nests = {}
    if choice.stationarity == "output":
        placement = {"QK": BUFFER, "SN": BUFFER, "A": BUFFER, "GM": "pe", "SD": "pe"}
        keeps = on | {"QK", "SN", "A"}
        tiles = max(1, choice.p1 // width)
        e = lowered.einsum("QK")
        nests["QK"] = loop_nest(
            e, arch, "pe_2d", outer, [("p", tiles), ("m", s["M"] // min(width, s["M"])), ("e", s["E"])],
            ("m", "p"), keeps,
        )  # fmt: skip
        e = lowered.einsum("AV")
        nests["AV"] = loop_nest(
            e, arch, "pe_2d", outer, [("p", tiles), ("f", max(1, s["F"] // width)), ("m", s["M"])],
            ("f", "p"), keeps,
        )  # fmt: skip
        for name in SOFTMAX:
            nest = loop_nest(lowered.einsum(name), arch, "pe_1d", outer, [("p", tiles), ("m", s["M"])], ("p",), keeps)
            # a block narrower than the 1-D array spreads the keys over the PEs its queries leave
            nests[name] = share_pes(nest, "m", arch.array("pe_1d").shape[-1] // choice.p1)
        forwarded = (("SN", "SD", "pe"),)
        in_place = (("SN", "QK"), ("A", "SN"))
    else:
        placement = {"QK": "dram", "SN": BUFFER, "A": "dram", "GM": "pe", "SD": "pe"}
        keeps = on
        m_tiles = s["M"] // min(width, s["M"])
        for name, var in (("QK", "e"), ("AV", "f")):
            nests[name] = loop_nest(
                lowered.einsum(name), arch, "pe_2d", outer, [("m", m_tiles), ("p", choice.p1)], (var, "m"), keeps
            )
        nests.update(rowwise_softmax(lowered, arch))
        forwarded = ROWWISE_FORWARDED
        in_place = (("SN", "QK"),)
    return CascadeMapping(
        name=f"flat-{choice.stationarity}-{choice.p1}",
        einsums=nests,
        placement=placement,
        phases=(PHASE,),
        in_place=in_place,
        forwarded=forwarded,
        spill=True,
        notes=(choice.describe(s["P"]),),
    )


ROWWISE_FORWARDED = (("QK", "SN", BUFFER), ("SN", "SD", "pe"))
"""The row-wise softmax re-reads the score row its max pass staged, and sums SN as it is produced."""


def rowwise_softmax(lowered: LoweredCascade, arch: ArchSpec) -> dict:
    """Softmax Einsums streaming one query row at a time through the buffer, M over the 1-D PEs.

    The scores come from DRAM into the buffer once per row; SN overwrites them in place; A goes to DRAM.
    """
    s = lowered.sizes
    width = arch.array("pe_1d").shape[-1]
    row_outer = [("b", s["B"]), ("h", s["H"]), ("p", s["P"])]
    m_tiles = [("m", s["M"] // min(width, s["M"]))]
    return {
        name: loop_nest(lowered.einsum(name), arch, "pe_1d", row_outer, m_tiles, ("m",), {"QK", "SN"})
        for name in SOFTMAX
    }


def flat_choices(p: int, width: int, row_blocks: Sequence[int] | None = None) -> list[FlatChoice]:
    """Every point of FLAT's choice space, coarsest granularity first (granularities: module docstring)."""
    blocks = block_sizes(p, width, row_blocks)
    out = []
    for stationarity in ("output", "weight"):
        for p1 in blocks:
            for bits in itertools.product((False, True), repeat=4):
                on = frozenset(t for t, b in zip(("Q", "K", "V", "AV"), bits, strict=True) if b)
                out.append(FlatChoice(stationarity, p1, on))
    return out


def fits_flat_rule(lowered: LoweredCascade, arch: ArchSpec, mapping: CascadeMapping) -> bool:
    """FLAT's sizing rule: the buffered tiles fit, not counting the hand-off double buffers."""
    held, _ = occupancy_parts(lowered, mapping, mapping.phases[0], BUFFER)
    return held + 0.0 <= arch.level(BUFFER).capacity_words  # the occupancy with no hand-off in the buffer


def fits_buffer(lowered: LoweredCascade, arch: ArchSpec, mapping: CascadeMapping) -> bool:
    """The cost model's own accounting: the buffer occupancy, hand-off double buffers included, fits."""
    return phase_occupancy(lowered, mapping, mapping.phases[0], BUFFER) <= arch.level(BUFFER).capacity_words


def search_flat(
    lowered: LoweredCascade, arch: ArchSpec, row_blocks: Sequence[int] | None = None, policy: str = "model"
) -> tuple[CascadeMapping, CascadeCost, Mapping[str, int]]:
    """FLAT's choice for a 3-pass cascade at fixed sizes under a policy (module docstring): (mapping, cost,
    search statistics)."""
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: expected one of {', '.join(POLICIES)}")
    if policy == "study":
        return _study_policy(lowered, arch, row_blocks)
    width = arch.array("pe_2d").shape[-1]
    candidates = flat_choices(lowered.sizes["P"], width, row_blocks)
    groups: dict[tuple, dict[int, FlatChoice]] = {}
    for c in candidates:
        groups.setdefault((c.stationarity, c.on_chip), {})[c.p1] = c
    costed: list[tuple[CascadeCost, CascadeMapping, bool]] = []
    for by_p1 in groups.values():
        mappings: dict[int, CascadeMapping] = {}

        def fits(p1: int, by_p1=by_p1, mappings=mappings) -> bool:
            if p1 not in mappings:
                mappings[p1] = flat_mapping(lowered, arch, by_p1[p1])
            return fits_buffer(lowered, arch, mappings[p1])

        for p1 in pick_blocks(sorted(by_p1, reverse=True), fits) if row_blocks is None else sorted(by_p1):
            mapping = mappings.get(p1) or flat_mapping(lowered, arch, by_p1[p1])
            costed.append((evaluate_cascade(lowered, arch, mapping), mapping, fits_buffer(lowered, arch, mapping)))
    stats = {"candidates": len(candidates), "evaluated": len(costed)}
    feasible = [c for c in costed if c[0].feasible]
    pool = [c for c in feasible if c[2]] or feasible
    if not pool:
        raise SpecError(
            f"no FLAT choice fits {arch.name} for {lowered.name} at {dict(lowered.sizes)}: "
            + "; ".join(costed[0][0].infeasible)
        )
    cost, mapping, _ = min(pool, key=lambda c: (c[0].latency_s, c[0].energy_pj))
    return mapping, cost, stats


def _study_policy(
    lowered: LoweredCascade, arch: ArchSpec, row_blocks: Sequence[int] | None
) -> tuple[CascadeMapping, CascadeCost, Mapping[str, int]]:
    """The FuseMax study's FLAT policy (module docstring)."""
    width = arch.array("pe_2d").shape[-1]
    candidates = flat_choices(lowered.sizes["P"], width, row_blocks)
    evaluated = 0

    def best(group: list[FlatChoice]):
        nonlocal evaluated
        fitting = [m for m in (flat_mapping(lowered, arch, c) for c in group) if fits_flat_rule(lowered, arch, m)]
        costs = [(evaluate_cascade(lowered, arch, m), m) for m in fitting]
        evaluated += len(costs)
        return min(costs, key=lambda cm: (cm[0].latency_s, cm[0].energy_pj), default=None)

    # Fused output-stationary at the coarsest granularity whose score block fits ...
    for p1 in sorted({c.p1 for c in candidates}, reverse=True):
        found = best([c for c in candidates if c.stationarity == "output" and c.p1 == p1])
        if found:
            return found[1], found[0], {"candidates": len(candidates), "evaluated": evaluated}
    # ... else weight-stationary, where the scores go through DRAM and any granularity may win.
    found = best([c for c in candidates if c.stationarity == "weight"])
    if found:
        return found[1], found[0], {"candidates": len(candidates), "evaluated": evaluated}
    raise SpecError(f"no FLAT choice fits the {BUFFER} of {arch.name} for {lowered.name} at {dict(lowered.sizes)}")
