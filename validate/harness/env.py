"""Provenance of a run: what the device is, how it is clocked and which software stack timed it.

Everything that cannot be read (no ``nvidia-smi``, no ``/proc/cpuinfo``) is left empty rather than guessed.
"""

from __future__ import annotations

import ctypes
import platform
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from einsum.errors import AttnscopeError


@dataclass(frozen=True)
class Environment:
    """The provenance columns every row of a run shares (see :class:`~validate.harness.schema.Measurement`)."""

    device_kind: str
    device_name: str
    arch: str
    compute_units: int
    clock_mhz: float | None
    max_clock_mhz: float | None
    memory_bytes: int | None
    driver: str
    cuda: str
    cudnn: str
    torch: str
    python: str
    host: str


def cache_cpu_allocations() -> str:
    """Make glibc keep freed memory in the process (as torch's CUDA caching allocator does on GPUs).

    glibc serves blocks above its mmap threshold (dynamic, at most 32 MiB) with fresh mmap'd pages that are
    faulted in and zeroed on every call; a kernel writing a 64 MiB output then runs at page-fault speed, several
    times slower than its memory allows. Raising the mmap and trim thresholds (1 GiB, 2 GiB) lets freed blocks
    be reused. Process-wide and not undone. Returns the ``allocator`` provenance value.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31) == 1
    except (OSError, AttributeError):
        ok = False
    return "glibc-cached" if ok else "default"


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttnscopeError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise AttnscopeError(f"device {name!r}: the harness measures cpu or cuda devices")
    return device


def environment(device: torch.device) -> Environment:
    """Provenance of ``device`` and the software stack, read now."""
    common = {
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if torch.backends.cudnn.is_available() else "",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        smi = _nvidia_smi(index)
        return Environment(
            "cuda", props.name, f"sm_{props.major}{props.minor}", props.multi_processor_count,
            smi.get("clocks.sm"), smi.get("clocks.max.sm"), props.total_memory, str(smi.get("driver_version", "")),
            **common,
        )  # fmt: skip
    cpu = _cpuinfo()
    return Environment(
        "cpu", cpu.get("model name", platform.processor() or "cpu"), torch.backends.cpu.get_cpu_capability(),
        torch.get_num_threads(), _float(cpu.get("cpu MHz")), _cpu_max_mhz(), _mem_total(), "", **common,
    )  # fmt: skip


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _nvidia_smi(index: int) -> dict[str, float | str]:
    """Clocks and driver from nvidia-smi (empty when it is absent or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    keys = ("clocks.sm", "clocks.max.sm", "driver_version")
    try:
        out = subprocess.run([exe, f"--id={index}", f"--query-gpu={','.join(keys)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.strip().splitlines()[0].split(",")] if out.strip() else []
    result: dict[str, float | str] = {}
    for key, value in zip(keys, values, strict=False):
        number = _float(value)
        result[key] = value if key == "driver_version" else number
    return {k: v for k, v in result.items() if v is not None}


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def _cpu_max_mhz() -> float | None:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
    except (OSError, ValueError):
        return None


def _mem_total() -> int | None:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None
