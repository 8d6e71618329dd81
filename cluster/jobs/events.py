"""Every event the controller emits, in one module.

The TUI and the headless view only ever see these objects (and call controller methods);
`to_dict()` is the `--json` wire form, one object per line, with `"event": kind`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

# Job life cycle, in order. "finished", "failed" and "killed" are final.
JOB_STATES = ("idle", "checking", "launching", "running", "finished", "failed", "killed")
FINAL_STATES = ("finished", "failed", "killed")

# What a node panel shows as its connection badge. Local nodes are always "local".
SSH_STATES = ("local", "connecting", "connected", "auth failed", "host key unknown",
              "host key changed", "unreachable", "lost", "reconnecting", "closed")

CHECK_STATUSES = ("ok", "warn", "fail", "skipped")


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


@dataclass
class JobStateChanged(Event):
    kind: ClassVar[str] = "state"
    state: str  # one of JOB_STATES
    job_id: str | None = None
    reason: str | None = None  # one line, for failed/killed


@dataclass
class NodeState(Event):
    """Connection state of one node (SSH badge)."""

    kind: ClassVar[str] = "node"
    node: str
    state: str  # one of SSH_STATES
    detail: str | None = None


@dataclass
class CheckResult(Event):
    kind: ClassVar[str] = "check"
    node: str  # node name, or "ring" for checks across nodes
    name: str  # e.g. "ssh", "python", "mlx", "ring_iface", "ring_ip", "route", "rtt:mini2"
    status: str  # one of CHECK_STATUSES
    value: str | None = None  # measured value, human readable ("0.21 ms", "9.4 Gb/s")
    hint: str | None = None  # one line: what to do, when status is not ok


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


@dataclass
class StepProgress(Event):
    """The job's global step advanced (the slowest rank's step; loss from rank 0)."""

    kind: ClassVar[str] = "step"
    step: int
    total: int
    loss: float | None
    ranks: dict[int, dict[str, float | None]] = field(default_factory=dict)  # rank -> throughput


@dataclass
class LogLine(Event):
    kind: ClassVar[str] = "log"
    source: str  # "controller", or "rank N@node"
    text: str
    level: str = "info"  # info | warn | error
    node: str | None = None
    rank: int | None = None


@dataclass
class RankExited(Event):
    kind: ClassVar[str] = "rank_exit"
    rank: int
    node: str
    returncode: int | None  # None when unknown (killed by signal or lost)
    reason: str | None = None


@dataclass
class JobSummary(Event):
    kind: ClassVar[str] = "summary"
    job_id: str
    status: str  # finished | failed | killed
    steps: int
    total_steps: int
    first_loss: float | None
    last_loss: float | None
    wall_s: float
    ranks: dict[int, dict[str, float | None]] = field(default_factory=dict)  # mean samples/s, GB/s
    reason: str | None = None
    run_dir: str | None = None
