"""What the app says must be true when the job moves under a dialog, when a launch fails for a
reason of its own, and when the app exits with a controller call still open.

Driven by the scripted FeedController (tests/tui/feed.py): the app decides each of these before
or without calling the controller. test_app_truth_real.py has the cases that need a real one.
"""

from __future__ import annotations

import asyncio

from textual.worker import WorkerState

from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.jobs.events import JobStateChanged, JobSummary
from boltring.cluster.jobs.job_args import JobArgsRefused
from boltring.cluster.states import JobState
from boltring.tui.screens.confirm import ConfirmModal
from boltring.tui.screens.quit_modal import QuitModal
from boltring.tui.widgets.status_header import StatusHeader
from tests.tui import feed
from tests.tui.harness import make_app, settle, wait_exit


def log_lines(app) -> list[str]:
    return [e.text for e in app.view.log]


def toasts(app) -> list[str]:
    return [n.message for n in app._notifications]


# -- exiting with a controller call open ----------------------------------------------------------


async def test_exit_with_a_controller_call_open_leaves_no_worker_error():
    """The app closes while a worker waits on the controller (here: following the running job).
    Its cancellation runs `_call`'s `finally` after the screens are gone; the footer update there
    raised ScreenStackError, turning a clean cancel into a worker error."""
    app = make_app(feed.running())
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        waiting = [w for w in app.workers if w.group == "job" and w.is_running]
        assert waiting, "the job is followed"
    await asyncio.sleep(0)
    assert all(w.state == WorkerState.CANCELLED for w in waiting), [repr(w.error) for w in waiting]


async def test_quit_from_the_dialog_with_a_launch_still_open_exits_cleanly(open_app):
    """q → Leave while the launch worker is still inside controller.launch(): the app exits and
    the worker, cancelled after the screens are gone, ends without an error."""
    ctrl = feed.idle()
    gate = asyncio.Event()

    async def slow_launch(resume: bool = False) -> str:
        ctrl.emit(JobStateChanged(JobState.LAUNCHING, job_id=feed.JOB_ID, t=feed.CLOCK))
        await gate.wait()  # never set: the launch is still emitting when the app goes
        return feed.JOB_ID

    ctrl.launch = slow_launch  # type: ignore[method-assign]
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        launching = [w for w in app.workers if w.group == "job" and w.is_running]
        assert launching and app.view.state == JobState.LAUNCHING
        await pilot.press("q")
        await pilot.pause()
        app.simulate_key("l")
        await wait_exit(app)
    await asyncio.sleep(0)
    assert all(w.state == WorkerState.CANCELLED for w in launching), [repr(w.error) for w in launching]


async def test_a_call_failing_as_the_app_exits_is_reported_without_raising():
    """A launch interrupted by the app's exit may end in an error of its own (its clean-up
    failed) rather than the cancel: it is reported (log line, view.error) with no screen to
    draw on, and the worker ends normally instead of raising ScreenStackError."""
    ctrl = feed.idle()
    gate = asyncio.Event()

    async def launch_that_fails_when_interrupted(resume: bool = False) -> str:
        ctrl.emit(JobStateChanged(JobState.LAUNCHING, job_id=feed.JOB_ID, t=feed.CLOCK))
        try:
            await gate.wait()
        except asyncio.CancelledError:
            raise ControllerError(
                "the launch was interrupted and its job record could not be written"
            ) from None
        return feed.JOB_ID

    ctrl.launch = launch_that_fails_when_interrupted  # type: ignore[method-assign]
    app = make_app(ctrl)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        launching = [w for w in app.workers if w.group == "job" and w.is_running]
        assert launching
    await asyncio.sleep(0)
    assert all(w.state == WorkerState.SUCCESS for w in launching), [repr(w.error) for w in launching]
    assert (
        app.view.error
        == "launching failed: the launch was interrupted and its job record could not be written"
    )


# -- a cancelled resume logs nothing --------------------------------------------------------------


async def test_resume_is_logged_only_once_confirmed(open_app):
    resume_from = "step 200 (step-000200.safetensors)"
    ctrl = feed.FeedController(feed.lab_config(), check_events=feed.check_events(), resume_from=resume_from)
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await settle(pilot)
        assert not any("resume from" in line for line in log_lines(app))
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert ("launch", True) in ctrl.calls
        assert log_lines(app).count(f"resume from {resume_from}") == 1


# -- a launch failure is blamed on a node only when it is about that node -----------------------

BAD_ARGS = JobArgsRefused("the job's arguments after `--` are wrong: unknown argument(s): --no-such-flag")


def header(app) -> str:
    return app.query_one(StatusHeader)._last.plain


async def test_launch_refused_for_its_arguments_is_not_blamed_on_unreachable_nodes(open_app):
    ctrl = feed.unreachable()  # the checks found every node unreachable
    ctrl.fail["launch"] = BAD_ARGS  # refused before any node is contacted
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("a")
        await settle(pilot)
        want = f"launching failed: {BAD_ARGS}"
        assert app.view.error == want
        assert "cannot reach" not in header(app)
        assert want in toasts(app) and not any("cannot reach" in t for t in toasts(app))


# -- kill confirmed after the job ended ----------------------------------------------------------


async def test_kill_confirmed_after_the_job_finished_says_so_and_kills_nothing(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        ctrl.emit(  # the job ends while the dialog is open
            JobStateChanged(JobState.FINISHED, job_id=feed.JOB_ID, t=feed.CLOCK),
            JobSummary(feed.JOB_ID, JobState.FINISHED, 200, 200, 2.3, 0.1, wall_s=120.0),
        )
        await pilot.press("y")
        await settle(pilot)
        assert ("kill",) not in ctrl.calls
        assert not app.view.kill_requested
        lines = log_lines(app)
        assert "kill: the job had already finished; nothing was stopped" in lines, lines[-4:]
        assert not any("every rank stopped" in line for line in lines)
        assert any("had already finished" in t for t in toasts(app))


# -- quit while the job restarts -----------------------------------------------------------------


def restarting(ctrl: feed.FeedController) -> None:
    ctrl.emit(JobStateChanged(JobState.RESTARTING, job_id=feed.JOB_ID, reason="rank 2 failed", t=feed.CLOCK))


async def test_quit_while_restarting_offers_kill_or_cancel_and_says_why(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        restarting(ctrl)
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)
        assert not app.screen.query("#leave")  # leaving would stop the relaunch
        message = str(app.screen.query_one("#message").content)
        assert "quitting now would leave nothing running" in message and "it goes on" not in message
        assert app.screen.focused is app.screen.query_one("#cancel")
        await pilot.press("l")  # not a choice now: nothing closes
        await settle(pilot)
        assert isinstance(app.screen, QuitModal) and app.is_running
        assert not any(c[0] == "close" for c in ctrl.calls)
        app.simulate_key("k")
        await wait_exit(app)
    assert ("close", True) in ctrl.calls


async def test_leave_chosen_after_the_job_began_restarting_does_not_quit(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("q")
        await pilot.pause()
        assert app.screen.query("#leave")  # running: leaving is true
        restarting(ctrl)  # the rank fails while the dialog is open
        await pilot.press("l")
        await settle(pilot)
        assert app.is_running and not isinstance(app.screen, QuitModal)
        assert not any(c[0] == "close" for c in ctrl.calls)
        assert any("began restarting: quitting now would leave nothing running" in t for t in toasts(app)), (
            toasts(app)
        )


async def test_quit_kill_chosen_after_the_job_ended_only_closes(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("q")
        await pilot.pause()
        ctrl.emit(JobStateChanged(JobState.FINISHED, job_id=feed.JOB_ID, t=feed.CLOCK))
        app.simulate_key("k")
        await wait_exit(app)
    assert ("close", False) in ctrl.calls  # nothing to kill: no "killing the job" either
    assert not app.view.kill_requested
