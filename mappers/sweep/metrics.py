"""Metrics a sweep records per point: name -> unit, axis label and how to read it off an evaluated design.

Every point of an architecture sweep stores every metric read off a costed design (they are cheap once the
design is costed), plus the utilization ``util_<array>`` of each compute array of the architecture; a spec's
``metrics`` list picks what is reported. Device strategies (:mod:`mappers.sweep.strategies`) fill the metrics
they list themselves; the ones registered here without a reader (``tflops``, ``tokens_per_s``, ``bound``...)
exist only for them. A metric a model does not give for a point (energy on a GPU) is stored as NULL.
Units are in the names (``latency_s``, ``area_mm2``) and in :attr:`Metric.unit`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from einsum.errors import RegistryError
from simulator.cost import CascadeCost
from simulator.specs import ArchSpec


@dataclass(frozen=True)
class Metric:
    """One number per point."""

    name: str  # column name in the store, with its unit
    label: str  # axis label without the unit
    unit: str  # "" for a dimensionless number
    doc: str  # one line
    value: Callable[[ArchSpec, CascadeCost], float] | None  # None: filled by device strategies only
    sql_type: str = "REAL"  # the store column's type: REAL, or TEXT for names (bound, precision)

    @property
    def axis_label(self) -> str:
        """Label for a plot axis: ``latency (s)``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


_METRICS: dict[str, Metric] = {}
METRICS: Mapping[str, Metric] = MappingProxyType(_METRICS)
"""Registered metrics (``util_<array>`` is resolved per architecture on top of these)."""


def register_metric(metric: Metric) -> Metric:
    """Add a metric; names are never replaced."""
    if metric.name in _METRICS or metric.name.startswith("util_"):
        raise RegistryError(f"metric {metric.name!r} is already registered (or uses the reserved prefix util_)")
    _METRICS[metric.name] = metric
    return metric


for _m in (
    Metric("latency_s", "latency", "s", "end-to-end latency of the point", lambda a, c: c.latency_s),
    Metric("energy_pj", "energy", "pJ", "total energy", lambda a, c: c.energy_pj),
    Metric("energy_j", "energy", "J", "total energy", lambda a, c: c.energy_pj * 1e-12),
    Metric("edp_js", "energy-delay product", "J·s", "energy x latency", lambda a, c: c.energy_pj * 1e-12 * c.latency_s),
    Metric("dram_bytes", "DRAM traffic", "B", "bytes moved to and from DRAM", lambda a, c: c.dram_bytes),
    Metric("area_um2", "area", "µm²", "chip area (storage + PEs)", lambda a, c: a.area_um2()),
    Metric("area_mm2", "area", "mm²", "chip area (storage + PEs)", lambda a, c: a.area_um2() * 1e-6),
    Metric("memory_s", "DRAM transfer time", "s", "DRAM bytes / bandwidth, over phases", lambda a, c: c.memory_s),
    Metric("compute_bound_s", "compute bound", "s", "busiest array's work at peak", lambda a, c: c.compute_bound_s),
    Metric("feasible", "feasible", "", "1 if the design fits every capacity (a buffer it may spill counts as "
           "fitting), else 0", lambda a, c: float(c.feasible)),
    Metric(
        "buffer_occupancy_words", "peak buffer occupancy", "words", "largest phase occupancy of the buffer",
        lambda a, c: max(c.buffer_occupancy_words, default=0.0),
    ),
    Metric(
        "spill_fraction", "spill fraction", "", "largest phase share of buffer accesses spilled to DRAM",
        lambda a, c: max(c.spill_fraction, default=0.0),
    ),
    Metric("tflops", "throughput", "TFLOP/s", "useful FLOPs / latency", None),
    Metric("flops", "work", "FLOP", "useful floating-point operations (an FMA counts 2)", None),
    Metric("tokens_per_s", "tokens per second", "tokens/s", "prompt tokens (prefill) or generated tokens (decode) "
           "per second", None),
    Metric("roofline_s", "roofline bound", "s", "compute / compulsory-traffic bound at datasheet peaks", None),
    Metric("footprint_bytes", "weights + KV cache", "B", "model weights plus the KV cache at the data type", None),
    Metric("fits_dram", "fits DRAM", "", "1 if weights + KV cache fit the target's DRAM, else 0", None),
    Metric("bound", "bound", "", "the ceiling that sets (most of) the time", None, "TEXT"),
    Metric("attn_kernel", "attention kernel", "", "the attention kernel the model ran", None, "TEXT"),
    Metric("precision", "data type", "", "the data type the kernels ran in", None, "TEXT"),
    Metric("utilization", "utilization", "", "busy fraction of the bound compute resource", None),
    Metric("onchip_bytes", "on-chip footprint", "B", "largest buffer occupancy or resident shared memory", None),
    Metric("spill_bytes", "traffic beyond compulsory", "B", "DRAM bytes beyond reading inputs and writing "
           "outputs once", None),
    Metric("spilled_bytes", "spilled", "B", "bytes of an overflowing buffer's accesses that go to DRAM instead "
           "(0: it fits)", lambda a, c: c.spill_bytes),
    Metric("mapper", "mapper", "", "the mapper that produced the design", None, "TEXT"),
):  # fmt: skip
    register_metric(_m)


def _util(array: str) -> Metric:
    return Metric(
        f"util_{array}", f"{array} utilization", "", f"busy fraction of {array} over the latency",
        lambda a, c: c.utilization[array],
    )  # fmt: skip


def metric_names(arch: ArchSpec | None) -> list[str]:
    """Metrics of an architecture sweep: those read off a costed design, plus ``util_<array>`` for arch's arrays."""
    own = [m.name for m in _METRICS.values() if m.value is not None]
    return [*own, *(f"util_{a.name}" for a in (arch.arrays if arch is not None else ()))]


def resolve_metric(name: object, arch: ArchSpec | None, allowed: Sequence[str] | None = None) -> Metric:
    """The metric called name: one of allowed (a device strategy's metrics), else an architecture-sweep metric
    (``util_<array>`` for an array of arch); a miss lists the valid names."""
    if allowed is not None:
        if isinstance(name, str) and name in allowed:
            return _METRICS[name]
        raise RegistryError(f"unknown metric {name!r}; known: {', '.join(allowed)}")
    if isinstance(name, str) and name in _METRICS and _METRICS[name].value is not None:
        return _METRICS[name]
    arrays = {a.name for a in arch.arrays} if arch is not None else set()
    if isinstance(name, str) and name.startswith("util_") and (arch is None or name[5:] in arrays):
        return _util(name[5:])
    raise RegistryError(f"unknown metric {name!r}; known: {', '.join(metric_names(arch))}")


def stored_metrics(arch: ArchSpec) -> tuple[str, ...]:
    """The metric columns every point of a sweep on arch records."""
    return tuple(metric_names(arch))


_UNIT_SUFFIXES = (
    ("_bytes_per_s", "B/s"),
    ("_hz", "Hz"),
    ("_um2", "µm²"),
    ("_mm2", "mm²"),
    ("_words", "words"),
    ("_bytes", "B"),
    ("_pj", "pJ"),
    ("_js", "J·s"),
    ("_j", "J"),
    ("_s", "s"),
)


_COLUMN_LABELS = {"seq_len": "sequence length (tokens)", "batch": "batch (sequences)"}


def axis_label(column: str) -> str:
    """A plot label with units for a store column: a metric's own, else the unit its name ends with."""
    if column in _METRICS:
        return _METRICS[column].axis_label
    if column.startswith("util_"):
        return resolve_metric(column, None).axis_label
    if column in _COLUMN_LABELS:
        return _COLUMN_LABELS[column]
    for suffix, unit in _UNIT_SUFFIXES:
        if column.endswith(suffix):
            return f"{column[: -len(suffix)].replace('_', ' ')} ({unit})"
    return column.replace("_", " ")
