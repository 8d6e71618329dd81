"""The app on real local ranks when something goes wrong: what it says must be true.

A frozen rank: while the job is stalled the header shows no live-looking rate or ETA; once it
fails, the frozen rank's row says why it is blamed (as the header does), not only that boltring
stopped it.
"""

from __future__ import annotations

import os
import signal
import time

from boltring.cluster.config.load import load_config
from boltring.cluster.jobs.controller import JobController
from boltring.tui.widgets.rank_row import RankRow
from boltring.tui.widgets.status_header import StatusHeader
from tests.faults.helpers import rank_pid, write_config
from tests.tui.harness import make_app, settle, wait_exit, wait_until


def header(app) -> str:
    return app.query_one(StatusHeader)._last.plain


async def test_a_frozen_rank_is_stalled_then_blamed_in_its_own_row(tmp_path, no_leftovers):
    cfg = load_config(str(write_config(tmp_path, ranks=2, job="steps: 1000000", ring="timeout: 8")))
    controller = JobController(cfg, poll_s=0.1)
    app = make_app(controller, clock=time.time)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmModal", 10)
        await pilot.press("a" if app.screen.anyway else "y")
        await wait_until(pilot, lambda: all(r.step >= 20 for r in app.view.ranks.values()), 90)
        assert "ETA" in header(app) and "smp/s" in header(app)
        pid = rank_pid(controller, 1, no_leftovers)
        os.killpg(pid, signal.SIGSTOP)
        try:
            await wait_until(pilot, lambda: app.view.state == "stalled", 30)
            stalled = header(app)
            await wait_until(pilot, lambda: app.view.state == "failed", 60)
        finally:
            try:
                os.killpg(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        await settle(pilot)
        failed = header(app)
        rows = {row.rank: row.text() for row in app.query(RankRow)}
        app.simulate_key("q")  # the app exits: Pilot's press would wait on a closed app
        await wait_exit(app)
    first = stalled.splitlines()[0]
    assert "ETA stalled" in first and "smp/s" not in first, stalled
    assert "rank 1 on local stopped responding" in failed and "frozen (SIGSTOP)" in failed, failed
    assert "stopped responding" in rows[1] and "was stopped by boltring" not in rows[1], rows
    assert "receiving from rank 1" in rows[0] or "sending to rank 1" in rows[0], rows


async def test_ranks_boltring_stopped_say_why_the_blamed_one_first(open_app):
    """Rank 2 froze: boltring stopped it and rank 0, while rank 1 failed of it on its own."""
    from boltring.cluster.jobs.events import Blamed, JobStateChanged, RankExited
    from boltring.cluster.states import JobState, StoppedBy
    from tests.tui import feed

    t = feed.CLOCK
    cause = "rank 2 on mini2 stopped responding (no heartbeat for 9 s), its process is frozen (SIGSTOP)"
    blamed = Blamed(2, "mini2", cause.removeprefix("rank 2 on mini2 "))  # as watch.py fills it in
    async with open_app(feed.running(), size=(160, 40)) as (app, pilot):
        app.controller.emit(
            RankExited(1, "mini1", returncode=1, reason="timed out receiving from rank 2", t=t),
            RankExited(2, "mini2", -9, reason="was stopped by boltring", stopped_by=StoppedBy.BOLTRING, t=t),
            RankExited(0, "mini1", -15, reason="was stopped by boltring", stopped_by=StoppedBy.BOLTRING, t=t),
            JobStateChanged(
                JobState.FAILED,
                reason=f"{cause}; evidence: rank 1 on mini1 timed out receiving from rank 2",
                blamed=blamed,
                t=t,
            ),
        )
        await settle(pilot)
        rows = {row.rank: row.text() for row in app.query(RankRow)}
        top = header(app)
        reasons = {r.rank: (r.status, r.reason) for r in app.view.ranks.values()}
    assert "failed: " + cause in top
    assert reasons[2] == ("failed", cause.removeprefix("rank 2 on mini2 ")), reasons
    assert reasons[0] == ("killed", "by boltring, because of rank 2"), reasons
    assert reasons[1] == ("failed", "timed out receiving from rank 2"), reasons
    assert rows[2].startswith("r2   failed at step 120: stopped responding"), rows
    assert rows[0].startswith("r0   stopped at step 120: by boltring, because"), rows
    assert "was stopped by boltring" not in "".join(rows.values()), rows


async def test_a_stalled_job_shows_no_live_rate_or_eta(open_app):
    from tests.tui import feed

    async with open_app(feed.stalled(), size=(200, 40)) as (app, pilot):
        first = header(app).splitlines()[0]
    assert "ETA stalled" in first and "smp/s" not in first, first
