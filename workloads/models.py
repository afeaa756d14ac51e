"""Transformer model shapes and the Einsums of one layer.

Shapes (B, D, E, F, H, S) of BERT, TrXL and T5 are the FuseMax study's (its ``flat_validation.csv`` cloud
rows); XLM is the study's fourth model. One layer is: Q/K/V projections of the tokens, an attention
cascade, the output projection Z and the two FFN matmuls. As in the study there is no layer norm,
activation or residual; K and V project the same tokens as Q (self-attention, M = P).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from einsum.cascade import Cascade
from einsum.errors import RegistryError
from workloads.registry import get_cascade


@dataclass(frozen=True)
class ModelShape:
    """Per-layer shape of a transformer: batch, model width, head dims, heads and FFN width."""

    name: str
    B: int  # batch
    D: int  # model width
    E: int  # per-head Q/K dim
    F: int  # per-head V dim
    H: int  # heads
    S: int  # FFN hidden width
    source: str

    def sizes(self, seq_len: int) -> dict[str, int]:
        """Rank sizes for sequence length ``seq_len`` (M = P = seq_len)."""
        return {
            "B": self.B,
            "D": self.D,
            "E": self.E,
            "F": self.F,
            "H": self.H,
            "S": self.S,
            "M": seq_len,
            "P": seq_len,
        }

    def layer_matmuls(self, seq_len: int) -> dict[str, tuple[int, int, int]]:
        """The six per-layer matmuls as (tokens, reduction K, outputs N), in the study's order."""
        tokens = self.B * seq_len
        return {
            "Q": (tokens, self.D, self.E * self.H),
            "K": (tokens, self.D, self.E * self.H),
            "V": (tokens, self.D, self.F * self.H),
            "Z": (tokens, self.F * self.H, self.D),
            "FFN1": (tokens, self.D, self.S),
            "FFN2": (tokens, self.S, self.D),
        }


_STUDY = "FuseMax study (Nayak et al., MICRO 2024), flat_validation.csv cloud rows"
MODELS: dict[str, ModelShape] = {
    m.name: m
    for m in (
        ModelShape("BERT", 64, 768, 64, 64, 12, 3072, _STUDY + " (BERT-Base)"),
        ModelShape("TrXL", 64, 1024, 64, 64, 16, 4096, _STUDY + " (Transformer-XL)"),
        ModelShape("T5", 64, 512, 64, 64, 8, 2048, _STUDY + " (T5-small)"),
        ModelShape("XLM", 64, 2048, 128, 128, 16, 8192, "FuseMax study, XLM shape"),
    )
}


def get_model(name: str) -> ModelShape:
    """Look up a model shape; a miss lists the known models."""
    try:
        return MODELS[name]
    except KeyError:
        raise RegistryError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


PROJECTIONS = """\
input X[B,P,D], XM[B,M,D], WQ[D,H,E], WK[D,H,E], WV[D,H,F], WZ[H,F,D], W1[D,S], W2[S,D]
Q[b,h,e,p] = sum[d] X[b,p,d] * WQ[d,h,e]
K[b,h,e,m] = sum[d] XM[b,m,d] * WK[d,h,e]
V[b,h,f,m] = sum[d] XM[b,m,d] * WV[d,h,f]
"""

OUTPUT_AND_FFN = """\
Z[b,p,d] = sum[h,f] AV[b,h,f,p] * WZ[h,f,d]
FFN1[b,p,s] = sum[d] Z[b,p,d] * W1[d,s]
FFN2[b,p,d] = sum[s] FFN1[b,p,s] * W2[s,d]
output FFN2
"""


def layer_text(attention: str = "attention-3pass") -> str:
    """Cascade text of one layer around a registered attention cascade (its Q, K, V become projections).

    ``XM`` holds the key/value tokens (the same array as ``X`` for self-attention).
    """
    body = [
        line for line in get_cascade(attention).text.splitlines() if not line.startswith(("input ", "output ", "#"))
    ]
    header = f"# One transformer layer with {attention}: projections, attention, output projection, FFN."
    return "\n".join([header, PROJECTIONS.rstrip(), *body, OUTPUT_AND_FFN.rstrip()]) + "\n"


def layer_cascade(attention: str = "attention-3pass") -> Cascade:
    """One layer as a validated cascade."""
    name = f"layer-{re.sub(r'[^a-z0-9-]', '', attention)}"
    return Cascade.from_text(layer_text(attention), name=name, origin=f"<{name}>")
