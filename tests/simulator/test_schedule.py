"""List scheduling of CTAs over SMs: the compiled heap gives what a plain heap of slot ends gives."""

import heapq

import numpy as np
import pytest

from simulator.kernels.schedule import EXACT_LIMIT, makespan_cycles


def _reference(cycles: np.ndarray, sms: int, per_sm: int) -> float:
    heap = [0.0] * (sms * per_sm)
    for c in np.asarray(cycles, dtype=np.float64) * per_sm:
        heapq.heapreplace(heap, heap[0] + c)
    return max(heap)


@pytest.mark.parametrize("seed", range(6))
def test_list_schedule_matches_a_heap_of_slot_ends(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        sms, per_sm = int(rng.integers(1, 40)), int(rng.integers(1, 4))
        n = int(rng.integers(sms * per_sm + 1, sms * per_sm * 12 + 2))
        kind = rng.integers(4)
        if kind == 0:
            cycles = rng.random(n) * 1e5
        elif kind == 1:  # many ties
            cycles = np.round(rng.random(n) * 6) * 1234.5 + 1.0
        elif kind == 2:  # longest first, in runs of equal CTAs (fa3)
            cycles = np.sort(np.repeat(rng.random(n // 4 + 1) * 3e4 + 1.0, 4))[::-1]
        else:  # row blocks fastest, then heads
            cycles = np.tile(np.arange(1, n // 5 + 2) * 0.7 + 3.1, 5)
        if cycles.size > EXACT_LIMIT or np.all(cycles == cycles[0]):
            continue
        got = makespan_cycles(cycles, sms, per_sm)
        assert got == _reference(cycles, sms, per_sm)
        assert isinstance(got, np.float64)
