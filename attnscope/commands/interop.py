"""``attnscope import`` and ``attnscope export``: Timeloop/Accelergy and AccelForge specs in and out.

Usage::

    attnscope import timeloop ARCH.yaml [PROBLEM.yaml] [MAPPING.yaml] [ERT.yaml] [ART.yaml] --out DIR
                     [--name N] [--ops-from ARCH:ARRAY] [--json]
    attnscope export timeloop --workload W --arch A [--shape ...] [--mapping M.yaml] [--einsum NAME] --out DIR [--json]
    attnscope import accelforge SPEC.yaml... --out DIR [--var NAME=VALUE ...] [--name N] [--json]
    attnscope export accelforge [--workload W] [--arch A] [--shape ...] --out DIR [--json]

Every run lists, by dotted key, what the other format could not carry (``unrepresented``) and what was assumed
where the input was silent (``assumed``). See docs/interop.md.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register ``import`` and ``export``, each with ``timeloop`` and ``accelforge``."""
    imp = subparsers.add_parser("import", help="read Timeloop/Accelergy or AccelForge specs into attnscope's files")
    imp_sub = imp.add_subparsers(dest="format", required=True, parser_class=parser_class)
    p = imp_sub.add_parser(
        "timeloop", help="Timeloop architecture (v0.3 or v0.4), problem, mapping, Accelergy ERT/ART",
        description="Each file may hold any of the sections architecture, problem, mapping, ERT and ART (Timeloop "
        "input files, or one combined input.yaml). Writes arch.yaml, workload.einsum and mapping.yaml to --out.",
    )  # fmt: skip
    p.add_argument("files", nargs="+", help="YAML files (architecture first is conventional; order does not matter)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", help="name of the imported architecture (default: the architecture file's stem)")
    p.add_argument("--ops-from", help="borrow the operators a MAC lacks (exp, max, div...) from a preset's array, "
                   "e.g. fusemax-cloud:pe_1d (each is listed as assumed)")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import_timeloop)

    p = imp_sub.add_parser("accelforge", help="AccelForge workload (Einsum cascade) and/or architecture specs")
    p.add_argument("files", nargs="+", help="AccelForge YAML files with workload: and/or arch:")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="a Jinja variable of the spec (overrides its default), e.g. N_TOKENS=4096")  # fmt: skip
    p.add_argument("--name", help="name of the imported architecture")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import_accelforge)

    exp = subparsers.add_parser(
        "export", help="write an attnscope workload/architecture in Timeloop or AccelForge form"
    )
    exp_sub = exp.add_subparsers(dest="format", required=True, parser_class=parser_class)
    p = exp_sub.add_parser(
        "timeloop", help="per Einsum a Timeloop problem and mapping, and the architecture (with ERT and ART)",
        description="The mapping of each Einsum is --mapping's loop nest if given, else the best attnscope's "
        "search finds (latency, a budget of 20000 mappings).",
    )  # fmt: skip
    p.add_argument("--workload", required=True, help="a registered cascade or .einsum file")
    p.add_argument("--arch", required=True, help="a preset name or architecture YAML")
    p.add_argument("--shape", default="", help="rank sizes, e.g. B=1,H=12,M=4K")
    p.add_argument("--mapping", help="an attnscope mapping YAML (attnscope cost --save-mapping)")
    p.add_argument("--einsum", help="export this Einsum only")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_timeloop)

    p = exp_sub.add_parser("accelforge", help="the workload and/or architecture as AccelForge specs")
    p.add_argument("--workload", help="a registered cascade or .einsum file")
    p.add_argument("--arch", help="a preset name or architecture YAML")
    p.add_argument("--shape", default="", help="rank sizes, e.g. B=1,H=12,M=4K")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_accelforge)


def _report(args: Any, result: Any, what: str) -> int:
    paths = result.write(args.out)
    data = result.to_dict(paths)
    if args.json:
        from attnscope.cli import print_json

        print_json(data)
        return 0
    print(f"{what}: wrote {len(paths)} file(s) to {args.out}")
    for path in paths:
        print(f"  {path}")
    print(f"not represented ({len(data['unrepresented'])}):" if data["unrepresented"] else "not represented: nothing")
    for item in data["unrepresented"]:
        print(f"  {item['key']}: {item['why']}")
    if data["assumed"]:
        print(f"assumed ({len(data['assumed'])}):")
        for item in data["assumed"]:
            print(f"  {item['key']}: {item['why']}")
    return 0


def cmd_import_timeloop(args: Any) -> int:
    from attnscope.interop.timeloop import import_timeloop

    return _report(args, import_timeloop(args.files, name=args.name, ops_from=args.ops_from), "import timeloop")


def cmd_import_accelforge(args: Any) -> int:
    from attnscope.interop.accelforge import import_accelforge
    from attnscope.interop.common import arithmetic
    from einsum.errors import AttnscopeError

    variables: dict[str, Any] = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise AttnscopeError(f"--var {item!r}: expected NAME=VALUE, e.g. N_TOKENS=4096")
        number = arithmetic(value.strip())
        variables[name.strip()] = value.strip() if number is None else number
    return _report(args, import_accelforge(args.files, variables, name=args.name), "import accelforge")


def cmd_export_timeloop(args: Any) -> int:
    from attnscope.interop.timeloop import export_timeloop
    from workloads.registry import parse_shape

    result = export_timeloop(args.workload, args.arch, parse_shape(args.shape), args.mapping, args.einsum)
    return _report(args, result, "export timeloop")


def cmd_export_accelforge(args: Any) -> int:
    from attnscope.interop.accelforge import export_accelforge
    from einsum.errors import AttnscopeError
    from workloads.registry import parse_shape

    if not (args.workload or args.arch):
        raise AttnscopeError("export accelforge: give --workload, --arch or both")
    return _report(args, export_accelforge(args.workload, args.arch, parse_shape(args.shape)), "export accelforge")
