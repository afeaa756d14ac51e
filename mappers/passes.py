"""Multi-pass fusion search: FLAT-class designs derived from the cascade and the architecture alone.

A multi-pass cascade (the 3-pass softmax, the 2-pass one with deferred normalisation) alternates
contractions (``QK``, ``AV``) with element-wise and reduction Einsums (the softmax). Nothing here knows
tensor or Einsum names: every rule reads the lowered cascade (variables, incidence, operators, producer and
consumers) and the architecture (array kinds and operators, storage levels).

**Derived from the cascade** (:func:`plan_passes`):

- *batch variables*: those that index every tensor (``b``, ``h``); they are looped over at DRAM;
- the *query variable*: the output's largest variable that is not a batch variable (``p``); the fusion
  granularity is a block of P1 of its values;
- the *pass variable*: the one reduced by the most Einsums (``m``: max, sum and the AV contraction);
  an Einsum's *pass* is that of its producers, plus one when it walks the pass variable and reads a value
  that needed a whole traversal of it (3-pass: QK GM = 1, SN SD = 2, A AV = 3);
- *contractions*: Einsums whose operators include ``mac`` (a product summed over a variable two inputs
  share). They run on a 2-D array that supports their operators; every other Einsum (the softmax) on any
  array, 1-D or 2-D, that supports its operators (each Einsum's candidates enumerated: the binding is
  searched, and the mapping's notes say where the softmax ran);
- a contraction's *weight*: its input not indexed by the query variable (``K``, ``V``).

**Searched** (:func:`pass_choices`), each point a :class:`PassChoice`:

- *hand-offs*: ``fused`` keeps every intermediate on chip (the buffer or the PE registers) and the 1-D
  array runs blocks of P1 query rows, the queries spread over its PEs; ``spilled`` sends every value that
  crosses from one array to another through DRAM and the 1-D array streams one query row at a time, the
  pass variable spread over its PEs;
- per contraction, its *dataflow*: output-stationary (the output's query variable over the array's
  columns, its other free variable over the rows, the contracted variables iterated while the sums stay in
  the PEs; P1 query rows in tiles of the column count) or weight-stationary (the weight's pass variable
  over the columns, tiled at the buffer, its other variable over the rows, P1 query rows streamed
  through), or *reduce* (output-stationary with the contracted pass variable over the rows and the partial
  sums added across them, the queries over the columns, the output's other variables iterated: FuseMax's
  SLNV, which keeps every row busy when the output's other variable is narrower than the rows). With
  ``pairing="flat"`` (the default) the dataflow is tied to the hand-offs as FLAT ties it, fused with
  output-stationary and spilled with weight-stationary; ``pairing="searched"`` (the multi-pass mapper's)
  adds reduce to the fused hand-offs' choices, per contraction; ``pairing="any"`` chooses any of the three per
  contraction for both hand-offs;
- the *granularity* P1: the whole query rank ("head") or a block of query rows that divides it. By default
  every power-of-two block from an eighth of the 2-D array's columns up is a candidate, and per point of
  the rest of the space the head, the largest block whose buffer occupancy (hand-offs included: the cost
  model's own accounting) fits and the next larger one are costed (:func:`iter_pass_designs`); with
  ``row_blocks`` given, exactly ``row_blocks`` x the columns (the FuseMax study's FLAT: 1, 2, 4) and every
  one is costed;
- which *primary tensors* (the cascade's inputs and outputs, all in DRAM) the buffer also holds.

**Placement rules** (model assumptions, as FLAT applies them):

- an intermediate read only on its producer's array and not indexed by the pass variable (a per-query
  statistic: GM, SD) stays in the PE registers;
- otherwise it lives in the buffer when fused; when spilled, it goes through DRAM if an Einsum on another
  array reads it, else it lives in the buffer (one row at a time);
- when spilled, a value from DRAM that the 1-D array reads in more than one pass is staged in the buffer
  by its first reader, and later readers find it there (FLAT's row-wise softmax re-reading its score row);
- a reader on the producer's array in the producer's pass takes the value as the PE produces it (SD sums
  SN on the fly);
- an element-wise Einsum (no reduced variable) whose output has the same variables as an intermediate it
  is the last reader of overwrites that intermediate in the buffer (SN over QK, A over SN);
- one phase: the arrays overlap, each running its Einsums back to back; an overflowing buffer spills the
  excess to DRAM (the cost model's spill rule);
- a non-contraction on a 2-D array spreads the pass variable (else its largest other variable) over the
  rows and the query block over the columns, for either hand-off mode.

For the 3-pass cascade, ``fused`` with every contraction output-stationary and ``spilled`` with every
contraction weight-stationary are FLAT's two dataflows (:mod:`mappers.flat`), at the same cost;
:func:`flat_policy` picks among them: the fastest design of FLAT's dataflows whose buffer occupancy fits
(no self-inflicted spill), else the fastest that spills. ``policy="study"`` is the FuseMax study's rule
instead (fused output-stationary at the coarsest granularity that fits FLAT's sizing rule, which leaves
out the hand-off double buffers the cost model charges); only the study's own mappings use it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from einsum.errors import SpecError
from einsum.lower import LoweredCascade, LoweredEinsum
from mappers.templates import loop_nest
from simulator.cost import (
    CascadeCost,
    evaluate_cascade,
    nest_compute_cycles,
    occupancy_parts,
    phase_occupancy,
    shared_buffer,
)
from simulator.mapping import CascadeMapping, EinsumMapping, Phase
from simulator.specs import ArchSpec

__all__ = [
    "PassChoice",
    "PassDesign",
    "PassPlan",
    "choice_compute_s",
    "fits_buffer",
    "fits_sizing_rule",
    "flat_policy",
    "granularities",
    "iter_pass_designs",
    "pass_choices",
    "pass_mapping",
    "pass_space",
    "plan_passes",
    "recurrence_refusal",
    "search_pass_designs",
]

SMALLEST_BLOCK = 8
"""The searched query blocks go down to the 2-D array's columns / this (a block narrower than the columns
leaves columns idle; below an eighth it never pays on any preset)."""

FUSIONS = ("fused", "spilled")
DATAFLOWS = ("output", "weight", "reduce")
PAIRINGS = ("flat", "searched", "any")
"""``flat``: FLAT's pairing, fused hand-offs with output-stationary contractions and spilled ones with
weight-stationary contractions; ``searched``: FLAT's, plus reduce for the fused hand-offs, per contraction;
``any``: every contraction's dataflow chosen independently for both."""


@dataclass(frozen=True)
class PassPlan:
    """What the search derives from a lowered cascade and an architecture (module docstring)."""

    lowered: LoweredCascade
    batch_vars: tuple[str, ...]
    """Variables that index every tensor, looped over at DRAM."""
    query_var: str
    """The output's largest non-batch variable: the fusion granularity's variable."""
    pass_var: str
    """The variable reduced by the most Einsums: one traversal of it is a pass."""
    var_sizes: Mapping[str, int]
    """Variable -> its size (number of values)."""
    passes: Mapping[str, int]
    """Einsum -> the pass it runs in."""
    contractions: tuple[str, ...]
    """Einsums with a ``mac``, in dataflow order."""
    weights: Mapping[str, str | None]
    """Contraction -> its input not indexed by the query variable (None: no weight-stationary dataflow)."""
    arrays: Mapping[str, tuple[str, ...]]
    """Einsum -> the arrays that may run it (2-D for contractions, 1-D for the rest)."""
    primary: tuple[str, ...]
    """The cascade's inputs and outputs (in DRAM; the buffer may also hold them)."""
    dram: str
    """The outermost storage level."""
    buffer: str
    """The shared on-chip buffer (outermost bounded level with one instance)."""
    one_d: frozenset[str] = frozenset()
    """The architecture's 1-D arrays."""
    nests: dict = field(default_factory=dict, compare=False, repr=False)
    """Memo of :func:`einsum_nest` (the choices of a search share most of their loop nests)."""
    einsum_cycles: dict = field(default_factory=dict, compare=False, repr=False)
    """Memo of :func:`choice_compute_s`'s per-Einsum cycles, by what the nest's loops depend on."""
    handoffs: dict = field(default_factory=dict, compare=False, repr=False)
    """Memo of :func:`_handoffs`, by hand-off mode and binding."""


@dataclass(frozen=True)
class PassChoice:
    """One point of the multi-pass space (module docstring)."""

    fusion: str
    """``fused``: intermediates on chip, 1-D array over P1-row blocks; ``spilled``: cross-array values
    through DRAM, 1-D array row by row."""
    dataflow: tuple[tuple[str, str], ...]
    """(contraction, ``output`` or ``weight``) per contraction, in dataflow order."""
    p1: int
    """Query rows per fused block (the whole query rank: head granularity)."""
    on_chip: frozenset[str]
    """Primary tensors the buffer holds."""
    binding: tuple[tuple[str, str], ...]
    """(Einsum, array) for every Einsum."""

    def is_flat(self) -> bool:
        """FLAT's pairing: fused with output-stationary contractions, or spilled with weight-stationary ones."""
        want = "output" if self.fusion == "fused" else "weight"
        return all(d == want for _, d in self.dataflow)

    def describe(self, plan: PassPlan) -> str:
        """The choice in words, e.g. ``FLAT: output-stationary, head, on chip: none`` (plus ``; softmax on
        pe_2d`` where any Einsum other than a contraction runs on a 2-D array)."""
        q = plan.var_sizes[plan.query_var]
        gran = "head" if self.p1 == q else f"row block P1={self.p1}"
        on = ",".join(sorted(self.on_chip)) or "none"
        kinds = {d for _, d in self.dataflow}
        if len(kinds) == 1:
            flow = f"{kinds.pop()}-stationary"
        else:
            flow = ", ".join(f"{c} {d}" for c, d in self.dataflow) + "-stationary"
        head = "FLAT" if self.is_flat() else f"{self.fusion} hand-offs"
        return f"{head}: {flow}, {gran}, on chip: {on}{self.softmax_where(plan)}"

    def softmax_where(self, plan: PassPlan) -> str:
        """``; softmax on A`` (or ``on A: X, Y; B: Z``) where the non-contractions do not all run on 1-D arrays."""
        where = {e: a for e, a in self.binding if e not in plan.contractions}
        if all(a in plan.one_d for a in where.values()):
            return ""
        arrays = sorted(set(where.values()))
        if len(arrays) == 1:
            return f"; softmax on {arrays[0]}"
        return "; softmax on " + "; ".join(f"{a}: {', '.join(e for e in where if where[e] == a)}" for a in arrays)


def _reduced(e: LoweredEinsum) -> tuple[str, ...]:
    """Variables of the Einsum that do not index its output."""
    return tuple(v for v, on in zip(e.vars, e.incidence[0], strict=True) if not on)


_TENSOR_VARS: dict[tuple[int, str], tuple[LoweredEinsum, frozenset[str]]] = {}


def _tensor_vars(e: LoweredEinsum, tensor: str) -> frozenset[str]:
    """Variables of the Einsum that index one of its tensors (memoized by the Einsum's identity: the entry keeps
    it alive)."""
    hit = _TENSOR_VARS.get((id(e), tensor))
    if hit is not None and hit[0] is e:
        return hit[1]
    row = e.incidence[e.tensors.index(tensor)]
    out = frozenset(v for v, on in zip(e.vars, row, strict=True) if on)
    if len(_TENSOR_VARS) >= 4096:
        _TENSOR_VARS.clear()
    _TENSOR_VARS[id(e), tensor] = (e, out)
    return out


def _ops(array) -> set[str]:
    return {o.name for o in array.ops}


def recurrence_refusal(lowered: LoweredCascade) -> str | None:
    """Why the planner cannot map ``lowered``, or None: an Einsum that reads a value written after it in
    dataflow order (a recurrence's previous step: ``RM[m1+1] = max(RM[m1], ...)``, or the carry of a reversed
    one in a derived backward cascade, ``dRO_rev`` reading ``dRO_carry``). Its steps must run one after
    another, and the planner's loop nests (module docstring) spread and tile every variable as if the
    Einsums' points were independent, so it maps only cascades without recurrences."""
    position = {e.name: i for i, e in enumerate(lowered.einsums)}
    carried = [
        (e.name, t) for e in lowered.einsums for t in e.inputs if t in position and position[t] >= position[e.name]
    ]
    if not carried:
        return None
    reads = ", ".join(f"{e} reads {t}" for e, t in carried[:3]) + (", ..." if len(carried) > 3 else "")
    return (
        f"{lowered.name} has recurrences ({reads}: a step reads the one before it); the multi-pass planner maps "
        "cascades whose Einsums' points are independent (the 2- and 3-pass softmax), not steps that must run in "
        "order; the fused mapper maps recurrences inside its tile loop, in one pass over the key rank"
    )


def plan_passes(lowered: LoweredCascade, arch: ArchSpec) -> PassPlan:
    """Derive batch, query and pass variables, passes, contractions, weights and candidate arrays.

    Raises :class:`SpecError` when an Einsum's operators are supported by no array of the right kind,
    naming the Einsum, its operators and what each array supports, and when the cascade has a recurrence
    (:func:`recurrence_refusal`).
    """
    why = recurrence_refusal(lowered)
    if why:
        raise SpecError(why)
    einsums = lowered.einsums
    var_sizes: dict[str, int] = {}
    for e in einsums:
        for v in e.vars:
            var_sizes[v] = e.var_size(v)
    tensor_vars = [_tensor_vars(e, t) for e in einsums for t in e.tensors]
    batch = tuple(v for v in einsums[0].vars if all(v in tv for tv in tensor_vars))
    output = lowered.einsum(lowered.outputs[0])
    free = [v for v in output.vars if v not in batch and v not in _reduced(output)]
    if not free:
        raise SpecError(f"{lowered.name}: output {output.name} has no non-batch variable to fuse over")
    query = max(free, key=output.var_size)
    counts: dict[str, int] = {}
    for e in einsums:
        for v in _reduced(e):
            counts[v] = counts.get(v, 0) + 1
    if not counts:
        raise SpecError(f"{lowered.name}: no Einsum reduces a variable; a multi-pass search needs one")
    pass_var = max(counts, key=lambda v: (counts[v], var_sizes[v]))

    passes: dict[str, int] = {}
    for e in einsums:
        walks = pass_var in e.vars
        n = 1 if walks else 0
        for t in e.inputs:
            p = lowered.producer.get(t)
            if p is None:
                continue
            needs_whole = pass_var in _reduced(lowered.einsum(p))
            n = max(n, passes[p] + (1 if needs_whole and walks else 0))
        passes[e.name] = n

    contractions = tuple(e.name for e in einsums if "mac" in e.ops_per_point)
    if not contractions:
        raise SpecError(
            f"{lowered.name}: no contraction (an Einsum summing a product, lowered to mac); the multi-pass "
            "search fuses contractions on a 2-D array with the other Einsums on a 1-D array"
        )
    weights = {}
    for name in contractions:
        e = lowered.einsum(name)
        unqueried = [t for t in e.inputs if query not in _tensor_vars(e, t)]
        weights[name] = unqueried[0] if len(unqueried) == 1 else None

    arrays = {}
    for e in einsums:
        kinds = ("2d",) if e.name in contractions else ("1d", "2d")
        able = tuple(
            a.name for kind in kinds for a in arch.arrays if a.kind == kind and set(e.ops_per_point) <= _ops(a)
        )
        if not able:
            supported = "; ".join(f"{a.name} ({a.kind}): {', '.join(o.name for o in a.ops)}" for a in arch.arrays)
            role = (
                "a contraction (mac) runs on a 2-D array"
                if kinds == ("2d",)
                else "the other Einsums run on any array that supports their operators"
            )
            which = "2-D" if kinds == ("2d",) else ""
            raise SpecError(
                f"{lowered.name}: {e.name} needs operators {', '.join(sorted(e.ops_per_point))}, which no "
                f"{which + ' ' if which else ''}array of {arch.name} supports ({role}); the arrays support: {supported}"
            )
        arrays[e.name] = able

    buffer = shared_buffer(arch)
    if buffer is None or buffer == arch.levels[0].name:
        raise SpecError(
            f"{arch.name}: the cost model's shared buffer is the outermost bounded level with one instance "
            f"({buffer or 'none here'}); a multi-pass fusion search needs one below the outermost level "
            f"{arch.levels[0].name} (give {arch.levels[0].name} capacity_words: null and a bounded on-chip buffer)"
        )
    return PassPlan(
        lowered=lowered,
        batch_vars=batch,
        query_var=query,
        pass_var=pass_var,
        var_sizes=var_sizes,
        passes=passes,
        contractions=contractions,
        weights=weights,
        arrays=arrays,
        primary=(*lowered.inputs, *lowered.outputs),
        dram=arch.levels[0].name,
        buffer=buffer,
        one_d=frozenset(a.name for a in arch.arrays if a.kind == "1d"),
    )


def granularities(plan: PassPlan, arch: ArchSpec, row_blocks: Sequence[int] | None = None) -> list[int]:
    """P1 candidates, coarsest first: the whole query rank, and row blocks that divide it (``row_blocks`` x the
    2-D columns; default: every power-of-two block down to the columns / :data:`SMALLEST_BLOCK`)."""
    q = plan.var_sizes[plan.query_var]
    cols = max(arch.array(a).shape[-1] for c in plan.contractions for a in plan.arrays[c])
    return block_sizes(q, cols, row_blocks)


def block_sizes(q: int, cols: int, row_blocks: Sequence[int] | None = None) -> list[int]:
    """Query-block sizes, coarsest first: ``q`` itself and the blocks below it that divide it (``row_blocks``
    x ``cols`` when given, else powers of two from ``cols`` / :data:`SMALLEST_BLOCK`)."""
    if row_blocks is not None:
        return sorted({q} | {k * cols for k in row_blocks if k * cols < q and q % (k * cols) == 0}, reverse=True)
    low = max(1, cols // SMALLEST_BLOCK)
    out, b = {q}, 1
    while b < q:
        if b >= low and q % b == 0:
            out.add(b)
        b *= 2
    return sorted(out, reverse=True)


def pass_choices(
    plan: PassPlan, arch: ArchSpec, row_blocks: Sequence[int] | None = None, pairing: str = "flat"
) -> list[PassChoice]:
    """Every point of the space: hand-offs x dataflow per contraction x P1 x on-chip tensors x binding.

    ``pairing`` (:data:`PAIRINGS`): ``flat`` ties the contractions' dataflow to the hand-offs as FLAT does,
    ``any`` enumerates each contraction's dataflow independently.
    """
    keys, p1s, ons = pass_space(plan, arch, row_blocks, pairing)
    by_mode: dict[tuple, list[tuple]] = {}
    for fusion, dataflow, binding in keys:
        by_mode.setdefault((fusion, dataflow), []).append(binding)
    return [
        PassChoice(fusion, dataflow, p1, on, binding)
        for (fusion, dataflow), bindings in by_mode.items()
        for p1 in p1s
        for on in ons
        for binding in bindings
    ]


def pass_space(
    plan: PassPlan, arch: ArchSpec, row_blocks: Sequence[int] | None = None, pairing: str = "flat"
) -> tuple[list[tuple], list[int], list[frozenset[str]]]:
    """The space of :func:`pass_choices` by its parts: the (hand-offs, dataflow, binding) groups in the order
    their choices come, the query blocks (coarsest first) and the on-chip sets (none first); the choices are
    every group x block x set, ordered by hand-offs and dataflow, then block, then set, then binding."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing {pairing!r}: expected one of {', '.join(PAIRINGS)}")
    if row_blocks is not None and (not row_blocks or any(not isinstance(k, int) or k < 1 for k in row_blocks)):
        raise ValueError(f"row_blocks {tuple(row_blocks)!r}: expected positive integers (multiples of the array width)")
    names = [e.name for e in plan.lowered.einsums]
    bindings = [tuple(zip(names, combo, strict=True)) for combo in itertools.product(*(plan.arrays[n] for n in names))]
    keys = []
    for fusion in FUSIONS:
        paired = DATAFLOWS[0] if fusion == "fused" else DATAFLOWS[1]
        if pairing == "flat":
            flows = [(paired if plan.weights[c] else DATAFLOWS[0],) for c in plan.contractions]
        elif pairing == "searched":
            fused = ("output", "reduce") if fusion == "fused" else (paired,)
            flows = [fused if plan.weights[c] or fusion == "fused" else ("output",) for c in plan.contractions]
        else:
            flows = [DATAFLOWS if plan.weights[c] else ("output", "reduce") for c in plan.contractions]
        for flow in itertools.product(*flows):
            dataflow = tuple(zip(plan.contractions, flow, strict=True))
            keys += [(fusion, dataflow, binding) for binding in bindings]
    ons = [
        frozenset(t for t, b in zip(plan.primary, bits, strict=True) if b)
        for bits in itertools.product((False, True), repeat=len(plan.primary))
    ]
    return keys, granularities(plan, arch, row_blocks), ons


def pass_mapping(plan: PassPlan, arch: ArchSpec, choice: PassChoice) -> CascadeMapping:
    """The cascade mapping of one choice (rules in the module docstring)."""
    lowered = plan.lowered
    binding = dict(choice.binding)
    fused = choice.fusion == "fused"
    placement, buffered, staged, forwarded = _handoffs(plan, choice.fusion, choice.binding)
    intermediates = [e.name for e in lowered.einsums if e.name not in lowered.outputs]

    dataflow = dict(choice.dataflow)
    nests: dict[str, EinsumMapping] = {}
    for e in lowered.einsums:
        keeps = choice.on_chip | buffered if e.name in plan.contractions else choice.on_chip | buffered | staged
        nests[e.name] = _nest_for(plan, arch, e, binding[e.name], fused, choice.p1, dataflow.get(e.name), keeps)

    in_place = []
    for e in lowered.einsums:
        if _reduced(e) or e.name not in nests[e.name].keep[1]:
            continue
        out_vars = _tensor_vars(e, e.name)
        for t in e.inputs:
            if (
                t in intermediates
                and _tensor_vars(e, t) == out_vars
                and lowered.consumers[t][-1] == e.name
                and t in nests[e.name].keep[1]
            ):
                in_place.append((e.name, t))
                break

    stage = {a.name: tuple(n for n in binding if binding[n] == a.name) for a in arch.arrays}
    phase = Phase(stages=({a: es for a, es in stage.items() if es},))
    flows = "-".join(d[0] for _, d in choice.dataflow)
    return CascadeMapping(
        name=f"passes-{choice.fusion}-{flows}s-P1={choice.p1}",
        einsums=nests,
        placement=dict(placement),
        phases=(phase,),
        in_place=tuple(in_place),
        forwarded=forwarded,
        spill=True,
        notes=(choice.describe(plan),),
    )


def _handoffs(
    plan: PassPlan, fusion: str, binding: tuple[tuple[str, str], ...]
) -> tuple[Mapping[str, str], frozenset[str], frozenset[str], tuple[tuple[str, str, str], ...]]:
    """Where the hand-offs of a choice live (placement rules in the module docstring): the intermediates'
    placement, those in the buffer, those staged there, and the (tensor, reader, source) forwards. They depend on
    the hand-off mode and the binding alone (memoized in the plan: the callers only read them)."""
    key = (fusion, binding)
    hit = plan.handoffs.get(key)
    if hit is not None:
        return hit
    lowered = plan.lowered
    where = dict(binding)
    fused = fusion == "fused"
    intermediates = [e.name for e in lowered.einsums if e.name not in lowered.outputs]
    placement: dict[str, str] = {}
    for t in intermediates:
        readers = lowered.consumers.get(t, ())
        same_array = all(where[r] == where[t] for r in readers)
        per_query = plan.pass_var not in _tensor_vars(lowered.einsum(t), t)
        if same_array and per_query:
            placement[t] = "pe"
        elif fused or same_array:
            placement[t] = plan.buffer
        else:
            placement[t] = plan.dram
    buffered = frozenset(t for t, at in placement.items() if at == plan.buffer)

    one_d = [e.name for e in lowered.einsums if e.name not in plan.contractions]
    staged: set[str] = set()
    forwarded: list[tuple[str, str, str]] = []
    for t in intermediates:
        if placement[t] == "pe":
            continue
        readers = lowered.consumers.get(t, ())
        for r in readers:
            if where[r] == where[t] and plan.passes[r] == plan.passes[t]:
                forwarded.append((t, r, "pe"))  # taken as the PE produces it
        if not fused and placement[t] == plan.dram:
            row_readers = [r for r in readers if r in one_d]
            if len({plan.passes[r] for r in row_readers}) > 1:
                staged.add(t)  # staged in the buffer by its first row-wise reader, re-read there later
                done = {r for x, r, _ in forwarded if x == t}
                forwarded += [(t, r, plan.buffer) for r in row_readers[1:] if r not in done]
    out = plan.handoffs[key] = (placement, buffered, frozenset(staged), tuple(forwarded))
    return out


def _nest_for(
    plan: PassPlan, arch: ArchSpec, e: LoweredEinsum, array: str, fused: bool, p1: int, flow: str | None, keeps
) -> EinsumMapping:
    """One Einsum's loop nest in a choice (module docstring): a contraction by its dataflow ``flow``, another
    Einsum on a 2-D array over blocks of P1 query rows, on a 1-D array over blocks (``fused``) or row by row."""
    q = plan.var_sizes[plan.query_var]
    outer = [(v, plan.var_sizes[v]) for v in plan.batch_vars]
    block_outer = [*outer, (plan.query_var, q // p1)]
    if e.name in plan.contractions:
        return _contraction_nest(plan, arch, e, array, block_outer, p1, flow, keeps)
    if arch.array(array).kind == "2d":
        return _grid_nest(plan, arch, e, array, block_outer, p1, keeps)
    if fused:
        return _block_nest(plan, arch, e, array, block_outer, p1, keeps)
    return _row_nest(plan, arch, e, array, [*outer, (plan.query_var, q)], keeps)


def choice_compute_s(
    plan: PassPlan, arch: ArchSpec, fusion: str, dataflow: tuple, binding: tuple[tuple[str, str], ...], p1: int
) -> dict[str, float]:
    """Seconds each array computes in the choices (fusion, dataflow, binding, P1), with any primary tensors on
    chip, without building their mappings: their nests' cycles (memoized per Einsum by what its loops depend on:
    its array, the hand-off mode, P1 and its dataflow; what the levels keep does not count), summed as
    :func:`evaluate_cascade` sums its ``compute_s_by_array`` (same terms, same order: the same floats)."""
    fused = fusion == "fused"
    flows = dict(dataflow)
    _, buffered, staged, _ = _handoffs(plan, fusion, binding)
    out = {a.name: 0.0 for a in arch.arrays}
    for a in arch.arrays:
        for name, array in binding:
            if array != a.name:
                continue
            key = (id(arch), name, array, fused, p1, flows.get(name))
            hit = plan.einsum_cycles.get(key)
            if hit is None or hit[0] is not arch:
                e = plan.lowered.einsum(name)
                keeps = buffered if name in plan.contractions else buffered | staged
                em = _nest_for(plan, arch, e, array, fused, p1, flows.get(name), keeps)
                hit = plan.einsum_cycles[key] = (arch, nest_compute_cycles(e, arch, em))
            out[array] += hit[1] / arch.clock_hz
    return out


def einsum_nest(plan, arch, e, array, outer, middle, spatial, keeps) -> EinsumMapping:
    """:func:`mappers.templates.loop_nest` at the plan's buffer, with the architecture's own DRAM name (memoized
    in the plan, per architecture: the same arguments give the same nest object)."""
    key = (id(arch), e.name, array, tuple(outer), tuple(middle), tuple(spatial), frozenset(keeps) & set(e.tensors))
    hit = plan.nests.get(key)
    if hit is not None and hit[0] is arch:
        return hit[1]
    nest = loop_nest(e, arch, array, outer, middle, spatial, keeps, buffer=plan.buffer)
    nest = replace(nest, levels=(plan.dram, *nest.levels[1:]))
    plan.nests[key] = (arch, nest)
    return nest


def _contraction_nest(plan, arch, e, array, outer, p1, dataflow, keeps) -> EinsumMapping:
    """A contraction on a 2-D array, output- or weight-stationary (module docstring)."""
    rows, cols = arch.array(array).shape[0], arch.array(array).shape[-1]
    q = plan.query_var
    if dataflow == "reduce":
        contracted = plan.pass_var if plan.pass_var in _reduced(e) else max(_reduced(e), key=e.var_size)
        n = e.var_size(contracted)
        middle = [(q, max(1, p1 // cols)), (contracted, n // min(rows, n))]
        middle += [(v, e.var_size(v)) for v in e.vars if v not in (*plan.batch_vars, q, contracted)]
        return einsum_nest(plan, arch, e, array, outer, middle, (contracted, q), keeps)
    if dataflow == "output":
        others = [v for v in _tensor_vars(e, e.name) if v not in plan.batch_vars and v != q]
        row_var = max(others, key=e.var_size, default=None)
        n = e.var_size(row_var) if row_var else 1
        middle = [(q, max(1, p1 // cols))]
        middle += [(row_var, n // min(rows, n))] if row_var else []
        middle += [(v, e.var_size(v)) for v in _reduced(e)]
        return einsum_nest(plan, arch, e, array, outer, middle, (row_var, q), keeps)
    weight = plan.weights[e.name]
    wvars = [v for v in e.vars if v in _tensor_vars(e, weight) and v not in plan.batch_vars]
    col_var = plan.pass_var if plan.pass_var in wvars else max(wvars, key=e.var_size)
    row_var = max((v for v in wvars if v != col_var), key=e.var_size, default=None)
    n = e.var_size(col_var)
    return einsum_nest(plan, arch, e, array, outer, [(col_var, n // min(cols, n)), (q, p1)], (row_var, col_var), keeps)


def _block_nest(plan, arch, e, array, outer, p1, keeps) -> EinsumMapping:
    """A 1-D Einsum over blocks of P1 query rows, the queries spread over the PEs (and, in a block narrower
    than the PEs, the pass variable over the PEs the queries leave)."""
    cols = max(arch.array(a).shape[-1] for c in plan.contractions for a in plan.arrays[c])
    q = plan.query_var
    middle = [(q, max(1, p1 // cols))] + [(v, e.var_size(v)) for v in e.vars if v not in plan.batch_vars and v != q]
    nest = einsum_nest(plan, arch, e, array, outer, middle, (q,), keeps)
    return share_pes(nest, plan.pass_var, arch.array(array).shape[-1] // p1)


def share_pes(nest: EinsumMapping, var: str, k: int) -> EinsumMapping:
    """The nest with ``var``'s buffer-level loop divided by the largest divisor of its bound up to ``k``, that
    factor spread over the first array axis beside what it spreads already (PEs a narrow block leaves idle)."""
    loops = list(nest.temporal[1])
    at = next((i for i, (v, _) in enumerate(loops) if v == var), None)
    if k <= 1 or at is None:
        return nest
    bound = loops[at][1]
    f = max(d for d in range(1, min(k, bound) + 1) if bound % d == 0)
    if f == 1:
        return nest
    loops[at] = (var, bound // f)
    loops = [(v, n) for v, n in loops if n > 1]
    spatial = list(nest.spatial)
    spatial[0] = (*spatial[0], (var, f))
    return replace(nest, temporal=(nest.temporal[0], tuple(loops), *nest.temporal[2:]), spatial=tuple(spatial))


def _grid_nest(plan, arch, e, array, outer, p1, keeps) -> EinsumMapping:
    """A non-contraction on a 2-D array over blocks of P1 query rows: the pass variable (else the largest other
    one) over the rows, the queries over the columns."""
    rows, cols = arch.array(array).shape[0], arch.array(array).shape[-1]
    q = plan.query_var
    rest = [v for v in e.vars if v not in plan.batch_vars and v != q]
    row_var = plan.pass_var if plan.pass_var in rest else max(rest, key=e.var_size, default=None)
    middle = [(q, max(1, p1 // cols))]
    if row_var:
        n = e.var_size(row_var)
        middle.append((row_var, n // min(rows, n)))
    middle += [(v, e.var_size(v)) for v in rest if v != row_var]
    return einsum_nest(plan, arch, e, array, outer, middle, (row_var, q), keeps)


def _row_nest(plan, arch, e, array, outer, keeps) -> EinsumMapping:
    """A 1-D Einsum one query row at a time, the pass variable (else its largest one) over the PEs."""
    rest = [v for v in e.vars if v not in plan.batch_vars and v != plan.query_var]
    if not rest:
        return einsum_nest(plan, arch, e, array, outer, [], (), keeps)
    var = plan.pass_var if plan.pass_var in rest else max(rest, key=e.var_size)
    n = e.var_size(var)
    pes = arch.array(array).shape[-1]
    return einsum_nest(plan, arch, e, array, outer, [(var, n // min(pes, n))], (var,), keeps)


def fits_sizing_rule(plan: PassPlan, arch: ArchSpec, mapping: CascadeMapping) -> bool:
    """FLAT's sizing rule: the buffered tiles fit, not counting the double-buffered hand-offs between arrays."""
    capacity = arch.level(plan.buffer).capacity_words
    held, _ = occupancy_parts(plan.lowered, mapping, mapping.phases[0], plan.buffer)
    return held + 0.0 <= capacity  # the occupancy with no hand-off placed in the buffer


def fits_buffer(plan: PassPlan, arch: ArchSpec, mapping: CascadeMapping) -> bool:
    """The cost model's own test: the buffer occupancy, hand-off double buffers included, fits (no spill)."""
    capacity = arch.level(plan.buffer).capacity_words
    return all(phase_occupancy(plan.lowered, mapping, ph, plan.buffer) <= capacity for ph in mapping.phases)


def pick_blocks(blocks: Sequence[int], fits: Callable[[int], bool]) -> list[int]:
    """Of query blocks (coarsest first, occupancy falling with the block): the coarsest, the largest that fits
    and the next larger one (found by bisection); the coarsest and the finest when none fits."""
    if fits(blocks[0]):
        return [blocks[0]]
    if not fits(blocks[-1]):
        return sorted({blocks[0], blocks[-1]}, reverse=True)
    lo, hi = 0, len(blocks) - 1  # blocks[lo] does not fit, blocks[hi] fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(blocks[mid]) else (mid, hi)
    return sorted({blocks[0], blocks[lo], blocks[hi]}, reverse=True)


@dataclass(frozen=True)
class PassDesign:
    """One costed point of the space."""

    choice: PassChoice
    mapping: CascadeMapping
    cost: CascadeCost
    fits_rule: bool
    """Whether it fits FLAT's sizing rule (:func:`fits_sizing_rule`)."""
    fits: bool = True
    """Whether its buffer occupancy fits with the hand-offs the cost model charges (:func:`fits_buffer`)."""
    flat_own: bool = False
    """Whether it is one of FLAT's own dataflows: FLAT's pairing, every non-contraction on a 1-D array."""


def iter_pass_designs(
    plan: PassPlan,
    arch: ArchSpec,
    row_blocks: Sequence[int] | None = None,
    pairing: str = "flat",
    best_only: bool = False,
) -> Iterator[PassDesign]:
    """The choices mapped and costed: with ``row_blocks`` every one, in :func:`pass_choices` order.

    ``best_only`` (without ``row_blocks``): only designs that may be the best one (feasible first, then latency,
    then energy) of the designs yielded without it (:func:`_best_candidates`); the others, and with them what
    :func:`flat_policy` chooses among, are left out.

    Without, per point of the rest of the space only the query blocks :func:`pick_blocks` picks, and a
    branch and bound over (hand-offs, dataflows, binding): each is first costed with no primary tensor on
    chip; its compute time at the coarsest query block (the fastest a block can compute: blocks narrower
    than the columns idle PEs) is a lower bound on every variant's latency, and its other on-chip choices are
    costed only while that bound does not exceed the best latency found (FLAT's own dataflows, softmax on
    the 1-D arrays, are always costed in full: :func:`flat_policy` chooses among them).
    """
    if row_blocks is not None:
        for choice in pass_choices(plan, arch, row_blocks, pairing):
            yield _costed(plan, arch, pass_mapping(plan, arch, choice), choice)
        return
    if best_only:
        yield from _best_candidates(plan, arch, *pass_space(plan, arch, None, pairing))
        return
    groups: dict[tuple, dict[frozenset[str], list[PassChoice]]] = {}
    for c in pass_choices(plan, arch, row_blocks, pairing):
        groups.setdefault((c.fusion, c.dataflow, c.binding), {}).setdefault(c.on_chip, []).append(c)

    def variant(group: list[PassChoice]) -> list[PassDesign]:
        mappings: dict[int, CascadeMapping] = {}
        by_p1 = {c.p1: c for c in group}

        def fits(p1: int) -> bool:
            if p1 not in mappings:
                mappings[p1] = pass_mapping(plan, arch, by_p1[p1])
            return fits_buffer(plan, arch, mappings[p1])

        picked = pick_blocks([c.p1 for c in group], fits)
        return [_costed(plan, arch, mappings[p1], by_p1[p1]) for p1 in picked]

    first: list[tuple[float, tuple, list[PassDesign]]] = []
    for key, by_on in groups.items():
        designs = variant(by_on[frozenset()])
        head = max(designs, key=lambda d: d.choice.p1)
        first.append((max(head.cost.compute_s_by_array.values()), key, designs))
    first.sort(key=lambda t: t[0])
    best = math.inf
    for bound, key, designs in first:
        yield from designs
        best = min([best, *(d.cost.latency_s for d in designs if d.cost.feasible)])
        if not designs[0].flat_own and bound > best * (1 + 1e-9):
            continue
        for on, group in groups[key].items():
            if on:
                more = variant(group)
                best = min([best, *(d.cost.latency_s for d in more if d.cost.feasible)])
                yield from more


def _best_candidates(
    plan: PassPlan, arch: ArchSpec, keys: Sequence[tuple], p1s: Sequence[int], ons: Sequence[frozenset[str]]
) -> Iterator[PassDesign]:
    """The designs of :func:`iter_pass_designs` (default query blocks) that may be the best one, in its order.

    The same groups (hand-offs, dataflows, binding) in the same order (by the busiest array's compute time with
    no primary tensor on chip at the coarsest block, computed from the loop nests: the same floats), the same
    on-chip variants in the same order, the same query blocks (:func:`pick_blocks`); a design is costed unless
    a proven lower bound on its latency exceeds the latency of the best design found so far, and that one is
    feasible (a feasible design with a larger latency, or an infeasible one, ranks below it: it cannot be the
    best, nor tie with it). The bound:

    * **compute**: a :func:`pass_mapping` design has one phase of one stage, whose latency (cycles) is the
      larger of its compute cycles and its transfers' (:func:`evaluate_cascade`), and whose compute cycles
      are its busiest array's: the sum of its Einsums' :func:`simulator.cost.nest_compute_cycles` (time steps
      x cycles per point, plus fill and drain per DRAM iteration). So ``latency_s >= max(compute_s_by_array)``
      up to rounding (a relative 1e-9 is allowed for it). The nests' loops depend on the hand-offs, the
      dataflows, the binding and the query block, not on the primary tensors kept on chip (those set only
      what the buffer level keeps), so the compute time at a block holds for every on-chip variant, and the
      least over the blocks for the whole group: a group whose least exceeds the best latency is skipped
      without mapping its variants, and a picked block whose compute time exceeds it is not costed.

    Skipped designs are strictly worse than one found before them, so the best of these designs, ties broken
    by order as a stable sort breaks them, is the best of all the designs :func:`iter_pass_designs` yields
    (whose own branch and bound skips only variants whose latency exceeds a design it found).
    """
    keyed = []
    for key in keys:
        compute = {p1: max(choice_compute_s(plan, arch, *key, p1).values()) for p1 in p1s}
        keyed.append((compute[max(compute)], key, compute))
    keyed.sort(key=lambda t: t[0])
    best: tuple[float, float] | None = None  # (latency, energy) of the best feasible design so far

    def beaten(bound_s: float) -> bool:
        return best is not None and bound_s > best[0] * (1 + 1e-9)

    for _, (fusion, dataflow, binding), compute in keyed:
        if beaten(min(compute.values())):
            continue
        for on in ons:
            mappings: dict[int, CascadeMapping] = {}
            by_p1 = {p1: PassChoice(fusion, dataflow, p1, on, binding) for p1 in p1s}

            def fits(p1: int, mappings=mappings, by_p1=by_p1) -> bool:
                if p1 not in mappings:
                    mappings[p1] = pass_mapping(plan, arch, by_p1[p1])
                return fits_buffer(plan, arch, mappings[p1])

            for p1 in pick_blocks(p1s, fits):
                if beaten(compute[p1]):
                    continue
                d = _costed(plan, arch, mappings[p1], by_p1[p1])
                if d.cost.feasible and (best is None or (d.cost.latency_s, d.cost.energy_pj) < best):
                    best = (d.cost.latency_s, d.cost.energy_pj)
                yield d


def _costed(plan: PassPlan, arch: ArchSpec, mapping: CascadeMapping, choice: PassChoice) -> PassDesign:
    cost = evaluate_cascade(plan.lowered, arch, mapping)
    own = choice.is_flat() and not choice.softmax_where(plan)
    capacity = arch.level(plan.buffer).capacity_words  # the cost's occupancy is fits_buffer's, at plan.buffer
    fits = all(words <= capacity for words in cost.buffer_occupancy_words)
    return PassDesign(choice, mapping, cost, fits_sizing_rule(plan, arch, mapping), fits, own)


def search_pass_designs(
    lowered: LoweredCascade,
    arch: ArchSpec,
    row_blocks: Sequence[int] | None = None,
    pairing: str = "flat",
    best_only: bool = False,
) -> tuple[PassPlan, list[PassDesign]]:
    """The plan and the designs (:func:`iter_pass_designs`), feasible first, then by latency, then by energy
    (``best_only``: the first is the same, the rest only those that could not be ruled out)."""
    plan = plan_passes(lowered, arch)
    designs = sorted(
        iter_pass_designs(plan, arch, row_blocks, pairing, best_only),
        key=lambda d: (not d.cost.feasible, d.cost.latency_s, d.cost.energy_pj),
    )
    return plan, designs


POLICIES = ("model", "study")
"""FLAT's choice among the designs: ``model`` the fastest that fits the cost model's buffer accounting,
``study`` the FuseMax study's sizing rule (:func:`flat_policy`)."""


def flat_policy(designs: Sequence[PassDesign], policy: str = "model") -> PassDesign | None:
    """FLAT's own choice among the designs of FLAT's dataflows (fused output-stationary or spilled
    weight-stationary, softmax on a 1-D array).

    ``model``: the lowest latency (then energy) among feasible designs that do not spill (their buffer
    occupancy, hand-offs included, fits), else among feasible ones; None when none is feasible.
    ``study``: fused output-stationary at the coarsest P1 that fits FLAT's sizing rule, else spilled
    weight-stationary at any P1; among tensor placements, lowest latency, then energy; None when no design of
    FLAT's pairings fits the rule.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: expected one of {', '.join(POLICIES)}")

    def best(group: list[PassDesign]) -> PassDesign | None:
        return min(group, key=lambda d: (d.cost.latency_s, d.cost.energy_pj), default=None)

    own = [d for d in designs if d.flat_own]
    if policy == "model":
        feasible = [d for d in own if d.cost.feasible]
        return best([d for d in feasible if d.fits]) or best(feasible)
    fits = [d for d in own if d.fits_rule]
    fused = [d for d in fits if d.choice.fusion == "fused"]
    for p1 in sorted({d.choice.p1 for d in fused}, reverse=True):
        found = best([d for d in fused if d.choice.p1 == p1])
        if found:
            return found
    return best([d for d in fits if d.choice.fusion == "spilled"])
