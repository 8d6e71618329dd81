"""The boltring Textual app: one screen that drives a JobController and shows its events.

The app never talks to nodes itself. It is given a controller object (see
`boltring.cluster.jobs.controller.JobController`, or the test double `tests/tui/feed.py`) and:

* listens to its events: the listener only drops each event into an `EventInbox`, which posts
  a single `EventsPending` message per burst; the handler applies the burst to a
  `ClusterView` (plain state, bounded deques);
* renders widgets from that state on a 4 Hz timer (paused while a modal is open), so a flood
  of metrics costs dictionary updates, not redraws;
* calls the controller only from workers (`attach`, `run_checks`, `launch` + `wait`, `kill`,
  `close`); an exception there becomes a header line, a log line and a notification.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input

from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.events import Event

from .messages import EventInbox, EventsPending, NodeDetailsRequested, NodeSelected
from .screens.confirm import ConfirmModal
from .screens.node_details import NodeDetailsScreen
from .screens.quit_modal import KILL, LEAVE, QuitModal
from .view_state import ClusterView
from .widgets.log_pane import LogPane
from .widgets.loss_plot import LossPlot
from .widgets.node_grid import NodeGrid
from .widgets.node_panel import NodePanel
from .widgets.status_header import StatusHeader

REFRESH_S = 0.25  # widgets are redrawn from state at most this often
PLOT_EVERY = 4  # ticks between loss-plot redraws (plotext is slow)
CLOSE_TIMEOUT_S = 60.0  # quitting never hangs longer than this on controller.close()


class PlannedRankLike(Protocol):
    rank: int
    node: str
    where: str
    command: str


class ControllerLike(Protocol):
    """What the app uses of `boltring.cluster.jobs.controller.JobController`."""

    config: Config
    state: str
    job_id: str | None

    def add_listener(self, fn: Callable[[Event], None]) -> None: ...
    def remove_listener(self, fn: Callable[[Event], None]) -> None: ...
    def plan(self, resume: bool = False) -> Sequence[PlannedRankLike]: ...
    async def run_checks(self) -> Any: ...
    async def setup(self, names: list[str] | None = None) -> Any: ...
    async def launch(self, resume: bool = False) -> str: ...
    async def kill(self) -> None: ...
    async def wait(self) -> Any: ...
    async def attach(self) -> bool: ...
    async def close(self, kill_running: bool = False) -> None: ...


def plan_details(plan: Iterable[PlannedRankLike]) -> Content:
    """The confirm dialog's body: what runs where, one rank per entry."""
    rows = list(plan)
    if not rows:
        return Content.styled("the plan is empty", "italic $text-muted")
    node_w = max(len(r.node) for r in rows)
    where_w = max(len(r.where) for r in rows)
    lines: list[Content] = []
    for r in rows:
        lines.append(
            Content.assemble(
                (f"rank {r.rank:<3}", "bold"),
                " ",
                (r.node.ljust(node_w), "bold $accent"),
                "  ",
                (r.where.ljust(where_w), ""),
            )
        )
        lines.append(Content.styled(f"   $ {r.command}", "$text-muted"))
    return Content("\n").join(lines)


class BoltringApp(App[int]):
    """`BoltringApp(controller)`; `clock` is injectable so snapshots freeze elapsed times."""

    TITLE = "boltring"
    CSS_PATH = "app.tcss"
    AUTO_FOCUS = None  # focusing a node panel filters the log: start unfiltered

    BINDINGS = [
        Binding("l", "launch", "Launch", id="launch"),
        Binding("r", "resume", "Resume", id="resume"),
        Binding("k", "kill", "Kill", id="kill"),
        Binding("c", "checks", "Checks", id="checks"),
        # not in the footer (keeps it short); the command palette lists "Set up node: NAME"
        Binding("s", "setup_node", "Setup", id="setup", show=False),
        Binding("slash", "filter_log", "Filter", id="filter"),
        Binding("escape", "clear_filter", "All nodes", show=False, id="clear_filter"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    # Actions that start something on the cluster; refused while a dialog is open.
    _JOB_ACTIONS = ("launch", "resume", "kill", "checks")

    def __init__(
        self, controller: ControllerLike, *, clock: Callable[[], float] = time.time, cursor_blink: bool = True
    ) -> None:
        super().__init__()
        self.controller = controller
        self.clock = clock
        self.cursor_blink = cursor_blink
        self.view = ClusterView(
            controller.config,
            state=getattr(controller, "state", "idle"),
            job_id=getattr(controller, "job_id", None),
            clock=clock,
        )
        self.inbox = EventInbox(self.post_message)
        self._busy: set[str] = set()  # controller calls in flight: "checks", "launch", "kill"…
        self._ticks = 0
        self._controller_closed = False
        self._bindings_key: tuple = ()

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield NodeGrid(list(self.view.nodes.values()), id="nodes")
        with Horizontal(id="bottom"):
            yield LossPlot(id="loss")
            yield LogPane(cursor_blink=self.cursor_blink, id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.controller.add_listener(self._on_controller_event)
        self.refresh_timer = self.set_interval(REFRESH_S, self._tick)
        self.refresh_now()
        self._startup()

    async def on_unmount(self) -> None:
        try:
            self.controller.remove_listener(self._on_controller_event)
        except Exception:
            pass
        if not self._controller_closed:  # left without the quit dialog: never kill the job
            self._controller_closed = True
            try:
                await asyncio.wait_for(self.controller.close(kill_running=False), CLOSE_TIMEOUT_S)
            except Exception:
                pass

    # -- events from the controller -------------------------------------------------------

    def _on_controller_event(self, event: Event) -> None:
        """The controller's listener: called synchronously for every event. Never raises."""
        try:
            self.inbox.put(event)
        except Exception:
            pass

    def on_events_pending(self, message: EventsPending) -> None:
        self._drain_inbox()

    def _drain_inbox(self) -> None:
        events, dropped = self.inbox.drain()
        if dropped:
            self.view.note(f"{dropped} metrics/log events dropped (the UI fell behind)", "warn")
        for event in events:
            try:
                self.view.apply(event)
            except Exception as exc:  # a malformed event must not take the UI down
                self.view.note(f"could not show {type(event).__name__}: {exc!r}", "error")
        self._sync_bindings()

    # -- rendering ------------------------------------------------------------------------

    def _tick(self) -> None:
        self._ticks += 1
        if isinstance(self.screen, ModalScreen):
            return  # redraws pause while a dialog is open
        self._render_screen(plot=self._ticks % PLOT_EVERY == 0)

    def refresh_now(self) -> None:
        """Render every widget from the current state (tests call this before a snapshot)."""
        self._render_screen(plot=True)

    def _main_screen(self) -> Screen:
        return self.screen_stack[0]

    def _render_screen(self, plot: bool) -> None:
        now = self.clock()
        screen = self.screen
        try:
            if isinstance(screen, NodeDetailsScreen):
                screen.refresh_from(now)
                return
            main = self._main_screen()
            main.query_one(StatusHeader).update_from(self.view, now)
            checking = self.view.state == "checking" or "checks" in self._busy
            for panel in main.query(NodePanel):
                panel.update_from(now, checking, self.view.running)
            if plot:
                main.query_one(LossPlot).show(self.view.loss_history, self.view.loss_version)
            main.query_one("#log", LogPane).sync(self.view)
        except NoMatches:
            pass  # a screen or widget still composing: the next tick draws it

    # -- bindings -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self._JOB_ACTIONS or action in ("filter_log", "quit"):
            if isinstance(self.screen, ModalScreen):
                return False
        running = self.view.running
        if action in ("launch", "resume"):
            if running or self.view.state == "checking" or self._busy & {"launch", "checks"}:
                return None  # shown dimmed in the footer
        elif action == "kill":
            if not running or "kill" in self._busy:
                return None
        elif action == "setup_node":  # never under a running job: pip would replace its packages
            if running or self.view.state in ("checking", "launching") or self._busy & {"setup", "launch"}:
                return None
        elif action == "checks":  # allowed while a job runs: the controller then skips the
            # bandwidth burst and the port probes, which would disturb the ring
            if self.view.state in ("checking", "launching") or self._busy & {"checks", "launch"}:
                return None
        return True

    def _sync_bindings(self) -> None:
        key = (self.view.state, tuple(sorted(self._busy)))
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Launch job", "Start the configured job on the cluster (l)", self.action_launch)
        yield SystemCommand("Resume job", "Start the job from its last checkpoint (r)", self.action_resume)
        yield SystemCommand("Kill job", "Stop every rank of the running job (k)", self.action_kill)
        yield SystemCommand(
            "Re-run checks", "Check SSH, ring interfaces, routes, versions (c)", self.action_checks
        )
        yield SystemCommand(
            "Filter log", "Show only log lines containing some text (/)", self.action_filter_log
        )
        yield SystemCommand("Show all nodes' log", "Clear the log filters (escape)", self.action_clear_filter)
        for name in self.view.nodes:
            yield SystemCommand(
                f"Set up node: {name}",
                f"Install this machine's boltring and mlx into {name}'s venv (s on its panel)",
                lambda name=name: self.setup_node(name),
            )
        for name in self.view.nodes:
            yield SystemCommand(
                f"Node details: {name}",
                f"Checks and full log of {name}",
                lambda name=name: self.show_details(name),
            )

    # -- actions --------------------------------------------------------------------------

    def action_launch(self) -> None:
        self._confirm_launch(resume=False)

    def action_resume(self) -> None:
        self._confirm_launch(resume=True)

    def _confirm_launch(self, resume: bool) -> None:
        if self.check_action("resume" if resume else "launch", ()) is not True:
            self.bell()
            return
        try:
            plan = list(self.controller.plan(resume=resume))
        except Exception as exc:
            self._report_error("planning the job", exc)
            return
        job = self.controller.config.job
        what = f"example {job.example}" if job.script is None else f"script {job.script}"
        n = len(self.view.nodes)
        title = (
            "Resume the job from its last checkpoint?"
            if resume
            else f"Launch {what} on {n} node{'s' if n != 1 else ''}?"
        )
        message = f"{len(plan)} ranks, {job.steps} steps, global batch {job.global_batch}. What runs where:"

        def done(ok: bool | None) -> None:
            if ok:
                self._launch(resume)

        self.push_screen(
            ConfirmModal(title, message, plan_details(plan), confirm_label="Resume" if resume else "Launch"),
            done,
        )

    def action_kill(self) -> None:
        if self.check_action("kill", ()) is not True:
            self.bell()
            return
        job = self.view.job_id or "the job"

        def done(ok: bool | None) -> None:
            if ok:
                self._kill()

        self.push_screen(
            ConfirmModal(
                f"Kill {job}?",
                "Every rank on every node is stopped. Progress since the last checkpoint is lost.",
                confirm_label="Kill",
                danger=True,
            ),
            done,
        )

    def action_checks(self) -> None:
        if self.check_action("checks", ()) is not True:
            self.bell()
            return
        self._run_checks()

    def action_setup_node(self) -> None:
        """`boltring setup` for the focused node panel's node (every node when none is focused)."""
        self.setup_node(self.focused.node_name if isinstance(self.focused, NodePanel) else None)

    def setup_node(self, name: str | None) -> None:
        if self.check_action("setup_node", ()) is not True:
            self.bell()
            return
        which = name or "every node"

        def done(ok: bool | None) -> None:
            if ok:
                self._setup([name] if name else None)

        self.push_screen(
            ConfirmModal(
                f"Set up {which}?",
                f"Installs this machine's boltring and mlx into the venv of {which}'s python, "
                "over SSH; a node already on them is left as it is. pip's output goes to the log.",
                confirm_label="Set up",
            ),
            done,
        )

    def action_filter_log(self) -> None:
        pane = self._log_pane()
        if pane is not None:
            pane.open_filter()

    def action_clear_filter(self) -> None:
        pane = self._log_pane()
        if pane is None:
            return
        pane.close_filter(clear=True)
        pane.set_node_filter(None)
        if isinstance(self.focused, (NodePanel, Input)):
            self.set_focus(None)
        self._render_screen(plot=False)

    async def action_quit(self) -> None:
        if isinstance(self.screen, ModalScreen):
            return
        if self.view.running:

            def done(choice: str | None) -> None:
                if choice in (LEAVE, KILL):
                    self._close_and_exit(kill_running=choice == KILL)

            self.push_screen(QuitModal(self.view.job_id), done)
        else:
            self._close_and_exit(kill_running=False)

    def _log_pane(self) -> LogPane | None:
        panes = self.screen.query(LogPane)
        return panes.first() if panes else None

    # -- messages from widgets ------------------------------------------------------------

    def on_node_selected(self, message: NodeSelected) -> None:
        pane = self._main_screen().query_one("#log", LogPane)
        pane.set_node_filter(message.node)
        self._render_screen(plot=False)

    def on_node_details_requested(self, message: NodeDetailsRequested) -> None:
        self.show_details(message.node)

    def show_details(self, node: str) -> None:
        if node in self.view.nodes and not isinstance(self.screen, NodeDetailsScreen):
            self.push_screen(NodeDetailsScreen(self.view, node, cursor_blink=self.cursor_blink))

    # -- controller calls (workers) -------------------------------------------------------

    def _note(self, text: str, level: str = "info") -> None:
        """A log line of the app, after the events that came before it."""
        self._drain_inbox()
        self.view.note(text, level)

    def _report_error(self, what: str, exc: BaseException) -> None:
        text = f"{what} failed: {exc}" if str(exc) else f"{what} failed: {type(exc).__name__}"
        self._note(text, "error")
        self.view.error = text
        self.notify(text, title="boltring", severity="error", timeout=8)
        self._render_screen(plot=False)

    async def _call(self, busy: str, what: str, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run one controller coroutine; (True, result), or (False, None) after reporting."""
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
            try:
                statuses = [getattr(r, "status", None) for r in results]
                failed = [r for r in results if getattr(r, "status", None) == "fail"]
            except TypeError:
                statuses, failed = [], []
            counts = ", ".join(
                f"{statuses.count(s)} {s}" for s in ("ok", "warn", "fail", "skipped") if statuses.count(s)
            )
            if counts:
                self._note(f"checks done: {counts}", "error" if failed else "info")
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
            status = getattr(summary, "status", "")
            severity = {"failed": "error", "killed": "warning"}.get(status, "information")
            self.notify(
                f"job {getattr(summary, 'job_id', '')} {status}",
                title="boltring",
                severity=severity,
                timeout=6,
            )

    @work(group="kill", exit_on_error=False)
    async def _kill(self) -> None:
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
        except Exception as exc:
            self._report_error("closing", exc)
            await asyncio.sleep(1.5)  # let the notification be read
        self._controller_closed = True
        self.exit(0)


def run_app(controller: ControllerLike) -> int:
    """Run the TUI until the user quits; the process exit code."""
    app = BoltringApp(controller)
    result = app.run()
    if app.return_code not in (None, 0):
        return app.return_code
    return result if isinstance(result, int) else 0
