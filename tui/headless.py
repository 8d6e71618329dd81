"""`boltring --run`: the headless view of the controller.

On a terminal: one live progress line, then a summary table; a script's or module's own output
above it, `rank N: line` (rank_output.py). With `--json`: one JSON object per line on stdout
(start, state, step, log/error, rank_start, rank_exit, summary), nothing else, for scripts and
CI. Ctrl-C stops every rank and says so; so does a reader that closes the output (`| head`),
quietly, as SIGPIPE ends a Unix tool.

(Over 400 lines: the --run view and the three headless commands that use it (--run, status,
kill) share its rendering of events, the summary and the exit codes.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
from .rank_output import RankOutput
from .view_state import recent_rate

KILL_WAIT_S = 30.0  # `boltring kill`: how long to wait for the ranks' end to be confirmed
# `boltring status`: how long to wait for the ranks' files to be read (a node that cannot be
# reached is known from the attach, which costs its SSH connect timeout once)
STATUS_READ_S = 15.0
PROGRESS_EVERY_S = 0.5  # redraw limit for the live line on a terminal
PLAIN_EVERY_S = 5.0  # when stdout is not a terminal, a progress line at most this often
# `--run` whose output was closed by its reader (`| head -n 5`, `| grep -m1 …`): every rank is
# stopped and it exits as a Unix tool ended by SIGPIPE would (128 + 13), quietly. Not 130: a
# script can tell "the reader had what it wanted" from "someone pressed Ctrl-C", and the shell
# idiom for a producer whose reader left (`set -o pipefail` … `|| [ $? -eq 141 ]`) works.
OUTPUT_CLOSED_EXIT = 141


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
        """A one-line reason: a JSON error event for scripts (and stderr for humans), or plain
        text. Once the output is closed: an error on stderr, nothing else (quiet, as SIGPIPE)."""
        if not self.output_closed:
            with self._output():
                if self.json_out and not error:
                    print(f"boltring: {text}", file=sys.stderr)
                elif self.json_out:
                    say_error(text, json_event=True)
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
        if not self.output_closed:
            with self._output():  # a loop callback: an error here would only be logged
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
        if self.json_out or self.output_closed:
            return
        with self._output():
            self._finish(summary)

    def _finish(self, summary: JobSummary) -> None:
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
        self.console.print(self._table(summary, status))
        self.console.print(summary_line(summary), markup=False, soft_wrap=True)
        for line in self._output_lines(summary):
            self.console.print(line, markup=False, soft_wrap=True)
        if status == JobState.KILLED:
            self._print(f"[yellow]{stopped_text(summary.stopped_by or self._stopped_by, summary.steps)}[/]")
        elif summary.reason and summary.reason not in self._said:
            self._print(f"[red]{escape(in_words(summary.reason) or '')}[/]")

    def _table(self, summary: JobSummary, status: JobState) -> Table:
        """Each rank's figures; for a job that reported none, where each rank's output is."""
        table = Table(title=f"job {summary.job_id}: {status}", title_justify="left")
        figures = summary.metrics_reported
        cols = ("steps/s", "samples/s", "allreduce GB/s") if figures else ("output",)
        cols = ("rank", "node", *cols)
        for col in cols:
            table.add_column(col, justify="right" if col not in ("node", "output") else "left")
        for r, m in sorted(summary.ranks.items()):
            node = str(m.get("node", "")) + (" (not read)" if m.get("unread") else "")
            if not figures:
                table.add_row(str(r), node, str(m.get("log") or "–"))
                continue
            table.add_row(
                str(r),
                node,
                _fmt(m.get("steps_per_s"), ".2f"),
                _fmt(m.get("samples_per_s"), ".0f"),
                _fmt(m.get("allreduce_gbps"), ".2f"),
            )
        return table

    def _output_lines(self, summary: JobSummary) -> list[str]:
        """After the summary line: for a script or module that reported no metrics, that it did
        not and how it can; where the ranks' whole output is, for a script or a module (only
        part of it, or none, was shown) or when a traceback was held back (rank_output.py)."""
        program = self.job_label.split(" ", 1)[0] if self.job_label.startswith(("script ", "module ")) else ""
        lines = []
        if not summary.metrics_reported and program:
            lines.append(
                f"the {program} reported no metrics: call group.report(step=i, loss=loss) each step "
                "(group = boltring.netio.init(); README, The worker API) to see its steps and loss here"
            )
        held = self.rank_output.held if self.rank_output is not None else set()
        if (program and summary.metrics_reported) or held:
            local = {n.name for n in self.c.config.nodes if n.local}
            where = rank_logs(summary, local)
            if where:
                tracebacks = f" ({_ranks_text(sorted(held))}: the traceback is there)" if held else ""
                lines.append(f"output of each rank: {where}{tracebacks}")
        return lines


def _ranks_text(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def rank_logs(summary: JobSummary, local: set[str]) -> str:
    """Where each rank's rank.log is: "~/.boltring/runs/J/rank*/rank.log" on this machine,
    "h2:~/.boltring/runs/J/rank1/rank.log" (as scp takes it) on another node."""
    places: dict[tuple[str, str], list[int]] = {}
    for r, m in sorted(summary.ranks.items()):
        log = str(m.get("log") or "")
        if not log:
            continue
        head, sep, tail = log.rpartition(f"/rank{r}/rank.log")
        key = (str(m.get("node") or ""), head if sep and not tail else log)
        places.setdefault(key, []).append(r)
    parts = []
    for (node, head), ranks in places.items():
        if head.endswith("/rank.log"):  # not the usual layout: each file as it is
            path = head
        else:
            path = f"{head}/rank{ranks[0]}/rank.log" if len(ranks) == 1 else f"{head}/rank*/rank.log"
        parts.append(path if node in local else f"{node}:{path}")
    return ", ".join(parts)


def summary_line(summary: JobSummary) -> str:
    tokens = f"  {summary.tokens_per_s:.0f} tokens/s" if summary.tokens_per_s else ""
    restarts = f"  {len(summary.restarts)} restart(s)" if summary.restarts else ""
    if not summary.metrics_reported:  # never "steps 0/300 loss – → –" as if it trained nothing
        progress = "no steps reported"
    else:
        # no rank could be read (every node unreachable): the job's steps are not known, not 0
        steps = "?" if summary.steps is None else str(summary.steps)
        progress = (
            f"steps {steps}/{summary.total_steps}  loss "
            f"{_fmt(summary.first_loss, '.4f')} → {_fmt(summary.last_loss, '.4f')}"
        )
    return f"{progress}  wall {_wall(summary)}{tokens}{restarts}  run dir {summary.run_dir}"


def _wall(summary: JobSummary) -> str:
    """The job's wall time; where the end of a rank was never learned (its exit record was not
    read), the time the records prove, as "≥", and whose end is missing."""
    if not summary.wall_s_is_lower_bound:
        return fmt_elapsed(summary.wall_s)
    missing = [(r, m) for r, m in sorted(summary.ranks.items()) if m.get("ended_s", 0) is None]
    who = ", ".join(f"rank {r} on {m.get('node')}" for r, m in missing) or "a rank"
    return f"≥ {fmt_elapsed(summary.wall_s)} (the end of {who} was not read)"


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


async def stop_within(controller: JobController, by: StoppedBy, wait_s: float) -> str | None:
    """Stop every rank and wait at most `wait_s` for their ends (a node that cannot be reached
    would hold the wait forever), or only until the ranks not known to have ended are all on
    nodes the stop could not reach: nothing stops those, and no end will be read. None when
    every end was confirmed; else one clause naming each node whose ranks may still run, and
    why, with what to do."""
    failures: dict[str, str] = {}  # node -> why its ranks could not be stopped

    def note(ev: Event) -> None:
        if isinstance(ev, LogLine) and ev.text.startswith(_COULD_NOT_STOP):
            node, _, why = ev.text.removeprefix(_COULD_NOT_STOP).partition(": ")
            failures[node] = why

    def hopeless() -> bool:
        left = controller.unconfirmed_ranks()
        return bool(left) and set(left) <= set(failures)

    controller.add_listener(note)
    kill = asyncio.ensure_future(controller.kill(by=by))
    deadline = time.monotonic() + wait_s
    try:
        while not kill.done() and not hopeless() and time.monotonic() < deadline:
            await asyncio.wait({kill}, timeout=min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        controller.remove_listener(note)
        if not kill.done():
            kill.cancel()  # the ranks whose end was not read are named below
            await asyncio.gather(kill, return_exceptions=True)
    left = controller.unconfirmed_ranks()
    if not left:
        return None
    who = "; ".join(
        f"{_ranks_text(ranks)} on {node} ({failures.get(node) or f'no end read within {wait_s:g} s'})"
        for node, ranks in left.items()
    )
    one = sum(map(len, left.values())) == 1
    them, answer = ("it" if one else "them"), ("answers" if len(left) == 1 else "answer")
    return (
        f"could not confirm that {who} stopped: {'it' if one else 'they'} may still run; "
        f"`boltring kill` stops {them} once {' and '.join(left)} {answer}"
    )


_COULD_NOT_STOP = "could not stop the ranks on "  # core._kill_ranks, for a node it cannot reach


def exit_code(summary: JobSummary) -> int:
    """0 finished, 130 stopped by a user (Ctrl-C, `boltring kill`, the app), 1 failed."""
    if summary.status == JobState.KILLED:
        return 130
    return 0 if summary.status == JobState.FINISHED else 1


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
        if not await controller.attach():
            view.say("no job is running for this config")
            return _say_last_run(view, controller.config.source)
        if interrupted is None:
            await controller.read_once(STATUS_READ_S)  # what the ranks wrote so far
            summary = controller.summary()
            if json_out:
                with view._output():
                    print(json.dumps(summary.to_dict(), default=str), flush=True)
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
