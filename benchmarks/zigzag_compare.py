"""attnscope's mapper beside ZigZag (LOMA): the same GEMMs on the same architecture, in one run.

Problems: attention's QK for BERT at 4K tokens, every head of a 64-sequence batch at once
(``O[b,h,m,n] = sum[k] I[b,h,m,k] * W[b,h,k,n]``, B=64, H=12, M=N=4096, K=64), and a 4096^3 GEMM.
Architecture: a 256 x 256 MAC array, a 16 MiB global buffer, 400 GiB/s DRAM at 940 MHz, 16-bit words
(``benchmarks/aligned-256.yaml`` for attnscope; the ZigZag YAML is written by :func:`zigzag_arch`).

Both tools get the same spatial mapping (M over the rows, N over the columns) and search the temporal
mapping; attnscope also searches the spatial unrolling (annealing). Reported per tool: mappings evaluated,
seconds, mappings per second, best latency and energy (each in its own cost model), and the ratio of
attnscope's ``bench mapper`` throughput (one core) to ZigZag's mappings per second. attnscope's best loop
order is then costed by ZigZag (``temporal_ordering`` fixed, ZigZag allocating the loops to memories).

Run (ZigZag lives in its own virtual environment, never in attnscope's)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install zigzag-dse six && .venv-bench/bin/pip install -e .
    .venv-bench/bin/python benchmarks/zigzag_compare.py --markdown docs/bench-mapper.md

Without ZigZag installed the script says so and reports attnscope's side only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from einsum.cascade import Cascade  # noqa: E402
from einsum.lower import lower  # noqa: E402
from mappers.constraints import constraints_from_dict  # noqa: E402
from mappers.search import bench_mapper, search  # noqa: E402
from mappers.space import MapSpace  # noqa: E402
from simulator.specs import load_arch  # noqa: E402

ARCH = ROOT / "benchmarks" / "aligned-256.yaml"
PROBLEMS: dict[str, dict[str, Any]] = {
    "QK BERT 4K (B=64, H=12)": {
        "einsum": "input I[B,H,M,K], W[B,H,K,N]\nO[b,h,m,n] = sum[k] I[b,h,m,k] * W[b,h,k,n]",
        "sizes": {"B": 64, "H": 12, "M": 4096, "N": 4096, "K": 64},
        "zigzag": "O[b][h][m][n]+=I[b][h][m][k]*W[b][h][k][n]",
    },
    "GEMM 4096^3": {
        "einsum": "input I[M,K], W[K,N]\nO[m,n] = sum[k] I[m,k] * W[k,n]",
        "sizes": {"M": 4096, "N": 4096, "K": 4096},
        "zigzag": "O[m][n]+=I[m][k]*W[k][n]",
    },
}
SPATIAL = {"m": 256, "n": 256}
"""The shared spatial mapping: m over the 256 rows, n over the 256 columns (ZigZag: D1: M 256, D2: N 256)."""
ANNEAL_BUDGET = 200_000

DIFFERENCES = (
    "Latency. attnscope: max(compute cycles, each level's words / its bandwidth) - transfers overlap compute "
    "perfectly, no fill/drain ramp. ZigZag: ideal cycles plus stalls where a memory port cannot keep up, plus "
    "the on-loading of the first tiles and the off-loading of the last outputs (latency_total2).",
    "Registers. attnscope: one 12-word register file per PE shared by the three tensors (a tensor may bypass "
    "it). ZigZag: three 4-word (64-bit) registers per PE, one per operand, no double buffering.",
    "Loop allocation. attnscope: one loop nest; a level's tile of a tensor spans the loops at that level and "
    "below (a tensor may bypass a level). ZigZag (LOMA): one loop order, but each operand cuts it into its own "
    "memory levels, so operands may keep different loop ranges in the same memory.",
    "Buffer bandwidth. attnscope: the global buffer is unbounded (as in the FuseMax study). ZigZag: separate "
    "read ports per operand and one write port, each up to 2^20 bits per cycle (never the bottleneck).",
    "DRAM. 400 GiB/s at 940 MHz = 228.5 words per cycle in attnscope; ZigZag: one read/write port of 3655 bits "
    "per cycle shared by all operands.",
    "Reuse inside the PE. attnscope reads both operands from the PE registers and read-modify-writes the "
    "output there for every MAC (the cost kernel's stated assumption); ZigZag keeps a value at the MAC across "
    "loops that do not change it (the output over the reduction loop, an input over a loop not indexing it), "
    "so its register energy is several times smaller: most of the energy difference between the tools.",
    "Energy. Both: per-access energies of the fusemax-cloud preset (DRAM 249.6 pJ per 64-bit access, buffer "
    "12512.8/15751.5 pJ per 4096-bit row read/write, registers 2.19/1.90 pJ per word) and 17.16 pJ per MAC. "
    "attnscope charges per word moved (access energy / access width); ZigZag per access of the port's minimum "
    "width. No network (multicast, reduction) energy in either.",
    "Search. ZigZag: LOMA with lpf_limit=6 (all orderings of each loop's prime factors merged to 6 factors, "
    "allocated bottom-up to the memories). attnscope: exhaustive over every factorization, distinct loop order "
    "and bypass choice with the spatial mapping fixed (capacity and symmetry pruning), branch and bound: every "
    "tiling that fits gets a lower bound on latency and energy (each tensor's least traffic; then per bypass "
    "choice with the tensors sharing each level's loop order), tilings are costed best bound first, and a "
    "tiling or bypass choice whose bound the best mapping found beats is skipped with all its points, so the "
    "optimum is proven without costing them; annealing when the spatial unrolling is searched too.",
)


# ----------------------------------------------------------------------------------------------------- attnscope


def attnscope_side(name: str, problem: dict[str, Any]) -> dict[str, Any]:
    arch = load_arch(ARCH)
    e = lower(Cascade.from_text(problem["einsum"], name="bench"), problem["sizes"]).einsum("O")
    fixed = constraints_from_dict(
        {
            "targets": [
                {"target": "pe_2d", "type": "spatial", "factors": SPATIAL, "axes": {"rows": ["m"], "cols": ["n"]}}
            ]
        },
        "<same spatial mapping as ZigZag>",
    )
    rows = []
    best = {}
    _warm_up(arch)
    for objective in ("latency", "energy"):
        space = MapSpace.build(e, arch, constraints=fixed)
        result = search(space, objective, method="exhaustive")
        best[objective] = result
        rows.append(_row("attnscope", f"exhaustive (branch and bound), same spatial mapping, min {objective}", result))
    free = MapSpace.build(e, arch)
    for objective in ("latency", "energy"):
        result = search(free, objective, method="anneal", budget=ANNEAL_BUDGET, seed=0)
        rows.append(_row("attnscope", f"anneal {ANNEAL_BUDGET:,}, spatial searched too, min {objective}", result))
    return {"rows": rows, "best": best}


def _warm_up(arch) -> None:
    """Load (or compile) the search's Numba kernels on a tiny space, so the timed searches measure searching, as
    ZigZag's do (its code is loaded when it is imported)."""
    e = lower(Cascade.from_text(PROBLEMS["GEMM 4096^3"]["einsum"], name="warm-up"), {"M": 16, "N": 16, "K": 16})
    space = MapSpace.build(e.einsum("O"), arch)
    for method in ("exhaustive", "anneal"):
        search(space, "latency", method=method, budget=None if method == "exhaustive" else 1000)


def _row(tool: str, search_kind: str, r) -> dict[str, Any]:
    return {
        "tool": tool,
        "search": search_kind,
        "space_size": r.space_size,
        "evaluated": r.evaluated,
        "seconds": r.seconds,
        "per_s": r.evaluations_per_s,
        "latency_cycles": r.latency_cycles,
        "energy_pj": r.energy_pj,
        "mac_energy_pj": r.compute_energy_pj,
        "lower_bound_cycles": r.space.lower_bounds()[0],
        "utilization": float(r.costs.utilization[0]),
        "mapping": _nest_text(r.mapping),
    }


def _nest_text(m) -> str:
    levels = [
        f"{name}: " + " ".join(f"{v}{b}" for v, b in loops) for name, loops in zip(m.levels, m.temporal, strict=True)
    ]
    spatial = " ".join(f"{v}{f}" for loops in m.spatial for v, f in loops)
    keep = "; ".join(f"{name} holds {''.join(sorted(k))}" for name, k in zip(m.levels[1:], m.keep[1:], strict=True))
    return f"{' | '.join(levels)} | spatial {spatial} | {keep}"


# ------------------------------------------------------------------------------------------------------- ZigZag


def zigzag_arch() -> dict[str, Any]:
    """The architecture in ZigZag's YAML (sizes in bits, costs per access of the port's minimum width)."""

    def port(name: str, kind: str, lo: int, hi: int, allocation: list[str]) -> dict[str, Any]:
        return {"name": name, "type": kind, "bandwidth_min": lo, "bandwidth_max": hi, "allocation": allocation}

    def register(operand: str) -> dict[str, Any]:
        ports = [
            port("r_port_1", "read", 16, 64, [f"{operand}, tl"]),
            port("w_port_1", "write", 16, 64, [f"{operand}, fh"]),
        ]
        if operand == "O":
            ports += [port("r_port_2", "read", 16, 64, ["O, th"]), port("w_port_2", "write", 16, 64, ["O, fl"])]
        return {
            "size": 64, "r_cost": 2.190435, "w_cost": 1.902435, "area": 0, "latency": 1,
            "auto_cost_extraction": False, "operands": [operand], "ports": ports, "served_dimensions": [],
        }  # fmt: skip

    wide = 1 << 20
    return {
        "name": "aligned_256",
        "memories": {
            "reg_I1": register("I1"),
            "reg_I2": register("I2"),
            "reg_O": register("O"),
            "sram_16MiB": {
                "size": 16 * 2**20 * 8,
                "r_cost": 12512.760572,
                "w_cost": 15751.460572,
                "area": 0,
                "latency": 1,
                "auto_cost_extraction": False,
                "operands": ["I1", "I2", "O"],
                "ports": [
                    port("r_port_1", "read", 4096, wide, ["I1, tl"]),
                    port("r_port_2", "read", 4096, wide, ["I2, tl"]),
                    port("r_port_3", "read", 4096, wide, ["O, tl", "O, th"]),
                    port("w_port_1", "write", 4096, wide, ["I1, fh", "I2, fh", "O, fh", "O, fl"]),
                ],
                "served_dimensions": ["D1", "D2"],
            },
            "dram": {
                "size": 10**13,
                "r_cost": 249.6,
                "w_cost": 249.6,
                "area": 0,
                "latency": 1,
                "auto_cost_extraction": False,
                "operands": ["I1", "I2", "O"],
                "ports": [
                    port(
                        "rw_port_1",
                        "read_write",
                        64,
                        3655,
                        ["I1, fh", "I1, tl", "I2, fh", "I2, tl", "O, fh", "O, tl", "O, fl", "O, th"],
                    ),
                ],
                "served_dimensions": ["D1", "D2"],
            },
        },
        "operational_array": {"unit_energy": 17.1645, "unit_area": 1, "dimensions": ["D1", "D2"], "sizes": [256, 256]},
    }


def zigzag_side(name: str, problem: dict[str, Any], ordering: list[tuple[str, int]] | None = None) -> list[dict]:
    """ZigZag's LOMA search for min latency and min energy; with ``ordering``, that loop order costed."""
    from zigzag import api
    from zigzag.cost_model.cost_model import CostModelEvaluation

    counted = {"n": 0}
    original = CostModelEvaluation.__init__

    def counting(self, *args, **kwargs):  # every mapping ZigZag costs builds one CostModelEvaluation
        counted["n"] += 1
        original(self, *args, **kwargs)

    CostModelEvaluation.__init__ = counting
    sizes = problem["sizes"]
    dims = [d for d in ("B", "H", "M", "N", "K") if d in sizes]
    workload = [
        {
            "id": 0, "name": "bench", "operator_type": "Gemm", "equation": problem["zigzag"],
            "loop_dims": dims, "loop_sizes": [sizes[d] for d in dims],
            "operand_precision": {"I": 16, "W": 16, "O": 16, "O_final": 16}, "operand_source": {"I": 0, "W": 0},
        }
    ]  # fmt: skip
    mapping = [
        {
            "name": "default",
            "spatial_mapping": {"D1": ["M, 256"], "D2": ["N, 256"]},
            "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"},
        }
    ]
    if ordering is not None:
        mapping[0]["temporal_ordering"] = [[d.upper(), b] for d, b in ordering]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for key, data in (("workload", workload), ("accelerator", zigzag_arch()), ("mapping", mapping)):
                paths[key] = os.path.join(tmp, f"{key}.yaml")
                Path(paths[key]).write_text(yaml.safe_dump(data, sort_keys=False))
            objectives = ("latency",) if ordering is not None else ("latency", "energy")
            for objective in objectives:
                counted["n"] = 0
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    energy, latency, cmes = api.get_hardware_performance_zigzag(
                        paths["workload"], paths["accelerator"], paths["mapping"], opt=objective,
                        dump_folder=os.path.join(tmp, objective), loma_show_progress_bar=False,
                    )  # fmt: skip
                seconds = time.perf_counter() - start
                inner = cmes[0][1][0][0]
                rows.append(
                    {
                        "tool": "ZigZag",
                        "search": "attnscope's loop order, allocated by LOMA"
                        if ordering is not None
                        else f"LOMA (lpf_limit=6), same spatial mapping, min {objective}",
                        "space_size": None,
                        "evaluated": counted["n"],
                        "seconds": seconds,
                        "per_s": counted["n"] / seconds,
                        "latency_cycles": float(latency),
                        "energy_pj": float(energy),
                        "mac_energy_pj": float(inner.mac_energy),
                        "register_energy_pj": float(sum(v[0] for v in inner.mem_energy_breakdown.values())),
                        "utilization": float(inner.mac_utilization2),
                        "mapping": str(inner.temporal_mapping.mapping_dic_stationary),
                    }
                )
    finally:
        CostModelEvaluation.__init__ = original
    return rows


def ordering_of(mapping) -> list[tuple[str, int]]:
    """attnscope's temporal loops as ZigZag's temporal_ordering (innermost first)."""
    loops = [loop for level in mapping.temporal for loop in level]
    return list(reversed(loops))


# ------------------------------------------------------------------------------------------------- cascades


def rediscovery() -> list[dict[str, Any]]:
    """The cascade search (mappers.cascade_search) against the FuseMax study's published latencies.

    FuseMax cascade on fusemax-cloud (binding, schedule and query block searched) against attn-binding.csv;
    3-pass cascade on flat-cloud (the multi-pass space of mappers.passes, for the least latency) against attn-flat.csv.
    Both architectures carry the artifact's compat setting, as the published numbers do.
    """
    from mappers.cascade_search import search_fused, search_passes
    from validate.fusemax.report import read_reference, reference_dir
    from validate.fusemax.study import SEQ_LENS, attention_sizes, study_arch
    from workloads import get_cascade

    published = read_reference(reference_dir())
    rows = []
    for model in ("BERT", "TrXL", "T5"):
        for seq, n in SEQ_LENS.items():
            sizes = attention_sizes(model, n)
            start = time.perf_counter()
            best, _ = search_fused(get_cascade("fusemax").cascade, sizes, study_arch("binding", True))
            rows.append(
                {
                    "target": "FuseMax (attn-binding.csv)", "model": model, "seq": seq,
                    "latency_s": best.cost.latency_s,
                    "published_s": published.get("attn-binding", {}).get((model, seq), {}).get("latency"),
                    "seconds": time.perf_counter() - start, "design": best.description,
                    "considered": best.candidates,
                }
            )  # fmt: skip
            start = time.perf_counter()
            lowered = lower(get_cascade("attention-3pass").cascade, sizes)
            found = search_passes(lowered, study_arch("flat", True))
            rows.append(
                {
                    "target": "FLAT (attn-flat.csv)", "model": model, "seq": seq,
                    "latency_s": found["best"].cost.latency_s,
                    "published_s": published.get("attn-flat", {}).get((model, seq), {}).get("latency"),
                    "seconds": time.perf_counter() - start,
                    "design": f"{found['best'].description} ({found['best'].notes[0]})",
                    "considered": found["best"].candidates,
                }
            )  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------------- report


def run(skip_zigzag: bool = False, bench_evaluations: int = 3_000_000) -> dict[str, Any]:
    logging.disable(logging.CRITICAL)
    try:
        version = importlib.metadata.version("zigzag-dse")
        have_zigzag = not skip_zigzag
    except importlib.metadata.PackageNotFoundError:
        version, have_zigzag = None, False
        print(
            "ZigZag is not installed in this Python; reporting attnscope only. Install it in a separate venv:\n"
            "  python3 -m venv .venv-bench && .venv-bench/bin/pip install zigzag-dse six && "
            ".venv-bench/bin/pip install -e .",
            file=sys.stderr,
        )
    report: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "zigzag_version": version,
        "problems": {},
    }
    for name, problem in PROBLEMS.items():
        print(f"{name}: attnscope ...", file=sys.stderr)
        ours = attnscope_side(name, problem)
        rows = list(ours["rows"])
        if have_zigzag:
            print(f"{name}: ZigZag ...", file=sys.stderr)
            rows += zigzag_side(name, problem)
            rows += zigzag_side(name, problem, ordering_of(ours["best"]["latency"].mapping))
        report["problems"][name] = rows
    print("cascade search ...", file=sys.stderr)
    report["rediscovery"] = rediscovery()
    print("bench mapper ...", file=sys.stderr)
    report["bench_mapper"] = bench_mapper(bench_evaluations)
    zigzag_rates = [
        r["per_s"] for rows in report["problems"].values() for r in rows if r["tool"] == "ZigZag" and r["evaluated"] > 1
    ]
    if zigzag_rates:
        report["zigzag_per_s_max"] = max(zigzag_rates)
        report["speedup_one_core_vs_zigzag"] = report["bench_mapper"]["evaluations_per_s"] / max(zigzag_rates)
    return report


def markdown(report: dict[str, Any]) -> str:
    clock = load_arch(ARCH).clock_hz
    lines = [
        "# Mapper benchmark: attnscope beside ZigZag",
        "",
        "Written by one run of `benchmarks/zigzag_compare.py`:",
        "",
        f"    {report['command']}",
        "",
        f"Machine: {report['machine']}; ZigZag {report['zigzag_version'] or 'not installed'}. "
        "Architecture: 256 x 256 MACs, 16 MiB global buffer, 400 GiB/s DRAM, 940 MHz, 16-bit words "
        "(`benchmarks/aligned-256.yaml`; ZigZag's YAML is built by the script). Spatial mapping shared by both "
        "tools unless stated: m over the rows, n over the columns.",
        "",
        "## Evaluation throughput",
        "",
    ]
    b = report["bench_mapper"]
    lines += [
        f"`attnscope bench mapper` ({b['space']}; space {b['space_size']:,} points; {b['evaluations']:,} "
        f"evaluations per run, best of {b['repeats']}): **{b['evaluations_per_s']:,.0f} evaluations/s on one core**, "
        f"{b['evaluations_per_s_parallel']:,.0f} with {b['threads']} threads.",
    ]
    if "zigzag_per_s_max" in report:
        lines += [
            "",
            f"ZigZag's fastest rate in this run: {report['zigzag_per_s_max']:,.0f} mappings/s, so attnscope's one-core "
            f"rate is **{report['speedup_one_core_vs_zigzag']:,.0f}x** ZigZag's.",
        ]
    for name, rows in report["problems"].items():
        lines += [
            "",
            f"## {name}",
            "",
            "| tool | search | mappings evaluated | seconds | mappings/s | latency (cycles) | latency (ms) | "
            "energy (uJ) | of it MACs (uJ) | utilization |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            rate = f"{r['per_s']:,.0f}" if r["evaluated"] > 1 else "-"
            lines.append(
                f"| {r['tool']} | {r['search']} | {r['evaluated']:,} | {r['seconds']:.2f} | {rate} | "
                f"{r['latency_cycles']:,.0f} | {r['latency_cycles'] / clock * 1e3:.3f} | {r['energy_pj'] / 1e6:,.1f} | "
                f"{r['mac_energy_pj'] / 1e6:,.1f} | {r['utilization']:.1%} |"
            )
        bound = next(r["lower_bound_cycles"] for r in rows if r["tool"] == "attnscope")
        zz = [r["latency_cycles"] for r in rows if r["tool"] == "ZigZag"]
        lines += [
            "",
            f"attnscope's latency lower bound (all PEs busy, or every word through DRAM once at full bandwidth): "
            f"{bound:,.0f} cycles. attnscope's exhaustive optimum "
            + ("reaches it" if rows[0]["latency_cycles"] <= bound * (1 + 1e-9) else "is above it")
            + (
                f"; ZigZag's best ({min(zz):,.0f} cycles in its own model) is {min(zz) / bound - 1:+.2%} from it, "
                "so no ZigZag mapping can beat attnscope's under attnscope's model."
                if zz
                else "."
            ),
        ]
        lines += ["", "Best mappings:", ""]
        lines += [f"- {r['tool']}, {r['search']}: `{r['mapping']}`" for r in rows]
    lines += [
        "",
        "## Cascade-level search against the FuseMax study",
        "",
        "`mappers.cascade_search`, given only the cascade and the architecture (with the artifact's compat "
        "setting, as the published numbers were computed): for the FuseMax cascade on fusemax-cloud it searches "
        "the binding of every Einsum to an array that supports its operators, the stage schedule of one tile "
        "(branch and bound) and the query block; for the 3-pass cascade on flat-cloud, the multi-pass fusion "
        "space derived from the cascade, for the least latency.",
        "",
        "The fused search is generic: it derives the tile loop, dependencies, tails and capable arrays from the "
        "cascade text and the architecture (it also maps attention-1pass, and both cascades on either preset). "
        "Where it beats the published FuseMax binding (1K-4K), its schedule moves the running max and the "
        "correction terms (RM, PRM, SPD, RD) onto the 2-D array, which the study's binding leaves on the 1-D "
        "array that bounds the published design. The multi-pass search (`mappers/passes.py`) derives its space "
        "from the cascade as well (contractions by their MACs, passes from the reductions, hand-offs fused on "
        "chip or spilled to DRAM, each contraction's dataflow, fusion granularity, operands on chip; no Einsum "
        "is named) and chooses by latency; FLAT's own policy is one point of that space.",
        "",
        "| target | model | seq | found (s) | published (s) | found / published | search (s) | design |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report.get("rediscovery", []):
        ratio = f"{r['latency_s'] / r['published_s']:.4f}" if r["published_s"] else "-"
        published = f"{r['published_s']:.6g}" if r["published_s"] else "-"
        lines.append(
            f"| {r['target']} | {r['model']} | {r['seq']} | {r['latency_s']:.6g} | {published} | {ratio} | "
            f"{r['seconds']:.2f} | {r['design']} |"
        )
    lines += ["", "## Where the two cost models differ", ""]
    lines += [f"- {d}" for d in DIFFERENCES]
    lines += [
        "",
        "Latency and energy are each tool's own estimate: the rows of one problem are comparable where the "
        "models agree (DRAM traffic and compute time dominate here), not to the cycle. The row "
        "\"attnscope's loop order, allocated by LOMA\" costs attnscope's best latency mapping in ZigZag's model.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--markdown", help="write the report here (e.g. docs/bench-mapper.md)")
    parser.add_argument("--skip-zigzag", action="store_true", help="attnscope only")
    parser.add_argument("--bench-evaluations", type=int, default=3_000_000)
    args = parser.parse_args(argv)
    report = run(args.skip_zigzag, args.bench_evaluations)
    text = markdown(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
