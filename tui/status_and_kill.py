"""`boltring status` and `boltring kill`: the commands for a job left running for a config.

`status` re-attaches and shows the job through the --run view (headless.py), or follows it to
its end; it does not own the job, so Ctrl-C only stops the following. A job whose ranks are
being started or that waits to restart is said so (`--follow` follows it once they run). With
nothing running it says how the last job of the config ended. `kill` stops every rank and says
which node it could not reach.

Apart from the --run view because neither command launches anything: they only attach to the
controller's job and read it or stop it, with their own exit codes (STOPPED_FOLLOWING).
"""

from __future__ import annotations

import asyncio
import signal

from boltring.cluster.jobs import record
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import Event, JobSummary, RanksNotStopped
from boltring.cluster.jobs.history import RunRecord, last_run
from boltring.cluster.states import JobState, StoppedBy

from .console import cli_console
from .fmt import json_line
from .headless import KILL_WAIT_S, OUTPUT_CLOSED_EXIT, HeadlessView, exit_code
from .node_state import not_stopped_text

# `boltring status`: how long to wait for the ranks' files to be read (a node that cannot be
# reached is known from the attach, which costs its SSH connect timeout once)
STATUS_READ_S = 15.0
BETWEEN_ATTEMPTS_POLL_S = 1.0  # `status --follow` of a job between attempts: how often it looks again
STOPPED_FOLLOWING = 3  # `status --follow` left by Ctrl-C: the job was not touched and runs on


async def run_status(controller: JobController, *, follow: bool = False, json_out: bool = False) -> int:
    """Re-attach to the job left running for this config; show it, or follow it to the end."""
    view = HeadlessView(controller, json_out=json_out)
    controller.add_listener(view)
    loop = asyncio.get_running_loop()
    # Caught from the start: a Ctrl-C while attaching must not be a traceback either.
    interrupted = _catch_interrupts(loop) if follow else None
    if interrupted is not None:  # a reader that left stops the following (never the job)
        view.on_output_closed = interrupted.set
    try:
        attached = await controller.attach()
        said = False
        while not attached and (pending := controller.between_attempts()) is not None:
            # Launching, or between two attempts of --restarts: no rank to show, yet the job runs.
            if not said:
                _say_between_attempts(view, pending, controller, follow=interrupted is not None)
                said = True
            if interrupted is None:
                return OUTPUT_CLOSED_EXIT if view.output_closed else 0
            try:  # --follow: follow it once its ranks run again (or read how it ended)
                await asyncio.wait_for(interrupted.wait(), BETWEEN_ATTEMPTS_POLL_S)
            except TimeoutError:
                attached = await controller.attach()
                continue
            view.say(f"stopped following job {pending['job_id']}", error=False)
            return STOPPED_FOLLOWING
        if not attached:
            # An error only when there is no job at all (exit 1); otherwise a note before the
            # last job's result, which is what status answers (exit as that job did).
            last = last_run(controller.config.source)
            if not said:  # (it ended while between attempts: how, follows)
                view.say("no job is running for this config", error=last is None)
            return _say_last_run(view, last)
        if interrupted is None:
            await controller.read_once(STATUS_READ_S)  # what the ranks wrote so far
            summary = controller.summary()
            if json_out:
                with view._output():
                    print(json_line(summary.to_dict()), flush=True)
            else:
                view.finish(summary)
            return OUTPUT_CLOSED_EXIT if view.output_closed else 0
        followed = await _wait_unless_interrupted(controller, interrupted)
        if view.output_closed:
            return OUTPUT_CLOSED_EXIT
        if followed is None:
            view.say(
                f"stopped following job {controller.job_id}; it is still running — `boltring kill` stops it",
                error=False,
            )
            return STOPPED_FOLLOWING
        view.finish(followed)
        return OUTPUT_CLOSED_EXIT if view.output_closed else exit_code(followed)
    finally:
        if interrupted is not None:
            _release_interrupts(loop)
        controller.remove_listener(view)
        await controller.close()


def _say_between_attempts(view: HeadlessView, rec: dict, controller: JobController, *, follow: bool) -> None:
    """What `status` says of a job whose ranks are being started, or restarted after a
    failure: "job X is restarting (restart 1 of 3)". Not "no job is running": it is."""
    job_id, state = str(rec["job_id"]), str(rec.get("state"))
    restart = len(rec.get("restarts") or []) + 1  # the record lists the restarts that ran
    of = record.job_from_record(rec, controller.config.job).restarts
    if view.json_out:
        event: dict[str, object] = {"event": "between_attempts", "job_id": job_id, "state": state}
        if state == JobState.RESTARTING:
            event.update(restart=restart, max_restarts=of)
        with view._output():
            print(json_line(event), flush=True)
        return
    what = f"restarting (restart {restart} of {of})" if state == JobState.RESTARTING else state
    then = ": following it once its ranks run" if follow else "; `boltring status --follow` follows it"
    view.say(f"job {job_id} is {what}{then}", error=False)


def _catch_interrupts(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """Ctrl-C and SIGTERM set the returned event instead of cancelling the whole command."""
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, interrupted.set)
        except (NotImplementedError, RuntimeError):
            pass
    return interrupted


def _release_interrupts(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.remove_signal_handler(sig)
        except (NotImplementedError, RuntimeError):
            pass


async def _wait_unless_interrupted(
    controller: JobController, interrupted: asyncio.Event
) -> JobSummary | None:
    """The job's summary, or None when an interrupt came first. `status` does not own the job:
    an interrupt only stops following it (close() leaves the ranks running)."""
    waiter = asyncio.ensure_future(controller.wait())
    stopper = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if waiter.done():
        return waiter.result()
    waiter.cancel()
    return None


def _say_last_run(view: HeadlessView, run: RunRecord | None) -> int:
    """With nothing running, `status` shows how the last job of this config ended, and exits
    as `--run` did for it (0 finished, 1 failed, 130 stopped by a user): a script that starts
    following just after the job ended reads its result, not an error. 1 with no job at all."""
    from .runs_view import run_dict, run_result

    if run is None:
        return 1
    if view.json_out:
        print(json_line({"event": "last_run", **run_dict(run)}), flush=True)
    else:
        view.console.print(f"last: {run_result(run)}", markup=False, soft_wrap=True)
    return {str(JobState.FINISHED): 0, str(JobState.KILLED): 130}.get(run.state, 1)


async def _record_ends(job_id: str, within_s: float) -> bool:
    """Wait until the job's record says it ended (its controller closed it); False at the limit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        rec = record.read(job_id) or {}
        if rec.get("state") and not JobState(rec["state"]).active:
            return True
        await asyncio.sleep(0.25)  # the record is the only thing shared with its controller
    return False


async def run_kill(controller: JobController) -> int:
    console = cli_console()
    try:
        if not await controller.attach():
            pending = controller.between_attempts()
            waiting = controller.request_stop(StoppedBy.USER_KILL)
            if waiting and pending is not None and pending.get("state") == JobState.LAUNCHING:
                # Its controller stops the launch and what it started once it sees the request:
                # wait for that, as a kill of a running job waits for its ranks.
                console.print(f"boltring: job {waiting} is launching; asked its controller to stop it …")
                if await _record_ends(waiting, KILL_WAIT_S):
                    console.print(f"boltring: job {waiting} was stopped during its launch")
                    return 0
                console.print(
                    f"boltring: job {waiting} still launching after {KILL_WAIT_S:g} s; the request "
                    "stands, and `boltring status` shows when it has stopped",
                    soft_wrap=True,
                )
                return 1
            if waiting:  # failed, no rank alive, a restart pending: it will not happen
                console.print(
                    f"boltring: job {waiting} was waiting to restart; it will not restart", soft_wrap=True
                )
                return 0
            console.print("boltring: no job is running for this config")
            return 1
        job = controller.job_id
        unreached: list[str] = []  # "could not stop the ranks on h2: no SSH answer …"

        def note(ev: Event) -> None:
            match ev:
                case RanksNotStopped():
                    unreached.append(not_stopped_text(ev))

        controller.add_listener(note)
        try:  # a node that cannot be reached would hold the wait for its ranks' end forever
            await asyncio.wait_for(controller.kill(by=StoppedBy.USER_KILL), KILL_WAIT_S)
            ended = True
        except TimeoutError:
            ended = False
        if ended and not unreached:
            console.print(f"boltring: killed every rank of job {job}")
            return 0
        why = "; ".join(unreached) or f"their end was not confirmed within {KILL_WAIT_S:g} s"
        console.print(
            f"boltring: stopped the ranks of job {job} it could reach; {why}: those may still run "
            "(run `boltring kill` again once the node answers)",
            markup=False,
            soft_wrap=True,
        )
        return 1
    finally:
        await controller.close()
