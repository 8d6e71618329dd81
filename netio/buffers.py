"""Arrays as raw bytes for the ring, without needless copies, and the reductions it applies.

The ring works on a 1-D numpy view of a buffer the caller owns. For MLX arrays that view is
the array's own memory (`memoryview(mx.array)` is zero-copy and writable, as MLX documents
for the buffer protocol), so we reduce in place into a fresh copy and hand that copy back.
bfloat16 has no buffer-protocol format: it travels as uint16 bits and is summed in float32
with round-to-nearest-even, which is what MLX itself does for bf16 adds.
"""

from __future__ import annotations

import numpy as np

# name on the wire -> numpy dtype of the view the ring works on
WIRE_DTYPES = {
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


def add_into(dst: np.ndarray, src: np.ndarray, wire_dtype: str) -> None:
    """dst += src, elementwise, in the dtype's own arithmetic (integers wrap like MLX's)."""
    if wire_dtype == "bfloat16":
        _bf16_add_into(dst, src)
    else:
        np.add(dst, src, out=dst)


def _bf16_add_into(dst: np.ndarray, src: np.ndarray) -> None:
    a = (dst.astype(np.uint32) << 16).view(np.float32)
    b = (src.astype(np.uint32) << 16).view(np.float32)
    total = a + b
    bits = total.view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    # NaN must stay NaN: rounding a NaN with only low mantissa bits would make it infinity.
    rounded = np.where(np.isnan(total), 0x7FC0, rounded)
    dst[...] = rounded.astype(np.uint16)


def numpy_wire_dtype(arr: np.ndarray) -> str:
    name = arr.dtype.name
    if name not in WIRE_DTYPES or name == "bfloat16":
        raise TypeError(f"all_sum does not support numpy dtype {name}; "
                        f"supported: {', '.join(k for k in WIRE_DTYPES if k != 'bfloat16')}")
    return name


def owned_copy_numpy(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(result array, its flat view, wire dtype): a C-contiguous copy we may write into."""
    wire = numpy_wire_dtype(arr)
    out = np.array(arr, dtype=arr.dtype, order="C", copy=True)
    return out, out.reshape(-1), wire


def owned_copy_mlx(x):
    """(result mx.array, flat numpy view of its memory, wire dtype) for an mx.array input.

    One copy: numpy view of the caller's array (no copy) -> mx.array(...) (the copy). We then
    write into that fresh array's memory only, never into the caller's.
    """
    import mlx.core as mx

    name = str(x.dtype).split(".")[-1]
    if name not in WIRE_DTYPES:
        raise TypeError(f"all_sum does not support dtype {name}; supported: {', '.join(WIRE_DTYPES)}")
    src = mx.contiguous(x)  # the buffer protocol needs C order; a no-op for most arrays
    mx.eval(src)
    bits = np.frombuffer(memoryview(src), dtype=WIRE_DTYPES[name])  # read-only, no copy
    out = mx.array(bits)  # the one copy: memory we own and may write into
    if name == "bfloat16":
        out = out.view(mx.bfloat16)
    out = out.reshape(x.shape)
    mx.eval(out)
    flat = np.frombuffer(memoryview(out), dtype=WIRE_DTYPES[name])
    if not flat.flags.writeable:
        raise RuntimeError("this MLX build exposes read-only buffers; boltring needs writable ones")
    return out, flat, name
