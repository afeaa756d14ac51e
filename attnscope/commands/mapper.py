"""``attnscope map`` and ``attnscope bench mapper``: search one Einsum's mapping space; time the search.

Usage::

    attnscope map --workload NAME|FILE.einsum [--shape ...] [--param ...] (--arch ARCH | --device DEV)
                  [--mapper NAME] [--kernel fa2|fa3] [--dtype T] [--mapping m.yaml] [--save-mapping m.yaml]
                  [--direction fwd|bwd|fwd+bwd] [--json]
    attnscope map --arch ARCH --workload NAME --einsum NAME [--array A] [--levels L1,L2,..]
                  [--constraints FILE] [--objective latency|energy|edp|weighted:WL,WE]
                  [--exhaustive | --budget N | --time S] [--method auto|exhaustive|random|anneal]
                  [--imperfect] [--seed S] [--quiet] [--json]
    attnscope bench mapper [--evaluations N] [--repeats R] [--json]

Without ``--einsum`` the **whole cascade** is mapped (:func:`attnscope.api.evaluate`): on an array, the fusion,
binding, schedule and tiles (mappers ``fused`` or ``passes``, or a named template); on a device, the kernel.
With ``--einsum`` (or for ``gemm``, ``C[t,n] = sum[k] A[t,k] * B[k,n]`` with ``--shape T=..,K=..,N=..``, and
single-Einsum cascades) one Einsum's loop-nest space is searched. Ctrl-C during a search prints the best
mapping found so far.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from einsum.errors import AttnscopeError

GEMM_TEXT = "input A[T,K], B[K,N]\nC[t,n] = sum[k] A[t,k] * B[k,n]"


def add_parser(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register ``map`` and ``bench mapper``."""
    from attnscope.cli import at_least

    p = subparsers.add_parser(
        "map", help="map a whole cascade onto an array or a device, or search one Einsum's loop nests",
        description="Without --einsum: map the whole cascade (fusion, binding, schedule and tiles on a spatial "
        "array; the kernel on a device) and report latency, bound, DRAM bytes, energy, utilization, footprint and "
        "spill. With --einsum: find the best loop nest (tiling, loop orders, spatial unrolling, bypass) of one "
        "Einsum, exhaustively with pruning, by random sampling, or by simulated annealing.",
    )  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--arch", help="spatial-array preset or .yaml file")
    where.add_argument("--device", help="GPU/edge/CPU preset or .yaml file (whole-cascade mapping only)")
    p.add_argument("--param", default="", help="cascade parameters, e.g. window=1024,density=0.1 or W=1024")
    p.add_argument("--mapper", help="whole cascade: a registered mapper (default: the first that applies)")
    p.add_argument("--kernel", choices=("fa2", "fa3"), help="device: fix the fused kernel's flavour")
    p.add_argument("--dtype", help="device datatype (default bf16, else fp16)")
    p.add_argument(
        "--mapping",
        help="whole cascade: cost this mapping YAML (--save-mapping's layout; on an array the "
        "'mapping' mapper, on a device the kernel, dtype and tile it names)",
    )
    p.add_argument("--save-mapping", help="whole cascade: write the design's mapping to this YAML file")
    p.add_argument("--direction", choices=("fwd", "bwd", "fwd+bwd"), default="fwd",
                   help="whole cascade: the forward pass, its backward pass (arrays: the derived backward cascade; "
                   "devices: the GPU backward kernels), or both (a training step)")  # fmt: skip
    p.add_argument("--workload", required=True, help="registered cascade, .einsum file, or gemm")
    p.add_argument("--shape", default="", help="rank sizes, e.g. B=64,H=12,M=4K or T=4K,K=4K,N=4K for gemm")
    p.add_argument("--einsum", help="which Einsum of the cascade (required when it has several)")
    p.add_argument("--array", help="compute array (default: the largest that supports the Einsum's operators)")
    p.add_argument("--levels", help="storage levels of the nest, comma-separated (default: the array's path)")
    p.add_argument("--constraints", help="constraints YAML (Timeloop-style targets; see mappers.constraints)")
    p.add_argument("--objective", default="latency", help="latency, energy, edp or weighted:WL,WE")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--exhaustive", action="store_true", help="enumerate the whole space (pruned)")
    how.add_argument("--budget", type=at_least(1), help="at most N evaluations (exhaustive if the space is that small)")
    how.add_argument("--time", type=float, dest="time_s", metavar="S", help="stop after S seconds")
    p.add_argument("--method", choices=("auto", "exhaustive", "random", "anneal"), default="auto")
    p.add_argument("--imperfect", action="store_true", help="also offer padded rank sizes")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of random sampling and annealing (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_map)

    bench = subparsers.choices.get("bench") or subparsers.add_parser("bench", help="measure attnscope's speed")
    bench_sub = _subcommands(bench) or bench.add_subparsers(dest="bench", required=True, parser_class=parser_class)
    p = bench_sub.add_parser(
        "mapper", help="mapping evaluations per second (one core and all threads)",
        description="Times the exhaustive search on a standard 3-level space: a 512^3 GEMM on a 16 x 16 array "
        "under a 1 Mi-word buffer and 64-word registers (generation, pruning, costing and reduction together).",
    )  # fmt: skip
    p.add_argument(
        "--evaluations", type=at_least(1), default=3_000_000, help="evaluations per timed search (default 3M)"
    )
    p.add_argument(
        "--repeats", type=at_least(1), default=3, help="timed searches per setting; the best counts (default 3)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_mapper)


def _subcommands(parser: argparse.ArgumentParser) -> Any:
    """The subcommand action of a parser another module created, if any."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


# -- map ------------------------------------------------------------------------------------------------------


def load_einsum(workload: str, shape: str, einsum: str | None):
    """The lowered Einsum a ``map`` run searches, from a registered cascade, a file, or ``gemm``."""
    from einsum.cascade import Cascade
    from einsum.lower import lower
    from workloads.cases import load_workload as load_cascade  # not through attnscope.api (its imports cost)
    from workloads.registry import parse_shape

    sizes = parse_shape(shape)
    if workload == "gemm":
        missing = [r for r in ("T", "K", "N") if r not in sizes]
        unknown = sorted(set(sizes) - {"T", "K", "N"})
        if missing or unknown:
            raise AttnscopeError(
                "--shape for gemm needs T, K and N (C[t,n] = sum[k] A[t,k] * B[k,n]); "
                + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}")
            )
        cascade, full = Cascade.from_text(GEMM_TEXT, name="gemm"), sizes
    else:
        loaded = load_cascade(workload)
        cascade, full = loaded.cascade, loaded.sizes(sizes)
    names = [e.name for e in cascade.einsums]
    if einsum is None:
        if len(names) > 1:
            raise AttnscopeError(
                f"{cascade.name} has {len(names)} Einsums; choose one with --einsum: {', '.join(names)}"
            )
        einsum = names[0]
    if einsum not in names:
        raise AttnscopeError(f"--einsum {einsum!r} is not an Einsum of {cascade.name}; choose from {', '.join(names)}")
    return lower(cascade, full).einsum(einsum), {k: v for k, v in full.items()}


def _single_einsum(args) -> bool:
    """Whether ``map`` searches one Einsum (module docstring) rather than the whole cascade."""
    if args.einsum or args.workload == "gemm":
        return True
    if args.device or args.mapper or args.mapping or args.save_mapping or args.param or args.direction != "fwd":
        return False
    from workloads.cases import load_workload

    return len(load_workload(args.workload).cascade.einsums) == 1


def cmd_map(args) -> int:
    if args.direction != "fwd" and (args.einsum or args.workload == "gemm"):
        raise AttnscopeError(f"--direction {args.direction} costs a whole cascade's backward pass; drop --einsum "
                             "(one Einsum's loop-nest search is forward only)")  # fmt: skip
    if args.direction != "fwd" and (args.mapping or args.save_mapping):
        flag = "--mapping" if args.mapping else "--save-mapping"
        raise AttnscopeError(f"--direction {args.direction} with {flag}: a saved mapping is one pass's (the forward "
                             f"pass's); drop {flag} or use --direction fwd")  # fmt: skip
    if not _single_einsum(args):
        return _map_cascade(args)
    if args.device:
        raise AttnscopeError("--einsum searches one Einsum's loop nests on a spatial array: give --arch, not --device")
    return _map_einsum(args)


def _map_cascade(args) -> int:
    import yaml

    from attnscope.api import evaluate
    from attnscope.cli import print_json
    from einsum.yamlio import read_yaml_mapping
    from workloads.cases import parse_params
    from workloads.registry import parse_shape

    options = {}
    if args.kernel:
        options["kernel"] = args.kernel
    if args.mapping:
        options["mapping"] = read_yaml_mapping(
            args.mapping, args.mapping, "mapping keys (an array mapping or a device kernel)"
        )
        options["mapping"]["__origin__"] = args.mapping
    mapper = args.mapper or ("mapping" if args.mapping and args.arch else None)
    if args.direction == "fwd":
        design = evaluate(args.workload, args.arch or args.device, shape=parse_shape(args.shape),
                          params=parse_params(args.param), mapper=mapper, dtype=args.dtype, **options)  # fmt: skip
    else:
        from mappers.direction import map_direction
        from simulator.targets import load_target
        from workloads.cases import make_case

        case = make_case(args.workload, parse_shape(args.shape), params=parse_params(args.param))
        target = load_target(args.arch or args.device, dtype=args.dtype)
        design = map_direction(case, target, args.direction, mapper, **options)
    if args.save_mapping:
        with open(args.save_mapping, "w") as f:
            yaml.safe_dump(design.to_dict()["mapping"], f, sort_keys=False, default_flow_style=None)
    if args.json:
        print_json(design.to_dict())
        return 0
    print(format_design(design))
    return 0


def format_design(d) -> str:
    """The text ``attnscope map`` prints for a whole-cascade design."""
    shape = ",".join(f"{k}={v}" for k, v in d.shape.items())
    energy = "not modelled on devices" if d.energy_j is None else f"{d.energy_j:.6g} J"
    lines = [
        f"{d.workload} ({shape}) on {d.target} [{d.target_kind}], mapper {d.mapper}",
        f"  {d.description}",
        f"latency {d.latency_s:.6g} s, bound by {d.bound}; utilization {d.utilization:.1%}"
        + ("" if d.feasible else "; INFEASIBLE: the mapping does not fit, the numbers are not a result"),
        *(f"  does not fit: {why}" for why in getattr(d.detail, "infeasible", None) or ()),
        f"DRAM {d.dram_bytes:.6g} B (beyond compulsory {d.spill_bytes:.6g} B); on chip {d.onchip_bytes:.6g} B",
        *(
            f"spill: {b:.6g} B between {lv} and DRAM (its occupancy exceeds it)"
            for lv, b in (getattr(d.detail, "spill_bytes_by_level", None) or {}).items()
        ),
        f"energy {energy}" + ("" if d.area_mm2 is None else f"; area {d.area_mm2:.6g} mm^2"),
    ]
    lines += [f"note: {n}" for n in d.notes]
    return "\n".join(lines)


def _map_einsum(args) -> int:
    from mappers.constraints import read_constraints
    from mappers.search import search
    from mappers.space import MapSpace
    from simulator.specs import load_arch

    try:
        e, sizes = load_einsum(args.workload, args.shape, args.einsum)
        arch = load_arch(args.arch)
        constraints = read_constraints(args.constraints) if args.constraints else None
        levels = tuple(x.strip() for x in args.levels.split(",") if x.strip()) if args.levels else None
        space = MapSpace.build(e, arch, args.array, constraints, levels=levels, imperfect=args.imperfect or None)
        method = "exhaustive" if args.exhaustive else args.method
        progress = not args.quiet and sys.stderr.isatty()
        result = search(
            space, args.objective, method=method, budget=args.budget, time_s=args.time_s, seed=args.seed,
            progress=progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        print("attnscope: interrupted before the search started", file=sys.stderr)
        return 130
    if args.json:
        from attnscope.cli import print_json

        print_json({**result.to_dict(), "shape": sizes})
        return 0
    print(format_result(result, sizes))
    return 0


def format_result(result, sizes: dict[str, int] | None = None) -> str:
    """The text ``attnscope map`` prints: header, loop nest, costs, per-level breakdown."""
    from attnscope.cli import table

    space, e = result.space, result.space.einsum
    axes = dict(zip(space.axis_names, space.nest_arch.array_axes.tolist(), strict=True))
    shape = ", ".join(f"{k}={v}" for k, v in (sizes or {}).items())
    status = "complete" if result.complete else ("interrupted" if result.interrupted else "stopped at its budget")
    if result.method != "exhaustive":
        status = "interrupted" if result.interrupted else f"{result.evaluated:,} evaluations"
    lines = [
        f"{e.text}" + (f"    ({shape})" if shape else ""),
        f"on {space.array} of {space.arch.name} ({' x '.join(f'{v} {k}' for k, v in axes.items())}); "
        f"levels {' > '.join(space.level_names)}",
        f"objective {result.objective}; method {result.method} ({status}); seed {result.seed}",
        f"space {space.size:,} points; evaluated {result.evaluated:,} (feasible {result.feasible_evaluated:,}) "
        f"in {result.seconds:.2f} s = {result.evaluations_per_s:,.0f} evaluations/s",
    ]
    lines += [f"note: {n}" for n in space.notes]
    if result.interrupted:
        lines.append("interrupted (Ctrl-C): the best mapping found so far")
    lines += ["", "best mapping (outermost loop first; par-for = spatial):"]
    lines += loop_nest_lines(result)
    latency_bound, energy_bound = space.lower_bounds()
    lines += [
        "",
        f"latency {result.latency_s * 1e3:.6g} ms ({result.latency_cycles:,.0f} cycles; lower bound "
        f"{latency_bound:,.0f}), utilization {float(result.costs.utilization[0]):.1%}",
        f"energy {result.energy_pj:.4g} pJ (compute {result.compute_energy_pj:.4g}; lower bound {energy_bound:.4g}), "
        f"EDP {result.edp:.4g} pJ*s",
        "",
    ]
    rows = []
    for row in result.breakdown():
        if row["level"] == "compute":
            rows.append(
                ["compute", "", "", "", "", "", "", f"{row['energy_pj']:.4g}", f"{row['transfer_cycles']:,.0f}"]
            )
            continue
        cap = row["capacity_words"]
        rows.append(
            [
                row["level"],
                "unbounded" if cap == float("inf") else f"{cap:,.0f}",
                ",".join(row["keeps"]) or "-",
                f"{row['occupancy_words']:,.0f}",
                f"{sum(row['reads_words'].values()):.4g}",
                f"{sum(row['fills_words'].values()):.4g}",
                f"{sum(row['updates_words'].values()):.4g}",
                f"{row['energy_pj']:.4g}",
                f"{row['transfer_cycles']:,.0f}",
            ]
        )
    header = ["level", "words", "holds", "occupancy", "reads", "fills", "updates", "energy_pj", "cycles"]
    lines.append(table(rows, header))
    lines.append("(words per instance; reads/fills/updates in words over all instances; cycles per instance)")
    return "\n".join(lines)


def loop_nest_lines(result) -> list[str]:
    """The best mapping as an indented loop nest, the spatial fan-out above the level it spreads."""
    space, m = result.space, result.mapping
    s = space.nest_arch.spatial_level
    out, depth = [], 1
    width = max(len(n) for n in space.level_names) + 2
    for l, name in enumerate(m.levels):
        if l == s:
            out.append("  " * depth + f"-- spread over {space.array} --")
            for axis, loops in zip(space.axis_names, m.spatial, strict=True):
                for var, factor in loops:
                    out.append("  " * depth + f"par-for {var} in {factor}   [{axis}]")
                    depth += 1
        held = ", ".join(t for t in space.einsum.tensors if t in m.keep[l]) or "nothing"
        per = " (per PE)" if l >= s else ""
        out.append("  " * depth + f"{name:<{width}}holds {held}{per}")
        for var, bound in m.temporal[l]:
            out.append("  " * (depth + 1) + f"for {var} in {bound}")
            depth += 1
        depth += 1
    out.append("  " * depth + f"compute {space.einsum.text}")
    return out


# -- bench mapper ---------------------------------------------------------------------------------------------


def cmd_bench_mapper(args) -> int:
    from mappers.search import bench_mapper

    if args.evaluations < 1 or args.repeats < 1:
        raise AttnscopeError("--evaluations and --repeats must be >= 1")
    result = bench_mapper(args.evaluations, args.repeats)
    if args.json:
        from attnscope.cli import print_json

        print_json(result)
        return 0
    print(f"mapper throughput: {result['space']}")
    print(
        f"space {result['space_size']:,} points; {result['evaluations']:,} evaluations per run, best of {args.repeats}"
    )
    print(f"  one core:          {result['evaluations_per_s']:>14,.0f} evaluations/s")
    print(f"  {result['threads']} threads:         {result['evaluations_per_s_parallel']:>14,.0f} evaluations/s")
    return 0
