"""What the screen shows, accumulated from controller events (no widget in here).

Message handlers apply events to a `ClusterView` (dict updates and deque appends only); a
timer renders widgets from it a few times a second. Every history is a bounded deque, so a
job that runs for days uses the same memory as one that runs for a minute.

(Over 400 lines: one ClusterView whose event handlers all update the same state, the job's, its
nodes' and ranks'; split apart, each part would reach into the others.)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import (
    Blamed,
    CheckResult,
    Event,
    JobRestarted,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    NodeState,
    RankErrorLine,
    RankExited,
    RankMetrics,
    RanksNotStopped,
    RankStalled,
    RankStarted,
    RingOrder,
    StepProgress,
    SyncProgress,
)
from boltring.cluster.states import (
    ACTIVE_STATES,
    FINAL_STATES,
    USER_STOPS,
    CheckStatus,
    JobState,
    SshState,
    StoppedBy,
)

from .check_items import NOT_OK, parse_gbits
from .fmt import fmt_elapsed, fmt_loss, in_words, stopped_text
from .node_state import (
    LOG_KEEP,
    Level,
    LogEntry,
    NodeView,
    RankStatus,
    RankView,
    not_stopped_reason,
    not_stopped_text,
)

LOSS_KEEP = 20_000  # (step, loss) points for the plot (downsampled when drawn)
RATE_WINDOW_S = 60.0  # the job's steps/s (for the ETA) is measured over this much recent time


_JOB_LEVEL = {JobState.FAILED: Level.ERROR, JobState.KILLED: Level.WARN, JobState.STALLED: Level.WARN}


def recent_rate(step_times: Sequence[tuple[float, int]], window_s: float = RATE_WINDOW_S) -> float | None:
    """Steps per second over the last `window_s` of (time, step) samples. The times are the
    ranks' own (StepProgress.wall): steps read in a burst (a re-attach replays them all at
    once) keep the pace they were made at."""
    if len(step_times) < 2:
        return None
    t1, s1 = step_times[-1]
    t0, s0 = next(((t, s) for t, s in step_times if t1 - t <= window_s), step_times[0])
    if t1 <= t0 or s1 <= s0:
        return None
    return (s1 - s0) / (t1 - t0)


def eta_seconds(state: JobState | None, step: int, total: int, rate: float | None) -> float | None:
    """Seconds left at `rate` while the job runs; 0 once every step is made (the ranks are
    writing their last checkpoint and exiting); none while it is stalled, restarting or over,
    when its last rate is not what it does now."""
    if state != JobState.RUNNING:
        return None
    if total > 0 and step >= total:
        return 0.0
    return None if rate is None else (total - step) / rate


def _after_failed(reason: str | None) -> str | None:
    """A rank's reason as its row says it after "failed at step N" (and its log line after "rank
    N failed"): without a "failed: " of its own."""
    if reason and reason.startswith("failed"):
        return reason.removeprefix("failed").lstrip(": ") or None
    return reason


class ClusterView:
    """Everything the screens show. Mutated only by `apply` and `note`, on the UI thread."""

    def __init__(
        self,
        config: Config,
        state: JobState = JobState.IDLE,
        job_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.state = JobState(state)
        self.job_id = job_id
        self.job_desc: str | None = None
        self.jobs_seen = 0  # JobStarted events so far: a separator goes between jobs in the log
        self.attached = False
        self.step = 0
        self.total_steps = config.job.steps
        self.loss: float | None = None
        self.started_t: float | None = None
        self.ended_t: float | None = None
        self.reason: str | None = None
        self.blamed: Blamed | None = None  # the rank the failure's reason blames (JobStateChanged)
        self.stopped_by: StoppedBy | None = None
        self.resume_from: str | None = None
        self.restarts: list[JobRestarted] = []
        self.error: str | None = None  # last controller error, one line
        self.summary: JobSummary | None = None
        self.kill_requested = False  # set by the app: ranks that exit now were killed, not lost
        self.ring_checks: dict[str, CheckResult] = {}
        self.loss_history: deque[tuple[int, float]] = deque(maxlen=LOSS_KEEP)
        self.loss_version = 0
        self.step_times: deque[tuple[float, int]] = deque(maxlen=4096)  # (t, step) for the ETA
        self.log: deque[LogEntry] = deque(maxlen=LOG_KEEP)
        self._seq = 0
        self._sync_shown: dict[tuple[str, str], int] = {}  # (node, path) -> last quarter logged
        self.nodes: dict[str, NodeView] = {n.name: NodeView(n) for n in config.nodes}
        # The ring as the controller runs it: the config's order until it says another
        # (RingOrder after the cabling checks, a job's own order in its JobStarted).
        self.ring_order: list[str] = [n.name for n in config.nodes]
        self.ranks: dict[int, RankView] = {}
        for slot in config.rank_layout():
            rv = RankView(rank=slot.rank, node=slot.node.name)
            self.ranks[slot.rank] = rv
            self.nodes[slot.node.name].ranks[slot.rank] = rv

    # -- queries ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state in ACTIVE_STATES

    def elapsed(self, now: float) -> float | None:
        if self.started_t is None:
            return None
        return (self.ended_t if self.ended_t is not None else now) - self.started_t

    def steps_per_s(self) -> float | None:
        return recent_rate(self.step_times)

    def eta(self) -> float | None:
        """Seconds left at the recent rate (eta_seconds)."""
        return eta_seconds(self.state, self.step, self.total_steps, self.steps_per_s())

    def progress(self) -> float:
        return 0.0 if self.total_steps <= 0 else min(1.0, self.step / self.total_steps)

    def cluster_rate(self, name: str) -> float | None:
        """Sum over running ranks of one per-rank rate ("samples_per_s", "tokens_per_s")."""
        vals = [getattr(r, name) for r in self.ranks.values() if r.status == RankStatus.RUNNING]
        vals = [v for v in vals if v is not None]
        return sum(vals) if vals else None

    def stalled_ranks(self) -> list[RankView]:
        return [r for r in self.ranks.values() if r.stalled_s is not None and r.active]

    def ring_links(self) -> list[tuple[str, str, float | None, float | None]]:
        """(node, next node, live GB/s, measured GB/s) around the ring, in ring order. The live
        figure is the all-reduce rate of the node's last rank, the one that sends across."""
        names = self.ring_order
        out = []
        for i, name in enumerate(names):
            if len(names) < 2:
                break
            nxt = names[(i + 1) % len(names)]
            ranks = self.nodes[name].ranks
            sender = ranks[max(ranks)] if ranks else None
            live = sender.allreduce_gbps if sender is not None and sender.active else None
            check = self.nodes[name].checks.get(f"bw:{nxt}")
            out.append((name, nxt, live, parse_gbits(check.value) if check is not None else None))
        return out

    def measured_links(self) -> list[str]:
        """Every link a bandwidth check measured ("a->b"), in the ring or not."""
        return [
            f"{nv.name}->{key.removeprefix('bw:')}"
            for nv in self.nodes.values()
            for key, check in nv.checks.items()
            if key.startswith("bw:") and parse_gbits(check.value) is not None
        ]

    def stopped_line(self) -> str | None:
        if self.state != JobState.KILLED:
            return None
        # The controller's own words when it gave them ("… during launch": no step was made, and
        # "at step 150" would name the last job's); else who stopped it and where.
        return self.reason or stopped_text(self.stopped_by, self.step if self.started_t is not None else None)

    # -- updates ---------------------------------------------------------------------------

    def note(
        self,
        text: str,
        level: str = Level.INFO,
        node: str | None = None,
        source: str = "boltring",
        t: float | None = None,
    ) -> None:
        """A log line of the app itself (or one derived from an event)."""
        self._seq += 1
        entry = LogEntry(self._seq, self.clock() if t is None else t, source, text, level, node)
        self.log.append(entry)
        nv = self.nodes.get(node) if node else None
        if nv is not None:
            nv.log.append(entry)

    def _node(self, name: str) -> NodeView:
        nv = self.nodes.get(name)
        if nv is None:  # a node the config did not name (should not happen); show it anyway
            nv = self.nodes[name] = NodeView(Node(name=name, ring_ip="?"))
        return nv

    def _rank(self, rank: int, node: str) -> RankView:
        rv = self.ranks.get(rank)
        if rv is None or rv.node != node:
            if rv is not None:
                self.nodes[rv.node].ranks.pop(rank, None)
            rv = self.ranks[rank] = RankView(rank=rank, node=node)
            self._node(node).ranks[rank] = rv
        return rv

    def apply(self, ev: Event) -> None:
        match ev:
            case RankMetrics():
                self._rank(ev.rank, ev.node).take(ev)
            case StepProgress():
                self._on_step(ev)
            case LogLine() | RankErrorLine():
                self.note(ev.text, ev.level, node=ev.node, source=ev.source, t=ev.t)
            case JobStarted():
                self._on_job_started(ev)
            case JobStateChanged():
                self._on_job_state(ev)
            case NodeState():
                self._on_node_state(ev)
            case CheckResult():
                self._on_check(ev)
            case RingOrder():
                self._use_ring_order(ev.nodes)
            case RankStarted():
                self._rank(ev.rank, ev.node).reset(ev.t, ev.pid)
                pid = f" (pid {ev.pid})" if ev.pid is not None else ""
                self.note(f"rank {ev.rank} started{pid}", node=ev.node, source=ev.node, t=ev.t)
            case RankStalled():
                self._on_stalled(ev)
            case RankExited():
                self._on_rank_exited(ev)
            case RanksNotStopped():
                self._on_not_stopped(ev)
            case JobRestarted():
                self._on_restarted(ev)
            case JobSummary():
                self._on_summary(ev)
            case SyncProgress():
                self._on_sync_progress(ev)

    def _on_sync_progress(self, ev: SyncProgress) -> None:
        """A large file going to a node before launch: a line in the node's log at each quarter
        (the bytes, and a bar of them), so a long transfer shows it is moving."""
        quarter = 4 * ev.sent // max(ev.total, 1)
        key = (ev.node, ev.path)
        if quarter <= self._sync_shown.get(key, -1):
            return
        self._sync_shown[key] = quarter
        bar = "█" * quarter + "░" * (4 - quarter)
        mb = f"{ev.sent / 1e6:.0f}/{ev.total / 1e6:.0f} MB"
        self.note(f"sync {ev.path} {bar} {mb}", node=ev.node, source=ev.node, t=ev.t)

    def _forget_job(self) -> None:
        """Every figure of the last job out of the header, the plot and the dialogs: a new one
        is launching (or started), and none of them is its."""
        self.job_desc, self.attached = None, False
        self.step, self.loss, self.started_t, self.ended_t = 0, None, None, None
        self.reason, self.blamed, self.summary = None, None, None
        self.stopped_by, self.resume_from, self.restarts = None, None, []
        self.kill_requested = False
        self.loss_history.clear()
        self.step_times.clear()
        self.loss_version += 1
        self._sync_shown.clear()  # its sync shows every quarter again

    def _plan_ranks(self) -> None:
        """Every rank back to planned (none of the new job's has started), on its last node:
        its RankStarted places it."""
        for rv in list(self.ranks.values()):
            fresh = self.ranks[rv.rank] = RankView(rank=rv.rank, node=rv.node)
            self._node(rv.node).ranks[rv.rank] = fresh

    def _use_ring_order(self, names: Sequence[str]) -> None:
        """The ring in the order the controller runs it; the ranks not started yet go where
        that order puts them (rank_layout: nodes in ring order, a node's ranks consecutive)."""
        if not names or list(names) == self.ring_order:
            return
        self.ring_order = list(names)
        nodes = [self._node(name).node for name in names]
        for slot in replace(self.config, nodes=tuple(nodes)).rank_layout():
            rv = self.ranks.get(slot.rank)
            if rv is None or rv.status == RankStatus.PLANNED:
                self._rank(slot.rank, slot.node.name)

    def _unread(self, nv: NodeView, cause: str, planned: bool) -> None:
        """The node's ranks that run (and with `planned`, those of a re-attached job not read
        yet) cannot be read: not known to have ended, they are never "not running" nor "lost"."""
        for rv in nv.ranks.values():
            if rv.active or (planned and rv.status == RankStatus.PLANNED):
                rv.status, rv.reason = RankStatus.UNREAD, f"may still be running ({cause})"

    def _on_job_started(self, ev: JobStarted) -> None:
        if self.jobs_seen:
            self.note(f"──────── job {ev.job_id} ────────", source="", t=ev.t)
        self.jobs_seen += 1
        self._forget_job()
        self.job_id, self.job_desc, self.attached = ev.job_id, ev.job, ev.attached
        self.total_steps, self.started_t, self.resume_from = ev.steps, ev.t, ev.resume_from
        self._use_ring_order(ev.nodes)  # the job's own, as launched (a re-attach: as recorded)
        if ev.attached:
            # a node that could not be asked while attaching: its ranks may be running
            for nv in self.nodes.values():
                if nv.ssh_state is not None and SshState(nv.ssh_state).bad:
                    self._unread(nv, nv.ssh_detail or f"{nv.name} {nv.ssh_state}", planned=True)
        verb = "re-attached to" if ev.attached else "started"
        self.note(
            f"{verb} job {ev.job_id}: {ev.job}, {ev.world_size} ranks on "
            f"{len(ev.nodes)} nodes, {ev.steps} steps",
            source="controller",
            t=ev.t,
        )
        if not ev.attached:
            start = f"resume from {ev.resume_from}" if ev.resume_from else "starts from step 0"
            self.note(start, source="controller", t=ev.t)

    def _on_job_state(self, ev: JobStateChanged) -> None:
        state = JobState(ev.state)
        previous, self.state = self.state, state
        # After checks the controller goes back to where it was ("idle", or the final state
        # of the last job): nothing new to log; the app logs the checks' outcome.
        back_from_checks = previous == JobState.CHECKING and (
            state == JobState.IDLE or (state in FINAL_STATES and self.ended_t is not None)
        )
        if state == JobState.LAUNCHING and ev.job_id and ev.job_id != self.job_id:
            # A new job (a restart relaunches the same id, keeping its figures): until its
            # ranks start, the last job's elapsed time, steps, loss and rows are none of its.
            self._forget_job()
            self._plan_ranks()
        if ev.job_id:
            self.job_id = ev.job_id
        if state in FINAL_STATES:
            # A job ends once; the same final state comes again after checks, which the
            # controller runs in between ("killed" → "checking" → "killed").
            if self.ended_t is None:
                self.ended_t = ev.t
                for rv in self.ranks.values():
                    rv.stalled_s = None
            if ev.reason:  # (none when it comes again after checks)
                self.blamed = ev.blamed
            self.reason = in_words(ev.reason) or self.reason
            if state == JobState.FAILED:
                self._blame_rows(self.reason, self.blamed)
            if state == JobState.KILLED:
                self.stopped_by = ev.by or self.stopped_by or (StoppedBy.APP if self.kill_requested else None)
        elif state == JobState.RESTARTING:
            self._blame_rows(in_words(ev.reason), ev.blamed)
        elif state in (JobState.LAUNCHING, JobState.RUNNING):
            self.ended_t = None
            self.reason, self.blamed = None, None
            if state == JobState.RUNNING:
                for rv in self.ranks.values():
                    rv.stalled_s = None
        if back_from_checks:
            return
        if state == JobState.CHECKING:
            text = "running checks"
        elif state == JobState.KILLED:
            text = f"job killed: {self.stopped_line()}"
        else:
            text = f"job {state}" + (f": {in_words(ev.reason)}" if ev.reason else "")
        self.note(text, _JOB_LEVEL.get(state, Level.INFO), source="controller", t=ev.t)

    def _on_node_state(self, ev: NodeState) -> None:
        nv = self._node(ev.node)
        state = SshState(ev.state)
        if state != nv.ssh_state:
            nv.ssh_since = ev.t
        nv.ssh_state, nv.ssh_detail = state, ev.detail
        if state == SshState.CONNECTING and nv.log and nv.log[-1].text.startswith("ssh connecting"):
            return  # retries of one connection: the panel counts them down, the log says it once
        level = Level.ERROR if state.bad else Level.INFO
        text = f"ssh {state}" + (f": {ev.detail}" if ev.detail else "")
        self.note(text, level, node=ev.node, source=ev.node, t=ev.t)
        if state.bad:  # the controller reads its ranks again once it answers (watch.py)
            self._unread(nv, ev.detail or f"{ev.node} {state}", planned=self.attached and self.running)
        elif state.usable:
            for rv in nv.ranks.values():
                if rv.status == RankStatus.UNREAD:  # until its next line, or its end, is read
                    rv.reason = f"{ev.node} answers again, waiting for its next line"

    def _on_check(self, ev: CheckResult) -> None:
        base, _, pair = ev.name.partition(":")
        sender, arrow, receiver = pair.partition("->")
        if ev.node == "ring" and base in ("bw", "bandwidth") and arrow and sender in self.nodes:
            # "bw:a->b" is measured from a to its ring neighbour b: show it on a's panel.
            self.nodes[sender].checks[f"bw:{receiver}"] = replace(ev, node=sender, name=f"bw:{receiver}")
        elif ev.node == "ring" or ev.node not in self.nodes:
            self.ring_checks[ev.name] = ev
        else:
            self.nodes[ev.node].checks[ev.name] = ev
        if ev.status in NOT_OK:
            text = f"check {ev.name}: {ev.status}"
            if ev.value:
                text += f" ({ev.value})"
            if ev.hint:
                text += f" — {ev.hint}"
            node = ev.node if ev.node in self.nodes else None
            level = Level.ERROR if ev.status == CheckStatus.FAIL else Level.WARN
            self.note(text, level, node=node, source=ev.node, t=ev.t)

    def _on_step(self, ev: StepProgress) -> None:
        self.step, self.total_steps = ev.step, ev.total
        self.step_times.append((ev.wall if ev.wall is not None else ev.t, ev.step))
        if ev.loss is not None:
            self.loss = ev.loss
            if not self.loss_history or self.loss_history[-1][0] != ev.step:
                self.loss_history.append((ev.step, ev.loss))
                self.loss_version += 1

    def _on_stalled(self, ev: RankStalled) -> None:
        rv = self._rank(ev.rank, ev.node)
        first = rv.stalled_s is None
        rv.stalled_s, rv.stalled_t = ev.silent_s, ev.t
        if first:
            text = f"rank {ev.rank} stalled: no metrics for {ev.silent_s:.0f} s"
            self.note(text, Level.WARN, node=ev.node, source=ev.node, t=ev.t)

    def _on_rank_exited(self, ev: RankExited) -> None:
        rv = self._rank(ev.rank, ev.node)
        rv.returncode, rv.reason, rv.stalled_s = ev.returncode, _after_failed(in_words(ev.reason)), None
        rv.stopped_by, rv.ended = ev.stopped_by, True
        if ev.returncode == 0:
            rv.status = RankStatus.DONE
            text, level = f"rank {ev.rank} finished", Level.INFO
        elif self.kill_requested or self.state == JobState.KILLED or ev.stopped_by in USER_STOPS:
            # the reason of a rank we stopped is a signal name: who stopped it says more (and
            # a stop from another terminal is news here: the job is being stopped, not failing)
            rv.status, rv.reason = RankStatus.KILLED, None
            text, level = f"rank {ev.rank} stopped at step {rv.step}", Level.WARN
        elif ev.returncode is None:
            rv.status = RankStatus.LOST
            text, level = f"rank {ev.rank} gone", Level.ERROR
        else:
            rv.status = RankStatus.FAILED
            text, level = f"rank {ev.rank} failed", Level.ERROR
        if rv.reason:
            text += f": {rv.reason}"
        self.note(text, level, node=ev.node, source=ev.node, t=ev.t)
        if self.state == JobState.FAILED:  # its end was read after the job's verdict
            self._blame_rows(self.reason, self.blamed)

    def _on_not_stopped(self, ev: RanksNotStopped) -> None:
        """A stop that could not reach the node: its rows say their ranks may still be running
        (not "stopped", not "lost" alone) until an end of theirs is read (RankExited)."""
        self.note(not_stopped_text(ev), Level.ERROR, node=ev.node, source="controller", t=ev.t)
        for rank in ev.ranks:
            rv = self._rank(rank, ev.node)
            if rv.status not in (RankStatus.DONE, RankStatus.FAILED, RankStatus.KILLED):
                rv.status, rv.reason, rv.stalled_s = RankStatus.LOST, not_stopped_reason(ev), None

    def _blame_rows(self, reason: str | None, blamed: Blamed | None) -> None:
        """The failure's reason on the rows of the ranks boltring stopped because of it: the
        blamed rank (the event's, never read out of the reason) says why it is blamed (the
        header's cause, short), the others that they were stopped because of it, never only
        "was stopped by boltring"."""
        if not reason and blamed is None:
            return
        for rv in self.ranks.values():
            if rv.stopped_by != StoppedBy.BOLTRING:
                continue
            if blamed is not None and (rv.rank, rv.node) == (blamed.rank, blamed.node):
                rv.status, rv.reason = RankStatus.FAILED, _after_failed(in_words(blamed.cause))
            else:
                why = (
                    f", because of rank {blamed.rank}"
                    if blamed
                    else f": {(reason or '').split('; evidence: ')[0]}"
                )
                rv.status, rv.reason = RankStatus.KILLED, f"by boltring{why}"

    def _on_restarted(self, ev: JobRestarted) -> None:
        self.restarts.append(ev)
        self.step_times.clear()  # it resumes from a checkpoint: the delay is no training pace
        start = f"from {ev.resume_from}" if ev.resume_from else "from step 0"
        self.note(
            f"restart {ev.attempt}/{ev.max_restarts} {start} after: {ev.cause}",
            Level.WARN,
            source="controller",
            t=ev.t,
        )

    def _on_summary(self, ev: JobSummary) -> None:
        self.summary = ev
        status = JobState(ev.status)
        self.state = status if status in FINAL_STATES else self.state
        if ev.stopped_by is not None:
            self.stopped_by = ev.stopped_by
        if self.ended_t is None:
            self.ended_t = ev.t
        loss = ""
        if ev.first_loss is not None or ev.last_loss is not None:
            loss = f", loss {fmt_loss(ev.first_loss)} → {fmt_loss(ev.last_loss)}"
        # a rank's end never read: the wall the records prove, at least (as `--run` says it)
        wall = ("≥ " if ev.wall_s_is_lower_bound else "") + fmt_elapsed(ev.wall_s)
        if not ev.metrics_reported:  # a script that reported none: not "0/300 steps"
            steps = "no steps reported,"
        else:
            steps = f"{'?' if ev.steps is None else ev.steps}/{ev.total_steps} steps"
        text = f"job {ev.job_id} {status}: {steps} in {wall}{loss}"
        if status == JobState.KILLED:
            text += f" ({in_words(ev.reason) or stopped_text(self.stopped_by, ev.steps)})"
        elif ev.reason:
            text += f" ({in_words(ev.reason)})"
        if ev.restarts:
            text += f"; {len(ev.restarts)} restart{'s' if len(ev.restarts) != 1 else ''}"
        if ev.run_dir:
            text += f"; run dir {ev.run_dir}"
        self.note(text, _JOB_LEVEL.get(status, Level.INFO), source="controller", t=ev.t)
