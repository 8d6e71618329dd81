"""`boltring --run`: the headless view of the controller, and the command that runs a job
with it.

On a terminal: one live progress line (run_progress.py), then a summary table
(run_summary.py); a script's or module's own output above it, `rank N: line`
(rank_output.py). With `--json`: one JSON object per line on stdout (start, state, step,
log/error, rank_start, rank_exit, ranks_not_stopped, summary), nothing else, for scripts and CI. Ctrl-C stops
every rank (stop_ranks.py) and says so; so does a reader that closes the output (`| head`),
quietly, as SIGPIPE ends a Unix tool. `status` and `kill` (status_and_kill.py) show a job
through the same view and end with the same exit codes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

from boltring.cluster.jobs.controller import ControllerError, JobController
from boltring.cluster.jobs.events import (
    CheckResult,
    Event,
    JobRestarted,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    RankExited,
    RankMetrics,
    RanksNotStopped,
    RankStalled,
    StepProgress,
    SyncProgress,
)
from boltring.cluster.states import CheckStatus, JobState, StoppedBy

from .console import cli_console, say_error
from .fmt import in_words, json_line, stopped_text
from .node_state import Level, not_stopped_text
from .rank_output import RankOutput
from .run_progress import PLAIN_EVERY_S, PROGRESS_EVERY_S, LiveProgress
from .run_summary import output_lines, summary_line, summary_table
from .stop_ranks import stop_within

KILL_WAIT_S = 30.0  # `boltring kill`: how long to wait for the ranks' end to be confirmed
# `--run` whose output was closed by its reader (`| head -n 5`, `| grep -m1 …`): every rank is
# stopped and it exits as a Unix tool ended by SIGPIPE would (128 + 13), quietly. Not 130: a
# script can tell "the reader had what it wanted" from "someone pressed Ctrl-C", and the shell
# idiom for a producer whose reader left (`set -o pipefail` … `|| [ $? -eq 141 ]`) works.
OUTPUT_CLOSED_EXIT = 141


class HeadlessView(LiveProgress):
    """The controller's listener for --run: a rich progress bar (step, elapsed, ETA, loss and
    per-rank throughput) on a terminal; plain progress lines every PLAIN_EVERY_S otherwise
    (LiveProgress, run_progress.py); JSON lines with --json."""

    def __init__(
        self,
        controller: JobController,
        *,
        json_out: bool,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        rank_output: bool = False,
    ):
        self.c = controller
        self.json_out = json_out
        # --run shows the ranks' own lines (rank_output.py); `status` does not: re-attached, it
        # reads every line since the job's start, a replay, not what the job says now
        self.rank_output = RankOutput() if rank_output and not json_out else None
        self.job_label = ""  # "script train.py", "example mlp": from the start event
        # The reader of our output went away (BrokenPipeError): nothing more is written there,
        # and on_output_closed (set by the command) decides what that means for the job.
        self.output_closed = False
        self.on_output_closed: Callable[[], None] | None = None
        out = console or cli_console(stderr=json_out)
        super().__init__(out, clock, live_line=out.is_terminal and not json_out)
        self._stopped_by: StoppedBy | None = None
        self.kill_requested = False  # Ctrl-C: ranks that exit now were stopped, not failed
        self._sync_drawn = -1e9
        self._said: set[str] = set()  # error lines already shown: the summary does not repeat them

    # -- output -------------------------------------------------------------------------
    @contextmanager
    def _output(self) -> Iterator[None]:
        """Around every write to our output: a reader that went away ends the output, never
        the task that wrote (the controller's follow task, when it is an event)."""
        try:
            yield
        except BrokenPipeError:
            self._close_output()

    def _close_output(self) -> None:
        if self.output_closed:
            return
        self.output_closed = True
        if self._draw_pending is not None:
            self._draw_pending.cancel()
            self._draw_pending = None
        _silence(sys.stdout if self.json_out else self.console.file)
        if self.on_output_closed is not None:
            self.on_output_closed()

    def say(self, text: str, error: bool = True) -> None:
        """A one-line reason: a JSON error event for scripts (and stderr for humans); in plain
        mode an error goes to stderr as "boltring: …", as every other command and the dry run
        put theirs (`--run > log` still shows it, `2> err` gets it), and a note to the output.
        Once the output is closed: an error on stderr, nothing else (quiet, as SIGPIPE)."""
        if not self.output_closed:
            with self._output():
                if self.json_out and not error:
                    print(f"boltring: {text}", file=sys.stderr)
                elif self.json_out:
                    say_error(text, json_event=True)
                elif error:
                    print(f"boltring: {text}", file=sys.stderr, flush=True)
                else:
                    self.console.print(text, markup=False, soft_wrap=True)  # one line, however long
                return
        if error:
            try:
                print(f"boltring: {text}", file=sys.stderr, flush=True)
            except OSError:
                pass

    # -- events -------------------------------------------------------------------------
    def __call__(self, ev: Event) -> None:
        if isinstance(ev, JobStarted):
            self.job_label = ev.job
            if self.rank_output is not None:
                self.rank_output.start(ev.job)
        if self.output_closed:
            return
        with self._output():
            self._show(ev)

    def _show(self, ev: Event) -> None:
        if self.json_out:
            if not isinstance(ev, RankMetrics):  # step events carry per-rank throughput
                d = ev.to_dict()
                if isinstance(ev, LogLine) and ev.level == Level.ERROR:
                    d["event"] = "error"
                print(json_line(d), flush=True)
            return
        self._time(ev)
        if isinstance(ev, JobStateChanged):
            self._state = ev.state
        match ev:
            case StepProgress():
                self._progress = ev
                self._draw_soon()
            case SyncProgress():
                self._sync_progress(ev)
            case LogLine() if ev.rank is not None and ev.level == Level.INFO:
                self._rank_line(ev.rank, ev.text)
            case LogLine() if ev.level != Level.INFO or ev.source == "controller":
                if ev.level == Level.ERROR:
                    self._said.add(ev.text)
                colour = {Level.ERROR: "red", Level.WARN: "yellow"}.get(ev.level, "cyan")
                self._print(f"[{colour}]{escape(ev.source)}[/]: {escape(ev.text)}")
            case JobStarted():
                verb = "re-attached to" if ev.attached else "started"
                self._print(
                    f"[bold]{verb} job {ev.job_id}[/]: {ev.job}, {ev.world_size} ranks on "
                    f"{', '.join(ev.nodes)}, {ev.steps} steps"
                )
                if ev.resume_from:
                    self._print(f"resume from {escape(ev.resume_from)}")
            case JobStateChanged() if ev.state == JobState.KILLED:
                self._stopped_by = ev.by or self._stopped_by
                self.kill_requested = True
            case RankStalled():
                self._print(f"[yellow]stalled: r{ev.rank} on {ev.node} silent {ev.silent_s:.0f} s[/]")
            case JobRestarted():
                start = f"from {ev.resume_from}" if ev.resume_from else "from step 0"
                attempt = f"restart {ev.attempt}/{ev.max_restarts}"
                self._print(f"[yellow]{attempt} {escape(start)}[/] after: {escape(ev.cause)}")
            case RanksNotStopped():  # said when it happens: a stop may wait for that node long
                self._print(f"[red]controller[/]: {escape(not_stopped_text(ev))}")
            case RankExited():
                pass  # the job's one failure reason (each rank's part as evidence) comes once, at the end
            case CheckResult() if ev.status in (CheckStatus.FAIL, CheckStatus.WARN):
                colour = "red" if ev.status == CheckStatus.FAIL else "yellow"
                self._print(
                    f"[{colour}]{ev.status}[/] {ev.node} {ev.name}: {escape(ev.value or '')}"
                    + (f" — {escape(ev.hint)}" if ev.hint else "")
                )

    @property
    def stopping(self) -> bool:
        return self.kill_requested or self.c.state == JobState.KILLED

    def _rank_line(self, rank: int, text: str) -> None:
        """A rank's own line: shown as `rank N: …` when rank_output.py says so."""
        shown = self.rank_output.shown(rank, text) if self.rank_output is not None else None
        if shown is not None:
            self.console.print(f"rank {rank}: {shown}", markup=False, highlight=False, soft_wrap=True)

    def _sync_progress(self, ev: SyncProgress) -> None:
        """Bytes of a large file going to a node (workspace sync before launch): a line at most
        every PROGRESS_EVERY_S on a terminal, PLAIN_EVERY_S otherwise, and one when it is done."""
        now, done = self.clock(), ev.sent >= ev.total
        every = PROGRESS_EVERY_S if self.live_line else PLAIN_EVERY_S
        if done or now - self._sync_drawn >= every:
            self._sync_drawn = now
            mb = f"{ev.sent / 1e6:.0f}/{ev.total / 1e6:.0f} MB"
            self._print(f"sync {escape(ev.node)} {escape(ev.path)}: {mb} ({ev.sent / max(ev.total, 1):.0%})")

    def _draw_now(self) -> None:
        """LiveProgress's scheduled draw, here guarded: it runs as a loop callback, where a
        reader that left would only be logged, and nothing is drawn once the output closed."""
        self._draw_pending = None
        if not self.output_closed:
            with self._output():  # a loop callback: an error here would only be logged
                self._draw()

    def _print(self, markup: str) -> None:
        # through the live bar's console, it prints above the bar instead of tearing it; piped
        # to a file, one event stays one line (rich would wrap it at 80 columns)
        self.console.print(markup, soft_wrap=not self.console.is_terminal)

    # -- the end ----------------------------------------------------------------------------
    def finish(self, summary: JobSummary) -> None:
        if self.json_out or self.output_closed:
            return
        with self._output():
            self._finish(summary)

    def _finish(self, summary: JobSummary) -> None:
        self._state = JobState(summary.status)  # the job has ended: no ETA from here on
        self._end_drawing()
        status = JobState(summary.status)
        self.console.print(summary_table(summary))
        self.console.print(summary_line(summary), markup=False, soft_wrap=True)
        held = self.rank_output.held if self.rank_output is not None else set()
        for line in output_lines(summary, self.job_label, held, self._local_nodes):
            self.console.print(line, markup=False, soft_wrap=True)
        if status == JobState.KILLED:
            self._print(f"[yellow]{stopped_text(summary.stopped_by or self._stopped_by, summary.steps)}[/]")
        elif summary.reason and summary.reason not in self._said:
            self._print(f"[red]{escape(in_words(summary.reason) or '')}[/]")

    def _local_nodes(self) -> set[str]:
        """The config's nodes that are this machine: their rank logs are shown as local paths."""
        return {n.name for n in self.c.config.nodes if n.local}


def _silence(stream) -> None:
    """Point a closed output at /dev/null, as the Python docs advise for SIGPIPE (signal module):
    what is still buffered for it, and any later write, then go nowhere instead of failing
    again, at exit too."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


async def run_headless(
    controller: JobController,
    *,
    json_out: bool = False,
    resume: bool = False,
    skip_checks: bool = False,
    console: Console | None = None,
) -> int:
    view = HeadlessView(controller, json_out=json_out, console=console, rank_output=True)
    controller.add_listener(view)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    stop_by: list[StoppedBy] = []  # the first signal is who stops the job: named, never mixed up

    def interrupt(by: StoppedBy) -> None:
        stop_by.append(by)
        interrupted.set()

    def stopped_code() -> int:
        """130 for a user's stop; 141 when it was the reader closing our output (SIGPIPE's)."""
        return OUTPUT_CLOSED_EXIT if stop_by and stop_by[0] == StoppedBy.OUTPUT_CLOSED else 130

    view.on_output_closed = lambda: interrupt(StoppedBy.OUTPUT_CLOSED)
    try:
        loop.add_signal_handler(signal.SIGINT, interrupt, StoppedBy.CTRL_C)
        loop.add_signal_handler(signal.SIGTERM, interrupt, StoppedBy.SIGTERM)
    except (NotImplementedError, RuntimeError):
        pass

    async def until_interrupted(coro):
        """Run one phase; Ctrl-C, SIGTERM or a closed output cancels it at any moment (a
        cancelled launch stops what it started). Returns (finished, result)."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(interrupted.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return True, task.result()
        task.cancel(msg=str(stop_by[0]) if stop_by else None)  # who stops it, for its record
        try:
            await task
        except (asyncio.CancelledError, ControllerError):
            pass
        return False, None

    try:
        if not skip_checks:
            done, results = await until_interrupted(controller.run_checks())
            if not done:
                view.say("interrupted during the checks: nothing was started", error=False)
                return stopped_code()
            failed = [r for r in results if r.status == CheckStatus.FAIL]
            if failed:
                view.say(
                    f"{len(failed)} check(s) failed; not starting (fix them, or pass "
                    f"--skip-checks): " + "; ".join(f"{r.node} {r.name}" for r in failed[:5]),
                )
                return 2
        try:
            done, _ = await until_interrupted(controller.launch(resume=resume))
        except ControllerError as e:
            if e.nothing_started:  # refused before any rank (ResumeRefused): exit 2
                view.say(str(e))
                return 2
            view.say(f"launch failed: {e}" + (f" ({e.hint})" if e.hint else ""))
            return 1
        if not done:
            view.say("interrupted during launch: every rank started so far was stopped", error=False)
            return stopped_code()
        return await follow_to_end(controller, view, interrupted, stop_by)
    finally:
        controller.remove_listener(view)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await controller.close()


async def follow_to_end(
    controller: JobController, view: HeadlessView, interrupted: asyncio.Event, stop_by: list[StoppedBy]
) -> int:
    """Follow the job the ranks run to its end; an interrupt (stop_by[0] says whose) stops every
    rank first, waiting at most KILL_WAIT_S for their ends. The exit code."""
    waiter = asyncio.ensure_future(controller.wait())
    stopper = asyncio.ensure_future(interrupted.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    by = stop_by[0] if stop_by else StoppedBy.CTRL_C
    code = OUTPUT_CLOSED_EXIT if by == StoppedBy.OUTPUT_CLOSED else 130
    if not waiter.done():
        if by != StoppedBy.OUTPUT_CLOSED:  # a reader that left is told nothing (SIGPIPE)
            view.say(f"interrupted ({by}): stopping every rank …", error=False)
        view.kill_requested = True
        unconfirmed = await stop_within(controller, by, KILL_WAIT_S)
        if unconfirmed is not None:
            # A node that cannot be reached held this wait forever: its ranks' end is never
            # read. Its record stays "running": `status` and `kill` find the job.
            waiter.cancel()
            view.say(f"interrupted ({by}): stopped the ranks it could reach; {unconfirmed}")
            return code
    try:
        summary = await waiter
    except ControllerError as e:
        view.say(str(e) + (f" ({e.hint})" if e.hint else ""))
        return 1
    view.finish(summary)
    if summary.status == JobState.KILLED:
        view.say("stopped: every rank was killed, no process left running", error=False)
        if summary.stopped_by == StoppedBy.OUTPUT_CLOSED:
            return OUTPUT_CLOSED_EXIT
    return exit_code(summary)


def exit_code(summary: JobSummary) -> int:
    """0 finished, 130 stopped by a user (Ctrl-C, `boltring kill`, the app), 1 failed."""
    if summary.status == JobState.KILLED:
        return 130
    return 0 if summary.status == JobState.FINISHED else 1
