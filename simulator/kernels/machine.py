"""A device seen as a spatial machine, in per-SM-per-clock units, and the plain data a kernel mapping yields.

Arrays: ``tensor`` (the 2-D matrix units: one MAC-array per SM sub-partition), ``sfu`` (1-D special-function
lanes: exp) and ``fma`` (1-D FP32 lanes: max, add, mul, select...). Storage levels, innermost first: ``regs``
and ``smem`` per SM, ``l2`` and ``dram`` shared. Rates carry the device's microbenchmark efficiencies; the
``*_peak`` figures do not (they are what the roofline uses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from einsum.errors import SpecError
from simulator.device import DTYPE_BYTES, DeviceSpec, check_dtype

UNIT_OF_OP: Mapping[str, str] = {
    "mac": "tensor",
    "exp": "sfu",
    "log": "sfu",
    "sqrt": "sfu",
    "sigmoid": "sfu",
    "softplus": "sfu",
}
"""Which array runs an Einsum op kind; every other kind (max, add, sub, mul, div, select, neg, relu) runs on
the FP32 lanes."""


@dataclass(frozen=True)
class Machine:
    """Per-SM rates of one device for one dtype (efficiencies applied), plus the shared levels."""

    spec: DeviceSpec
    dtype: str
    elem_bytes: int  # bytes per element of the dtype
    sms: int  # SMs (cores on a CPU)
    clock_hz: float  # Hz
    tensor_peak: float  # dense matrix FLOPs per SM per clock at the datasheet peak
    tensor_rate: float  # dense matrix FLOPs per SM per clock a tuned kernel reaches (x gemm efficiency)
    fma_rate: float  # FP32 lane ops per SM per clock
    sfu_rate: float  # exp per SM per clock (x exp efficiency)
    smem_rate: float  # shared-memory bytes per SM per clock
    dram_peak_bytes_per_s: float  # datasheet DRAM bandwidth
    dram_bytes_per_s: float  # copy-calibrated DRAM bandwidth
    softmax_bytes_per_s: float  # library row-softmax bandwidth (read + write)
    l2_share_bytes_per_clock: float  # L2 bandwidth per SM per clock (one SM's share)
    launch_s: float  # kernel launch overhead, s
    latency_s: float  # DRAM load latency, s
    broadcast_efficiency: float = 1.0  # broadcasting elementwise kernels' bandwidth / the copy's
    cache_bytes_per_s: float = 0.0  # last-level cache bandwidth (all SMs / cores), bytes/s
    warm_cache_bytes: float = 0.0  # working sets up to this size stream from the last-level cache (0: never)

    def stream_bytes_per_s(self, working_set_bytes: float, dram_bytes_per_s: float | None = None) -> float:
        """Bandwidth at which a kernel touching working_set_bytes streams its data: the last-level cache's when
        the working set stays there between back-to-back calls (``warm_cache_bytes``), else DRAM's
        (``dram_bytes_per_s``, default the copy-calibrated figure)."""
        dram = self.dram_bytes_per_s if dram_bytes_per_s is None else dram_bytes_per_s
        if 0 < working_set_bytes <= self.warm_cache_bytes:
            return max(dram, self.cache_bytes_per_s)
        return dram

    def softmax_stream_bytes_per_s(self, working_set_bytes: float) -> float:
        """The library row softmax's bandwidth: ``efficiency.softmax`` of the level that serves the working set."""
        efficiency = self.softmax_bytes_per_s / self.dram_peak_bytes_per_s
        return efficiency * self.stream_bytes_per_s(working_set_bytes, self.dram_peak_bytes_per_s)

    @property
    def dram_share_bytes_per_clock(self) -> float:
        """Calibrated DRAM bandwidth per SM per clock (one SM's share when all stream)."""
        return self.dram_bytes_per_s / self.sms / self.clock_hz

    def levels(self) -> list[dict[str, Any]]:
        """The storage levels, innermost first, as plain rows for reports."""
        s = self.spec
        return [
            {"name": "regs", "capacity_bytes": s.regs_bytes_per_sm, "instances": s.sm_count, "bytes_per_s": None},
            {
                "name": "smem",
                "capacity_bytes": s.smem_bytes_per_sm,
                "instances": s.sm_count,
                "bytes_per_s": s.smem_bytes_per_clock_per_sm * s.clock_hz * s.sm_count,
            },
            {"name": "l2", "capacity_bytes": s.l2_bytes, "instances": 1, "bytes_per_s": s.l2_bytes_per_s},
            {"name": "dram", "capacity_bytes": s.dram_bytes, "instances": 1, "bytes_per_s": s.dram_bytes_per_s},
        ]


def machine(spec: DeviceSpec, dtype: str, *, legacy_mma: bool = False) -> Machine:
    """The spatial-machine view of spec for dtype; legacy_mma: a warp-level mma kernel on a wgmma device."""
    check_dtype(dtype)
    eff = spec.efficiency
    peak = spec.tensor_flops_per_sm_per_clock(dtype)
    gemm = eff.gemm_fp8 if dtype == "fp8" else eff.gemm
    rate = peak * gemm * (spec.mma_fraction if legacy_mma and spec.tensor_instruction == "wgmma" else 1.0)
    return Machine(
        spec=spec,
        dtype=dtype,
        elem_bytes=DTYPE_BYTES[dtype],
        sms=spec.sm_count,
        clock_hz=spec.clock_hz,
        tensor_peak=peak,
        tensor_rate=rate,
        fma_rate=spec.fp32_ops_per_sm_per_clock(),
        sfu_rate=spec.exp_per_sm_per_clock * eff.exp,
        smem_rate=spec.smem_bytes_per_clock_per_sm,
        dram_peak_bytes_per_s=spec.dram_bytes_per_s,
        dram_bytes_per_s=spec.dram_bytes_per_s * eff.copy,
        softmax_bytes_per_s=spec.dram_bytes_per_s * eff.softmax,
        l2_share_bytes_per_clock=spec.l2_bytes_per_s / spec.sm_count / spec.clock_hz,
        launch_s=spec.launch_overhead_s,
        latency_s=spec.dram_latency_s,
        broadcast_efficiency=eff.broadcast,
        cache_bytes_per_s=spec.l2_bytes_per_s,
        warm_cache_bytes=spec.warm_cache_bytes,
    )


@dataclass(frozen=True)
class KernelPrediction:
    """A kernel's predicted time and what it did. Times in s, traffic in bytes, rates in TFLOP/s.

    ``flops`` are the useful floating-point operations (an FMA counts 2; masked-out attention scores do not
    count), as attention benchmarks report them. ``bound`` names the ceiling that set the time: ``tensor``,
    ``sfu`` (exp), ``fma`` (FP32 lanes), ``smem``, ``memory`` (DRAM), ``latency`` or ``launch``.
    """

    time_s: float
    flops: float
    hbm_bytes: float
    bound: str
    tiles: Mapping[str, Any]
    tflops: float
    op: str = ""
    kernel: str = ""
    device: str = ""
    dtype: str = ""
    roofline_s: float = 0.0  # compute / compulsory-traffic bound at the datasheet peaks
    exp_ops: float = 0.0  # special-function evaluations
    times_s: Mapping[str, float] = field(default_factory=dict)  # per-ceiling times behind the bound
    parts: tuple[KernelPrediction, ...] = ()  # the kernels of a multi-kernel op (unfused attention)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (parts nested)."""
        return {
            "op": self.op,
            "kernel": self.kernel,
            "device": self.device,
            "dtype": self.dtype,
            "time_s": self.time_s,
            "tflops": self.tflops,
            "flops": self.flops,
            "hbm_bytes": self.hbm_bytes,
            "exp_ops": self.exp_ops,
            "bound": self.bound,
            "roofline_s": self.roofline_s,
            "tiles": dict(self.tiles),
            "times_s": dict(self.times_s),
            "parts": [p.to_dict() for p in self.parts],
            "notes": list(self.notes),
        }


def roofline_s(m: Machine, flops: float, hbm_bytes: float, exp_ops: float = 0.0, fma_ops: float = 0.0) -> float:
    """The bound no kernel beats: peak tensor FLOPs, peak SFU, peak FP32 lanes, peak bandwidth of the level
    that serves hbm_bytes (DRAM, or the last-level cache when they fit ``warm_cache_bytes``)."""
    clock_sms = m.clock_hz * m.sms
    return max(
        flops / (m.tensor_peak * clock_sms),
        exp_ops / (m.spec.exp_per_sm_per_clock * clock_sms),
        fma_ops / (m.fma_rate * clock_sms),
        hbm_bytes / m.stream_bytes_per_s(hbm_bytes, m.dram_peak_bytes_per_s),
    )


def fill_drain_s(m: Machine, fill_bytes: float, drain_bytes: float) -> float:
    """A kernel's fill and drain, s: what its first wave of CTAs loads before any of them computes (its first
    tiles, ``fill_bytes``) and what its last wave stores after the last computes (``drain_bytes``), each through
    DRAM at the calibrated bandwidth; in between, loads and stores overlap the compute."""
    return (fill_bytes + drain_bytes) / m.dram_bytes_per_s


def finish(
    m: Machine,
    *,
    op: str,
    kernel: str,
    flops: float,
    hbm_bytes: float,
    times: Mapping[str, float],
    tiles: Mapping[str, Any],
    compulsory_bytes: float,
    exp_ops: float = 0.0,
    fma_ops: float = 0.0,
    launches: int = 1,
    notes: tuple[str, ...] = (),
) -> KernelPrediction:
    """Combine per-ceiling times: launch overhead plus the largest of the others (they overlap)."""
    launch = launches * m.launch_s
    work = max(times.values())
    bound = max(times, key=times.__getitem__)
    if launch > work:
        bound = "launch"
    time_s = float(launch + work)
    floor = roofline_s(m, flops, compulsory_bytes, exp_ops, fma_ops)
    if time_s < floor:  # the invariant the tests check; a model bug, not a user error
        raise AssertionError(f"{op}/{kernel}: predicted {time_s:.3e} s below its roofline {floor:.3e} s")
    return KernelPrediction(
        time_s=time_s,
        flops=flops,
        hbm_bytes=hbm_bytes,
        bound=bound,
        tiles=tiles,
        tflops=flops / time_s / 1e12,
        op=op,
        kernel=kernel,
        device=m.spec.id,
        dtype=m.dtype,
        roofline_s=floor,
        exp_ops=exp_ops,
        times_s={"launch": launch, **{k: float(v) for k, v in times.items()}},
        notes=notes,
    )


def need(condition: bool, message: str) -> None:
    """Raise a SpecError naming the limit when a shape does not fit."""
    if not condition:
        raise SpecError(message)
