"""Helpers of the TUI tests: build the app for a controller, let it settle, wait for its exit.

A real-controller test can use them the same way:
    app = make_app(JobController(config), clock=time.time)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from boltring.tui.app import BoltringApp
from tests.tui import feed


def make_app(controller, clock: Callable[[], float] = feed.frozen_clock) -> BoltringApp:
    return keep_toasts(BoltringApp(controller, clock=clock, cursor_blink=False))


def keep_toasts(app: BoltringApp) -> BoltringApp:
    """Toasts that stay: a toast expires on a real timer, whatever the app's clock. With four
    test workers on two cores a snapshot was once taken after a 6 s toast ("1 check failed")
    had gone, and a test reading app._notifications could miss one the same way. No test
    checks when a toast goes."""
    notify = app.notify
    app.notify = lambda *args, timeout=None, **kw: notify(*args, timeout=3600, **kw)  # type: ignore[method-assign]
    return app


def _exited(app: BoltringApp) -> bool:
    return app.return_code is not None or not app.is_running


async def settle(pilot, rounds: int = 3) -> None:
    """Let the app's short controller calls (attach, checks) finish and their events arrive,
    then render everything once. Stops early once the app has exited: Pilot's pauses never
    return on a closed app."""
    app = pilot.app

    def busy() -> bool:
        return bool(len(app.inbox)) or any(w.group == "controller" and w.is_running for w in app.workers)

    for i in range(100):
        if _exited(app) or (i >= rounds and not busy()):
            break
        await pilot.pause()
    if not _exited(app):
        app.refresh_now()
        await pilot.pause()


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll (rendering as it goes) until predicate() holds; fail after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out waiting"
        await pilot.pause(0.1)
    pilot.app.refresh_now()


async def wait_exit(app: BoltringApp, timeout: float = 10.0) -> None:
    """Wait (without Pilot) for the app to exit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while app.return_code is None and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert app.return_code is not None, "the app did not exit"
