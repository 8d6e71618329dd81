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

(Over 400 lines: the app's compose, bindings, actions and dialogs for one screen; the
controller calls are in app_workers.py and the contract in controller_like.py.)
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from textual import events, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input

from boltring.cluster.errors import BoltringError
from boltring.cluster.jobs.export import write_loss_svg
from boltring.cluster.jobs.history import RunRecord, list_runs
from boltring.cluster.states import JobState

from .app_workers import CLOSE_TIMEOUT_S, ControllerApp
from .controller_like import ControllerLike, checks_details, failing_checks, plan_details
from .messages import EventInbox, NodeDetailsRequested, NodeSelected
from .node_state import Level
from .screens.confirm import ConfirmModal
from .screens.help import HelpScreen
from .screens.history import HistoryScreen
from .screens.node_details import NodeDetailsScreen
from .screens.quit_modal import KILL, LEAVE, QuitModal
from .view_state import ClusterView
from .widgets.log_pane import LogPane
from .widgets.loss_plot import LossPlot
from .widgets.node_grid import NodeGrid
from .widgets.node_panel import NodePanel
from .widgets.ring_strip import RingStrip
from .widgets.status_header import StatusHeader

REFRESH_S = 0.25  # widgets are redrawn from state at most this often
PLOT_EVERY = 4  # ticks between loss-plot redraws (plotext is slow)
WIDE_AT = 160  # from this many columns on, the loss plot and the log share the width evenly


class BoltringApp(ControllerApp):
    """`BoltringApp(controller)`; `clock` is injectable so snapshots freeze elapsed times."""

    TITLE = "boltring"
    CSS_PATH = "app.tcss"
    AUTO_FOCUS = None  # focusing a node panel filters the log: start unfiltered

    BINDINGS: ClassVar = [
        Binding("l", "launch", "Launch", id="launch", tooltip="launch the job (asks first)"),
        Binding("r", "resume", "Resume", id="resume", tooltip="resume from the last checkpoint (asks first)"),
        Binding("k", "kill", "Kill", id="kill", tooltip="stop every rank of the running job (asks first)"),
        Binding("c", "checks", "Checks", id="checks", tooltip="re-run the node and link checks"),
        # not in the footer (keeps it short); the command palette lists "Set up node: NAME"
        Binding(
            "s", "setup_node", "Setup", id="setup", show=False, tooltip="boltring setup of the focused node"
        ),
        Binding("slash", "filter_log", "Filter", id="filter", tooltip="filter the log by text"),
        Binding("h", "history", "History", id="history", tooltip="past jobs and their loss curves"),
        Binding(
            "p", "save_plot", "Save plot", show=False, id="save_plot", tooltip="save the loss plot as SVG"
        ),
        Binding("question_mark", "help", "Help", id="help", tooltip="this list of keys"),
        Binding(
            "escape",
            "clear_filter",
            "All nodes",
            show=False,
            id="clear_filter",
            tooltip="show every node's log",
        ),
        Binding("q", "quit", "Quit", id="quit", tooltip="quit (asks whether to leave a running job)"),
    ]

    # Actions that start something on the cluster or open a screen; refused while a dialog is open.
    _JOB_ACTIONS = ("launch", "resume", "kill", "checks")
    _SCREEN_ACTIONS = ("filter_log", "quit", "history", "help", "save_plot")

    def __init__(
        self,
        controller: ControllerLike,
        *,
        clock: Callable[[], float] = time.time,
        cursor_blink: bool = True,
        history: Callable[[], list[RunRecord]] = list_runs,
        export_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.clock = clock
        self.cursor_blink = cursor_blink
        self.history = history
        self.export_dir = export_dir or Path.cwd()
        self.view = ClusterView(
            controller.config, state=controller.state, job_id=controller.job_id, clock=clock
        )
        self.inbox = EventInbox(self.post_message)
        self._busy: set[str] = set()  # controller calls in flight: "checks", "launch", "kill"…
        self._ticks = 0
        self._controller_closed = False
        self._bindings_key: tuple[object, ...] = ()
        self._quiet_focus = False  # the first panel's focus at start does not filter the log

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield RingStrip(id="ring")
        timeout = self.controller.config.ssh.connect_timeout_s
        yield NodeGrid(list(self.view.nodes.values()), connect_timeout_s=timeout, id="nodes")
        with Horizontal(id="bottom"):
            yield LossPlot(id="loss")
            yield LogPane(cursor_blink=self.cursor_blink, id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.controller.add_listener(self._on_controller_event)
        self.refresh_timer = self.set_interval(REFRESH_S, self._tick)
        panels = self.query(NodePanel)
        if panels:  # Enter opens a node's details from the start; the log stays unfiltered
            self._quiet_focus = True
            panels.first().focus()
        self.refresh_now()
        self._startup()

    def on_resize(self, event: events.Resize) -> None:
        self.screen_stack[0].set_class(event.size.width >= WIDE_AT, "-wide")

    async def on_unmount(self) -> None:
        self.refresh_timer.stop()
        self.controller.remove_listener(self._on_controller_event)
        if not self._controller_closed:  # left without the quit dialog: never kill the job
            self._controller_closed = True
            try:
                await asyncio.wait_for(self.controller.close(kill_running=False), CLOSE_TIMEOUT_S)
            except (TimeoutError, BoltringError, OSError) as exc:
                # the terminal is being handed back: say it there, the job itself is untouched
                print(f"boltring: closing the controller: {exc or type(exc).__name__}", file=sys.stderr)

    # -- rendering ------------------------------------------------------------------------

    def _tick(self) -> None:
        self._ticks += 1
        if not self.screen_stack:  # the app is shutting down
            return
        if isinstance(self.screen, ModalScreen):
            return  # redraws pause while a dialog is open
        self._render_screen(plot=self._ticks % PLOT_EVERY == 0)

    def refresh_now(self) -> None:
        """Render every widget from the current state (tests call this before a snapshot)."""
        self._render_screen(plot=True)

    def _main_screen(self) -> Screen:
        return self.screen_stack[0]

    def _render_screen(self, plot: bool) -> None:
        if not self.screen_stack:  # shutting down (an error reported as the app exits)
            return
        now = self.clock()
        screen = self.screen
        try:
            if isinstance(screen, NodeDetailsScreen):
                screen.refresh_from(now)
                return
            main = self._main_screen()
            main.query_one(StatusHeader).update_from(self.view, now)
            main.query_one(RingStrip).update_from(self.view)
            checking = self.view.state == JobState.CHECKING or "checks" in self._busy
            for panel in main.query(NodePanel):
                panel.update_from(now, checking, self.view.running)
            if plot:
                main.query_one(LossPlot).show(self.view.loss_history, self.view.loss_version)
            main.query_one("#log", LogPane).sync(self.view)
        except NoMatches:
            pass  # a screen or widget still composing: the next tick draws it

    # -- bindings -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self._JOB_ACTIONS or action in self._SCREEN_ACTIONS:
            if isinstance(self.screen, ModalScreen):
                return False
        running = self.view.running
        if action in ("launch", "resume"):
            busy = self._busy & {"launch", "checks", "resume_point"}
            if running or self.view.state == JobState.CHECKING or busy:
                return None  # shown dimmed in the footer
        elif action == "kill":
            if not running or "kill" in self._busy:
                return None
        elif action == "setup_node":  # never under a running job: pip would replace its packages
            if (
                running
                or self.view.state in (JobState.CHECKING, JobState.LAUNCHING)
                or self._busy
                & {
                    "setup",
                    "launch",
                }
            ):
                return None
        elif action == "checks":  # allowed while a job runs: the controller then skips the
            # bandwidth burst and the port probes, which would disturb the ring
            if self.view.state in (JobState.CHECKING, JobState.LAUNCHING) or self._busy & {
                "checks",
                "launch",
            }:
                return None
        return True

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
        yield SystemCommand("Run history", "Past jobs and their loss curves (h)", self.action_history)
        yield SystemCommand(
            "Save the loss plot", "Write the loss curve as an SVG file (p)", self.action_save_plot
        )
        yield SystemCommand("Keys", "Every key of the app (?)", self.action_help)
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
        if self.check_action("launch", ()) is not True:
            self.bell()
            return
        self._confirm_launch(resume=False, resume_from=None)

    def action_resume(self) -> None:
        if self.check_action("resume", ()) is not True:
            self.bell()
            return
        self._ask_resume()

    @work(group="controller", exit_on_error=False)
    async def _ask_resume(self) -> None:
        """Find what a resume starts from (through the controller) before asking."""
        ok, point = await self._call("resume_point", "looking for a checkpoint", self.controller.resume_point)
        if ok:
            self._confirm_launch(resume=True, resume_from=point)

    def _confirm_launch(self, resume: bool, resume_from: str | None) -> None:
        try:
            plan = list(self.controller.plan(resume=resume))
        except BoltringError as exc:
            self._report_error("planning the job", exc)
            return
        job = self.controller.config.job
        what = (
            f"script {job.script}"
            if job.script
            else f"module {job.module}"
            if job.module
            else f"example {job.example}"
        )
        n = len(self.view.nodes)
        start: str | None = None  # what a resume starts from, logged once it is confirmed
        if resume:
            start = (
                f"resume from {resume_from}"
                if resume_from
                else "no checkpoint for this job: starts from step 0"
            )
            title = f"Resume {what}: {start}?"
        else:
            title = f"Launch {what} on {n} node{'s' if n != 1 else ''}?"
        message = f"{len(plan)} ranks, {job.steps} steps, global batch {job.global_batch}. What runs where:"
        failed = failing_checks(self.view)
        details = plan_details(plan)
        if failed:
            details = Content("\n").join([checks_details(failed), Content(""), details])
        label = "Resume" if resume else "Launch"

        def done(ok: bool | None) -> None:
            if ok:
                if start:  # only now: a cancelled dialog resumes nothing
                    self._note(start)
                if failed:
                    self._note(f"{label.lower()}ing although {len(failed)} checks failed", Level.WARN)
                self._launch(resume)

        self.push_screen(
            ConfirmModal(
                title,
                message,
                details,
                confirm_label=f"{label} anyway" if failed else label,
                anyway=bool(failed),
            ),
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

    def action_checks(self) -> None:
        if self.check_action("checks", ()) is not True:
            self.bell()
            return
        self._run_checks()

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

    def action_help(self) -> None:
        sections: list[tuple[str, Iterable[BindingType]]] = [
            ("main screen", self.BINDINGS),
            ("node panel (tab to move between panels)", NodePanel.BINDINGS),
            ("log", LogPane.BINDINGS),
            ("dialogs", [*ConfirmModal.BINDINGS, *QuitModal.BINDINGS]),
            ("node details", NodeDetailsScreen.BINDINGS),
            ("history", HistoryScreen.BINDINGS),
            ("anywhere", [Binding("ctrl+p", "command_palette", "command palette: every action by name")]),
        ]
        self.push_screen(HelpScreen(sections))

    def action_history(self) -> None:
        if not isinstance(self.screen, HistoryScreen):
            self.push_screen(HistoryScreen(self.history))

    def action_save_plot(self) -> None:
        """The loss curve as an SVG file in the current directory (named after the job)."""
        points = list(self.view.loss_history)
        if not points:
            self.notify("no loss to save yet", severity="warning", timeout=4)
            return
        name = self.view.job_id or "job"
        try:
            path = write_loss_svg(points, f"loss · {name}", self.export_dir / f"loss-{name}.svg")
        except OSError as exc:
            self._report_error("saving the loss plot", exc)
            return
        self._note(f"loss plot saved to {path}")
        self.notify(f"saved {path}", title="loss plot", timeout=5)

    async def action_quit(self) -> None:
        if isinstance(self.screen, ModalScreen):
            return
        if self.view.running:

            def done(choice: str | None) -> None:
                if choice == LEAVE and self._between_attempts():
                    # it began restarting while the dialog was open: quitting now would
                    # stop the relaunch, so the job would not go on
                    self.notify(
                        f"job {self.view.job_id} began restarting: quitting now would leave "
                        "nothing running (q again offers to kill it)",
                        title="not quit",
                        severity="warning",
                        timeout=8,
                    )
                elif choice in (LEAVE, KILL):
                    # an ended job has nothing to kill: closing says "closing", not "killing"
                    kill = choice == KILL and self.controller.state.active
                    self._close_and_exit(kill_running=kill)

            self.push_screen(QuitModal(self.view.job_id, can_leave=not self._between_attempts()), done)
        else:
            self._close_and_exit(kill_running=False)

    def _between_attempts(self) -> bool:
        """The job is restarting: no rank runs, and the relaunch is this process's controller's
        follow task, which closing it cancels. Leaving it then would leave nothing running (and
        the next boltring would find it failed), so it can only be killed or waited for."""
        return self.controller.state == JobState.RESTARTING

    def _log_pane(self) -> LogPane | None:
        panes = self.screen.query(LogPane)
        return panes.first() if panes else None

    # -- messages from widgets ------------------------------------------------------------

    def on_node_selected(self, message: NodeSelected) -> None:
        if self._quiet_focus:
            self._quiet_focus = False
            return
        pane = self._main_screen().query_one("#log", LogPane)
        pane.set_node_filter(message.node)
        self._render_screen(plot=False)

    def on_node_details_requested(self, message: NodeDetailsRequested) -> None:
        self.show_details(message.node)

    def show_details(self, node: str) -> None:
        if node in self.view.nodes and not isinstance(self.screen, NodeDetailsScreen):
            self.push_screen(NodeDetailsScreen(self.view, node, cursor_blink=self.cursor_blink))


def run_app(controller: ControllerLike) -> int:
    """Run the TUI until the user quits; the process exit code."""
    app = BoltringApp(controller)
    result = app.run()
    if app.return_code not in (None, 0):
        return app.return_code
    return result if isinstance(result, int) else 0
