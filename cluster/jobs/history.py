"""Past jobs, read back from the job records under BOLTRING_HOME/jobs/ and from the ranks'
metrics.jsonl files (for `boltring runs`, the app's history screen, `boltring status` with
nothing running, and `boltring export`).

A record is written by the controller when a job starts and again when it ends. What a record
does not hold (the loss curve, the steps done, the wall time of a job whose controller went
away) is read from rank 0's metrics file, when its run directory is on this machine. Nothing
here opens a connection: runs on remote nodes show what their record holds, and a job the
record says runs is listed so only while a controller that watches it is alive (record.watched).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltring.cluster.config.schema import boltring_home
from boltring.cluster.errors import BoltringError
from boltring.cluster.jobs import record
from boltring.cluster.jobs.events import Blamed
from boltring.cluster.states import JobState


class HistoryError(BoltringError):
    title = "run history"


@dataclass
class RunRecord:
    job_id: str
    config: str | None
    state: str
    started: float | None
    total_steps: int | None
    steps: int | None = None  # steps done
    first_loss: float | None = None
    last_loss: float | None = None
    wall_s: float | None = None
    run_dir: str | None = None
    stopped_by: str | None = None
    reason: str | None = None
    ranks: list[dict[str, Any]] = field(default_factory=list)  # {"rank", "node", "run_dir"}
    path: Path | None = None  # the record file
    created: float | None = None  # when the launch began (`started` stays None if it failed)
    blamed: Blamed | None = None  # failed: the rank its reason blames, from the record's field
    # For a job its record says is active: a controller that watches it is alive (True), none
    # is (False: listed "unwatched"), or that cannot be told here (None: an older record, or a
    # controller on another host). None for a job that ended.
    watched: bool | None = None
    # node -> what to take from a time read on its clock to put it on the controller's, as the
    # record measured it (record.clock_offsets); a node left out: 0.
    clock_offsets: dict[str, float] = field(default_factory=dict)
    # False when no rank ever reported a step (a script that prints its progress, a bench cell):
    # its steps are unknown, not 0 of job.steps. None: an older record that did not say.
    metrics_reported: bool | None = None

    @property
    def steps_text(self) -> str:
        """ "110/200", or "no steps reported" for a job whose ranks never reported one."""
        if self.metrics_reported is False:
            return "no steps reported"
        return f"{self.steps if self.steps is not None else '?'}/{self.total_steps or '?'}"

    def node_of(self, rank: int) -> str | None:
        return next((str(r["node"]) for r in self.ranks if r.get("rank") == rank and r.get("node")), None)

    def metrics_file(self, rank: int = 0) -> Path | None:
        """The rank's metrics.jsonl when its run directory is on this machine, else None."""
        for r in self.ranks:
            if r.get("rank") == rank and r.get("run_dir"):
                path = Path(str(r["run_dir"])).expanduser() / "metrics.jsonl"
                return path if path.is_file() else None
        return None

    @property
    def never_started(self) -> bool:
        """The job ended without its ranks ever running: the controller sets `started` only once
        every rank has started, and a launch that fails kills whatever it had started. (A job
        still launching may yet start, so it does not count.)"""
        try:
            ended = not JobState(self.state).active
        except ValueError:
            ended = False
        return self.started is None and ended


def jobs_dir(home: Path | None = None) -> Path:
    """Where the job records are (BOLTRING_HOME/jobs): named in messages as it really is."""
    return (home or boltring_home()) / "jobs"


def read_steps(path: Path) -> list[dict[str, Any]]:
    """The "step" records of one metrics.jsonl, in order (a half-written last line is skipped)."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "step":
            out.append(rec)
    return out


def _from_record(data: dict[str, Any], path: Path) -> RunRecord:
    summary: dict[str, Any] = data["summary"] if isinstance(data.get("summary"), dict) else {}
    job: dict[str, Any] = data["job"] if isinstance(data.get("job"), dict) else {}
    run = RunRecord(
        job_id=str(data.get("job_id", path.stem)),
        config=data.get("config"),
        state=str(summary.get("status") or data.get("state", "?")),
        started=data.get("started"),
        total_steps=summary.get("total_steps") or job.get("steps") or data.get("steps"),
        steps=summary.get("steps"),
        first_loss=summary.get("first_loss"),
        last_loss=summary.get("last_loss"),
        wall_s=summary.get("wall_s"),
        run_dir=summary.get("run_dir") or data.get("run_dir"),
        stopped_by=summary.get("stopped_by") or data.get("stopped_by"),
        reason=summary.get("reason") or data.get("reason"),
        ranks=[r for r in data.get("ranks", []) if isinstance(r, dict)],
        path=path,
        created=data.get("created"),
        blamed=_blamed(summary.get("blamed") or data.get("blamed")),
        clock_offsets=record.clock_offsets(data),
        metrics_reported=summary.get("metrics_reported"),
    )
    if _active(run.state):  # an ended job is watched by nobody, and needs no one: left None
        run.watched = record.watched(data)
    if run.run_dir is None and run.ranks:
        run_dir = str(run.ranks[0].get("run_dir", ""))
        run.run_dir = run_dir.rsplit("/", 1)[0] if "/" in run_dir else run_dir or None
    if run.steps is None or run.last_loss is None or run.wall_s is None:
        _fill_from_metrics(run)
    if _ended_unread(run):
        run.state = ENDED_UNREAD
    elif _active(run.state) and run.watched is False:
        run.state = UNWATCHED
    return run


ENDED_UNREAD = "ended"  # the record says running, but every rank's exit record is here
# The record says the job is launching, running, stalled or restarting, but no controller that
# watched it is alive: its ranks may run on or have ended long ago, and nothing will record
# which until `boltring status` on its config reads its nodes. "running" could be false.
UNWATCHED = "unwatched"


def _active(state: str) -> bool:
    try:
        return JobState(state).active
    except ValueError:
        return False


def _blamed(raw: object) -> Blamed | None:
    """The record's `blamed` ({"rank", "node", "cause"}), or None (none, or not of that form)."""
    if not isinstance(raw, dict):
        return None
    rank, node, cause = raw.get("rank"), raw.get("node"), raw.get("cause")
    if not (isinstance(rank, int) and isinstance(node, str) and isinstance(cause, str)):
        return None
    return Blamed(rank=rank, node=node, cause=cause)


def _ended_unread(run: RunRecord) -> bool:
    """The record still says the job runs, but every rank has left its exit record in a run
    directory on this machine: it ended while nothing watched it, and no controller has read
    how yet (the next `status`, `kill` or app on its config does, and records it). Listed as
    "running" it was false; how it ended is not known here, so it is listed as "ended"."""
    dirs = [str(r.get("run_dir") or "") for r in run.ranks]
    if run.state not in (JobState.RUNNING, JobState.STALLED) or not dirs or not all(dirs):
        return False
    return all((Path(d).expanduser() / "exit.json").is_file() for d in dirs)


def _fill_from_metrics(run: RunRecord) -> None:
    metrics = run.metrics_file(0)
    if metrics is None:
        return
    steps = read_steps(metrics)
    if not steps:
        return
    losses = [r["loss"] for r in steps if r.get("loss") is not None]
    if run.steps is None:
        run.steps = int(steps[-1].get("step", 0))
    if run.first_loss is None and losses:
        run.first_loss = losses[0]
    if run.last_loss is None and losses:
        run.last_loss = losses[-1]
    if run.wall_s is None and run.started and steps[-1].get("wall"):
        # the line's time is rank 0's node's clock, the start the controller's: one clock first
        offset = run.clock_offsets.get(run.node_of(0) or "", 0.0)
        run.wall_s = max(0.0, float(steps[-1]["wall"]) - offset - float(run.started))


def list_runs(home: Path | None = None, limit: int | None = None) -> list[RunRecord]:
    """Past and current jobs, newest first."""
    jobs = jobs_dir(home)
    paths = (
        sorted(jobs.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if jobs.is_dir() else []
    )
    out: list[RunRecord] = []
    for path in paths[:limit] if limit else paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append(_from_record(data, path))
    # A launch that failed has no start time; its creation time keeps it in its place (sorted
    # as 0 it went below every other job, and `export last` took an older one).
    out.sort(key=lambda r: r.started or r.created or 0.0, reverse=True)
    return out


def find_run(ref: str, home: Path | None = None, config: str | None = None) -> RunRecord:
    """A run by its id, a unique prefix of it, or "last"; among one config's jobs when given
    (its source, as the records name it)."""
    runs = [r for r in list_runs(home) if config is None or r.config == config]
    if not runs:
        of = f" of {config}" if config is not None else ""
        raise HistoryError(f"no job records{of} in {jobs_dir(home)}", hint="run a job first")
    if ref == "last":
        return runs[0]
    exact = [r for r in runs if r.job_id == ref]
    matches = exact or [r for r in runs if r.job_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        of = f" of {config}" if config is not None else ""
        raise HistoryError(
            f"no job {ref!r}{of} in {jobs_dir(home)}", hint="`boltring runs` lists the job ids"
        )
    names = ", ".join(r.job_id for r in matches[:4])
    raise HistoryError(f"{ref!r} matches {len(matches)} jobs ({names}…)", hint="give more of the id")


def last_run(config: str | None = None, home: Path | None = None) -> RunRecord | None:
    """The newest job of this config (any config when None)."""
    for run in list_runs(home):
        if config is None or run.config == config:
            return run
    return None


def loss_curve(run: RunRecord) -> list[tuple[int, float]]:
    """(step, loss) of rank 0, when its metrics file is on this machine; else empty."""
    metrics = run.metrics_file(0)
    if metrics is None:
        return []
    return [(int(r["step"]), float(r["loss"])) for r in read_steps(metrics) if r.get("loss") is not None]
