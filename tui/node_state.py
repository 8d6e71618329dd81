"""Per-node and per-rank display state (what one node panel and one rank row show).

`ClusterView` (view_state.py) owns these and applies events to them; nothing here is a widget.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from boltring.cluster.config.schema import Node
from boltring.cluster.jobs.events import CheckResult, RankMetrics, RanksNotStopped
from boltring.cluster.states import CheckStatus, LogLevel, SshState, StoppedBy

from .check_items import PANEL_CHECKS, check_sort_key, merge_links

LOG_KEEP = 5_000  # log entries kept for the whole cluster, and again for each node
RANK_HISTORY = 120  # sparkline points per rank
INTERVALS_KEPT = 20  # a rank's usual report interval is the median of its last ones (as follow.py's)
# The controller's stall test (follow.STALL_FACTOR, STALL_FLOOR_S), not imported: follow.py
# brings the transports with it, which the app leaves unloaded until it needs them.
STALL_FACTOR = 3.0  # silent for this many usual intervals: stale (the controller: stalled)
STALL_FLOOR_S = 3.0  # never sooner


class RankStatus(StrEnum):
    PLANNED = "planned"
    STARTED = "started"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"
    KILLED = "killed"
    # Its node cannot be read (SSH lost or unreachable): the rank may well still be running,
    # the controller reads it again once the node answers. Never "lost" nor "not running".
    UNREAD = "unread"


Level = LogLevel  # the views' name for it


def not_stopped_text(ev: RanksNotStopped) -> str:
    """A stop that could not reach a node, as every view says it (the app's log, `--run`,
    `boltring kill`): "could not stop the ranks on h2: no SSH answer from h2:22 within 3 s"."""
    return f"could not stop the ranks on {ev.node}: {ev.cause}"


def not_stopped_reason(ev: RanksNotStopped) -> str:
    """The row of a rank the stop could not reach, after "lost at step N: "."""
    return f"not stopped, may still be running ({ev.cause})"


class LogEntry(NamedTuple):
    seq: int  # increasing; the log pane appends entries past the last seq it wrote
    t: float
    source: str
    text: str
    level: str = Level.INFO
    node: str | None = None


@dataclass(eq=False)
class RankView:
    rank: int
    node: str
    status: RankStatus = RankStatus.PLANNED
    pid: int | None = None
    step: int = 0
    loss: float | None = None
    steps_per_s: float | None = None
    samples_per_s: float | None = None
    tokens_per_s: float | None = None
    allreduce_gbps: float | None = None
    allreduce_ms: float | None = None  # all-reduce time per step
    sent_per_s: float | None = None  # ring bytes per second, out and in
    recv_per_s: float | None = None
    mem_mb: float | None = None
    started_t: float | None = None
    last_metrics_t: float | None = None
    stalled_s: float | None = None  # silent for this long at stalled_t (RankStalled), else None
    stalled_t: float = 0.0
    returncode: int | None = None
    reason: str | None = None
    stopped_by: StoppedBy | None = None  # who stopped it, when someone did (RankExited)
    ended: bool = False  # its end was read (RankExited): no later line makes it run again
    # the numeric fields a script adds to report() (val_loss=, accuracy=, ...), latest of each
    extras: dict[str, float] = field(default_factory=dict)
    gbps_history: deque[float] = field(default_factory=lambda: deque(maxlen=RANK_HISTORY))
    walls: deque[float] = field(default_factory=lambda: deque(maxlen=INTERVALS_KEPT))
    history_version: int = 0
    _prev: tuple[float, int, int | None, int | None] | None = None  # (t, step, sent, recv)

    @property
    def active(self) -> bool:
        return self.status in (RankStatus.STARTED, RankStatus.RUNNING)

    def age(self, now: float) -> float | None:
        """Seconds since the last metrics line (or the start, before the first one)."""
        ref = self.last_metrics_t if self.last_metrics_t is not None else self.started_t
        return None if ref is None else max(0.0, now - ref)

    def usual_interval(self) -> float | None:
        """Median time between its recent metrics lines, by the rank's own clock, the first
        gap (compilation) left out: the controller's measure (follow.RankState), so that a rank
        reporting every 30 s is not called stale every 10 s. None until three lines."""
        times = list(self.walls)
        gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
        return statistics.median(gaps) if gaps else None

    def stale(self, now: float) -> bool:
        """Stalled (the controller said so), or silent past the controller's own limit for it
        (a few of its usual intervals), which the next poll would report: never sooner."""
        if not self.active:
            return False
        if self.stalled_s is not None:
            return True
        usual, age = self.usual_interval(), self.age(now)
        return usual is not None and age is not None and age > max(STALL_FACTOR * usual, STALL_FLOOR_S)

    def silent_for(self, now: float) -> float | None:
        """How long a stalled rank has been silent, growing from its RankStalled figure."""
        if self.stalled_s is None:
            return None
        return self.stalled_s + max(0.0, now - self.stalled_t)

    def reset(self, t: float, pid: int | None) -> None:
        self.status, self.pid, self.started_t = RankStatus.STARTED, pid, t
        self.step, self.last_metrics_t, self.returncode, self.reason = 0, None, None, None
        self.stopped_by, self.ended = None, False
        self.extras = {}
        self.walls.clear()
        self.steps_per_s = self.samples_per_s = self.tokens_per_s = self.allreduce_gbps = None
        self.allreduce_ms = self.sent_per_s = self.recv_per_s = self.mem_mb = self.loss = None
        self.stalled_s, self._prev = None, None
        self.gbps_history.clear()
        self.history_version += 1

    def take(self, ev: RankMetrics) -> None:
        """One metrics line: the latest figures, and rates from the previous line. A line of a
        rank whose end was not read says it runs, whatever was feared of it (its node out of
        reach, a stop that did not reach it)."""
        if not self.ended and self.status != RankStatus.RUNNING:
            self.status, self.reason = RankStatus.RUNNING, None
        t = ev.wall if ev.wall is not None else ev.t
        self.walls.append(t)
        if self._prev is not None:
            pt, pstep, psent, precv = self._prev
            dt = t - pt
            if dt > 0:
                if ev.bytes_sent is not None and psent is not None:
                    self.sent_per_s = max(0, ev.bytes_sent - psent) / dt
                if ev.bytes_recv is not None and precv is not None:
                    self.recv_per_s = max(0, ev.bytes_recv - precv) / dt
            if ev.allreduce_s is not None:
                self.allreduce_ms = ev.allreduce_s * 1000 / max(1, ev.step - pstep)
        elif ev.allreduce_s is not None:
            self.allreduce_ms = ev.allreduce_s * 1000
        self._prev = (t, ev.step, ev.bytes_sent, ev.bytes_recv)
        self.extras.update(ev.extra)
        self.step, self.last_metrics_t, self.stalled_s = ev.step, ev.t, None
        for name in ("loss", "steps_per_s", "samples_per_s", "tokens_per_s", "mem_mb"):
            value = getattr(ev, name)
            if value is not None:
                setattr(self, name, value)
        if ev.allreduce_gbps is not None:
            self.allreduce_gbps = ev.allreduce_gbps
            self.gbps_history.append(ev.allreduce_gbps)
            self.history_version += 1


def node_memory_mb(node: Node, checks: dict[str, CheckResult]) -> float | None:
    """The node's memory: from the config, else the memory check's value ("32 GB (21 GB free)")."""
    if node.memory_gb:
        return node.memory_gb * 1024
    check = checks.get("memory")
    words = (check.value or "").split() if check is not None else []
    if len(words) >= 2 and words[1] == "GB":
        try:
            return float(words[0]) * 1024
        except ValueError:
            return None
    return None


@dataclass(eq=False)
class NodeView:
    node: Node
    ssh_state: SshState | None = None
    ssh_detail: str | None = None
    ssh_since: float | None = None  # when the current ssh_state began (connecting countdown)
    checks: dict[str, CheckResult] = field(default_factory=dict)
    ranks: dict[int, RankView] = field(default_factory=dict)
    log: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=LOG_KEEP))

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def memory_mb(self) -> float | None:
        return node_memory_mb(self.node, self.checks)

    def sorted_checks(self) -> list[CheckResult]:
        return [self.checks[k] for k in sorted(self.checks, key=check_sort_key)]

    def panel_checks(self, compact: bool = False) -> tuple[list[CheckResult], int, int]:
        """The checks a panel lists (the PANEL_CHECKS, and any other that is not ok or skipped;
        only the ones not ok when `compact`, while a job runs), how many ok ones it leaves out,
        and how many skipped ones it folds into "+N skipped"."""
        shown, hidden, skipped = [], 0, 0
        for c in merge_links(self.sorted_checks()):
            if c.status == CheckStatus.SKIPPED:
                skipped += 1
            elif c.status != CheckStatus.OK or (not compact and c.name.partition(":")[0] in PANEL_CHECKS):
                shown.append(c)
            else:
                hidden += 2 if c.name.startswith("link:") else 1
        return shown, hidden, skipped

    @property
    def lost(self) -> bool:
        return self.ssh_state is not None and SshState(self.ssh_state).bad
