"""FeedController: a scripted stand-in for JobController, for deterministic TUI tests.

It implements the controller interface the TUI uses, and on each call replays a scripted list
of events (fixed timestamps) to its listeners, synchronously, as the real controller does from
the loop thread. `calls` records what the app asked for. Scenario builders at the bottom give
the snapshot tests their cluster states; `CLOCK` is the frozen "now" they pass to the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.jobs.events import (
    FINAL_STATES,
    CheckResult,
    Event,
    JobRestarted,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    NodeState,
    RankExited,
    RankMetrics,
    RankStalled,
    RankStarted,
    StepProgress,
)
from boltring.cluster.states import CheckStatus, JobState, SshState, StoppedBy

OK, WARN, FAIL, SKIPPED = CheckStatus.OK, CheckStatus.WARN, CheckStatus.FAIL, CheckStatus.SKIPPED

CLOCK = 1000.0  # the app's frozen "now" in snapshots
T_START = 880.0  # the scripted job starts 2 minutes before CLOCK


def frozen_clock() -> float:
    return CLOCK


@dataclass
class PlannedRank:
    rank: int
    node: str
    where: str
    command: str


class FeedController:
    def __init__(
        self,
        config: Config,
        *,
        attached: bool = False,
        attach_events: Iterable[Event] = (),
        check_events: Iterable[Event] = (),
        launch_events: Iterable[Event] = (),
        kill_events: Iterable[Event] = (),
        job_id: str = "20260101-120000-ab12",
        fail: dict[str, BaseException] | None = None,
        resume_from: str | None = None,
    ) -> None:
        self.config = config
        self.state = JobState.IDLE
        self.job_id: str | None = None
        self.attached = attached
        self.attach_events = list(attach_events)
        self.check_events = list(check_events)
        self.launch_events = list(launch_events)
        self.kill_events = list(kill_events)
        self.next_job_id = job_id
        self.fail = dict(fail or {})
        self.calls: list[tuple] = []
        self.listeners: list[Callable[[Event], None]] = []
        self._final = asyncio.Event()
        self.summary: JobSummary | None = None
        self.resume_from = resume_from  # what resume_point() answers

    # -- test helpers ------------------------------------------------------------------------

    def emit(self, *events: Event) -> None:
        for ev in events:
            if isinstance(ev, JobStateChanged):
                self.state = JobState(ev.state)
                if ev.job_id:
                    self.job_id = ev.job_id
                if ev.state in FINAL_STATES:
                    self._final.set()
            elif isinstance(ev, JobStarted):
                self.job_id = ev.job_id
            elif isinstance(ev, JobSummary):
                self.summary = ev
            for fn in list(self.listeners):
                fn(ev)

    def _maybe_fail(self, name: str) -> None:
        exc = self.fail.get(name)
        if exc is not None:
            raise exc

    # -- the controller interface ------------------------------------------------------------

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        self.listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        if fn in self.listeners:
            self.listeners.remove(fn)

    def plan(self, resume: bool = False) -> list[PlannedRank]:
        self.calls.append(("plan", resume))
        self._maybe_fail("plan")
        out = []
        for slot in self.config.rank_layout():
            node = slot.node
            where = "local subprocess" if node.local else f"ssh {node.ssh or node.name}"
            cmd = (
                f"{node.python} -m boltring.cluster.train.worker --rank {slot.rank} "
                f"--world {self.config.world_size} --listen {slot.ring_addr}"
            )
            if resume:
                cmd += " --resume"
            out.append(PlannedRank(slot.rank, node.name, where, cmd))
        return out

    async def attach(self) -> bool:
        self.calls.append(("attach",))
        self._maybe_fail("attach")
        self.emit(*self.attach_events)
        return self.attached

    async def run_checks(self) -> list[CheckResult]:
        """Like the real one: "checking" only when no job runs (then it checks less)."""
        self.calls.append(("run_checks",))
        busy = self.state.active
        previous = self.state
        t = min((e.t for e in self.check_events), default=CLOCK - 1)
        if not busy:
            self.emit(JobStateChanged(JobState.CHECKING, t=t - 5))
        try:
            self._maybe_fail("run_checks")
            self.emit(*self.check_events)
        finally:
            if not busy:
                back = previous if previous != JobState.CHECKING else JobState.IDLE
                self.emit(JobStateChanged(back, t=t + 1))
        return [e for e in self.check_events if isinstance(e, CheckResult)]

    async def resume_point(self) -> str | None:
        self.calls.append(("resume_point",))
        self._maybe_fail("resume_point")
        return self.resume_from

    async def launch(self, resume: bool = False) -> str:
        self.calls.append(("launch", resume))
        self._maybe_fail("launch")
        self._final.clear()
        self.emit(*self.launch_events)
        return self.job_id or self.next_job_id

    async def kill(self) -> None:
        self.calls.append(("kill",))
        self._maybe_fail("kill")
        self.emit(*self.kill_events)
        if self.state not in FINAL_STATES:
            self.emit(JobStateChanged(JobState.KILLED, job_id=self.job_id, by=StoppedBy.APP, t=CLOCK - 5))

    async def wait(self) -> JobSummary:  # type: ignore[return]
        # The app's Protocol promises a summary; the scripted feeds that end a job send one,
        # the others leave it None, which the app treats as "nothing to announce".
        self.calls.append(("wait",))
        await self._final.wait()
        return self.summary

    async def close(self, kill_running: bool = False) -> None:
        self.calls.append(("close", kill_running))
        self._maybe_fail("close")
        if kill_running and self.state not in FINAL_STATES:
            await self.kill()


# --- scenarios ---------------------------------------------------------------------------------

JOB_ID = "20260101-120000-ab12"


def lab_config() -> Config:
    return Config(
        name="lab",
        source="configs/lab.yaml",
        nodes=(
            Node(
                "mini1",
                ring_ip="198.18.1.1",
                local=True,
                ranks=2,
                ring_iface="bridge0",
                chip="M4 Pro",
                memory_gb=64,
                role="controller",
            ),
            Node("mini2", ring_ip="198.18.1.2", ssh="mini2", ring_iface="bridge0", chip="M4", memory_gb=32),
            Node(
                "mini3",
                ring_ip="198.18.1.3",
                ssh="admin@mini3.local",
                ring_iface="bridge0",
                chip="M4",
                memory_gb=32,
            ),
        ),
        job=JobSpec(example="mlp", steps=200, global_batch=256),
    )


def _node_checks(node: str, ip: str, peers: list[str], t: float) -> list[Event]:
    """What cluster/checks.py reports for a healthy node (names and value formats)."""
    evs: list[Event] = [
        CheckResult(node, "ssh", OK, "local" if node == "mini1" else "connected", t=t),
        CheckResult(node, "python", OK, "3.12.8", t=t),
        CheckResult(node, "boltring", OK, "0.1.0", t=t),
        CheckResult(node, "mlx", OK, "0.32.4", t=t),
        CheckResult(node, "chip", OK, "Apple M4", t=t),
        CheckResult(node, "memory", OK, "32 GB (21 GB free)", t=t),
        CheckResult(node, "ring_iface", OK, "bridge0 up", t=t),
        CheckResult(node, "ring_ip", OK, f"{ip} on bridge0", t=t),
        CheckResult(node, "mtu", OK, "1500", t=t),
        CheckResult(node, "ports", OK, "25250", t=t),
    ]
    for peer in peers:
        evs.append(CheckResult(node, f"route:{peer}", OK, "via bridge0", t=t))
        evs.append(CheckResult(node, f"rtt:{peer}", OK, "0.42 ms", t=t))
    evs.append(CheckResult(node, "default_route", OK, "en0", t=t))
    return evs


RING = ("mini1", "mini2", "mini3")
IPS = {"mini1": "198.18.1.1", "mini2": "198.18.1.2", "mini3": "198.18.1.3"}


def _neighbours(names: tuple[str, ...], i: int) -> list[str]:
    left, right = names[(i - 1) % len(names)], names[(i + 1) % len(names)]
    return [left] if left == right else [left, right]


def check_events(failing: bool = False, t: float = T_START - 15) -> list[Event]:
    evs: list[Event] = [
        NodeState("mini1", SshState.LOCAL, t=t),
        NodeState("mini2", SshState.CONNECTED, t=t),
        NodeState("mini3", SshState.CONNECTED, t=t),
    ]
    for i, name in enumerate(RING):
        evs += _node_checks(name, IPS[name], _neighbours(RING, i), t)
    evs.append(CheckResult("ring", "ring", OK, "3 links both ways", t=t))
    for i, name in enumerate(RING):
        peer = RING[(i + 1) % len(RING)]
        evs.append(CheckResult("ring", f"bw:{name}->{peer}", OK, "31.8 Gb/s", t=t))
    if failing:
        evs += [
            CheckResult(
                "mini3",
                "route:mini1",
                FAIL,
                "via en0",
                hint="198.18.1.1 is reached over en0, not bridge0: "
                "sudo route change 198.18.1.1 -interface bridge0",
                t=t,
            ),
            CheckResult(
                "ring", "bw:mini3->mini1", WARN, "0.9 Gb/s", hint="ring traffic is not on Thunderbolt", t=t
            ),
            CheckResult(
                "mini2",
                "mlx",
                WARN,
                "0.29.1 (controller 0.32.4)",
                hint="install the same mlx everywhere",
                t=t,
            ),
            CheckResult(
                "ring", "ring", FAIL, "mini3→mini1 goes over en0", hint="fix the route on mini3", t=t
            ),
        ]
    return evs


def running_events(
    until: float = CLOCK - 1,
    steps_done: int = 120,
    stale_node: str | None = None,
    stale_from: float | None = None,
) -> list[Event]:
    """A job started at T_START and trained `steps_done` steps by `until`."""
    cfg = lab_config()
    evs: list[Event] = check_events()[:3]
    evs += [
        JobStarted(
            JOB_ID,
            "configs/lab.yaml",
            world_size=4,
            steps=200,
            nodes=["mini1", "mini2", "mini3"],
            job="example mlp",
            t=T_START,
        ),
        JobStateChanged(JobState.LAUNCHING, job_id=JOB_ID, t=T_START),
    ]
    for slot in cfg.rank_layout():
        evs.append(RankStarted(slot.rank, slot.node.name, pid=4100 + slot.rank, t=T_START + 1))
        evs.append(
            LogLine(
                f"rank {slot.rank}@{slot.node.name}",
                f"rank {slot.rank} listening on {slot.ring_addr}",
                node=slot.node.name,
                rank=slot.rank,
                t=T_START + 1,
            )
        )
    evs.append(JobStateChanged(JobState.RUNNING, job_id=JOB_ID, t=T_START + 3))
    span = until - (T_START + 4)
    for step in range(1, steps_done + 1):
        t = T_START + 4 + span * step / steps_done
        loss = 2.3 * (0.97**step) + 0.05 * ((step * 7) % 5) / 5
        for slot in cfg.rank_layout():
            node = slot.node.name
            if stale_node == node and stale_from is not None and t > stale_from:
                continue
            if stale_from is not None and stale_node is None and t > stale_from:
                continue
            wobble = ((step * (slot.rank + 3)) % 11) / 11
            evs.append(
                RankMetrics(
                    slot.rank,
                    node,
                    step,
                    loss=loss if slot.rank == 0 else None,
                    steps_per_s=1.1 + 0.1 * wobble,
                    samples_per_s=70.4 + 6 * wobble,
                    allreduce_gbps=2.6 + 1.2 * wobble - (0.8 if node == "mini3" else 0),
                    allreduce_s=0.08,
                    bytes_sent=step * 5_300_000,
                    bytes_recv=step * 5_300_000,
                    wall=t,
                    mem_mb=812 + 3 * slot.rank + step * 0.5,
                    t=t,
                )
            )
        if stale_from is None or t <= stale_from:
            evs.append(StepProgress(step, 200, loss, t=t))
        if stale_from is not None and t > stale_from:
            continue
        if step == steps_done - 10:
            evs.append(
                LogLine(
                    "rank 2@mini2",
                    "warning: slow allreduce (0.31 s)",
                    level="warn",
                    node="mini2",
                    rank=2,
                    t=t,
                )
            )
        if step % 40 == 0:
            evs.append(LogLine("rank 0@mini1", f"step {step}: loss {loss:.4f}", node="mini1", rank=0, t=t))
    return evs


def idle() -> FeedController:
    return FeedController(lab_config(), check_events=check_events())


def checks_failure() -> FeedController:
    return FeedController(lab_config(), check_events=check_events(failing=True))


def running() -> FeedController:
    return FeedController(
        lab_config(), attached=True, attach_events=running_events(), check_events=check_events(t=CLOCK - 0.5)
    )


def killed(by: StoppedBy = StoppedBy.USER_KILL) -> FeedController:
    """Stopped at step 110 by `boltring kill` from another terminal (the ranks got SIGTERM)."""
    evs = running_events(until=CLOCK - 20, steps_done=110)
    evs += [JobStateChanged(JobState.KILLED, job_id=JOB_ID, by=by, t=CLOCK - 18)]
    for r, node in ((0, "mini1"), (1, "mini1"), (2, "mini2"), (3, "mini3")):
        evs.append(RankExited(r, node, returncode=-15, reason="SIGTERM", t=CLOCK - 18))
    evs.append(
        JobSummary(
            JOB_ID,
            JobState.KILLED,
            steps=110,
            total_steps=200,
            first_loss=2.28,
            last_loss=0.1043,
            wall_s=CLOCK - 18 - T_START,
            run_dir="~/.boltring/runs/" + JOB_ID,
            stopped_by=by,
            t=CLOCK - 18,
        )
    )
    return FeedController(
        lab_config(), attached=True, attach_events=evs, check_events=check_events(t=CLOCK - 0.5)
    )


def stalled() -> FeedController:
    """Running; rank 1 (on mini1) has written no metrics line for 30 s."""
    evs = [
        e for e in running_events() if not (isinstance(e, RankMetrics) and e.rank == 1 and e.t > CLOCK - 31)
    ]
    evs += [
        RankStalled(1, "mini1", silent_s=28.0, t=CLOCK - 2),
        JobStateChanged(JobState.STALLED, job_id=JOB_ID, reason="r1 silent 28 s", t=CLOCK - 2),
    ]
    return FeedController(
        lab_config(), attached=True, attach_events=evs, check_events=check_events(t=CLOCK - 0.5)
    )


def restarted() -> FeedController:
    """Rank 2 failed at step 60; --restarts relaunched the job from its step-50 checkpoint."""
    evs = running_events(until=CLOCK - 1, steps_done=120)
    cut = next(i for i, e in enumerate(evs) if isinstance(e, StepProgress) and e.step == 60)
    t = evs[cut].t
    restart = [
        JobStateChanged(JobState.RESTARTING, job_id=JOB_ID, reason="rank 2 on mini2 failed", t=t + 0.1),
        JobRestarted(
            JOB_ID,
            attempt=1,
            max_restarts=3,
            cause="rank 2 on mini2 failed: ValueError: loss is nan",
            resume_from="step 50 (step-000050.safetensors)",
            t=t + 0.2,
        ),
        JobStateChanged(JobState.RUNNING, job_id=JOB_ID, t=t + 0.3),
    ]
    evs = evs[: cut + 1] + restart + evs[cut + 1 :]
    return FeedController(
        lab_config(), attached=True, attach_events=evs, check_events=check_events(t=CLOCK - 0.5)
    )


def ssh_config() -> Config:
    """Three minis reached over SSH only (no local node)."""
    nodes = tuple(
        Node(f"mini{i}", ring_ip=f"198.18.1.{i}", ssh=f"you@127.0.0.1:229{i}", ring_iface="bridge0")
        for i in (1, 2, 3)
    )
    return Config(
        name="minis", source="configs/minis.yaml", nodes=nodes, job=JobSpec(example="mlp", steps=200)
    )


CHECKS_PER_NODE = (
    "probe",
    "python",
    "mlx",
    "boltring",
    "memory",
    "ring_iface",
    "ring_ip",
    "mtu",
    "ports",
    "chip",
)


def unreachable() -> FeedController:
    """Every node unreachable: one failed ssh check and the rest skipped, per node."""
    t = T_START - 15
    evs: list[Event] = []
    for i in (1, 2, 3):
        name = f"mini{i}"
        evs.append(NodeState(name, SshState.CONNECTING, t=t - 10))
        evs.append(NodeState(name, SshState.UNREACHABLE, detail="connection refused", t=t))
        evs.append(
            CheckResult(
                name, "ssh", FAIL, "connection refused", hint=f"ssh -p 229{i} you@127.0.0.1 to see why", t=t
            )
        )
        evs += [CheckResult(name, c, SKIPPED, "no SSH connection", t=t) for c in CHECKS_PER_NODE]
    fail = {"launch": RuntimeError("mini1: connection refused")}
    return FeedController(ssh_config(), check_events=evs, fail=fail)


def connecting() -> FeedController:
    """Checks under way: mini2 and mini3 have been connecting for 4 s."""
    t = CLOCK - 4
    evs: list[Event] = [
        NodeState("mini1", SshState.CONNECTED, t=t),
        NodeState("mini2", SshState.CONNECTING, t=t),
        NodeState("mini3", SshState.CONNECTING, t=t),
    ]
    return FeedController(ssh_config(), attach_events=evs)


def node_lost() -> FeedController:
    evs = running_events(until=CLOCK - 1, steps_done=120, stale_from=CLOCK - 16)
    evs += [
        NodeState("mini3", SshState.LOST, detail="no keepalive reply for 45 s", t=CLOCK - 15),
        LogLine("controller", "mini3 stopped answering; ranks on it are gone", level="error", t=CLOCK - 15),
    ]
    # the checks that follow the re-attach cannot reach mini3
    checks = [
        e
        for e in check_events(t=CLOCK - 0.5)
        if not (
            isinstance(e, NodeState)
            or getattr(e, "node", None) == "mini3"
            or "mini3" in getattr(e, "name", "")
        )
    ]
    checks += [
        CheckResult(
            "mini3",
            "ssh",
            FAIL,
            "connection lost",
            hint="is mini3 up? ssh mini3 by hand to see why",
            t=CLOCK - 0.5,
        )
    ]
    return FeedController(lab_config(), attached=True, attach_events=evs, check_events=checks)


def launchable() -> FeedController:
    """Idle after checks; `l` + confirm replays a start, a few steps and a running state."""
    evs = running_events(until=CLOCK - 1, steps_done=20)[3:]
    return FeedController(lab_config(), check_events=check_events(), launch_events=evs)


def many_nodes() -> FeedController:
    """Eight nodes, checks passed: the grid takes as many columns as fit, then scrolls."""
    nodes = [Node("mini1", ring_ip="198.18.1.1", local=True, ring_iface="bridge0")]
    nodes += [
        Node(f"mini{i}", ring_ip=f"198.18.1.{i}", ssh=f"mini{i}", ring_iface="bridge0") for i in range(2, 9)
    ]
    cfg = Config(
        name="rack", source="/Users/me/projects/boltring/configs/rack-of-eight.yaml", nodes=tuple(nodes)
    )
    t = T_START - 15
    names = tuple(n.name for n in nodes)
    evs: list[Event] = []
    for i, node in enumerate(nodes):
        if node.name == "mini6":
            evs.append(NodeState("mini6", SshState.AUTH_FAILED, detail="publickey rejected", t=t))
            evs.append(
                CheckResult(
                    "mini6",
                    "ssh",
                    FAIL,
                    "publickey rejected",
                    hint="ssh-copy-id mini6, then c to re-run the checks",
                    t=t,
                )
            )
            evs += [
                CheckResult("mini6", name, SKIPPED, "no connection", t=t)
                for name in ("ring_iface", "python", "mlx", "memory")
            ]
            continue
        evs.append(NodeState(node.name, SshState.LOCAL if node.local else SshState.CONNECTED, t=t))
        evs += _node_checks(node.name, node.ring_ip, _neighbours(names, i), t)
        peer = names[(i + 1) % len(names)]
        if "mini6" not in (node.name, peer):
            evs.append(CheckResult("ring", f"bw:{node.name}->{peer}", OK, "31.8 Gb/s", t=t))
    return FeedController(cfg, check_events=evs)
