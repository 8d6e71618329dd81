"""Every event the controller emits, in one module.

The TUI and the headless view only ever see these objects (and call controller methods);
`to_dict()` is the `--json` wire form, one object per line, with `"event": kind`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from boltring.cluster.states import FINAL_STATES, CheckStatus, JobState, LogLevel, SshState, StoppedBy

__all__ = ["FINAL_STATES", "CheckStatus", "JobState", "SshState", "StoppedBy"]  # re-exported for views


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    t: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["event"] = self.kind
        return d


@dataclass
class JobStarted(Event):
    """A job was launched (or re-attached to)."""

    kind: ClassVar[str] = "start"
    job_id: str
    config: str | None
    world_size: int
    steps: int
    nodes: list[str]
    job: str  # "example mlp" or "script train.py"
    attached: bool = False
    backend: str = "boltring"  # the collective backend: boltring | mlx-ring | jaccl
    resume_from: str | None = None  # "step 200 (step-200.safetensors)" when resuming, else None


@dataclass
class Blamed:
    """The rank a failed job is blamed on (blame.py names it): the one that died, froze, stopped
    responding or failed of its own error. On the wire: `"blamed": {"rank": 1, "node": "mini2",
    "cause": "stopped responding (no heartbeat for 9 s), its process is frozen (SIGSTOP)"}`."""

    rank: int
    node: str
    cause: str  # what happened to it, in words, without "rank N on NODE"


@dataclass
class JobStateChanged(Event):
    kind: ClassVar[str] = "state"
    state: JobState
    job_id: str | None = None
    reason: str | None = None  # one line, for failed/killed, in words ("stopped by you at step 143")
    by: StoppedBy | None = None  # who stopped it, for killed (and for ranks boltring stopped itself)
    # failed, and restarting after a failure: the rank the reason blames; None when it names no
    # rank (a ring link, the ring as a whole, the controller itself)
    blamed: Blamed | None = None


@dataclass
class NodeState(Event):
    """Connection state of one node (SSH badge)."""

    kind: ClassVar[str] = "node"
    node: str
    state: SshState
    detail: str | None = None


@dataclass
class CheckResult(Event):
    kind: ClassVar[str] = "check"
    node: str  # node name, or "ring" for checks across nodes
    name: str  # e.g. "ssh", "python", "mlx", "ring_iface", "ring_ip", "route", "rtt:mini2"
    status: CheckStatus
    value: str | None = None  # measured value, human readable ("0.21 ms", "9.4 Gb/s")
    hint: str | None = None  # one line: what to do, when status is not ok


@dataclass
class RingOrder(Event):
    """The nodes' ring order changed: with ring.order: cabling, full checks put the nodes in the
    order the cables allow, and the next launch (its ranks, its ring) takes it. The views draw
    the ring in this order, not in the config's. On the wire: `{"event": "ring_order",
    "nodes": ["a", "c", "b", "d"]}`. A job's own order is its JobStarted's `nodes`."""

    kind: ClassVar[str] = "ring_order"
    nodes: list[str]


@dataclass
class RankStarted(Event):
    kind: ClassVar[str] = "rank_start"
    rank: int
    node: str
    pid: int | None = None


@dataclass
class RankMetrics(Event):
    """One metrics line of one rank, as the worker wrote it."""

    kind: ClassVar[str] = "metrics"
    rank: int
    node: str
    step: int
    loss: float | None = None
    steps_per_s: float | None = None
    samples_per_s: float | None = None
    allreduce_gbps: float | None = None  # GB/s (bytes, not bits) of the rank's collectives
    allreduce_s: float | None = None
    bytes_sent: int | None = None
    bytes_recv: int | None = None
    mem_mb: float | None = None
    wall: float | None = None  # worker's wall clock when it wrote the line
    tokens_per_s: float | None = None  # language-model jobs (charlm, lm): tokens this rank trained per second
    val_loss: float | None = None  # set on the steps where a validation pass ran
    peak_mem_mb: float | None = None
    # Every numeric field of the line beyond the standard ones (report(**extra): val_loss,
    # peak_mem_mb, accuracy, ...), for the step event and the panels.
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class RankStalled(Event):
    """A rank's heartbeat (its metrics lines) has been silent for much longer than its usual step
    time; the job has not failed (yet). Cleared by that rank's next RankMetrics."""

    kind: ClassVar[str] = "stalled"
    rank: int
    node: str
    silent_s: float


@dataclass
class JobRestarted(Event):
    """--restarts: the job failed, every rank was stopped, and it is relaunched from a checkpoint."""

    kind: ClassVar[str] = "restart"
    job_id: str
    attempt: int  # 1 for the first restart
    max_restarts: int
    cause: str  # the one-line reason of the failure that caused it
    resume_from: str | None = None  # "step 200 (step-200.safetensors)", None: from step 0


@dataclass
class StepProgress(Event):
    """The job's global step advanced (the slowest rank's step; loss from rank 0 at that step).
    `ranks` holds each rank's throughput and extra fields at that step: from its line for the
    step, or its latest line before it (a rank with no line at or before it is left out)."""

    kind: ClassVar[str] = "step"
    step: int
    total: int
    loss: float | None
    ranks: dict[int, dict[str, float | None]] = field(default_factory=dict)  # rank -> throughput
    # the rank's own clock on the metrics line that completed the step: rates from it stay true
    # when steps are read in a burst (a re-attach replays every step at once)
    wall: float | None = None


@dataclass
class LogLine(Event):
    kind: ClassVar[str] = "log"
    source: str  # "controller", or "rank N@node"
    text: str
    level: str = "info"  # info | warn | error
    node: str | None = None
    rank: int | None = None


@dataclass
class RankErrorLine(Event):
    """A rank's own error line in its log: `boltring-train: error: <Type>: <message>` (the
    runner's last line when a rank fails), or its keeper's `boltring: cannot start …`. The same
    wire form as a rank's other lines (a `log` event with its source, node and rank), at level
    error. Not a LogLine: `--run` says a failure in one line (the controller's verdict) and
    leaves the ranks' own output out, their error lines included."""

    kind: ClassVar[str] = "log"
    source: str  # "rank N@node"
    text: str
    level: LogLevel = LogLevel.ERROR
    node: str | None = None
    rank: int | None = None


@dataclass
class RankExited(Event):
    kind: ClassVar[str] = "rank_exit"
    rank: int
    node: str
    returncode: int | None  # None when unknown (killed by signal or lost)
    reason: str | None = None
    stopped_by: StoppedBy | None = None  # who stopped it, when someone did (you, or boltring)


@dataclass
class RanksNotStopped(Event):
    """A stop (yours, or boltring's after a failure or a failed launch) could not reach a node:
    its ranks whose end is not known may still run, and `boltring kill` stops them once the node
    answers. The views find those nodes by this class, never by a log line's words; it is the
    only event that says so. On the wire: `{"event": "ranks_not_stopped", "node": "h2",
    "ranks": [1], "cause": "no SSH answer from h2:22 within 3 s"}`."""

    kind: ClassVar[str] = "ranks_not_stopped"
    node: str
    ranks: list[int]  # the node's ranks the stop was for whose end was not read
    cause: str  # why the stop did not reach the node, in words, without "h2: "


@dataclass
class JobSummary(Event):
    kind: ClassVar[str] = "summary"
    job_id: str
    status: JobState  # FINISHED | FAILED | KILLED
    steps: int | None  # None: no rank could be read (every node unreachable), not known
    total_steps: int
    first_loss: float | None
    last_loss: float | None
    wall_s: float  # a lower bound when wall_s_is_lower_bound (a rank's end was never learned)
    # per rank: steps/s, samples/s, tokens/s and all-reduce GB/s as totals over time (see follow.Totals)
    ranks: dict[int, dict[str, float | None]] = field(default_factory=dict)
    reason: str | None = None
    run_dir: str | None = None
    tokens_per_s: float | None = None  # all ranks together, language-model jobs
    val_loss: float | None = None  # the last validation loss
    stopped_by: StoppedBy | None = None
    restarts: list[dict[str, Any]] = field(default_factory=list)  # JobRestarted.to_dict() of each
    # The job ended and a rank's end was never learned (its exit record was not read): wall_s is
    # the latest moment the records prove, and that rank's "ended_s" is None.
    wall_s_is_lower_bound: bool = False
    # False when no rank wrote a single step line (report()): a script that prints its progress
    # and reports none; its steps are not 0 of a training, they were never told.
    metrics_reported: bool = True
    # failed: the rank its reason blames, as the failure's state event carried it (None when the
    # reason names no rank: a ring link, the ring as a whole, the controller itself)
    blamed: Blamed | None = None


@dataclass
class SyncProgress(Event):
    """Bytes of one large file sent to a node so far (workspace sync before launch)."""

    kind: ClassVar[str] = "sync_progress"
    node: str
    path: str  # workspace-relative, e.g. "project/data/big.bin"
    sent: int
    total: int


@dataclass
class SyncDone(Event):
    """One node's workspace is in place: what was sent, what was already there."""

    kind: ClassVar[str] = "sync"
    node: str
    files_sent: int
    bytes_sent: int
    files_unchanged: int
    seconds: float
    workspace: str  # the folder on the node, e.g. "~/.boltring/workspace"
    files_removed: int = 0  # files boltring had sent that the laptop no longer has
