"""TUI tests: log lines show local clock times, so every test here runs in UTC."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


SIZE = (120, 36)


@pytest.fixture
def open_app():
    """`async with open_app(ctrl) as (app, pilot):` the app on a controller, running at SIZE
    (or `size=`), its startup calls (attach, checks) done and rendered once."""
    from contextlib import asynccontextmanager

    from tests.tui.harness import make_app, settle

    @asynccontextmanager
    async def opener(ctrl, size=SIZE, settle_first=True, **run_test_kwargs):
        app = make_app(ctrl)
        async with app.run_test(size=size, **run_test_kwargs) as pilot:
            if settle_first:
                await settle(pilot)
            yield app, pilot

    return opener
