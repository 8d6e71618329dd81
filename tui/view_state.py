"""What the screen shows, accumulated from controller events (no widget in here).

Message handlers apply events to a `ClusterView` (dict updates and deque appends only); a
timer renders widgets from it a few times a second. Every history is a bounded deque, so a
job that runs for days uses the same memory as one that runs for a minute.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import (
    FINAL_STATES,
    CheckResult,
    Event,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    NodeState,
    RankExited,
    RankMetrics,
    RankStarted,
    StepProgress,
)

LOG_KEEP = 5_000  # log entries kept for the whole cluster, and again for each node
RANK_HISTORY = 120  # sparkline points per rank
LOSS_KEEP = 20_000  # (step, loss) points for the plot (downsampled when drawn)
STALE_AFTER_S = 10.0  # a running rank whose last metrics line is older than this is "stale"

# SSH badge colour group of each state in SSH_STATES.
SSH_GOOD = ("local", "connected")
SSH_BUSY = ("connecting", "reconnecting")
SSH_BAD = ("auth failed", "host key unknown", "host key changed", "unreachable", "lost")

# Short labels for the check names the controller uses (cluster/checks.py); unknown names
# are shown as they are. Their order here is the order a panel lists them in.
CHECK_LABELS = {
    "ssh": "ssh",
    "probe": "probe",
    "ring_iface": "iface",
    "ring_ip": "ip",
    "link": "",  # a panel's merge of route:<peer> and rtt:<peer>
    "route": "route",
    "rtt": "rtt",
    "bw": "bw",
    "bandwidth": "bw",
    "python": "py",
    "mlx": "mlx",
    "memory": "mem",
    "boltring": "boltring",
    "chip": "chip",
    "mtu": "mtu",
    "ports": "ports",
    "default_route": "default route",
    "bridge_dhcp": "bridge dhcp",
    "tb_speed": "tb speed",
    "tb_loop": "tb loop",
}
CHECK_ORDER = tuple(CHECK_LABELS)
# What a panel always lists with its value; the rest only when not ok (the details screen
# lists everything).
PANEL_CHECKS = ("ring_iface", "link", "route", "rtt", "bw", "bandwidth", "python", "mlx", "memory")
_SEVERITY = {"ok": 0, "skipped": 1, "warn": 2, "fail": 3}
CHECK_MARKS = {"ok": "✓", "warn": "!", "fail": "✗", "skipped": "–"}


def check_label(name: str) -> str:
    base, _, peer = name.partition(":")
    label = CHECK_LABELS.get(base, base)
    return f"{label}→{peer}" if peer else label


def merge_links(checks: list[CheckResult]) -> list[CheckResult]:
    """route:<peer> and rtt:<peer> as one "→peer via bridge0, 0.42 ms" item (worst status)."""
    by_name = {c.name: c for c in checks}
    out: list[CheckResult] = []
    for c in checks:
        base, _, peer = c.name.partition(":")
        if base == "rtt" and f"route:{peer}" in by_name:
            continue
        rtt = by_name.get(f"rtt:{peer}") if base == "route" else None
        if rtt is None:
            out.append(c)
            continue
        worst = max((c, rtt), key=lambda r: _SEVERITY.get(r.status, 0))
        value = ", ".join(v for v in (c.value, rtt.value) if v) or None
        hint = c.hint if c.status != "ok" and c.hint else rtt.hint if rtt.status != "ok" else None
        out.append(replace(c, name=f"link:{peer}", status=worst.status, value=value, hint=hint))
    return out


def check_sort_key(name: str) -> tuple[int, str]:
    base = name.partition(":")[0]
    try:
        return (CHECK_ORDER.index(base), name)
    except ValueError:
        return (len(CHECK_ORDER), name)


# --- formatting ----------------------------------------------------------------------------


def fmt_num(v: float | None) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_loss(v: float | None) -> str:
    if v is None:
        return "—"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.3e}"
    return f"{v:.4f}"


def fmt_age(s: float) -> str:
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_elapsed(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fmt_mem(mb: float | None) -> str:
    if mb is None:
        return "—"
    if mb >= 1024:
        return f"{mb / 1024:.1f} GB"
    return f"{mb:.0f} MB"


def fmt_clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def node_address(node: Node) -> str:
    where = "local" if node.local else f"ssh {node.ssh or node.name}"
    return f"{node.ring_ip} · {where}"


# --- state ---------------------------------------------------------------------------------


class LogEntry(NamedTuple):
    seq: int  # increasing; the log pane appends entries past the last seq it wrote
    t: float
    source: str
    text: str
    level: str = "info"  # info | warn | error
    node: str | None = None


@dataclass(eq=False)
class RankView:
    rank: int
    node: str
    status: str = "planned"  # planned | started | running | done | failed | lost | killed
    pid: int | None = None
    step: int = 0
    steps_per_s: float | None = None
    samples_per_s: float | None = None
    allreduce_gbps: float | None = None
    mem_mb: float | None = None
    started_t: float | None = None
    last_metrics_t: float | None = None
    returncode: int | None = None
    reason: str | None = None
    gbps_history: deque[float] = field(default_factory=lambda: deque(maxlen=RANK_HISTORY))
    history_version: int = 0

    @property
    def active(self) -> bool:
        return self.status in ("started", "running")

    def age(self, now: float) -> float | None:
        """Seconds since the last metrics line (or the start, before the first one)."""
        ref = self.last_metrics_t if self.last_metrics_t is not None else self.started_t
        return None if ref is None else max(0.0, now - ref)

    def stale(self, now: float) -> bool:
        age = self.age(now)
        return self.active and age is not None and age > STALE_AFTER_S

    def reset(self, t: float, pid: int | None) -> None:
        self.status, self.pid, self.started_t = "started", pid, t
        self.step, self.last_metrics_t, self.returncode, self.reason = 0, None, None, None
        self.steps_per_s = self.samples_per_s = self.allreduce_gbps = self.mem_mb = None
        self.gbps_history.clear()
        self.history_version += 1


@dataclass(eq=False)
class NodeView:
    node: Node
    ssh_state: str | None = None
    ssh_detail: str | None = None
    checks: dict[str, CheckResult] = field(default_factory=dict)
    ranks: dict[int, RankView] = field(default_factory=dict)
    log: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=LOG_KEEP))

    @property
    def name(self) -> str:
        return self.node.name

    def sorted_checks(self) -> list[CheckResult]:
        return [self.checks[k] for k in sorted(self.checks, key=check_sort_key)]

    def panel_checks(self, compact: bool = False) -> tuple[list[CheckResult], int]:
        """The checks a panel lists (the PANEL_CHECKS, and any other that is not ok; only the
        ones not ok when `compact`, while a job runs), and how many ok ones it leaves out."""
        shown, hidden = [], 0
        for c in merge_links(self.sorted_checks()):
            if c.status != "ok" or (not compact and c.name.partition(":")[0] in PANEL_CHECKS):
                shown.append(c)
            else:
                hidden += 2 if c.name.startswith("link:") else 1
        return shown, hidden

    @property
    def lost(self) -> bool:
        return self.ssh_state in SSH_BAD


class ClusterView:
    """Everything the screens show. Mutated only by `apply` and `note`, on the UI thread."""

    def __init__(
        self,
        config: Config,
        state: str = "idle",
        job_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.state = state
        self.job_id = job_id
        self.job_desc: str | None = None
        self.attached = False
        self.step = 0
        self.total_steps = config.job.steps
        self.loss: float | None = None
        self.started_t: float | None = None
        self.ended_t: float | None = None
        self.reason: str | None = None
        self.error: str | None = None  # last controller error, one line
        self.summary: JobSummary | None = None
        self.kill_requested = False  # set by the app: ranks that exit now were killed, not lost
        self.ring_checks: dict[str, CheckResult] = {}
        self.loss_history: deque[tuple[int, float]] = deque(maxlen=LOSS_KEEP)
        self.loss_version = 0
        self.log: deque[LogEntry] = deque(maxlen=LOG_KEEP)
        self._seq = 0
        self.nodes: dict[str, NodeView] = {n.name: NodeView(n) for n in config.nodes}
        self.ranks: dict[int, RankView] = {}
        for slot in config.rank_layout():
            rv = RankView(rank=slot.rank, node=slot.node.name)
            self.ranks[slot.rank] = rv
            self.nodes[slot.node.name].ranks[slot.rank] = rv

    # -- queries ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state in ("launching", "running")

    def elapsed(self, now: float) -> float | None:
        if self.started_t is None:
            return None
        return (self.ended_t if self.ended_t is not None else now) - self.started_t

    # -- updates ---------------------------------------------------------------------------

    def note(
        self,
        text: str,
        level: str = "info",
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
        handler = getattr(self, f"_on_{type(ev).__name__}", None)
        if handler is not None:
            handler(ev)

    def _on_JobStarted(self, ev: JobStarted) -> None:
        self.job_id, self.job_desc, self.attached = ev.job_id, ev.job, ev.attached
        self.total_steps, self.step, self.loss = ev.steps, 0, None
        self.started_t, self.ended_t, self.reason, self.summary = ev.t, None, None, None
        self.kill_requested = False
        self.loss_history.clear()
        self.loss_version += 1
        verb = "re-attached to" if ev.attached else "started"
        self.note(
            f"{verb} job {ev.job_id}: {ev.job}, {ev.world_size} ranks on "
            f"{len(ev.nodes)} nodes, {ev.steps} steps",
            source="controller",
            t=ev.t,
        )

    def _on_JobStateChanged(self, ev: JobStateChanged) -> None:
        previous, self.state = self.state, ev.state
        # After checks the controller goes back to where it was ("idle", or the final state
        # of the last job): nothing new to log; the app logs the checks' outcome.
        back_from_checks = previous == "checking" and (
            ev.state == "idle" or (ev.state in FINAL_STATES and self.ended_t is not None)
        )
        if ev.job_id:
            self.job_id = ev.job_id
        if ev.state in FINAL_STATES:
            # A job ends once; the same final state comes again after checks, which the
            # controller runs in between ("killed" → "checking" → "killed").
            if self.ended_t is None:
                self.ended_t = ev.t
            self.reason = ev.reason or self.reason
        elif ev.state in ("launching", "running"):
            self.ended_t = None
            self.reason = None
        if back_from_checks:
            return
        level = {"failed": "error", "killed": "warn"}.get(ev.state, "info")
        text = "running checks" if ev.state == "checking" else f"job {ev.state}"
        text += f": {ev.reason}" if ev.reason else ""
        self.note(text, level, source="controller", t=ev.t)

    def _on_NodeState(self, ev: NodeState) -> None:
        nv = self._node(ev.node)
        nv.ssh_state, nv.ssh_detail = ev.state, ev.detail
        level = "error" if ev.state in SSH_BAD else "info"
        text = f"ssh {ev.state}" + (f": {ev.detail}" if ev.detail else "")
        self.note(text, level, node=ev.node, source=ev.node, t=ev.t)
        if ev.state in ("lost", "unreachable"):
            for rv in nv.ranks.values():
                if rv.active:
                    rv.status, rv.reason = "lost", ev.detail or f"node {ev.state}"

    def _on_CheckResult(self, ev: CheckResult) -> None:
        base, _, pair = ev.name.partition(":")
        sender, arrow, receiver = pair.partition("->")
        if ev.node == "ring" and base in ("bw", "bandwidth") and arrow and sender in self.nodes:
            # "bw:a->b" is measured from a to its ring neighbour b: show it on a's panel.
            self.nodes[sender].checks[f"bw:{receiver}"] = replace(ev, node=sender, name=f"bw:{receiver}")
        elif ev.node == "ring" or ev.node not in self.nodes:
            self.ring_checks[ev.name] = ev
        else:
            self.nodes[ev.node].checks[ev.name] = ev
        if ev.status in ("warn", "fail"):
            text = f"check {ev.name}: {ev.status}"
            if ev.value:
                text += f" ({ev.value})"
            if ev.hint:
                text += f" — {ev.hint}"
            node = ev.node if ev.node in self.nodes else None
            self.note(text, "error" if ev.status == "fail" else "warn", node=node, source=ev.node, t=ev.t)

    def _on_RankStarted(self, ev: RankStarted) -> None:
        self._rank(ev.rank, ev.node).reset(ev.t, ev.pid)
        pid = f" (pid {ev.pid})" if ev.pid is not None else ""
        self.note(f"rank {ev.rank} started{pid}", node=ev.node, source=ev.node, t=ev.t)

    def _on_RankMetrics(self, ev: RankMetrics) -> None:
        rv = self._rank(ev.rank, ev.node)
        if rv.status in ("planned", "started"):
            rv.status = "running"
        rv.step = ev.step
        rv.last_metrics_t = ev.t
        if ev.steps_per_s is not None:
            rv.steps_per_s = ev.steps_per_s
        if ev.samples_per_s is not None:
            rv.samples_per_s = ev.samples_per_s
        if ev.mem_mb is not None:
            rv.mem_mb = ev.mem_mb
        if ev.allreduce_gbps is not None:
            rv.allreduce_gbps = ev.allreduce_gbps
            rv.gbps_history.append(ev.allreduce_gbps)
            rv.history_version += 1

    def _on_StepProgress(self, ev: StepProgress) -> None:
        self.step, self.total_steps = ev.step, ev.total
        if ev.loss is not None:
            self.loss = ev.loss
            if not self.loss_history or self.loss_history[-1][0] != ev.step:
                self.loss_history.append((ev.step, ev.loss))
                self.loss_version += 1

    def _on_LogLine(self, ev: LogLine) -> None:
        self.note(ev.text, ev.level, node=ev.node, source=ev.source, t=ev.t)

    def _on_RankExited(self, ev: RankExited) -> None:
        rv = self._rank(ev.rank, ev.node)
        rv.returncode, rv.reason = ev.returncode, ev.reason
        if ev.returncode == 0:
            rv.status = "done"
            text, level = f"rank {ev.rank} exited (0)", "info"
        elif self.kill_requested or self.state == "killed":
            rv.status = "killed"
            text, level = f"rank {ev.rank} stopped", "warn"
        elif ev.returncode is None:
            rv.status = "lost"
            text, level = f"rank {ev.rank} gone", "error"
        else:
            rv.status = "failed"
            text, level = f"rank {ev.rank} exited with {ev.returncode}", "error"
        if ev.reason:
            text += f": {ev.reason}"
        self.note(text, level, node=ev.node, source=ev.node, t=ev.t)

    def _on_JobSummary(self, ev: JobSummary) -> None:
        self.summary = ev
        self.state = ev.status if ev.status in FINAL_STATES else self.state
        if self.ended_t is None:
            self.ended_t = ev.t
        loss = ""
        if ev.first_loss is not None or ev.last_loss is not None:
            loss = f", loss {fmt_loss(ev.first_loss)} → {fmt_loss(ev.last_loss)}"
        text = (
            f"job {ev.job_id} {ev.status}: {ev.steps}/{ev.total_steps} steps in "
            f"{fmt_elapsed(ev.wall_s)}{loss}"
        )
        if ev.reason:
            text += f" ({ev.reason})"
        if ev.run_dir:
            text += f"; run dir {ev.run_dir}"
        level = {"failed": "error", "killed": "warn"}.get(ev.status, "info")
        self.note(text, level, source="controller", t=ev.t)
