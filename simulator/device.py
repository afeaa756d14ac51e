"""Processors as data: GPU, edge and CPU device presets read from YAML into validated, frozen dataclasses.

A device is described by datasheet facts (SM or core count, clock, dense tensor throughput per dtype, FP32 and
special-function rates, memory bandwidths and on-chip capacities, kernel launch overhead), each cited in its
YAML file, plus an ``efficiency`` block: the fraction of a datasheet peak that a *microbenchmark* reaches
(GEMM, copy, exp, row softmax), with the provenance of the calibration. Efficiencies are never fitted to
attention-kernel timings; those are what the kernel models are judged against.

The kernel models (:mod:`simulator.gpu`) view a device as a spatial machine: the tensor cores are a 2-D array,
the special-function units and FP32 lanes 1-D arrays, registers / shared memory / L2 / DRAM the storage levels,
and thread blocks spatial tiles over the SMs. The schema is documented in ``simulator/devices/README.md``.

>>> h100 = load_device("h100-sxm")
>>> h100.sm_count, h100.tensor_tflops["bf16"], round(h100.tensor_flops_per_sm_per_clock("bf16"), -1)
(132, 989.0, 4090.0)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from einsum.errors import RegistryError, SpecError
from einsum.yamlio import REQUIRED, Problems, join, read_yaml, show

DTYPES: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "fp8")
"""Data types a kernel may use; ``tf32`` is fp32 storage with TF32 tensor-core math."""

DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1})
"""Bytes per element in memory."""

KINDS: tuple[str, ...] = ("gpu", "edge", "cpu")
"""Device kinds: a discrete GPU, an edge SoC GPU (Jetson, Apple), a CPU (cores in place of SMs)."""

TENSOR_INSTRUCTIONS: tuple[str, ...] = ("wgmma", "mma", "none")
"""Matrix instructions: Hopper warpgroup MMA, warp-level MMA (Ampere/Ada mma.sync, Apple simdgroup matrix), none."""

EFFICIENCY_KEYS: tuple[str, ...] = ("gemm", "gemm_fp8", "copy", "exp", "softmax", "broadcast")
"""Efficiency entries: best GEMM / dense tensor peak (16-bit and wider dtypes), the same for FP8 GEMMs (their own
kernels and scaling epilogues: calibrated apart; absent, it is ``gemm``'s value), device copy / DRAM peak, exp /
SFU peak, library row softmax / DRAM peak, and a broadcasting elementwise kernel (PyTorch's non-vectorized path,
e.g. an additive mask added to the scores) / the copy. Each is a microbenchmark result divided by its reference
figure; 1.0 means uncalibrated (the reference assumed)."""


@dataclass(frozen=True)
class Calibration:
    """Where the efficiency values come from."""

    data_file: str  # microbenchmark data (a CSV in the repository or a cited public table)
    date: str  # ISO date of the calibration
    method: str  # how the numbers were turned into efficiencies


@dataclass(frozen=True)
class Efficiency:
    """Fractions of datasheet peaks reached by microbenchmarks (1.0 = uncalibrated: the peak is assumed)."""

    gemm: float  # best large GEMM TFLOP/s / dense tensor peak, for the dtype it was measured in
    gemm_fp8: float  # the same for FP8 GEMMs / the FP8 dense peak (gemm's value where not calibrated apart)
    copy: float  # device-to-device copy bytes (read + write) per second / DRAM peak
    exp: float  # elementwise exp rate / (SFU exp per SM per clock x SMs x clock)
    softmax: float  # library row-softmax bytes (read + write) per second / DRAM peak
    broadcast: float  # elementwise kernel with a broadcast operand: bytes per second / the copy's at that size
    calibration: Calibration

    def to_dict(self) -> dict[str, Any]:
        """As YAML spells it."""
        out: dict[str, Any] = {k: getattr(self, k) for k in EFFICIENCY_KEYS}
        out["calibration"] = {f.name: getattr(self.calibration, f.name) for f in fields(Calibration)}
        return out


@dataclass(frozen=True)
class DeviceSpec:
    """A GPU, edge SoC or CPU. SI units, named in the keys; per-SM figures are per core for a CPU."""

    id: str  # short lower-case id, e.g. h100-sxm
    name: str  # marketing name
    kind: str  # one of KINDS
    source: str  # summary of the citations
    references: Mapping[str, str]  # tag -> citation, used in the YAML comments
    sm_count: int  # streaming multiprocessors (GPU cores on Apple, CPU cores on a CPU)
    clock_hz: float  # clock at which the tensor peak is quoted
    tensor_tflops: Mapping[str, float]  # dense (no sparsity) matrix-unit TFLOP/s per dtype
    fp32_tflops: float  # non-tensor FP32 TFLOP/s (an FMA counts 2)
    exp_per_sm_per_clock: float  # special-function exp results per SM per clock
    dram_bytes_per_s: float  # DRAM (HBM, GDDR, LPDDR) bandwidth, bytes/s
    dram_bytes: float  # DRAM capacity, bytes
    l2_bytes: float  # last-level on-chip cache (L2, or Apple's system-level cache), bytes
    l2_bytes_per_s: float  # L2 bandwidth, bytes/s
    smem_bytes_per_sm: float  # shared memory (threadgroup memory) one SM can give its blocks, bytes
    smem_bytes_per_clock_per_sm: float  # shared-memory bandwidth per SM, bytes per clock
    regs_bytes_per_sm: float  # register file per SM, bytes
    max_warps_per_sm: int  # resident warps (32 threads) per SM
    launch_overhead_s: float  # fixed cost of one kernel launch on a busy stream, s
    dram_latency_s: float  # load-to-use latency of a DRAM access, s
    tensor_instruction: str  # one of TENSOR_INSTRUCTIONS
    mma_fraction: float  # fraction of the tensor peak warp-level mma reaches where wgmma exists (1 otherwise)
    efficiency: Efficiency
    warm_cache_bytes: float = 0.0
    """Working sets up to this size stay in the last-level cache between back-to-back calls of a kernel and
    stream at ``l2_bytes_per_s``; larger ones stream from DRAM. 0: every kernel streams from DRAM (the GPU
    presets: the GPU harness flushes L2 between timed calls, and published GPU benchmarks do the same or use
    tensors far larger than L2). Derived from copy microbenchmarks at cache-resident sizes."""
    origin: str = field(default="<dict>", compare=False)  # where the spec was read from, for messages

    # -- derived rates -------------------------------------------------------------------------------------
    def tensor_peak_flops(self, dtype: str) -> float:
        """Dense matrix-unit FLOP/s for dtype (fp32 without a tensor entry runs on the FP32 lanes)."""
        check_dtype(dtype)
        if dtype in self.tensor_tflops:
            return self.tensor_tflops[dtype] * 1e12
        if dtype == "fp32":
            return self.fp32_tflops * 1e12
        raise SpecError(
            f"{self.id}: no {dtype} matrix throughput; this device has {', '.join(self.tensor_tflops)}"
            + (", and fp32 on its FP32 lanes" if "fp32" not in self.tensor_tflops else "")
        )

    def tensor_flops_per_sm_per_clock(self, dtype: str) -> float:
        """Dense matrix FLOPs per SM per clock (the 2-D array's width in MACs x 2)."""
        return self.tensor_peak_flops(dtype) / (self.sm_count * self.clock_hz)

    def fp32_ops_per_sm_per_clock(self) -> float:
        """FP32 lane operations per SM per clock (an FMA counts once)."""
        return self.fp32_tflops * 1e12 / 2 / (self.sm_count * self.clock_hz)

    def exp_per_s(self) -> float:
        """Peak exp results per second on the special-function units."""
        return self.exp_per_sm_per_clock * self.sm_count * self.clock_hz

    def to_dict(self) -> dict[str, Any]:
        """The spec as YAML-ready data; ``device_from_dict(spec.to_dict()) == spec``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "origin":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, Efficiency):
                value = value.to_dict()
            out[f.name] = value
        return out


def check_dtype(dtype: str) -> str:
    """dtype itself if known, else a SpecError listing the dtypes."""
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    return dtype


# ----------------------------------------------------------------------------------------------- validation

_ID = re.compile(r"[a-z][a-z0-9-]*\Z")
_TOP = tuple(f.name for f in fields(DeviceSpec) if f.name != "origin")
_INTS = {"sm_count", "max_warps_per_sm"}
_OPTIONAL: dict[str, Any] = {
    "references": {},
    "mma_fraction": 1.0,
    "tensor_instruction": "mma",
    "warm_cache_bytes": 0.0,
}

_FIELD_KIND = {
    "name": "text",
    "source": "text",
    "sm_count": "count",
    "clock_hz": "clock_hz",
    "fp32_tflops": "tflops",
    "exp_per_sm_per_clock": "positive",
    "dram_bytes_per_s": "bytes_per_s",
    "dram_bytes": "memory_bytes",
    "l2_bytes": "memory_bytes",
    "l2_bytes_per_s": "bytes_per_s",
    "smem_bytes_per_sm": "memory_bytes",
    "smem_bytes_per_clock_per_sm": "positive",
    "regs_bytes_per_sm": "memory_bytes",
    "max_warps_per_sm": "count",
    "launch_overhead_s": "seconds_overhead",
    "dram_latency_s": "seconds_overhead",
    "mma_fraction": "fraction",
    "warm_cache_bytes": "nonnegative",
}
"""Each scalar field -> its kind in :data:`einsum.yamlio.CHECKS`."""


def device_from_dict(data: Any, origin: str = "<dict>") -> DeviceSpec:
    """Validate plain data (as read from YAML) and build the spec; every problem is reported at once, each
    naming its file line where the data came from :func:`~einsum.yamlio.read_yaml`."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping of device keys ({', '.join(_TOP)}), got {show(data)}")
    p = Problems(origin, "device spec")
    p.mapping(data, "", _TOP)
    ident = data.get("id")
    if not (isinstance(ident, str) and _ID.match(ident)):
        got = show(ident) if "id" in data else "nothing"
        p.add("id", f"expected a lower-case id like h100-sxm, got {got}", data, "id")
    kind = data.get("kind")
    if kind not in KINDS:
        got = show(kind) if "kind" in data else "nothing"
        p.add("kind", f"expected one of {', '.join(KINDS)}, got {got}", data, "kind")
    values = {k: p.value(data, "", k, c, _OPTIONAL.get(k, REQUIRED)) for k, c in _FIELD_KIND.items()}
    instr = data.get("tensor_instruction", _OPTIONAL["tensor_instruction"])
    if instr not in TENSOR_INSTRUCTIONS:
        what = f"expected one of {', '.join(TENSOR_INSTRUCTIONS)}, got {show(instr)}"
        p.add("tensor_instruction", what, data, "tensor_instruction")
    refs = data.get("references", {})
    if not (isinstance(refs, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in refs.items())):
        p.add("references", "expected a mapping of tag -> citation text", data, "references")
        refs = {}
    tensor = _read_tensor(p, data)
    efficiency = _read_efficiency(p, data)
    p.raise_if_any()
    texts = ("name", "source")
    numbers = {k: (int(v) if k in _INTS else float(v)) for k, v in values.items() if k not in texts}
    return DeviceSpec(
        id=ident,
        kind=kind,
        references=MappingProxyType(dict(refs)),
        tensor_tflops=MappingProxyType(tensor),
        tensor_instruction=instr,
        efficiency=efficiency,
        origin=origin,
        name=values["name"],
        source=values["source"],
        **numbers,
    )


def _read_tensor(p: Problems, data: dict[Any, Any]) -> dict[str, float]:
    if "tensor_tflops" not in data:
        p.add("tensor_tflops", f"missing; expected {{dtype: dense TFLOP/s}} with dtypes from {', '.join(DTYPES)}")
        return {}
    raw = data["tensor_tflops"]
    if not isinstance(raw, dict) or not raw:
        what = f"expected a non-empty mapping dtype -> dense TFLOP/s, got {show(raw)}"
        p.add("tensor_tflops", what, data, "tensor_tflops")
        return {}
    out = {}
    for dtype in raw:
        if dtype not in DTYPES:
            p.add(join("tensor_tflops", dtype), f"unknown dtype; allowed: {', '.join(DTYPES)}", raw, dtype)
        elif (value := p.value(raw, "tensor_tflops", dtype, "tflops")) is not None:
            out[dtype] = value
    return out


def _read_efficiency(p: Problems, data: dict[Any, Any]) -> Efficiency | None:
    path = "efficiency"
    raw = data.get(path)
    if not isinstance(raw, dict):
        p.add(path, "missing or not a mapping; expected {gemm, copy, exp, softmax, calibration}", data, path)
        return None
    p.mapping(raw, path, (*EFFICIENCY_KEYS, "calibration"))
    values = {k: p.value(raw, path, k, "fraction", 1.0) for k in EFFICIENCY_KEYS if k != "gemm_fp8"}
    values["gemm_fp8"] = p.value(raw, path, "gemm_fp8", "fraction", values["gemm"] or 1.0)
    cal = raw.get("calibration")
    if not isinstance(cal, dict):
        p.add(join(path, "calibration"), "missing; expected {data_file, date, method}", raw, "calibration")
        return None
    names = tuple(f.name for f in fields(Calibration))
    p.mapping(cal, join(path, "calibration"), names)
    cal_values = {k: p.value(cal, join(path, "calibration"), k, "text") for k in names}
    if any(v is None for v in (*values.values(), *cal_values.values())):
        return None
    return Efficiency(**{k: float(v) for k, v in values.items()}, calibration=Calibration(**cal_values))


# ----------------------------------------------------------------------------------------------- YAML, registry


def read_device_file(path: str | Path, origin: str | None = None) -> DeviceSpec:
    """Read and validate one device YAML file; origin (default: the path) prefixes every message."""
    origin = origin or str(path)
    data = read_yaml(path, origin)
    return device_from_dict(data, origin)


_DEVICES: dict[str, Path] = {p.stem: p for p in sorted(Path(__file__).with_name("devices").glob("*.yaml"))}
DEVICES: Mapping[str, Path] = MappingProxyType(_DEVICES)
"""Registered devices: id -> YAML file (the shipped presets, then whatever register_device adds)."""


def register_device(name: str, path: str | Path) -> None:
    """Register a device YAML file under name; names are never replaced."""
    if name in _DEVICES:
        raise RegistryError(f"device {name!r} is already registered ({_DEVICES[name]})")
    if not Path(path).is_file():
        raise SpecError(f"{path}: no such file")
    _DEVICES[name] = Path(path)


_CACHE: dict[Path, tuple[float, DeviceSpec]] = {}


def load_device(name_or_path: str | Path | DeviceSpec) -> DeviceSpec:
    """The spec of a registered device id, or of a YAML file given by path (a DeviceSpec passes through).

    >>> load_device("a100-sxm").dram_bytes_per_s
    2039000000000.0
    """
    if isinstance(name_or_path, DeviceSpec):
        return name_or_path
    if isinstance(name_or_path, str) and name_or_path in _DEVICES:
        path, origin = _DEVICES[name_or_path], _DEVICES[name_or_path].name
    else:
        path = Path(name_or_path)
        if not (isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or "/" in str(name_or_path)):
            raise RegistryError(
                f"unknown device {name_or_path!r}; registered: {', '.join(sorted(_DEVICES))} "
                "(or give the path of a .yaml file)"
            )
        origin = str(path)
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = -1.0
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    spec = read_device_file(path, origin)
    _CACHE[path] = (stamp, spec)
    return spec


def with_efficiency(spec: DeviceSpec, values: Mapping[str, float], provenance: Mapping[str, str]) -> DeviceSpec:
    """A new spec with efficiency entries replaced and the calibration provenance ({data_file, date, method}).

    >>> spec = with_efficiency(load_device("h100-sxm"), {"copy": 0.9},
    ...                        {"data_file": "x.csv", "date": "2025-01-01", "method": "median of 20 runs"})
    >>> spec.efficiency.copy, spec.efficiency.calibration.data_file
    (0.9, 'x.csv')
    """
    data = spec.to_dict()
    for key, value in values.items():
        if key not in EFFICIENCY_KEYS:
            raise SpecError(f"{spec.id}: unknown efficiency {key!r}; allowed: {', '.join(EFFICIENCY_KEYS)}")
        data["efficiency"][key] = value
    data["efficiency"]["calibration"] = dict(provenance)
    return device_from_dict(data, f"{spec.origin} + calibration")


def write_device(spec: DeviceSpec, path: str | Path) -> Path:
    """Write the spec as YAML (read back by :func:`read_device_file` to an equal spec)."""
    path = Path(path)
    header = f"# {spec.name} ({spec.id}); written by simulator.device.write_device. Sources: see references.\n"
    path.write_text(header + yaml.safe_dump(spec.to_dict(), sort_keys=False, width=118), encoding="utf-8")
    return path


def replace_fields(spec: DeviceSpec, **changes: Any) -> DeviceSpec:
    """A re-validated copy with top-level fields replaced (e.g. ``dram_bytes_per_s``), for what-if studies."""
    data = spec.to_dict() | changes
    return device_from_dict(data, f"{spec.origin} + overrides")
