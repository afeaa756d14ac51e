"""The fuzz corpus of issue 16: hostile and careless inputs driven through the real CLI (in process).

Every case ends in exit 2 with ``attnscope: error:`` (or argparse's usage error) naming the fault (the file,
key, flag or character), never a traceback; the few that are valid inputs end in exit 0 with a sane result.
Categories: Einsum text (binary, unicode, nesting, grammar and semantic faults), shapes and numbers, YAML of
every spec kind (architecture, device, mapping, constraints, sweep, measurement plan), stores, and
file-system faults (missing, a directory, an unwritable place).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from attnscope.cli import main
from simulator.device import DEVICES
from simulator.specs import load_arch


@dataclass(frozen=True)
class Case:
    """One input: files to write (name -> text or bytes), the argv ({d} is the folder), and what must follow."""

    id: str
    argv: tuple[str, ...]
    files: tuple[tuple[str, str | bytes], ...] = ()
    names: str = ""  # a fragment the error must contain (the fault named); "" = exit 0 expected
    code: int = 2


CASES: list[Case] = []


def case(id: str, argv: str | tuple[str, ...], names: str, files: dict[str, str | bytes] | None = None, code=2):
    args = tuple(argv.split()) if isinstance(argv, str) else argv
    CASES.append(Case(id, args, tuple((files or {}).items()), names, code))


# ---------------------------------------------------------------------------------------------- Einsum text

SHOW = "cascade show {d}/c.einsum --shape E=4,P=8"
BAD_TEXTS: dict[str, tuple[str | bytes, str]] = {
    "binary": (bytes(range(256)), "not a cascade text file"),
    "utf16": ("input Q[E,P]\n".encode("utf-16"), "not a cascade text file"),
    "nul": ("input Q[E,P]\x00\nZ[p] = sum[e] Q[e,p]\n", "c.einsum"),
    "latin1": (b"input Q[E,P] # caf\xe9\n", "not a cascade text file"),
    "empty": ("", "c.einsum"),
    "only-comments": ("# nothing here\n# at all\n", "c.einsum"),
    "unicode-name": ("input Ω[E,P]\nZ[p] = sum[e] Ω[e,p]\n", "c.einsum:1"),
    "emoji": ("input Q[E,P]\nZ[p] = sum[e] Q[e,p] * 🙂\n", "c.einsum:2"),
    "rtl-mark": ("input Q[E,P]\nZ[p] = sum[e] Q\u200f[e,p]\n", "c.einsum:2"),
    "fullwidth-digit": ("input Q[E,P]\nZ[p] = sum[e] Q[e,p] * ２\n", "c.einsum:2"),
    "deep-parens": ("input Q[E,P]\nZ[p] = " + "(" * 5000 + "Q[0,p]" + ")" * 5000 + "\n", "nested more than"),
    "deep-signs": ("input Q[E,P]\nZ[p] = " + "-" * 5000 + "Q[0,p]\n", "nested more than"),
    "deep-index": ("input Q[E,P]\nZ[p] = Q[0," + "(" * 3000 + "p" + ")" * 3000 + "]\n", "nested more than"),
    "long-line": ("input Q[E,P]\nZ[p] = " + " + ".join(["Q[0,p]"] * 20000) + "\n", "levels deep"),
    "unbalanced-open": ("input Q[E,P]\nZ[p] = (Q[0,p]\n", "c.einsum:2"),
    "unbalanced-close": ("input Q[E,P]\nZ[p] = Q[0,p])\n", "c.einsum:2"),
    "no-equals": ("input Q[E,P]\nZ[p] sum[e] Q[e,p]\n", "c.einsum:2"),
    "double-equals": ("input Q[E,P]\nZ[p] == Q[0,p]\n", "c.einsum:2"),
    "undefined-tensor": ("input Q[E,P]\nZ[p] = sum[e] K[e,p]\n", "K"),
    "implicit-reduction": ("input Q[E,P]\nZ[p] = Q[e,p]\n", "e"),
    "rank-conflict": ("input Q[E,P]\nZ[p] = sum[e] Q[p,e]\n", "c.einsum:2"),
    "duplicate-einsum": ("input Q[E,P]\nZ[p] = sum[e] Q[e,p]\nZ[p] = sum[e] Q[e,p]\n", "Z"),
    "cycle": ("input Q[E,P]\nA[p] = B[p] + sum[e] Q[e,p]\nB[p] = A[p]\n", "c.einsum"),
    "recurrence-no-init": ("input Q[M]\npartition M: M1, M0\nR[m1+1] = R[m1] + sum[m0] Q[m1*M0+m0]\n", "c.einsum"),
    "unknown-function": ("input Q[E,P]\nZ[p] = sum[e] tanhh(Q[e,p])\n", "tanhh"),
    "float-index": ("input Q[E,P]\nZ[p] = Q[1.5,p]\n", "an index must be an integer"),
    "index-out-of-range": ("input Q[E,P]\nZ[p] = Q[99,p]\n", "index 99 of Q spans 99..99 but Q has 4"),
    "negative-index": ("input Q[E,P]\nZ[p] = Q[0-1,p]\n", "index 0-1 of Q spans -1..-1"),
    "mixed-case-var": ("input Q[E,P]\nZ[p] = sum[e] Q[e,Pp]\n", "mixes cases"),
    "bad-partition": ("input Q[M]\npartition M: M\nZ[m] = Q[m]\n", "c.einsum:2"),
    "partition-unknown": ("input Q[E,P]\npartition X: X1, X0\nZ[p] = sum[e] Q[e,p]\n", "c.einsum"),
    "param-not-int": ("input Q[E,P]\nparam E = 2.5\nZ[p] = sum[e] Q[e,p]\n", "c.einsum:2"),
    "param-negative": ("input Q[E,P]\nparam E = -4\nZ[p] = sum[e] Q[e,p]\n", "c.einsum:2"),
    "density-above-one": ("input Q[E,P]\ndensity Q = 1.5\nZ[p] = sum[e] Q[e,p]\n", "c.einsum:2"),
    "where-unknown-var": ("input Q[E,P]\nZ[p] = sum[e] Q[e,p] where x < p\n", "c.einsum:2"),
    "input-twice": ("input Q[E,P], Q[E,P]\nZ[p] = sum[e] Q[e,p]\n", "Q"),
    "output-unknown": ("input Q[E,P]\noutput W\nZ[p] = sum[e] Q[e,p]\n", "W"),
    "tabs-and-cr": ("input Q[E,P]\r\n\tZ[p] = sum[e] Q[e,p]\r\n", ""),
    "trailing-garbage": ("input Q[E,P]\nZ[p] = sum[e] Q[e,p] ;;\n", "c.einsum:2"),
    "number-overflow": ("input Q[E,P]\nZ[p] = sum[e] Q[e,p] * 1e999\n", "is not a finite number"),
    "bare-number": ("input Q[E,P]\nZ[p] = 3\n", "no Einsum reads it"),
}
for name, (text, names) in BAD_TEXTS.items():
    case(f"einsum-{name}", SHOW, names, {"c.einsum": text}, code=2 if names else 0)

for name in ("binary", "deep-parens", "undefined-tensor", "cycle", "unknown-function"):  # the same via run and cost
    text, names = BAD_TEXTS[name]
    case(f"einsum-run-{name}", "cascade run {d}/c.einsum --shape M=8,P=8,E=4,F=4 --out {d}/o.npz", names,
         {"c.einsum": text})  # fmt: skip
    case(f"einsum-map-{name}", "map --arch fusemax-cloud --workload {d}/c.einsum --shape M=8,P=8,E=4,F=4", names,
         {"c.einsum": text})  # fmt: skip
    compare = "compare-attention --device h100-sxm --model llama3-8b --variants {d}/c.einsum --seq 1K --out {d}/o"
    case(f"einsum-compare-{name}", compare, names, {"c.einsum": text})

# ---------------------------------------------------------------------------------------------- shapes, numbers

SHAPES = {
    "zero": ("M=0", "must be a positive integer"),
    "negative": ("M=-1", "must be a positive integer"),
    "float": ("M=1.5", "must be a positive integer"),
    "exponent": ("M=1e3", "must be a positive integer"),
    "empty-value": ("M=", "must be a positive integer"),
    "no-name": ("=4", "is not RANK=SIZE"),
    "no-size": ("M", "is not RANK=SIZE"),
    "junk-suffix": ("M=4K4", "must be a positive integer"),
    "hex": ("M=0x10", "must be a positive integer"),
    "fullwidth": ("M=１２", "must be a positive integer"),
    "lower-case": ("m=4", "rank names are UPPER case"),
    "semicolon": ("M=4;P=4", "must be a positive integer"),
    "twice": ("M=4K,M=8K", "M is given twice"),
    "unknown-rank": ("Z=4", "unknown rank Z"),
    "not-divisible": ("M=1000,M0=256", "not divisible"),
    "double-comma": ("M=4,,P=4", "is not RANK=SIZE"),
    "huge": ("M=99999999999999999999,P=8", ""),  # exact integer counts (Python ints), nothing allocated
}
for name, (shape, names) in SHAPES.items():
    case(f"shape-{name}", ("cascade", "show", "fusemax", "--shape", shape), names, code=2 if names else 0)
    case(f"shape-cost-{name}", ("cost", "--arch", "fusemax-cloud", "--workload", "fusemax", "--shape", shape,
                                "--design", "binding"), names or "is not divisible by M0=256")  # fmt: skip

PREDICT = "predict --device h100-sxm --op sdpa --heads 8 --head-dim 64"
NUMBERS = {
    "seq-zero": ("--seq", "0"),
    "seq-negative": ("--seq", "-1"),
    "seq-float": ("--seq", "1.5"),
    "seq-word": ("--seq", "many"),
    "seq-inf": ("--seq", "1e400"),
    "seq-huge": ("--seq", "1099511627776"),
    "batch-zero": ("--batch", "0"),
    "batch-negative": ("--batch", "-3"),
}
for name, (flag, value) in NUMBERS.items():
    names = "more than NVIDIA H100" if name == "seq-huge" else flag.lstrip("-").replace("-", "_").split("_")[0]
    case(f"number-{name}", (*PREDICT.split(), "--seq", "4096", flag, value) if flag != "--seq" else
         (*PREDICT.split(), flag, value), names)  # fmt: skip
for flag in ("--heads", "--head-dim", "--kv-heads"):
    for value in ("0", "-2", "x"):
        argv = [a for a in PREDICT.split()] + ["--seq", "512"]
        if flag in argv:
            i = argv.index(flag)
            argv[i + 1] = value
        else:
            argv += [flag, value]
        case(f"number{flag}-{value}", tuple(argv), flag.lstrip("-").split("-")[0])
for flag, value, names in (
    ("--seed", "-1", "--seed"), ("--seed", "x", "--seed"), ("--budget", "0", "--budget"),
    ("--budget", "-5", "--budget"), ("--time", "-1", "time"), ("--objective", "fast", "objective"),
    ("--objective", "weighted:-1,2", "objective"), ("--levels", "dram,nowhere,pe_reg_2d", "nowhere"),
    ("--array", "pe_9d", "pe_9d"), ("--einsum", "ZZ", "ZZ"),
):  # fmt: skip
    case(f"map{flag}-{value}", ("map", "--arch", "fusemax-cloud", "--workload", "attention-3pass", "--shape",
                                "B=1,H=1,M=64,P=64,E=16,F=16", "--einsum", "QK", flag, value), names)  # fmt: skip

# ---------------------------------------------------------------------------------------------- YAML of every kind


def _arch() -> dict:
    return load_arch("flat-edge").to_dict()


def _device() -> dict:
    return yaml.safe_load(DEVICES["orin-agx"].read_text())


KINDS: dict[str, tuple[Callable[[], object], str]] = {
    "arch": (_arch, "arch show {d}/s.yaml"),
    "device": (_device, "devices {d}/s.yaml"),
    "mapping": (lambda: {"name": "m", "einsums": {}, "placement": {}, "phases": []},
                "cost --arch fusemax-cloud --workload attention-3pass --shape B=1,H=1,M=64,P=64,E=16,F=16 "
                "--mapping {d}/s.yaml"),
    "constraints": (lambda: {"targets": [{"target": "dram", "type": "temporal", "factors": {"b": 1}}]},
                    "map --arch fusemax-cloud --workload attention-3pass --shape B=1,H=1,M=64,P=64,E=16,F=16 "
                    "--einsum QK --constraints {d}/s.yaml --budget 100"),
    "sweep": (lambda: yaml.safe_load((Path(__file__).resolve().parents[2] / "examples/sweeps/fusemax-pe-buffer.yaml")
                                     .read_text()), "sweep {d}/s.yaml --store {d}/s.sqlite"),
    "plan": (lambda: {"name": "p", "cases": [{"op": "gemm", "shapes": [{"m": 64, "n": 64, "k": 64}]}]},
             "measure --sweep {d}/s.yaml --device cpu --out {d}/m.csv"),
}  # fmt: skip
BROKEN_YAML: dict[str, tuple[str | bytes, str]] = {
    "binary": (bytes(range(256)), "not a YAML text file"),
    "empty": ("", "s.yaml"),
    "null": ("null\n", "s.yaml"),
    "scalar": ("42\n", "s.yaml"),
    "list": ("- a\n- b\n", "s.yaml"),
    "tab-indent": ("a:\n\tb: 1\n", "s.yaml:2"),
    "unclosed": ("a: [1, 2\n", "s.yaml"),
    "duplicate": ("name: a\nname: b\n", "duplicate key 'name'"),
    "deep": ("a: " + "[" * 2000 + "]" * 2000 + "\n", "s.yaml"),
    "anchor-bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 9)}]\n" for c in "bcdefghi"), "s.yaml"),
    "python-tag": ("!!python/object/apply:os.system ['echo hi']\n", "s.yaml"),
}  # fmt: skip
MUTATIONS: dict[str, Callable[[dict], str]] = {  # key to mutate -> what is valid is named
    "unknown-key": lambda d: {**d, "colour": "blue"},
    "name-number": lambda d: {**d, "name": 5} if "name" in d else {**d, "levels": 5},
}
for kind, (make, command) in KINDS.items():
    for name, (text, names) in BROKEN_YAML.items():
        empty = kind == "constraints" and name in ("empty", "null")  # no constraints: documented, searches freely
        case(f"yaml-{kind}-{name}", command, names, {"s.yaml": text}, code=0 if empty else 2)
    for name, mutate in MUTATIONS.items():
        data = mutate(dict(make()))  # type: ignore[arg-type]
        case(f"yaml-{kind}-{name}", command, "s.yaml", {"s.yaml": yaml.safe_dump(data, sort_keys=False)})

FIELD_FAULTS = [  # (kind, dotted field, bad value, fragment)
    ("arch", "clock_hz", "fast", "clock_hz"), ("arch", "clock_hz", float("nan"), "clock_hz"),
    ("arch", "clock_hz", float("inf"), "clock_hz"), ("arch", "clock_hz", 1e30, "clock_hz"),
    ("arch", "word_bytes", 0, "word_bytes"), ("arch", "word_bytes", True, "word_bytes"),
    ("arch", "word_bytes", 2.5, "word_bytes"), ("arch", "levels", [], "levels"), ("arch", "arrays", {}, "arrays"),
    ("arch", "levels.0.bandwidth_bytes_per_s", 1e-30, "levels[0].bandwidth_bytes_per_s"),
    ("arch", "levels.1.capacity_words", -5, "levels[1].capacity_words"),
    ("arch", "levels.1.read_energy_pj", -1, "levels[1].read_energy_pj"),
    ("device", "sm_count", 0, "sm_count"), ("device", "sm_count", 1.5, "sm_count"),
    ("device", "clock_hz", -1, "clock_hz"), ("device", "dram_bytes_per_s", 1e-30, "dram_bytes_per_s"),
    ("device", "dram_bytes", 10**40, "dram_bytes"), ("device", "fp32_tflops", "lots", "fp32_tflops"),
    ("device", "launch_overhead_s", 100, "launch_overhead_s"), ("device", "tensor_instruction", "xmma", "xmma"),
    ("device", "id", "Bad Id!", "id"), ("device", "mma_fraction", 2, "mma_fraction"),
    ("sweep", "sampling.method", "sobol9", "sampling.method"), ("sweep", "name", "", "name"),
    ("sweep", "axes", [], "axes"), ("sweep", "arch", "tpu-v9", "tpu-v9"),
]  # fmt: skip


def _set(data: dict, dotted: str, value: object) -> dict:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    return data


for kind, dotted, value, names in FIELD_FAULTS:
    make, command = KINDS[kind]
    text = yaml.safe_dump(_set(make(), dotted, value), sort_keys=False)  # type: ignore[arg-type]
    case(f"field-{kind}-{dotted}-{value!r}", command, names, {"s.yaml": text})

# ---------------------------------------------------------------------------------------------- stores

STORES: dict[str, tuple[str | bytes | None, str]] = {
    "text-file": ("not a database\n", "s.sqlite"),
    "empty-file": (b"", "s.sqlite"),
    "random-bytes": (bytes(range(256)) * 64, "s.sqlite"),
    "bad-header": (b"SQLite format 3\x00" + b"\xff" * 2000, "s.sqlite"),
    "missing": (None, "s.sqlite"),
}
for name, (content, names) in STORES.items():
    files = {} if content is None else {"s.sqlite": content}
    case(f"store-query-{name}", "query {d}/s.sqlite", names, files)
    case(f"store-pareto-{name}", "pareto {d}/s.sqlite --x area_mm2 --y latency_s", names, files)
    case(f"store-plot-{name}", "plot {d}/s.sqlite --x seq_len --y latency_s --out {d}/p.png", names, files)
case("store-foreign-sqlite", "pareto {d}/f.sqlite --x a --y b", "f.sqlite", {"f.sqlite": "@sqlite"})
case("store-query-write", ("query", "{d}/f.sqlite", "DROP TABLE t"), "", {"f.sqlite": "@sqlite"}, code=2)
case("store-query-bad-sql", ("query", "{d}/f.sqlite", "SELEC 1"), "", {"f.sqlite": "@sqlite"}, code=2)

# ---------------------------------------------------------------------------------------------- file system

for flag, command in (
    ("--arch", "cost --arch {p} --workload attention-3pass --design flat"),
    ("--device", "predict --device {p} --op gemm --m 64 --n 64 --k 64"),
    ("--workload", "map --arch fusemax-cloud --workload {p} --shape M=8"),
    ("--mapping", "cost --arch fusemax-cloud --workload attention-3pass --mapping {p}"),
    ("--constraints", "map --arch fusemax-cloud --workload gemm --shape T=64,K=64,N=64 --einsum C --constraints {p}"),
    ("sweep", "sweep {p} --store {d}/s.sqlite"),
    ("--inputs", "cascade run attention-1pass --shape B=1,H=1,M=8,P=8,E=4,F=4 --inputs {p} --out {d}/o.npz"),
    ("--variants", "compare-attention --device h100-sxm --model llama3-8b --variants {p} --seq 1K --out {d}/o"),
):  # fmt: skip
    for what, path in (("missing", "{d}/nope.yaml"), ("directory", "{d}/adir.yaml")):
        p = path if flag != "--workload" and flag != "--variants" else path.replace(".yaml", ".einsum")
        p = p if flag != "--inputs" else p.replace(".yaml", ".npz")
        files = {p.rsplit("/", 1)[1] + "/": ""} if what == "directory" else {}
        case(f"fs-{flag.lstrip('-')}-{what}", command.replace("{p}", p), p.rsplit("/", 1)[1], files)
for name, command in (
    ("run-out", "cascade run attention-1pass --shape B=1,H=1,M=8,P=8,E=4,F=4 --out /proc/attnscope-no/o.npz"),
    ("reproduce-out", "reproduce fusemax --models BERT --seqs 1K --out /proc/attnscope-no --no-figures --quiet"),
    ("roofline-out", "roofline --device h100-sxm --model llama3-8b --seq 512 --out /proc/attnscope-no"),
    ("compare-out", "compare-attention --device h100-sxm --model llama3-8b --variants attention-1pass --seq 1K "
                    "--out /proc/attnscope-no"),
    ("save-mapping", "cost --arch fusemax-cloud --workload fusemax --shape B=1,H=1,M=1K,E=64,F=64 --design binding "
                     "--save-mapping /proc/attnscope-no.yaml"),
    ("sweep-store", "sweep examples/sweeps/fusemax-pe-buffer.yaml --store /proc/attnscope-no.sqlite"),
    ("query-csv", "query {d}/s.sqlite --csv /proc/attnscope-no.csv"),
):  # fmt: skip
    files = {"s.sqlite": "@store"} if "{d}/s.sqlite" in command else {}
    case(f"fs-unwritable-{name}", command, "/proc/attnscope-no", files)


# ---------------------------------------------------------------------------------------------- the test


def _write(folder: Path, files: tuple[tuple[str, str | bytes], ...]) -> None:
    for name, content in files:
        path = folder / name
        if name.endswith("/"):
            path.mkdir()
        elif content == "@store":  # an empty attnscope store
            from mappers.sweep.store import Store

            with Store.open(path):
                pass
        elif content == "@sqlite":  # a valid SQLite file that is not an attnscope store
            with sqlite3.connect(path) as conn:
                conn.execute("CREATE TABLE t (x)")
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 250
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_corpus_case(c: Case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    _write(tmp_path, c.files)
    argv = [a.replace("{d}", str(tmp_path)) for a in c.argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # pragma: no cover - main turns these into codes
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == c.code, err[-2000:]
    if c.code == 2:
        assert "error:" in err
        assert c.names.replace("{d}", str(tmp_path)) in err, err[-2000:]
