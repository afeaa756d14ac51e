"""AccelForge specs in and out: the workload (a cascade of Einsums) and the architecture.

AccelForge (github.com/Accelergy-Project/accelforge) writes a workload as ``workload: {rank_sizes, einsums}``,
each Einsum a string such as ``"Z[m, n] = A[m, k] * B[k, n]"``: the output is the product of the inputs, summed
over the rank variables the output lacks; ``RANK: expr`` indexes a rank by an expression (``V[b, p, h, E: f]``).
That is nearly attnscope's cascade language, so:

- an Einsum becomes ``OUT[...] = sum[vars the output lacks] A[...] * B[...]`` (no ``sum`` where none vanish); a
  one-input Einsum without reduction is a copy (``QK_softmax = QK``: AccelForge's stand-in for the softmax);
- a variable ``v`` indexes rank ``V``; ``X: v`` with ``X != V`` reads an input declared with rank ``V`` in its
  place when the two ranks have the same size (listed), and is an error on a tensor an Einsum writes (attnscope
  indexes a rank only by its own variables); ``X: x1*N+x0`` with ``N`` the size of ``X0`` is partition
  ``X = X1 * X0``;
- ``rank_sizes`` become ``param`` lines; ``bits_per_value``, ``persistent_tensors``, ``renames``,
  ``is_copy_operation`` and ``n_instances`` have no counterpart in a cascade and are listed.

The architecture's ``!Memory`` nodes are levels (size in bits, energies in J per action of ``bits_per_action``
bits, area in m^2, throughput in actions/s: AccelForge's SI units), ``!Compute`` nodes arrays (their spatial
fan-out from the ``!Container``/``spatial`` entries above them), ``!Fork`` a branch of the level tree. The
Jinja forms AccelForge's examples use (``{% set X = X | default(V) %}``, ``{{X}}``) are rendered first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnscope.interop.common import (
    MAC_OPS,
    Converted,
    Tagged,
    arithmetic,
    default_name,
    read_tagged,
    read_text,
    render_jinja,
    tag_of,
)
from attnscope.interop.common import (
    ident as _ident,
)
from einsum.ast import Access, BinOp, format_index
from einsum.cascade import Cascade, Einsum, bind_index
from einsum.errors import SpecError
from einsum.yamlio import Problems, join, show
from simulator.specs import ArchSpec, spec_from_dict

_ACCESS_RE = re.compile(r"\s*([A-Za-z_]\w*)\s*\[([^\]]*)\]\s*")
_EINSUM_KEYS = ("einsum", "is_copy_operation", "renames", "n_instances", "iteration_space_shape", "rank_sizes")


# ----------------------------------------------------------------------------------------------- workload


def _parse_access(text: str, key: str, p: Problems) -> tuple[str, list[tuple[str | None, str]]] | None:
    m = _ACCESS_RE.fullmatch(text)
    if m is None:
        p.add(key, f"expected a tensor access like A[m, k], got {text.strip()!r}")
        return None
    items = []
    for part in m.group(2).split(","):
        part = part.strip()
        if not part:
            p.add(key, f"empty index in {text.strip()!r}")
            return None
        rank, sep, expr = part.partition(":")
        items.append((rank.strip(), expr.strip()) if sep else (None, part))
    return m.group(1), items


def _affine_index(expr: str, sizes: Mapping[str, int]) -> tuple[str, str, str] | None:
    """``x1*N+x0`` (or ``x1 * N + x0``) with N the size of X0 -> (outer var, inner var, inner rank)."""
    m = re.fullmatch(r"([a-z]\w*)\s*\*\s*(\d+)\s*\+\s*([a-z]\w*)", expr)
    if m and sizes.get(m.group(3).upper()) == int(m.group(2)):
        return m.group(1), m.group(3), m.group(3).upper()
    return None


def import_workload(data: Any, origin: str, result: Converted) -> tuple[str, dict[str, int]]:
    """An AccelForge ``workload:`` section as ``.einsum`` text and its rank sizes."""
    p = Problems(origin, "AccelForge workload")
    w = p.mapping(data, "workload", None)
    p.raise_if_any()
    for k in w:
        if k not in ("rank_sizes", "einsums"):
            result.drop(f"workload.{k}", "no counterpart in an attnscope cascade (word size is the architecture's)"
                        if k == "bits_per_value" else "no counterpart in an attnscope cascade")  # fmt: skip
    raw_sizes = p.mapping(w.get("rank_sizes"), "workload.rank_sizes", None, w, "rank_sizes") or {}
    sizes: dict[str, int] = {}
    for r, v in raw_sizes.items():
        value = arithmetic(v)
        if not (isinstance(r, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", r)):
            p.add(f"workload.rank_sizes.{r}", "rank names are upper case (A-Z, digits, _)", raw_sizes, r)
        elif value is None or value < 1 or not float(value).is_integer():
            p.add(f"workload.rank_sizes.{r}", f"expected a positive integer, got {show(v)}", raw_sizes, r)
        else:
            sizes[r] = int(value)
    einsums = w.get("einsums")
    if not isinstance(einsums, list) or not einsums:
        p.add("workload.einsums", f"expected a list of Einsums, got {show(einsums)}", w, "einsums")
    p.raise_if_any()

    parsed = []
    for i, item in enumerate(einsums):
        key = f"workload.einsums[{i}]"
        if isinstance(item, dict):
            m = p.mapping(item, key, _EINSUM_KEYS, einsums, i)
            if m is None:
                continue
            for k in m:
                if k != "einsum":
                    result.drop(join(key, k), "no counterpart in an attnscope cascade")
            text = m.get("einsum")
            key = join(key, "einsum")
        else:
            text = item
        if not isinstance(text, str) or "=" not in text:
            p.add(key, f"expected an Einsum string like 'Z[m, n] = A[m, k] * B[k, n]', got {show(text)}")
            continue
        lhs, _, rhs = text.partition("=")
        lhs = lhs.rstrip("+")
        out = _parse_access(lhs, key, p)
        found = list(re.finditer(r"[A-Za-z_]\w*\s*\[[^\]]*\]", rhs))
        rest = re.sub(r"[A-Za-z_]\w*\s*\[[^\]]*\]", "", rhs)
        if not found or rest.replace("*", "").strip():
            p.add(key, f"expected a product of tensor accesses like A[m, k] * B[k, n], got {rhs.strip()!r}")
            continue
        if len(re.findall(r"\*", rest)) != len(found) - 1:
            p.add(key, f"expected one * between tensor accesses, got {rhs.strip()!r}")
            continue
        ins = [_parse_access(m.group(0), key, p) for m in found]
        if out is None or None in ins:
            continue
        parsed.append((key, out, ins))
    p.raise_if_any()

    written = {out[0] for _, out, _ in parsed}
    ranks: dict[str, list[str]] = {}
    partitions: dict[str, tuple[str, str]] = {}
    lines = []
    for key, (oname, oidx), ins in parsed:
        out_vars = []
        for rank, expr in oidx:
            if (rank is not None and rank != expr.upper()) or not re.fullmatch(r"[a-z]\w*", expr):
                p.add(key, f"{oname}: the output is indexed by plain variables in attnscope, got {rank}: {expr}")
            out_vars.append(expr)
        ranks.setdefault(oname, [v.upper() for v in out_vars])
        in_texts, used = [], []
        for tname, idx in ins:
            tranks, tidx = [], []
            for rank, expr in idx:
                if rank is None or (re.fullmatch(r"[a-z]\w*", expr) and rank == expr.upper()):
                    tranks.append(expr.upper())
                    tidx.append(expr)
                    used.append(expr)
                    continue
                if re.fullmatch(r"[a-z]\w*", expr):
                    if tname in written:
                        p.add(key, f"{tname}[..., {rank}: {expr}, ...]: {tname} is written by an Einsum with rank "
                              f"{rank}; attnscope indexes a rank only by its own variables")  # fmt: skip
                        continue
                    if sizes.get(rank) != sizes.get(expr.upper()):
                        p.add(key, f"{tname}: rank {rank} ({sizes.get(rank)}) indexed by {expr} of rank "
                              f"{expr.upper()} ({sizes.get(expr.upper())}): the sizes differ")  # fmt: skip
                        continue
                    result.drop(f"{key}: {tname}[{rank}: {expr}]", f"input {tname} declared with rank "
                                f"{expr.upper()} in place of {rank} (both {sizes.get(rank)})")  # fmt: skip
                    tranks.append(expr.upper())
                    tidx.append(expr)
                    used.append(expr)
                    continue
                aff = _affine_index(expr, sizes)
                if aff is None:
                    p.add(key, f"{tname}[{rank}: {expr}]: expected a variable or a partition index x1*N+x0 "
                          "(N the size of X0)")  # fmt: skip
                    continue
                outer, inner, inner_rank = aff
                partitions[rank] = (outer.upper(), inner_rank)
                tranks.append(rank)
                tidx.append(f"{outer}*{inner_rank}+{inner}")
                used += [outer, inner]
            if ranks.setdefault(tname, tranks) != tranks:
                p.add(key, f"{tname} has ranks {', '.join(tranks)} here and {', '.join(ranks[tname])} before")
            in_texts.append(f"{tname}[{','.join(tidx)}]")
        reduced = [v for v in dict.fromkeys(used) if v not in out_vars]
        reduce = f"sum[{','.join(reduced)}] " if reduced else ""
        lines.append(f"{oname}[{','.join(out_vars)}] = {reduce}{' * '.join(in_texts)}")
    p.raise_if_any()
    inputs = [t for t in ranks if t not in written]
    all_ranks = {r for rs in ranks.values() for r in rs} | {r for pair in partitions.values() for r in pair}
    missing = sorted(r for r in all_ranks - set(sizes) if r not in partitions)
    if missing:
        p.add("workload.rank_sizes", f"no size for rank {', '.join(missing)}")
    p.raise_if_any()
    head = [f"# imported from AccelForge workload {origin}"]
    head.append("input " + ", ".join(f"{t}[{','.join(ranks[t])}]" for t in inputs))
    head += [f"partition {r} = {o} * {i}" for r, (o, i) in partitions.items()]
    head += [f"param {r} = {sizes[r]}" for r in sizes if r in all_ranks and r not in partitions]
    for r in sizes:
        if r not in all_ranks:
            result.drop(f"workload.rank_sizes.{r}", "no Einsum uses this rank")
    text = "\n".join(head + lines) + "\n"
    try:
        Cascade.from_text(text, origin=f"{origin} (as imported)")
    except SpecError:
        raise
    except Exception as exc:  # a cascade rule the workload breaks
        raise SpecError(f"{origin}: workload: not an attnscope cascade: {exc}") from None
    return text, {r: sizes[r] for r in sizes if r in all_ranks}


def _product(expr: Any) -> list[Access] | None:
    if isinstance(expr, Access):
        return [expr]
    if isinstance(expr, BinOp) and expr.op == "*":
        left, right = _product(expr.left), _product(expr.right)
        return None if left is None or right is None else left + right
    return None


def export_workload(cascade: Cascade, sizes: Mapping[str, int], word_bytes: int, result: Converted) -> dict:
    """A cascade as an AccelForge workload; an Einsum AccelForge cannot state (not a sum of a product of tensor
    accesses) is listed and left out."""
    einsums = []
    for e in cascade.einsums:
        why = _unrepresentable(e, cascade, sizes)
        if why:
            result.drop(f"{cascade.name}.{e.name}", f"not exported: {why}")
            continue
        ins = []
        for acc in _product(e.stmt.expr):
            parts = []
            for r, idx in zip(cascade.tensors[acc.tensor].ranks, acc.indices, strict=True):
                aff = bind_index(idx, sizes)
                if len(aff.coeffs) == 1 and aff.coeffs[0][0].upper() == r:
                    parts.append(aff.coeffs[0][0])
                elif len(aff.coeffs) == 1:
                    parts.append(f"{r}: {aff.coeffs[0][0]}")
                else:
                    c = dict(aff.coeffs)
                    outer, inner = (v.lower() for v in cascade.partitions[r])
                    parts.append(f"{r}: {outer}*{c[outer]}+{inner}")
            ins.append(f"{acc.tensor}[{', '.join(parts)}]")
        einsums.append(f"{e.name}[{', '.join(e.out_vars)}] = {' * '.join(ins)}")
    used = {r for t in cascade.tensors.values() for r in t.ranks}
    used |= {part for r in used for part in cascade.partitions.get(r, ())}
    rank_sizes = {r: int(sizes[r]) for r in sizes if r in used}  # a partitioned rank too: AccelForge bounds it
    return {"workload": {"rank_sizes": rank_sizes, "bits_per_value": {"All": 8 * word_bytes}, "einsums": einsums}}


def _unrepresentable(e: Einsum, cascade: Cascade, sizes: Mapping[str, int]) -> str | None:
    if e.reduce_op not in (None, "sum"):
        return f"a {e.reduce_op} reduction (AccelForge Einsums sum products)"
    if e.conditions or any(o != 0 for o in e.out_offsets):
        return "a where() condition or an output offset"
    accesses = _product(e.stmt.expr)
    if accesses is None:
        return "not a product of tensor accesses"
    if (
        e.reduce_op is None
        and len(accesses) > 1
        and any(v not in e.out_vars for acc in accesses for ix in acc.indices for v in bind_index(ix, sizes).coeffs)
    ):
        return "a product without its reduction"
    for acc in accesses:
        for r, idx in zip(cascade.tensors[acc.tensor].ranks, acc.indices, strict=True):
            aff = bind_index(idx, sizes)
            if aff.const or not aff.coeffs:
                return f"{acc.tensor}[{format_index(idx)}]: a constant index"
            if len(aff.coeffs) == 1 and aff.coeffs[0][1] == 1:
                continue
            if r in cascade.partitions and len(cascade.partitions[r]) == 2 and len(aff.coeffs) == 2:
                continue
            return f"{acc.tensor}[{format_index(idx)}]: not a variable or partition index"
    reduced = set(e.reduce_vars)
    in_vars = {v for acc in accesses for ix in acc.indices for v, _ in bind_index(ix, sizes).coeffs}
    if reduced != in_vars - set(e.out_vars):
        return "its reduction is not over exactly the variables the output lacks"
    return None


# ----------------------------------------------------------------------------------------------- architecture


def _count(value: Any) -> int:
    """A positive integer, else 1 (an ``attnscope_*`` extension value the spec check then names if it matters)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _si(p: Problems, m: Mapping, key: str, field_: str, what: str, default: Any = None) -> Any:
    if field_ not in m:
        return default
    v = arithmetic(m[field_])
    if v is None or (isinstance(v, float) and math.isnan(v)) or v < 0:
        p.add(join(key, field_), f"expected {what}, got {show(m[field_])}", m, field_)
        return None
    return v


def import_arch(data: Any, origin: str, result: Converted, name: str | None = None) -> dict[str, Any]:
    """An AccelForge ``arch:`` section as attnscope spec data."""
    p = Problems(origin, "AccelForge architecture")
    arch = p.mapping(data, "arch", None)
    p.raise_if_any()
    levels: list[dict[str, Any]] = []
    arrays: dict[str, dict[str, Any]] = {}
    ext_top: dict[str, Any] = {}
    clock = {"hz": None}

    def walk(nodes: Any, key: str, parent: str | None, fan: list[int]) -> None:
        if not isinstance(nodes, list):
            p.add(key, f"expected a list of nodes, got {show(nodes)}")
            return
        fan = list(fan)
        for i, n in enumerate(nodes):
            nkey = f"{key}[{i}]"
            tag = tag_of(n)
            if tag in ("!Fork", "!Hierarchical"):
                walk(n.get("nodes"), join(nkey, "nodes"), parent, fan)
                continue
            if tag not in ("!Memory", "!Compute", "!Container"):
                p.add(nkey, f"expected !Memory, !Compute, !Container, !Fork or !Hierarchical, got {tag or show(n)}",
                      nodes, i)  # fmt: skip
                continue
            nm = n.get("name")
            if not isinstance(nm, str):
                p.add(join(nkey, "name"), f"expected a name, got {show(nm)}", n, "name")
                continue
            extra = n.get("extra_attributes_for_component_model") or {}
            if not isinstance(extra, dict):
                p.add(join(nkey, "extra_attributes_for_component_model"), f"expected a mapping, got {show(extra)}")
                continue
            ext = {k[len("attnscope_") :]: v for k, v in extra.items() if str(k).startswith("attnscope_")}
            top = ext.pop("spec", {})
            ext_top.update(top if isinstance(top, dict) else {})
            spatial = n.get("spatial") or []
            if not isinstance(spatial, list):
                p.add(join(nkey, "spatial"), f"expected a list of {{name, fanout}}, got {show(spatial)}", n, "spatial")
                spatial = []
            here: list[tuple[str, int]] = []
            for j, s in enumerate(spatial):
                f = arithmetic(s.get("fanout")) if isinstance(s, dict) else None
                if f is None or f < 1 or not float(f).is_integer():
                    p.add(f"{nkey}.spatial[{j}].fanout", f"expected a positive integer, got {show(s)}")
                    continue
                here.append((str(s.get("name", "")), int(f)))
                for k in s:
                    if k not in ("name", "fanout"):
                        result.drop(f"{nkey}.spatial[{j}].{k}", "reuse and usage limits have no counterpart")
            fan = fan + here
            for k in n:
                if k not in ("name", "size", "area", "leak_power", "actions", "tensors", "spatial", "enabled",
                             "extra_attributes_for_component_model", "bits_per_action"):  # fmt: skip
                    result.drop(join(nkey, k), "no counterpart in an attnscope spec")
            if "tensors" in n:
                result.drop(join(nkey, "tensors"), "which tensors a level keeps is the mapping's choice in attnscope")
            if "enabled" in n and n["enabled"] is not True:
                result.drop(join(nkey, "enabled"), "imported as enabled (attnscope specs have no conditions)")
            if tag == "!Container":
                continue
            raw_actions = n.get("actions") or []
            if not isinstance(raw_actions, list):
                p.add(join(nkey, "actions"), f"expected a list of {{name, energy}}, got {show(raw_actions)}")
                continue
            actions = {a["name"]: a for a in raw_actions if isinstance(a, dict) and isinstance(a.get("name"), str)}
            area = _si(p, n, nkey, "area", "an area in m^2 >= 0", 0.0)
            leak = _si(p, n, nkey, "leak_power", "a power in W >= 0", 0.0)  # W per instance: attnscope's leakage_w
            if tag == "!Memory":
                size = _si(p, n, nkey, "size", "a size in bits (a number >= 0, or inf)")
                if size is None:
                    if "size" not in n:
                        p.add(join(nkey, "size"), "missing; expected a size in bits")
                    continue
                word_bits = _count(ext_top.get("word_bytes", 2)) * 8
                bpa = _si(p, n, nkey, "bits_per_action", "bits per action", None)
                read, write = actions.get("read", {}), actions.get("write", {})
                bpa = bpa or _si(p, read, f"{nkey}.actions.read", "bits_per_action", "bits per action", word_bits)
                e_read = _si(p, read, f"{nkey}.actions.read", "energy", "an energy in J >= 0", 0.0)
                e_write = _si(p, write, f"{nkey}.actions.write", "energy", "an energy in J >= 0", 0.0)
                tput = _si(p, read, f"{nkey}.actions.read", "throughput", "actions/s >= 0", None)
                if p.items or bpa is None:
                    continue
                width = max(1, int(bpa // word_bits))
                if math.isinf(size) and levels:
                    p.add(join(nkey, "size"), "inf: attnscope needs a finite capacity below the outermost level "
                          "(give the size, e.g. through the spec's Jinja variable)", n, "size")  # fmt: skip
                    continue
                level = {"name": ext.get("name", _ident(nm)), **({"parent": parent} if levels else {}),
                         "capacity_words": None if math.isinf(size) else int(size // word_bits)}  # fmt: skip
                if ext.get("per_pe_of"):
                    level["per_pe_of"] = ext["per_pe_of"]
                else:
                    level["instances"] = math.prod(f for _, f in fan)
                level |= {
                    "access_width_words": width,
                    "bandwidth_bytes_per_s": None
                    if tput is None or math.isinf(tput)
                    else float(f"{tput * bpa / 8:.15g}"),
                    "read_energy_pj": float(f"{e_read * 1e12:.15g}"),
                    "write_energy_pj": float(f"{e_write * 1e12:.15g}"),
                    "area_um2": float(f"{area * 1e12:.15g}"),
                }
                if leak:
                    level["leakage_w"] = float(leak)
                level |= {k: v for k, v in ext.items() if k not in ("name", "per_pe_of")}
                levels.append(level)
                parent = level["name"]
            else:
                compute = actions.get("compute", {})
                energy = _si(p, compute, f"{nkey}.actions.compute", "energy", "an energy in J >= 0", 0.0)
                tput = _si(p, compute, f"{nkey}.actions.compute", "throughput", "computes/s", None)
                if p.items:
                    continue
                if tput and 1e6 <= tput <= 1e11:
                    clock["hz"] = clock["hz"] or tput
                elif tput is not None:
                    result.drop(f"{nkey}.actions.compute.throughput", f"{tput:g} computes/s is no clock (1 MHz to "
                                "100 GHz); read as one compute per cycle")  # fmt: skip
                if parent is None:
                    p.add(nkey, "a !Compute needs a !Memory above it")
                    continue
                aname = ext.get("array", _ident(nm))
                inst = _count(ext.get("instances", 1))
                pes = math.prod(f for _, f in fan) // inst
                named = dict(fan)
                cols = named.get("cols", fan[-1][1] if fan else 1)
                kind = ext.get("kind") or ("1d" if pes == cols else "2d")
                shape = (
                    {"kind": "1d", "pes": pes} if kind == "1d" else {"kind": "2d", "rows": pes // cols, "cols": cols}
                )
                units = ext.get("units") or {"mac": {"energy_pj": float(f"{energy * 1e12:.15g}"),
                                                     "area_um2": float(f"{area * 1e12:.15g}")}
                                             | ({"leakage_w": float(leak)} if leak else {})}  # fmt: skip
                ops = ext.get("ops") or dict(MAC_OPS)
                if not ext.get("ops"):
                    result.drop(join(nkey, "actions"), "one compute action: the array's unit mac does mac, mul, add, "
                                "sub and neg; other operators have no unit")  # fmt: skip
                arrays[aname] = {**shape, "instances": inst, "fed_by": parent,
                                 "pipelined": ext.get("pipelined", False), "units": units, "ops": ops}  # fmt: skip
                arrays[aname] |= {k: v for k, v in ext.items()
                                  if k not in ("array", "kind", "instances", "pipelined", "units", "ops")}  # fmt: skip

    walk(arch.get("nodes"), "arch.nodes", None, [])
    for k in arch:
        if k != "nodes":
            result.drop(f"arch.{k}", "no counterpart in an attnscope spec")
    p.raise_if_any()
    if not levels or not arrays:
        p.add("arch.nodes", "expected at least one !Memory and one !Compute")
        p.raise_if_any()
    clock_hz = arithmetic(ext_top.get("clock_hz")) or clock["hz"]
    if clock_hz is None:
        clock_hz = 1e9
        result.assume("clock_hz", "1 GHz: no compute throughput in the architecture")
    spec = {
        "name": ext_top.get("name", name or "accelforge-import"),
        "source": ext_top.get("source", f"imported from AccelForge architecture {origin}"),
        "clock_hz": float(clock_hz),
        "word_bytes": ext_top.get("word_bytes", 2),
        "levels": levels,
        "arrays": arrays,
        "staging_level": ext_top.get("staging_level"),
        "compat": ext_top.get("compat", "corrected"),
    }
    if "word_bytes" not in ext_top:
        result.assume("word_bytes", "2: AccelForge gives bits per value in the workload, not the architecture")
    spec_from_dict(spec, f"{origin} (as imported)")
    return spec


def export_arch(spec: ArchSpec) -> dict[str, Any]:
    """A spec as an AccelForge architecture: levels as ``!Memory`` (SI units), arrays as ``!Compute`` below a
    ``!Container`` with their fan-out, branches of the level tree as ``!Fork``; what AccelForge has no field
    for travels in ``extra_attributes_for_component_model`` as ``attnscope_*``."""
    word_bits = spec.word_bytes * 8

    def memory(lv: Any) -> Tagged:
        bpa = lv.access_width_words * word_bits
        tput = math.inf if lv.bandwidth_bytes_per_s is None else lv.bandwidth_bytes_per_s * 8 / bpa
        extra: dict[str, Any] = {"attnscope_name": lv.name}
        if lv.per_pe_of:
            extra["attnscope_per_pe_of"] = lv.per_pe_of
        from attnscope.interop.timeloop import _LEVEL_NATIVE, _extras

        extra |= _extras(lv, _LEVEL_NATIVE - {"banks"})  # AccelForge has no banks field
        node = Tagged("!Memory", name=lv.name,
                      size="inf" if lv.capacity_words is None else lv.capacity_words * word_bits,
                      area=lv.area_um2 * 1e-12, leak_power=getattr(lv, "leakage_w", 0.0), bits_per_action=bpa,
                      actions=[{"name": "read", "energy": lv.read_energy_pj * 1e-12, "throughput": tput},
                               {"name": "write", "energy": lv.write_energy_pj * 1e-12, "throughput": tput}],
                      extra_attributes_for_component_model=extra)  # fmt: skip
        if lv.per_pe_of is None and lv.instances > 1:
            node["spatial"] = [{"name": "instances", "fanout": lv.instances}]
        return node

    def compute(a: Any) -> list[Tagged]:
        from attnscope.interop.timeloop import _ARRAY_NATIVE, _UNIT_NATIVE, _extras

        units = {
            u.name: {"energy_pj": u.energy_pj, "area_um2": u.area_um2}
            | {k[len("attnscope_") :]: v for k, v in _extras(u, _UNIT_NATIVE).items()}
            for u in a.units
        }
        extra = {"attnscope_array": a.name, "attnscope_kind": a.kind, "attnscope_instances": a.instances,
                 "attnscope_pipelined": a.pipelined, "attnscope_units": units,
                 "attnscope_ops": {o.name: o.to_dict() for o in a.ops}} | _extras(a, _ARRAY_NATIVE)  # fmt: skip
        mac = next((u for u in a.units if u.name == "mac"), a.units[0])
        axes = [{"name": "cols", "fanout": a.shape[-1]}] + ([{"name": "rows", "fanout": a.shape[0]}]
                                                            if a.kind == "2d" else [])  # fmt: skip
        if a.instances > 1:
            axes.insert(0, {"name": "instances", "fanout": a.instances})
        container = Tagged("!Container", name=f"{a.name}_pes", spatial=axes[::-1])
        node = Tagged("!Compute", name=a.name, area=mac.area_um2 * 1e-12, leak_power=0,
                      actions=[{"name": "compute", "energy": mac.energy_pj * 1e-12, "throughput": spec.clock_hz}],
                      extra_attributes_for_component_model=extra)  # fmt: skip
        return [container, node]

    children: dict[str | None, list[Any]] = {}
    for lv in spec.levels:
        children.setdefault(lv.parent, []).append(("level", lv))
    for a in spec.arrays:
        per_pe = [lv for lv in spec.path(a.name) if lv.per_pe_of == a.name]
        top = per_pe[0].parent if per_pe else a.fed_by
        children.setdefault(top, []).append(("array", a, per_pe))
    per_pe_levels = {lv.name for lv in spec.levels if lv.per_pe_of}

    def chain(item: Any) -> list[Any]:
        if item[0] == "array":
            a, per_pe = item[1], item[2]
            nodes = compute(a)
            return [nodes[0], *[memory(lv) for lv in per_pe], nodes[1]]
        lv = item[1]
        out = [memory(lv)]
        kids = [k for k in children.get(lv.name, []) if not (k[0] == "level" and k[1].name in per_pe_levels)]
        for k in kids[:-1]:
            out.append(Tagged("!Fork", nodes=chain(k)))
        if kids:
            out += chain(kids[-1])
        return out

    nodes = chain(("level", spec.levels[0]))
    nodes[0]["extra_attributes_for_component_model"]["attnscope_spec"] = {
        "name": spec.name, "source": spec.source, "clock_hz": spec.clock_hz, "word_bytes": spec.word_bytes,
        "staging_level": spec.staging_level, "compat": spec.compat.to_dict(),
    }  # fmt: skip
    return {"arch": {"nodes": nodes}}


# ----------------------------------------------------------------------------------------------- whole


def import_accelforge(
    paths: Sequence[str | Path], variables: Mapping[str, Any] | None = None, name: str | None = None
) -> Converted:
    """AccelForge files (Jinja subset rendered) -> ``arch.yaml`` and/or ``workload.einsum``."""
    result = Converted()
    found = False
    for path in paths:
        origin = str(path)
        text = render_jinja(read_text(path, origin), origin, variables)
        data = read_tagged(path, origin, text)
        if not isinstance(data, dict):
            raise SpecError(f"{origin}: expected a mapping with `workload:` and/or `arch:`, got {show(data)}")
        for key, value in data.items():
            if key == "workload":
                text_, _ = import_workload(value, origin, result)
                result.files["workload.einsum"] = text_
                found = True
            elif key == "arch":
                result.files["arch.yaml"] = import_arch(value, origin, result, name or default_name(origin))
                found = True
            else:
                result.drop(f"{origin}: {key}", "not read by attnscope (renames, mappings and variables have no "
                            "counterpart in its specs)")  # fmt: skip
    if not found:
        raise SpecError(f"{', '.join(map(str, paths))}: no `workload:` or `arch:` section to import")
    return result


def export_accelforge(workload: str | None, arch: str | None, shape: Mapping[str, int] | None = None) -> Converted:
    """``workload.yaml`` (the cascade at the given sizes) and/or ``arch.yaml`` in AccelForge's format."""
    from simulator.specs import load_arch
    from workloads.cases import load_workload

    result = Converted()
    spec = load_arch(arch) if arch else None
    if spec is not None:
        result.files["arch.yaml"] = export_arch(spec)
    if workload:
        loaded = load_workload(workload)
        sizes = loaded.sizes(dict(shape or {}))
        result.files["workload.yaml"] = export_workload(loaded.cascade, sizes, spec.word_bytes if spec else 2, result)
    return result
