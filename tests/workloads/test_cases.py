"""Cases: a cascade at complete sizes with its declared parameters; model shapes bound by rank conventions."""

import doctest

import pytest

import workloads.cases as cases_module
from einsum.errors import AttnscopeError, ShapeError
from workloads import CASCADES
from workloads.cases import PARAMETERS, accepted, case_for_model, load_workload, make_case

LLAMA = {"batch": 1, "heads": 32, "kv_heads": 8, "head_dim": 128}


def test_module_doctests():
    assert doctest.testmod(cases_module).failed == 0


def test_parameters_are_the_sizes_the_text_declares():
    case = make_case("streaming-llm", {"M": 4096})
    assert (case.sizes["SINK"], case.sizes["W"]) == (4, 1020)  # `param SINK = 4`, `param W = 1020`
    other = make_case("streaming-llm", {"M": 4096}, params={"window": 256, "sinks": 8})
    assert (other.sizes["SINK"], other.sizes["W"]) == (8, 256)
    assert make_case("streaming-llm", {"M": 4096, "W": 256}).sizes["W"] == 256  # by rank, as a shape


def test_a_block_mask_declares_its_density_and_takes_another():
    assert make_case("moba", {"M": 4096}).density == {"BM": 0.25}
    assert make_case("moba", {"M": 4096}, params={"density": 0.1}).density == {"BM": 0.1}


@pytest.mark.parametrize(
    ("workload", "params", "fragment"),
    [
        ("attention-1pass", {"window": 128}, "unknown parameter 'window'; it takes block"),
        ("sliding-window", {"window": 0}, "must be a positive integer"),
        ("sliding-window", {"window": 1.5}, "must be a positive integer"),
        ("attention-1pass", {"density": 0.5}, "takes no 'density'"),
        ("moba", {"density": 1.5}, "fraction in (0, 1]"),
        ("gqa", {"retrieval_fraction": 0.5}, "no rank HS"),
        ("duo-attention", {"retrieval_fraction": 0}, "in (0, 1]"),
    ],
)
def test_bad_parameters_name_the_parameter_and_what_is_valid(workload, params, fragment):
    with pytest.raises(ShapeError, match=None) as info:
        make_case(workload, {"M": 1024}, params=params)
    assert fragment in str(info.value)


def test_a_parameter_contradicting_the_shape_is_an_error():
    with pytest.raises(ShapeError, match="contradicts"):
        make_case("sliding-window", {"M": 1024, "W": 64}, params={"window": 128})


def test_model_binding_follows_the_rank_conventions():
    gqa = case_for_model("gqa", seq=4096, **LLAMA)
    assert (gqa.seq_q, gqa.seq_kv, gqa.heads, gqa.kv_heads, gqa.head_dim) == (4096, 4096, 32, 8, 128)
    mqa = case_for_model("mqa", seq=4096, **LLAMA)
    assert mqa.kv_heads == 1  # the text's K[B,E,M] has no head rank
    decode = case_for_model("decode", seq=4096, **LLAMA)
    assert (decode.seq_q, decode.seq_kv, decode.kv_heads) == (1, 4096, 8)  # `param P = 1`: a decode step
    duo = case_for_model("duo-attention", seq=4096, **LLAMA)
    assert (duo.heads, duo.sizes["H"], duo.sizes["HS"]) == (32, 8, 24)  # the registry's 2 : 6 head mix
    assert duo.kv_heads == 32


def test_every_conventional_word_names_a_rank_some_registered_cascade_has():
    ranks = {r for e in CASCADES.values() for r in e.cascade.ranks}
    assert set(PARAMETERS.values()) <= ranks


def test_accepted_reads_the_cascade_not_its_name():
    assert accepted("sliding-window", "window") and not accepted("attention-1pass", "window")
    assert accepted("moba", "density") and accepted("duo-attention", "retrieval_fraction")


def test_files_are_workloads_and_binary_files_are_refused(tmp_path):
    path = tmp_path / "mine.einsum"
    path.write_text(
        "# a windowed attention written by hand\n"
        "input Q[B,H,E,P], K[B,H,E,M], V[B,H,F,M]\nparam W = 64\n"
        "S[b,h,m,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m]\n"
        "T[b,h,m,p] = where(m > p + M - P - W, S[b,h,m,p], -inf)\n"
        "AV[b,h,f,p] = sum[m] exp(T[b,h,m,p]) * V[b,h,f,m]\n"
    )
    w = load_workload(str(path))
    assert (w.name, w.summary) == ("mine", "a windowed attention written by hand")
    assert case_for_model(w, seq=1024, **LLAMA).sizes["W"] == 64
    blob = tmp_path / "blob.einsum"
    blob.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(AttnscopeError, match="not a cascade text file"):
        load_workload(str(blob))
