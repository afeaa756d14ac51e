"""Regenerate the committed technology tables (``simulator/technology/tables/*.csv``) from the Accelergy project's
component models, so that attnscope itself needs neither Python 3.12 nor those packages.

Run it with a Python >= 3.12 that has the models installed, from the repository root::

    uv python install 3.12            # or: pyenv install 3.12
    python3.12 -m venv /tmp/hw312 && /tmp/hw312/bin/pip install hwcomponents hwcomponents-cacti \\
        hwcomponents-library hwcomponents-neurosim
    /tmp/hw312/bin/python simulator/technology/make_tables.py --jobs 2

(An hour or more on two cores: the refined SRAM rows and the check set are some 1,550 CACTI runs of up to a few
seconds each, and the 16-bit array's smoothed rows some 4,300 more of half a second (20 minutes); finished parts,
and each refined row as it is computed, are kept in ``--cache``, so a rerun resumes.
``--only sram``, ``--only check`` and so on regenerate one table.)

(``hwcomponents-library`` imports the neurosim plug-in on import, hence the fourth package.) If CACTI fails with
"GLIBC_2.38 not found", the wheel's prebuilt binary is too new for the system: rebuild it in place with
``make -C <site-packages>/hwcomponents_cacti/cacti opt`` (its own makefile; a few seconds).

What each table holds and where each number comes from (every constant that the models do not give is cited):

- ``sram.csv``: per-access read/write energy, leakage and area of an SRAM array by node, capacity (8 B to
  256 MiB, powers of two; for the single-ported arrays the presets use, ``REFINED_ARRAYS``, at 45 nm and at the
  nodes priced from CACTI's 22 nm runs, also between them from 64 KiB to 256 MiB: half-octave capacities, and
  wherever CACTI changes the array's organisation, capacities bracketing the step, see ``_refined_rows``; the
  16-bit array's rows there are means over a small capacity window, see ``SMOOTHED_ARRAYS``),
  access width, banks and read/write ports: ``hwcomponents_cacti.SRAM`` (CACTI 7 with
  itrs-lstp cells, as that package configures it). CACTI has 22/32/45 nm data; the package interpolates 28 nm
  linearly between 22 and 32 nm and scales below 22 nm from 22 nm with energy ~ sqrt(node), area ~ node, leakage
  ~ 0.79 sqrt(node) (its documented rule, IRDS 2022 / Parvais et al. 2009). Arrays below CACTI's minimum (depth
  < 64 x banks, width < 32 bit) are scaled by the package from the minimum array (its empirical rule). The
  nominal supply is CACTI's itrs-lstp Vdd of the node the numbers came from (tech_params/<node>nm.dat).
- ``units.csv``: per-action energy, leakage and area of the PE functional units by datatype and node. Integer
  units: ``hwcomponents_library`` Aladdin adder, multiplier and comparator (Shao et al., ISCA 2014, 40 nm data),
  scaled by the library (Stillmaker & Baas 2017 equations, a ratio between nodes at one supply). Floating-point
  adders and multipliers: Horowitz, "Computing's energy problem", ISSCC 2014, Fig. 1.1.9 (45 nm, 0.9 V): fp16 add
  0.4 pJ / 1360 um^2, fp16 mult 1.1 pJ / 1640 um^2, fp32 add 0.9 pJ / 4184 um^2, fp32 mult 3.7 pJ / 7700 um^2 (bf16 is
  given the fp16 figures, an upper bound: its 8-bit mantissa multiplier is smaller); scaled from 45 nm by the
  same library functions; no leakage figure is published, so 0. Composite units (stated assumptions): mac = mult
  + add; exp = 5 mac + 1 mult (the exp unit of the FuseMax study's Accelergy tables, fusemax-study.md §C.5);
  divide = Newton-Raphson reciprocal (2 iterations of 2 mac) + 1 mult = 4 mac + 1 mult; max = comparator of
  the datatype's width (a floating-point compare is an integer compare of the sign-magnitude bits). The nominal
  supply of every unit row is Horowitz's 0.9 V (Aladdin's 40 nm supply is not stated; 0.9 V is assumed).
- ``sram-check.csv``: CACTI itself at capacities the table does not hold (1.25, 1.5 and 1.75 x 2^k, 80 KiB ..
  224 MiB) for the refined arrays at 45, 16 and 7 nm: what ``tests/simulator/test_technology.py`` compares the
  interpolation with.
- ``dram.csv``: DRAM energy per bit by type, from ``hwcomponents_cacti``'s DRAM models (their sources are cited
  there and repeated in the table).
- ``wires.csv``: on-chip wire energy per bit per mm by node: ``hwcomponents_library`` Wire (C = 0.2 fF/um,
  E = C V^2 at its default 0.7 V; the capacitance per length is node-independent in that model).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import itertools
import json
import math
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

OUT = Path(__file__).resolve().with_name("tables")
NODES_NM = (45, 32, 28, 22, 16, 12, 7, 5)
CAPACITIES_B = tuple(2**k for k in range(3, 29))  # 8 B .. 256 MiB
WIDTHS_BITS = (8, 16, 64, 256, 1024, 4096)
BANKS = (1, 4, 32)
PORTS = (1, 2)
REFINED_ARRAYS = ((4096, 32), (4096, 4), (4096, 1), (64, 1), (16, 1))
"""(access width bits, banks) of the single-ported arrays the presets use (their global buffers and large register
files): tabulated between the powers of two too, 64 KiB .. 256 MiB, wherever CACTI changes organisation."""
REFINED_FAMILIES = {45: (45,), 22: (22, 16, 12, 7, 5)}
"""CACTI node -> the table nodes the package prices from that node's CACTI runs (below 22 nm it scales the 22 nm
run). 32 and 28 nm (28 mixes the 22 and 32 nm runs) keep the power-of-two grid only."""
REFINED_RANGE_B = (64 * 2**10, 256 * 2**20)
REFINE_TOLERANCE = 0.02  # a midpoint within 2% of the log-log interpolation ends the refinement of its interval
REFINE_MIN_OCTAVES = 1 / 1024  # an organisation change is bracketed to 1/1024 octave (0.07% in capacity) or one row
SMOOTHED_ARRAYS = {(16, 1): (1 / 32, 9)}
"""(access width bits, banks) -> (half window in octaves, samples): refined arrays whose rows are the geometric mean of
CACTI over capacities c x 2^(-w .. +w), evenly spaced in log capacity. For 16-bit one-bank arrays CACTI's optimiser
alternates between two organisations, one with about 12% less energy and the other with about 12% less area, every
kilobyte or so (measured at 22 nm: 110 KiB A, 111 KiB B, 112 KiB A, 112.4-113.0 KiB B, 113.0-113.9 KiB A, 114-115 KiB
B, ...), so one CACTI sample is a coin toss between them and no interpolation of single samples follows both. The
mean over +-1/32 octave (+-2.2%, about 2.5 alternations near 112 KiB) sits between the two; where CACTI is a power law
the mean of a symmetric log window is the centre's value, so smooth ranges are unchanged. The other refined arrays
step where CACTI changes organisation and stay there: their steps are bracketed, not averaged."""
CHECK_FACTORS = (1.25, 1.5, 1.75)  # the check set's capacities: these x 2^k, never table capacities
CACTI_VDD_LSTP = {45: 1.1, 32: 1.0, 22: 0.8}  # CACTI tech_params/<node>nm.dat, "-Vdd (V)" itrs-lstp column
UNIT_VDD = 0.9  # Horowitz's supply; the library scales between nodes at a fixed supply (its 0.8 V polynomial)
HOROWITZ_45NM = {  # ISSCC 2014, Fig. 1.1.9: (energy pJ, area um^2) at 45 nm, 0.9 V
    ("fp16", "add"): (0.4, 1360.0),
    ("fp16", "mul"): (1.1, 1640.0),
    ("fp32", "add"): (0.9, 4184.0),
    ("fp32", "mul"): (3.7, 7700.0),
}
FLOAT_BITS = {"fp16": 16, "bf16": 16, "fp32": 32}
INT_BITS = {"int8": 8, "int16": 16, "int32": 32}
DRAM_SOURCES = {
    "LPDDR4": "hwcomponents_cacti: Wikipedia LPDDR (public data)",
    "LPDDR": "hwcomponents_cacti: Malladi et al. ISCA'12",
    "DDR3": "hwcomponents_cacti: Chatterjee et al. MICRO'17",
    "HBM2": "hwcomponents_cacti: HBM market reports (patsnap), Wikipedia HBM",
    "HBM3": "hwcomponents_cacti: HBM market reports (patsnap), Wikipedia HBM",
    "HBM4": "hwcomponents_cacti: HBM3 - 20% (patsnap), Wikipedia HBM",
}


def _nominal_vdd(node: int) -> float:
    """The supply the CACTI numbers of a node were computed at (interpolated like the numbers, fixed below 22)."""
    if node in CACTI_VDD_LSTP:
        return CACTI_VDD_LSTP[node]
    if node < 22:
        return CACTI_VDD_LSTP[22]
    lo, hi = max(n for n in CACTI_VDD_LSTP if n < node), min(n for n in CACTI_VDD_LSTP if n > node)
    t = (node - lo) / (hi - lo)
    return (1 - t) * CACTI_VDD_LSTP[lo] + t * CACTI_VDD_LSTP[hi]


def _sram_rows(args: tuple[int, int, int, str]) -> list[dict]:
    """Every node x capacity of one (width, banks, ports); kept in the cache folder, so a rerun resumes."""
    from hwcomponents_cacti import SRAM

    width, banks, ports, cache = args
    done = Path(cache) / f"sram-{width}-{banks}-{ports}.json"
    if done.exists():
        return json.loads(done.read_text())
    rows = [
        _sram_row(SRAM, node, width, capacity, banks, ports)
        for capacity in CAPACITIES_B
        if width <= 8 * capacity
        for node in NODES_NM
    ]
    done.write_text(json.dumps(rows))
    return rows


_REFINE_COLUMNS = ("read_energy_pj", "write_energy_pj", "area_um2")


def _refined_rows(args: tuple[int, int, int, str]) -> list[dict]:
    """Rows of one preset array (width, banks; one port) for one CACTI node's family, between the powers of two.

    Adaptive, so that log-log interpolation between neighbouring rows follows CACTI: CACTI's optimiser changes the
    array's organisation (subarray counts) at capacities of its own, where energy and area step by up to 2.4x;
    between those steps they are smooth power laws. Start from half-octave capacities (64 KiB .. 256 MiB); for each
    interval compute CACTI at its log-midpoint; if read/write energy and area there are within 2% of the
    interpolation, the interval is smooth and done. Otherwise the interval holds a step: the half whose midpoint
    value continues the smooth slope of the row beyond its outer end is done, the other is bisected again (both
    where neither continues it), until the step is bracketed within 1/1024 octave or one row of the array. Every
    computed capacity is a row."""
    width, banks, cacti_node, cache = args
    family = REFINED_FAMILIES[cacti_node]
    smoothing = SMOOTHED_ARRAYS.get((width, banks))
    tag = "-smoothed" if smoothing else ""
    done = Path(cache) / f"sram-refined-{width}-{banks}-{cacti_node}{tag}.json"
    points: dict[int, list[dict]] = {}
    if done.exists():
        points = {int(k): v for k, v in json.loads(done.read_text()).items()}
    if not smoothing:  # the powers of two are the same CACTI runs as the power-of-two grid's
        for row in _sram_rows((width, banks, 1, cache)):
            if row["node_nm"] in family and REFINED_RANGE_B[0] <= row["capacity_bytes"] <= REFINED_RANGE_B[1]:
                points.setdefault(row["capacity_bytes"], [None] * len(family))[family.index(row["node_nm"])] = row
    row_bytes = max(1, width // 8)

    def at(capacity: int) -> tuple[float, ...]:
        if capacity not in points:
            from hwcomponents_cacti import SRAM

            if smoothing:
                points[capacity] = [_smoothed_row(SRAM, node, width, capacity, banks, smoothing) for node in family]
            else:
                points[capacity] = [_sram_row(SRAM, node, width, capacity, banks, 1) for node in family]
            done.write_text(json.dumps(points))
        return tuple(math.log(points[capacity][0][c]) for c in _REFINE_COLUMNS)

    if smoothing:  # the power-of-two capacities are rows too, smoothed like the rest
        for k in range(*(round(math.log2(c)) for c in REFINED_RANGE_B)):
            at(2**k)
        at(REFINED_RANGE_B[1])

    def rounded(capacity: float) -> int:
        return max(row_bytes, round(capacity / row_bytes) * row_bytes)

    lo, hi = (round(2 * math.log2(c)) for c in REFINED_RANGE_B)
    base = sorted({rounded(2 ** (k / 2)) for k in range(lo, hi + 1)})
    todo = list(itertools.pairwise(base))
    tol = math.log(1 + REFINE_TOLERANCE)
    while todo:
        x, y = todo.pop()
        m = rounded(math.sqrt(x * y))
        if m in (x, y) or math.log2(y / x) <= REFINE_MIN_OCTAVES:
            continue
        fx, fy, fm = at(x), at(y), at(m)
        t = math.log(m / x) / math.log(y / x)
        if all(abs(v - ((1 - t) * a + t * b)) <= tol for a, b, v in zip(fx, fy, fm, strict=True)):
            continue
        caps = sorted(points)
        i, j = caps.index(x), caps.index(y)
        left = _continues(points, caps[i - 1], x, m) if i > 0 else False
        right = _continues(points, caps[j + 1], y, m) if j + 1 < len(caps) else False
        if not (left and not right):  # unless m continues the row left of x: the step is in (m, y)
            todo.append((x, m))
        if not (right and not left):
            todo.append((m, y))
    return [row for capacity in sorted(points) for row in points[capacity]]


def _continues(points: dict[int, list[dict]], outer: int, end: int, m: int) -> bool:
    """Whether CACTI at ``m`` continues the power law of the row from ``outer`` to ``end`` (within the tolerance)."""
    tol = math.log(1 + REFINE_TOLERANCE)
    for c in _REFINE_COLUMNS:
        a, b, v = (math.log(points[k][0][c]) for k in (outer, end, m))
        slope = (b - a) / math.log(end / outer)
        if abs(b + slope * math.log(m / end) - v) > tol:
            return False
    return True


def _smoothed_row(model, node: int, width: int, capacity: int, banks: int, smoothing: tuple[float, int]) -> dict:
    """A one-port row whose energies, leakage and area are geometric means of CACTI over a log-capacity window
    (``SMOOTHED_ARRAYS``); each sample is rounded to a whole row of the array."""
    half, samples = smoothing
    row_bytes = max(1, width // 8)
    caps = [
        max(row_bytes, round(capacity * 2 ** (half * (2 * i / (samples - 1) - 1)) / row_bytes) * row_bytes)
        for i in range(samples)
    ]
    rows = [_sram_row(model, node, width, c, banks, 1) for c in caps]
    out = dict(rows[samples // 2], capacity_bytes=capacity)
    for col in ("read_energy_pj", "write_energy_pj", "leakage_mw", "area_um2"):
        out[col] = _sig(math.exp(sum(math.log(r[col]) for r in rows) / samples))
    return out


def _sram_row(model, node: int, width: int, capacity: int, banks: int, ports: int) -> dict:
    s = _sram(model, node, width, capacity, banks, ports)
    return {
        "node_nm": node,
        "capacity_bytes": capacity,
        "width_bits": width,
        "banks": banks,
        "ports": ports,
        "nominal_voltage_v": round(_nominal_vdd(node), 4),
        "read_energy_pj": _sig(s.read_energy * 1e12),
        "write_energy_pj": _sig(s.write_energy * 1e12),
        "leakage_mw": _sig(s.leak_power * 1e3),
        "area_um2": _sig(s.area * 1e12),
    }


def _check_rows() -> list[dict]:
    """CACTI at capacities the table does not hold (1.25, 1.5 and 1.75 x 2^k, 80 KiB .. 224 MiB) for the arrays the
    presets use, at 45 nm and at two nodes priced from CACTI's 22 nm runs (16 and 7 nm): the points the tests
    compare the interpolation with."""
    from hwcomponents_cacti import SRAM

    rows = []
    for width, banks in REFINED_ARRAYS:
        for capacity in sorted(int(f * 2**k) for f in CHECK_FACTORS for k in range(16, 28)):
            for node in (45, 16, 7):
                s = _sram(SRAM, node, width, capacity, banks, 1)
                rows.append(
                    {
                        "node_nm": node,
                        "capacity_bytes": capacity,
                        "width_bits": width,
                        "banks": banks,
                        "ports": 1,
                        "read_energy_pj": _sig(s.read_energy * 1e12),
                        "write_energy_pj": _sig(s.write_energy * 1e12),
                        "area_um2": _sig(s.area * 1e12),
                    }
                )
    return rows


def _sram(model, node: int, width: int, capacity: int, banks: int, ports: int):
    """One CACTI array; retried where parallel runs race in the package's cache clean-up (a file vanishes).

    ``node / 1e9``: the package multiplies by 1e9 and looks the node up in CACTI's list; ``45 * 1e-9 * 1e9`` is
    45.00000000000001, which it would interpolate (by 1e-15, running CACTI at 65 nm as well)."""
    for attempt in range(50):
        try:
            return model(tech_node=node / 1e9, width=width, size=8 * capacity, n_banks=banks, n_rw_ports=ports)
        except FileNotFoundError:
            if attempt == 49:
                raise
            time.sleep(random.uniform(0.05, 0.5))
    raise AssertionError("unreachable")


def _unit_rows() -> list[dict]:
    from hwcomponents.scaling import tech_node_area, tech_node_energy
    from hwcomponents_library.library.aladdin import AladdinAdder, AladdinComparator, AladdinMultiplier

    rows = []
    for node in NODES_NM:
        n = node * 1e-9
        for dtype, bits in INT_BITS.items():
            add, mul, cmp = AladdinAdder(n, bits), AladdinMultiplier(n, bits), AladdinComparator(n, bits)
            parts = {
                "add": (add.add().energy, add.leak_power, add.area),
                "mul": (mul.multiply().energy, mul.leak_power, mul.area),
                "max": (cmp.read().energy, cmp.leak_power, cmp.area),
            }
            rows += _composites(
                node,
                dtype,
                {k: (e * 1e12, p * 1e3, a * 1e12) for k, (e, p, a) in parts.items()},
                "hwcomponents_library Aladdin (Shao et al. ISCA 2014), library tech scaling",
            )
        for dtype, bits in FLOAT_BITS.items():
            base = "fp32" if bits == 32 else "fp16"
            e_scale, a_scale = tech_node_energy(n, 45e-9), tech_node_area(n, 45e-9)
            cmp = AladdinComparator(n, bits)
            parts = {
                op: (HOROWITZ_45NM[base, op][0] * e_scale, 0.0, HOROWITZ_45NM[base, op][1] * a_scale)
                for op in ("add", "mul")
            }
            parts["max"] = (cmp.read().energy * 1e12, cmp.leak_power * 1e3, cmp.area * 1e12)
            rows += _composites(
                node, dtype, parts, "Horowitz ISSCC 2014 (45 nm) add/mul, library tech scaling; max: Aladdin comparator"
            )
    return rows


def _composites(node: int, dtype: str, parts: dict, source: str) -> list[dict]:
    """add, mul, max as given; mac, exp, divide composed of them (see the module docstring)."""
    mac = tuple(a + m for a, m in zip(parts["add"], parts["mul"], strict=True))
    units = dict(parts) | {
        "mac": mac,
        "exp": tuple(5 * c + m for c, m in zip(mac, parts["mul"], strict=True)),
        "divide": tuple(4 * c + m for c, m in zip(mac, parts["mul"], strict=True)),
    }
    return [
        {
            "node_nm": node,
            "unit": unit,
            "datatype": dtype,
            "nominal_voltage_v": UNIT_VDD,
            "energy_pj": _sig(e),
            "leakage_mw": _sig(p),
            "area_um2": _sig(a),
            "source": source,
        }
        for unit, (e, p, a) in units.items()
    ]


def _dram_rows() -> list[dict]:
    from hwcomponents_cacti.hwcomponents_cacti import _DRAM

    return [
        {"dram": name, "energy_pj_per_bit": _DRAM.type2energylatency[name][0], "source": source}
        for name, source in DRAM_SOURCES.items()
    ]


def _wire_rows() -> list[dict]:
    from hwcomponents_library.library.misc import Wire

    rows = []
    for node in NODES_NM:
        wire = Wire(1e-3, node * 1e-9)  # 1 mm
        rows.append(
            {
                "node_nm": node,
                "energy_pj_per_bit_mm": _sig(wire.read().energy * 1e12),
                "nominal_voltage_v": wire.voltage,
            }
        )
    return rows


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") if x and math.isfinite(x) else x


def _header(what: str) -> list[str]:
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}" for p in ("hwcomponents", "hwcomponents-cacti", "hwcomponents-library")
    )
    return [
        f"# {what}",
        f"# generated {datetime.date.today().isoformat()} by simulator/technology/make_tables.py "
        f"(Python {sys.version.split()[0]}; {versions}); see that file for the sources of every number",
    ]


def _write(name: str, what: str, rows: list[dict]) -> None:
    path = OUT / name
    with path.open("w", newline="") as f:
        f.write("\n".join(_header(what)) + "\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{path}: {len(rows)} rows", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="CACTI processes in parallel")
    parser.add_argument("--cache", default="/tmp/attnscope-sram-cache", help="finished SRAM parts (rerun resumes)")
    parser.add_argument("--ports", type=int, nargs="+", default=list(PORTS), help="read/write port counts to tabulate")
    parser.add_argument("--only", choices=("sram", "units", "dram", "wires", "check"), action="append")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    only = set(args.only or ("sram", "units", "dram", "wires", "check"))
    if "units" in only:
        _write("units.csv", "PE functional units: energy per action, leakage, area by node and datatype", _unit_rows())
    if "dram" in only:
        _write("dram.csv", "DRAM energy per bit by type (node-independent)", _dram_rows())
    if "wires" in only:
        _write("wires.csv", "on-chip wire energy per bit per mm by node", _wire_rows())
    if "check" in only:
        _write("sram-check.csv", "SRAM arrays between the table's capacities (checks the interpolation)", _check_rows())
    if "sram" in only:
        Path(args.cache).mkdir(parents=True, exist_ok=True)
        combos = [(w, b, p, args.cache) for p in args.ports for w in reversed(WIDTHS_BITS) for b in reversed(BANKS)]
        refine = [(w, b, n, args.cache) for w, b in REFINED_ARRAYS for n in REFINED_FAMILIES] if 1 in args.ports else []
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = [r for part in pool.map(_sram_rows, combos) for r in part]
            refined = [r for part in pool.map(_refined_rows, refine) for r in part]
        key = ("node_nm", "width_bits", "banks", "ports", "capacity_bytes")
        rows = list({tuple(r[k] for k in key): r for r in rows + refined}.values())  # a power of two: once
        rows.sort(key=lambda r: tuple(r[k] for k in key))
        what = f"SRAM arrays: per-access energy, leakage, area by node, capacity, width, banks, ports {args.ports}"
        _write("sram.csv", what, rows)


if __name__ == "__main__":
    main()
