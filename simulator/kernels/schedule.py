"""Thread blocks over SMs: how long a grid of CTAs takes, wave quantization and tails included.

An SM holds ``per_sm`` co-resident CTAs that share its units, so a slot runs a CTA at ``1/per_sm`` of the SM's
rate: a CTA needing ``c`` SM-cycles occupies its slot for ``c * per_sm`` cycles. Equal CTAs give the closed
form ``ceil(n / slots) * c * per_sm`` (wave quantization); unequal ones (causal attention) are list-scheduled
in launch order, each CTA to the slot that frees first, as the hardware block scheduler does.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

EXACT_LIMIT = 60_000
"""Above this many unequal CTAs the makespan is approximated (mean load plus the largest CTA)."""


def makespan_cycles(cta_cycles: np.ndarray, sms: int, per_sm: int) -> float:
    """Cycles until the last CTA finishes; cta_cycles in launch order, each in SM-cycles."""
    cycles = np.asarray(cta_cycles, dtype=np.float64)
    n = cycles.size
    if n == 0:
        return 0.0
    slots = sms * per_sm
    if np.all(cycles == cycles[0]):
        return math.ceil(n / slots) * float(cycles[0]) * per_sm
    if n <= slots:
        return float(cycles.max()) * per_sm
    if n > EXACT_LIMIT:
        return max(float(cycles.sum()) / sms, float(cycles.max()) * per_sm)
    heap = [0.0] * slots
    for c in cycles * per_sm:
        heapq.heapreplace(heap, heap[0] + c)
    return max(heap)


def waves(n_ctas: int, sms: int, per_sm: int) -> float:
    """Waves of CTAs over the machine (fractional: the last wave may be partial)."""
    return n_ctas / (sms * per_sm)
