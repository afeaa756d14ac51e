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


DESIGNS = {"flat": "flat", "cascade": "fusemax-cascade", "arch": "fusemax-arch", "binding": "fusemax-binding"}
"""``--design`` -> the registered template mapper (:mod:`mappers.catalog`); each applies only to its cascade."""


def run(args) -> int:
    import yaml

    from attnscope.api import evaluate
    from attnscope.cli import print_json, table
    from einsum.yamlio import read_yaml_mapping
    from simulator.targets import ArchTarget, load_target
    from workloads.registry import parse_shape

    target = load_target(args.arch)
    if not isinstance(target, ArchTarget):
        from einsum.errors import SpecError

        raise SpecError(f"--arch {args.arch}: a device; `cost` costs spatial-array mappings (use `attnscope map "
                        f"--device {args.arch}` for a device)")  # fmt: skip
    shape = parse_shape(args.shape)
    if args.mapping:
        mapping = read_yaml_mapping(args.mapping, args.mapping, "mapping keys (name, einsums, placement, phases...)")
        mapping["__origin__"] = args.mapping
        design = evaluate(args.workload, target, shape=shape, mapper="mapping", mapping=mapping)
    else:
        design = evaluate(args.workload, target, shape=shape, mapper=DESIGNS[args.design])
    cost, mapping = design.detail, design.mapping
    if args.save_mapping:
        with open(args.save_mapping, "w") as f:
            yaml.safe_dump(dict(mapping), f, sort_keys=False, default_flow_style=None)
    arch = target.spec
    result = {
        "mapping": mapping["name"],
        "notes": list(mapping.get("notes", ())),
        "feasible": cost.feasible,
        "latency_s": cost.latency_s,
        "energy_pj": cost.energy_pj,
        "edp": cost.latency_s * cost.energy_pj,
        "dram_bytes": cost.dram_bytes,
        "utilization": dict(cost.utilization),
        "energy_breakdown_pj": dict(cost.energy_breakdown_pj),
        "buffer_occupancy_words": list(cost.buffer_occupancy_words),
        "spill_fraction": list(cost.spill_fraction),
        "infeasible": list(cost.infeasible),
        "spill_bytes_by_level": dict(cost.spill_bytes_by_level),
        "level_s": dict(cost.level_s),
    }
    if args.json:
        print_json(result)
        return 0
    print(f"{result['mapping']} on {arch.name}: {'feasible' if cost.feasible else 'INFEASIBLE: it does not fit'}")
    for why in cost.infeasible:
        print(f"  does not fit: {why}")
    for level, spilled in cost.spill_bytes_by_level.items():
        print(f"  spill: {spilled:.6g} B of {level}'s accesses go to DRAM (it overflows) "
              f"(up to {max(cost.spill_fraction):.3g} of its accesses)")  # fmt: skip
    for note in result["notes"]:
        print(f"  {note}")
    levels = "".join(f", {lv} {s:.6g} s" for lv, s in cost.level_s.items())
    shown = "latency" if cost.feasible else "latency (not a result: the design does not fit)"
    print(f"{shown} {cost.latency_s:.6g} s (memory {cost.memory_s:.6g} s{levels}), DRAM {cost.dram_bytes:.6g} B, "
          f"energy {cost.energy_pj:.6g} pJ")  # fmt: skip
    print("utilization: " + ", ".join(f"{a} {u:.3f}" for a, u in cost.utilization.items()))
    rows = [[n, c.array, f"{c.compute_cycles:.6g}", f"{c.cycles_per_point:g}", f"{cost.einsum_utilization[n]:.4f}"]
            for n, c in cost.einsums.items()]  # fmt: skip
    print()
    print(table(rows, ["einsum", "array", "cycles", "cycles/point", "busy share"]))
    return 0
