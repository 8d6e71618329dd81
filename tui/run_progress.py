"""The live progress of a headless job (`--run`, `status --follow`): on a terminal a rich bar
(step, elapsed, ETA, loss, per-rank throughput), otherwise a plain line at most every
PLAIN_EVERY_S; elapsed and ETA counted from the job's own start and its ranks' step clocks.

Apart from the --run view (headless.py) because the counting (elapsed, ETA, the draw limits)
is its own concern: LiveProgress is the part of HeadlessView that draws it, and the view
feeds it the events and the job's state.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Column
from rich.text import Text

from boltring.cluster.jobs.events import Event, JobRestarted, JobStarted, StepProgress
from boltring.cluster.states import JobState

from .fmt import fmt_elapsed
from .run_summary import figure
from .view_state import eta_seconds, recent_rate

PROGRESS_EVERY_S = 0.5  # redraw limit for the live line on a terminal
PLAIN_EVERY_S = 5.0  # when stdout is not a terminal, a progress line at most this often


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


class LiveProgress:
    """The progress part of the headless view: the latest step, the job's start and recent
    steps (elapsed, ETA), and the bar or plain line that shows them. The view sets `_state`
    from the job's state events and calls `_time` for every event, `_draw_soon` for steps."""

    def __init__(self, console: Console, clock: Callable[[], float], live_line: bool):
        self.console = console
        self.live_line = live_line  # a rich bar on a terminal; plain lines otherwise
        self.clock = clock
        self._last_draw = -1e9
        self._drawn_step: int | None = None  # the step of the last plain line printed
        self._progress: StepProgress | None = None
        self._state: JobState | None = None  # the job's, from its JobStateChanged events
        self._draw_pending: asyncio.Handle | None = None  # one draw per burst of step events
        self._started: float | None = None  # the job's start, on self.clock (elapsed, ETA)
        self._steps: deque[tuple[float, int]] = deque(maxlen=4096)  # (rank's wall, step): the rate
        self._bar: Progress | None = None
        self._task: TaskID | None = None

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
        """Seconds left at the recent rate (view_state.eta_seconds: the app's rule too)."""
        p = self._progress
        return None if p is None else eta_seconds(self._state, p.step, p.total, recent_rate(self._steps))

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
        parts.append(f"loss {figure(p.loss, '.4f')}")
        parts += _tokens(p)
        for r, m in sorted(p.ranks.items()):
            samples, gbps = figure(m.get("samples_per_s"), ".0f"), figure(m.get("allreduce_gbps"), ".2f")
            parts.append(f"r{r} {samples} samp/s {gbps} GB/s")
        return " | ".join(parts)

    def _details(self, p: StepProgress) -> str:
        parts = [f"loss {figure(p.loss, '.4f')}", *_tokens(p)]
        for r, m in sorted(p.ranks.items()):
            parts.append(
                f"r{r} {figure(m.get('samples_per_s'), '.0f')}/s {figure(m.get('allreduce_gbps'), '.2f')}GB/s"
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
        """The draw _draw_soon scheduled (the view guards it against a closed output)."""
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
        self._drawn_step = p.step
        self.console.print(self._line(p), markup=False, highlight=False, soft_wrap=True)

    def _end_drawing(self) -> None:
        """The job has ended: the last burst's pending draw is made now, then the bar stops (or,
        with plain lines, the latest step is drawn whatever the limit), before the summary."""
        if self._draw_pending is not None:  # the last burst's draw: this one replaces it
            self._draw_pending.cancel()
            self._draw_pending = None
            if self.live_line:
                self._draw()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._progress is not None and self._progress.step != self._drawn_step:
            self._draw(force=True)  # the latest step, unless its line is already the last one out
