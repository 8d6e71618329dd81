"""The job controller: one asyncio object that owns a job's life and reports it as events.

    checks → launching → running → finished | failed | killed

It talks to nodes only through transports (local subprocesses or SSH), follows each rank's
metrics.jsonl and rank.log by byte offset, and emits events (events.py). The TUI and the
headless `--run` are two views that add a listener and call these methods; neither knows
how a node is reached.

A job record under BOLTRING_HOME/jobs/ lets a restarted controller re-attach to a job that
was left running (`attach()`), replaying its metrics and logs from the start of each file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from boltring.cluster.agent.spawn import write_atomic
from boltring.cluster.config.schema import Config, Node, boltring_home
from boltring.cluster.errors import BoltringError
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.events import (
    CheckResult,
    Event,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    RankExited,
    RankMetrics,
    RankStarted,
    StepProgress,
)
from boltring.cluster.nodes.transport import LocalTransport, Transport, TransportError, last_json_object
from boltring.netio.handshake import new_secret

POLL_S = 0.25  # how often metrics and logs are read; ranks report far less often than this
STATUS_EVERY_S = 3.0  # liveness check through `spawn status` (catches SIGKILLed keepers)
FAILURE_GRACE_S = 8.0  # after one rank fails, how long the others get to notice before we kill


class ControllerError(BoltringError):
    """A one-line reason a job could not be launched, killed or attached."""

    title = "job error"


@dataclass
class _RankState:
    plan: launcher.PlannedRank
    node: Node
    metrics_offset: int = 0
    log_offset: int = 0
    partial_metrics: bytes = b""
    partial_log: bytes = b""
    last: RankMetrics | None = None
    steps_seen: list[RankMetrics] = field(default_factory=list)
    exited: bool = False
    returncode: int | None = None
    exit_reason: str | None = None
    last_log: str = ""


def _transport_for(node: Node, config: Config, on_state) -> Transport:
    if node.local:
        return LocalTransport(node, on_state)
    from boltring.cluster.nodes.ssh import SshTransport  # asyncssh is only imported for real clusters

    return SshTransport(node, on_state, options=config.ssh)


class JobController:
    def __init__(
        self,
        config: Config,
        *,
        transport_factory: Callable[[Node, Config, Callable], Transport] | None = None,
        poll_s: float = POLL_S,
    ):
        self.config = config
        self.state = "idle"
        self.job_id: str | None = None
        self.poll_s = poll_s
        self._factory = transport_factory or _transport_for
        self._listeners: list[Callable[[Event], None]] = []
        self._transports: dict[str, Transport] = {}
        self._ranks: dict[int, _RankState] = {}
        self._follower: asyncio.Task | None = None
        self._done: asyncio.Future | None = None
        self._started_at = 0.0
        self._global_step = -1
        self._pending_steps: dict[int, float | None] = {}
        self._first_loss: float | None = None
        self._last_loss: float | None = None
        self._reason: str | None = None
        self._killing = False
        self.checks: list[CheckResult] = []

    # -- events ----------------------------------------------------------------------------
    def add_listener(self, fn: Callable[[Event], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def emit(self, event: Event) -> None:
        for fn in list(self._listeners):
            fn(event)

    def _log(self, text: str, level: str = "info") -> None:
        self.emit(LogLine(source="controller", text=text, level=level))

    def _set_state(self, state: str, reason: str | None = None) -> None:
        self.state = state
        self.emit(JobStateChanged(state=state, job_id=self.job_id, reason=reason))

    # -- transports -------------------------------------------------------------------------
    def transport(self, node: Node) -> Transport:
        t = self._transports.get(node.name)
        if t is None:
            t = self._factory(node, self.config, self.emit)
            self._transports[node.name] = t
        return t

    async def connect(self, node: Node) -> Transport:
        t = self.transport(node)
        if t.state not in ("connected", "local"):
            await t.connect()
        return t

    # -- checks -----------------------------------------------------------------------------
    async def run_checks(self, bandwidth: bool = True) -> list[CheckResult]:
        from boltring.cluster.nodes.checks.run import check_cluster

        previous = self.state
        if previous not in ("running", "launching"):
            self._set_state("checking")
        facts: dict[str, dict] = {}
        try:
            # While a job runs its ranks hold the ring ports, and a bandwidth burst would
            # compete with the gradients on the same cables: check only the rest.
            busy = previous in ("running", "launching")
            results = await check_cluster(
                self.config,
                self,
                bandwidth=bandwidth and not busy,
                check_ports=not busy,
                emit=self.emit,
                facts_out=facts,
            )
        finally:
            if previous not in ("running", "launching"):
                self._set_state(previous if previous != "checking" else "idle")
        self.checks = results
        if not busy:  # never reorder the ring under a running job
            self._follow_cables(facts)
        return results

    def _follow_cables(self, facts: dict[str, dict]) -> None:
        """With ring.order: cabling, put the nodes in the order the Thunderbolt cables allow
        (the config's order is only where the search starts); the next launch uses it."""
        from boltring.cluster.nodes.checks.run import all_report_tb_ports, cable_edges, cabling_order

        names = [n.name for n in self.config.nodes]
        if self.config.ring.order != "cabling" or len(names) < 2 or not all_report_tb_ports(names, facts):
            return
        order = cabling_order(names, cable_edges({n: facts[n] for n in names}))
        if order is None or order == names:
            return
        by_name = {n.name: n for n in self.config.nodes}
        self.config = dataclasses.replace(self.config, nodes=tuple(by_name[n] for n in order))
        self._log(f"ring order follows the cables: {', '.join(order)}")

    # -- launch -----------------------------------------------------------------------------
    def plan(self, resume: bool = False, job_id: str | None = None) -> list[launcher.PlannedRank]:
        jid = job_id or self.job_id or "<job-id>"
        return launcher.plan_job(
            self.config,
            jid,
            resume=resume,
            command_line=lambda node, argv: self.transport(node).command_line(argv),
        )

    async def resume_point(self) -> str | None:
        """What `launch(resume=True)` would start from: "step 200 (step-000200.safetensors)",
        or None when rank 0's checkpoint directory holds no checkpoint. Reads the directory's
        `latest` pointer (written after each checkpoint, train/checkpoint.py) through the
        transport, and makes sure the file it names is there."""
        node = self.config.rank_layout()[0].node
        directory = launcher.checkpoint_dir(node, self.config)
        t = await self.connect(node)
        name = (await t.read_from(f"{directory}/latest", 0, 4096)).decode(errors="replace").strip()
        match = re.fullmatch(r"step-(\d{6,})\.safetensors", name)
        if match is None or not await t.read_from(f"{directory}/{name}", 0, 1):
            return None
        return f"step {int(match[1])} ({name})"

    async def launch(self, resume: bool = False) -> str:
        if self.state in ("launching", "running"):
            raise ControllerError(f"job {self.job_id} is {self.state}; kill it before launching another")
        await self._refuse_if_running()
        self.job_id = launcher.new_job_id(self.config.name)
        self._reset()
        self._set_state("launching")
        secret = new_secret()
        plans = self.plan(resume=resume, job_id=self.job_id)
        nodes = {n.name: n for n in self.config.nodes}
        self._ranks = {p.rank: _RankState(plan=p, node=nodes[p.node]) for p in plans}
        started: list[_RankState] = []
        try:
            await asyncio.gather(*(self.connect(n) for n in self.config.nodes))
            if self.config.job.script:
                await self._upload_script()
            for rs in self._ranks.values():
                t = self.transport(rs.node)
                res = await t.run(rs.plan.spawn_argv, input=launcher.spawn_input(rs.plan, secret), timeout=30)
                info = res.last_json()
                if not res.ok or not info or "pid" not in info:
                    why = (info or {}).get("error") or res.stderr.strip().splitlines()[-1:] or ["no output"]
                    raise ControllerError(
                        f"rank {rs.plan.rank} on {rs.node.name} did not start: "
                        f"{why if isinstance(why, str) else why[0]}"
                    )
                started.append(rs)
                self.emit(RankStarted(rank=rs.plan.rank, node=rs.node.name, pid=info["pid"]))
        except (ControllerError, TransportError, OSError) as e:
            await self._kill_ranks(started)
            self._reason = str(e)
            self._set_state("failed", self._reason)
            self._finish("failed")
            raise ControllerError(str(e)) from None
        self._started_at = time.time()
        self._write_record()
        self.emit(
            JobStarted(
                job_id=self.job_id,
                config=self.config.source,
                world_size=self.config.world_size,
                steps=self.config.job.steps,
                nodes=[n.name for n in self.config.nodes],
                job=self.job_label(),
            )
        )
        self._set_state("running")
        self._follower = asyncio.create_task(self._follow())
        return self.job_id

    async def _refuse_if_running(self) -> None:
        record = _read_current_record()
        if record and record.get("state") == "running":
            alive = await self._alive_ranks_of(record)
            if alive:
                raise ControllerError(
                    f"job {record['job_id']} is still running ({len(alive)} ranks "
                    f"alive); `boltring kill` it or re-attach with `boltring`"
                )

    async def _upload_script(self) -> None:
        data = Path(self.config.job.script).read_bytes()
        digest = launcher.file_digest(data)
        for node in self.config.nodes:
            t = self.transport(node)
            path = launcher.script_remote_path(node, self.job_id, self.config.job.script)
            await t.write_file(path, data, mode=0o644)
            back = await t.read_from(path, 0, len(data) + 1)
            if launcher.file_digest(back) != digest:
                raise ControllerError(
                    f"{node.name}: the copy of {self.config.job.script} does not "
                    f"match (sha256 differs); check free disk space on the node"
                )

    def job_label(self) -> str:
        """What the job runs, for humans: 'example charlm' or 'script train.py'."""
        job = self.config.job
        return f"script {Path(job.script).name}" if job.script else f"example {job.example}"

    def _reset(self) -> None:
        self._global_step = -1
        self._pending_steps: dict[int, float | None] = {}  # rank 0's reported steps not yet emitted
        self._first_loss = self._last_loss = None
        self._reason = None
        self._killing = False
        self._done = asyncio.get_running_loop().create_future()

    # -- following --------------------------------------------------------------------------
    async def _follow(self) -> None:
        last_status = time.monotonic()
        failed_at: float | None = None
        try:
            while True:
                await asyncio.gather(
                    *(
                        self._poll_rank(rs)
                        for rs in self._ranks.values()
                        if not rs.exited or rs.partial_metrics
                    )
                )
                if time.monotonic() - last_status > STATUS_EVERY_S:
                    last_status = time.monotonic()
                    await asyncio.gather(
                        *(self._check_alive(rs) for rs in self._ranks.values() if not rs.exited)
                    )
                if all(rs.exited for rs in self._ranks.values()):
                    await asyncio.gather(*(self._poll_rank(rs) for rs in self._ranks.values()))
                    break
                bad = [rs for rs in self._ranks.values() if rs.exited and rs.returncode != 0]
                if bad and not self._killing:
                    if failed_at is None:
                        failed_at = time.monotonic()
                        # A rank that was SIGKILLed leaves no exit record: ask now, so the
                        # reason names the rank that died rather than its neighbours.
                        await asyncio.gather(
                            *(self._check_alive(rs) for rs in self._ranks.values() if not rs.exited)
                        )
                        self._reason = self._failure_reason()
                        self._log(self._reason, "error")
                    elif time.monotonic() - failed_at > FAILURE_GRACE_S:
                        self._log("stopping the remaining ranks after a rank failed", "warn")
                        await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited])
                await asyncio.sleep(self.poll_s)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._reason = f"controller lost track of the job: {e}"
            self._log(self._reason, "error")
        if self._killing:
            status = "killed"
        elif all(rs.returncode == 0 for rs in self._ranks.values()):
            status = "finished"
        else:
            status = "failed"
            if self._reason is None:
                self._reason = self._failure_reason()
        self._set_state(status, self._reason if status != "finished" else None)
        self._finish(status)

    def _failure_reason(self) -> str:
        """One line naming the first rank that failed and the last thing it printed."""

        def victim(rs: _RankState) -> bool:  # it failed only because a neighbour went away
            return any(k in rs.last_log for k in ("PeerClosed", "PeerTimeout"))

        bad = sorted(
            (rs for rs in self._ranks.values() if rs.exited and rs.returncode != 0),
            key=lambda rs: (victim(rs), rs.plan.rank),
        )
        if not bad:
            return "the controller stopped following the job"
        first = bad[0]
        return f"rank {first.plan.rank} on {first.node.name} {first.exit_reason}" + (
            f": {first.last_log}" if first.last_log else ""
        )

    async def _poll_rank(self, rs: _RankState) -> None:
        t = self.transport(rs.node)
        try:
            data = await t.read_from(f"{rs.plan.run_dir}/metrics.jsonl", rs.metrics_offset)
            if data:
                rs.metrics_offset += len(data)
                for line in _lines(rs, "partial_metrics", data):
                    self._on_metrics_line(rs, line)
            data = await t.read_from(f"{rs.plan.run_dir}/rank.log", rs.log_offset)
            if data:
                rs.log_offset += len(data)
                for line in _lines(rs, "partial_log", data):
                    text = line.decode(errors="replace").rstrip()
                    if text:
                        rs.last_log = text
                        self.emit(
                            LogLine(
                                source=f"rank {rs.plan.rank}@{rs.node.name}",
                                text=text,
                                node=rs.node.name,
                                rank=rs.plan.rank,
                                level="error" if "Error" in text else "info",
                            )
                        )
            if not rs.exited:
                raw = await t.read_from(f"{rs.plan.run_dir}/exit.json", 0)
                info = last_json_object(raw.decode(errors="replace")) if raw else None
                if info is not None:
                    self._on_exit(rs, info)
        except TransportError as e:
            self._log(f"{rs.node.name}: {e}", "warn")  # the transport reconnects; we retry next poll

    async def _check_alive(self, rs: _RankState) -> None:
        try:
            res = await self.transport(rs.node).run(
                launcher.spawn_argv(rs.node, "status", rs.plan.run_dir), timeout=15
            )
        except TransportError:
            return
        info = res.last_json()
        if info and not info.get("alive"):
            self._on_exit(rs, info.get("exit") or {"returncode": None, "signal": "lost"})

    def _on_exit(self, rs: _RankState, info: dict) -> None:
        if rs.exited:
            return
        rs.exited = True
        rc = info.get("returncode")
        rs.returncode = rc
        if info.get("signal"):
            rs.exit_reason = f"was stopped by {info['signal']}"
        else:
            rs.exit_reason = f"exited with code {rc}"
        self.emit(RankExited(rank=rs.plan.rank, node=rs.node.name, returncode=rc, reason=rs.exit_reason))

    def _on_metrics_line(self, rs: _RankState, line: bytes) -> None:
        rec = last_json_object(line.decode(errors="replace"))
        if not rec or rec.get("kind") != "step":
            return
        ev = RankMetrics(
            rank=rs.plan.rank,
            node=rs.node.name,
            step=int(rec.get("step", 0)),
            loss=rec.get("loss"),
            steps_per_s=rec.get("steps_per_s"),
            samples_per_s=_per_rank(rec.get("samples_per_s"), self.config.world_size),
            allreduce_gbps=rec.get("allreduce_gbps"),
            allreduce_s=rec.get("allreduce_s"),
            bytes_sent=rec.get("bytes_sent"),
            bytes_recv=rec.get("bytes_recv"),
            mem_mb=rec.get("mem_mb"),
            wall=rec.get("wall"),
        )
        rs.last = ev
        rs.steps_seen.append(ev)
        self.emit(ev)
        if rs.plan.rank == 0:
            if ev.loss is not None:
                if self._first_loss is None:
                    self._first_loss = ev.loss
                self._last_loss = ev.loss
            self._pending_steps[ev.step] = ev.loss
        # The job's step is the slowest rank's; ranks are read one after another, so rank 0 may
        # already be ahead: emit every reported step up to the new global step with its own loss.
        step = min((r.last.step if r.last else -1) for r in self._ranks.values())
        if step > self._global_step:
            self._global_step = step
            ranks = {
                r: {
                    "steps_per_s": s.last.steps_per_s,
                    "samples_per_s": s.last.samples_per_s,
                    "allreduce_gbps": s.last.allreduce_gbps,
                }
                for r, s in self._ranks.items()
                if s.last
            }
            for done in sorted(k for k in self._pending_steps if k <= step):
                self.emit(
                    StepProgress(
                        step=done,
                        total=self.config.job.steps,
                        loss=self._pending_steps.pop(done),
                        ranks=ranks,
                    )
                )

    # -- kill, wait, finish -----------------------------------------------------------------
    async def kill(self) -> None:
        if self.state not in ("running", "launching"):
            return
        self._killing = True
        self._log(f"killing every rank of job {self.job_id}", "warn")
        await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited])
        if self._follower is not None:
            await asyncio.shield(self._done)

    async def _kill_ranks(self, ranks: list[_RankState]) -> None:
        async def one(rs: _RankState) -> None:
            try:
                res = await self.transport(rs.node).run(
                    launcher.spawn_argv(rs.node, "kill", rs.plan.run_dir), timeout=30
                )
                info = res.last_json()
                if info and info.get("alive"):
                    self._log(f"rank {rs.plan.rank} on {rs.node.name} survived SIGKILL", "error")
                if info and info.get("exit"):
                    self._on_exit(rs, info["exit"])
            except TransportError as e:
                self._log(f"could not kill rank {rs.plan.rank} on {rs.node.name}: {e}", "error")

        await asyncio.gather(*(one(rs) for rs in ranks))

    async def wait(self) -> JobSummary:
        if self._done is None:
            raise ControllerError("no job was launched or attached")
        return await asyncio.shield(self._done)

    def _finish(self, status: str) -> None:
        summary = self.summary(status)
        self._write_record(state=status)
        self.emit(summary)
        if self._done is not None and not self._done.done():
            self._done.set_result(summary)

    def summary(self, status: str | None = None) -> JobSummary:
        ranks = {}
        for r, rs in self._ranks.items():
            seen = rs.steps_seen[1:] or rs.steps_seen  # the first step includes compilation/setup
            ranks[r] = {
                "node": rs.node.name,
                "samples_per_s": _mean(m.samples_per_s for m in seen),
                "steps_per_s": _mean(m.steps_per_s for m in seen),
                "allreduce_gbps": _mean(m.allreduce_gbps for m in seen),
            }
        return JobSummary(
            job_id=self.job_id or "",
            status=status or self.state,
            steps=max(self._global_step, 0),
            total_steps=self.config.job.steps,
            first_loss=self._first_loss,
            last_loss=self._last_loss,
            wall_s=(time.time() - self._started_at) if self._started_at else 0.0,
            ranks=ranks,
            reason=self._reason,
            run_dir=launcher.job_dir(self.config.nodes[0], self.job_id or ""),
        )

    # -- re-attach ---------------------------------------------------------------------------
    def _record_path(self, job_id: str) -> Path:
        return boltring_home() / "jobs" / f"{job_id}.json"

    def _write_record(self, state: str = "running") -> None:
        if not self.job_id or not self._ranks:
            return
        record = {
            "job_id": self.job_id,
            "state": state,
            "config": self.config.source,
            "started": self._started_at,
            "steps": self.config.job.steps,
            "ranks": [
                {"rank": rs.plan.rank, "node": rs.node.name, "run_dir": rs.plan.run_dir}
                for rs in self._ranks.values()
            ],
        }
        path = self._record_path(self.job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=1))
        write_atomic(boltring_home() / "current", self.job_id)

    async def _alive_ranks_of(self, record: dict) -> list[int]:
        nodes = {n.name: n for n in self.config.nodes}
        alive = []
        for r in record.get("ranks", []):
            node = nodes.get(r["node"])
            if node is None:
                continue
            try:
                t = await self.connect(node)
                res = await t.run(launcher.spawn_argv(node, "status", r["run_dir"]), timeout=15)
            except TransportError:
                continue
            info = res.last_json()
            if info and info.get("alive"):
                alive.append(r["rank"])
        return alive

    async def attach(self) -> bool:
        """Follow the job this config left running, if any; True when attached."""
        record = _read_current_record()
        if not record or record.get("state") != "running" or self.state in ("running", "launching"):
            return False
        if record.get("config") != self.config.source:
            return False
        if not await self._alive_ranks_of(record):
            return False
        self.job_id = record["job_id"]
        self._reset()
        nodes = {n.name: n for n in self.config.nodes}
        plans = {p.rank: p for p in self.plan(job_id=self.job_id)}
        self._ranks = {
            r["rank"]: _RankState(plan=plans[r["rank"]], node=nodes[r["node"]])
            for r in record["ranks"]
            if r["rank"] in plans and r["node"] in nodes
        }
        self._started_at = record.get("started") or time.time()
        self.emit(
            JobStarted(
                job_id=self.job_id,
                config=self.config.source,
                world_size=self.config.world_size,
                steps=self.config.job.steps,
                nodes=[n.name for n in self.config.nodes],
                job=self.job_label(),
                attached=True,
                t=self._started_at,
            )
        )  # the job's age, not ours
        self._set_state("running")
        self._log(f"re-attached to job {self.job_id}")
        self._follower = asyncio.create_task(self._follow())
        return True

    async def close(self, kill_running: bool = False) -> None:
        if kill_running:
            await self.kill()
        if self._follower is not None and not self._follower.done():
            self._follower.cancel()
            try:
                await self._follower
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(t.close() for t in self._transports.values()), return_exceptions=True)


def _lines(rs: _RankState, attr: str, data: bytes) -> list[bytes]:
    """Complete lines only; a half-written last line waits for the next read."""
    buf = getattr(rs, attr) + data
    *lines, rest = buf.split(b"\n")
    setattr(rs, attr, rest)
    return lines


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _per_rank(samples_per_s, world_size):
    # Workers report the global batch as samples; a rank processes 1/N of it.
    return None if samples_per_s is None else samples_per_s / max(world_size, 1)


def _read_current_record() -> dict | None:
    home = boltring_home()
    try:
        job_id = (home / "current").read_text().strip()
        return json.loads((home / "jobs" / f"{job_id}.json").read_text())
    except (OSError, ValueError):
        return None
