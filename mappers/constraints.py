"""Constraints on the mapping space of one Einsum, in the spirit of Timeloop's mapspace constraints.

Read from YAML (or a dict) in two steps, like architecture specs: :func:`constraints_from_dict` checks the
structure (keys, types) and builds frozen dataclasses; :meth:`mappers.space.MapSpace.build` then checks the
meaning against one Einsum on one architecture (variables, levels, tensors and arrays exist, fixed factors
divide the sizes). Both steps collect every problem and raise one :class:`~einsum.errors.SpecError` whose
lines name the dotted key at fault (and, read from a file, its line) and the values that are allowed.

Loops are over the Einsum's *variables* (lower case: ``m``, ``p``, ``m1``), as in the loop nest; ranks
(upper case) are sizes. Example (a 3-level nest for ``QK`` with batch and heads outermost at DRAM, ``m`` and
``p`` on the array's rows and columns, and the buffer keeping only ``K`` and ``QK``)::

    levels: [dram, global_buffer, pe_reg_2d]    # storage levels of the nest (default: the array's path)
    imperfect: false                            # offer padded rank sizes (default false)
    spatial_ranks_per_axis: 1                   # variables sharing one array axis (default 1)
    targets:
      - {target: dram, type: temporal, factors: {b: 64, h: 12}, outer: [b, h]}
      - {target: global_buffer, type: temporal, permutation: [m, e]}
      - {target: global_buffer, type: bypass, keep: [K, QK], bypass: [Q]}
      - {target: pe_2d, type: spatial, axes: {rows: [m], cols: [p]}, min_utilization: 0.5}

Target types:

* ``temporal`` (a storage level): ``factors`` fixes loop bounds at that level (1 = no loop there);
  ``outer`` lists loops that run outermost at the level, in that order; ``permutation`` lists loops that
  run innermost, in that order (outermost first; Timeloop's partial permutation). Loops of bound 1 are
  ignored when checking an order.
* ``spatial`` (a compute array): ``factors`` fixes a variable's total spatial factor (all axes together;
  1 = not spread); ``axes`` names the variables allowed on each axis (by name ``rows``/``cols``/``pes``/
  ``instances`` or by index); ``min_utilization`` is the least fraction of the PEs a mapping must use.
* ``bypass`` (a storage level other than the outermost): ``keep`` and ``bypass`` list tensors the level must
  and must not hold. By default every level may hold or bypass each tensor, except the outermost, which
  holds everything, and the innermost (the PE registers), which holds every tensor unless a bypass target
  names it (then the tensors that target does not list are free too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from einsum.yamlio import Problems, finite, read_yaml, show

__all__ = [
    "BypassConstraint",
    "Constraints",
    "SpatialConstraint",
    "TemporalConstraint",
    "constraints_from_dict",
    "read_constraints",
]

_TOP_KEYS = ("levels", "imperfect", "max_padding", "spatial_ranks_per_axis", "targets")
_TYPES = ("temporal", "spatial", "bypass")
_TARGET_KEYS = {
    "temporal": ("target", "type", "factors", "outer", "permutation"),
    "spatial": ("target", "type", "factors", "axes", "min_utilization"),
    "bypass": ("target", "type", "keep", "bypass"),
}


@dataclass(frozen=True)
class TemporalConstraint:
    """Loop bounds and loop order at one storage level."""

    target: str
    """Storage level name."""
    factors: Mapping[str, int] = field(default_factory=dict)
    """Variable -> fixed temporal bound at this level (1 = no loop here)."""
    outer: tuple[str, ...] = ()
    """Variables whose loops run outermost at this level, outermost first."""
    permutation: tuple[str, ...] = ()
    """Variables whose loops run innermost at this level, outermost first."""
    where: str = ""
    """Dotted path of the entry, for messages."""


@dataclass(frozen=True)
class SpatialConstraint:
    """Spatial unrolling onto one compute array."""

    target: str
    """Compute array name."""
    factors: Mapping[str, int] = field(default_factory=dict)
    """Variable -> fixed spatial factor over all axes together (1 = not spread)."""
    axes: Mapping[str | int, tuple[str, ...]] | None = None
    """Axis (name or index) -> variables allowed on it; axes not listed allow none. None = any variable."""
    min_utilization: float = 0.0
    """Least fraction (0..1) of the array's PEs a mapping must use."""
    where: str = ""
    """Dotted path of the entry, for messages."""


@dataclass(frozen=True)
class BypassConstraint:
    """Which tensors one storage level must hold or must not hold."""

    target: str
    """Storage level name."""
    keep: tuple[str, ...] = ()
    """Tensors the level holds."""
    bypass: tuple[str, ...] = ()
    """Tensors that skip the level."""
    where: str = ""
    """Dotted path of the entry, for messages."""


@dataclass(frozen=True)
class Constraints:
    """Everything that narrows one Einsum's mapping space (all optional)."""

    levels: tuple[str, ...] | None = None
    """Storage levels of the nest, outermost first (default: the array's path from DRAM to its registers)."""
    imperfect: bool = False
    """Offer padded rank sizes (rounded up to a power of two or a multiple of an array axis)."""
    max_padding: float = 0.25
    """Largest padding offered with ``imperfect``, as a fraction of the rank size."""
    spatial_ranks_per_axis: int = 1
    """Most variables spread over one array axis together."""
    temporal: tuple[TemporalConstraint, ...] = ()
    """Temporal targets."""
    spatial: tuple[SpatialConstraint, ...] = ()
    """Spatial targets."""
    bypass: tuple[BypassConstraint, ...] = ()
    """Bypass targets."""
    origin: str = "<constraints>"
    """Where the constraints were read from, for messages."""


def read_constraints(path: str | Path) -> Constraints:
    """Read and check a constraints YAML file (structure only; see the module docstring)."""
    origin = str(path)
    data = read_yaml(path, origin)
    return constraints_from_dict({} if data is None else data, origin)


def constraints_from_dict(data: Any, origin: str = "<constraints>") -> Constraints:
    """Check the structure of plain data (as loaded from YAML) and build :class:`Constraints`.

    >>> c = constraints_from_dict({"targets": [{"target": "dram", "type": "temporal", "factors": {"b": 4}}]})
    >>> c.temporal[0].factors["b"]
    4
    >>> constraints_from_dict({"targets": [{"target": "dram", "type": "tempral"}]})
    Traceback (most recent call last):
      ...
    einsum.errors.SpecError: <constraints>: targets[0].type: unknown type 'tempral'; allowed: temporal, spatial, bypass
    """
    p = Problems(origin, "constraints")
    if not isinstance(data, dict):
        p.add("", f"expected a mapping with keys {', '.join(_TOP_KEYS)}, got {show(data)}")
        p.raise_if_any()
    p.mapping(data, "", _TOP_KEYS)
    levels = None
    if data.get("levels") is not None:
        levels = _names(data["levels"], "levels", p, data, "levels")
    imperfect = p.value(data, "", "imperfect", "flag", default=False) or False
    max_padding = p.value(data, "", "max_padding", _PADDING, default=0.25)
    max_padding = 0.25 if max_padding is None else max_padding
    per_axis = p.value(data, "", "spatial_ranks_per_axis", _PER_AXIS, default=1) or 1

    temporal: list[TemporalConstraint] = []
    spatial: list[SpatialConstraint] = []
    bypass: list[BypassConstraint] = []
    targets = p.value(data, "", "targets", (lambda v: isinstance(v, list), "a list of targets"), default=[]) or []
    for i, item in enumerate(targets):
        path = f"targets[{i}]"
        if not isinstance(item, dict):
            p.add(path, f"expected a mapping with target and type, got {show(item)}", targets, i)
            continue
        kind = item.get("type")
        if kind not in _TYPES:
            what = "missing" if kind is None else f"unknown type {kind!r}"
            p.add(f"{path}.type", f"{what}; allowed: {', '.join(_TYPES)}", item, "type")
            continue
        for key in item:
            if key not in _TARGET_KEYS[kind]:
                allowed = ", ".join(_TARGET_KEYS[kind])
                p.add(f"{path}.{key}", f"unknown key for a {kind} target; allowed keys: {allowed}", item, key)
        target = item.get("target")
        if not (isinstance(target, str) and target):
            got = show(target) if "target" in item else "nothing"
            p.add(f"{path}.target", f"expected a level or array name, got {got}", item, "target")
            target = ""
        if kind == "temporal":
            temporal.append(
                TemporalConstraint(
                    target,
                    _factors(item.get("factors", {}), f"{path}.factors", p, item, "factors"),
                    _names(item.get("outer", []), f"{path}.outer", p, item, "outer"),
                    _names(item.get("permutation", []), f"{path}.permutation", p, item, "permutation"),
                    path,
                )
            )
        elif kind == "spatial":
            util = p.value(item, path, "min_utilization", _UTILIZATION, default=0.0)
            axes = None
            if "axes" in item:
                raw = item["axes"]
                if not isinstance(raw, dict):
                    p.add(f"{path}.axes", f"expected a mapping axis -> [variables], got {show(raw)}", item, "axes")
                else:
                    axes = {k: _names(v, f"{path}.axes.{k}", p, raw, k) for k, v in raw.items()}
            factors = _factors(item.get("factors", {}), f"{path}.factors", p, item, "factors")
            spatial.append(SpatialConstraint(target, factors, axes, float(util or 0.0), path))
        else:
            bypass.append(
                BypassConstraint(
                    target,
                    _names(item.get("keep", []), f"{path}.keep", p, item, "keep"),
                    _names(item.get("bypass", []), f"{path}.bypass", p, item, "bypass"),
                    path,
                )
            )
    p.raise_if_any()
    return Constraints(
        levels=levels,
        imperfect=imperfect,
        max_padding=float(max_padding),
        spatial_ranks_per_axis=per_axis,
        temporal=tuple(temporal),
        spatial=tuple(spatial),
        bypass=tuple(bypass),
        origin=origin,
    )


_PADDING = (lambda v: finite(v) and 0 <= v <= 1, "a number in 0..1 (fraction of the rank size)")
_PER_AXIS = (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 3, "1, 2 or 3")
_UTILIZATION = (lambda v: finite(v) and 0 <= v <= 1, "a fraction in 0..1")


def _names(value: Any, path: str, p: Problems, container: Any, item: Any) -> tuple[str, ...]:
    """A list of distinct names (one name alone counts as a list), or () after recording why not."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        p.add(path, f"expected a list of names, got {show(value)}", container, item)
        return ()
    if len(set(value)) != len(value):
        p.add(path, f"repeats a name: {value}", container, item)
    return tuple(value)


def _factors(value: Any, path: str, p: Problems, container: Any, item: Any) -> dict[str, int]:
    """Variable -> positive integer bound; the valid entries, after recording the others."""
    if not isinstance(value, dict):
        p.add(path, f"expected a mapping variable -> bound, e.g. {{m: 4}}, got {show(value)}", container, item)
        return {}
    out = {}
    for var, bound in value.items():
        if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
            p.add(f"{path}.{var}", f"expected a positive integer bound, got {show(bound)}", value, var)
            continue
        out[str(var)] = bound
    return out
