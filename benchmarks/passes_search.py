"""Multi-pass fusion search from the cascade alone, against the FuseMax study's FLAT rows (attn-flat.csv).

For every BERT/TrXL/T5 row of ``attn-flat.csv``: the 3-pass cascade (``get_cascade("attention-3pass")``)
on ``load_arch("flat-cloud")`` (the corrected model; the artifact's compat setting changes energies, not
these latencies), searched by :func:`mappers.cascade_search.search_passes` in the study's FLAT space (its row
blocks 1, 2, 4 x the array width, FLAT's pairing of hand-offs and dataflows, the study's sizing rule; the
default search also chooses blocks, bindings and dataflows, and beats these rows). Printed
as Markdown: the best design and its latency against the published one, FLAT's own policy in the same
space, and, per BERT row, the wider space (each contraction's dataflow free, ``pairing="any"``) and the
2-pass cascade on the same architecture.

Run::

    .venv/bin/python benchmarks/passes_search.py > /tmp/passes.md
"""

from __future__ import annotations

import sys
import time

from einsum.lower import lower
from mappers.cascade_search import search_passes
from simulator.specs import load_arch
from validate.fusemax.report import read_reference, reference_dir
from validate.fusemax.study import FLAT_ROW_BLOCKS, SEQ_LENS, attention_sizes
from workloads import get_cascade

MODELS = ("BERT", "TrXL", "T5")


def delta(ours: float, published: float) -> str:
    """Relative difference, in percent with a sign."""
    return f"{100 * (ours / published - 1):+.2f}%"


def main() -> int:
    published = read_reference(reference_dir()).get("attn-flat")
    if not published:
        print("attn-flat.csv not found: set ATTNSCOPE_SHARED or put shared/ beside the checkout", file=sys.stderr)
        return 2
    arch = load_arch("flat-cloud")
    three = get_cascade("attention-3pass").cascade
    two = get_cascade("attention-2pass").cascade
    print("| model | seq | design found (best latency, then energy) | latency (s) | attn-flat.csv (s) | Δ "
          "| FLAT policy Δ | designs | search (s) |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    wide = []
    for model in MODELS:
        for seq, n in SEQ_LENS.items():
            ref = published[model, seq]["latency"]
            lowered = lower(three, attention_sizes(model, n))
            start = time.perf_counter()
            found = search_passes(lowered, arch, row_blocks=FLAT_ROW_BLOCKS, pairing="flat", policy="study")
            seconds = time.perf_counter() - start
            best, policy = found["best"], found["flat_policy"]
            print(
                f"| {model} | {seq} | {best.description} ({best.notes[0]}) | {best.cost.latency_s:.6g} | {ref:.6g} "
                f"| {delta(best.cost.latency_s, ref)} | {delta(policy.cost.latency_s, ref)} | {best.candidates} "
                f"| {seconds:.2f} |"
            )
            if model == "BERT":
                study = {"row_blocks": FLAT_ROW_BLOCKS, "policy": "study"}
                anyway = search_passes(lowered, arch, pairing="any", **study)["best"]
                two_pass = search_passes(lower(two, attention_sizes(model, n)), arch, pairing="flat", **study)["best"]
                wide.append((seq, ref, anyway, two_pass))
    print()
    print("| BERT seq | wider space (`pairing=\"any\"`): best design | latency Δ | 2-pass cascade: best design "
          "| latency Δ |")  # fmt: skip
    print("|---|---|---:|---|---:|")
    for seq, ref, anyway, two_pass in wide:
        print(
            f"| {seq} | {anyway.description} | {delta(anyway.cost.latency_s, ref)} | {two_pass.description} "
            f"| {delta(two_pass.cost.latency_s, ref)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
