"""Building blocks for mappings: a loop nest from a few loop lists, and the schedule helpers.

A template names, per Einsum, the loops at the DRAM level and at the buffer level and which variable each
array axis spreads; every variable's remaining factor runs innermost at the buffer level (the PE registers
hold one word of each operand). Loops over variables an Einsum
does not have are skipped, so one list serves a whole cascade (e.g. ``p`` split into P2 at DRAM, P1 at the
buffer and P0 across the array for every Einsum that iterates ``p``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from einsum.errors import SpecError
from einsum.lower import LoweredEinsum
from simulator.mapping import EinsumMapping, Loops
from simulator.specs import ArchSpec


def loop_nest(
    e: LoweredEinsum,
    arch: ArchSpec,
    array: str,
    outer: Sequence[tuple[str, int]],
    middle: Sequence[tuple[str, int]],
    spatial: Sequence[str | None],
    buffer_keeps: Iterable[str],
    buffer: str = "global_buffer",
) -> EinsumMapping:
    """A three-level nest (DRAM, ``buffer``, the array's PE registers) for Einsum ``e``.

    ``spatial[a]`` is the variable spread over axis ``a`` (factor: the axis size, or the variable's size
    if smaller, after the outer loops); ``buffer_keeps`` the tensors the buffer holds (the PE registers hold
    every tensor, DRAM backs every tensor).
    """
    spec_array = arch.array(array)
    remaining = {v: e.var_size(v) for v in e.vars}

    def take(loops: Sequence[tuple[str, int]]) -> Loops:
        out = []
        for var, bound in loops:
            if var not in remaining or bound == 1:
                continue
            if remaining[var] % bound:
                raise SpecError(
                    f"{e.name}: loop bound {bound} of {var} does not divide what is left ({remaining[var]})"
                )
            remaining[var] //= bound
            out.append((var, bound))
        return tuple(out)

    dram_loops = take(outer)
    buffer_loops = take(middle)
    axes = spec_array.shape if spec_array.instances == 1 else (*spec_array.shape, spec_array.instances)
    spatial_loops: list[Loops] = []
    for axis, var in zip(axes, list(spatial) + [None] * (len(axes) - len(spatial)), strict=True):
        if var is None or var not in remaining:
            spatial_loops.append(())
            continue
        factor = min(axis, remaining[var])
        if remaining[var] % factor:
            raise SpecError(f"{e.name}: {var} ({remaining[var]} left) does not divide over {axis} PEs")
        remaining[var] //= factor
        spatial_loops.append(((var, factor),))
    # What is left iterates innermost at the buffer level: a PE register holds one word of each operand. A variable
    # the buffer level already loops over (a row block wider than a narrow array) takes the rest into that loop:
    # a level has one loop per variable.
    merged = dict(buffer_loops)
    for v, n in remaining.items():
        if n > 1 and v in merged:
            merged[v] *= n
    buffer_loops = tuple((v, merged[v]) for v, _ in buffer_loops)
    buffer_loops += tuple((v, n) for v, n in remaining.items() if n > 1 and v not in dict(buffer_loops))
    keeps = frozenset(buffer_keeps) & set(e.tensors)
    return EinsumMapping(
        array=array,
        levels=("dram", buffer, spec_array.fed_by),
        temporal=(dram_loops, buffer_loops, ()),
        spatial=tuple(spatial_loops),
        keep=(frozenset(e.tensors), keeps, frozenset(e.tensors)),
    )


def divisors(n: int) -> list[int]:
    """Divisors of n in increasing order."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))
