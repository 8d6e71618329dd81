"""Snapshots of the main screen in each scenario, at 120x36 and 80x24.

Every scenario is a scripted FeedController (fixed timestamps) and the app's clock is frozen,
so elapsed times and "seconds since the last metrics line" are the same on every run.
Update after an intended change with `pytest tests/tui --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

from tests.tui import feed
from tests.tui.harness import make_app, settle

WIDE = (120, 36)
SMALL = (80, 24)


def test_idle(snap_compare):
    assert snap_compare(make_app(feed.idle()), terminal_size=WIDE, run_before=settle)


def test_idle_small(snap_compare):
    assert snap_compare(make_app(feed.idle()), terminal_size=SMALL, run_before=settle)


def test_checks_with_failure(snap_compare):
    assert snap_compare(make_app(feed.checks_failure()), terminal_size=WIDE, run_before=settle)


def test_running_three_nodes(snap_compare):
    assert snap_compare(make_app(feed.running()), terminal_size=WIDE, run_before=settle)


def test_running_small(snap_compare):
    assert snap_compare(make_app(feed.running()), terminal_size=SMALL, run_before=settle)


def test_killed(snap_compare):
    assert snap_compare(make_app(feed.killed()), terminal_size=WIDE, run_before=settle)


def test_node_lost(snap_compare):
    assert snap_compare(make_app(feed.node_lost()), terminal_size=WIDE, run_before=settle)


def test_many_nodes_wide(snap_compare):
    assert snap_compare(make_app(feed.many_nodes()), terminal_size=(160, 44), run_before=settle)


def test_many_nodes_small_scrolls(snap_compare):
    async def focus_last(pilot):
        await settle(pilot)
        pilot.app.query_one("#node-7").focus()  # focusing scrolls the grid to it
        await settle(pilot)

    assert snap_compare(make_app(feed.many_nodes()), terminal_size=SMALL, run_before=focus_last)


def test_launch_dialog(snap_compare):
    async def open_dialog(pilot):
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()

    assert snap_compare(make_app(feed.idle()), terminal_size=WIDE, run_before=open_dialog)


def test_quit_dialog_small(snap_compare):
    async def open_dialog(pilot):
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()

    assert snap_compare(make_app(feed.running()), terminal_size=SMALL, run_before=open_dialog)


def test_node_details(snap_compare):
    async def open_details(pilot):
        await settle(pilot)
        pilot.app.query_one("#node-2").focus()
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(make_app(feed.checks_failure()), terminal_size=WIDE, run_before=open_details)
