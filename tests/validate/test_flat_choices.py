"""FLAT's choices found by attnscope's search, checked against FLAT's own configuration file (test oracle only).

Tensor placements may differ where they change nothing measurable (e.g. AV kept on chip at 64K by FLAT, streamed
by our search at equal latency and lower energy); stationarity, fusion granularity and the row block must agree.
"""

import csv

import pytest

from einsum.lower import lower
from mappers.flat import search_flat
from validate.fusemax.report import reference_dir
from validate.fusemax.study import FLAT_ROW_BLOCKS, SEQ_LENS, attention_sizes, study_arch
from workloads import get_cascade

REF = reference_dir()
pytestmark = pytest.mark.skipif(REF is None, reason="shared/reference/fusemax not found beside the checkout")


def flat_rows():
    with (REF / "flat_validation_cloud.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["seq_len"] in SEQ_LENS and r["models"] in ("BERT", "TrXL", "T5")]


@pytest.mark.parametrize("row", flat_rows() if REF else [], ids=lambda r: f"{r['models']}-{r['seq_len']}")
def test_search_finds_flats_choice(row):
    lowered = lower(get_cascade("attention-3pass").cascade, attention_sizes(row["models"], SEQ_LENS[row["seq_len"]]))
    mapping, cost, _ = search_flat(lowered, study_arch("flat", True), row_blocks=FLAT_ROW_BLOCKS, policy="study")
    note = mapping.notes[0]
    assert note.startswith(f"FLAT: {row['QK_stationarity']}-stationary"), note
    if row["fusion_granularity"] == "head":
        assert ", head," in note
    else:
        assert f"row block P1={row['P1']}" in note
    assert cost.spill_fraction[0] == pytest.approx(float(row["proportion_spilled"]), rel=0.01, abs=1e-9)
