"""Imported by the forkserver of ``reproduce``'s workers (:data:`validate.fusemax.WORKER_PRELOAD`): imports the study
and runs its smallest cell of every configuration (BERT at 1K, end-to-end layers included), which loads every kernel
the study runs, or compiles it on a first run, once in the forkserver; each worker forks with them instead of
loading or compiling them itself (both workers at the same time)."""

from validate.fusemax import report  # noqa: F401  (what the workers run)
from validate.fusemax.study import run_study

run_study(True, ("BERT",), ("1K",))
