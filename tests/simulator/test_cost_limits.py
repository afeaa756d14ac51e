"""Issue 14: every on-chip limit honoured by the cascade cost model, and infeasible designs reported as such.

Named after the issue's acceptance points: (3) a slow global buffer makes FuseMax bandwidth-bound with the latency
a hand calculation gives; (8) over random architectures the latency is at least the compute bound and every
level's bandwidth bound, no feasible design exceeds a capacity, and an infeasible design says why.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einsum.lower import lower
from mappers.cascade_search import search_fused
from mappers.fusemax import fusemax_family
from simulator.cost import einsum_nest, evaluate_cascade, phase_occupancy, shared_buffer, staging_occupancy
from simulator.specs import load_arch, with_overrides
from workloads import get_cascade

GIB = 2**30


def bert(seq, batch=64):
    return {"B": batch, "H": 12, "E": 64, "F": 64, "M": seq, "P": seq}


def test_acceptance_3_slow_global_buffer_makes_fusemax_bandwidth_bound_as_by_hand():
    arch = with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.bandwidth_bytes_per_s": GIB})
    design = fusemax_family("binding", arch, bert(4096))
    b, h, m, p, e, f = 64, 12, 4096, 4096, 64, 64
    n = b * h * m * p  # scores
    n1 = n / 256  # score tiles' rows: one per (query, 256-key tile)
    # Global-buffer words of the binding design (P1 = 16 holds the whole query rank, P2 = 1), by hand:
    # reads - Q, K and V stream into the arrays once per (256 x 256) score tile: 3 x N*E/256;
    #         the running max RM is read by its recurrence, by PRM and by SLN once per tile: 3 x N1;
    #         RD by SPD per tile and by AV once per query: N1 + BHP; RNV by SPNV per tile and by AV: N1*F + BHP*F;
    # writes - Q, K, V filled once each (BHPE, BHME, BHMF); RM, RD and RNV updated once per tile: 2 x N1 + N1*F.
    reads = 3 * n * e / 256 + 3 * n1 + (n1 + b * h * p) + (n1 * f + b * h * p * f)
    writes = b * h * p * e + b * h * m * e + b * h * m * f + 2 * n1 + n1 * f
    hand_s = (reads + writes) * 2 / GIB
    assert design.cost.level_s["global_buffer"] == pytest.approx(hand_s, rel=1e-9)
    assert design.cost.latency_s == pytest.approx(hand_s, rel=1e-9)  # bandwidth-bound: 32.07 s, not 29.7 ms
    assert design.cost.latency_s > 1000 * design.cost.compute_bound_s
    from attnscope.api import evaluate

    assert evaluate("fusemax", arch, shape=bert(4096), mapper="fusemax-binding").bound == "global_buffer bandwidth"
    preset = fusemax_family("binding", load_arch("fusemax-cloud"), bert(4096)).cost
    assert preset.latency_s == pytest.approx(design.cost.compute_bound_s / preset.utilization["pe_1d"], rel=1e-9)


def test_read_write_and_port_limits_each_bind():
    base = fusemax_family("binding", load_arch("fusemax-cloud"), bert(1024, 4)).cost
    total = fusemax_family(
        "binding", with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.bandwidth_bytes_per_s": GIB}),
        bert(1024, 4),
    ).cost  # fmt: skip
    for key in ("read_bandwidth_bytes_per_s", "write_bandwidth_bytes_per_s"):
        arch = with_overrides(load_arch("fusemax-cloud"), {f"levels.global_buffer.{key}": GIB})
        cost = fusemax_family("binding", arch, bert(1024, 4)).cost
        assert base.latency_s < cost.latency_s < total.latency_s  # reads or writes alone: less than both
    # one port of 256-word rows at 940 MHz is 481 GB/s: the same bound as that total bandwidth
    ported = with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.ports": 1})
    wide = with_overrides(
        load_arch("fusemax-cloud"), {"levels.global_buffer.bandwidth_bytes_per_s": 256 * 2 * ported.clock_hz}
    )
    by_ports = fusemax_family("binding", ported, bert(1024, 4)).cost
    assert by_ports.level_s["global_buffer"] == pytest.approx(
        fusemax_family("binding", wide, bert(1024, 4)).cost.level_s["global_buffer"], rel=1e-12
    )


def test_systolic_fill_and_drain_are_paid_per_tile():
    sizes = bert(1024, 4)
    base = fusemax_family("binding", load_arch("fusemax-cloud"), sizes)
    arch = with_overrides(load_arch("fusemax-cloud"), {"arrays.pe_2d.fill_drain_cycles": 510})
    slow = fusemax_family("binding", arch, sizes)
    # the QK Einsum's DRAM loops: b, h, P2 (= 1) and the M1 = 4 key tiles
    tiles = 4 * 12 * 1 * 4
    assert slow.cost.einsums["QK"].compute_cycles == pytest.approx(
        base.cost.einsums["QK"].compute_cycles + 510 * tiles, rel=1e-12
    )
    assert slow.cost.latency_s > base.cost.latency_s


def test_staging_overflow_is_infeasible_and_says_where():
    arch = with_overrides(load_arch("fusemax-cloud"), {"levels.reg_file_1d.capacity_words": 256})
    cost = fusemax_family("binding", arch, bert(1024, 4)).cost
    assert not cost.feasible
    assert any(r.startswith("reg_file_1d: phase 0") and "holds 256" in r for r in cost.infeasible)


def test_register_overflow_is_infeasible_even_when_the_design_may_spill():
    # FLAT's designs may spill the global buffer; a PE register file that is too small is not excused by that
    one_word = {"capacity_words": 1, "read_energy_pj": 2.0, "write_energy_pj": 2.0, "area_um2": 100.0, "leakage_w": 0.0}
    arch = with_overrides(load_arch("flat-cloud"), {f"levels.pe_reg_1d.{k}": v for k, v in one_word.items()})
    from mappers.flat import flat_choices, flat_mapping

    lowered = lower(get_cascade("attention-3pass").cascade, bert(1024, 2))
    choice = next(c for c in flat_choices(1024, 256) if c.stationarity == "output" and c.p1 == 1024)
    mapping = flat_mapping(lowered, arch, choice)
    assert mapping.spill
    cost = evaluate_cascade(lowered, arch, mapping)
    assert not cost.feasible
    assert any(r.startswith("pe_reg_1d:") for r in cost.infeasible)


def test_spill_is_reported_in_bytes_and_where():
    arch = with_overrides(load_arch("flat-cloud"), {"levels.global_buffer.capacity_words": 2**17})
    from mappers.flat import flat_choices, flat_mapping

    lowered = lower(get_cascade("attention-3pass").cascade, bert(1024, 2))
    choice = next(c for c in flat_choices(1024, 256) if c.stationarity == "output" and c.p1 == 1024)
    cost = evaluate_cascade(lowered, arch, flat_mapping(lowered, arch, choice))
    assert cost.feasible and cost.spill_fraction[0] > 0
    assert set(cost.spill_bytes_by_level) == {"global_buffer"} and 0 < cost.spill_bytes <= cost.dram_bytes
    big = with_overrides(arch, {"levels.global_buffer.capacity_words": 2**24})
    fits = evaluate_cascade(lowered, big, flat_mapping(lowered, big, choice))
    assert fits.spill_bytes == 0 and fits.dram_bytes < cost.dram_bytes  # the spill is DRAM traffic


# ------------------------------------------------------------------------------------------ (8) properties


@st.composite
def architectures(draw):
    """A FuseMax-style architecture with random array sizes, capacities and limits (every on-chip limit)."""
    rows = draw(st.sampled_from([16, 32, 64, 128]))
    cols = draw(st.sampled_from([16, 32, 64, 128]))
    overrides = {
        "arrays.pe_2d.rows": rows,
        "arrays.pe_2d.cols": cols,
        "arrays.pe_1d.pes": draw(st.sampled_from([cols, 2 * cols])),
        "levels.global_buffer.capacity_words": draw(st.sampled_from([2**12, 2**14, 2**16, 2**20])),
        "levels.global_buffer.access_width_words": 16,
        "levels.global_buffer.read_energy_pj": 16.0,  # 1 pJ per word either way: words = energy
        "levels.global_buffer.write_energy_pj": 16.0,
        "levels.global_buffer.bandwidth_bytes_per_s": draw(st.sampled_from([None, 1e9, 1e11, 1e13])),
        "levels.global_buffer.read_bandwidth_bytes_per_s": draw(st.sampled_from([None, 5e10, 5e12])),
        "levels.global_buffer.ports": draw(st.sampled_from([None, 1, 2])),  # the SRAM table's port counts
        "levels.reg_file_1d.capacity_words": draw(st.sampled_from([64, 1024, 8192])),
        "levels.reg_file_1d.bandwidth_bytes_per_s": draw(st.sampled_from([None, 1e10, 1e12])),
        "levels.dram.bandwidth_bytes_per_s": draw(st.sampled_from([1e9, 1e11, 4e11, 4e12])),
        "arrays.pe_2d.fill_drain_cycles": draw(st.sampled_from([0, rows + cols - 2])),
    }
    return with_overrides(load_arch("fusemax-cloud"), overrides)


def _check(lowered, arch, mapping, cost):
    dram_bw = arch.levels[0].bandwidth_bytes_per_s
    bounds = [cost.compute_bound_s, cost.dram_bytes / dram_bw, *cost.level_s.values()]
    gb = arch.level("global_buffer")
    if gb.bandwidth_bytes_per_s:  # an independent count: 1 pJ per word, so the level's energy is its words
        bounds.append(cost.energy_breakdown_pj.get("global_buffer", 0.0) * arch.word_bytes / gb.bandwidth_bytes_per_s)
    assert cost.latency_s >= max(bounds) * (1 - 1e-9)
    if not cost.feasible:
        assert cost.infeasible, "an infeasible design names the level at fault"
        return
    assert not cost.infeasible
    buffer = shared_buffer(arch)
    for i, phase in enumerate(mapping.phases):
        occupancy = phase_occupancy(lowered, mapping, phase, buffer)
        if occupancy > gb.capacity_words:  # only a design that spills may: the excess is charged as spill
            assert mapping.spill and cost.spill_fraction[i] > 0 and cost.spill_bytes_by_level
        staged = staging_occupancy(lowered, mapping, phase, arch.staging_level)
        assert staged <= arch.level(arch.staging_level).capacity_words
    for e in lowered.einsums:
        em = mapping.einsums[e.name]
        nest = einsum_nest(e, arch, em)
        for li, level in enumerate(em.levels):
            cap = arch.level(level).capacity_words
            if cap is not None and level != buffer:
                assert nest.occupancy_words[0, li] <= cap
        assert nest.pes_used[0] <= arch.array(em.array).pe_count


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures(), seq=st.sampled_from([256, 512, 1024]), template=st.booleans())
def test_acceptance_8_latency_bounds_capacities_and_infeasibility_over_random_architectures(arch, seq, template):
    sizes = {"B": 2, "H": 2, "E": 64, "F": 64, "M": seq, "P": seq}
    if template and seq % arch.array("pe_2d").shape[-1] == 0 and arch.array("pe_1d").shape[-1] >= 16:
        try:
            design = fusemax_family("binding", arch, sizes)
        except Exception:  # a template that cannot tile this array is not a design
            return
        _check(design.lowered, arch, design.mapping, design.cost)
        return
    best, others = search_fused(get_cascade("fusemax").cascade, sizes, arch)
    for d in [best, *others[:3]]:
        _check(d.lowered, arch, d.mapping, d.cost)
    if any(d.cost.feasible for d in others):
        assert best.cost.feasible, "the search ranks a feasible design first"


def test_acceptance_8_infeasible_rows_carry_no_latency_and_spill_is_shown(tmp_path):
    import yaml

    from attnscope.compare_attention import compare_attention

    tiny = with_overrides(
        load_arch("fusemax-cloud"), {"name": "tiny-buffer", "levels.global_buffer.capacity_words": 256}
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny.to_dict(), sort_keys=False))
    study = compare_attention(arch=str(path), model="bert", seqs=[1024], variants=["fusemax"], batch=1)
    (row,) = study.rows
    assert row.status.startswith("infeasible: global_buffer: ") and "words over" in row.status
    assert row.latency_s is None and row.energy_pj is None and row.dram_bytes is None and not row.ok
    small = with_overrides(
        load_arch("flat-cloud"), {"name": "small-buffer", "levels.global_buffer.capacity_words": 2**12}
    )
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small.to_dict(), sort_keys=False))
    study = compare_attention(arch=str(path), model="bert", seqs=[16384], variants=["attention-3pass"], batch=1)
    (row,) = study.rows
    # 8 KiB holds not even one row of 16K scores: every design spills, and the row says so
    assert row.status == "ok" and row.spilled_bytes and row.spilled_bytes > 0
    assert row.footprint_bytes <= 2**12 * 2  # the buffer holds its capacity; the excess is the spill


def test_wire_energy_between_the_buffer_and_the_arrays_follows_the_technology_model():
    """Words between the global buffer and an array cross one side of the square its PEs occupy, at the
    technology model's pJ/bit/mm (simulator.cost.wire_energy_pj). Checked by its proportions: PEs of 4x the area
    (units and per-PE registers) double every distance and so the wire energy, and nothing else; at 7 nm the
    wires per mm cost the same (the table's node-independent 0.2 fF/um at 0.7 V) over a shorter side. The
    study's published figures charge no wires."""
    from simulator.cost import array_side_mm
    from simulator.technology import wire_energy_pj_per_bit_mm
    from validate.fusemax.study import study_preset

    base = load_arch("fusemax-cloud")
    cost = fusemax_family("binding", base, bert(1024, 4)).cost
    wires = cost.energy_breakdown_pj["wires"]
    assert 0.01 * cost.energy_pj < wires < 0.2 * cost.energy_pj
    assert cost.energy_pj == pytest.approx(sum(cost.energy_breakdown_pj.values()), rel=1e-12)
    # one word of 16 bits over the 2-D array's side: 16 x 0.098 pJ/bit/mm x ~17 mm = ~27 pJ (45 nm)
    per_word = 16 * wire_energy_pj_per_bit_mm(base.technology) * array_side_mm(base, base.array("pe_2d"))
    assert per_word == pytest.approx(27.0, rel=0.05)

    paths = [f"arrays.{a.name}.units.{u.name}.area_um2" for a in base.arrays for u in a.units]
    paths += [f"levels.{lv.name}.area_um2" for lv in base.levels if lv.per_pe_of]
    spec = with_overrides(base, {path: 4 * _figure(base, path) for path in paths})
    big = fusemax_family("binding", spec, bert(1024, 4)).cost
    assert big.energy_breakdown_pj["wires"] == pytest.approx(2 * wires, rel=1e-9)
    others = {k: v for k, v in big.energy_breakdown_pj.items() if k not in ("wires", "leakage")}
    assert others == pytest.approx({k: cost.energy_breakdown_pj[k] for k in others}, rel=1e-12)

    at7 = with_overrides(base, {"technology.node_nm": 7})
    small = fusemax_family("binding", at7, bert(1024, 4)).cost
    assert wire_energy_pj_per_bit_mm(at7.technology) == wire_energy_pj_per_bit_mm(base.technology)
    sides = {n: array_side_mm(s, s.array("pe_2d")) for n, s in ((45, base), (7, at7))}
    assert sides[7] < sides[45] / 3
    assert small.energy_breakdown_pj["wires"] < wires / 3

    published = fusemax_family("binding", study_preset("fusemax-cloud", True), bert(1024, 4)).cost
    assert "wires" not in published.energy_breakdown_pj


def _figure(spec, path: str) -> float:
    kind, name, *rest = path.split(".")
    if kind == "levels":
        return spec.level(name).area_um2
    return spec.array(name).unit(rest[1]).area_um2
