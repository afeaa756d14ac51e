"""attnscope."""

import gc

GC_THRESHOLDS = (10_000, 20, 20)
"""Python's cyclic collector, as a command runs it: a search builds and drops millions of small objects (loop nests,
mappings, costs) beside memos that live for the whole run, and with the default thresholds (700, 10, 10) full
collections rescanning those memos took 15% of ``compare-attention``'s time (1.8 of 12 s, measured with
``gc.callbacks``). Nothing in attnscope relies on the collector to free memory in time: arrays go by reference
counts."""


def tune_gc() -> None:
    """Set up the collector for a command's process (the CLI, a worker): what is alive now (the imported modules,
    their functions and tables) is frozen out of every later collection, and collections are rarer
    (:data:`GC_THRESHOLDS`)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
