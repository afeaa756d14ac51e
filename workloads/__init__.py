"""Named workloads: attention cascades and transformer model shapes (pure data and builders, no costs)."""

from workloads import attention as _attention  # noqa: F401  (registers the attention cascades)
from workloads import variants as _variants  # noqa: F401  (registers the attention variants)
from workloads.registry import CASCADES, CascadeEntry, get_cascade, parse_shape, register_cascade

__all__ = ["CASCADES", "CascadeEntry", "get_cascade", "parse_shape", "register_cascade"]
