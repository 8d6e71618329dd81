"""`boltring --run`: the headless view of the controller.

On a terminal: one live progress line, then a summary table. With `--json`: one JSON object
per line on stdout (start, state, step, log/error, rank_start, rank_exit, summary), nothing
else, for scripts and CI. Ctrl-C stops every rank and says so.

(Over 400 lines: the --run view and the three headless commands that use it (--run, status,
kill) share its rendering of events, the summary and the exit codes.)
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Column, Table
from rich.text import Text

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
    RankStalled,
    StepProgress,
    SyncProgress,
)
from boltring.cluster.jobs.history import last_run
from boltring.cluster.states import CheckStatus, JobState, StoppedBy

from .console import cli_console, say_error
from .fmt import fmt_elapsed, in_words, stopped_text
from .node_state import Level
from .view_state import recent_rate

KILL_WAIT_S = 30.0  # `boltring kill`: how long to wait for the ranks' end to be confirmed
# `boltring status`: how long to wait for the ranks' files to be read (a node that cannot be
# reached is known from the attach, which costs its SSH connect timeout once)
STATUS_READ_S = 15.0
PROGRESS_EVERY_S = 0.5  # redraw limit for the live line on a terminal
PLAIN_EVERY_S = 5.0  # when stdout is not a terminal, a progress line at most this often


def _fmt(v, spec=".3f", none="–") -> str:
    return none if v is None else format(v, spec)


def _tokens(p: StepProgress) -> list[str]:
    """The cluster's tokens/s for language-model jobs (users compare runs by it); [] otherwise."""
    tokens = [m["tokens_per_s"] for m in p.ranks.values() if m.get("tokens_per_s")]
    return [f"{sum(tokens):.0f} tok/s"] if tokens else []


def _clock(s: float | None) -> str:
    return "-:--:--" if s is None else fmt_elapsed(s)


class _Clock(ProgressColumn):
    """A time the view counts (the job's age, its ETA), in the bar's clock style."""

    def __init__(self, seconds: Callable[[], float | None]):
        super().__init__()
        self.seconds = seconds

    def render(self, task) -> Text:
        return Text(_clock(self.seconds()), style="progress.elapsed")


class _Eta(ProgressColumn):
    """ "ETA 00:00:21", "ETA stalled", or nothing once the job has ended."""

    def __init__(self, text: Callable[[], str | None]):
        super().__init__()
        self.text = text

    def render(self, task) -> Text:
        value = self.text()
        return Text("") if value is None else Text("ETA ") + Text(value, style="progress.elapsed")


class HeadlessView:
    """The controller's listener for --run: a rich progress bar (step, elapsed, ETA, loss and
    per-rank throughput) on a terminal; plain progress lines every PLAIN_EVERY_S otherwise;
    JSON lines with --json."""

    def __init__(
        self,
        controller: JobController,
        *,
        json_out: bool,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.c = controller
        self.json_out = json_out
        self.console = console or cli_console(stderr=json_out)
        self.live_line = self.console.is_terminal and not json_out
        self.clock = clock
        self._last_draw = -1e9
        self._progress: StepProgress | None = None
        self._state: JobState | None = None  # the job's, from its JobStateChanged events
        self._draw_pending: asyncio.Handle | None = None  # one draw per burst of step events
        self._started: float | None = None  # the job's start, on self.clock (elapsed, ETA)
        self._steps: deque[tuple[float, int]] = deque(maxlen=4096)  # (rank's wall, step): the rate
        self._stopped_by: StoppedBy | None = None
        self.kill_requested = False  # Ctrl-C: ranks that exit now were stopped, not failed
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._sync_drawn = -1e9
        self._said: set[str] = set()  # error lines already shown: the summary does not repeat them

    # -- events -------------------------------------------------------------------------
    def __call__(self, ev: Event) -> None:
        if self.json_out:
            if not isinstance(ev, RankMetrics):  # step events carry per-rank throughput
                d = ev.to_dict()
                if isinstance(ev, LogLine) and ev.level == Level.ERROR:
                    d["event"] = "error"
                print(json.dumps(d, default=str), flush=True)
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

    def _sync_progress(self, ev: SyncProgress) -> None:
        """Bytes of a large file going to a node (workspace sync before launch): a line at most
        every PROGRESS_EVERY_S on a terminal, PLAIN_EVERY_S otherwise, and one when it is done."""
        now, done = self.clock(), ev.sent >= ev.total
        every = PROGRESS_EVERY_S if self.live_line else PLAIN_EVERY_S
        if done or now - self._sync_drawn >= every:
            self._sync_drawn = now
            mb = f"{ev.sent / 1e6:.0f}/{ev.total / 1e6:.0f} MB"
            self._print(f"sync {escape(ev.node)} {escape(ev.path)}: {mb} ({ev.sent / max(ev.total, 1):.0%})")

    # -- progress -------------------------------------------------------------------------
    def _time(self, ev: Event) -> None:
        """Elapsed counts from the job's start (JobStarted.t: a re-attached job's own age); the
        rate from the ranks' clocks on their steps, from the start of this attempt: a burst of
        steps read on re-attach, and the wait before a restart, are no training pace."""
        if isinstance(ev, JobStarted):
            self._started = self.clock() - max(0.0, time.time() - ev.t)
            self._steps.clear()
        elif isinstance(ev, JobRestarted):
            self._steps.clear()
        elif isinstance(ev, StepProgress):
            if self._started is None:  # joined without a start (nothing else to count from)
                self._started = self.clock()
            self._steps.append((ev.wall if ev.wall is not None else self.clock(), ev.step))

    def eta(self) -> float | None:
        """Seconds left at the recent rate, while the job runs: none while it is stalled,
        restarting or over, when its last rate is not what it does now."""
        p = self._progress
        rate = recent_rate(self._steps)
        if self._state != JobState.RUNNING or p is None or rate is None or p.step >= p.total:
            return None
        return (p.total - p.step) / rate

    def eta_text(self) -> str | None:
        """What stands after "ETA": the time left, "stalled" (as in the app), or None once the
        job has ended (no ETA at all)."""
        if self._state is not None and self._state.final:
            return None
        if self._state == JobState.STALLED:
            return "stalled"
        return _clock(self.eta())

    def elapsed(self) -> float | None:
        return None if self._started is None else self.clock() - self._started

    def _line(self, p: StepProgress) -> str:
        parts = [f"step {p.step}/{p.total}", f"elapsed {_clock(self.elapsed())}"]
        eta = self.eta_text()
        if eta is not None:
            parts.append(f"ETA {eta}")
        parts.append(f"loss {_fmt(p.loss, '.4f')}")
        parts += _tokens(p)
        for r, m in sorted(p.ranks.items()):
            samples, gbps = _fmt(m.get("samples_per_s"), ".0f"), _fmt(m.get("allreduce_gbps"), ".2f")
            parts.append(f"r{r} {samples} samp/s {gbps} GB/s")
        return " | ".join(parts)

    def _details(self, p: StepProgress) -> str:
        parts = [f"loss {_fmt(p.loss, '.4f')}", *_tokens(p)]
        for r, m in sorted(p.ranks.items()):
            parts.append(
                f"r{r} {_fmt(m.get('samples_per_s'), '.0f')}/s {_fmt(m.get('allreduce_gbps'), '.2f')}GB/s"
            )
        return "  ".join(parts)

    def _start_bar(self, total: int) -> None:
        self._bar = Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TextColumn("elapsed"),
            _Clock(self.elapsed),  # rich's own columns count from when this bar started:
            _Eta(self.eta_text),  # after a re-attach, a job minutes old read 0:00:00
            # the per-rank figures take what is left, cut first: never the step, elapsed or ETA
            TextColumn(
                "{task.fields[details]}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1, min_width=8),
            ),
            console=self.console,
            expand=True,
            refresh_per_second=1 / PROGRESS_EVERY_S,
            get_time=self.clock,
        )
        self._task = self._bar.add_task("job", total=total, completed=0, details="")
        self._bar.start()

    def _draw_soon(self) -> None:
        """Draw once the events at hand are all in: a re-attach reads every step so far in one
        poll, and its line is the latest step's, not the first's (at most one loop turn later)."""
        if self._draw_pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without a loop: every event is its own burst
            self._draw()
            return
        self._draw_pending = loop.call_soon(self._draw_now)

    def _draw_now(self) -> None:
        self._draw_pending = None
        self._draw()

    def _draw(self, force: bool = False) -> None:
        p = self._progress
        if p is None:
            return
        if self.live_line:
            if self._bar is None:
                self._start_bar(p.total)
            assert self._bar is not None and self._task is not None
            self._bar.update(self._task, completed=p.step, total=p.total, details=self._details(p))
            return
        now = self.clock()
        if not force and now - self._last_draw < PLAIN_EVERY_S:
            return
        self._last_draw = now
        self.console.print(self._line(p), markup=False, highlight=False, soft_wrap=True)

    def _print(self, markup: str) -> None:
        # through the live bar's console, it prints above the bar instead of tearing it; piped
        # to a file, one event stays one line (rich would wrap it at 80 columns)
        self.console.print(markup, soft_wrap=not self.console.is_terminal)

    def finish(self, summary: JobSummary) -> None:
        if self.json_out:
            return
        self._state = JobState(summary.status)  # the job has ended: no ETA from here on
        if self._draw_pending is not None:  # the last burst's draw: this one replaces it
            self._draw_pending.cancel()
            self._draw_pending = None
            if self.live_line:
                self._draw()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        else:
            self._draw(force=True)
        status = JobState(summary.status)
        table = Table(title=f"job {summary.job_id}: {status}", title_justify="left")
        for col in ("rank", "node", "steps/s", "samples/s", "allreduce GB/s"):
            table.add_column(col, justify="right" if col not in ("node",) else "left")
        for r, m in sorted(summary.ranks.items()):
            table.add_row(
                str(r),
                str(m.get("node", "")) + (" (not read)" if m.get("unread") else ""),
                _fmt(m.get("steps_per_s"), ".2f"),
                _fmt(m.get("samples_per_s"), ".0f"),
                _fmt(m.get("allreduce_gbps"), ".2f"),
            )
        self.console.print(table)
        self.console.print(summary_line(summary), markup=False, soft_wrap=True)
        if status == JobState.KILLED:
            self._print(f"[yellow]{stopped_text(summary.stopped_by or self._stopped_by, summary.steps)}[/]")
        elif summary.reason and summary.reason not in self._said:
            self._print(f"[red]{escape(in_words(summary.reason) or '')}[/]")


def summary_line(summary: JobSummary) -> str:
    tokens = f"  {summary.tokens_per_s:.0f} tokens/s" if summary.tokens_per_s else ""
    restarts = f"  {len(summary.restarts)} restart(s)" if summary.restarts else ""
    ranks = summary.ranks.values()
    # no rank could be read (every node unreachable): the job's steps are not known, not 0
    steps = "?" if ranks and all(m.get("unread") for m in ranks) else str(summary.steps)
    return (
        f"steps {steps}/{summary.total_steps}  loss "
        f"{_fmt(summary.first_loss, '.4f')} → {_fmt(summary.last_loss, '.4f')}  "
        f"wall {_wall(summary)}{tokens}{restarts}  run dir {summary.run_dir}"
    )


def _wall(summary: JobSummary) -> str:
    """The job's wall time; where the end of a rank was never learned (its exit record was not
    read), the time the records prove, as "≥", and whose end is missing."""
    missing = [(r, m) for r, m in sorted(summary.ranks.items()) if "ended_s" in m and m["ended_s"] is None]
    if not missing:
        return fmt_elapsed(summary.wall_s)
    who = ", ".join(f"rank {r} on {m.get('node')}" for r, m in missing)
    return f"≥ {fmt_elapsed(summary.wall_s)} (the end of {who} was not read)"


async def run_headless(
    controller: JobController,
    *,
    json_out: bool = False,
    resume: bool = False,
    skip_checks: bool = False,
    console: Console | None = None,
) -> int:
    view = HeadlessView(controller, json_out=json_out, console=console)
    controller.add_listener(view)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    stop_by: list[StoppedBy] = []  # the first signal is who stops the job: named, never mixed up

    def interrupt(by: StoppedBy) -> None:
        stop_by.append(by)
        interrupted.set()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt, StoppedBy.CTRL_C)
        loop.add_signal_handler(signal.SIGTERM, interrupt, StoppedBy.SIGTERM)
    except (NotImplementedError, RuntimeError):
        pass

    async def until_interrupted(coro):
        """Run one phase; Ctrl-C or SIGTERM cancels it at any moment (a cancelled launch
        stops what it started). Returns (finished, result)."""
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
                _say(view, "interrupted during the checks: nothing was started", error=False)
                return 130
            failed = [r for r in results if r.status == CheckStatus.FAIL]
            if failed:
                _say(
                    view,
                    f"{len(failed)} check(s) failed; not starting (fix them, or pass "
                    f"--skip-checks): " + "; ".join(f"{r.node} {r.name}" for r in failed[:5]),
                )
                return 2
        try:
            done, _ = await until_interrupted(controller.launch(resume=resume))
        except ControllerError as e:
            if e.nothing_started:  # refused before any rank (ResumeRefused): exit 2
                _say(view, str(e))
                return 2
            _say(view, f"launch failed: {e}" + (f" ({e.hint})" if e.hint else ""))
            return 1
        if not done:
            _say(view, "interrupted during launch: every rank started so far was stopped", error=False)
            return 130
        waiter = asyncio.ensure_future(controller.wait())
        stopper = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper.done() and not waiter.done():
            by = stop_by[0] if stop_by else StoppedBy.CTRL_C
            _say(view, f"interrupted ({by}): stopping every rank …", error=False)
            view.kill_requested = True
            await controller.kill(by=by)
        stopper.cancel()
        summary = await controller.wait()
        view.finish(summary)
        if summary.status == JobState.KILLED:
            _say(view, "stopped: every rank was killed, no process left running", error=False)
        return exit_code(summary)
    finally:
        controller.remove_listener(view)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await controller.close()


def exit_code(summary: JobSummary) -> int:
    """0 finished, 130 stopped by a user (Ctrl-C, `boltring kill`, the app), 1 failed."""
    if summary.status == JobState.KILLED:
        return 130
    return 0 if summary.status == JobState.FINISHED else 1


def _say(view: HeadlessView, text: str, error: bool = True) -> None:
    """A one-line reason: a JSON error event for scripts (and stderr for humans), or plain text."""
    if view.json_out and not error:
        print(f"boltring: {text}", file=sys.stderr)
    elif view.json_out:
        say_error(text, json_event=True)
    else:
        view.console.print(text, markup=False, soft_wrap=True)  # one line, however long


async def run_status(controller: JobController, *, follow: bool = False, json_out: bool = False) -> int:
    """Re-attach to the job left running for this config; show it, or follow it to the end."""
    view = HeadlessView(controller, json_out=json_out)
    controller.add_listener(view)
    loop = asyncio.get_running_loop()
    # Caught from the start: a Ctrl-C while attaching must not be a traceback either.
    interrupted = _catch_interrupts(loop) if follow else None
    try:
        if not await controller.attach():
            _say(view, "no job is running for this config")
            return _say_last_run(view, controller.config.source)
        if interrupted is None:
            await controller.read_once(STATUS_READ_S)  # what the ranks wrote so far
            summary = controller.summary()
            if json_out:
                print(json.dumps(summary.to_dict(), default=str))
            else:
                view.finish(summary)
            return 0
        followed = await _wait_unless_interrupted(controller, interrupted)
        if followed is None:
            _say(
                view,
                f"stopped following job {controller.job_id}; it is still running — `boltring kill` stops it",
                error=False,
            )
            return STOPPED_FOLLOWING
        view.finish(followed)
        return exit_code(followed)
    finally:
        if interrupted is not None:
            _release_interrupts(loop)
        controller.remove_listener(view)
        await controller.close()


STOPPED_FOLLOWING = 3  # `status --follow` left by Ctrl-C: the job was not touched and runs on


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


def _say_last_run(view: HeadlessView, config: str | None) -> int:
    """With nothing running, `status` shows how the last job of this config ended, and exits
    as `--run` did for it (0 finished, 1 failed, 130 stopped by a user): a script that starts
    following just after the job ended reads its result, not an error. 1 with no job at all."""
    from .runs_view import run_dict, run_result

    run = last_run(config)
    if run is None:
        return 1
    if view.json_out:
        print(json.dumps({"event": "last_run", **run_dict(run)}, default=str), flush=True)
    else:
        view.console.print(f"last: {run_result(run)}", markup=False, soft_wrap=True)
    return {str(JobState.FINISHED): 0, str(JobState.KILLED): 130}.get(run.state, 1)


async def run_kill(controller: JobController) -> int:
    console = cli_console()
    try:
        if not await controller.attach():
            waiting = controller.request_stop(StoppedBy.USER_KILL)
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
            if isinstance(ev, LogLine) and ev.text.startswith("could not stop the ranks on "):
                unreached.append(ev.text)

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
