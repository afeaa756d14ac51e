"""`param` and `density` statements: declared sizes and mask densities, and their errors."""

import pytest

from einsum.cascade import Cascade
from einsum.errors import CascadeError, EinsumSyntaxError

HEAD = "input Q[B,E,P], K[B,E,M], BM[B,M]\nS[b,m,p] = sum[e] Q[b,e,p] * K[b,e,m] * BM[b,m]\n"
WINDOW = "T[b,m,p] = where(m > p - W, S[b,m,p], 0)\n"


def test_declared_sizes_fill_what_is_neither_given_nor_derivable():
    c = Cascade.from_text(HEAD + WINDOW + "param W = 16\ndensity BM = 0.5\n")
    assert c.params == {"W": 16} and c.densities == {"BM": 0.5}
    assert c.rank_sizes({"B": 1, "E": 2, "P": 8, "M": 32})["W"] == 16
    assert c.rank_sizes({"B": 1, "E": 2, "P": 8, "M": 32, "W": 3})["W"] == 3


def test_a_declared_part_yields_to_given_sizes_that_determine_it():
    text = "input A[M]\npartition M = M1 * M0\nparam M0 = 4\nB[m1] = sum[m0] A[m1*M0+m0]\n"
    c = Cascade.from_text(text)
    assert c.rank_sizes({"M": 32})["M0"] == 4
    assert c.rank_sizes({"M": 32, "M1": 4})["M0"] == 8  # derived from the given sizes, not the declaration


@pytest.mark.parametrize(
    ("line", "error", "fragment"),
    [
        ("param w = 3", EinsumSyntaxError, "not a rank name"),
        ("param Z = 3", CascadeError, "Z is not a rank of this cascade"),
        ("param W = 0", EinsumSyntaxError, "positive integer"),
        ("param W = 2.5", EinsumSyntaxError, "positive integer"),
        ("density BM = 2", EinsumSyntaxError, "in (0, 1]"),
        ("density XX = 0.5", CascadeError, "only an input mask has a density"),
        ("param W = 3\nparam W = 4", CascadeError, "W has two param statements"),
    ],
)
def test_bad_declarations_point_at_the_fault(line, error, fragment):
    with pytest.raises(error) as info:
        Cascade.from_text(HEAD + WINDOW + line + "\n")
    assert fragment in str(info.value)
