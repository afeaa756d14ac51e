"""simulator: hardware as data (specs) and the cost of a mapping on it."""

from simulator.specs import (
    ARCHITECTURES,
    COMPAT_SETTINGS,
    OPERATORS,
    ArchSpec,
    Compat,
    ComputeArray,
    FlatArch,
    FunctionalUnit,
    Operator,
    StorageLevel,
    load_arch,
    read_arch_file,
    register_arch,
    spec_from_dict,
    with_overrides,
)

__all__ = [
    "ARCHITECTURES",
    "COMPAT_SETTINGS",
    "OPERATORS",
    "ArchSpec",
    "Compat",
    "ComputeArray",
    "FlatArch",
    "FunctionalUnit",
    "Operator",
    "StorageLevel",
    "load_arch",
    "read_arch_file",
    "register_arch",
    "spec_from_dict",
    "with_overrides",
]
