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

    @property
    def einsums(self) -> tuple[str, ...]:
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

    def array_of(self, einsum: str) -> str:
        return self.einsums[einsum].array
