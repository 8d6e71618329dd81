"""The job controller: one asyncio object that owns a job's life and reports it as events.

    checks → launching → running ⇄ stalled → finished | failed | killed   (restarting → launching)

It talks to nodes only through transports (local subprocesses or SSH) and emits events
(events.py); the TUI and the headless `--run` add a listener and call its methods. The parts
live beside it: record.py (the job record, written before any rank starts; every view of a
running job reads it), follow.py (each rank's metrics, log, exit record and heartbeat),
blame.py (the one common cause of a failure), restart.py (`--restarts`).

This file is the orchestration and is close to 400 lines for that reason: launch, follow,
stop and re-attach share the rank table and must change state in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from boltring.cluster.agent.spawn import ABORT_FILE
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs import blame, follow, record
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.jobs.events import (
    CheckResult,
    Event,
    JobRestarted,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    RankExited,
    RankStalled,
    RankStarted,
    StepProgress,
)
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.jobs.restart import RestartPolicy, resume_label
from boltring.cluster.nodes.transport import LocalTransport, Transport, TransportError
from boltring.cluster.states import JobState, StoppedBy
from boltring.netio.handshake import new_secret

__all__ = ["ControllerError", "JobController"]

POLL_S = 0.25  # how often metrics and logs are read; ranks report far less often than this
STATUS_EVERY_S = 3.0  # liveness check through `spawn status` (catches SIGKILLed keepers)
FAILURE_GRACE_S = 8.0  # after an uncertain failure, how long the others get before we stop them
USER_STOPS = (StoppedBy.USER_KILL, StoppedBy.APP, StoppedBy.CTRL_C)
LINK_FACTS_TIMEOUT_S = 4.0  # reading a suspect node's link facts must not delay the verdict long
LINK_CHECKS = ("ring_iface", "ring_ip", "route", "rtt", "mtu")
RESTART_CHECK_WAIT_S = 60.0  # a failing node's checks may recover (a link back up) this long


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
        self.state: JobState = JobState.IDLE
        self.job_id: str | None = None
        self.poll_s = poll_s
        self._factory = transport_factory or _transport_for
        self._listeners: list[Callable[[Event], None]] = []
        self._transports: dict[str, Transport] = {}
        self._ranks: dict[int, RankState] = {}
        self._follower: asyncio.Task | None = None
        self._done: asyncio.Future | None = None
        self._started_at = 0.0
        self._record: dict = {}
        self._starting: dict[str, asyncio.Future] = {}  # node -> its `spawn start` command in flight
        self._facts: dict[str, dict] = {}
        self.checks: list[CheckResult] = []
        self._reset_job()

    def _reset_job(self) -> None:
        self._global_step = -1
        self._pending_steps: dict[int, float | None] = {}  # rank 0's reported steps not yet emitted
        self._first_loss: float | None = None
        self._last_loss: float | None = None
        self._reason: str | None = None
        self._stopped_by: StoppedBy | None = None
        self._suspects: list[str] = []  # the node(s) the last failure was blamed on
        self._link_facts: asyncio.Future | None = None  # link checks started at the first ring error
        self._fresh_checks: list[CheckResult] = []  # their results, as each node answers
        self._killing = False
        self._policy = RestartPolicy(self.config.job.restarts, self.config.job.restart_delay_s)

    # -- events ----------------------------------------------------------------------------
    def add_listener(self, fn: Callable[[Event], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def emit(self, event: Event) -> None:
        if isinstance(event, CheckResult):
            self._fresh_checks.append(event)  # link facts, as they arrive (see _with_link_facts)
        for fn in list(self._listeners):
            fn(event)

    def _log(self, text: str, level: str = "info") -> None:
        self.emit(LogLine(source="controller", text=text, level=level))

    def _set_state(self, state: JobState, reason: str | None = None, by: StoppedBy | None = None) -> None:
        self.state = state
        self.emit(JobStateChanged(state=state, job_id=self.job_id, reason=reason, by=by))

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
    async def run_checks(self, bandwidth: bool = True, nodes: list[str] | None = None) -> list[CheckResult]:
        """Check the cluster (or only `nodes`, as a restart does for the failing node)."""
        from boltring.cluster.nodes.checks.run import check_cluster

        previous = self.state
        busy = previous.active
        if not busy:
            self._set_state(JobState.CHECKING)
        facts: dict[str, dict] = {}
        config = self.config
        if nodes:
            config = dataclasses.replace(config, nodes=tuple(n for n in config.nodes if n.name in nodes))
        try:
            # While a job runs its ranks hold the ring ports, and a bandwidth burst would
            # compete with the gradients on the same cables: check only the rest.
            results = await check_cluster(
                config,
                self,
                bandwidth=bandwidth and not busy and not nodes,
                check_ports=not busy and not nodes,
                emit=self.emit,
                facts_out=facts,
            )
        finally:
            if not busy:
                self._set_state(previous if previous != JobState.CHECKING else JobState.IDLE)
        self.checks = results
        self._facts.update(facts)
        if not busy and not nodes:  # never reorder the ring under a running job
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

    def oversubscribed(self) -> list[str]:
        """One line per node asked to run more ranks than it has cores (the app asks first)."""
        per_node: dict[str, int] = {}
        for slot in self.config.rank_layout():
            per_node[slot.node.name] = per_node.get(slot.node.name, 0) + 1
        out = []
        for node in self.config.nodes:
            cores = os.cpu_count() if node.local else _cores(self._facts.get(node.name, {}))
            n = per_node.get(node.name, 0)
            if cores and n > cores:
                out.append(f"{node.name} runs {n} ranks on {cores} cores: each rank gets less than a core")
        return out

    # -- launch -----------------------------------------------------------------------------
    def plan(self, resume: bool = False, job_id: str | None = None) -> list[launcher.PlannedRank]:
        jid = job_id or self.job_id or "<job-id>"
        return launcher.plan_job(
            self.config,
            jid,
            resume=resume,
            command_line=lambda node, argv: self.transport(node).command_line(argv),
        )

    async def check_job_args(self) -> None:
        """The runner's own argparse, run here in --check-args mode, before any rank starts: a
        bad example argument is one line now, not 45 lines of help from every rank later."""
        job = self.config.job
        if job.script or job.module or not job.args:
            return
        node = self.config.nodes[0]
        argv = launcher.runner_argv(self.config, node, "check", resume=False)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv[1:],
            "--check-args",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode:
            lines = [x for x in err.decode(errors="replace").splitlines() if x.strip()]
            raise ControllerError(
                f"the job's arguments after `--` are wrong: {(lines or ['(no message)'])[-1]}",
                hint="`boltring --run -- --help` lists the example's options",
            )

    async def launch(self, resume: bool = False) -> str:
        if self.state.active:
            raise ControllerError(f"job {self.job_id} is {self.state}; kill it before launching another")
        await self._refuse_if_running()
        await self.check_job_args()
        self.job_id = launcher.new_job_id(self.config.name)
        self._reset_job()
        self._done = asyncio.get_running_loop().create_future()
        self._set_state(JobState.LAUNCHING)
        plans = self.plan(resume=resume, job_id=self.job_id)
        nodes = {n.name: n for n in self.config.nodes}
        self._ranks = {p.rank: RankState(plan=p, node=nodes[p.node]) for p in plans}
        ranks = [{"rank": p.rank, "node": p.node, "run_dir": p.run_dir} for p in plans]
        self._record = record.new_record(self.config, self.job_id, ranks, resume=resume)
        try:
            record.write(self._record)  # before any rank: whatever starts can be found and killed
            await self._start_ranks(resume)
        except asyncio.CancelledError:
            await self._abort_launch(StoppedBy.CTRL_C, "launch interrupted")
            raise
        except (ControllerError, TransportError, OSError) as e:
            await self._abort_launch(None, str(e))
            raise ControllerError(str(e), hint=getattr(e, "hint", None)) from None
        self._started_at = time.time()
        self._record.update(state=JobState.RUNNING, started=self._started_at)
        try:
            record.write(self._record)
        except ControllerError as e:  # the ranks run; stop them rather than lose track of them
            await self._abort_launch(None, str(e))
            raise
        self.emit(
            JobStarted(
                job_id=self.job_id,
                config=self.config.source,
                world_size=len(self._ranks),
                steps=self.config.job.steps,
                nodes=[n.name for n in self.config.nodes],
                job=self.job_label(),
                backend=self.config.ring.backend,
                resume_from=await self._resume_from() if resume else None,
            )
        )
        self._set_state(JobState.RUNNING)
        self._follower = asyncio.create_task(self._follow())
        return self.job_id

    async def _start_ranks(self, resume: bool) -> None:
        await asyncio.gather(*(self.connect(n) for n in self.config.nodes))
        if self.config.job.script:
            await self._upload_script()
        for line in self.oversubscribed():
            self._log(line, "warn")
        secret = new_secret()

        async def node_ranks(node: Node) -> None:
            mine = [rs for rs in self._ranks.values() if rs.node.name == node.name]
            if not mine:
                return
            argv = launcher.spawn_many_argv(node, "start", [rs.plan.run_dir for rs in mine])
            if len(mine) == 1:
                argv = mine[0].plan.spawn_argv
                data = launcher.spawn_input(mine[0].plan, secret)
            else:
                data = launcher.spawn_many_input([rs.plan for rs in mine], secret)
            # Shielded: an interrupted launch waits for this command (told to stop by the abort
            # file) and then kills what it started; nothing starts after the kill.
            run = asyncio.ensure_future(self.transport(node).run(argv, input=data, timeout=120))
            self._starting[node.name] = run
            res = await asyncio.shield(run)
            info = res.last_json() or {}
            started = info.get("started", [info] if "pid" in info else [])
            for rs, one in zip(mine, started, strict=False):  # started in order, stopping at a failure
                self.emit(RankStarted(rank=rs.plan.rank, node=node.name, pid=one.get("pid")))
            if not res.ok or len(started) < len(mine):
                why = info.get("error") or (res.stderr.strip().splitlines() or ["no output"])[-1]
                raise ControllerError(f"{node.name}: ranks did not start: {why}")

        await asyncio.gather(*(node_ranks(n) for n in self.config.nodes))

    async def _abort_launch(self, by: StoppedBy | None, reason: str) -> None:
        """Stop whatever a failed or interrupted launch started, and end the job."""
        self._killing = by is not None
        running = {n: t for n, t in self._starting.items() if not t.done()}
        nodes = {n.name: n for n in self.config.nodes}
        for name in running:
            node = nodes[name]
            abort = f"{launcher.job_dir(node, self.job_id or '')}/{ABORT_FILE}"
            try:
                await asyncio.shield(self.transport(node).write_file(abort, b"", mode=0o644))
            except (TransportError, OSError) as e:
                self._log(f"{name}: cannot tell the launch to stop: {e}", "warn")
        if running:
            await asyncio.wait(list(running.values()), timeout=10)
        await asyncio.shield(self._kill_ranks(list(self._ranks.values()), by or StoppedBy.BOLTRING))
        self._reason = reason if by is None else f"stopped by you ({by}) during launch"
        self._stopped_by = by
        state = JobState.KILLED if by else JobState.FAILED
        self._set_state(state, self._reason, by)
        self._finish(state)

    async def _refuse_if_running(self) -> None:
        rec = record.read_current()
        if rec and rec.get("state") in ("running", "launching", "stalled", "restarting"):
            alive = await self._alive_ranks_of(rec)
            if alive:
                raise ControllerError(
                    f"job {rec['job_id']} is still running ({len(alive)} ranks "
                    f"alive); `boltring kill` it or re-attach with `boltring`"
                )

    async def _upload_script(self) -> None:
        assert self.job_id is not None and self.config.job.script
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

    async def _resume_from(self) -> str | None:
        """'step 200 (step-000200.safetensors)': what rank 0's `latest` names (the runner then
        verifies it, and says so in its log when it falls back to an older one)."""
        node = self.config.nodes[0]
        try:
            raw = await self.transport(node).read_from(
                f"{launcher.checkpoint_dir(node, self.config)}/latest", 0
            )
        except TransportError:
            return None
        return resume_label(raw.decode(errors="replace").strip() or None)

    def job_label(self) -> str:
        """What the job runs, for humans: 'example charlm' or 'script train.py'."""
        job = self.config.job
        return f"script {Path(job.script).name}" if job.script else f"example {job.example}"

    # -- following --------------------------------------------------------------------------
    async def _follow(self) -> None:
        state = JobState.FAILED
        try:
            while True:
                state = await self._follow_attempt()
                if not self._policy.allows(state, self._stopped_by) or not await self._restart():
                    if self._killing and state == JobState.FAILED:
                        state = JobState.KILLED  # stopped by a user while it waited to restart
                    break
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never die silently: the job ends, with the reason
            self._reason = f"controller lost track of the job: {type(e).__name__}: {e}"
            self._log(self._reason, "error")
            await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited], StoppedBy.BOLTRING)
            state = JobState.FAILED
        finally:
            if self._done is not None and not self._done.done() and not self.state.final:
                if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    self._end(state)

    def _end(self, state: JobState) -> None:
        if state == JobState.KILLED:
            by = self._stopped_by or StoppedBy.BOLTRING
            self._reason = (
                f"stopped by you ({by}) at step {max(self._global_step, 0)}"
                if by in USER_STOPS
                else (self._reason or f"stopped by {by}")
            )
        elif state == JobState.FINISHED:
            self._reason = None
        self._set_state(state, self._reason, self._stopped_by if state == JobState.KILLED else None)
        self._finish(state)

    async def _follow_attempt(self) -> JobState:
        """Follow the ranks until all have ended; the job's state for this attempt."""
        last_status = time.monotonic()
        failed_at: float | None = None
        while True:
            await asyncio.gather(
                *(self._poll_rank(rs) for rs in self._ranks.values() if not rs.exited or rs.partial_metrics)
            )
            stalled = [rs for rs in self._ranks.values() if rs.stalled_for() is not None]
            if time.monotonic() - last_status > STATUS_EVERY_S or (stalled and not self._killing):
                last_status = time.monotonic()
                await self._check_alive([rs for rs in self._ranks.values() if not rs.exited])
            self._report_stalls()
            if all(rs.exited for rs in self._ranks.values()):
                await asyncio.gather(*(self._poll_rank(rs) for rs in self._ranks.values()))
                break
            bad = [rs for rs in self._ranks.values() if rs.exited and rs.returncode != 0]
            user = next(
                (rs.exit_info["stopped_by"] for rs in bad if rs.exit_info.get("stopped_by") in USER_STOPS),
                None,
            )
            if user and not self._killing:  # `boltring kill` from another terminal
                self._killing, self._stopped_by = True, StoppedBy(user)
            if bad and not self._killing and self._reason is None:
                failed_at = failed_at or time.monotonic()
                if self._link_facts is None and any(rs.facts().blames is not None for rs in bad):
                    # A ring error: read every node's link facts now, in the background, so a
                    # verdict that needs them does not wait for SSH round trips after the fact.
                    names = sorted({rs.node.name for rs in self._ranks.values()})
                    self._fresh_checks = []
                    self._link_facts = asyncio.ensure_future(self.run_checks(bandwidth=False, nodes=names))
                await self._check_alive([rs for rs in self._ranks.values() if not rs.exited])
                verdict = blame.decide([rs.facts() for rs in self._ranks.values()])
                if verdict.certain or time.monotonic() - failed_at > FAILURE_GRACE_S:
                    await self._decide(verdict)
                    await self._kill_ranks(
                        [rs for rs in self._ranks.values() if not rs.exited], StoppedBy.BOLTRING
                    )
            await asyncio.sleep(self.poll_s)
        if self._killing:
            return JobState.KILLED
        stops = {rs.exit_info.get("stopped_by") for rs in self._ranks.values()} & set(USER_STOPS)
        if stops:
            self._stopped_by = StoppedBy(stops.pop())
            return JobState.KILLED
        if all(rs.returncode == 0 for rs in self._ranks.values()):
            return JobState.FINISHED
        if self._reason is None:  # every rank ended within one poll
            await self._decide(blame.decide([rs.facts() for rs in self._ranks.values()]))
        return JobState.FAILED

    async def _decide(self, verdict: blame.Verdict) -> None:
        """The failure's one reason (said once), and the node(s) a restart re-checks."""
        self._reason = await self._with_link_facts(verdict)
        cause = self._ranks.get(verdict.cause) if verdict.cause is not None else None
        self._suspects = verdict.suspect_nodes or ([cause.node.name] if cause else [])
        self._log(self._reason, "error")

    async def _with_link_facts(self, verdict: blame.Verdict) -> str:
        """The verdict in one line; when it points at a node's ring link, that node's link
        checks (interface, address, route) say what is wrong: "ring link of h2 is down: h2
        ring_iface: tb0 is down (no carrier)"."""
        if not verdict.suspect_nodes:
            return verdict.text()
        pending = self._link_facts
        self._link_facts = None
        if pending is None:
            self._fresh_checks = []
            pending = asyncio.ensure_future(self.run_checks(bandwidth=False, nodes=verdict.suspect_nodes))

        def link_facts() -> list[CheckResult]:
            return [
                r
                for r in self._fresh_checks
                if r.node in verdict.suspect_nodes
                and r.status == "fail"
                and r.name.split(":")[0] in LINK_CHECKS
            ]

        # Each node's results arrive as soon as that node answers: the first failing link fact
        # is enough (a neighbour's ping waiting out its timeout adds nothing).
        deadline = time.monotonic() + LINK_FACTS_TIMEOUT_S
        while not link_facts() and not pending.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if pending.done() and not pending.cancelled() and pending.exception() is not None:
            self._log(
                f"could not read the link facts of {', '.join(verdict.suspect_nodes)}: {pending.exception()}",
                "warn",
            )
        facts = link_facts()
        if not facts:
            return verdict.text()
        f = facts[0]
        head = f"ring link of {f.node} is down: {f.node} {f.name}: {f.value}"
        return blame.Verdict(verdict.cause, head, verdict.evidence).text()

    def _report_stalls(self) -> None:
        """RankStalled for a rank silent past 3× its usual step time. When a frozen rank makes
        every rank silent, only the frozen one (by liveness) is named."""
        silent = [rs for rs in self._ranks.values() if rs.stalled_for() is not None]
        frozen = [rs for rs in silent if rs.frozen or rs.alive is False]
        named = frozen or silent
        for rs in named:
            if not rs.stalled:
                rs.stalled = True
                self.emit(
                    RankStalled(rank=rs.plan.rank, node=rs.node.name, silent_s=round(rs.silent_s() or 0, 1))
                )
        if named and not frozen and self._link_facts is None:
            # Every rank silent and none frozen looks like a ring link: read the link facts now,
            # so that the verdict at the ring timeout has them at once.
            names = sorted({rs.node.name for rs in self._ranks.values()})
            self._fresh_checks = []
            self._link_facts = asyncio.ensure_future(self.run_checks(bandwidth=False, nodes=names))
        if named and self.state == JobState.RUNNING:
            who = ", ".join(f"r{rs.plan.rank} silent {rs.silent_s() or 0:.0f} s" for rs in named)
            self._set_state(JobState.STALLED, f"stalled: {who}")
        elif (
            self.state == JobState.STALLED
            and not silent
            and not any(rs.exited for rs in self._ranks.values())
            and not any(rs.stalled for rs in self._ranks.values())
        ):  # every stalled rank spoke again
            self._link_facts = None  # facts read during a stall that passed are stale
            self._set_state(JobState.RUNNING)

    async def _poll_rank(self, rs: RankState) -> None:
        try:
            metrics, logs, info = await follow.read_new(rs, self.transport(rs.node))
        except TransportError as e:
            self._log(f"{rs.node.name}: {e}", "warn")  # the transport reconnects; we retry next poll
            return
        for line in metrics:
            self._on_metrics_line(rs, line)
        for text in logs:
            rs.last_log = text
            src = f"rank {rs.plan.rank}@{rs.node.name}"
            self.emit(LogLine(source=src, text=text, node=rs.node.name, rank=rs.plan.rank))
        if info is not None:
            self._on_exit(rs, info)

    async def _check_alive(self, ranks: list[RankState]) -> None:
        """Liveness of `ranks` through `spawn status`, one command per node."""

        async def node_status(node: Node, mine: list[RankState]) -> None:
            argv = launcher.spawn_many_argv(node, "status", [rs.plan.run_dir for rs in mine])
            try:
                res = await self.transport(node).run(argv, timeout=15)
            except TransportError:
                return
            info = res.last_json() or {}
            answers = info.get("ranks", [info] if "alive" in info else [])
            for rs, ans in zip(mine, answers, strict=False):
                rs.alive, rs.frozen = bool(ans.get("alive")), bool(ans.get("stopped"))
                if not ans.get("alive"):
                    self._on_exit(rs, ans.get("exit") or {"returncode": None, "signal": "lost"})

        by_node: dict[str, list[RankState]] = {}
        for rs in ranks:
            by_node.setdefault(rs.node.name, []).append(rs)
        await asyncio.gather(*(node_status(self._ranks_node(n), m) for n, m in by_node.items()))

    def _ranks_node(self, name: str) -> Node:
        return next(rs.node for rs in self._ranks.values() if rs.node.name == name)

    def _on_exit(self, rs: RankState, info: dict) -> None:
        if rs.exited:
            return
        rs.exited, rs.exit_info, rs.returncode = True, dict(info), info.get("returncode")
        by = info.get("stopped_by")
        if by:
            rs.exit_reason = "was stopped by you" + (f" ({by})" if by != StoppedBy.BOLTRING else "")
            if by == StoppedBy.BOLTRING:
                rs.exit_reason = "was stopped by boltring"
        elif rs.returncode == 0:
            rs.exit_reason = "finished"
        else:
            facts = rs.facts()
            rs.exit_reason = (
                blame.evidence_of(facts) if facts.blames is not None else blame.describe_own_end(facts)
            )
            rs.exit_reason = rs.exit_reason.removeprefix(f"{facts.label} ")
        self.emit(
            RankExited(rank=rs.plan.rank, node=rs.node.name, returncode=rs.returncode, reason=rs.exit_reason)
        )

    def _on_metrics_line(self, rs: RankState, line: bytes) -> None:
        ev = follow.metrics_event(rs, line, len(self._ranks))
        if ev is None:
            return
        rs.beat(ev.wall)
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

    # -- restarts ----------------------------------------------------------------------------
    async def _restart(self) -> bool:
        """Relaunch every rank from the newest verified checkpoint; False when a check of the
        failing node fails, or the user stopped the job meanwhile."""
        cause = self._reason or "the job failed"
        attempt = self._policy.used + 1
        failing = sorted({rs.node.name for rs in self._ranks.values() if rs.returncode not in (0, None)})
        failing = self._suspects or failing or [self.config.nodes[0].name]
        self._set_state(JobState.RESTARTING, cause)
        self._record.update(state=JobState.RESTARTING)
        record.write(self._record)
        deadline = time.monotonic() + RESTART_CHECK_WAIT_S
        said = False
        while True:
            bad = [r for r in await self.run_checks(bandwidth=False, nodes=failing) if r.status == "fail"]
            if not bad:
                break
            what = f"{bad[0].node} {bad[0].name}: {bad[0].value or bad[0].hint}"
            if self._killing or time.monotonic() > deadline:
                self._reason = f"{cause}; not restarted: {what} still fails"
                return False
            if not said:
                self._log(f"waiting for {what} to pass before restarting", "warn")
                said = True
            await asyncio.sleep(2.0)
        self._log(
            f"restart {attempt}/{self._policy.max_restarts} in {self._policy.delay_s:g} s: {cause}", "warn"
        )
        await asyncio.sleep(self._policy.delay_s)
        asked = (record.read(self.job_id or "") or {}).get("stop_requested")
        if asked in USER_STOPS and not self._killing:  # `boltring kill` while no rank was alive
            self._killing, self._stopped_by = True, StoppedBy(asked)
        if self._killing:
            return False
        resume = self.config.job.checkpoint_every > 0
        ev = JobRestarted(
            job_id=self.job_id or "",
            attempt=attempt,
            max_restarts=self._policy.max_restarts,
            cause=cause,
            resume_from=await self._resume_from() if resume else None,
        )
        self._policy.history.append(ev.to_dict())
        self.emit(ev)
        self._reason, self._suspects, self._link_facts = None, [], None
        self._global_step, self._pending_steps = -1, {}
        plans = {p.rank: p for p in self.plan(resume=resume, job_id=self.job_id)}
        for rs in self._ranks.values():
            rs.plan = plans[rs.plan.rank]
            rs.reset_for_restart()
        self._record.update(state=JobState.RUNNING, restarts=self._policy.history)
        self._set_state(JobState.LAUNCHING)
        record.write(self._record)
        await self._start_ranks(resume)
        self._set_state(JobState.RUNNING)
        return True

    # -- kill, wait, finish -----------------------------------------------------------------
    async def kill(self, by: StoppedBy = StoppedBy.APP) -> None:
        if not self.state.active:
            return
        self._killing, self._stopped_by = True, by
        self._log(f"stopping every rank of job {self.job_id} ({by})", "warn")
        await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited], by)
        if self._follower is not None and self._done is not None:
            await asyncio.shield(self._done)

    async def _kill_ranks(self, ranks: list[RankState], by: StoppedBy) -> None:
        async def node_kill(node: Node, mine: list[RankState]) -> None:
            argv = [
                *launcher.spawn_many_argv(node, "kill", [rs.plan.run_dir for rs in mine]),
                "--by",
                str(by),
            ]
            try:
                res = await self.transport(node).run(argv, timeout=60)
            except TransportError as e:
                self._log(f"could not stop the ranks on {node.name}: {e}", "error")
                return
            info = res.last_json() or {}
            for rs, ans in zip(mine, info.get("ranks", [info]), strict=False):
                if ans.get("alive"):
                    self._log(f"rank {rs.plan.rank} on {node.name} survived SIGKILL", "error")
                if ans.get("exit"):
                    self._on_exit(rs, ans["exit"])

        by_node: dict[str, list[RankState]] = {}
        for rs in ranks:
            by_node.setdefault(rs.node.name, []).append(rs)
        await asyncio.gather(*(node_kill(self._ranks_node(n), m) for n, m in by_node.items()))

    async def wait(self) -> JobSummary:
        if self._done is None:
            raise ControllerError("no job was launched or attached")
        return await asyncio.shield(self._done)

    def _finish(self, state: JobState) -> None:
        summary = self.summary(state)
        self._record.update(state=state, reason=self._reason, stopped_by=self._stopped_by)
        try:
            if self._record.get("job_id"):
                record.write(self._record)
        except ControllerError as e:  # said once, never swallowed; the summary still arrives
            if str(e) != self._reason:
                self._log(str(e), "error")
        self.emit(summary)
        if self._done is not None and not self._done.done():
            self._done.set_result(summary)

    def summary(self, status: JobState | None = None) -> JobSummary:
        ranks = {}
        for r, rs in self._ranks.items():
            seen = rs.steps_seen[1:] or rs.steps_seen  # the first step includes compilation/setup
            ranks[r] = {
                "node": rs.node.name,
                "samples_per_s": follow.mean(m.samples_per_s for m in seen),
                "steps_per_s": follow.mean(m.steps_per_s for m in seen),
                "allreduce_gbps": follow.mean(m.allreduce_gbps for m in seen),
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
            stopped_by=self._stopped_by if status == JobState.KILLED else None,
            restarts=list(self._policy.history),
        )

    # -- re-attach ---------------------------------------------------------------------------
    async def _alive_ranks_of(self, rec: dict) -> list[int]:
        nodes = {n.name: n for n in self.config.nodes}
        by_node: dict[str, list[dict]] = {}
        for r in rec.get("ranks", []):
            if r.get("node") in nodes:
                by_node.setdefault(r["node"], []).append(r)
        alive: list[int] = []
        for name, mine in by_node.items():
            node = nodes[name]
            try:
                t = await self.connect(node)
                res = await t.run(
                    launcher.spawn_many_argv(node, "status", [r["run_dir"] for r in mine]), timeout=15
                )
            except TransportError:
                continue
            info = res.last_json() or {}
            answers = info.get("ranks", [info] if "alive" in info else [])
            alive += [r["rank"] for r, a in zip(mine, answers, strict=False) if a.get("alive")]
        return alive

    def request_stop(self, by: StoppedBy = StoppedBy.USER_KILL) -> str | None:
        """Ask the controller watching a job that is between attempts (restarting, no rank
        alive) not to relaunch it. Returns the job id, or None when no such job exists."""
        rec = record.read_current()
        if not rec or rec.get("state") != JobState.RESTARTING or rec.get("config") != self.config.source:
            return None
        rec["stop_requested"] = str(by)
        record.write(rec)
        return str(rec["job_id"])

    async def attach(self) -> bool:
        """Follow the job this config left running, if any; True when attached. The job (its
        steps, its ranks) comes from the record, as launched, never from the config as it is."""
        rec = record.read_current()
        if (
            not rec
            or rec.get("state") not in ("running", "launching", "stalled", "restarting")
            or self.state.active
        ):
            return False
        if rec.get("config") != self.config.source or not await self._alive_ranks_of(rec):
            return False
        self.job_id = rec["job_id"]
        self.config = dataclasses.replace(self.config, job=record.job_from_record(rec, self.config.job))
        self._reset_job()
        self._record = rec
        self._policy.history = list(rec.get("restarts") or [])
        self._done = asyncio.get_running_loop().create_future()
        nodes = {n.name: n for n in self.config.nodes}
        self._ranks = {
            r["rank"]: RankState(
                plan=launcher.PlannedRank(
                    rank=r["rank"], node=r["node"], where="", command="", run_dir=r["run_dir"]
                ),
                node=nodes[r["node"]],
            )
            for r in rec["ranks"]
            if r["node"] in nodes
        }
        self._started_at = rec.get("started") or time.time()
        self.emit(
            JobStarted(
                job_id=self.job_id,
                config=self.config.source,
                world_size=len(self._ranks),
                steps=self.config.job.steps,
                nodes=list(rec.get("nodes") or [n.name for n in self.config.nodes]),
                job=self.job_label(),
                attached=True,
                t=self._started_at,
            )
        )  # the job's age, not ours
        self._set_state(JobState.RUNNING)
        self._log(f"re-attached to job {self.job_id}")
        self._follower = asyncio.create_task(self._follow())
        return True

    async def close(self, kill_running: bool = False) -> None:
        if kill_running:
            await self.kill()
        pending = [t for t in (self._link_facts, *self._starting.values()) if t is not None and not t.done()]
        for t in pending:
            if t is self._link_facts:
                t.cancel()  # link facts nobody will read; a start command is waited for
        if pending:
            await asyncio.wait(pending, timeout=15)
        if self._follower is not None and not self._follower.done():
            self._follower.cancel()
            try:
                await self._follower
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(t.close() for t in self._transports.values()), return_exceptions=True)


def _cores(facts: dict) -> int | None:
    raw = (facts.get("hardware") or {}).get("cores")
    try:
        return int(str(raw).split()[-1].split(":")[0]) if raw is not None else None
    except ValueError:
        return None
