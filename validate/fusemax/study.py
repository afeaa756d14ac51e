"""The FuseMax study, computed: every configuration x model x sequence length, end-to-end layers, PE sweep.

Everything here is data on top of the general machinery: which cascade, which architecture preset (with
which compat setting), which mapping (searched, or the FuseMax tiling with the largest P1 that fits).
``as_published=True`` applies the artifact's quirks (fusemax-study.md §F) so the numbers can be compared
with the published CSVs; ``False`` is attnscope's corrected model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from einsum.cascade import Cascade
from einsum.lower import lower
from einsum.yamlio import read_yaml_mapping
from mappers.flat import BUFFER, PHASE, ROWWISE_FORWARDED, rowwise_softmax, search_flat
from mappers.fusemax import StudyDesign as Design
from mappers.fusemax import fusemax_family
from mappers.search import search_nest
from simulator.cost import CascadeCost, evaluate_cascade
from simulator.mapping import CascadeMapping, Phase
from simulator.specs import ArchSpec, load_arch, with_overrides
from workloads import get_cascade
from workloads.models import get_model

SEQ_LENS: Mapping[str, int] = {
    "1K": 1 << 10,
    "4K": 1 << 12,
    "16K": 1 << 14,
    "64K": 1 << 16,
    "256K": 1 << 18,
    "1M": 1 << 20,
}
STUDY_MODELS = ("BERT", "TrXL", "T5", "XLM")
CONFIGS = ("unfused", "flat", "cascade", "arch", "binding")
EINSUM_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "unfused": (),
    "flat": ("QK", "AV"),
    "cascade": ("QK", "SLNV"),
    "arch": ("QK", "LM", "SLN", "SLD", "SLNV"),
    "binding": ("QK", "LM", "SLN", "SLD", "SLNV"),
}
#: architecture preset and compat setting of each configuration as the study ran it
PRESETS: Mapping[str, tuple[str, str]] = {
    "unfused": ("flat-cloud", "fusemax-artifact-unfused"),
    "flat": ("flat-cloud", "fusemax-artifact-flat"),
    "cascade": ("flat-cloud", "fusemax-artifact-cascade"),
    "arch": ("fusemax-cloud", "fusemax-artifact-arch"),
    "binding": ("fusemax-cloud", "fusemax-artifact"),
}
END2END_PLATFORMS: Mapping[str, str] = {"flat": "flat-cloud", "proposal": "fusemax-cloud"}
FLAT_ROW_BLOCKS = (1, 2, 4)
"""FLAT's row granularities as the study ran them, in multiples of the array width, chosen by the study's
sizing rule (mappers.flat, policy "study"); the general FLAT search chooses the block itself."""
PUBLISHED_FIGURES = Path(__file__).with_name("accelergy-45nm.yaml")
"""The study's 45 nm Accelergy energies and areas per preset, as dotted-path overrides (the as-published run)."""
GEMM = Cascade.from_text("input A[T,K], B[K,N]\nC[t,n] = sum[k] A[t,k] * B[k,n]", name="gemm")


@cache
def published_figures(preset: str) -> dict[str, float]:
    """The study's energies, leakage and areas of one preset (``accelergy-45nm.yaml``), dotted path -> value."""
    data = read_yaml_mapping(PUBLISHED_FIGURES, str(PUBLISHED_FIGURES), "presets to their published figures")
    return dict(data[preset])


def study_preset(preset: str, as_published: bool, node_nm: int | None = None) -> ArchSpec:
    """A preset priced as the study published it (its 45 nm Accelergy figures), else by the technology model at
    its own node or at ``node_nm``."""
    spec = load_arch(preset)
    if as_published:
        return with_overrides(spec, published_figures(preset))
    return spec if node_nm is None else with_overrides(spec, {"technology.node_nm": node_nm})


@cache
def study_arch(config: str, as_published: bool, node_nm: int | None = None) -> ArchSpec:
    """The architecture a configuration runs on (with the artifact's compat setting and figures when as published;
    else the technology model's figures, at ``node_nm`` when given)."""
    preset, compat = PRESETS[config]
    spec = study_preset(preset, as_published, node_nm)
    if not as_published:
        return spec
    overrides: dict = {"compat": compat}
    if config == "cascade":
        # §B/§F.2: +Cascade chose its tiling for FuseMax's 16 MiB buffer but was priced with FLAT's tables.
        overrides["levels.global_buffer.capacity_words"] = load_arch("fusemax-cloud").level(BUFFER).capacity_words
    return with_overrides(spec, overrides)


def attention_sizes(model: str, seq_len: int) -> dict[str, int]:
    """B, H, E, F, M, P of one model at one sequence length."""
    return {k: v for k, v in get_model(model).sizes(seq_len).items() if k in ("B", "H", "E", "F", "M", "P")}


def attention_design(config: str, model: str, seq_len: int, as_published: bool, node_nm: int | None = None) -> Design:
    """Map and cost one configuration's attention for one model and sequence length."""
    arch = study_arch(config, as_published, node_nm)
    sizes = attention_sizes(model, seq_len)
    if config in ("cascade", "arch", "binding"):
        return fusemax_family(config, arch, sizes)
    lowered = lower(get_cascade("attention-3pass").cascade, sizes)
    if config == "flat":
        mapping, cost, _ = search_flat(lowered, arch, row_blocks=FLAT_ROW_BLOCKS, policy="study")
        return Design(config, mapping, cost, lowered)
    return _unfused(lowered, arch)


def _unfused(lowered, arch: ArchSpec) -> Design:
    """QK and AV mapped by the search with every intermediate in DRAM; the softmax streams rows."""
    nests = dict(rowwise_softmax(lowered, arch))
    for name in ("QK", "AV"):
        found = search_nest(lowered.einsum(name), arch, "pe_2d", ("m", "p"), fixed_outer=("b", "h"))
        nests[name] = found.mapping
    mapping = CascadeMapping(
        name="unfused",
        einsums=nests,
        placement={"QK": "dram", "A": "dram", "SN": BUFFER, "GM": "pe", "SD": "pe"},
        phases=(
            Phase(stages=({"pe_2d": ("QK",)},)),
            Phase(stages=({"pe_1d": PHASE.stages[0]["pe_1d"]},)),
            Phase(stages=({"pe_2d": ("AV",)},)),
        ),
        in_place=(("SN", "QK"),),
        forwarded=ROWWISE_FORWARDED,
        notes=("unfused: QK, softmax, AV one after another, intermediates through DRAM",),
    )
    return Design("unfused", mapping, evaluate_cascade(lowered, arch, mapping), lowered)


@dataclass(frozen=True)
class LayerCost:
    """The six per-layer matmuls of one model: traffic (B), latency (s), energy (pJ)."""

    traffic: float
    latency_s: float
    energy_pj: float
    matmuls: Mapping[str, CascadeCost]


@cache
def _gemm_cost(arch_key: tuple[str, bool, int | None], tokens: int, k: int, n: int) -> CascadeCost:
    arch = _end2end_arch(*arch_key)
    lowered = lower(GEMM, {"T": tokens, "K": k, "N": n})
    found = search_nest(lowered.einsum("C"), arch, "pe_2d", ("t", "n"))
    mapping = CascadeMapping(
        name="gemm", einsums={"C": found.mapping}, placement={}, phases=(Phase(stages=({"pe_2d": ("C",)},)),)
    )
    return evaluate_cascade(lowered, arch, mapping)


@cache
def _end2end_arch(platform: str, as_published: bool, node_nm: int | None = None) -> ArchSpec:
    spec = study_preset(END2END_PLATFORMS[platform], as_published, node_nm)
    return with_overrides(spec, {"compat": "fusemax-artifact-flat"}) if as_published else spec


def end2end_layer(platform: str, model: str, seq_len: int, as_published: bool, node_nm: int | None = None) -> LayerCost:
    """One layer's projections and FFN (the study's end-to-end add-on), each matmul mapped by the search."""
    costs = {
        name: _gemm_cost((platform, as_published, node_nm), *dims)
        for name, dims in get_model(model).layer_matmuls(seq_len).items()
    }
    return LayerCost(
        traffic=sum(c.dram_bytes for c in costs.values()),
        latency_s=sum(c.latency_s for c in costs.values()),
        energy_pj=sum(c.energy_pj for c in costs.values()),
        matmuls=costs,
    )


def attention_row(config: str, model: str, seq: str, design: Design) -> dict:
    """A row in the published CSV's columns and units."""
    c = design.cost
    row = {
        "model": model,
        "seq_len": seq,
        "traffic": c.dram_bytes,
        "latency": c.latency_s,
        "energy": c.energy_pj,
        "util_2d": c.utilization["pe_2d"],
        "util_1d": c.utilization["pe_1d"],
    }
    for name in EINSUM_COLUMNS[config]:
        row[name] = c.einsum_utilization[name]
    return row


@dataclass
class StudyResult:
    """All rows of one run (as published or corrected)."""

    as_published: bool
    attention: dict[str, list[dict]]  # config -> rows
    designs: dict[tuple[str, str, str], Design]  # (config, model, seq) -> design
    end2end: dict[str, list[dict]]  # platform -> rows

    @classmethod
    def empty(cls, as_published: bool) -> StudyResult:
        """No rows yet, a list for every configuration and platform."""
        return cls(as_published, {c: [] for c in CONFIGS}, {}, {p: [] for p in END2END_PLATFORMS})


def merge_results(parts: Iterable[StudyResult]) -> StudyResult:
    """One run from its parts (e.g. one per model, as workers compute them): rows concatenated in the parts'
    order, so parts given in model order give :func:`run_study`'s rows in its order."""
    parts = list(parts)
    if len({p.as_published for p in parts}) != 1:
        raise ValueError("merge_results: give the parts of one run (all as published, or all corrected)")
    result = StudyResult.empty(parts[0].as_published)
    for part in parts:
        for config, rows in part.attention.items():
            result.attention[config] += rows
        for platform, rows in part.end2end.items():
            result.end2end[platform] += rows
        result.designs.update(part.designs)
    return result


def run_study(
    as_published: bool,
    models: Iterable[str] = STUDY_MODELS,
    seqs: Iterable[str] = tuple(SEQ_LENS),
    progress: Callable[[str], None] | None = None,
    node_nm: int | None = None,
    configs: Iterable[str] = CONFIGS,
) -> StudyResult:
    """Every configuration x model x sequence length, and the end-to-end layers (the corrected model at another
    technology node with ``node_nm``; a subset of the configurations with ``configs``)."""
    configs = tuple(configs)
    result = StudyResult.empty(as_published)
    for model in models:
        for seq in seqs:
            for config in configs:
                design = attention_design(config, model, SEQ_LENS[seq], as_published, node_nm)
                result.designs[config, model, seq] = design
                result.attention[config].append(attention_row(config, model, seq, design))
                if progress:
                    progress(f"{config} {model} {seq}")
            for platform in END2END_PLATFORMS:
                layer = end2end_layer(platform, model, SEQ_LENS[seq], as_published, node_nm)
                result.end2end[platform].append(
                    {"model": model, "seq_len": seq, "traffic": layer.traffic, "latency": layer.latency_s,
                     "energy": layer.energy_pj}
                )  # fmt: skip
                if progress:
                    progress(f"end-to-end {platform} {model} {seq}")
    return result


PE_DIMS = (16, 32, 64, 128, 256, 512)
SWEEP_SEQ = "256K"


def study_buffer_words(pe_dim: int, head_dim: int, seq_len: int, mult: int = 1) -> tuple[int, int]:
    """The study's buffer-sizing rule for the PE sweep (fusemax-study.md §F.15): (buffer words, min tiles).

    Enough for two tiles per array column group of queries (``min_tiles``), times ``mult``.
    """
    min_tiles = 2 * max(1, pe_dim // head_dim)
    min_p1 = max(1, min_tiles // (seq_len // pe_dim))
    buffer_bytes = pe_dim * min_p1 * head_dim * 8 * 2 * mult
    return buffer_bytes // 2, min_tiles


def sweep_arch(pe_dim: int, head_dim: int, seq_len: int, as_published: bool, mult: int = 1) -> ArchSpec:
    """fusemax-cloud with a PE_dim x PE_dim array, a PE_dim 1-D array and the study's buffer for it.

    As published, the buffer's area scales with its capacity from the preset's (the study re-ran CACTI per size;
    its figures are not in the artifact); the corrected model prices every size with the technology model.
    """
    base = study_preset("fusemax-cloud", as_published)
    words, min_tiles = study_buffer_words(pe_dim, head_dim, seq_len, mult)
    gb = base.level(BUFFER)
    overrides = {
        "arrays.pe_2d.rows": pe_dim,
        "arrays.pe_2d.cols": pe_dim,
        "arrays.pe_1d.pes": pe_dim,
        "levels.global_buffer.capacity_words": words,
        "levels.pe_reg_2d.capacity_words": 4 + min_tiles,
        "levels.reg_file_1d.capacity_words": pe_dim * 8 * min_tiles,
        "levels.pe_reg_1d.capacity_words": 8 * min_tiles,
    }
    if as_published:
        overrides["levels.global_buffer.area_um2"] = gb.area_um2 * words / gb.capacity_words
        overrides["compat"] = "fusemax-artifact"
    return with_overrides(base, overrides)


def array_2d_area_um2(arch: ArchSpec) -> float:
    """Area of the 2-D array: its PEs' register files and functional units (adders out under compat)."""
    array = arch.array("pe_2d")
    skip = {"add"} if arch.compat.exclude_adder_area else set()
    regs = sum(lv.instances * lv.area_um2 for lv in arch.levels if lv.per_pe_of == "pe_2d")
    return regs + array.pe_count * sum(u.area_um2 for u in array.units if u.name not in skip)


def pe_sweep(as_published: bool, models: Iterable[str] = STUDY_MODELS, seq: str = SWEEP_SEQ) -> list[dict]:
    """FuseMax (binding) at one sequence length for every PE_dim, buffer sized by the study's rule."""
    rows = []
    seq_len = SEQ_LENS[seq]
    for model in models:
        sizes = attention_sizes(model, seq_len)
        for pe_dim in PE_DIMS:
            mult = 1
            while True:
                arch = sweep_arch(pe_dim, sizes["E"], seq_len, as_published, mult)
                design = fusemax_family("binding", arch, sizes)
                c = design.cost
                if c.memory_s <= c.compute_s_by_array["pe_1d"] or mult >= 64:
                    break
                mult *= 2  # the study doubles the buffer while memory outlasts the 1-D array
            rows.append(
                {
                    "accel": "proposal",
                    "model": model,
                    "PE_dim": pe_dim,
                    "traffic": c.dram_bytes,
                    "mem_lat": c.memory_s,
                    "comp_2d_lat": c.compute_s_by_array["pe_2d"],
                    "comp_1d_lat": c.compute_s_by_array["pe_1d"],
                    "latency": c.latency_s,
                    "array_2d_area": array_2d_area_um2(arch),
                    "area": arch.area_um2(),
                }
            )
    return rows
