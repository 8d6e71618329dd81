"""`boltring --run`: the headless view of the controller.

On a terminal: one live progress line, then a summary table. With `--json`: one JSON object
per line on stdout (start, state, step, log/error, rank_start, rank_exit, summary), nothing
else, for scripts and CI. Ctrl-C stops every rank and says so.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from rich.console import Console
from rich.table import Table

from boltring.cluster.jobs.controller import ControllerError, JobController
from boltring.cluster.jobs.events import (
    CheckResult,
    Event,
    JobStarted,
    JobSummary,
    LogLine,
    RankExited,
    RankMetrics,
    StepProgress,
    SyncProgress,
)
from boltring.cluster.states import JobState, StoppedBy

PROGRESS_EVERY_S = 0.5  # redraw limit for the live line on a terminal
PLAIN_EVERY_S = 5.0  # when stdout is not a terminal, a progress line at most this often


def _fmt(v, spec=".3f", none="–") -> str:
    return none if v is None else format(v, spec)


class HeadlessView:
    def __init__(self, controller: JobController, *, json_out: bool, console: Console | None = None):
        self.c = controller
        self.json_out = json_out
        self.console = console or Console(stderr=json_out, highlight=False)
        self.live_line = self.console.is_terminal and not json_out
        self._last_draw = 0.0
        self._progress: StepProgress | None = None
        self._sync_drawn = 0.0
        self._said: set[str] = set()

    def __call__(self, ev: Event) -> None:
        if self.json_out:
            if not isinstance(ev, RankMetrics):  # step events carry per-rank throughput
                d = ev.to_dict()
                if isinstance(ev, LogLine) and ev.level == "error":
                    d["event"] = "error"
                print(json.dumps(d, default=str), flush=True)
            return
        if isinstance(ev, SyncProgress):
            self._sync_progress(ev)
        elif isinstance(ev, StepProgress):
            self._progress = ev
            self._draw()
        elif isinstance(ev, LogLine) and (ev.level != "info" or ev.source == "controller"):
            if ev.level == "error":
                self._said.add(ev.text)  # the summary does not repeat it
            self._print(
                f"[{'red' if ev.level == 'error' else 'yellow' if ev.level == 'warn' else 'cyan'}]"
                f"{ev.source}[/]: {ev.text}"
            )
        elif isinstance(ev, JobStarted):
            verb = "re-attached to" if ev.attached else "started"
            self._print(
                f"[bold]{verb} job {ev.job_id}[/]: {ev.job}, {ev.world_size} ranks on "
                f"{', '.join(ev.nodes)}, {ev.steps} steps"
            )
        elif isinstance(ev, RankExited):
            pass  # the job's one failure reason (with each rank's part as evidence) comes once, at the end
        elif isinstance(ev, CheckResult) and ev.status in ("fail", "warn"):
            colour = "red" if ev.status == "fail" else "yellow"
            self._print(
                f"[{colour}]{ev.status}[/] {ev.node} {ev.name}: {ev.value or ''}"
                + (f" — {ev.hint}" if ev.hint else "")
            )

    def _line(self, p: StepProgress) -> str:
        parts = [f"step {p.step}/{p.total}", f"loss {_fmt(p.loss, '.4f')}"]
        for r, m in sorted(p.ranks.items()):
            parts.append(
                f"r{r} {_fmt(m.get('samples_per_s'), '.0f')} samp/s "
                f"{_fmt(m.get('allreduce_gbps'), '.2f')} GB/s"
            )
        return " | ".join(parts)

    def _sync_progress(self, ev: SyncProgress) -> None:
        """Bytes of a large file going to a node (workspace sync before launch)."""
        now, done = time.monotonic(), ev.sent >= ev.total
        mb = f"{ev.sent / 1e6:.0f}/{ev.total / 1e6:.0f} MB"
        line = f"sync {ev.node} {ev.path}: {mb} ({ev.sent / max(ev.total, 1):.0%})"
        if self.live_line:
            width = self.console.width
            self.console.file.write("\r" + (line if not done else "")[: width - 1].ljust(width - 1) + "\r")
            self.console.file.flush()
        elif done or now - self._sync_drawn >= PLAIN_EVERY_S:
            self._sync_drawn = now
            self.console.print(line, markup=False)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        every = PROGRESS_EVERY_S if self.live_line else PLAIN_EVERY_S
        if self._progress is None or (not force and now - self._last_draw < every):
            return
        self._last_draw = now
        line = self._line(self._progress)
        if self.live_line:
            width = self.console.width
            self.console.file.write("\r" + line[: width - 1].ljust(width - 1))
            self.console.file.flush()
        else:
            self.console.print(line, markup=False)

    def _print(self, markup: str) -> None:
        if self.live_line and self._progress is not None:
            self.console.file.write("\r" + " " * (self.console.width - 1) + "\r")
        self.console.print(markup)

    def finish(self, summary: JobSummary) -> None:
        if self.json_out:
            return
        self._draw(force=True)
        if self.live_line:
            self.console.file.write("\n")
        table = Table(title=f"job {summary.job_id}: {summary.status}", title_justify="left")
        for col in ("rank", "node", "steps/s", "samples/s", "allreduce GB/s"):
            table.add_column(col, justify="right" if col not in ("node",) else "left")
        for r, m in sorted(summary.ranks.items()):
            table.add_row(
                str(r),
                str(m.get("node", "")),
                _fmt(m.get("steps_per_s"), ".2f"),
                _fmt(m.get("samples_per_s"), ".0f"),
                _fmt(m.get("allreduce_gbps"), ".2f"),
            )
        self.console.print(table)
        self.console.print(
            f"steps {summary.steps}/{summary.total_steps}  loss "
            f"{_fmt(summary.first_loss, '.4f')} → {_fmt(summary.last_loss, '.4f')}  "
            f"wall {summary.wall_s:.1f} s  run dir {summary.run_dir}"
        )
        if summary.reason and summary.reason not in self._said:
            self.console.print(f"[red]{summary.reason}[/]")


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
    try:
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        loop.add_signal_handler(signal.SIGTERM, interrupted.set)
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
        task.cancel()
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
            failed = [r for r in results if r.status == "fail"]
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
            _say(view, f"launch failed: {e}" + (f" ({e.hint})" if e.hint else ""))
            return 1
        if not done:
            _say(view, "interrupted during launch: every rank started so far was stopped", error=False)
            return 130
        waiter = asyncio.ensure_future(controller.wait())
        stopper = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper.done() and not waiter.done():
            _say(view, "interrupted: stopping every rank …", error=False)
            await controller.kill(by=StoppedBy.CTRL_C)
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
        print(json.dumps({"event": "error", "text": text, "t": time.time()}), flush=True)
        print(f"boltring: {text}", file=sys.stderr)
    else:
        view.console.print(text, markup=False, soft_wrap=True)  # one line, however long


async def run_status(controller: JobController, *, follow: bool = False, json_out: bool = False) -> int:
    """Re-attach to the job left running for this config; show it, or follow it to the end."""
    view = HeadlessView(controller, json_out=json_out)
    controller.add_listener(view)
    try:
        if not await controller.attach():
            _say(view, "no job is running for this config")
            return 1
        if not follow:
            await asyncio.sleep(max(controller.poll_s * 2, 0.5))  # read what the ranks wrote so far
            summary = controller.summary()
            if json_out:
                print(json.dumps(summary.to_dict(), default=str))
            else:
                view.finish(summary)
            return 0
        summary = await controller.wait()
        view.finish(summary)
        return exit_code(summary)
    finally:
        controller.remove_listener(view)
        await controller.close()


async def run_kill(controller: JobController) -> int:
    console = Console(highlight=False)
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
        await controller.kill(by=StoppedBy.USER_KILL)
        console.print(f"boltring: killed every rank of job {job}")
        return 0
    finally:
        await controller.close()
