"""The arithmetic average_gradients applies around the ring, against MLX's own ops."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from boltring.netio.buffers import SMALL_RESULT_BYTES, mlx_operands, widened_mean

SPECIALS = [0.0, -0.0, 1e-40, -3e-39, 65504.0, 1e30, float("inf"), float("-inf"), float("nan")]


def _bits(a) -> np.ndarray:
    return np.array(a).view(np.uint32)


@pytest.mark.parametrize("wire", ["bfloat16", "float16"])
@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_widened_mean_is_bitwise_the_two_ops(wire, n):
    rng = np.random.default_rng(n)
    values = np.concatenate([rng.normal(0, 1e3, 4093).astype(np.float32), np.float32(SPECIALS)])
    summed = mx.array(values).astype(getattr(mx, wire))
    got = widened_mean("float32", n)(summed)
    want = summed.astype(mx.float32) / n
    assert got.dtype == mx.float32 and got.shape == want.shape
    assert np.array_equal(_bits(got), _bits(want))


def test_widened_mean_serves_every_bucket_size_with_one_function():
    mean = widened_mean("float32", 3)
    assert widened_mean("float32", 3) is mean  # one compiled function per (dtype, ranks)
    for size in (1, 17, 1 << 16, 3 << 17):
        summed = mx.arange(size, dtype=mx.float32).astype(mx.bfloat16)
        got = mean(summed)
        assert got.shape == (size,)
        assert np.array_equal(_bits(got), _bits(summed.astype(mx.float32) / 3))


# -- mlx_operands: what the ring reads and where it writes ---------------------------------------
def _memory(x) -> np.ndarray:
    return np.frombuffer(memoryview(x), dtype=np.uint8)


@pytest.mark.parametrize(
    "dtype,n",
    [("float32", 1024), ("float16", 7), ("int32", 1 << 18), ("float32", (1 << 18) + 1), ("bfloat16", 33)],
)
def test_mlx_operands_read_the_callers_array_in_place_and_write_a_new_one(dtype, n):
    x = mx.arange(n).astype(getattr(mx, dtype))
    mx.eval(x)
    ops = mlx_operands(x)
    assert np.shares_memory(ops.src, _memory(x))  # read in place: no copy of the input
    dst = ops.alloc()
    assert dst.flags.writeable and dst.size == n and not np.shares_memory(dst, _memory(x))
    dst[:] = ops.src[::-1]  # what the ring would do: write every element of the result
    assert ops.result.dtype == x.dtype and ops.result.shape == x.shape
    assert np.array_equal(np.array(ops.result.view(mx.uint8)), np.array(x[::-1].view(mx.uint8)))


def test_mlx_operands_small_results_come_from_numpy_memory_large_ones_from_mlx():
    small = mx.ones((SMALL_RESULT_BYTES // 4,))
    large = mx.ones((SMALL_RESULT_BYTES // 4 + 1,))
    mx.eval(small, large)
    # Both results are plain evaluated arrays the caller can use at once; the small one is
    # materialised as soon as it is made (no mx.eval round trip), the large one after alloc().
    for x in (small, large):
        ops = mlx_operands(x)
        ops.alloc()[:] = 2
        assert mx.all(ops.result == 2).item()
    half = mx.ones((16,), dtype=mx.bfloat16)  # numpy has no bfloat16: the MLX path, same result
    ops = mlx_operands(half)
    assert ops.alloc().dtype == np.uint16 and ops.result.dtype == mx.bfloat16


@pytest.mark.parametrize("view", ["transposed", "strided", "broadcast"])
def test_mlx_operands_of_a_view_read_its_values_in_c_order(view):
    base = mx.arange(24, dtype=mx.float32).reshape(4, 6)
    x = {"transposed": base.T, "strided": base[:, ::2], "broadcast": mx.broadcast_to(base[:1], (3, 6))}[view]
    mx.eval(x)
    ops = mlx_operands(x)
    np.testing.assert_array_equal(ops.src, np.array(x).reshape(-1))
    assert ops.alloc().size == x.size and ops.result.shape == x.shape
