"""Torch implementations of the operations in :mod:`validate.harness.ops` (imports torch; load it lazily).

A kernel function takes a :class:`~validate.harness.sweep.Case`, a torch device and a seeded generator and
returns a :class:`Prepared`: fresh random inputs (never zeros) already on the device, the call to time, and a
check that compares one output of that call with a float64 reference computed from the same inputs. For large
outputs the reference covers a seeded sample of rows (and batches/heads), so checking a 64K-token attention
costs a few hundred rows, not the whole score matrix. A kernel that cannot run here raises :class:`Unavailable`
with the reason, at preparation or on its first call (see :func:`unavailable_reason`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from validate.harness.ops import DTYPE_BYTES
from validate.harness.sweep import Case

TORCH_DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
)
TOLERANCE: Mapping[str, float] = MappingProxyType({"fp64": 1e-9, "fp32": 2e-3, "bf16": 3e-2, "fp16": 1e-2})
"""Largest accepted error per dtype: max |output - float64 reference| / max |reference| over the checked part.
fp32 allows TF32-level rounding; a wrong kernel (bad axis, scale, mask or layout) errs by 0.1 to 1."""
SAMPLE_ROWS = 128
"""Output rows (per checked batch and head) compared with the reference."""
SAMPLE_GROUPS = 3
"""Batches, and heads, compared with the reference (first, last and one drawn at random)."""

_SDPA: Mapping[str, SDPBackend] = MappingProxyType({
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
})  # fmt: skip


class Unavailable(Exception):
    """The kernel cannot run on this device or build (recorded as skipped, with this reason)."""


@dataclass(frozen=True)
class Prepared:
    """A kernel ready to run: inputs on the device, the call, its check, and its nominal work."""

    run: Callable[[], torch.Tensor]
    """The call that is checked once and then timed."""
    check: Callable[[torch.Tensor], float]
    """Error of an output of ``run`` against the float64 reference (see :data:`TOLERANCE`)."""
    flops: float
    """Useful floating-point operations (2mnk; 4·d per unmasked query-key pair per head; 0 for memory ops)."""
    bytes: float
    """Bytes that must move at least: every input read once, every output written once."""
    context: Callable[[], AbstractContextManager] = field(default=nullcontext)
    """Context entered around the check and the timing (e.g. ``sdpa_kernel(backend)``)."""


Kernel = Callable[[Case, torch.device, torch.Generator], Prepared]


def unavailable_reason(exc: BaseException) -> str | None:
    """Why an exception means "cannot run here" (skip) rather than "ran wrong" (fail); None when it is a failure."""
    text = " ".join(str(exc).split())
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {text[:200]}"
    if isinstance(exc, NotImplementedError):
        return f"not implemented: {text[:300]}"
    if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
        return f"compile failed ({type(exc).__name__}): {text[:300]}"
    if isinstance(exc, RuntimeError) and "No viable backend" in text:
        return "no viable SDPA backend"
    return None


def _randn(shape: tuple[int, ...], dtype: str, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=device, dtype=TORCH_DTYPES[dtype])


def _error(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.shape != ref.shape:
        return math.inf
    got = out.to(torch.float64)
    if not bool(torch.isfinite(got).all()):
        return math.inf
    scale = float(ref.abs().max()) or 1.0
    return float((got - ref).abs().max()) / scale


def _sample(n: int, cap: int, device: torch.device) -> torch.Tensor:
    """Indices to check: all of 0..n-1 when n <= cap, else first, last and cap-2 in between (seeded)."""
    if n <= cap:
        return torch.arange(n, device=device)
    gen = torch.Generator().manual_seed(n)
    middle = torch.randperm(n - 2, generator=gen)[: cap - 2] + 1
    return torch.cat([torch.tensor([0, n - 1]), middle.sort().values]).to(device)


def _matmul(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    m, n, k = (case.sizes[x] for x in ("m", "n", "k"))
    a, b = _randn((m, k), case.dtype, device, gen), _randn((k, n), case.dtype, device, gen)
    rows = _sample(m, 4 * SAMPLE_ROWS, device)

    def check(out: torch.Tensor) -> float:
        return _error(out[rows], a[rows].double() @ b.double())

    return Prepared(lambda: torch.matmul(a, b), check, 2.0 * m * n * k,
                    DTYPE_BYTES[case.dtype] * (m * k + k * n + m * n))  # fmt: skip


def _bmm(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    batch, m, n, k = (case.sizes[x] for x in ("batch", "m", "n", "k"))
    a, b = _randn((batch, m, k), case.dtype, device, gen), _randn((batch, k, n), case.dtype, device, gen)
    groups, rows = _sample(batch, SAMPLE_GROUPS, device), _sample(m, SAMPLE_ROWS, device)

    def check(out: torch.Tensor) -> float:
        ref = a[groups][:, rows].double() @ b[groups].double()
        return _error(out[groups][:, rows], ref)

    return Prepared(lambda: torch.bmm(a, b), check, 2.0 * batch * m * n * k,
                    DTYPE_BYTES[case.dtype] * batch * (m * k + k * n + m * n))  # fmt: skip


def _softmax(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    rows_n, cols = case.sizes["rows"], case.sizes["cols"]
    x = _randn((rows_n, cols), case.dtype, device, gen) * 4
    rows = _sample(rows_n, 4 * SAMPLE_ROWS, device)

    def check(out: torch.Tensor) -> float:
        return _error(out[rows], torch.softmax(x[rows].double(), dim=-1))

    return Prepared(lambda: torch.softmax(x, dim=-1), check, 0.0, 2.0 * DTYPE_BYTES[case.dtype] * rows_n * cols)


# -- attention -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attention:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    allowed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    """Boolean (query index, key index) -> may attend, broadcasting; None: no mask."""
    pairs: int
    """Unmasked (query, key) pairs per batch and head."""

    def reference(self, batches: torch.Tensor, heads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        group = self.q.shape[1] // self.k.shape[1]
        q = self.q[batches][:, heads][:, :, rows].double()
        k, v = self.k[batches][:, heads // group].double(), self.v[batches][:, heads // group].double()
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if self.allowed is not None:
            keys = torch.arange(k.shape[2], device=q.device)
            scores = scores.masked_fill(~self.allowed(rows[:, None], keys[None, :]), -math.inf)
        return torch.softmax(scores, dim=-1) @ v

    def check(self, out: torch.Tensor) -> float:
        device = self.q.device
        batches = _sample(self.q.shape[0], SAMPLE_GROUPS, device)
        heads = _sample(self.q.shape[1], SAMPLE_GROUPS, device)
        rows = _sample(self.q.shape[2], SAMPLE_ROWS, device)
        if out.shape != self.q.shape:
            return math.inf
        return _error(out[batches][:, heads][:, :, rows], self.reference(batches, heads, rows))

    def work(self, dtype: str) -> tuple[float, float]:
        b, h, _, d = self.q.shape
        flops = 4.0 * b * h * d * self.pairs
        return flops, DTYPE_BYTES[dtype] * (2 * self.q.numel() + self.k.numel() + self.v.numel())


def _attention(case: Case, device: torch.device, gen: torch.Generator) -> _Attention:
    s = case.sizes
    b, h, hkv = s["batch"], s["heads"], s.get("kv_heads", s["heads"])
    sq, skv, d = s["seq_q"], s["seq_kv"], s["head_dim"]
    q = _randn((b, h, sq, d), case.dtype, device, gen)
    k, v = _randn((b, hkv, skv, d), case.dtype, device, gen), _randn((b, hkv, skv, d), case.dtype, device, gen)
    allowed, pairs = _mask(case, device, gen)
    return _Attention(q, k, v, allowed, pairs)


def _mask(case: Case, device: torch.device, gen: torch.Generator):
    s = case.sizes
    n, skv = s["seq_q"], s["seq_kv"]
    if case.mask == "none":
        return None, n * skv
    if case.mask == "causal":
        return (lambda qi, ki: qi >= ki), n * (n + 1) // 2
    if case.mask == "sliding_window":
        w = s["window"]
        return (lambda qi, ki: (qi >= ki) & (qi - ki < w)), sum(min(i + 1, w) for i in range(n))
    block = s["block"]
    nb = skv // block
    keep = torch.rand((nb, nb), generator=torch.Generator().manual_seed(nb)) < 0.5
    keep |= torch.eye(nb, dtype=torch.bool)
    keep = keep.to(device)
    return (lambda qi, ki: keep[qi // block, ki // block]), int(keep.sum()) * block * block


def _unfused(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    """Standard attention as the FlashAttention benchmarks run it: ``baddbmm`` with the softmax scale folded in,
    an additive mask (-inf where masked, built once), softmax, and a batched matmul; GQA K/V are expanded."""
    att = _attention(case, device, gen)
    q, k, v = att.q, att.k, att.v
    b, h, sq, d = q.shape
    skv, group = k.shape[2], h // k.shape[1]
    scale = 1.0 / math.sqrt(d)
    bias = None
    if att.allowed is not None:
        rows, cols = torch.arange(sq, device=device), torch.arange(skv, device=device)
        bias = torch.zeros((sq, skv), dtype=q.dtype, device=device)
        bias.masked_fill_(~att.allowed(rows[:, None], cols[None, :]), -math.inf)
    q3 = q.reshape(b * h, sq, d)

    def run() -> torch.Tensor:
        kk, vv = (k, v) if group == 1 else (k.repeat_interleave(group, 1), v.repeat_interleave(group, 1))
        out = torch.empty((b * h, sq, skv), dtype=q.dtype, device=device)
        scores = torch.baddbmm(out, q3, kk.reshape(b * h, skv, d).transpose(1, 2), beta=0, alpha=scale)
        if bias is not None:
            scores = scores + bias
        probs = torch.softmax(scores, dim=-1)
        return torch.bmm(probs, vv.reshape(b * h, skv, d)).reshape(b, h, sq, d)

    return Prepared(run, att.check, *att.work(case.dtype))


def _backend_context(backend: str) -> Callable[[], AbstractContextManager]:
    if backend == "auto":
        return nullcontext
    return functools.partial(sdpa_kernel, [_SDPA[backend]])


def _sdpa(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    att = _attention(case, device, gen)
    q, k, v = att.q, att.k, att.v
    causal, gqa = case.mask == "causal", k.shape[1] != q.shape[1]

    def run() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    return Prepared(run, att.check, *att.work(case.dtype), context=_backend_context(case.backend))


def _compile(fn: Callable) -> Callable:
    """torch.compile for static shapes; a sweep recompiles once per shape, so the recompile limit is raised,
    and hitting it raises (recorded as skipped) instead of silently timing an eager fallback."""
    import torch._dynamo.config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, 1024)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4096)
    dynamo.fail_on_recompile_limit_hit = True
    return torch.compile(fn, dynamic=False)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return _compile(flex_attention)


def _flex(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    from torch.nn.attention.flex_attention import create_block_mask

    att = _attention(case, device, gen)
    q, k, v = att.q, att.k, att.v
    block_mask = None
    if att.allowed is not None:
        allowed = att.allowed

        def mask_mod(b, h, qi, ki):
            return allowed(qi, ki)

        try:
            block_mask = create_block_mask(mask_mod, None, None, q.shape[2], k.shape[2], device=str(device))
        except Exception as exc:
            raise Unavailable(unavailable_reason(exc) or f"create_block_mask failed: {exc}") from exc
    flex, gqa = _compiled_flex(), k.shape[1] != q.shape[1]

    def run() -> torch.Tensor:
        return flex(q, k, v, block_mask=block_mask, enable_gqa=gqa)

    return Prepared(run, att.check, *att.work(case.dtype))


def _decode(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    s = case.sizes
    b, h, hkv, n, d = s["batch"], s["heads"], s["kv_heads"], s["cache_len"], s["head_dim"]
    q = _randn((b, h, 1, d), case.dtype, device, gen)
    k_cache, v_cache = _randn((b, hkv, n + 1, d), case.dtype, device, gen), _randn((b, hkv, n + 1, d), case.dtype,
                                                                                   device, gen)  # fmt: skip
    k_new, v_new = _randn((b, hkv, 1, d), case.dtype, device, gen), _randn((b, hkv, 1, d), case.dtype, device, gen)
    gqa = hkv != h

    def run() -> torch.Tensor:
        k_cache[:, :, n:].copy_(k_new)
        v_cache[:, :, n:].copy_(v_new)
        return F.scaled_dot_product_attention(q, k_cache, v_cache, enable_gqa=gqa)

    def check(out: torch.Tensor) -> float:
        att = _Attention(q, k_cache, v_cache, None, n + 1)
        written = _error(torch.cat([k_cache[:, :, n:], v_cache[:, :, n:]]), torch.cat([k_new, v_new]).double())
        return max(att.check(out), written)

    es = DTYPE_BYTES[case.dtype]
    nbytes = es * (2 * q.numel() + k_cache.numel() + v_cache.numel() + 2 * k_new.numel())
    return Prepared(run, check, 4.0 * b * h * d * (n + 1), nbytes, context=_backend_context(case.backend))


def _copy(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    es = DTYPE_BYTES[case.dtype]
    count = max(1, case.sizes["nbytes"] // es)
    src, dst = _randn((count,), case.dtype, device, gen), _randn((count,), case.dtype, device, gen)

    def check(out: torch.Tensor) -> float:
        return 0.0 if out.shape == src.shape and torch.equal(out, src) else math.inf

    return Prepared(lambda: dst.copy_(src), check, 0.0, 2.0 * es * count)


def _broadcast_add(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    batch, rows_n, cols = (case.sizes[k] for k in ("batch", "rows", "cols"))
    x, mask = _randn((batch, rows_n, cols), case.dtype, device, gen), _randn((rows_n, cols), case.dtype, device, gen)
    groups, rows = _sample(batch, SAMPLE_GROUPS, device), _sample(rows_n, SAMPLE_ROWS, device)

    def check(out: torch.Tensor) -> float:
        return _error(out[groups][:, rows], x[groups][:, rows].double() + mask[rows].double())

    es = DTYPE_BYTES[case.dtype]
    return Prepared(lambda: x + mask, check, 0.0, es * (2 * batch + 1) * rows_n * cols)


def _exp(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    count = case.sizes["elements"]
    x, y = _randn((count,), case.dtype, device, gen), _randn((count,), case.dtype, device, gen)
    idx = _sample(count, 64 * SAMPLE_ROWS, device)

    def check(out: torch.Tensor) -> float:
        return _error(out[idx], torch.exp(x[idx].double())) if out.shape == x.shape else math.inf

    return Prepared(lambda: torch.exp(x, out=y), check, 0.0, 2.0 * DTYPE_BYTES[case.dtype] * count)


@functools.cache
def _compiled_exp_chain(depth: int):
    def chain(y: torch.Tensor) -> torch.Tensor:
        for _ in range(depth):
            y = torch.exp(-y)
        return y

    return _compile(chain)


def _exp_chain(case: Case, device: torch.device, gen: torch.Generator) -> Prepared:
    count, depth = case.sizes["elements"], case.sizes["depth"]
    x, y = _randn((count,), case.dtype, device, gen).abs(), _randn((count,), case.dtype, device, gen)
    idx = _sample(count, 64 * SAMPLE_ROWS, device)
    es = DTYPE_BYTES[case.dtype]
    if case.backend == "eager":

        def run() -> torch.Tensor:
            for _ in range(depth):
                torch.exp(x, out=y)
            return y

        def check(out: torch.Tensor) -> float:
            return _error(out[idx], torch.exp(x[idx].double())) if out.shape == x.shape else math.inf

        return Prepared(run, check, 0.0, 2.0 * es * count * depth)
    chain = _compiled_exp_chain(depth)

    def check_chain(out: torch.Tensor) -> float:
        ref = x[idx].double()
        for _ in range(depth):
            ref = torch.exp(-ref)
        return _error(out[idx], ref) if out.shape == x.shape else math.inf

    return Prepared(lambda: chain(x), check_chain, 0.0, 2.0 * es * count)


KERNELS: Mapping[str, Kernel] = MappingProxyType({
    "matmul": _matmul,
    "bmm": _bmm,
    "softmax": _softmax,
    "unfused_attention": _unfused,
    "sdpa": _sdpa,
    "flex_attention": _flex,
    "decode": _decode,
    "copy": _copy,
    "broadcast_add": _broadcast_add,
    "exp": _exp,
    "exp_chain": _exp_chain,
})  # fmt: skip
"""The torch kernel of every operation in :data:`validate.harness.ops.OPS`."""
