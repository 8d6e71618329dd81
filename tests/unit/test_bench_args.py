"""`boltring bench`'s sizes and memory check: refused in one line before any rank starts."""

from __future__ import annotations

import pytest

from boltring.cluster.jobs.bench import MAX_ELEMENTS, BenchError, fits_local_memory, parse_sizes


def test_sizes_are_binary_units_each_once_in_the_order_given():
    assert parse_sizes("16MB, 4KB,16MB,,4096", 4) == [16 << 20, 4 << 10]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "names no size"),
        (" , ", "names no size"),
        ("0", "is less than one 4-byte element"),
        ("3", "is less than one 4-byte element"),  # was timed as 1 element, shown as 3 B
        ("6B", "is not a whole number of 4-byte elements"),
        ("1TB", f"MLX arrays hold at most {MAX_ELEMENTS:,}"),  # was an OverflowError in every rank
        ("lots", "cannot read size 'lots'"),
    ],
)
def test_sizes_that_cannot_be_benchmarked_are_one_line(text, said):
    with pytest.raises(BenchError, match=said):
        parse_sizes(text, 4)


def test_two_byte_dtypes_take_two_byte_sizes():
    assert parse_sizes("6B", 2) == [6]


def test_local_ranks_that_would_not_fit_in_memory_are_refused():
    fits_local_memory(2, 1 << 20)
    with pytest.raises(BenchError, match=r"8 local ranks x 1024 GB need about 16384.0 GB of memory"):
        fits_local_memory(8, 1 << 40)
