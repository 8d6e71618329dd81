"""Snapshots of the app in each scenario and size, as one parametrized test.

Every scenario is a scripted FeedController (fixed timestamps) and the app's clock is frozen,
so elapsed times and "seconds since the last metrics line" are the same on every run.
Update after an intended change with `pytest tests/tui --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.tui import feed
from tests.tui.harness import keep_toasts, make_app, settle

SMALL, WIDE, TALL, HUGE = (80, 24), (120, 36), (120, 40), (200, 60)


async def press(pilot, *keys: str) -> None:
    await settle(pilot)
    await pilot.press(*keys)
    await pilot.pause()
    await settle(pilot)


def keys(*pressed: str) -> Callable[..., Awaitable[None]]:
    async def run(pilot):
        await press(pilot, *pressed)

    return run


async def focus_last(pilot):
    await settle(pilot)
    pilot.app.query_one("#node-7").focus()  # focusing scrolls the grid to it
    await settle(pilot)


async def open_details(pilot):
    await settle(pilot)
    pilot.app.query_one("#node-2").focus()
    await pilot.press("enter")
    await settle(pilot)


async def filter_text(pilot):
    await press(pilot, "slash", *"slow")


SCENARIOS = {
    # name: (controller, size, what to do before the snapshot)
    "idle": (feed.idle, WIDE, settle),
    "idle_small": (feed.idle, SMALL, settle),
    "checks_with_failure": (feed.checks_failure, WIDE, settle),
    "running_small": (feed.running, SMALL, settle),
    "running_120x40": (feed.running, TALL, settle),
    "running_200x60": (feed.running, HUGE, settle),
    "killed_by_boltring_kill": (feed.killed, WIDE, settle),
    "stalled_rank": (feed.stalled, WIDE, settle),
    "restarted": (feed.restarted, WIDE, settle),
    "node_lost": (feed.node_lost, WIDE, settle),
    "unreachable_nodes": (feed.unreachable, WIDE, settle),
    "connecting_countdown": (feed.connecting, SMALL, settle),
    "many_nodes_wide": (feed.many_nodes, (160, 44), settle),
    "many_nodes_small_scrolls": (feed.many_nodes, SMALL, focus_last),
    "launch_dialog": (feed.idle, WIDE, keys("l")),
    "launch_dialog_failed_checks": (feed.unreachable, WIDE, keys("l")),
    "quit_dialog_small": (feed.running, SMALL, keys("q")),
    "node_details": (feed.checks_failure, WIDE, open_details),
    "log_filter_with_text": (feed.running, WIDE, filter_text),
    "help": (feed.idle, TALL, keys("question_mark")),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_screen(snap_compare, name):
    make, size, before = SCENARIOS[name]
    assert snap_compare(make_app(make()), terminal_size=size, run_before=before)


def test_history_screen(snap_compare, tmp_path):
    """`h`: two past jobs (one killed by `boltring kill`), the highlighted one's loss curve."""
    import json

    from boltring.cluster.jobs.history import RunRecord
    from boltring.tui.app import BoltringApp

    rank_dir = tmp_path / "rank0"
    rank_dir.mkdir()
    lines = [{"kind": "step", "step": s, "loss": 2.3 * 0.97**s, "wall": 1000.0 + s} for s in range(1, 201)]
    (rank_dir / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    ranks = [{"rank": 0, "node": "mini1", "run_dir": str(rank_dir)}]
    runs = [
        RunRecord(
            "lab-20260101-130000-cd34",
            "configs/lab.yaml",
            "finished",
            900.0,
            200,
            200,
            2.2310,
            0.0052,
            312.0,
            "~/.boltring/runs/lab-20260101-130000-cd34",
            ranks=ranks,
        ),
        RunRecord(
            "lab-20260101-120000-ab12",
            "configs/lab.yaml",
            "killed",
            800.0,
            200,
            110,
            2.28,
            0.1043,
            102.0,
            "~/.boltring/runs/lab-20260101-120000-ab12",
            stopped_by="boltring kill",
        ),
    ]
    app = keep_toasts(
        BoltringApp(feed.idle(), clock=feed.frozen_clock, cursor_blink=False, history=lambda: runs)
    )

    async def open_history(pilot):
        await press(pilot, "h")
        await pilot.pause(0.3)
        await settle(pilot)

    assert snap_compare(app, terminal_size=WIDE, run_before=open_history)
