"""``attnscope cost``: the cost of one mapping of a cascade on an architecture, and its loop nests."""

from __future__ import annotations


def add_parser(sub, parser_class) -> None:
    p = sub.add_parser("cost", help="cost a cascade mapping (from YAML, or a FuseMax-study design) on an architecture")
    p.add_argument("--arch", required=True, help="a preset name or architecture YAML")
    p.add_argument("--workload", required=True, help="a registered cascade or .einsum file")
    p.add_argument("--shape", default="", help="rank sizes, e.g. B=64,H=12,M=4K,E=64,F=64")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--mapping", help="a mapping YAML (layout: attnscope cost ... --save-mapping)")
    group.add_argument("--design", choices=["flat", "cascade", "arch", "binding"], help="build a FuseMax-study design")
    p.add_argument("--save-mapping", help="write the mapping used to this YAML file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from attnscope.api import load_cascade
    from attnscope.cli import print_json, table
    from einsum.lower import lower
    from simulator.cost import evaluate_cascade
    from simulator.mapping import load_mapping, mapping_to_dict
    from simulator.specs import load_arch
    from workloads.registry import parse_shape

    arch = load_arch(args.arch)
    loaded = load_cascade(args.workload)
    shape = parse_shape(args.shape)
    if args.mapping:
        lowered = lower(loaded.cascade, loaded.sizes(shape))
        mapping = load_mapping(args.mapping)
        cost = evaluate_cascade(lowered, arch, mapping)
    elif args.design == "flat":
        from mappers.flat import search_flat

        lowered = lower(loaded.cascade, loaded.sizes(shape))
        mapping, cost, _ = search_flat(lowered, arch)
    else:
        from validate.fusemax.configs import fusemax_family

        sizes = {k: v for k, v in loaded.sizes(shape).items() if k in ("B", "H", "E", "F", "M", "P")}
        design = fusemax_family(args.design, arch, sizes)
        mapping, cost = design.mapping, design.cost
    if args.save_mapping:
        with open(args.save_mapping, "w") as f:
            yaml.safe_dump(mapping_to_dict(mapping), f, sort_keys=False, default_flow_style=None)
    result = {
        "mapping": mapping.name,
        "notes": list(mapping.notes),
        "feasible": cost.feasible,
        "latency_s": cost.latency_s,
        "energy_pj": cost.energy_pj,
        "edp": cost.latency_s * cost.energy_pj,
        "dram_bytes": cost.dram_bytes,
        "utilization": dict(cost.utilization),
        "energy_breakdown_pj": dict(cost.energy_breakdown_pj),
        "buffer_occupancy_words": list(cost.buffer_occupancy_words),
        "spill_fraction": list(cost.spill_fraction),
    }
    if args.json:
        print_json(result)
        return 0
    print(f"{mapping.name} on {arch.name}: {'feasible' if cost.feasible else 'INFEASIBLE (buffer overflow)'}")
    for note in mapping.notes:
        print(f"  {note}")
    print(f"latency {cost.latency_s:.6g} s (memory {cost.memory_s:.6g} s), DRAM {cost.dram_bytes:.6g} B, "
          f"energy {cost.energy_pj:.6g} pJ")  # fmt: skip
    print("utilization: " + ", ".join(f"{a} {u:.3f}" for a, u in cost.utilization.items()))
    rows = [[n, c.array, f"{c.compute_cycles:.6g}", f"{c.cycles_per_point:g}", f"{cost.einsum_utilization[n]:.4f}"]
            for n, c in cost.einsums.items()]  # fmt: skip
    print()
    print(table(rows, ["einsum", "array", "cycles", "cycles/point", "busy share"]))
    return 0
