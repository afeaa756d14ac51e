"""The golden-number invocations: which ``attnscope`` commands are frozen, and which of their outputs.

Shared by ``benchmarks/golden.py`` (runs them at a commit and writes ``tests/golden/<family>.json``) and
``tests/test_golden.py`` (runs them again on the current code and compares), so the two cannot drift.
Everything goes through the CLI with ``--json``: the commands are the interface that survives a refactor,
the Python names behind them are not.

Each invocation's output becomes ``{row: {field: value}}``: rows keyed by their identity (variant and
sequence length, model and length, kernel name), fields the flattened JSON leaves (``tiles.block_m``,
``parts[0].time_s``). Wall-clock timings, file paths and prose notes are left out. A command that fails
is frozen as its error (exit status and message, or exception type and message).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = Path(__file__).resolve().parent
PUBLISHED_ATTENTION = ROOT / "validate" / "data" / "published-attention-h100.csv"
OUT = "{out}"  # replaced by a fresh folder for each run
DROPPED = frozenset({"seconds", "evaluations_per_s", "files", "notes", "out", "figures"})  # timings, paths, prose
ID_COLUMNS = ("accel", "model", "seq_len", "PE_dim")  # row identity in the FuseMax study's CSVs

Leaf = str | int | float | bool | None
Rows = dict[str, dict[str, Leaf]]


@dataclass(frozen=True)
class Invocation:
    """One CLI command: ``family`` names its golden file, ``argv`` follows ``attnscope`` (``{out}``: a folder)."""

    family: str
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        return shlex.join(("attnscope", *self.argv))


# -- the invocations --------------------------------------------------------------------------------------------


def _fusemax() -> list[Invocation]:
    return [Invocation("fusemax", ("reproduce", "fusemax", "--out", OUT, "--no-figures", "--quiet", "--json"))]


def _compare() -> list[Invocation]:
    runs = [
        ("--device", "h100-sxm", "1K,4K,16K,64K,256K"),  # 256K: the unfused variants are 'impossible' rows
        ("--arch", "fusemax-cloud", "1K,4K,16K,64K"),
        ("--device", "orin-agx", "1K,4K,16K"),
        ("--arch", "flat-edge", "1K,4K,16K"),
    ]
    out = [
        Invocation("compare", ("compare-attention", flag, target, "--model", "llama3-8b", "--seq", seqs,
                               "--out", OUT, "--no-plot", "--json"))
        for flag, target, seqs in runs
    ]  # fmt: skip
    # the variant parameters, batch and dtype flags, on a second device and model
    params = ("--window", "1024", "--sinks", "16", "--splits", "4", "--block", "64", "--density", "0.5")
    variants = "sliding-window,streaming-llm,duo-attention,decode-splitk,block-sparse,moba,s2-attention"
    out.append(
        Invocation("compare", ("compare-attention", "--device", "h200", "--model", "mistral-7b", "--seq", "2K,8K",
                               "--variants", variants, "--batch", "4", "--dtype", "fp16", *params,
                               "--out", OUT, "--no-plot", "--json"))
    )  # fmt: skip
    return out


def published_attention_shapes() -> list[dict[str, str]]:
    """The distinct kernel shapes of ``validate/data/published-attention-h100.csv``, in file order."""
    with PUBLISHED_ATTENTION.open() as f:
        rows = list(csv.DictReader(f))
    columns = ("kernel", "dtype", "causal", "head_dim", "seq_len", "batch", "heads", "kv_heads")
    shapes = {tuple(r[c] for c in columns): None for r in rows}
    return [dict(zip(columns, s, strict=True)) for s in shapes]


def _predict() -> list[Invocation]:
    out = []
    for s in published_attention_shapes():  # every published H100 row is an SXM5 (one is unstated): h100-sxm
        argv = ("predict", "--device", "h100-sxm", "--op", "sdpa", "--kernel", s["kernel"], "--dtype", s["dtype"],
                "--batch", s["batch"], "--heads", s["heads"], "--kv-heads", s["kv_heads"], "--seq", s["seq_len"],
                "--head-dim", s["head_dim"])  # fmt: skip
        out.append(Invocation("predict", (*argv, *(("--causal",) if s["causal"] == "true" else ()), "--json")))
    gemms = [
        ("a100-sxm", "bf16", "1024", "10240", "5120"),  # the MAMF calibration shapes
        ("h100-sxm", "bf16", "2048", "2048", "13312"),
        ("h100-sxm", "bf16", "16", "12288", "5376"),  # skinny decode GEMMs
        ("a100-sxm", "bf16", "1", "4096", "4096"),
        ("h200", "bf16", "4K", "4K", "4K"),
        ("h200", "fp8", "1280", "4096", "4096"),
        ("orin-agx", "bf16", "4K", "4K", "4K"),
        ("orin-agx", "fp16", "128", "4096", "14336"),
    ]
    for device, dtype, m, n, k in gemms:
        argv = ("predict", "--device", device, "--op", "gemm", "--dtype", dtype, "--m", m, "--n", n, "--k", k)
        out.append(Invocation("predict", (*argv, "--json")))
    decodes = [("h100-sxm", "8", "4096"), ("h200", "8", "32K"), ("a100-sxm", "1", "4096"), ("orin-agx", "1", "4096")]
    for device, batch, context in decodes:
        argv = ("predict", "--device", device, "--op", "sdpa", "--kernel", "decode", "--batch", batch, "--heads",
                "32", "--kv-heads", "8", "--seq", "1", "--seq-kv", context, "--head-dim", "128")  # fmt: skip
        out.append(Invocation("predict", (*argv, "--json")))
    sdpa = ("--op", "sdpa", "--batch", "1", "--heads", "8", "--seq", "4096", "--head-dim", "64")
    others = [
        ("a100-sxm", *sdpa, "--kernel", "fa2", "--causal", "--window", "1024"),
        ("orin-agx", *sdpa, "--kernel", "fa2", "--causal"),
        ("orin-agx", *sdpa, "--kernel", "fa3"),  # an error today: fa3 needs wgmma
        ("cpu-ci", *sdpa, "--kernel", "math", "--causal"),
        ("cpu-ci", *sdpa, "--kernel", "cpu-flash", "--causal"),
        ("h100-sxm", "--op", "copy", "--nbytes", "256M"),
        ("h100-sxm", "--op", "exp", "--elements", "16M"),
        ("h100-sxm", "--op", "softmax", "--rows", "16K", "--cols", "4096"),
        ("h100-sxm", "--op", "broadcast_add", "--batch", "16", "--rows", "1024", "--cols", "1024"),
    ]
    out += [Invocation("predict", ("predict", "--device", device, *rest, "--json")) for device, *rest in others]
    return out


COST_SHAPES = ("B=64,H=12,M=4K,E=64,F=64", "B=1,H=32,M=1K,E=128,F=128", "B=4,H=16,M=16K,E=64,F=64")


def _cost() -> list[Invocation]:
    out = []
    for arch in ("fusemax-cloud", "flat-cloud"):
        for shape in COST_SHAPES:
            for design, workload in (("flat", "attention-3pass"), ("cascade", "fusemax"), ("arch", "fusemax"),
                                     ("binding", "fusemax")):  # fmt: skip
                argv = ("cost", "--arch", arch, "--workload", workload, "--shape", shape, "--design", design)
                out.append(Invocation("cost", (*argv, "--json")))
    # an error today: the FLAT mapper on the 12-Einsum FuseMax cascade (KeyError 'GM')
    argv = ("cost", "--arch", "fusemax-cloud", "--workload", "fusemax", "--shape", COST_SHAPES[0], "--design", "flat")
    out.append(Invocation("cost", (*argv, "--json")))
    return out


def _map() -> list[Invocation]:
    return [
        Invocation("map", ("map", "--arch", "fusemax-cloud", "--workload", "gemm", "--shape", "T=256,K=256,N=256",
                           "--budget", "2000", "--seed", "0", "--quiet", "--json")),
        Invocation("map", ("map", "--arch", "flat-edge", "--workload", "attention-3pass", "--shape",
                           "B=1,H=1,M=1K,E=64,F=64", "--einsum", "QK", "--method", "random", "--budget", "2000",
                           "--objective", "energy", "--seed", "1", "--quiet", "--json")),
    ]  # fmt: skip


def _roofline() -> list[Invocation]:
    runs = [
        ("--device", "h100-sxm", "prefill", "4096", "1"),
        ("--device", "h100-sxm", "decode", "4096", "8"),
        ("--arch", "fusemax-cloud", "prefill", "4096", "1"),
        ("--arch", "fusemax-cloud", "decode", "4096", "8"),
        ("--device", "orin-agx", "decode", "4096", "8"),
    ]
    return [
        Invocation("roofline", ("roofline", flag, target, "--model", "llama3-8b", "--phase", phase, "--seq", seq,
                                "--batch", batch, "--out", OUT, "--no-plot", "--json"))
        for flag, target, phase, seq, batch in runs
    ]  # fmt: skip


FAMILIES: dict[str, Callable[[], list[Invocation]]] = {
    "fusemax": _fusemax,
    "compare": _compare,
    "predict": _predict,
    "cost": _cost,
    "map": _map,
    "roofline": _roofline,
}


def invocations(families: list[str] | None = None) -> list[Invocation]:
    """Every invocation, family by family (all families when ``families`` is None)."""
    out = []
    for name in families or FAMILIES:
        out += FAMILIES[name]()
    commands = [inv.command for inv in out]
    assert len(set(commands)) == len(commands), "duplicate golden invocations"
    return out


# -- running one and extracting its numbers ---------------------------------------------------------------------


def shared_root() -> Path | None:
    """The folder holding ``reference/fusemax``: ``$ATTNSCOPE_SHARED``, ``shared/`` beside the checkout, or beside
    the main checkout when this is a ``git worktree`` (whose ``.git`` is a file naming ``<main>/.git/worktrees/x``).
    """
    candidates = [Path(os.environ["ATTNSCOPE_SHARED"])] if os.environ.get("ATTNSCOPE_SHARED") else []
    candidates.append(ROOT.parent / "shared")
    git = ROOT / ".git"
    if git.is_file() and git.read_text().startswith("gitdir:"):
        main_git = Path(git.read_text().split(":", 1)[1].strip()).parents[1]
        candidates.append(main_git.parent.parent / "shared")
    return next((c for c in candidates if (c / "reference" / "fusemax").is_dir()), None)


def flatten(value, prefix: str = "") -> dict[str, Leaf]:
    """JSON leaves by path (``a.b``, ``a[0].b``); keys in ``DROPPED`` are left out at every depth."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key not in DROPPED:
                out |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out |= flatten(item, f"{prefix}[{i}]")
        return out
    return {prefix: value}


def _number(text: str) -> Leaf:
    try:
        return float(text)
    except ValueError:
        return text


def _study_rows(data: dict, out: Path) -> Rows:
    """Every cell of every CSV the study writes (as published and corrected), plus the headline summary."""
    rows: Rows = {"summary": flatten(data)}
    for path in sorted(out.glob("*.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                key = "/".join([path.stem, *(row[c] for c in ID_COLUMNS if c in row)])
                assert key not in rows, f"duplicate row {key}"
                rows[key] = {c: _number(v) for c, v in row.items() if c not in ID_COLUMNS}
    return rows


def _keyed_rows(data: dict, name: Callable[[dict], str]) -> Rows:
    """A ``rows`` list keyed by ``name(row)``, and the other top-level fields as the row ``summary``."""
    rows: Rows = {"summary": flatten({k: v for k, v in data.items() if k != "rows"})}
    for row in data["rows"]:
        key = name(row)
        assert key not in rows, f"duplicate row {key}"
        rows[key] = flatten(row)
    return rows


EXTRACT: dict[str, Callable[[dict, Path], Rows]] = {
    "fusemax": _study_rows,
    "compare": lambda data, out: _keyed_rows(data, lambda r: f"{r['variant']} seq={r['seq']}"),
    "roofline": lambda data, out: _keyed_rows(data, lambda r: r["kernel"]),
    "predict": lambda data, out: {"prediction": flatten(data)},
    "cost": lambda data, out: {"cost": flatten(data)},
    "map": lambda data, out: {"best": flatten(data)},
}


def evaluate(inv: Invocation, out: Path) -> dict:
    """Run ``inv`` in-process with ``out`` as its output folder: ``{"rows": ...}``, or ``{"error": ...}``."""
    from attnscope.cli import main

    argv = [out.as_posix() if a == OUT else a for a in inv.argv]
    stdout, stderr = io.StringIO(), io.StringIO()
    env_before = os.environ.get("ATTNSCOPE_SHARED")
    shared = shared_root() if inv.family == "fusemax" else None
    if shared is not None:  # the study's report finds the published CSVs beside a main checkout, or by this
        os.environ["ATTNSCOPE_SHARED"] = str(shared)
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            code = main(argv)
    except Exception as exc:  # a bug in the command at this commit: freeze it as it is
        return {"error": {"exception": type(exc).__name__, "message": str(exc).replace(out.as_posix(), OUT)}}
    finally:
        if env_before is None:
            os.environ.pop("ATTNSCOPE_SHARED", None)
        else:
            os.environ["ATTNSCOPE_SHARED"] = env_before
    if code != 0:
        return {"error": {"exit_code": code, "stderr": stderr.getvalue().strip().replace(out.as_posix(), OUT)}}
    return {"rows": EXTRACT[inv.family](json.loads(stdout.getvalue()), out)}


def count_leaves(record: dict) -> tuple[int, int]:
    """(numbers, other leaves) frozen in one evaluated record."""
    numbers = other = 0
    for fields in record.get("rows", {}).values():
        for value in fields.values():
            if isinstance(value, int | float) and not isinstance(value, bool):
                numbers += 1
            else:
                other += 1
    return numbers, other
