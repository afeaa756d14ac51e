"""Targets of a device sweep: the values of its ``device`` axis, resolved to device or spatial-array presets.

A device sweep (a strategy whose ``point_kind`` is ``device``, e.g. ``sdpa`` or ``llm``) evaluates every point
on one target: a device preset of :mod:`simulator.device` (an id such as ``h100-sxm``, or a device ``.yaml``
path relative to the sweep spec) or, for strategies that take them, a spatial-array preset of
:mod:`simulator.specs` (``flat-edge``, or an architecture ``.yaml``). Device-field axes (``dram_bytes_per_s``,
``efficiency.gemm``, ``tensor_tflops.bf16``) are applied to the device's YAML data and re-validated, as
:func:`simulator.specs.with_overrides` does for architectures.

A target travels to workers as plain data (a device spec's ``to_dict()``, an architecture's reference and
fingerprint), so pool and Dask workers evaluate exactly the content whose fingerprint is in the point's key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError, SpecError
from simulator.device import DEVICES, DeviceSpec, device_from_dict
from simulator.specs import ARCHITECTURES, ArchSpec, load_arch
from simulator.targets import ArchTarget, load_target

TARGET_KINDS = ("device", "arch")


def fingerprint(data: Any) -> str:
    """SHA-256 of plain data as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    """One value of the device axis, resolved."""

    name: str
    """The value as the spec gives it (the store's ``device`` column)."""
    kind: str
    """``device`` (a GPU, edge SoC or CPU preset) or ``arch`` (a spatial-array preset)."""
    ref: str
    """What the loaders take: a registered id / preset name, or an absolute ``.yaml`` path."""
    fingerprint: str
    """SHA-256 of the preset's content (part of every point's key: editing the preset recomputes its points)."""
    data: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """Devices: the spec as plain data (what workers rebuild it from); None for architectures."""
    origin: str = ""
    """Where the preset was read from, for messages."""

    @property
    def as_input(self) -> dict[str, str]:
        """The target as a point input (hashed into the key, stored in ``inputs_json``)."""
        return {"name": self.name, "kind": self.kind, "fingerprint": self.fingerprint}


def resolve_target(value: Any, base_dir: Path, arch_presets: bool) -> Target:
    """A device id, an architecture preset name (if arch_presets) or a .yaml path -> Target; SpecError on a miss.

    >>> t = resolve_target("h100-sxm", Path("."), arch_presets=False)
    >>> t.kind, t.ref, len(t.fingerprint)
    ('device', 'h100-sxm', 64)
    """
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"expected a device id, got {value!r} ({type(value).__name__}); {valid_targets(arch_presets)}")
    named = value in DEVICES or value in ARCHITECTURES
    if not named and not (value.endswith((".yaml", ".yml")) or "/" in value):
        raise SpecError(f"unknown device {value!r}; {valid_targets(arch_presets)}")
    ref = value if named else str((base_dir / value).resolve())
    target = load_target(Path(ref) if not named else ref, origin=value)  # simulator.targets: the one resolver
    if isinstance(target, ArchTarget):
        if not arch_presets:
            what = f"unknown device {value!r}" if named else f"{value}: a spatial-array architecture (it has levels)"
            raise SpecError(f"{what}; this strategy runs on devices: {valid_targets(arch_presets)}")
        return _arch_target(value, ref, target.spec)
    return _device_target(value, target.spec, None if named else ref)


def valid_targets(arch_presets: bool) -> str:
    """What a device axis may hold, for messages."""
    text = f"device ids: {', '.join(sorted(DEVICES))}"
    if arch_presets:
        text += f"; spatial-array presets: {', '.join(sorted(ARCHITECTURES))}"
    return text + " (or the path of a .yaml file)"


def _device_target(name: str, spec: DeviceSpec, ref: str | None = None) -> Target:
    data = spec.to_dict()
    return Target(name, "device", ref or name, fingerprint(data), data, spec.origin)


def _arch_target(name: str, ref: str, spec: ArchSpec) -> Target:
    return Target(name, "arch", ref, fingerprint(spec.to_dict()), None, spec.origin)


# ------------------------------------------------------------------------------------------------- device fields


def device_value(data: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a device's plain data (``efficiency.gemm``); KeyError when absent."""
    node: Any = data
    for step in dotted.split("."):
        if not (isinstance(node, Mapping) and step in node):
            raise KeyError(dotted)
        node = node[step]
    return node


def device_with_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], origin: str) -> DeviceSpec:
    """A device rebuilt from plain data with values replaced at dotted paths, re-validated.

    Only existing fields can be set; a miss names the path and lists the keys at that level.

    >>> from simulator.device import load_device
    >>> spec = load_device("h100-sxm")
    >>> device_with_overrides(spec.to_dict(), {"dram_bytes_per_s": 4.0e12}, "h100").dram_bytes_per_s
    4000000000000.0
    """
    new = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        node: Any = new
        steps = dotted.split(".")
        for i, step in enumerate(steps):
            if not (isinstance(node, dict) and step in node):
                where = ".".join(steps[:i]) or "the device"
                keys = ", ".join(node) if isinstance(node, dict) else f"none: it is the value {node!r}"
                raise SpecError(f"{origin}: no field {dotted!r}: {where} has no {step!r}; its keys: {keys}")
            if i == len(steps) - 1:
                node[step] = copy.deepcopy(value)
            else:
                node = node[step]
    return device_from_dict(new, f"{origin} + overrides")


# --------------------------------------------------------------------------------------------------- in workers


@dataclass(frozen=True)
class Resolved:
    """A target as a strategy sees it: the device spec, or the architecture's reference and spec."""

    name: str
    kind: str
    device: DeviceSpec | None = None
    arch_ref: str | None = None
    arch: ArchSpec | None = None


def resolve_in_worker(target: Target, overrides: tuple[tuple[str, Any], ...]) -> Resolved:
    """The evaluated form of a target with a point's overrides (cached per worker)."""
    return _resolve(target, overrides)


@lru_cache(maxsize=256)
def _resolve(target: Target, overrides: tuple[tuple[str, Any], ...]) -> Resolved:
    if target.kind == "device":
        if overrides:
            spec = device_with_overrides(target.data, dict(overrides), target.name)
        else:
            spec = device_from_dict(copy.deepcopy(dict(target.data)), target.origin)
        return Resolved(target.name, "device", device=spec)
    if overrides:
        raise SpecError(f"{target.name}: device-field overrides do not apply to a spatial-array preset")
    arch = load_arch(target.ref)
    if fingerprint(arch.to_dict()) != target.fingerprint:
        raise AttnscopeError(
            f"{target.ref}: the preset changed while the sweep ran (its content no longer matches the point keys); "
            "rerun the sweep"
        )
    return Resolved(target.name, "arch", arch_ref=target.ref, arch=arch)
