"""Design-space sweeps that never lose work: spec -> points -> workers -> one SQLite store -> Pareto fronts.

>>> from mappers.sweep import read_sweep_file, sweep_points
>>> spec = read_sweep_file("examples/sweeps/fusemax-pe-buffer.yaml")
>>> len(sweep_points(spec))
60

Modules: :mod:`~mappers.sweep.spec` (YAML -> validated ``SweepSpec``), :mod:`~mappers.sweep.points`
(sampling, derived values, point keys), :mod:`~mappers.sweep.strategies` (per-point mapping strategies),
:mod:`~mappers.sweep.metrics` (what each point records), :mod:`~mappers.sweep.store` (the SQLite store),
:mod:`~mappers.sweep.runner` (local pool / Dask execution), :mod:`~mappers.sweep.pareto` (fronts and plots),
:mod:`~mappers.sweep.targets` (the device axis of device sweeps), :mod:`~mappers.sweep.plot` (line plots).
Dask, pyarrow, matplotlib and tqdm are imported only where used.
"""

from mappers.sweep.metrics import METRICS, Metric, register_metric
from mappers.sweep.pareto import pareto_front, store_front
from mappers.sweep.points import MODEL_VERSION, Point, Workload, sweep_points
from mappers.sweep.runner import SweepSummary, make_executor, run_sweep
from mappers.sweep.spec import SweepSpec, read_sweep_file, sweep_from_dict
from mappers.sweep.store import Store, StoreError
from mappers.sweep.strategies import STRATEGIES, Strategy, register_strategy

__all__ = [
    "METRICS",
    "MODEL_VERSION",
    "STRATEGIES",
    "Metric",
    "Point",
    "Store",
    "StoreError",
    "Strategy",
    "SweepSpec",
    "SweepSummary",
    "Workload",
    "make_executor",
    "pareto_front",
    "read_sweep_file",
    "register_metric",
    "register_strategy",
    "run_sweep",
    "store_front",
    "sweep_from_dict",
    "sweep_points",
]
