"""The arithmetic average_gradients applies around the ring, against MLX's own ops."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from boltring.netio.buffers import widened_mean

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
