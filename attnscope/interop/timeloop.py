"""Timeloop/Accelergy specs in and out: architecture, problem (one Einsum) and mapping.

Import (:func:`import_timeloop`) reads any mix of files whose top-level keys are ``architecture`` (v0.3
``subtree``/``local`` or v0.4 ``nodes`` of ``!Container``/``!Component``/``!Parallel``), ``problem``, ``mapping``,
``ERT`` and ``ART`` (Accelergy's energy and area tables), and gives attnscope's own files: an architecture spec,
an ``.einsum`` cascade and a mapping. What maps to what:

- a storage component is a level: capacity = depth x width / word bits (``memory_depth``/``memory_width``/
  ``word-bits`` in v0.3), access width = ``block-size`` (else width / word bits), bandwidth = ``read_bandwidth``
  words/cycle x word bytes x clock, instances = the name's ``[lo..hi]`` range times the fan-out above it;
  a level with one instance per PE of an array is ``per_pe_of`` that array;
- the compute component is an array: PEs = its instance count, columns = ``meshX``, rows = the rest; its unit
  ``mac`` does mac, mul, add and sub (a MAC's adder); other operators (exp, max, div...) it cannot do are listed,
  or copied from a preset's array with ``ops_from`` (listed as assumed);
- ``global_cycle_seconds`` gives the clock; ERT ``read``/``write``/``compute`` energies (pJ per access of
  ``block-size`` words, per MAC) and ART areas (um^2) give the energies and areas, else 0 (listed);
- a problem's dimensions are ranks, its data spaces tensors (``read_write`` ones are the output), a projection
  of one dimension indexes that rank, ``X1*size_X0 + X0`` indexes rank X partitioned as X1 x X0; the Einsum is
  the sum over the dimensions the output lacks of the product of the inputs (Timeloop's multiply-accumulate);
- a mapping's temporal factors and permutation per level are the loop nest, spatial factors spread over the
  array's axes (``split``: the first dims go to the columns), ``bypass``/``keep`` give the tensors held.

Export (:func:`export_timeloop`) writes the architecture in the v0.3 form (a tree: one branch per array), its
ERT and ART, and per Einsum a v0.4 problem, a mapping and the architecture cut to the Einsum's array, so one
Einsum can be cross-checked in Timeloop. Fields Timeloop has no place for (operators, compat, staging level)
travel as ``attnscope_*`` attributes, which Timeloop and Accelergy ignore.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnscope.interop.common import (
    MAC_OPS,
    Converted,
    arithmetic,
    default_name,
    read_tagged,
    tag_of,
    valid_name,
)
from attnscope.interop.common import ident as _ident
from einsum.ast import Access, BinOp
from einsum.cascade import Cascade, Einsum, bind_index
from einsum.errors import SpecError
from einsum.yamlio import Problems, join, read_yaml, show
from simulator.specs import OPERATORS, ArchSpec, load_arch, spec_from_dict

SECTIONS = ("architecture", "problem", "mapping", "ERT", "ART", "attnscope")
"""Top-level keys read; ``attnscope`` (``{dimensions: {letter: rank}}``, written by the export) restores the
rank names that Timeloop's one-letter dimensions stand for."""
_RANGE_RE = re.compile(r"^(.*?)\[(\d+)\.\.(\d+)\]$")
_COMPUTE_RE = re.compile(r"mac|compute|multipl|adder|alu", re.I)
_USED = {
    "depth", "memory_depth", "width", "memory_width", "datawidth", "word-bits", "block-size", "block_size",
    "read_bandwidth", "write_bandwidth", "meshX", "meshY", "global_cycle_seconds",
}  # fmt: skip
_EXT = "attnscope_"


@dataclass
class _Comp:
    """One component of a Timeloop architecture, its attributes merged with those it inherits."""

    name: str
    key: str
    cls: str
    attrs: dict[str, Any]
    own: dict[str, Any]
    count: int
    mesh_x: int | None
    parent: str | None  # the storage level above, on the path from the root
    full_name: str
    compute: bool
    node: Any = field(default=None, repr=False)


def _split_range(name: str) -> tuple[str, int]:
    m = _RANGE_RE.match(name)
    if not m:
        return name, 1
    lo, hi = int(m.group(2)), int(m.group(3))
    return m.group(1), max(1, hi - lo + 1)


def _is_compute(cls: str, attrs: Mapping[str, Any]) -> bool:
    return bool(_COMPUTE_RE.search(cls)) and not any(k in attrs for k in ("depth", "memory_depth"))


# ----------------------------------------------------------------------------------------------- reading files


def read_sections(paths: Sequence[str | Path], jinja: bool = False) -> tuple[dict[str, tuple[Any, str]], Converted]:
    """Each file's top-level sections (``architecture``, ``problem``, ``mapping``, ``ERT``, ``ART``) -> (data,
    file); other top-level keys are listed as not represented. A section given twice is an error."""
    out: dict[str, tuple[Any, str]] = {}
    result = Converted()
    for path in paths:
        origin = str(path)
        data = read_tagged(path, origin)
        if not isinstance(data, dict):
            raise SpecError(
                f"{origin}: expected a mapping with one or more of the keys {', '.join(SECTIONS)}, got {show(data)}"
            )
        found = False
        for key, value in data.items():
            if key in SECTIONS:
                if key in out:
                    raise SpecError(f"{origin}: {key}: already given in {out[key][1]}; give each section once")
                out[key] = (value, origin)
                found = True
            else:
                result.drop(f"{origin}: {key}", "not read by attnscope (mapper, constraints and "
                            "component-class settings have no counterpart in a spec)")  # fmt: skip
        if not found:
            raise SpecError(f"{origin}: no section attnscope reads; expected one of the keys {', '.join(SECTIONS)}")
    return out, result


# ----------------------------------------------------------------------------------------------- architecture


def _walk_v03(p: Problems, arch: Mapping, result: Converted) -> list[_Comp]:
    comps: list[_Comp] = []

    def node(n: Any, key: str, inherited: dict, count: int, parent: str | None, prefix: str) -> None:
        m = p.mapping(n, key, ("name", "attributes", "local", "subtree", "version", "class"))
        if m is None:
            return
        raw_name = m.get("name")
        if not isinstance(raw_name, str):
            p.add(join(key, "name"), f"expected the node's name, got {show(raw_name)}", m, "name")
            return
        _, n_inst = _split_range(raw_name)
        attrs = dict(inherited)
        own = m.get("attributes") or {}
        if not isinstance(own, dict):
            p.add(join(key, "attributes"), f"expected a mapping, got {show(own)}", m, "attributes")
            own = {}
        attrs.update(own)
        for k in own:
            if k not in _USED and not str(k).startswith(_EXT):
                result.drop(f"{key}.attributes.{k}", "no counterpart in an attnscope spec (inherited by the node's "
                            "components)")  # fmt: skip
        count *= n_inst
        full = f"{prefix}.{raw_name}" if prefix else raw_name
        local = m.get("local") or []
        if not isinstance(local, list):
            p.add(join(key, "local"), f"expected a list of components, got {show(local)}", m, "local")
            local = []
        for i, c in enumerate(local):
            ckey = f"{key}.local[{i}]"
            cm = p.mapping(c, ckey, ("name", "class", "subclass", "attributes", "required_actions", "enabled"))
            if cm is None:
                continue
            cname = cm.get("name")
            cls = cm.get("class")
            if not isinstance(cname, str) or not isinstance(cls, str):
                what = "name" if not isinstance(cname, str) else "class"
                p.add(join(ckey, what), f"expected a string, got {show(cm.get(what))}", cm, what)
                continue
            cown = cm.get("attributes") or {}
            if not isinstance(cown, dict):
                p.add(join(ckey, "attributes"), f"expected a mapping, got {show(cown)}", cm, "attributes")
                cown = {}
            for k in cm:
                if k in ("subclass", "required_actions") or (k == "enabled" and cm[k] is not True):
                    result.drop(join(ckey, k), "no counterpart in an attnscope spec")
            cbase, c_inst = _split_range(cname)
            cattrs = {**attrs, **cown}
            comp = _Comp(cbase, ckey, cls, cattrs, cown, count * c_inst, _int_attr(cattrs, "meshX"), parent,
                         f"{full}.{cname}", _is_compute(cls, cown), cm)  # fmt: skip
            comps.append(comp)
            if not comp.compute and cls != "dummy_storage":
                parent = cbase
        for comp in comps:  # Timeloop v0.3: the compute of a node sits below its innermost storage
            if comp.compute and comp.key.startswith(f"{key}.local["):
                comp.parent = parent
        subtree = m.get("subtree") or []
        if not isinstance(subtree, list):
            p.add(join(key, "subtree"), f"expected a list of nodes, got {show(subtree)}", m, "subtree")
            subtree = []
        for i, s in enumerate(subtree):
            node(s, f"{key}.subtree[{i}]", attrs, count, parent, full)

    top = arch.get("subtree")
    if not isinstance(top, list) or not top:
        p.add("architecture.subtree", f"expected a non-empty list of nodes, got {show(top)}", arch, "subtree")
        return []
    for i, n in enumerate(top):
        node(n, f"architecture.subtree[{i}]", {}, 1, None, "")
    return comps


def _walk_v04(p: Problems, arch: Mapping, result: Converted) -> list[_Comp]:
    comps: list[_Comp] = []
    state = {"attrs": {}, "count": 1, "mesh_x": None, "parent": None, "prefix": ""}

    def nodes(items: Any, key: str) -> None:
        if not isinstance(items, list):
            p.add(key, f"expected a list of !Container/!Component nodes, got {show(items)}")
            return
        for i, n in enumerate(items):
            nkey = f"{key}[{i}]"
            tag = tag_of(n)
            if not isinstance(n, dict) or tag is None:
                p.add(nkey, f"expected a tagged node (!Container, !Component, !Parallel, !Hierarchical), got "
                      f"{show(n)}", items, i)  # fmt: skip
                continue
            if tag in ("!Parallel", "!Hierarchical"):
                if tag == "!Parallel":
                    result.drop(nkey, "!Parallel siblings are chained one above the other (attnscope levels form "
                                "a chain; each keeps the tensors its mapping assigns)")  # fmt: skip
                nodes(n.get("nodes"), join(nkey, "nodes"))
                continue
            if tag not in ("!Container", "!Component"):
                p.add(nkey, f"unknown tag {tag}; expected !Container, !Component, !Parallel or !Hierarchical",
                      items, i)  # fmt: skip
                continue
            name = n.get("name")
            if not isinstance(name, str):
                p.add(join(nkey, "name"), f"expected the node's name, got {show(name)}", n, "name")
                continue
            own = n.get("attributes") or {}
            if not isinstance(own, dict):
                p.add(join(nkey, "attributes"), f"expected a mapping, got {show(own)}", n, "attributes")
                own = {}
            base, n_inst = _split_range(name)
            for k in n:
                plain = k in ("name", "attributes", "class", "spatial", "constraints") or (k, n[k]) == ("enabled", True)
                if not plain:
                    result.drop(join(nkey, k), "no counterpart in an attnscope spec")
            if "constraints" in n:
                result.drop(join(nkey, "constraints"), "mapping constraints are not part of an attnscope spec "
                            "(give them to `attnscope map --constraints`)")  # fmt: skip
            spatial = n.get("spatial") or {}
            if not isinstance(spatial, dict):
                p.add(join(nkey, "spatial"), f"expected {{meshX: N, meshY: N}}, got {show(spatial)}", n, "spatial")
                spatial = {}
            fan = 1
            for axis in ("meshX", "meshY"):
                if axis in spatial:
                    v = spatial[axis]
                    if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
                        p.add(join(join(nkey, "spatial"), axis), f"expected a positive integer, got {show(v)}",
                              spatial, axis)  # fmt: skip
                        continue
                    fan *= v
                    if axis == "meshX":
                        state["mesh_x"] = (state["mesh_x"] or 1) * v
            if tag == "!Container":
                state["attrs"] = {**state["attrs"], **own}
                for k in own:
                    if k not in _USED and not str(k).startswith(_EXT):
                        result.drop(f"{nkey}.attributes.{k}", "no counterpart in an attnscope spec (inherited by the "
                                    "components below)")  # fmt: skip
                state["count"] *= fan * n_inst
                state["prefix"] = f"{state['prefix']}.{name}" if state["prefix"] else name
                continue
            cls = n.get("class")
            if not isinstance(cls, str):
                p.add(join(nkey, "class"), f"expected the component's class, got {show(cls)}", n, "class")
                continue
            attrs = {**state["attrs"], **own}
            count = state["count"] * fan * n_inst
            comp = _Comp(base, nkey, cls, attrs, own, count, state["mesh_x"], state["parent"],
                         f"{state['prefix']}.{name}", _is_compute(cls, own), n)  # fmt: skip
            comps.append(comp)
            if not comp.compute and cls != "dummy_storage":
                state["parent"] = base

    nodes(arch.get("nodes"), "architecture.nodes")
    return comps


def _int_attr(attrs: Mapping[str, Any], key: str) -> int | None:
    v = arithmetic(attrs.get(key))
    return int(v) if v is not None and float(v).is_integer() and v > 0 else None


class _Table(dict):
    """An ERT or ART by component name, remembering each entry's dotted key, which entries were used, and the
    ERT entries of an action passed over (v0.3 lists one per argument set)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys_of: dict[str, str] = {}
        self.used: set[str] = set()
        self.dropped: list[tuple[str, str]] = []

    def unused(self) -> list[str]:
        return [self.keys_of[name] for name in self if name not in self.used]


def _tables(data: Any, origin: str, kind: str, p: Problems) -> _Table:
    """An ERT or ART: component name -> its actions (ERT) or area (ART)."""
    out = _Table()
    m = p.mapping(data, kind, None)
    if m is None:
        return out
    tables = m.get("tables")
    if not isinstance(tables, list):
        p.add(join(kind, "tables"), f"expected a list of {{name, {'actions' if kind == 'ERT' else 'area'}}}, got "
              f"{show(tables)}", m, "tables")  # fmt: skip
        return out
    for i, t in enumerate(tables):
        tkey = f"{kind}.tables[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            p.add(tkey, f"expected {{name: component, ...}}, got {show(t)}", tables, i)
            continue
        if kind == "ART":
            area = arithmetic(t.get("area"))
            if area is None or area < 0:
                p.add(join(tkey, "area"), f"expected an area in um^2 >= 0, got {show(t.get('area'))}", t, "area")
                continue
            out[t["name"]] = float(area)
            out.keys_of[t["name"]] = tkey
        else:
            actions = t.get("actions")
            if not isinstance(actions, list):
                p.add(join(tkey, "actions"), f"expected a list of {{name, energy}}, got {show(actions)}", t, "actions")
                continue
            acts: dict[str, float] = {}
            for j, a in enumerate(actions):
                akey = f"{tkey}.actions[{j}]"
                if not isinstance(a, dict) or not isinstance(a.get("name"), str):
                    p.add(akey, f"expected {{name, energy}}, got {show(a)}", actions, j)
                    continue
                energy = a.get("energy")
                if energy is None and isinstance(a.get("arguments"), list):  # v0.3: one entry per argument set
                    energies = [x.get("energy") for x in a["arguments"] if isinstance(x, dict)]
                    energy = energies[0] if energies else None
                value = arithmetic(energy)
                if value is None or value < 0:
                    p.add(join(akey, "energy"), f"expected an energy in pJ >= 0, got {show(energy)}", a, "energy")
                    continue
                acts.setdefault(a["name"], []).append((float(value), akey, a.get("arguments")))
            out[t["name"]] = {name: _one_entry(entries, out.dropped) for name, entries in acts.items()}
            out.keys_of[t["name"]] = tkey
    return out


def _one_entry(entries: list[tuple[float, str, Any]], dropped: list[tuple[str, str]]) -> tuple[float, str]:
    """One energy for an action an ERT lists per argument set (v0.3: address_delta, data_delta): the random access,
    every argument 1, else the entry without arguments, else the first; the others are listed."""

    def rank(entry: tuple[float, str, Any]) -> int:
        args = entry[2]
        if isinstance(args, dict) and args and all(v == 1 for v in args.values()):
            return 0
        return 1 if not args else 2

    best = min(entries, key=rank)
    for entry in entries:
        if entry is not best:
            dropped.append((entry[1], f"arguments {entry[2]}: attnscope charges one energy per access (the entry "
                                      f"{best[1]} is used)"))  # fmt: skip
    return best[0], best[1]


def _lookup(table: Mapping[str, Any], comp: _Comp, suffix: str = "") -> Any:
    """The table entry of a component: by its full name, else by its last name segments (ranges stripped), if
    exactly one entry has them."""
    if comp.full_name + suffix in table:
        hit = comp.full_name + suffix
    else:
        key = comp.name + suffix
        n = key.count(".") + 1
        hits = [k for k in table if ".".join(_strip_ranges(k).split(".")[-n:]) == key]
        if len(hits) != 1:
            return None
        hit = hits[0]
    if isinstance(table, _Table):
        table.used.add(hit)
    return table[hit]


def _strip_ranges(name: str) -> str:
    return re.sub(r"\[\d+\.\.\d+\]", "", name)


def import_arch(
    arch_data: Any,
    origin: str,
    ert: tuple[Any, str] | None = None,
    art: tuple[Any, str] | None = None,
    name: str | None = None,
    ops_from: str | None = None,
    result: Converted | None = None,
) -> tuple[dict[str, Any], Converted]:
    """A Timeloop architecture (v0.3 or v0.4) as attnscope spec data; raises SpecError naming every problem."""
    result = result or Converted()
    p = Problems(origin, "Timeloop architecture")
    arch = p.mapping(arch_data, "architecture", None)
    if arch is None:
        p.raise_if_any()
    version = str(arch.get("version", ""))
    if "nodes" in arch:
        comps = _walk_v04(p, arch, result)
    elif "subtree" in arch:
        comps = _walk_v03(p, arch, result)
    else:
        p.add("architecture", f"expected `subtree:` (v0.3) or `nodes:` (v0.4), got keys {', '.join(map(str, arch))}",
              arch_data, None)  # fmt: skip
        comps = []
    for k in arch:
        if k not in ("version", "nodes", "subtree"):
            result.drop(f"architecture.{k}", "no counterpart in an attnscope spec")
    p.raise_if_any()
    ep = Problems(ert[1] if ert else origin, "Accelergy ERT")
    ert_t = _tables(_unwrap(ert[0], "ERT"), ert[1], "ERT", ep) if ert else {}
    ep.raise_if_any()
    ap = Problems(art[1] if art else origin, "Accelergy ART")
    art_t = _tables(_unwrap(art[0], "ART"), art[1], "ART", ap) if art else {}
    ap.raise_if_any()

    storages = [c for c in comps if not c.compute and c.cls != "dummy_storage"]
    computes = [c for c in comps if c.compute]
    missing: list[tuple[str, dict[str, Any], str, str]] = []  # (key, dict, field, why): figures no table gave
    renamed = {c.name: _ident(c.name) for c in comps}

    def rn(name: str | None) -> str | None:
        return None if name is None else renamed[name]

    for c in comps:
        if renamed[c.name] != c.name and c.cls != "dummy_storage" and f"{_EXT}array" not in c.own:
            result.assume(f"{'arrays' if c.compute else 'levels'}.{renamed[c.name]}",
                          f"named after Timeloop's {c.name} (attnscope names are lower-case identifiers)")  # fmt: skip
    for c in comps:
        if c.cls == "dummy_storage":
            result.drop(c.key, "a dummy storage level (Timeloop's placeholder for a spatial fan-out): the fan-out "
                        "belongs to the array in attnscope")  # fmt: skip
    if not storages:
        p.add("architecture", "no storage component (DRAM, SRAM, regfile...): a spec needs at least one level")
    if not computes:
        p.add("architecture", "no compute component (class intmac, fpmac, mac, compute...): a spec needs an array")
    p.raise_if_any()

    gcs = arithmetic(_first(comps, "global_cycle_seconds"))
    ext = {k[len(_EXT) :]: v for c in comps for k, v in c.attrs.items() if str(k).startswith(_EXT)}
    if gcs is None or gcs <= 0:
        clock_hz = 1e9
        result.assume("clock_hz", "1 GHz: no global_cycle_seconds in the architecture")
    else:
        clock_hz = float(f"{1 / gcs:.15g}")
    word_bits = _int_attr(storages[0].attrs, "datawidth") or _int_attr(storages[0].attrs, "word-bits")
    if word_bits is None:
        word_bits = 16
        result.assume("word_bytes", "2: no datawidth/word-bits on the outermost level")
    if word_bits % 8:
        p.add(f"{storages[0].key}.attributes.datawidth", f"expected a whole number of bytes, got {word_bits} bits")
        p.raise_if_any()
    word_bytes = word_bits // 8

    # arrays: PE count and shape
    arrays: dict[str, dict[str, Any]] = {}
    fed: dict[str, str] = {}
    for c in computes:
        aname = rn(c.name)
        if not valid_name(aname):
            p.add(f"{c.key}.name", f"{aname!r} cannot name an attnscope array (letters, digits, _)")
            continue
        if c.parent is None:
            p.add(c.key, "a compute component needs a storage level above it")
            continue
        fed[aname] = rn(c.parent)
        inst = _int_attr(c.own, f"{_EXT}instances") or 1
        kind = c.own.get(f"{_EXT}kind")
        n = c.count // inst
        cols = c.mesh_x or n
        if n % cols:
            p.add(f"{c.key}.attributes.meshX", f"{n} PEs do not split into rows of meshX = {cols}")
            continue
        rows = n // cols
        if kind == "1d" or (kind is None and rows == 1):
            shape = {"kind": "1d", "pes": n}
        else:
            shape = {"kind": "2d", "rows": rows, "cols": cols}
        acts = _lookup(ert_t, c) if ert_t else None
        units_ext = c.own.get(f"{_EXT}units")
        units: dict[str, Any] = {}
        if isinstance(units_ext, dict):
            for u, extra in units_ext.items():
                e = (acts or {}).get(u, (None,))[0]
                a = _lookup(art_t, c, f".{u}") if art_t else None
                units[u] = {"energy_pj": e or 0.0, "area_um2": a or 0.0} | dict(extra or {})
                missing += [(f"arrays.{aname}.units.{u}.{f}", units[u], f, why)
                            for f, v, why in (("energy_pj", e, "no ERT action"), ("area_um2", a, "no ART entry"))
                            if v is None]  # fmt: skip
        else:
            e = None
            if acts:
                used = next((k for k in ("compute", "mac_random", "mac", "multiply_accumulate") if k in acts), None)
                e = acts[used][0] if used else None
                for k, (_, akey) in acts.items():
                    if k not in (used, "leak"):
                        result.drop(akey, f"{k}: one energy per MAC action in attnscope ({used or 'none'} is used)")
            a = _lookup(art_t, c) if art_t else None
            units["mac"] = {"energy_pj": e or 0.0, "area_um2": a or 0.0}
            missing += [(f"arrays.{aname}.units.mac.{f}", units["mac"], f, why)
                        for f, v, why in (("energy_pj", e, "no ERT energy for the MAC"), ("area_um2", a, "no ART area"))
                        if v is None]  # fmt: skip
            leak = (acts or {}).get("leak", (None,))[0]
            if leak:  # pJ per cycle -> W per PE
                units["mac"]["leakage_w"] = float(f"{leak * 1e-12 * clock_hz:.15g}")
        ops_ext = c.own.get(f"{_EXT}ops")
        if isinstance(ops_ext, dict):
            ops = {k: dict(v) for k, v in ops_ext.items()}
        else:
            ops = {k: dict(v) for k, v in MAC_OPS.items()}
            lacking = [o for o in OPERATORS if o not in ops]
            result.drop(f"{c.key}.class", f"{c.cls}: a multiply-accumulate unit; the operators {', '.join(lacking)} "
                        "have no unit here (import with ops_from to borrow a preset array's)")  # fmt: skip
        pipelined = bool(c.own.get(f"{_EXT}pipelined", False))
        arrays[aname] = {**shape, "instances": inst, "fed_by": rn(c.parent), "pipelined": pipelined, "units": units,
                         "ops": ops}  # fmt: skip
        taken = {f"{_EXT}{k}" for k in ("kind", "pipelined", "units", "ops", "instances")}
        arrays[aname] |= {k[len(_EXT) :]: v for k, v in c.own.items() if str(k).startswith(_EXT) and k not in taken}
        for k in c.own:
            if k not in _USED and not str(k).startswith(_EXT):
                result.drop(f"{c.key}.attributes.{k}", "no counterpart in an attnscope compute array")
    p.raise_if_any()

    # the path of each array, for per-PE levels
    by_name = {rn(c.name): c for c in storages}
    on_path: dict[str, str] = {}
    for aname, lv in fed.items():
        seen = set()
        while lv is not None and lv not in seen:
            seen.add(lv)
            on_path.setdefault(lv, aname) if by_name[lv].count == _pe_count(arrays[aname]) else None
            lv = rn(by_name[lv].parent)

    levels = []
    for i, c in enumerate(storages):
        lkey = c.key
        if not valid_name(rn(c.name)):
            p.add(f"{lkey}.name", f"{c.name!r} cannot name an attnscope level (letters, digits, _)")
            continue
        depth = arithmetic(c.attrs.get("depth", c.attrs.get("memory_depth")))
        width = arithmetic(c.attrs.get("width", c.attrs.get("memory_width")))
        bits = _int_attr(c.attrs, "datawidth") or _int_attr(c.attrs, "word-bits") or word_bits
        if bits != word_bits:
            bits_key = "datawidth" if _int_attr(c.attrs, "datawidth") else "word-bits"
            result.drop(f"{lkey}.attributes.{bits_key}", f"{bits}-bit words; attnscope has one word size "
                        f"({word_bits} bits), so the capacity is counted in those")  # fmt: skip
        if width is not None and not (math.isfinite(width) and width > 0):
            p.add(f"{lkey}.attributes.width", f"expected the width in bits (a positive number), got {show(width)}")
            continue
        if depth is not None and not (depth > 0):  # nan or <= 0 (inf: unbounded, checked below)
            p.add(f"{lkey}.attributes.depth", f"expected the depth in rows (a positive number), got {show(depth)}")
            continue
        if width is None:  # Timeloop's default: one block of words
            width = bits * (_int_attr(c.attrs, "block-size") or _int_attr(c.attrs, "block_size") or 1)
            if i > 0:
                result.assume(f"levels.{rn(c.name)}: width", f"{width:g} bits, Timeloop's default (block-size x "
                              "word bits): the component gives no width")  # fmt: skip
        if depth is None or math.isinf(depth):
            if i > 0:
                p.add(f"{lkey}.attributes.depth", f"expected the depth in rows (a positive number), got "
                      f"{show(c.attrs.get('depth', c.attrs.get('memory_depth')))}")  # fmt: skip
                continue
            capacity = None
        else:
            capacity = int(depth * width // word_bits)
            if capacity < 1:
                p.add(
                    f"{lkey}.attributes.depth", f"depth x width = {depth * width:g} bits holds no {word_bits}-bit word"
                )
                continue
        block = _int_attr(c.attrs, "block-size") or _int_attr(c.attrs, "block_size") or max(1, int(width // bits))
        bw = arithmetic(c.attrs.get("read_bandwidth"))
        wbw = arithmetic(c.attrs.get("write_bandwidth"))
        if wbw is not None and bw is not None and wbw != bw:
            result.drop(f"{lkey}.attributes.write_bandwidth", f"{wbw:g} words/cycle; attnscope has one bandwidth "
                        f"per level (read_bandwidth, {bw:g})")  # fmt: skip
        acts = (_lookup(ert_t, c) if ert_t else None) or {}
        access = acts.get("access", (None,))  # a register's one action (Accelergy's reg_storage)
        read_e = acts.get("read", access)[0]
        write_e = acts.get("write", acts.get("update", access))[0]
        for k, (energy, akey) in acts.items():
            if k == "update" and "write" in acts and energy != acts["write"][0]:
                result.drop(akey, "an update is charged as a write in attnscope")
            elif k not in ("read", "write", "update", "access", "leak"):
                result.drop(akey, f"{k}: attnscope charges reads and writes (and updates as writes) only")
        leak = acts.get("leak", (None,))[0]
        area = _lookup(art_t, c) if art_t else None
        level: dict[str, Any] = {"name": rn(c.name)}
        if i > 0:
            level["parent"] = rn(c.parent)
        level["capacity_words"] = capacity
        owner = on_path.get(rn(c.name))
        if owner is not None and _pe_count(arrays[owner]) > 1:
            level["per_pe_of"] = owner
        else:
            level["instances"] = c.count
        level |= {
            "access_width_words": min(block, capacity) if capacity else block,
            "bandwidth_bytes_per_s": None if bw is None else float(f"{bw * word_bytes * clock_hz:.15g}"),
            "read_energy_pj": read_e or 0.0,
            "write_energy_pj": write_e or 0.0,
            "area_um2": area or 0.0,
        }
        if leak:  # Accelergy's leak action: pJ per cycle
            level["leakage_w"] = float(f"{leak * 1e-12 * clock_hz:.15g}")
        banks = _int_attr(c.own, "n_banks")
        if banks is not None and capacity is not None:  # SRAM banks: what the technology model sizes
            level["banks"] = banks
        missing += [(f"levels.{level['name']}.{f}", level, f, why)
                    for f, v, why in (("read_energy_pj", read_e, "no ERT read energy"),
                                      ("write_energy_pj", write_e, "no ERT write energy"),
                                      ("area_um2", area, "no ART area")) if v is None]  # fmt: skip
        level |= {k[len(_EXT) :]: v for k, v in c.own.items() if str(k).startswith(_EXT)}
        levels.append(level)
        for k in c.own:
            if k not in _USED and not str(k).startswith(_EXT) and not (k == "n_banks" and "banks" in level):
                result.drop(f"{lkey}.attributes.{k}", "no counterpart in an attnscope storage level")
    p.raise_if_any()

    for table in (ert_t, art_t):
        for key in table.unused() if isinstance(table, _Table) else ():
            result.drop(key, "no component of the architecture has this name")
    for key, why in getattr(ert_t, "dropped", ()):
        result.drop(key, why)
    keys = {rn(c.name): c.key for c in storages}
    _merge_registers(levels, arrays, result, keys, missing)
    native = {rn(c.name) for c in computes if f"{_EXT}ops" not in c.own}  # not written by attnscope's export
    for aname, a in arrays.items():
        inner = next(lv for lv in levels if lv["name"] == a["fed_by"])
        if aname in native and inner["capacity_words"] is not None and inner["capacity_words"] < 3:
            words = inner["capacity_words"]
            result.drop(keys.get(inner["name"], inner["name"]),
                        f"{words} word(s) feeding {aname}, whose MAC reads its other operands from the levels above: "
                        "attnscope's loop-nest search keeps every operand of an Einsum in the innermost PE level (3 "
                        "words for a MAC), so `attnscope map --einsum` finds no nest for it")  # fmt: skip
    if ops_from:
        _borrow_ops(arrays, ops_from, result)
    spec = {
        "name": str(ext.get("name") or name or "timeloop-import"),
        "source": str(
            ext.get("source")
            or f"imported from Timeloop architecture {origin}" + (f" (version {version})" if version else "")
        ),
        "clock_hz": clock_hz,
        "word_bytes": word_bytes,
        "levels": levels,
        "arrays": arrays,
        "staging_level": ext.get("staging_level"),
        "compat": ext.get("compat", "corrected"),
    }
    _derive_missing(spec, missing, comps, origin, result)
    spec_from_dict(spec, f"{origin} (as imported)")  # validates: a problem here is the importer's to explain
    return spec, result


def _unwrap(data: Any, key: str) -> Any:
    """A section given with its top-level key (``{ERT: {...}}``) or without."""
    return data[key] if isinstance(data, dict) and key in data else data


def _pe_count(array: Mapping[str, Any]) -> int:
    dims = [array["pes"]] if array["kind"] == "1d" else [array["rows"], array["cols"]]
    return math.prod(dims) * array.get("instances", 1)


def _first(comps: Sequence[_Comp], key: str) -> Any:
    for c in comps:
        if key in c.attrs:
            return c.attrs[key]
    return None


def _derive_missing(
    spec: dict[str, Any],
    missing: list[tuple[str, dict[str, Any], str, str]],
    comps: Sequence[_Comp],
    origin: str,
    result: Converted,
) -> None:
    """The figures no ERT/ART gave: derived by attnscope's technology model at the architecture's ``technology``
    node (``45nm``; the outermost level's ``type`` as the DRAM) where the model covers it, else 0; each listed."""
    from simulator import technology as tech_model

    node_text = _first(comps[1:], "technology") or _first(comps, "technology")  # the chip's, not the DRAM's
    m = re.fullmatch(r"\s*(\d+)\s*nm\s*", str(node_text)) if node_text is not None else None
    tech: dict[str, Any] | None = None
    kept: dict[int, str] = {}  # id(level or unit dict) -> why the model could not derive its figures
    if m and missing:
        tech = {"node_nm": int(m.group(1))}
        dram = comps[0].attrs.get("type") if comps else None
        if isinstance(dram, str) and dram in tech_model.dram_types():
            tech["dram"] = dram
        saved = [(d, f, d.pop(f)) for _, d, f, _ in missing]
        levels = spec["levels"]
        for _ in range(len(levels) + 1):  # a level outside the model's tables keeps its 0s; the others derive
            try:
                spec_from_dict({**spec, "technology": tech}, f"{origin} (with attnscope's technology model)")
                break
            except SpecError as exc:
                lines = str(exc).splitlines()
                bad = {int(k) for k in re.findall(r"levels\[(\d+)\]", str(exc)) if int(k) < len(levels)}
                hit = [(d, f, v) for d, f, v in saved if id(d) not in kept and any(d is levels[k] for k in bad)]
                for k in bad:  # figures the model would derive and no table gave: 0 for a level outside it
                    line = next((ln for ln in lines if f"levels[{k}]" in ln), "")
                    asked = re.search(r"give ([\w, ]+) explicitly", line)
                    for f in asked.group(1).split(", ") if asked and id(levels[k]) not in kept else ():
                        if f not in levels[k] and not any(d is levels[k] and g == f for d, g, _ in saved):
                            hit.append((levels[k], f, 0.0))
                            missing.append((f"levels.{levels[k]['name']}.{f}", levels[k], f, f"no table gives {f}"))
                if not hit:
                    for d, f, v in saved:
                        d[f] = v
                    result.assume("technology", f"{node_text}: attnscope's technology model cannot derive the "
                                  f"missing figures ({lines[-1]}); they are 0")  # fmt: skip
                    tech, kept = None, {}
                    break
                for d, f, v in hit:
                    d[f] = v
                    k = next(k for k in bad if levels[k] is d)
                    kept[id(d)] = next((ln.split(": ", 2)[-1] for ln in lines if f"levels[{k}]" in ln), lines[-1])
        if tech is not None:
            spec["technology"] = tech
            used = {"technology"} | ({"type"} if "dram" in tech else set())
            other = {f"{c.key}.attributes.technology" for c in comps if c.own.get("technology", node_text) != node_text}
            result.unrepresented[:] = [(k, w) for k, w in result.unrepresented
                                       if k.rpartition(".attributes.")[2] not in used or k in other]  # fmt: skip
    for key, d, _, why in missing:
        if tech is not None and id(d) not in kept:
            result.assume(key, f"{why}: from attnscope's technology model at {tech['node_nm']} nm")
        else:
            result.assume(
                key, f"0: {why}" + (f" (outside the technology model: {kept[id(d)]})" if id(d) in kept else "")
            )


def _merge_registers(
    levels: list[dict[str, Any]],
    arrays: dict[str, dict[str, Any]],
    result: Converted,
    keys: Mapping[str, str],
    missing: list[tuple[str, dict[str, Any], str, str]],
) -> None:
    """Merge a PE's innermost one-word registers, one per operand in Timeloop (weight_reg, input_activation_reg,
    output_activation_reg), into one register level: attnscope's PE registers hold every operand of an Einsum.
    Capacities and areas add up, energies are their mean (listed)."""
    by_name = {lv["name"]: lv for lv in levels}
    for aname, a in arrays.items():
        run = []
        name = a["fed_by"]
        while name in by_name and by_name[name].get("per_pe_of") == aname and by_name[name]["capacity_words"] == 1:
            run.append(by_name[name])
            name = by_name[name].get("parent")
        if len(run) < 2:
            continue
        run.reverse()
        merged = dict(run[0])
        merged["name"] = f"{aname}_registers"
        merged["capacity_words"] = len(run)
        merged["access_width_words"] = 1
        for k in ("read_energy_pj", "write_energy_pj"):
            merged[k] = sum(lv[k] for lv in run) / len(run)
        merged["area_um2"] = sum(lv["area_um2"] for lv in run)
        bws = [lv["bandwidth_bytes_per_s"] for lv in run if lv["bandwidth_bytes_per_s"] is not None]
        merged["bandwidth_bytes_per_s"] = min(bws) if bws else None
        result.drop(", ".join(keys.get(lv["name"], lv["name"]) for lv in run),
                    f"one-word registers, one per operand, merged into {merged['name']} ({len(run)} words, mean "
                    "energies, summed area): attnscope's innermost PE level holds every operand")  # fmt: skip
        gone = [entry for entry in missing if any(entry[1] is lv for lv in run)]
        for field_ in dict.fromkeys(f for _, _, f, _ in gone):  # a figure no table gave for one of them: none
            merged[field_] = 0.0
            missing.append((f"levels.{merged['name']}.{field_}", merged, field_, next(w for _, _, f, w in gone
                                                                                       if f == field_)))  # fmt: skip
        missing[:] = [entry for entry in missing if entry not in gone]
        i = levels.index(run[0])
        for lv in run:
            levels.remove(lv)
        levels.insert(i, merged)
        a["fed_by"] = merged["name"]
        by_name = {lv["name"]: lv for lv in levels}


def _borrow_ops(arrays: dict[str, dict[str, Any]], ops_from: str, result: Converted) -> None:
    """Give every imported array the operators it lacks from a preset's array (``ARCH:ARRAY``), with the
    units they need; each borrowed operator and unit is listed as assumed."""
    arch_name, _, array_name = ops_from.partition(":")
    source = load_arch(arch_name)
    src = source.array(array_name) if array_name else max(source.arrays, key=lambda a: a.pe_count)
    for aname, a in arrays.items():
        for op in src.ops:
            if op.name in a["ops"]:
                continue
            a["ops"][op.name] = op.to_dict()
            result.assume(f"arrays.{aname}.ops.{op.name}", f"{op.to_dict()} from {source.name} {src.name}")
            for unit, _ in op.weights:
                if unit not in a["units"]:
                    u = src.unit(unit)
                    a["units"][unit] = {"energy_pj": u.energy_pj, "area_um2": u.area_um2}
                    result.assume(f"arrays.{aname}.units.{unit}",
                                  f"{u.energy_pj} pJ, {u.area_um2} um^2 from {source.name} {src.name}")  # fmt: skip


# ----------------------------------------------------------------------------------------------- problem


def _projection_terms(p: Problems, entry: Any, key: str, coefs: Mapping[str, int], dims: Sequence[str]) -> list:
    """A projection entry as [(dim, coefficient)] (Timeloop: a list of [dim] or [dim, coefficient name])."""
    if not isinstance(entry, list) or not entry:
        p.add(key, f"expected a list of terms [DIM] or [DIM, COEFFICIENT], got {show(entry)}")
        return []
    terms = []
    for t, term in enumerate(entry):
        tkey = f"{key}[{t}]"
        if isinstance(term, str):
            term = [term]
        if not (isinstance(term, list) and 1 <= len(term) <= 2 and all(isinstance(x, str | int) for x in term)):
            p.add(tkey, f"expected [DIM] or [DIM, COEFFICIENT], got {show(term)}")
            continue
        dim = term[0]
        if dim not in dims:
            p.add(tkey, f"{dim!r} is not a dimension of the problem ({', '.join(dims)})")
            continue
        coef = 1
        if len(term) == 2:
            coef = term[1] if isinstance(term[1], int) else coefs.get(term[1])
            if coef is None:
                p.add(tkey, f"coefficient {term[1]!r} is not declared in shape.coefficients")
                continue
        terms.append((dim, coef, term[1] if len(term) == 2 else None))
    return terms


def import_problem(
    data: Any, origin: str, result: Converted, renames: Mapping[str, str] | None = None
) -> tuple[str | None, dict[str, int]]:
    """A Timeloop problem as ``.einsum`` text (None when it cannot be one; why is in ``result``) and its sizes;
    ``renames`` (dimension -> rank) restores the ranks an export wrote as one-letter dimensions."""
    p = Problems(origin, "Timeloop problem")
    prob = p.mapping(data, "problem", None)
    p.raise_if_any()
    shape = p.mapping(prob.get("shape"), "problem.shape", None, prob, "shape")
    instance = p.mapping(prob.get("instance"), "problem.instance", None, prob, "instance")
    p.raise_if_any()
    for k in prob:
        if k not in ("shape", "instance", "version"):
            result.drop(f"problem.{k}", "no counterpart in an attnscope workload")
    dims = shape.get("dimensions")
    if not (isinstance(dims, list) and dims and all(isinstance(d, str) for d in dims)):
        p.add("problem.shape.dimensions", f"expected a list of dimension names, got {show(dims)}", shape, "dimensions")
        p.raise_if_any()
    orig = {d: (renames or {}).get(d, d) for d in dims}
    for d in dims:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", orig[d]):
            p.add("problem.shape.dimensions", f"{d!r}: attnscope ranks are upper case (A-Z, digits, _)", shape,
                  "dimensions")  # fmt: skip
    if len(set(orig.values())) != len(dims):
        p.add("problem.shape.dimensions", f"two dimensions name one rank: {orig}", shape, "dimensions")
    ranks_all = list(orig.values())
    coefs: dict[str, int] = {}
    raw_coefs = shape.get("coefficients") or []
    if not isinstance(raw_coefs, list):
        p.add("problem.shape.coefficients", f"expected a list of {{name, default}}, got {show(raw_coefs)}", shape,
              "coefficients")  # fmt: skip
        raw_coefs = []
    for i, c in enumerate(raw_coefs):
        if not (isinstance(c, dict) and isinstance(c.get("name"), str)):
            p.add(f"problem.shape.coefficients[{i}]", f"expected {{name, default}}, got {show(c)}")
            continue
        v = instance.get(c["name"], c.get("default", 1))
        if not (isinstance(v, int) and not isinstance(v, bool)):
            p.add(f"problem.shape.coefficients[{i}].default", f"expected an integer, got {show(v)}")
            continue
        coefs[c["name"]] = v
    sizes: dict[str, int] = {}
    for d in dims:
        v = instance.get(d)
        if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            p.add(f"problem.instance.{d}", f"expected the size of dimension {d} (a positive integer), got "
                  f"{show(v) if d in instance else 'nothing'}", instance, d)  # fmt: skip
        else:
            sizes[orig[d]] = v
    for k, v in instance.items():
        if k not in dims and k not in coefs:
            if k == "densities":
                if v:
                    result.drop("problem.instance.densities", "attnscope costs dense tensors")
            else:
                result.drop(f"problem.instance.{k}", "not a dimension of the problem")
    spaces = shape.get("data_spaces")
    if not (isinstance(spaces, list) and spaces):
        p.add("problem.shape.data_spaces", f"expected a list of data spaces, got {show(spaces)}", shape, "data_spaces")
    p.raise_if_any()

    tensors = []
    unrepresentable = False
    partitions: dict[str, tuple[str, str]] = {}
    for i, ds in enumerate(spaces):
        key = f"problem.shape.data_spaces[{i}]"
        m = p.mapping(ds, key, ("name", "projection", "read_write"), spaces, i)
        if m is None:
            continue
        name = m.get("name")
        if not (isinstance(name, str) and valid_name(name)):
            p.add(join(key, "name"), f"expected a tensor name (letters, digits, _), got {show(name)}", m, "name")
            continue
        proj = m.get("projection")
        if isinstance(proj, dict):
            p.add(join(key, "projection"), "expected a list (one entry per tensor rank); the named-rank form is not "
                  "read", m, "projection")  # fmt: skip
            continue
        if not isinstance(proj, list) or not proj:
            p.add(join(key, "projection"), f"expected a list of projection entries, got {show(proj)}", m, "projection")
            continue
        ranks, indices = [], []
        for j, entry in enumerate(proj):
            terms = _projection_terms(p, entry, f"{key}.projection[{j}]", coefs, dims)
            if not terms:
                continue
            terms = [(orig[d], c, n) for d, c, n in terms]
            if len(terms) == 1 and terms[0][1] == 1:
                ranks.append(terms[0][0])
                indices.append(terms[0][0].lower())
                continue
            if len(terms) == 2 and terms[1][1] == 1 and terms[0][1] == sizes.get(terms[1][0]):
                outer, inner = terms[0][0], terms[1][0]
                named = re.fullmatch(rf"size_{re.escape(inner)}_in_([A-Z][A-Z0-9_]*)", str(terms[0][2]))
                parent = (named.group(1) if named and named.group(1) not in ranks_all
                          else _partition_name(outer, inner, ranks_all))  # fmt: skip
                if parent in partitions and partitions[parent] != (outer, inner):
                    parent = f"{outer}_{inner}"
                partitions[parent] = (outer, inner)
                ranks.append(parent)
                indices.append(f"{outer.lower()}*{inner}+{inner.lower()}")
                continue
            result.drop(f"{key}.projection[{j}]", "a sliding-window or strided index (a sum of dimensions that is not "
                        "a partition X1*size(X0)+X0): attnscope indexes a rank by its own variables only")  # fmt: skip
            unrepresentable = True
        tensors.append((name, ranks, indices, bool(m.get("read_write", False))))
    p.raise_if_any()
    outputs = [t for t in tensors if t[3]]
    if len(outputs) != 1:
        p.add("problem.shape.data_spaces", f"expected exactly one data space with read_write: true (the output), "
              f"got {len(outputs)}")  # fmt: skip
    p.raise_if_any()
    if unrepresentable:
        return None, sizes
    out = outputs[0]
    ins = [t for t in tensors if not t[3]]
    for name, _, indices, _ in tensors:
        if any("*" in ix for ix in indices) and name == out[0]:
            result.drop(f"problem: {name}", "the output is written at a partitioned index")
            return None, sizes
    reduced = [r.lower() for r in ranks_all if r.lower() not in out[2]]
    declared = ", ".join(f"{n}[{','.join(r)}]" for n, r, _, _ in ins)
    body = " * ".join(f"{n}[{','.join(ix)}]" for n, _, ix, _ in ins) or "1"
    lines = [f"# imported from Timeloop problem {origin}" + (f" ({shape['name']})" if "name" in shape else "")]
    if ins:
        lines.append(f"input {declared}")
    for parent, (outer, inner) in partitions.items():
        lines.append(f"partition {parent} = {outer} * {inner}")
    lines += [f"param {r} = {sizes[r]}" for r in ranks_all]
    reduce = f"sum[{','.join(reduced)}] " if reduced else ""
    lines.append(f"{out[0]}[{','.join(out[2])}] = {reduce}{body}")
    text = "\n".join(lines) + "\n"
    try:
        Cascade.from_text(text, name=str(shape.get("name", "timeloop")), origin=f"{origin} (as imported)")
    except SpecError:
        raise
    except Exception as exc:  # a cascade rule the problem breaks (e.g. an input indexed by the output's rank twice)
        raise SpecError(f"{origin}: problem: not an attnscope Einsum: {exc}") from None
    return text, sizes


def _partition_name(outer: str, inner: str, dims: Sequence[str]) -> str:
    stem_o, stem_i = outer.rstrip("0123456789"), inner.rstrip("0123456789")
    if stem_o and stem_o == stem_i and stem_o not in dims:
        return stem_o
    return f"{outer}_{inner}"


# ----------------------------------------------------------------------------------------------- mapping


def _factors(p: Problems, text: Any, key: str, dims: Sequence[str], m: Any) -> dict[str, int]:
    if isinstance(text, list):
        text = " ".join(map(str, text))
    if not isinstance(text, str):
        p.add(key, f"expected factors like 'C=3 M=4' or 'C3 M4', got {show(text)}", m, "factors")
        return {}
    out = {}
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        mm = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*?)=?(\d+)", item)
        if not mm or mm.group(1) not in dims:
            p.add(key, f"{item!r}: expected DIM=N with DIM one of {', '.join(dims)}", m, "factors")
            continue
        out[mm.group(1)] = int(mm.group(2))
    return out


def _permutation(p: Problems, perm: Any, key: str, dims: Sequence[str], m: Any) -> list[str]:
    """Dimensions innermost first (Timeloop's order), from a string of one-letter dims or a list."""
    if perm is None:
        return []
    if isinstance(perm, list) and all(isinstance(x, str) for x in perm):
        items = perm
    elif isinstance(perm, str):
        items, rest = [], perm.strip()
        while rest:
            hit = next((d for d in sorted(dims, key=len, reverse=True) if rest.startswith(d)), None)
            if hit is None:
                p.add(key, f"{rest!r} does not start with a dimension ({', '.join(dims)})", m, "permutation")
                return []
            items.append(hit)
            rest = rest[len(hit) :].lstrip(" ,")
    else:
        p.add(key, f"expected a string or list of dimensions, got {show(perm)}", m, "permutation")
        return []
    bad = [x for x in items if x not in dims]
    if bad:
        p.add(key, f"{', '.join(bad)}: not dimensions of the problem ({', '.join(dims)})", m, "permutation")
    return [x for x in items if x in dims]


def import_mapping(
    data: Any,
    origin: str,
    spec: ArchSpec,
    einsum: Einsum,
    sizes: Mapping[str, int],
    result: Converted,
    renames: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Timeloop mapping of one Einsum as attnscope mapping data (simulator.mapping's layout); ``renames``
    (dimension -> rank) as for :func:`import_problem`."""
    p = Problems(origin, "Timeloop mapping")
    entries = data.get("mapping") if isinstance(data, dict) and "mapping" in data else data
    if not isinstance(entries, list):
        p.add("mapping", f"expected a list of {{target, type, factors, permutation}}, got {show(entries)}")
        p.raise_if_any()
    ranks = [v.upper() for v in einsum.iter_vars]
    letter = {r: d for d, r in (renames or {}).items()}
    dims = [letter.get(r, r) for r in ranks]  # as the file names them
    rank_of = dict(zip(dims, ranks, strict=True))
    tensors = [einsum.name, *einsum.inputs]
    array = max(spec.arrays, key=lambda a: a.pe_count)
    if len(spec.arrays) > 1:
        result.assume(f"{origin}: array", f"{array.name}, the largest: a Timeloop mapping does not name its array")
    path = [lv.name for lv in spec.path(array.name)]
    temporal: dict[str, list[tuple[str, int]]] = {lv: [] for lv in path}
    keep: dict[str, set[str]] = {lv: set(tensors) for lv in path}
    axes: list[list[tuple[str, int]]] = [[] for _ in array.shape]
    for i, e in enumerate(entries):
        key = f"mapping[{i}]"
        m = p.mapping(e, key, ("target", "type", "factors", "permutation", "split", "bypass", "keep"), entries, i)
        if m is None:
            continue
        target, kind = m.get("target"), m.get("type")
        if kind not in ("temporal", "spatial", "bypass", "datatype"):
            p.add(join(key, "type"), f"expected temporal, spatial, bypass or datatype, got {show(kind)}", m, "type")
            continue
        known = {lv.name for lv in spec.levels}
        if not isinstance(target, str):
            p.add(join(key, "target"), f"expected a storage level name, got {show(target)}", m, "target")
            continue
        if target not in known and _ident(target) in known:  # Timeloop's name of an imported level
            target = _ident(target)
        if kind in ("bypass", "datatype"):
            if target not in path:
                result.drop(join(key, "target"), f"{target}: not a level on {array.name}'s path ({', '.join(path)})")
                continue
            for field_, add in (("keep", True), ("bypass", False)):
                names = m.get(field_) or []
                bad = [t for t in names if t not in tensors] if isinstance(names, list) else [names]
                if bad:
                    p.add(join(key, field_), f"{', '.join(map(str, bad))}: expected tensors of {einsum.name} "
                          f"({', '.join(tensors)})", m, field_)  # fmt: skip
                    continue
                if add:
                    keep[target] |= set(names)
                else:
                    keep[target] -= set(names)
            continue
        factors = _factors(p, m.get("factors"), join(key, "factors"), dims, m)
        perm = _permutation(p, m.get("permutation"), join(key, "permutation"), dims, m)
        order = [d for d in reversed(perm)] + [d for d in dims if d not in perm]  # outermost first
        loops = [(rank_of[d].lower(), factors.get(d, 1)) for d in order if factors.get(d, 1) > 1]
        if kind == "spatial":
            split = m.get("split", len(perm) if perm else len(dims))
            if not (isinstance(split, int) and not isinstance(split, bool) and split >= 0):
                p.add(join(key, "split"), f"expected how many permutation dims go to X (an integer >= 0), got "
                      f"{show(split)}", m, "split")  # fmt: skip
                continue
            x_dims = set(perm[:split]) if perm else set(dims)
            for var, f in loops:
                axis = len(axes) - 1 if letter.get(var.upper(), var.upper()) in x_dims or len(axes) == 1 else 0
                axes[axis].append((var, f))
            if target not in known:
                result.drop(join(key, "target"), f"{target}: not an attnscope level; its spatial factors spread over "
                            f"{array.name}'s axes")  # fmt: skip
            continue
        if target not in path:
            if loops:
                p.add(join(key, "target"), f"{target} has temporal loops but is not a level on {array.name}'s path "
                      f"({', '.join(path)})", m, "target")  # fmt: skip
            else:
                result.drop(join(key, "target"), f"{target}: not a level on {array.name}'s path (no loops there)")
            continue
        temporal[target] += loops
    p.raise_if_any()
    for d, r in rank_of.items():
        total = math.prod(f for loops in (*temporal.values(), *axes) for v, f in loops if v == r.lower())
        if total != sizes[r]:
            p.add("mapping", f"the factors of {d} multiply to {total}, the problem's {d} is {sizes[r]}")
    p.raise_if_any()
    return {
        "name": f"timeloop mapping {origin}",
        "einsums": {
            einsum.name: {
                "array": array.name,
                "levels": path,
                "temporal": {lv: [[v, b] for v, b in temporal[lv]] for lv in path},
                "spatial": [[[v, f] for v, f in ax] for ax in axes],
                "keep": {lv: sorted(keep[lv]) for lv in path[1:]},
            }
        },
        "placement": {},
        "phases": [{"stages": [{array.name: [einsum.name]}]}],
    }


# ----------------------------------------------------------------------------------------------- import, whole


def _renames(section: tuple[Any, str] | None) -> dict[str, str]:
    """The ``attnscope: {dimensions: {letter: rank}}`` section an export writes next to a problem."""
    if section is None:
        return {}
    data, origin = section
    dims = data.get("dimensions") if isinstance(data, dict) else None
    ok = isinstance(dims, dict) and all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", v) for k, v in dims.items()
    )
    if not ok:
        raise SpecError(f"{origin}: attnscope.dimensions: expected {{DIMENSION: RANK}} (upper-case names), got "
                        f"{show(dims)}")  # fmt: skip
    return dict(dims)


def import_timeloop(paths: Sequence[str | Path], name: str | None = None, ops_from: str | None = None) -> Converted:
    """Timeloop/Accelergy files -> attnscope files ``arch.yaml``, ``workload.einsum``, ``mapping.yaml``."""
    sections, result = read_sections(paths)
    if "architecture" not in sections:
        raise SpecError(f"{', '.join(map(str, paths))}: no `architecture:` section; give the architecture file")
    arch_data, arch_origin = sections["architecture"]
    spec_data, _ = import_arch(arch_data, arch_origin, sections.get("ERT"), sections.get("ART"),
                               name or default_name(arch_origin), ops_from, result)  # fmt: skip
    result.files["arch.yaml"] = spec_data
    renames = _renames(sections.get("attnscope"))
    if "problem" in sections:
        text, sizes = import_problem(*sections["problem"], result, renames)
        if text is None:
            result.drop("problem", "no workload written: an index above is not representable")
            if "mapping" in sections:
                result.drop("mapping", "no mapping written: it maps the problem, which is not representable")
            return result
        result.files["workload.einsum"] = text
        if "mapping" in sections:
            cascade = Cascade.from_text(text, origin=sections["problem"][1])
            spec = spec_from_dict(spec_data, arch_origin)
            result.files["mapping.yaml"] = import_mapping(
                sections["mapping"][0], sections["mapping"][1], spec, cascade.einsums[0], sizes, result, renames
            )  # fmt: skip
    elif "mapping" in sections:
        result.drop("mapping", "no mapping written: a mapping needs the problem it maps (give the problem file)")
    return result


# ----------------------------------------------------------------------------------------------- export


def export_arch(spec: ArchSpec, only_array: str | None = None) -> tuple[dict, dict, dict]:
    """A spec as Timeloop v0.3 architecture data (a tree: one branch per array), its ERT and its ART (pJ, um^2).
    ``only_array``: the branch of that array alone (what Timeloop models: one compute per architecture)."""
    word_bits = spec.word_bytes * 8
    arrays = [a for a in spec.arrays if only_array in (None, a.name)]
    keep_levels = {lv.name for a in arrays for lv in spec.path(a.name)}
    levels = [lv for lv in spec.levels if lv.name in keep_levels]
    ert: list[dict] = []
    art: list[dict] = []

    def component(lv, prefix: str) -> dict:
        attrs: dict[str, Any] = _extras(lv, _LEVEL_NATIVE)
        attrs |= {"word-bits": word_bits, "datawidth": word_bits, "block-size": lv.access_width_words,
                  "width": lv.access_width_words * word_bits}  # fmt: skip
        if lv.capacity_words is not None:
            attrs["depth"] = math.ceil(lv.capacity_words / lv.access_width_words)
            if attrs["depth"] * lv.access_width_words != lv.capacity_words:
                attrs["width"], attrs["depth"] = word_bits, lv.capacity_words
        if lv.bandwidth_bytes_per_s is not None:
            bw = lv.bandwidth_bytes_per_s / spec.word_bytes / spec.clock_hz
            attrs["read_bandwidth"] = attrs["write_bandwidth"] = bw
        if getattr(lv, "banks", None) is not None:
            attrs["n_banks"] = lv.banks
        if lv.per_pe_of is not None:  # Timeloop reads a PE level's mesh from its own attributes
            attrs["meshX"] = spec.array(lv.per_pe_of).shape[-1]
        name = lv.name if lv.per_pe_of is not None or lv.instances == 1 else f"{lv.name}[0..{lv.instances - 1}]"
        cls = "DRAM" if lv.capacity_words is None else ("regfile" if lv.per_pe_of else "SRAM")
        full = f"{prefix}.{name}"
        actions = [{"name": "read", "energy": lv.read_energy_pj}, {"name": "write", "energy": lv.write_energy_pj},
                   {"name": "update", "energy": lv.write_energy_pj}]  # fmt: skip
        if getattr(lv, "leakage_w", 0.0):  # Accelergy's leak action: pJ per cycle
            actions.append({"name": "leak", "energy": lv.leakage_w / spec.clock_hz * 1e12})
        ert.append({"name": full, "actions": actions})
        art.append({"name": full, "area": lv.area_um2})
        return {"name": name, "class": cls, "attributes": attrs}

    def compute(a, prefix: str) -> dict:
        name = a.name
        attrs: dict[str, Any] = _extras(a, _ARRAY_NATIVE) | {
            "datawidth": word_bits, "meshX": a.shape[-1], f"{_EXT}kind": a.kind, f"{_EXT}pipelined": a.pipelined,
            f"{_EXT}units": {u.name: {k[len(_EXT):]: v for k, v in _extras(u, _UNIT_NATIVE).items()} for u in a.units},
            f"{_EXT}ops": {o.name: o.to_dict() for o in a.ops},
        }  # fmt: skip
        if a.instances > 1:
            attrs[f"{_EXT}instances"] = a.instances
        full = f"{prefix}.{name}"
        acts = [{"name": u.name, "energy": u.energy_pj} for u in a.units]
        if any(u.name == "mac" for u in a.units):
            acts.insert(0, {"name": "compute", "energy": a.unit("mac").energy_pj})
        ert.append({"name": full, "actions": acts})
        art.extend({"name": f"{full}.{u.name}", "area": u.area_um2} for u in a.units)
        cls = "intmac" if any(u.name == "mac" for u in a.units) else "compute"
        return {"name": name, "class": cls, "attributes": attrs}

    def subtree(parent: str | None, prefix: str) -> list[dict]:
        nodes = []
        for lv in levels:
            if lv.parent != parent or lv.per_pe_of is not None:
                continue
            node_prefix = f"{prefix}.{lv.name}_scope"
            node: dict[str, Any] = {"name": f"{lv.name}_scope", "local": [component(lv, node_prefix)]}
            children = subtree(lv.name, node_prefix)
            children += pe_nodes(lv.name, node_prefix)
            if children:
                node["subtree"] = children
            nodes.append(node)
        return nodes

    def pe_nodes(parent: str, prefix: str) -> list[dict]:
        out = []
        for a in arrays:
            per_pe = [lv for lv in spec.path(a.name) if lv.per_pe_of == a.name]
            top = per_pe[0].parent if per_pe else a.fed_by
            if top != parent:
                continue
            name = f"{a.name}_PE[0..{a.pe_count - 1}]"
            node_prefix = f"{prefix}.{name}"
            local = [component(lv, node_prefix) for lv in per_pe] + [compute(a, node_prefix)]
            out.append({"name": name, "local": local})
        return out

    root_attrs: dict[str, Any] = {"global_cycle_seconds": 1 / spec.clock_hz, "datawidth": word_bits,
                                  "word-bits": word_bits, f"{_EXT}name": spec.name, f"{_EXT}source": spec.source,
                                  f"{_EXT}staging_level": spec.staging_level,
                                  f"{_EXT}compat": spec.compat.to_dict()}  # fmt: skip
    outer = levels[0]
    root_prefix = "system"
    root = {"name": "system", "attributes": root_attrs, "local": [component(outer, root_prefix)]}
    children = subtree(outer.name, root_prefix) + pe_nodes(outer.name, root_prefix)
    if children:
        root["subtree"] = children
    arch = {"architecture": {"version": 0.3, "subtree": [root]}}
    return arch, {"ERT": {"version": 0.3, "tables": ert}}, {"ART": {"version": 0.3, "tables": art}}


_LEVEL_NATIVE = {"name", "parent", "capacity_words", "instances", "per_pe_of", "access_width_words",
                 "bandwidth_bytes_per_s", "read_energy_pj", "write_energy_pj", "area_um2", "leakage_w", "banks",
                 "given"}  # fmt: skip
_ARRAY_NATIVE = {"name", "kind", "shape", "instances", "fed_by", "pipelined", "units", "ops"}
_UNIT_NATIVE = {"name", "energy_pj", "area_um2", "given"}


def _extras(obj: Any, native: set[str]) -> dict[str, Any]:
    """The fields of a spec dataclass that Timeloop has no place for and that differ from their defaults, as
    ``attnscope_<field>`` attributes (Timeloop and Accelergy ignore attributes they do not know)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in native or (f.default is not dataclasses.MISSING and value == f.default):
            continue
        if isinstance(value, int | float | str | bool) or value is None:
            out[f"{_EXT}{f.name}"] = value
    return out


def representable(einsum: Einsum, cascade: Cascade, sizes: Mapping[str, int]) -> str | None:
    """None when Timeloop can state the Einsum as a problem (a sum, or none, of a product of tensor accesses
    whose indices are single variables or partition indices ``x1*X0+x0``), else why not."""
    if einsum.reduce_op not in (None, "sum"):
        return f"a {einsum.reduce_op} reduction (Timeloop problems accumulate sums)"
    if einsum.conditions:
        return "a where() condition"
    if any(o != 0 for o in einsum.out_offsets):
        return "an output written at an offset (a recurrence)"

    def factors(expr: Any) -> list[Access] | None:
        if isinstance(expr, Access):
            return [expr]
        if isinstance(expr, BinOp) and expr.op == "*":
            left, right = factors(expr.left), factors(expr.right)
            return None if left is None or right is None else left + right
        return None

    accesses = factors(einsum.stmt.expr)
    if accesses is None:
        return "not a product of tensor accesses (Timeloop multiplies and accumulates)"
    for acc in accesses:
        ranks = cascade.tensors[acc.tensor].ranks
        for r, idx in zip(ranks, acc.indices, strict=True):
            aff = bind_index(idx, sizes)
            if aff.const != 0:
                return f"{acc.tensor} is indexed with a constant offset"
            if len(aff.coeffs) == 1 and aff.coeffs[0][1] == 1:
                continue
            if r in cascade.partitions and len(cascade.partitions[r]) == 2 and len(aff.coeffs) == 2:
                continue
            return f"{acc.tensor} is indexed by {acc.indices!r}"
    return None


def dimension_letters(einsum: Einsum) -> dict[str, str]:
    """A one-letter Timeloop dimension per rank of the Einsum (Timeloop reads factors and permutations letter by
    letter): the rank itself when it is one free letter, else its first letter if free, else the first free
    letter. Raises SpecError beyond 26 ranks."""
    ranks = [v.upper() for v in einsum.iter_vars]
    out: dict[str, str] = {}
    taken = {r for r in ranks if len(r) == 1}
    for r in ranks:
        if len(r) == 1:
            out[r] = r
            continue
        free = [c for c in (r[0], *"ABCDEFGHIJKLMNOPQRSTUVWXYZ") if c not in taken]
        if not free:
            raise SpecError(f"{einsum.name}: more than 26 ranks; Timeloop names each dimension with one letter")
        out[r] = free[0]
        taken.add(free[0])
    return out


def export_problem(einsum: Einsum, cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, Any]:
    """One Einsum as a Timeloop v0.4 problem with one-letter dimensions (:func:`dimension_letters`; call
    :func:`representable` first)."""
    letter = dimension_letters(einsum)
    dims = [letter[v.upper()] for v in einsum.iter_vars]
    coefs: dict[str, int] = {}
    spaces = []

    def projection(acc: Access) -> list:
        ranks = cascade.tensors[acc.tensor].ranks
        out = []
        for r, idx in zip(ranks, acc.indices, strict=True):
            aff = bind_index(idx, sizes)
            if len(aff.coeffs) == 1:
                out.append([[letter[aff.coeffs[0][0].upper()]]])
                continue
            outer, inner = cascade.partitions[r]
            c = dict(aff.coeffs)
            coef_name = f"size_{inner}_in_{r}"  # names the partitioned rank for the way back
            coefs[coef_name] = sizes[inner]
            out.append([[letter[outer], coef_name], [letter[inner]]])
            assert c[outer.lower()] == sizes[inner] and c[inner.lower()] == 1
        return out

    accesses = []

    def collect(expr: Any) -> None:
        if isinstance(expr, Access):
            accesses.append(expr)
        else:
            collect(expr.left)
            collect(expr.right)

    collect(einsum.stmt.expr)
    seen = set()
    for acc in accesses:
        if acc.tensor in seen:
            continue
        seen.add(acc.tensor)
        spaces.append({"name": acc.tensor, "projection": projection(acc), "read_write": False})
    spaces.append({"name": einsum.name, "projection": [[[letter[v.upper()]]] for v in einsum.out_vars],
                   "read_write": True})  # fmt: skip
    return {
        "problem": {
            "version": 0.4,
            "shape": {
                "name": einsum.name,
                "dimensions": dims,
                "coefficients": [{"name": k, "default": v} for k, v in coefs.items()],
                "data_spaces": spaces,
            },
            "instance": {letter[r]: int(sizes[r]) for r in letter},
        }
    }


def export_mapping(em: Any, spec: ArchSpec, einsum: Einsum) -> dict[str, Any]:
    """An attnscope loop nest (:class:`simulator.mapping.EinsumMapping`) as a Timeloop mapping, in the form
    Timeloop writes (``factors: A4 B1``, ``permutation: BA`` innermost first, ``type: datatype``)."""
    letter = {v: d for v, d in zip(einsum.iter_vars, dimension_letters(einsum).values(), strict=True)}
    dims = list(letter.values())
    tensors = [einsum.name, *einsum.inputs]
    entries = []
    array = spec.array(em.array)
    per_pe = [lv.name for lv in spec.path(array.name) if lv.per_pe_of == array.name]
    spatial_target = None
    nest = {lv: (loops, keep) for lv, loops, keep in zip(em.levels, em.temporal, em.keep, strict=True)}
    path = [lv.name for lv in spec.path(array.name)]
    for lv_name in path:  # Timeloop needs every level of the architecture: one the nest skips has no loops, no data
        loops, keep = nest.get(lv_name, ((), frozenset()))
        factors = dict.fromkeys(dims, 1)
        for v, b in loops:
            factors[letter[v]] *= b
        order = list(dict.fromkeys(letter[v] for v, _ in loops))
        perm = list(reversed(order)) + [d for d in dims if d not in order]  # innermost first
        text = " ".join(f"{d}{factors[d]}" for d in dims)
        entries.append({"target": lv_name, "type": "temporal", "factors": text, "permutation": "".join(perm)})
        if lv_name != path[0]:
            entries.append({"target": lv_name, "type": "datatype", "keep": sorted(keep),
                            "bypass": sorted(set(tensors) - set(keep))})  # fmt: skip
        if lv_name not in per_pe:
            spatial_target = lv_name
    x_axis = em.spatial[-1] if em.spatial else ()
    y_axis = em.spatial[0] if len(em.spatial) > 1 else ()
    sp = dict.fromkeys(dims, 1)
    for v, f in (*x_axis, *y_axis):
        sp[letter[v]] *= f
    x_dims = list(dict.fromkeys(letter[v] for v, _ in x_axis))
    y_dims = [d for d in dict.fromkeys(letter[v] for v, _ in y_axis) if d not in x_dims]
    perm = x_dims + y_dims + [d for d in dims if d not in x_dims and d not in y_dims]
    entries.append({"target": spatial_target, "type": "spatial", "factors": " ".join(f"{d}{sp[d]}" for d in dims),
                    "permutation": "".join(perm), "split": len(x_dims)})  # fmt: skip
    return {"mapping": entries}


def export_timeloop(
    workload: str,
    arch: str,
    shape: Mapping[str, int] | None = None,
    mapping: str | None = None,
    einsum_name: str | None = None,
    budget: int = 20_000,
) -> Converted:
    """The architecture (with ERT, ART) and, per Einsum Timeloop can state, its problem, mapping and the
    architecture cut to its array: ``<Einsum>/problem.yaml``, ``mapping.yaml``, ``arch.yaml``."""
    from einsum.lower import lower
    from mappers.search import search
    from mappers.space import MapSpace
    from simulator.mapping import load_mapping
    from workloads.cases import load_workload

    result = Converted()
    spec = load_arch(arch)
    loaded = load_workload(workload)
    cascade = loaded.cascade
    sizes = loaded.sizes(dict(shape or {}))
    arch_data, ert, art = export_arch(spec)
    result.files |= {"arch.yaml": arch_data, "ERT.yaml": ert, "ART.yaml": art}
    given = load_mapping(mapping) if mapping else None
    if mapping:
        shape_given = read_yaml(mapping, mapping).get("shape")  # the sizes it was made at (cost --save-mapping)
        if isinstance(shape_given, dict) and all(isinstance(v, int) for v in shape_given.values()):
            for rank, size in shape_given.items():
                if cascade.parent_of.get(rank) is None and sizes.get(rank, size) != size:
                    raise SpecError(f"{mapping}: shape.{rank} = {size}, but the workload has {rank} = {sizes[rank]}: "
                                    "the mapping was made for another --shape")  # fmt: skip
            parts = {r: v for r, v in shape_given.items() if cascade.parent_of.get(r) is not None}
            sizes = cascade.rank_sizes({r: v for r, v in sizes.items() if r not in cascade.partitions} | parts)
    names = [e.name for e in cascade.einsums]
    if einsum_name is not None and einsum_name not in names:
        raise SpecError(f"--einsum {einsum_name!r} is not an Einsum of {cascade.name}; choose from {', '.join(names)}")
    lowered = None
    for e in cascade.einsums:
        if einsum_name not in (None, e.name):
            continue
        why = representable(e, cascade, sizes)
        if why is not None:
            result.drop(f"{cascade.name}.{e.name}", f"not exported: {why}")
            continue
        result.files[f"{e.name}/problem.yaml"] = export_problem(e, cascade, sizes)
        renamed = {d: r for r, d in dimension_letters(e).items() if d != r}
        if renamed:
            result.files[f"{e.name}/names.yaml"] = {"attnscope": {"dimensions": renamed}}
            result.assume(f"{e.name}/problem.yaml: dimensions {', '.join(renamed)}",
                          f"ranks {', '.join(renamed.values())} (Timeloop names a dimension with one letter); "
                          f"{e.name}/names.yaml names them for the way back")  # fmt: skip
        if given is not None:
            if e.name not in given.einsums:
                result.drop(f"{mapping}: einsums.{e.name}", "the mapping file has no loop nest for it: none written")
                continue
            em = given.einsums[e.name]
        else:
            lowered = lowered or lower(cascade, sizes)
            space = MapSpace.build(lowered.einsum(e.name), spec)
            em = search(space, "latency", budget=budget, parallel=False).mapping
        for v in e.iter_vars:
            if em.factors(v) != sizes[v.upper()]:
                raise SpecError(
                    f"{mapping or 'the search'}: einsums.{e.name}: the bounds of {v} multiply to {em.factors(v)}, "
                    f"the Einsum's {v.upper()} is {sizes[v.upper()]} (a mapping made for another --shape?)"
                )
        result.files[f"{e.name}/mapping.yaml"] = export_mapping(em, spec, e)
        result.files[f"{e.name}/arch.yaml"] = export_arch(spec, em.array)[0]
    return result


__all__ = ["export_arch", "export_mapping", "export_problem", "export_timeloop", "import_arch",
           "import_mapping", "import_problem", "import_timeloop", "representable"]  # fmt: skip
