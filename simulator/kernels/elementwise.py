"""Memory-bound kernels: copy, elementwise exp, row softmax. Each streams its bytes at a microbenchmark-calibrated
bandwidth (copy, or the library softmax; the last-level cache's when the working set stays there between calls,
see :meth:`Machine.stream_bytes_per_s`) while the SFU and FP32 lanes do the math; the slowest of the three sets
the time, plus one launch and one DRAM latency."""

from __future__ import annotations

from simulator.kernels.machine import KernelPrediction, Machine, finish, need

SOFTMAX_FMA_PER_ELEMENT = 4
"""FP32 lane ops per softmax element: max, subtract, sum, scale (the 3-pass cascade's max, sub, add, div)."""


def _positive(op: str, **values: int) -> None:
    for name, v in values.items():
        need(isinstance(v, int) and v >= 1, f"{op}: {name} must be a positive integer, got {v!r}")


def predict_copy(m: Machine, *, nbytes: int) -> KernelPrediction:
    """Device-to-device copy of nbytes (reads and writes nbytes each)."""
    _positive("copy", nbytes=nbytes)
    moved = 2.0 * nbytes
    times = {"memory": m.latency_s + moved / m.stream_bytes_per_s(moved)}
    return finish(m, op="copy", kernel="copy", flops=0.0, hbm_bytes=moved, times=times, tiles={},
                  compulsory_bytes=moved)  # fmt: skip


def predict_exp(m: Machine, *, elements: int) -> KernelPrediction:
    """y = exp(x) over elements of the dtype: read, exp on the SFU, write."""
    _positive("exp", elements=elements)
    moved = 2.0 * elements * m.elem_bytes
    times = {
        "memory": m.latency_s + moved / m.stream_bytes_per_s(moved),
        "sfu": elements / (m.sfu_rate * m.sms * m.clock_hz),
    }
    return finish(m, op="exp", kernel="exp", flops=0.0, hbm_bytes=moved, times=times, tiles={},
                  compulsory_bytes=moved, exp_ops=elements)  # fmt: skip


def predict_softmax(m: Machine, *, rows: int, cols: int, kernel: str = "softmax") -> KernelPrediction:
    """Row softmax of a rows x cols matrix (read once, written once) at the library-softmax bandwidth: the
    calibrated fraction (``efficiency.softmax``) of the bandwidth of the level that serves it."""
    _positive("softmax", rows=rows, cols=cols)
    n = float(rows) * cols
    return predict_rowwise(m, kernel=kernel, rows=rows, cols=cols, read_bytes=n * m.elem_bytes,
                           write_bytes=n * m.elem_bytes, sfu_ops=n, fma_ops=n * SOFTMAX_FMA_PER_ELEMENT)  # fmt: skip


def predict_rowwise(
    m: Machine,
    *,
    kernel: str,
    rows: int,
    cols: int,
    read_bytes: float,
    write_bytes: float,
    sfu_ops: float,
    fma_ops: float,
    reduces: bool = True,
) -> KernelPrediction:
    """A softmax-like streaming kernel: reads ``read_bytes`` and writes ``write_bytes`` once, with ``sfu_ops``
    special-function and ``fma_ops`` FP32-lane operations; row reductions (``reduces``) stream at the library
    softmax's bandwidth, pure maps at the copy's. The row softmax is one (:func:`predict_softmax`)."""
    moved = float(read_bytes) + float(write_bytes)
    clock_sms = m.sms * m.clock_hz
    stream = m.softmax_stream_bytes_per_s(moved) if reduces else m.stream_bytes_per_s(moved)
    times = {"memory": m.latency_s + moved / stream}
    if sfu_ops:
        times["sfu"] = sfu_ops / (m.sfu_rate * clock_sms)
    if fma_ops:
        times["fma"] = fma_ops / (m.fma_rate * clock_sms)
    return finish(m, op="softmax" if reduces else "elementwise", kernel=kernel, flops=0.0, hbm_bytes=moved,
                  times=times, tiles={"rows": rows, "cols": cols}, compulsory_bytes=moved, exp_ops=sfu_ops,
                  fma_ops=fma_ops)  # fmt: skip


def predict_elementwise(
    m: Machine,
    *,
    elements: int,
    reads: int,
    kernel: str,
    sfu: int = 0,
    read_bytes: float | None = None,
    write_bytes: float | None = None,
    broadcast: bool = False,
) -> KernelPrediction:
    """A streaming elementwise kernel over elements: reads operands of the dtype, writes one; sfu special-function
    evaluations per element (a SiLU's sigmoid is one exp). read_bytes / write_bytes: bytes per element read (all
    operands) and written, where they are not the dtype's (a boolean mask is one byte). broadcast: an operand
    is broadcast (stride 0 along some axis), which PyTorch runs on its non-vectorized path at the calibrated
    ``efficiency.broadcast`` of the copy bandwidth."""
    _positive(kernel, elements=elements)
    per_element = (reads * m.elem_bytes if read_bytes is None else read_bytes) + (
        m.elem_bytes if write_bytes is None else write_bytes
    )
    moved = float(elements) * per_element
    rate = m.stream_bytes_per_s(moved) * (m.broadcast_efficiency if broadcast else 1.0)
    times = {"memory": m.latency_s + moved / rate}
    if sfu:
        times["sfu"] = elements * sfu / (m.sfu_rate * m.sms * m.clock_hz)
    return finish(m, op="elementwise", kernel=kernel, flops=0.0, hbm_bytes=moved, times=times,
                  tiles={"elements": elements}, compulsory_bytes=moved, exp_ops=float(elements) * sfu)  # fmt: skip
