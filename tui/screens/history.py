"""HistoryScreen (`h`): past jobs as a table; the highlighted job's loss curve under it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from boltring.cluster.jobs.history import RunRecord, loss_curve

from ..fmt import fmt_elapsed, fmt_loss
from ..widgets.loss_plot import LossPlot

RUN_COLUMNS = ("job", "config", "state", "steps", "loss", "wall", "run dir")


def run_row(run: RunRecord) -> tuple[str, ...]:
    steps = run.steps_text
    loss = f"{fmt_loss(run.first_loss)} → {fmt_loss(run.last_loss)}"
    wall = fmt_elapsed(run.wall_s) if run.wall_s is not None else "—"
    state = run.state + (f" ({run.stopped_by})" if run.stopped_by else "")
    if run.blamed is not None:  # the record's field, never the reason's words
        state += f" (rank {run.blamed.rank} on {run.blamed.node})"
    return (run.job_id, run.config or "—", state, steps, loss, wall, run.run_dir or "—")


class HistoryScreen(Screen[None]):
    BINDINGS: ClassVar = [Binding("escape,h", "close", "Back", id="history.close")]

    DEFAULT_CSS = """
    HistoryScreen { layout: vertical; }
    HistoryScreen > #history-title { height: 1; background: $panel; padding: 0 1; text-style: bold; }
    HistoryScreen > DataTable { height: 1fr; max-height: 50%; }
    HistoryScreen > LossPlot { height: 1fr; }
    """

    def __init__(self, load: Callable[[], list[RunRecord]]) -> None:
        super().__init__()
        self._load = load
        self.runs: list[RunRecord] = []

    def compose(self) -> ComposeResult:
        yield Static("past jobs (newest first) · select one to see its loss curve", id="history-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="history-table")
        yield LossPlot(id="history-loss")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*RUN_COLUMNS)
        self._read()

    @work(thread=True, exit_on_error=False)
    def _read(self) -> None:
        runs = self._load()
        self.app.call_from_thread(self._show, runs)

    def _show(self, runs: list[RunRecord]) -> None:
        self.runs = runs
        table = self.query_one(DataTable)
        table.clear()
        for run in runs:
            table.add_row(*run_row(run), key=run.job_id)
        if not runs:
            self.query_one("#history-title", Static).update("no past jobs yet")
        else:
            table.focus()
            self._curve(runs[0])

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        run = next((r for r in self.runs if r.job_id == key), None)
        if run is not None:
            self._curve(run)

    def _curve(self, run: RunRecord) -> None:
        points = loss_curve(run)
        plot = self.query_one(LossPlot)
        plot.show(points, version=int(time.monotonic() * 1000))
        if not points:
            plot.border_title = f"loss · {run.job_id}: no metrics file on this machine"
        else:
            plot.border_title = f"loss · {run.job_id} · step {points[-1][0]} · {points[-1][1]:.4g}"

    def action_close(self) -> None:
        self.dismiss(None)
