"""Softmax attention written as cascades of Extended Einsums.

Ranks: B batch, H heads, M key/value positions, P query positions, E Q/K head dim, F V head dim.
Inputs ``Q[B,H,E,P]``, ``K[B,H,E,M]``, ``V[B,H,F,M]``; output ``AV[B,H,F,P] = softmax_M(Q.K) . V`` with no
1/sqrt(E) scale (fold it into Q, as the FuseMax study does). Tiled cascades split ``M = M1 * M0`` and read
K and V through the index ``m1*M0+m0`` (the study's BK/BV re-indexing).

Causal variants mask scores with ``m <= p + M - P``: query p sees the keys up to its own position when the
queries are the last P of the M positions (M = P for prefill).
"""

from __future__ import annotations

import re

from einsum.cascade import Cascade
from workloads.registry import CascadeEntry, register_cascade

_IO = "input Q[B,H,E,P], K[B,H,E,M], V[B,H,F,M]"

THREE_PASS = f"""\
# Numerically stable softmax in three passes over M: max, then exp + sum, then normalise and multiply by V.
{_IO}
QK[b,h,m,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m]
GM[b,h,p] = max[m] QK[b,h,m,p]
SN[b,h,m,p] = exp(QK[b,h,m,p] - GM[b,h,p])
SD[b,h,p] = sum[m] SN[b,h,m,p]
A[b,h,m,p] = SN[b,h,m,p] / SD[b,h,p]
AV[b,h,f,p] = sum[m] A[b,h,m,p] * V[b,h,f,m]
output AV
"""

TWO_PASS = f"""\
# Two passes over M: the global max first, then exp, sum and the un-normalised product with V together;
# the division by the denominator iterates only (f, p).
{_IO}
QK[b,h,m,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m]
GM[b,h,p] = max[m] QK[b,h,m,p]
SN[b,h,m,p] = exp(QK[b,h,m,p] - GM[b,h,p])
SD[b,h,p] = sum[m] SN[b,h,m,p]
SNV[b,h,f,p] = sum[m] SN[b,h,m,p] * V[b,h,f,m]
AV[b,h,f,p] = SNV[b,h,f,p] / SD[b,h,p]
output AV
"""

ONE_PASS = f"""\
# One pass over M in tiles of M0 (online softmax as in FlashAttention-2): a running max RM, a running
# denominator RL and a running output RO are rescaled by C = exp(old max - new max) after every tile.
{_IO}
partition M = M1 * M0
init RM[b,h,0,p] = -inf
init RL[b,h,0,p] = 0
init RO[b,h,0,f,p] = 0
QK[b,h,m1,m0,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m1*M0+m0]
LM[b,h,m1,p] = max[m0] QK[b,h,m1,m0,p]
RM[b,h,m1+1,p] = max(RM[b,h,m1,p], LM[b,h,m1,p])
PS[b,h,m1,m0,p] = exp(QK[b,h,m1,m0,p] - RM[b,h,m1+1,p])
C[b,h,m1,p] = exp(RM[b,h,m1,p] - RM[b,h,m1+1,p])
LL[b,h,m1,p] = sum[m0] PS[b,h,m1,m0,p]
RL[b,h,m1+1,p] = RL[b,h,m1,p] * C[b,h,m1,p] + LL[b,h,m1,p]
PV[b,h,m1,f,p] = sum[m0] PS[b,h,m1,m0,p] * V[b,h,f,m1*M0+m0]
RO[b,h,m1+1,f,p] = RO[b,h,m1,f,p] * C[b,h,m1,p] + PV[b,h,m1,f,p]
AV[b,h,f,p] = RO[b,h,M1,f,p] / RL[b,h,M1,p]
output AV
"""

FUSEMAX = f"""\
# The FuseMax 1-pass cascade (Nayak et al., MICRO 2024), its 12 Einsums as in the study: local max LM of
# each M0 tile, running max RM, local numerator SLN and denominator SLD, SLNV = SLN . V, correction PRM for
# the previous max, and the running denominator RD and numerator RNV; AV divides once per query.
{_IO}
partition M = M1 * M0
init RM[b,h,0,p] = -inf
init RD[b,h,0,p] = 0
init RNV[b,h,0,f,p] = 0
QK[b,h,m1,m0,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m1*M0+m0]
LM[b,h,m1,p] = max[m0] QK[b,h,m1,m0,p]
RM[b,h,m1+1,p] = max(RM[b,h,m1,p], LM[b,h,m1,p])
SLN[b,h,m1,m0,p] = exp(QK[b,h,m1,m0,p] - RM[b,h,m1+1,p])
SLD[b,h,m1,p] = sum[m0] SLN[b,h,m1,m0,p]
SLNV[b,h,m1,f,p] = sum[m0] SLN[b,h,m1,m0,p] * V[b,h,f,m1*M0+m0]
PRM[b,h,m1,p] = exp(RM[b,h,m1,p] - RM[b,h,m1+1,p])
SPD[b,h,m1,p] = RD[b,h,m1,p] * PRM[b,h,m1,p]
RD[b,h,m1+1,p] = SPD[b,h,m1,p] + SLD[b,h,m1,p]
SPNV[b,h,m1,f,p] = RNV[b,h,m1,f,p] * PRM[b,h,m1,p]
RNV[b,h,m1+1,f,p] = SPNV[b,h,m1,f,p] + SLNV[b,h,m1,f,p]
AV[b,h,f,p] = RNV[b,h,M1,f,p] / RD[b,h,M1,p]
output AV
"""


def causal(text: str, position: str, scores: str = "QK") -> str:
    """The causal form of a cascade: a masking Einsum ``M<scores>`` follows the one that writes ``scores``
    (masked scores become -inf, so exp gives 0) and every other reader of the scores reads the masked ones.
    ``position`` is the key position as an index expression of the score's variables (``m1*M0+m0``).
    """
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{scores}["))
    lhs = lines[at].split("=", 1)[0].strip()
    mask = f"M{lhs} = where({position} <= p + M - P, {lhs}, -inf)"
    reader = re.compile(rf"\b{scores}\[")
    out = lines[: at + 1] + [mask] + [reader.sub(f"M{scores}[", line) for line in lines[at + 1 :]]
    out[0] = out[0] + " Causal: scores with m > p + M - P are masked."
    return "\n".join(out) + "\n"


def attention_sizes(sizes: dict[str, int], cascade: Cascade) -> dict[str, int]:
    """Defaults: P = M when not given; M0 = the largest divisor of M not above 256 (the study's tile)."""
    out = dict(sizes)
    out.setdefault("P", out["M"])
    if "M" in cascade.partitions and "M0" not in out and "M1" not in out:
        m = out["M"]
        out["M0"] = max(d for d in range(1, min(256, m) + 1) if m % d == 0)
    return out


_BASE = {"B": 1, "H": 1, "M": 1024, "E": 64, "F": 64}
_SOURCES = {
    "attention-3pass": "Vaswani et al. 2017 (stable softmax); FuseMax study §A.1",
    "attention-2pass": "FuseMax study §A.2 (deferred normalisation)",
    "attention-1pass": "Milakov & Gimelshein 2018 (online softmax); Dao 2023 (FlashAttention-2)",
    "fusemax": "Nayak et al., FuseMax, MICRO 2024, §A.3 of the study notes",
}
_SUMMARIES = {
    "attention-3pass": "stable softmax attention, three passes over M (max; exp+sum; divide+AV)",
    "attention-2pass": "softmax attention with deferred normalisation, two passes over M",
    "attention-1pass": "online softmax in M0 tiles (FlashAttention-2 style), one pass over M",
    "fusemax": "the 12-Einsum FuseMax 1-pass cascade",
}

for _name, _text, _position in (
    ("attention-3pass", THREE_PASS, "m"),
    ("attention-2pass", TWO_PASS, "m"),
    ("attention-1pass", ONE_PASS, "m1*M0+m0"),
    ("fusemax", FUSEMAX, "m1*M0+m0"),
):
    for _suffix, _body in (("", _text), ("-causal", causal(_text, _position))):
        register_cascade(
            CascadeEntry(
                name=_name + _suffix,
                text=_body,
                summary=_SUMMARIES[_name] + (", causal mask" if _suffix else ""),
                source=_SOURCES[_name],
                defaults=attention_sizes,
                base_sizes=_BASE,
                tags=("attention", "softmax") + (("causal",) if _suffix else ()),
            )
        )
