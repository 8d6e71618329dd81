"""Fixtures shared by the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.fixtures import require_lab
from tests.lab.netns import Lab


@pytest.fixture(scope="module")
def lab2_at_2gbit() -> Iterator[Lab]:
    """Two test hosts whose ring links are shaped to 2 Gbit/s each way, for one module's tests."""
    require_lab()
    with Lab(2) as lab:
        for h in lab.hosts:
            lab.shape(h, 2000)
        yield lab
