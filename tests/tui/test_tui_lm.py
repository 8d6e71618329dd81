"""The app runs an `--example lm` job like any other (issue 9): real controller, real local ranks.

LoRA fine-tuning of a tiny Llama built offline (tests/lmkit.py) on 2 local ranks, launched from
the app with l: each rank's row shows the rank's own tokens/s (the figure of its metrics.jsonl
line for the shown step, in the tok/s column), and the loss plot holds the ranks' losses step
by step. Then q → leave it running: the app exits and the ranks go on; a second app on a fresh
JobController re-attaches, shows the ranks still advancing, and k kills the job, leaving no
worker process behind.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest

from boltring.cluster.config.load import with_overrides
from boltring.cluster.jobs.controller import JobController
from boltring.tui.fmt import fmt_si
from boltring.tui.screens.quit_modal import QuitModal
from boltring.tui.widgets.loss_plot import LossPlot
from boltring.tui.widgets.rank_row import RankHeader, RankRow
from tests.lmkit import lm_controller_config, write_dataset, write_model
from tests.tui.harness import make_app, settle, wait_exit, wait_until
from tests.tui.test_tui_real import kill, launch_and_kill, metrics_lines, rank_views

pytest.importorskip("mlx_lm")

SIZE = (140, 40)


def run_dir(controller: JobController, rank: int, home: Path) -> Path:
    """The rank's run directory on this machine ("~" in the plan is the test's home)."""
    return Path(controller._ranks[rank].plan.run_dir.replace("~", str(home), 1))


def rank_pids(controller: JobController, home: Path) -> dict[int, int]:
    """Each rank's process-group leader, from the pid file spawn.py writes in its run dir."""
    return {rank: int((run_dir(controller, rank, home) / "pid").read_text()) for rank in controller._ranks}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def last_steps(controller: JobController, home: Path) -> dict[int, int]:
    """Each rank's last step in its own metrics.jsonl (read from the file, not from any app)."""
    return {
        rank: max(metrics_lines(run_dir(controller, rank, home) / "metrics.jsonl"))
        for rank in controller._ranks
    }


def tok_cell(header: str, row: str) -> str:
    """The row's text under the header's tok/s column (right-aligned like every figure)."""
    end = header.index("tok/s") + len("tok/s")
    return row[end - 6 : end].strip()


async def test_lm_job_in_the_app_tokens_loss_leave_reattach_kill(tmp_path, no_leftovers):
    model = write_model(tmp_path / "model")
    data = write_dataset(tmp_path / "data", train=48, valid=8)
    config = lm_controller_config(tmp_path, model, data, "boltring")
    config = with_overrides(config, args=[*config.job.args, "--max-seq-length", "64"])

    first = JobController(config, poll_s=0.1)
    app = make_app(first, clock=time.time)
    async with app.run_test(size=SIZE) as pilot:
        await launch_and_kill(pilot, app, ranks=2, timeout=180)  # launched, every rank reporting
        await wait_until(pilot, lambda: all(r.tokens_per_s for r in rank_views(app)), 30)
        app.refresh_now()
        # Each rank's tokens/s is its own: the figure of its metrics line for the step it shows.
        for rv in rank_views(app):
            line = metrics_lines(run_dir(first, rv.rank, no_leftovers) / "metrics.jsonl")[rv.step]
            assert rv.tokens_per_s == pytest.approx(line["tokens_per_s"]) and line["tokens_per_s"] > 0
            assert rv.loss == pytest.approx(line["loss"])
        # ... and its row shows it, in the tok/s column.
        (header,) = {h.render().plain for h in app.query(RankHeader)}
        rows = {row.rank: row.text() for row in app.query(RankRow)}
        for rv in rank_views(app):
            assert tok_cell(header, rows[rv.rank]) == fmt_si(rv.tokens_per_s), (header, rows[rv.rank])
        assert "tok/s" in app.export_screenshot()
        # The loss plot got the job's loss at every step so far, the ranks' own (the global loss:
        # every rank reports the same figure) and draws up to the last of them.
        points = dict(app.view.loss_history)
        assert sorted(points) == list(range(1, max(points) + 1)), sorted(points)[:10]
        for rank in (0, 1):
            lines = metrics_lines(run_dir(first, rank, no_leftovers) / "metrics.jsonl")
            for step, loss in points.items():
                assert loss == pytest.approx(lines[step]["loss"]), (rank, step)
        plot = app.query_one(LossPlot)
        assert plot.shown_version == app.view.loss_version
        assert f"loss · step {max(points)} " in str(plot.border_title)
        # q → leave it running: the app exits, the ranks go on.
        pids = rank_pids(first, no_leftovers)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitModal), 10)
        app.simulate_key("l")  # the app exits: Pilot's press would wait on a closed app
        await wait_exit(app, 60)
    job = first.job_id
    # No app, no controller: the ranks are alive and still writing steps.
    left_at = last_steps(first, no_leftovers)
    deadline = time.monotonic() + 30
    while not all(s > left_at[r] for r, s in last_steps(first, no_leftovers).items()):
        assert time.monotonic() < deadline, f"the ranks stopped after the app left: {left_at}"
        await asyncio.sleep(0.2)
    assert all(alive(p) for p in pids.values()), pids

    # A second app, on a fresh controller, re-attaches and follows the same ranks.
    second = JobController(config, poll_s=0.1)
    app = make_app(second, clock=time.time)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_until(pilot, lambda: app.view.running and len(rank_views(app)) == 2, 30)
        assert second.job_id == job and rank_pids(second, no_leftovers) == pids
        # It shows the ranks advancing past what their files held when it attached.
        on_disk = last_steps(second, no_leftovers)
        await wait_until(pilot, lambda: all(r.step > on_disk[r.rank] for r in rank_views(app)), 60)
        assert max(app.view.loss_history)[0] > max(points)
        (header,) = {h.render().plain for h in app.query(RankHeader)}
        rows = {row.rank: row.text() for row in app.query(RankRow)}
        for rv in rank_views(app):
            assert rv.tokens_per_s and tok_cell(header, rows[rv.rank]) == fmt_si(rv.tokens_per_s)
        await kill(pilot, app)
        assert all(r.status == "killed" for r in rank_views(app)), [r.status for r in rank_views(app)]
        app.simulate_key("q")  # nothing runs now: the app exits without asking
        await wait_exit(app)
    assert not any(alive(p) for p in pids.values()), pids
