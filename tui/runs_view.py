"""`boltring runs`, `boltring export` and the "last job" line of `boltring status`: views of
past jobs (cluster/jobs/history.py), printed with rich."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from boltring.cluster.jobs.export import no_metrics, write_csv, write_loss_svg, write_tensorboard
from boltring.cluster.jobs.history import (
    ENDED_UNREAD,
    UNWATCHED,
    HistoryError,
    RunRecord,
    find_run,
    jobs_dir,
    list_runs,
    loss_curve,
)
from boltring.cluster.states import JobState

from .console import cli_console
from .fmt import fmt_elapsed, fmt_loss, json_line, stopped_text
from .run_summary import blamed_text
from .screens.history import RUN_COLUMNS, run_row

T = TypeVar("T")


def run_result(run: RunRecord) -> str:
    """One line: "job X killed: 110/200 steps in 00:01:42, loss 2.2800 → 0.1043 (stopped by …)"."""
    steps = run.steps_text + (" steps" if run.metrics_reported is not False else "")
    wall = f" in {fmt_elapsed(run.wall_s)}" if run.wall_s is not None else ""
    loss = (
        f", loss {fmt_loss(run.first_loss)} → {fmt_loss(run.last_loss)}" if run.last_loss is not None else ""
    )
    text = f"job {run.job_id} {run.state}: {steps}{wall}{loss}"
    if run.state == JobState.KILLED:
        # The record's own words when it has them ("… during launch": no step was ever made,
        # and "at step 0" would say one was); else who stopped it and where.
        at = run.steps if run.metrics_reported is not False else None  # no step known: none named
        text += f" ({run.reason or stopped_text(run.stopped_by, at)})"
    elif run.reason:
        text += f" ({run.reason})"
    if run.blamed is not None:
        text += f"; {blamed_text(run.blamed)}"
    if run.run_dir:
        text += f"; run dir {run.run_dir}"
    return text


def run_dict(run: RunRecord) -> dict[str, object]:
    d = dataclasses.asdict(run)
    d["path"] = str(run.path) if run.path else None
    return d


def print_runs(
    *, json_out: bool = False, limit: int = 20, config: str | None = None, console: Console | None = None
) -> int:
    runs = [r for r in list_runs() if config is None or r.config == config][:limit]
    if json_out:
        for run in runs:
            print(json_line(run_dict(run)))  # strict JSON: a NaN loss is null
        return 0
    console = console or cli_console()
    if not runs:
        of = f" of {config}" if config is not None else ""
        console.print(f"boltring: no past jobs{of} yet (job records live in {jobs_dir()})", markup=False)
        return 0
    table = Table(title="past jobs, newest first", title_justify="left")
    for col in RUN_COLUMNS:
        right = col in ("steps", "wall")
        table.add_column(col, overflow="fold", no_wrap=col == "job", justify="right" if right else "left")
    for run in runs:
        table.add_row(*run_row(run))
    console.print(table)
    for line in state_notes(runs):
        console.print(line, markup=False, soft_wrap=True)
    return 0


def state_notes(runs: list[RunRecord]) -> list[str]:
    """Under the table, what "unwatched" and "ended" mean and what reads how such a job ended:
    neither is a state the job itself was in, so each is said once, in words."""
    notes = {
        UNWATCHED: "its record says it has not ended, but no controller watches it any more (the "
        "`--run` or app that followed it has exited): its ranks may still run, or have ended; "
        "{status} asks its nodes which (`--follow` watches it again; a job whose ranks have all "
        "ended, it records as it ended)",
        ENDED_UNREAD: "every rank's exit record is on this machine, but no controller has read how "
        "it ended yet; {status} reads it and records how it ended",
    }
    lines = []
    for state, meaning in notes.items():
        commands = sorted({_status_command(r.config) for r in runs if r.state == state})
        if commands:
            lines.append(f"{state}: " + meaning.format(status=" / ".join(commands)))
    return lines


def _status_command(config: str | None) -> str:
    """`boltring status` on the job's config (its file; none for the embedded default)."""
    if not config or config.startswith("<"):
        return "`boltring status`"
    return f"`boltring status -c {shlex.quote(config)}`"


FILE_OUT = "a file in an existing, writable directory"  # as `boltring hostfile -o` asks


def _writing(flag: str, path: str, write: Callable[[], T], want: str = FILE_OUT) -> T:
    """write(), with an output that cannot be written (a folder given for a file, a missing or
    read-only folder) turned into one line naming it and what to give instead."""
    try:
        return write()
    except OSError as e:
        raise HistoryError(f"cannot write {path}: {e.strerror or e}", hint=f"give {flag} {want}") from None


def export_run(
    ref: str, *, csv: str | None, tensorboard: str | None, svg: str | None, config: str | None = None
) -> int:
    """Write one past job (of `config` when given: its source) to the outputs asked for."""
    console = cli_console(stderr=True)
    try:
        run = find_run(ref, config=config)
    except HistoryError as e:  # no such job, or a prefix of several: nothing written, exit 2
        console.print(f"boltring: {e}" + (f" ({e.hint})" if e.hint else ""), markup=False)
        return 2
    try:
        if csv:
            rows = _writing("--csv", csv, lambda: write_csv(run, csv))
            console.print(f"boltring: wrote {rows} rows of job {run.job_id} to {csv}", markup=False)
        if tensorboard:
            scalars = _writing(
                "--tensorboard",
                tensorboard,
                lambda: write_tensorboard(run, tensorboard),
                "a folder you can write to",
            )
            where = Path(tensorboard) / run.job_id
            view = f"tensorboard --logdir {tensorboard}"
            console.print(
                f"boltring: wrote {scalars} scalars of job {run.job_id} to {where} ({view})", markup=False
            )
        if svg:
            points = loss_curve(run)
            if not points and run.never_started:
                raise no_metrics(run)
            if not points:
                raise HistoryError(f"job {run.job_id}: no loss curve on this machine")
            _writing("--svg", svg, lambda: write_loss_svg(points, f"loss · {run.job_id}", svg))
            console.print(f"boltring: wrote the loss curve of job {run.job_id} to {svg}", markup=False)
    except HistoryError as e:
        console.print(f"boltring: {e}" + (f" ({e.hint})" if e.hint else ""), markup=False)
        return 1
    return 0
