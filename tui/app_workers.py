"""ControllerApp: the base of the boltring app that talks to the controller.

It owns the event inbox (controller events → `ClusterView`) and runs every controller call
in a worker (`attach`, `run_checks`, `resume_point`, `launch` + `wait`, `kill`, `close`); an
exception there becomes a header line, a log line and a notification, never a traceback.
BoltringApp (app.py) adds the screens, the layout and the key actions on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from textual import work
from textual.app import App
from textual.notifications import SeverityLevel

from boltring.cluster.errors import BoltringError
from boltring.cluster.jobs.events import Event
from boltring.cluster.nodes.checks.results import count_checks
from boltring.cluster.states import CheckStatus, JobState

from .controller_like import ControllerLike
from .messages import EventInbox, EventsPending
from .node_state import Level
from .view_state import ClusterView

CLOSE_TIMEOUT_S = 60.0  # quitting never hangs longer than this on controller.close()

R = TypeVar("R")


class ControllerApp(App[int]):
    controller: ControllerLike
    view: ClusterView
    inbox: EventInbox
    _busy: set[str]  # controller calls in flight: "checks", "launch", "kill"…
    _bindings_key: tuple[object, ...]
    _controller_closed: bool

    def _render_screen(self, plot: bool) -> None:
        """Draw the widgets from the view (BoltringApp)."""

    # -- events from the controller -------------------------------------------------------

    def _on_controller_event(self, event: Event) -> None:
        """The controller's listener: called synchronously for every event (EventInbox.put
        only appends to a deque and posts a message)."""
        self.inbox.put(event)

    def on_events_pending(self, message: EventsPending) -> None:
        self._drain_inbox()

    def _drain_inbox(self) -> None:
        events, dropped = self.inbox.drain()
        if dropped:
            self.view.note(f"{dropped} metrics/log events dropped (the UI fell behind)", Level.WARN)
        for event in events:
            try:
                self.view.apply(event)
            except (ValueError, KeyError, TypeError) as exc:  # a malformed event must not take the UI down
                self.view.note(f"could not show {type(event).__name__}: {exc!r}", Level.ERROR)
        self._sync_bindings()

    def _sync_bindings(self) -> None:
        if not self.screen_stack:
            # The app is shutting down (its screens are gone, a worker's `finally` or a last
            # event may still land here): no footer to update, and `self.screen` would raise.
            return
        key = (self.view.state, tuple(sorted(self._busy)))
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()

    # -- controller calls (workers) -------------------------------------------------------

    def _note(self, text: str, level: str = Level.INFO) -> None:
        """A log line of the app, after the events that came before it."""
        self._drain_inbox()
        self.view.note(text, level)

    def _report_error(self, what: str, exc: BaseException) -> None:
        """One line in the header, the log and a notification. When a launch failed reaching a
        node, the line names every unreachable node once (the error names only the first it
        met); any other failure is said as it is, whatever the nodes' SSH states."""
        self._drain_inbox()
        detail = str(exc) or type(exc).__name__
        bad = [nv.name for nv in self.view.nodes.values() if nv.lost]
        if what in ("launching", "resuming") and self._names_lost_node(detail, bad):
            text = f"{what} failed: cannot reach {', '.join(bad)}"
            self._note(f"{text} ({detail})", Level.ERROR)
        else:
            text = f"{what} failed: {detail}"
            self._note(text, Level.ERROR)
        self.view.error = text
        self.notify(text, title="boltring", severity="error", timeout=8)
        self._render_screen(plot=False)

    @staticmethod
    def _names_lost_node(detail: str, lost: list[str]) -> bool:
        """Whether the error is about one of these unreachable nodes. A node's errors say
        "node: cause" (cluster/nodes/errors.py), and the controller keeps that line when it
        re-raises them as a ControllerError, whose class no longer tells; so the node is read
        from the line's head. A node merely marked unreachable by the last checks is no cause:
        a launch refused before any node was contacted (bad job arguments) must say so."""
        head, sep, _ = detail.partition(": ")
        return bool(sep) and head in lost

    async def _call(self, busy: str, what: str, call: Callable[[], Awaitable[R]]) -> tuple[bool, R | None]:
        """Run one controller coroutine; (True, result), or (False, None) after reporting. Any
        exception is reported rather than raised: the app must outlive a controller bug."""
        self._busy.add(busy)
        self._sync_bindings()
        try:
            return True, await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._report_error(what, exc)
            return False, None
        finally:
            self._busy.discard(busy)
            self._sync_bindings()

    @work(group="controller", exit_on_error=False)
    async def _startup(self) -> None:
        ok, attached = await self._call("attach", "re-attaching", self.controller.attach)
        if ok and attached:
            self._follow_job()
        await self._checks_body()

    @work(group="controller", exit_on_error=False)
    async def _run_checks(self) -> None:
        await self._checks_body()

    async def _checks_body(self) -> None:
        self.view.error = None
        ok, results = await self._call("checks", "checks", self.controller.run_checks)
        if ok and results is not None:
            failed = [r for r in results if r.status == CheckStatus.FAIL]
            if results:
                counts = count_checks(results)  # the same words as `boltring check` prints
                self._note(f"checks done: {counts}", Level.ERROR if counts.failed else Level.INFO)
            if failed:
                names = ", ".join(f"{r.node} {r.name}" for r in failed[:4])
                more = f" and {len(failed) - 4} more" if len(failed) > 4 else ""
                noun = "check" if len(failed) == 1 else "checks"
                self.notify(
                    f"{len(failed)} {noun} failed: {names}{more}",
                    title="checks",
                    severity="warning",
                    timeout=6,
                )

    @work(group="setup", exclusive=True, exit_on_error=False)
    async def _setup(self, names: list[str] | None) -> None:
        ok, results = await self._call("setup", "setting up", lambda: self.controller.setup(names))
        if ok and results is not None:
            failed = [r.node for r in results if r.status == "failed"]
            summary = ", ".join(f"{r.node} {r.status}" for r in results)
            self.notify(summary, title="setup", severity="error" if failed else "information", timeout=6)
            await self._checks_body()  # the python, boltring and mlx checks show the new state

    @work(group="job", exit_on_error=False)
    async def _launch(self, resume: bool) -> None:
        self.view.error = None
        ok, job_id = await self._call(
            "launch", "resuming" if resume else "launching", lambda: self.controller.launch(resume=resume)
        )
        if ok:
            await self._wait_job()

    @work(group="job", exit_on_error=False)
    async def _follow_job(self) -> None:
        await self._wait_job()

    async def _wait_job(self) -> None:
        ok, summary = await self._call("wait", "following the job", self.controller.wait)
        if ok and summary is not None:
            status = JobState(summary.status)
            severity: SeverityLevel = "information"
            if status in (JobState.FAILED, JobState.KILLED):
                severity = "error" if status == JobState.FAILED else "warning"
            text = f"job {summary.job_id} {status}"
            if status == JobState.KILLED:
                text += f": {self.view.stopped_line()}"
            self.notify(text, title="boltring", severity=severity, timeout=6)

    @work(group="kill", exit_on_error=False)
    async def _kill(self) -> None:
        # Checked as the kill is sent, not when `k` was pressed: the job may have ended while
        # the dialog was open (its background does not redraw), and the controller's kill() of
        # an ended job stops nothing, so "every rank stopped" would be false.
        state = self.controller.state
        if not state.active:
            ended = "finished" if state == JobState.FINISHED else f"ended ({state})"
            text = f"kill: the job had already {ended}; nothing was stopped"
            self._note(text)
            self.notify(text, title="boltring", timeout=6)
            return
        self.view.kill_requested = True
        ok, _ = await self._call("kill", "killing the job", self.controller.kill)
        if ok:
            self._note("kill: every rank stopped")

    @work(group="quit", exclusive=True, exit_on_error=False)
    async def _close_and_exit(self, kill_running: bool) -> None:
        if kill_running:
            self.view.kill_requested = True
        verb = "killing the job and closing" if kill_running else "closing"
        self.notify(f"{verb}…", timeout=3)
        try:
            await asyncio.wait_for(self.controller.close(kill_running=kill_running), CLOSE_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except (TimeoutError, BoltringError, OSError) as exc:
            self._report_error("closing", exc)
            await asyncio.sleep(1.5)  # let the notification be read
        self._controller_closed = True
        self.exit(0)
