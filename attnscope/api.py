"""The Python API: the same operations as the CLI, returning plain data.

>>> from attnscope import api
>>> info = api.describe_cascade("fusemax", {"M": 1024})
>>> info["passes"], len(info["einsums"])
(1, 12)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import workloads
from einsum.analysis import op_counts, pass_analysis, tensor_sizes, total_ops
from einsum.cascade import Cascade
from einsum.errors import AttnscopeError, ShapeError
from einsum.interpreter import random_inputs, run


@dataclass(frozen=True)
class LoadedCascade:
    """A cascade from the registry or from a file, with how to complete its sizes."""

    cascade: Cascade
    summary: str
    source: str
    entry: workloads.CascadeEntry | None

    def sizes(self, given: Mapping[str, int] | None = None) -> dict[str, int]:
        """Complete rank sizes (registry defaults apply to registered cascades only)."""
        if self.entry is not None:
            return self.entry.sizes(given)
        return self.cascade.rank_sizes(given or {})


def load_cascade(name_or_path: str) -> LoadedCascade:
    """A registered cascade by name, or a cascade text file (``.einsum``) by path."""
    path = Path(name_or_path)
    if name_or_path in workloads.CASCADES or not (path.suffix or path.exists()):
        entry = workloads.get_cascade(name_or_path)
        return LoadedCascade(entry.cascade, entry.summary, entry.source, entry)
    try:
        text = path.read_text()
    except OSError as exc:
        raise AttnscopeError(
            f"cannot read cascade file {name_or_path}: {exc.strerror}; give a registered name "
            f"({', '.join(sorted(workloads.CASCADES))}) or a readable .einsum file"
        ) from None
    cascade = Cascade.from_text(text, name=path.stem, origin=str(path))
    return LoadedCascade(cascade, _first_comment(text), str(path), None)


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith("#"):
            return line.strip().lstrip("#").strip()
    return ""


def list_cascades(shape: Mapping[str, int] | None = None) -> list[dict]:
    """One row per registered cascade: passes over M, Einsum count and total ops at the (default) shape."""
    rows = []
    for name in sorted(workloads.CASCADES):
        loaded = load_cascade(name)
        sizes = loaded.sizes(shape)
        rows.append(
            {
                "name": name,
                "passes": pass_analysis(loaded.cascade, "M").passes,
                "einsums": len(loaded.cascade.einsums),
                "ops": sum(total_ops(loaded.cascade, sizes).values()),
                "shape": sizes,
                "summary": loaded.summary,
            }
        )
    return rows


def describe_cascade(name_or_path: str, shape: Mapping[str, int] | None = None, rank: str = "M") -> dict:
    """Everything ``cascade show`` prints: the Einsums as text and the analyses at one shape."""
    loaded = load_cascade(name_or_path)
    c = loaded.cascade
    sizes = loaded.sizes(shape)
    analysis = pass_analysis(c, rank) if rank in c.ranks else None
    return {
        "name": c.name,
        "summary": loaded.summary,
        "source": loaded.source,
        "passes": analysis.passes if analysis else None,
        "pass_rank": rank if analysis else None,
        "einsum_passes": analysis.einsum_pass if analysis else {},
        "carried_between_passes": list(analysis.carried) if analysis else [],
        "einsums": [e.text for e in c.einsums],
        "partitions": {k: list(v) for k, v in c.partitions.items()},
        "inputs": {n: list(c.tensors[n].ranks) for n in c.inputs},
        "outputs": {n: list(c.tensors[n].ranks) for n in c.outputs},
        "shape": sizes,
        "ops": op_counts(c, sizes),
        "total_ops": total_ops(c, sizes),
        "tensor_elements": tensor_sizes(c, sizes),
        "text": c.text(),
    }


def run_cascade(
    name_or_path: str,
    shape: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """Execute a cascade with the reference interpreter.

    Inputs not given are drawn from ``seed`` (standard normal). Returns (inputs used, outputs, sizes).
    """
    loaded = load_cascade(name_or_path)
    sizes = loaded.sizes(shape)
    given = dict(inputs or {})
    unknown = sorted(set(given) - set(loaded.cascade.inputs))
    if unknown:
        raise ShapeError(
            f"{loaded.cascade.name}: unknown input array(s) {', '.join(unknown)}; "
            f"its inputs are {', '.join(loaded.cascade.inputs)}"
        )
    drawn = random_inputs(loaded.cascade, sizes, seed)
    used = {n: given.get(n, drawn[n]) for n in loaded.cascade.inputs}
    return used, run(loaded.cascade, sizes, used), sizes
