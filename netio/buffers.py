"""Arrays as raw bytes for the ring, without needless copies, and the reductions it applies.

The ring reads the caller's array through a 1-D numpy view of its own memory
(`memoryview(mx.array)` is zero-copy) and writes the sum into a new array's memory, which it
owns: the caller's array is never written, and no copy of it is ever made.
bfloat16 has no buffer-protocol format: it travels as uint16 bits and is summed in float32
with round-to-nearest-even, which is what MLX itself does for bf16 adds.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# name on the wire -> numpy dtype of the view the ring works on
WIRE_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),
    "float64": np.dtype(np.float64),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint32": np.dtype(np.uint32),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
}


def add_into(out: np.ndarray, a: np.ndarray, b: np.ndarray, wire_dtype: str) -> None:
    """out = a + b, elementwise, in the dtype's own arithmetic (integers wrap like MLX's).
    `out` may be `a` itself (in place)."""
    if wire_dtype == "bfloat16":
        _bf16_add_into(out, a, b)
    else:
        np.add(a, b, out=out)


_work = threading.local()  # per thread: both ring directions add at the same time


def _work_buffers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two uint32 and one bool buffer of at least n elements, reused by this thread."""
    bufs = getattr(_work, "bufs", None)
    if bufs is None or bufs[0].size < n:
        bufs = (np.empty(n, np.uint32), np.empty(n, np.uint32), np.empty(n, np.bool_))
        _work.bufs = bufs
    return bufs[0][:n], bufs[1][:n], bufs[2][:n]


def _bf16_add_into(out: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """bf16 bits out = round_to_nearest_even(float32(x) + float32(y)); out may be x.

    Every step writes into reused buffers: the straightforward numpy expression allocated
    seven temporaries per call and ran 18x slower (26 ms against 1.45 ms per million
    elements on the 2-core VM), which made a bf16 wire slower than float32."""
    a, b, nan = _work_buffers(x.size)
    np.left_shift(x, 16, out=a, dtype=np.uint32)
    np.left_shift(y, 16, out=b, dtype=np.uint32)
    total = a.view(np.float32)
    np.add(total, b.view(np.float32), out=total)
    # round to nearest even on the upper 16 bits: + 0x7FFF + (bit 16 of the sum)
    np.right_shift(a, 16, out=b)
    np.bitwise_and(b, 1, out=b)
    np.add(b, 0x7FFF, out=b)
    np.add(b, a, out=b)
    np.right_shift(b, 16, out=b)
    # NaN must stay NaN: rounding a NaN with only low mantissa bits would make it infinity.
    np.isnan(total, out=nan)
    if nan.any():
        np.putmask(b, nan, 0x7FC0)
    np.copyto(out, b, casting="unsafe")


SMALL_RESULT_BYTES = 1 << 20  # results up to this size come from numpy memory (mlx_operands)


def _mlx_buffer(x: Any) -> memoryview:
    """An evaluated mx.array's own memory (mx.array has the buffer protocol; the stubs do not say so)."""
    return memoryview(x)


def numpy_wire_dtype(arr: np.ndarray) -> str:
    name = arr.dtype.name
    if name not in WIRE_DTYPES or name == "bfloat16":
        raise TypeError(
            f"all_sum does not support numpy dtype {name}; "
            f"supported: {', '.join(k for k in WIRE_DTYPES if k != 'bfloat16')}"
        )
    return name


@dataclass
class Operands:
    """What the ring reads (src), where it writes (alloc() -> dst, called once the first hop
    is under way) and what the caller gets back (result)."""

    src: np.ndarray  # flat, C-contiguous, read only: the caller's own memory, never written
    alloc: Callable[[], np.ndarray]  # flat, writable view of `result`'s memory
    result: Any
    wire: str
    keep: Any = None  # keeps the array behind `src` alive for the whole collective


def numpy_operands(arr: np.ndarray) -> Operands:
    wire = numpy_wire_dtype(arr)
    src = np.ascontiguousarray(arr)  # no copy when it is already contiguous
    out = np.empty(arr.shape, dtype=arr.dtype)  # pages are touched as results arrive
    return Operands(src=src.reshape(-1), alloc=lambda: out.reshape(-1), result=out, wire=wire)


def mlx_operands(x) -> Operands:
    """Read the caller's mx.array in place; the result is a new array whose memory is
    allocated (zero-filled by MLX, asynchronously) while our first chunks are already sent.

    Each `mx.eval` that has work to do is a round trip through MLX's scheduler, about 50 us on
    the 2-core VM whatever the size: enough to double a small allreduce. So an array that is
    already evaluated and in C order is read as it is, and a result of up to
    SMALL_RESULT_BYTES is made from a numpy buffer (`mx.array` copies it at once, 2 us at 4 KiB
    and 27 us at 1 MiB) instead of `mx.zeros` and an eval."""
    import mlx.core as mx

    name = str(x.dtype).split(".")[-1]
    if name not in WIRE_DTYPES:
        raise TypeError(f"all_sum does not support dtype {name}; supported: {', '.join(WIRE_DTYPES)}")
    mx.eval(x)  # nothing to do (0.3 us) when the caller evaluated it
    src_arr, view = x, _c_order_buffer(x)
    if view is None:  # a transposed or strided view: the ring reads flat C order
        src_arr = mx.contiguous(x)
        mx.eval(src_arr)
        view = _mlx_buffer(src_arr)
    src = np.frombuffer(view, dtype=WIRE_DTYPES[name])  # read-only, no copy
    if src.nbytes <= SMALL_RESULT_BYTES:
        small = mx.array(np.empty(x.shape, dtype=WIRE_DTYPES[name]))
        if small.dtype == x.dtype:  # not bfloat16 (numpy has none) nor float64 (MLX narrows it)
            return Operands(
                src=src, alloc=lambda: _writable(small, name), result=small, wire=name, keep=src_arr
            )
    out = _filled_result(x)
    mx.async_eval(out)

    def alloc() -> np.ndarray:
        mx.eval(out)
        return _writable(out, name)

    return Operands(src=src, alloc=alloc, result=out, wire=name, keep=src_arr)


def mlx_async_operands(x) -> tuple[Callable[[], Operands], Any]:
    """mlx_operands for a collective that runs on another thread, without waiting here.

    Returns (ready, result). On the calling thread only lazy graph work happens: x made C-ordered
    (`mx.contiguous` shares x's buffer when it already is, no copy) and the result, both started
    with `mx.async_eval`, which returns at once even when x ends a long computation. `ready()`,
    called on the communication thread, waits for those evaluations (reading an array's memory
    waits for it; nothing new is scheduled there) and returns the Operands; `result` is the
    array the caller gets back, filled by the ring."""
    import mlx.core as mx

    name = str(x.dtype).split(".")[-1]
    if name not in WIRE_DTYPES:
        raise TypeError(f"all_sum does not support dtype {name}; supported: {', '.join(WIRE_DTYPES)}")
    src_arr = mx.contiguous(x)
    out = _filled_result(x)
    mx.async_eval(src_arr, out)

    def ready() -> Operands:
        src = np.frombuffer(_mlx_buffer(src_arr), dtype=WIRE_DTYPES[name])
        return Operands(src=src, alloc=lambda: _writable(out, name), result=out, wire=name, keep=src_arr)

    return ready, out


def _filled_result(x):
    """A new array of x's shape and dtype, zero-filled as bytes: MLX fills a uint8 array with
    libc's memset (perf shows it), faster than its float fill (64 MiB: 2.5 against 3.6 ms on
    the 2-core VM), and a view of it as x's dtype shares its memory. Every byte is overwritten
    by the ring anyway; MLX has no unfilled array to offer instead."""
    import mlx.core as mx

    raw = mx.zeros((x.size * x.itemsize,), dtype=mx.uint8)
    return mx.view(raw, x.dtype).reshape(x.shape)


def _c_order_buffer(x) -> memoryview | None:
    """x's own memory when it is one C-ordered block; None for a view with other strides."""
    try:
        view = _mlx_buffer(x)
    except BufferError:  # MLX refuses some strided views outright
        return None
    return view if view.c_contiguous else None


def _writable(arr, name: str) -> np.ndarray:
    flat = np.frombuffer(_mlx_buffer(arr), dtype=WIRE_DTYPES[name])
    if not flat.flags.writeable:
        raise RuntimeError("this MLX build exposes read-only buffers; boltring needs writable ones")
    return flat


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_kept = False


def keep_freed_memory() -> bool:
    """Keep large freed blocks in the process heap instead of returning them to the kernel.

    Why: every all_sum returns a new array, and a training step allocates the same gradient
    sizes again and again. glibc maps every block above 32 MiB fresh from the kernel and unmaps
    it on free, so each 64 MiB result page-faults all its 16 K pages again: measured on the
    2-core VM, 16 385 faults and about 25 ms of kernel time per call, half the CPU time of a
    2-rank allreduce (README, Performance). With mmap off for malloc, freed blocks stay in the
    heap and are reused warm, which is what a caching allocator does. The cost: the rank's RSS
    stays at its peak. Only glibc has mallopt; elsewhere (macOS, musl) this does nothing and
    returns False. MLX's GPU arrays on a Mac come from MLX's own buffer cache anyway.
    """
    global _kept
    if _kept:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept


def keep_mlx_buffers() -> int:
    """Let MLX keep freed buffers up to its memory limit for reuse; returns the cache limit.

    Why: MLX's own allocator caches freed buffers and hands them out again for the next
    allocation of that size, warm and without a trip to malloc. Its documented default cache
    limit is the memory limit, which is what MLX on a Mac's GPU gets; the CPU build here (mlx
    0.32, Linux) sets 32 MiB instead, so any larger result went back to malloc every step. Back
    in glibc's heap (see keep_freed_memory), a freed 256 MiB result was sometimes split by a
    small allocation before the next step asked for the same size again: measured with
    `boltring bench` at 256 MB, rank 0's peak RSS then held two results (512 MB extra) in 7 of
    25 cells; with the cache, in none of 21 (README, Performance). A larger limit set by the
    user stays.
    """
    import mlx.core as mx

    limit = int(mx.get_memory_limit())
    previous = int(mx.set_cache_limit(limit))
    if previous > limit:
        mx.set_cache_limit(previous)
        return previous
    return limit


def mlx_inplace_operands(flat) -> Operands:
    """Sum an evaluated 1-D mx.array that we own (a concatenated gradient bucket) in place:
    no output to allocate, and the array itself is the result."""
    import mlx.core as mx

    name = str(flat.dtype).split(".")[-1]
    if name not in WIRE_DTYPES:
        raise TypeError(f"all_sum does not support dtype {name}; supported: {', '.join(WIRE_DTYPES)}")
    mx.eval(flat)
    view = _writable(flat, name)
    return Operands(src=view, alloc=lambda: view, result=flat, wire=name, keep=flat)


@functools.cache
def widened_mean(dtype_name: str, n: int) -> Callable[[Any], Any]:
    """s -> s.astype(dtype) / n as one compiled MLX kernel: the half-precision bucket that comes
    back from the ring is read once and the float32 mean written once. As two ops it is read,
    written in float32, read again and written again: 7.8 ms against 4.2 ms per 16 Mi elements
    on the 2-core VM. Bitwise the same as the two ops. `shapeless` so that every bucket size
    shares one trace; where MLX cannot compile (a CPU build with no C++ compiler on PATH) it
    runs the same ops unfused."""
    import mlx.core as mx

    dtype = getattr(mx, dtype_name)

    def mean(s):
        return s.astype(dtype) / n

    return mx.compile(mean, shapeless=True)
