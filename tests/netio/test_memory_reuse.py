"""A rank's results reuse warm memory: MLX's buffer cache holds freed results for the next step.

Each all_sum returns a new array of the same size as the step before; without reuse, each
one would fault in fresh pages (the kernel zeroes every one) and, back in malloc's heap, could
be split by small allocations so that two results' worth of memory stays resident.
"""

from __future__ import annotations

import resource

import mlx.core as mx
import pytest

from boltring.netio.buffers import keep_mlx_buffers

MIB = 1 << 20


@pytest.fixture
def mlx_cache_limit():
    previous = mx.set_cache_limit(0)  # start from an empty cache and the CPU build's small default
    mx.clear_cache()
    mx.set_cache_limit(32 * MIB)
    yield
    mx.set_cache_limit(previous)
    mx.clear_cache()


def _faults_of_a_fresh_result(nbytes: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = mx.zeros((nbytes // 4,), dtype=mx.float32)
    mx.eval(x)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_freed_result_is_reused_without_page_faults(mlx_cache_limit):
    size = 96 * MIB  # above the CPU build's 32 MiB default cache limit
    limit = keep_mlx_buffers()
    assert limit == mx.get_memory_limit()
    _faults_of_a_fresh_result(size)  # first allocation: its pages are new
    assert mx.get_cache_memory() >= size  # freed into MLX's cache, not back to malloc
    assert _faults_of_a_fresh_result(size) < 64  # 24 576 pages if it were fresh


def test_without_it_the_same_result_faults_every_time(mlx_cache_limit):
    """The control: what keep_mlx_buffers changes, on this build."""
    size = 96 * MIB
    _faults_of_a_fresh_result(size)
    assert mx.get_cache_memory() < size


def test_a_larger_limit_set_by_the_user_stays(mlx_cache_limit):
    mine = mx.get_memory_limit() * 2
    mx.set_cache_limit(mine)
    assert keep_mlx_buffers() == mine
    assert mx.set_cache_limit(mine) == mine  # still in force
