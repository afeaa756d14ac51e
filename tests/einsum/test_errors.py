"""Malformed Einsum texts: each gives a message fragment and a caret at the offending column."""

import re

import pytest

from attnscope.cli import main
from einsum.cascade import Cascade
from einsum.errors import CascadeError, EinsumSyntaxError, LocatedError

# (text, fragment of the message, line, 1-based column of the caret)
MALFORMED = [
    ("input Q[M,E]\nX[m] = sum[E] Q[m,e]", "is not a rank variable", 2, 12),
    ("input Q[M,E]\nX[M] = sum[e] Q[M,e]", "is a rank size, not a variable", 2, 3),
    ("input Q[m,e]\nX[m] = sum[e] Q[m,e]", "'m' is not a rank name: ranks are UPPER case", 1, 9),
    ("input Q[M,E]\nX[m] = Q[m,e]", "does not appear in the output X; reduce it explicitly", 2, 12),
    ("input Q[M,E]\nX[m] = sum[e] Q[m,e] $ 2", "unexpected character '$'", 2, 22),
    ("input Q[M,E]\nX[m] = sum[e] Q[m,e] *", "expected a tensor access, a number or a function call", 2, 23),
    ("input Q[M,E]\nX[m] = sum[e] Q[m,e", "expected ',' or ']' in the index list", 2, 20),
    ("input Q[M,E]\nX[m] = sum[e] foo(Q[m,e])", "unknown function 'foo'; known functions: exp", 2, 15),
    ("input Q[M,E]\nX[m] = exp(Q[m,0], Q[m,1])", "exp() takes 1 argument, got 2", 2, 8),
    ("input Q[M,E]\nX[m] = sum[e] Q[m,e]\nX[m] = sum[e] Q[m,e]", "X is already written on line 2", 3, 1),
    ("input Q[M,E]\nX[m] = sum[e] Q[e,m]", "Q has rank M at position 1, but the index 'e' walks rank E", 2, 17),
    ("input Q[M,E]\nA[m] = B[m] + sum[e] Q[m,e]", "must come first on the right-hand side", 2, 15),
    ("input Q[M]\nA[m] = B[m] + Q[m]\nB[m] = A[m] * 2", "cycle A -> B -> A is not a recurrence", 2, 1),
    ("input Q[M]\nR[m+1] = max(R[m], Q[m])", "needs its initial value: add `init R[0] = ...`", 2, 1),
    ("input Q[M]\npartition M = M1 * M0\nX[m1,m0] = Q[m1*m0]", "multiplies variables m0 and m1", 3, 14),
    ("input Q[M,P]\nX[m,p] = where(m*p < 3, Q[m,p], 0)", "'m*p' multiplies variables m and p", 2, 16),
    ("input Q[M,E]\npartition M = M1 * M0\nX[m1,m0] = Q[m1*M0+m0,m0]", "the index 'm0' walks rank M0", 3, 23),
    ("input Q[M,E]\nX[m] = sum[m,e] Q[m,e]", "m is reduced but also indexes the output X", 2, 12),
    ("input Q[M,E]\nX[m] = sum[e] Q[m,e] Q[m,e]", "one statement per line", 2, 22),
    ("input Q[M,E]\nX[m] = sum[e] Q[mE,e]", "'mE' mixes cases", 2, 17),
    ("input Q[M]\nX[m] = where(m, Q[m], 0)", "expected a comparison", 2, 15),
    ("inputs Q[M]\nX[m] = Q[m]", "unknown statement 'inputs'", 1, 1),
    ("input Q[M], K[M]\nX[m] = Q[m]", "input K is declared but no Einsum reads it", 1, 13),
    ("input Q[M]\nX[m] = Q[m] + Y", "expected '[' after tensor 'Y'", 2, 15),
    ("input Q[M]\nX[m] = sum[p] Q[m]", "p is reduced but does not appear", 2, 12),
    ("input Q[M]\nX[m] = Q[m] + Y[m]", "tensor Y is neither an input nor written by any Einsum", 2, 15),
    ("input Q[M]\nX[m] = Q[m, 1.5]", "an index must be an integer", 2, 13),
    ("input Q[M]\ninit X[0] = 0\nX[m] = Q[m]", "only recurrences over an iterative rank take an initial value", 2, 1),
    ("input Q[M]\ninit R[1] = 0\nR[m+1] = R[m] + Q[m]", "sets step 0 of iterative rank M: write 0 here", 2, 8),
    ("input Q[M]\nX[m] = Q[M]", "only an iterative rank has that step", 2, 10),
    ("input Q[M]\npartition M = M1\nX[m] = Q[m]", "splits a rank into two or more ranks", 2, 17),
    ("input Q[M]\nX[m,m] = Q[m]", "variable m appears twice in the output X", 2, 5),
    ("input Q[M,P]\nX[m] = sum[p] Q[m+p,p]", "mixes variables of unrelated ranks", 2, 17),
    ("# only a comment\n", "no Einsum found", 1, 1),
]


@pytest.mark.parametrize(("text", "fragment", "line", "col"), MALFORMED)
def test_message_and_caret(text, fragment, line, col):
    with pytest.raises(LocatedError) as info:
        Cascade.from_text(text, name="bad")
    message = str(info.value)
    assert fragment in message
    assert re.search(rf":{line}:{col}: ", message), message
    caret_line = message.splitlines()[-1]
    assert caret_line.index("^") - 4 == col - 1, message


def test_at_least_fifteen_malformed_texts():
    assert len(MALFORMED) >= 15


def test_syntax_and_semantic_errors_share_one_family():
    assert issubclass(EinsumSyntaxError, LocatedError) and issubclass(CascadeError, LocatedError)


@pytest.mark.parametrize(("text", "fragment", "line", "col"), MALFORMED)
def test_cli_exits_2_without_traceback(text, fragment, line, col, tmp_path, capsys):
    path = tmp_path / "bad.einsum"
    path.write_text(text)
    assert main(["cascade", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err
    assert f"{path}:{line}:{col}:" in err
