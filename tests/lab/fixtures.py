"""pytest fixtures for the netns lab (registered through `pytest_plugins` in tests/conftest.py).

- `lab3`: one 3-host Lab for the whole session (built once, about 0.1 s, torn down at the end).
- `lab`: the same Lab for one test; `lab.reset()` runs before and after it, so faults a test
  makes (sshd stopped, keys changed, links down, routes, shaping) never leak into the next.
- `require_lab()`: skip when the machine cannot build labs, but FAIL under CI=true: the
  integration tests must run in CI.

Mark tests that use them `@pytest.mark.netns`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .netns import Lab, lab_available


def skip_unless_ci(reason: str) -> None:
    """Skip a test this machine cannot run (no root, no iproute2…), but FAIL under CI=true:
    CI runs as root with the packages .ci/run installs, so there a skip would hide a test."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (in CI this test must run)", pytrace=False)
    pytest.skip(reason)


def require_lab() -> None:
    reason = lab_available()
    if reason is not None:
        skip_unless_ci(f"netns lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab3() -> Iterator[Lab]:
    require_lab()
    with Lab(3) as lab:
        yield lab


@pytest.fixture
def lab(lab3: Lab) -> Iterator[Lab]:
    lab3.reset()
    try:
        yield lab3
    finally:
        lab3.reset()
