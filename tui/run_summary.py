"""The summary a headless job ends with (`--run`, `status`): each rank's figures as a table,
the job in one line, and for a script or module what it did not report and where each rank's
whole output is.

Apart from the --run view (headless.py) because it is pure text from a JobSummary: `status`
prints it for a job it only re-attached to, and tests read it without a controller.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table

from boltring.cluster.jobs.events import Blamed, JobSummary
from boltring.cluster.states import JobState

from .fmt import fmt_elapsed


def figure(v, spec=".3f", none="–") -> str:
    """A rank's figure, or "–" for one it did not report (the live line uses it too)."""
    return none if v is None else format(v, spec)


def ranks_text(ranks: list[int]) -> str:
    """ "rank 1", "ranks 0, 2"."""
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def summary_table(summary: JobSummary) -> Table:
    """Each rank's figures; for a job that reported none, where each rank's output is."""
    status = JobState(summary.status)
    title = f"job {summary.job_id}: {status}"
    if summary.blamed is not None:
        title += f", {blamed_text(summary.blamed)}"
    table = Table(title=title, title_justify="left")
    figures = summary.metrics_reported
    cols = ("steps/s", "samples/s", "allreduce GB/s") if figures else ("output",)
    cols = ("rank", "node", *cols)
    for col in cols:
        table.add_column(col, justify="right" if col not in ("node", "output") else "left")
    for r, m in sorted(summary.ranks.items()):
        node = str(m.get("node", "")) + (" (not read)" if m.get("unread") else "")
        if summary.blamed is not None and summary.blamed.rank == r:
            node += " (blamed)"
        if not figures:
            table.add_row(str(r), node, str(m.get("log") or "–"))
            continue
        table.add_row(
            str(r),
            node,
            figure(m.get("steps_per_s"), ".2f"),
            figure(m.get("samples_per_s"), ".0f"),
            figure(m.get("allreduce_gbps"), ".2f"),
        )
    return table


def blamed_text(blamed: Blamed) -> str:
    """ "blamed on rank 1 (mini2)": from the field the verdict filled, never from the reason."""
    return f"blamed on rank {blamed.rank} ({blamed.node})"


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
            f"{figure(summary.first_loss, '.4f')} → {figure(summary.last_loss, '.4f')}"
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


def output_lines(
    summary: JobSummary, job_label: str, held: set[int], local_nodes: Callable[[], set[str]]
) -> list[str]:
    """After the summary line: for a script or module that finished and reported no metrics,
    that it did not and how it can; where the ranks' whole output is, for a script or a module (only
    part of it, or none, was shown) or when a traceback was held back (rank_output.py).
    `job_label` is the start event's ("script train.py"); `held`, the ranks whose traceback
    was held back; `local_nodes`, the names of the nodes that are this machine (asked only
    when the paths are shown)."""
    program = job_label.split(" ", 1)[0] if job_label.startswith(("script ", "module ")) else ""
    lines = []
    # Only after a clean finish: a module that was not found, or a script refused at its first
    # line, "reported no metrics" too, and the advice would point away from the real error.
    if not summary.metrics_reported and program and summary.status == JobState.FINISHED:
        lines.append(
            f"the {program} reported no metrics: call group.report(step=i, loss=loss) each step "
            "(group = boltring.netio.init(); README, The worker API) to see its steps and loss here"
        )
    if (program and summary.metrics_reported) or held:
        where = rank_logs(summary, local_nodes())
        if where:
            tracebacks = f" ({ranks_text(sorted(held))}: the traceback is there)" if held else ""
            lines.append(f"output of each rank: {where}{tracebacks}")
    return lines


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
