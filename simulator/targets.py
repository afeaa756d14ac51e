"""A target: the hardware a case is costed on, a spatial-array architecture or a GPU/edge/CPU device.

:func:`load_target` is the one place that turns what a user typed (a preset name or a ``.yaml`` path) into a
validated spec of either kind; a YAML file is an architecture when it has ``levels`` (storage levels of a
spatial array), a device otherwise.

>>> load_target("fusemax-cloud").kind, load_target("h100-sxm").kind
('arch', 'device')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einsum.errors import SpecError
from einsum.yamlio import read_yaml
from simulator.device import DEVICES, DeviceSpec, load_device, read_device_file
from simulator.specs import ARCHITECTURES, ArchSpec, load_arch

__all__ = ["ArchTarget", "DeviceTarget", "Target", "load_target", "valid_targets"]


@dataclass(frozen=True)
class ArchTarget:
    """A spatial array: PE arrays, storage levels, DRAM, energy and area (:mod:`simulator.specs`)."""

    spec: ArchSpec
    kind = "arch"

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class DeviceTarget:
    """A GPU, edge SoC or CPU (:mod:`simulator.device`) at one datatype; no energy model."""

    spec: DeviceSpec
    dtype: str
    kind = "device"

    @property
    def name(self) -> str:
        return self.spec.id


Target = ArchTarget | DeviceTarget


def valid_targets() -> str:
    """What a target may be, for messages."""
    return (
        f"device ids: {', '.join(sorted(DEVICES))}; spatial-array presets: {', '.join(sorted(ARCHITECTURES))} "
        "(or the path of a .yaml file)"
    )


def load_target(
    ref: str | Path | ArchSpec | DeviceSpec | Target, *, dtype: str | None = None, origin: str | None = None
) -> Target:
    """A preset name, a ``.yaml`` path or a spec -> a validated target (``dtype``: devices only; default the
    device's widest fast type, bf16 where it has it; ``origin``: how messages name a file, default its path)."""
    if isinstance(ref, ArchTarget | DeviceTarget):
        if dtype is not None and isinstance(ref, DeviceTarget) and dtype != ref.dtype:
            return _device(ref.spec, dtype)
        return ref
    if isinstance(ref, ArchSpec):
        return ArchTarget(ref)
    if isinstance(ref, DeviceSpec):
        return _device(ref, dtype)
    text = str(ref)
    if text in DEVICES:
        return _device(load_device(text), dtype)
    if text in ARCHITECTURES:
        return _arch(load_arch(text), dtype)
    if isinstance(ref, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        data = read_yaml(Path(text), origin or text)
        if isinstance(data, dict) and "levels" in data:
            return _arch(load_arch(Path(text)), dtype)
        return _device(read_device_file(Path(text), origin or text), dtype)
    raise SpecError(f"unknown target {text!r}; {valid_targets()}")


def _arch(spec: ArchSpec, dtype: str | None) -> ArchTarget:
    if dtype is not None:
        raise SpecError(f"{spec.name}: --dtype applies to devices; a spatial array's word is {spec.word_bytes} bytes")
    return ArchTarget(spec)


def _device(spec: DeviceSpec, dtype: str | None) -> DeviceTarget:
    from simulator.gpu import default_dtype

    chosen = dtype or default_dtype(spec)
    if chosen not in spec.tensor_tflops and spec.kind != "cpu":
        raise SpecError(
            f"{spec.id}: no {chosen!r} tensor rate (tensor_tflops); it has {', '.join(spec.tensor_tflops) or 'none'}"
        )
    return DeviceTarget(spec, chosen)


def describe(target: Target) -> dict[str, Any]:
    """The target as plain data for results: name, kind, source."""
    return {"name": target.name, "kind": target.kind, "source": target.spec.source}
