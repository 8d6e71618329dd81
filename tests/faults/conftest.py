"""Fixtures of the fault suite."""

from __future__ import annotations

import os

import pytest

from boltring.netio import init


@pytest.fixture
def solo(tmp_path, monkeypatch):
    """A real 1-rank group (no launcher environment), run directory in tmp_path."""
    for key in list(os.environ):
        if key.startswith("BOLTRING_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    with init() as group:
        yield group
