"""Launching a job: node checks, argument checks (job_args.py), the job record (written before any rank
starts), starting every node's ranks in one command each, and undoing an interrupted launch."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time

from boltring.cluster.agent.facts import clock_offset
from boltring.cluster.agent.spawn import ABORT_FILE
from boltring.cluster.config.schema import Node
from boltring.cluster.errors import raise_per_node
from boltring.cluster.jobs import follow, record
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.jobs.events import (
    CheckResult,
    JobStarted,
    RankStarted,
    RingOrder,
)
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.jobs.job_args import (
    asks_for_help,
    help_refusal,
    job_args_check_argv,
    job_args_refusal,
)
from boltring.cluster.nodes.checks.clock import skew_warning
from boltring.cluster.nodes.local_process import start_group, stop_group
from boltring.cluster.nodes.transport import TransportError
from boltring.cluster.states import USER_STOPS, JobState, LogLevel, StoppedBy
from boltring.netio.handshake import new_secret

from .core import _cores
from .resume_point import ResumePointMixin


class LaunchMixin(ResumePointMixin):
    # The facts the last full checks (run_checks on every node, no job running) gathered, from
    # which the ring order was decided; None until such checks ran.
    _order_facts: dict[str, dict] | None = None

    async def run_checks(
        self, bandwidth: bool = True, nodes: list[str] | None = None, bandwidth_seconds: float | None = None
    ) -> list[CheckResult]:
        """Check the cluster (or only `nodes`, as a restart does for the failing node);
        `bandwidth_seconds`: each link's burst (default the checks' own, BW_SECONDS)."""
        from boltring.cluster.nodes.checks.bandwidth import BW_SECONDS
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
                bandwidth_seconds=bandwidth_seconds or BW_SECONDS,
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
            self._auto_directions(facts)
        return results

    def _auto_directions(self, facts: dict[str, dict]) -> None:
        """With ring.directions auto, decide 1 or 2 from the routes the checks saw (the next
        launch uses it): alone, a rank can only tell ranks on one host from ranks on several."""
        from boltring.cluster.nodes.checks.ring import directions_from_routes

        if self.config.ring.directions != 0 or self.config.ring.backend != "boltring":
            return
        decided = directions_from_routes(self.config, facts)
        ways = decided[0] if decided else None
        if ways != self._auto_ways and decided:
            self._log(f"ring.directions auto: {ways} ({decided[1]})")
        self._auto_ways = ways

    def _follow_cables(self, facts: dict[str, dict]) -> None:
        """With ring.order: cabling, put the nodes in the order the Thunderbolt cables allow
        (the config's order is only where the search starts); the next launch uses it."""
        from boltring.cluster.nodes.checks.cabling import launch_order

        self._order_facts = facts
        order = launch_order(self.config, facts)
        if order is None:
            return
        by_name = {n.name: n for n in self.config.nodes}
        self.config = dataclasses.replace(self.config, nodes=tuple(by_name[n] for n in order))
        self._log(f"ring order follows the cables: {', '.join(order)}")
        self.emit(RingOrder(nodes=order))  # the views draw the ring in it

    def planned_ring_order(self, skip_checks: bool = False) -> tuple[list[str] | None, str]:
        """The node order the next launch takes, for --dry-run: (order, in words); order None
        while the launch still has to decide it from the cables its checks find (cabling.py
        planned_order). After checks, self.config already holds the order they chose."""
        from boltring.cluster.nodes.checks.cabling import planned_order

        return planned_order(self.config, self._order_facts, skip_checks=skip_checks)

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

    async def check_job_args(self) -> None:
        """The runner's own argparse, run here in --check-args mode, before any rank starts: a
        bad example argument is one line now (JobArgsRefused, exit 2), not 45 lines of help
        from every rank later, nor an error after the ranks started."""
        if asks_for_help(self.config):
            raise help_refusal(self.config)
        argv = job_args_check_argv(self.config)
        if argv is None:
            return
        devnull = asyncio.subprocess.DEVNULL
        proc = await start_group(argv, stdin=devnull, stdout=devnull, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await proc.communicate()
        except asyncio.CancelledError:  # Ctrl-C during the check: leave no process behind
            await stop_group(proc, grace=None)
            raise
        refused = job_args_refusal(self.config, proc.returncode or 0, err.decode(errors="replace"))
        if refused:
            raise refused

    async def _launch(self, resume: bool) -> str:
        """Everything up to running ranks; JobController.launch then follows them."""
        if self.state.active:
            raise ControllerError(f"job {self.job_id} is {self.state}; kill it before launching another")
        await self._refuse_if_running()
        await self.check_job_args()
        # What the ranks will continue from, checked as rank 0 checks it: a checkpoint they
        # would refuse is refused here, before the job exists and any rank starts.
        resume_from = await self._resume_from() if resume else None
        self.job_id = launcher.new_job_id(self.config.name)
        try:  # before the launching state: a plan that cannot be made must leave the job idle
            plans = self.plan(resume=resume, job_id=self.job_id)
        except launcher.PlanError as e:  # (files named by job.sync gone since the CLI's check)
            raise ControllerError(str(e), hint=e.hint) from None
        self._reset_job()
        self._done = asyncio.get_running_loop().create_future()
        self._set_state(JobState.LAUNCHING)
        nodes = {n.name: n for n in self.config.nodes}
        self._ranks = {p.rank: RankState(plan=p, node=nodes[p.node]) for p in plans}
        self._continue_from(resume_from)
        ranks = [{"rank": p.rank, "node": p.node, "run_dir": p.run_dir} for p in plans]
        self._record = record.new_record(self.config, self.job_id, ranks, resume=resume)
        try:
            record.write(self._record)  # before any rank: whatever starts can be found and killed
            await self._start_ranks(resume)
        except asyncio.CancelledError as e:
            # The view names who stopped it in the cancel message (Task.cancel(msg)): a SIGTERM
            # was recorded as Ctrl-C. Without one, Ctrl-C, what interrupts a terminal's launch.
            by = e.args[0] if e.args and e.args[0] in set(StoppedBy) else StoppedBy.CTRL_C
            await self._abort_launch(StoppedBy(by), "launch interrupted")
            raise
        except (ControllerError, TransportError, OSError) as e:
            # stopped by you meanwhile (kill()): the job ends killed, as you asked, not failed
            await self._abort_launch(self._stopped_by if self._killing else None, str(e))
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
                resume_from=resume_from,
            )
        )
        self._set_state(JobState.RUNNING)
        return self.job_id

    def _continue_from(self, resume_from: str | None) -> None:
        """The job's step as the ranks (re)start: the checkpoint step they resume from, before
        their first step is read. Not -1 (said as 0): a job stopped after a restart from step
        200, before its first step, would be recorded (summary, runs, history) at "0/N steps"."""
        m = re.match(r"step (\d+)\b", resume_from or "")  # _resume_from's label: "step 200 (…)"
        self._global_step = int(m[1]) if m else -1  # -1: from the start (or a step it cannot tell)
        rank0 = self._ranks.get(0)
        losses = [e.loss for e in rank0.steps_seen if e.step == self._global_step] if rank0 else []
        if losses and losses[-1] is not None:  # a restart: the summary's last loss is that step's
            self._last_loss = losses[-1]

    async def _connect_all(self) -> None:
        """Connect to every node at once; every node that cannot be reached is named, in one
        error of the first one's class (its badge and hint). Gathered without collecting, the
        second node's error was never retrieved: a traceback at exit, and only one node named."""
        results = await asyncio.gather(*(self.connect(n) for n in self.config.nodes), return_exceptions=True)
        raise_per_node(results, TransportError)

    async def _start_ranks(self, resume: bool) -> None:
        self._starting.clear()  # this launch's start commands only (see _abort_launch)
        await self._connect_all()
        await self._sync_workspace()
        for line in self.oversubscribed():
            self._log(line, LogLevel.WARN)
        secret = new_secret()
        started: list[RankState] = []  # in the order their start commands answered

        async def node_ranks(node: Node) -> None:
            mine = [rs for rs in self._ranks.values() if rs.node.name == node.name]
            if not mine or self._killing:  # stopped before this node's turn: nothing starts there
                return
            argv = launcher.spawn_many_argv(node, "start", [rs.plan.run_dir for rs in mine])
            if len(mine) == 1:
                argv = mine[0].plan.spawn_argv
                data = launcher.spawn_input(mine[0].plan, secret)
            else:
                data = launcher.spawn_many_input([rs.plan for rs in mine], secret)
            # Shielded: an interrupted launch waits for this command (told to stop by the abort
            # file) and then kills what it started; nothing starts after the kill.
            sent = time.time()
            run = asyncio.ensure_future(self.transport(node).run(argv, input=data, timeout=120))
            self._starting[node.name] = run
            res = await asyncio.shield(run)
            info = res.last_json() or {}
            if reading := clock_offset(info.get("clock"), sent, time.time()):  # its ranks' times: ours
                record.note_clock(self._record, node.name, reading)
                follow.use_clocks(mine, {node.name: reading.applied_s})
                if warning := skew_warning(node.name, reading):
                    self._log(warning, LogLevel.WARN)
            answered = info.get("started", [info] if "pid" in info else [])
            for rs, one in zip(mine, answered, strict=False):  # started in order, stopping at a failure
                started.append(rs)
                self.emit(RankStarted(rank=rs.plan.rank, node=node.name, pid=one.get("pid")))
            if self._killing:
                return  # a start cut short by the abort file is what the kill asked for
            if not res.ok or len(answered) < len(mine):
                why = info.get("error") or (res.stderr.strip().splitlines() or ["no output"])[-1]
                raise ControllerError(f"{node.name}: ranks did not start: {why}")

        await asyncio.gather(*(node_ranks(n) for n in self.config.nodes))
        self._heed_stop_request()
        if self._killing:
            await self._stop_what_started(started)

    def _heed_stop_request(self) -> None:
        """`boltring kill` from another terminal while no rank was alive (a restart pending:
        JobController.request_stop) asks, in the job record, that the job be stopped."""
        asked = (record.read(self.job_id or "") or {}).get("stop_requested")
        if asked in USER_STOPS and not self._killing:
            self._killing, self._stopped_by = True, StoppedBy(asked)

    async def _stop_what_started(self, started: list[RankState]) -> None:
        """The job was stopped (kill()) while its ranks were being started. Stop those that
        started, which kill() left to us (see there), and record the others as stopped before
        they started: the follow task then reads every rank to its end and ends the job killed,
        at the step the ranks reached, as it ends any job you stop."""
        by = self._stopped_by or StoppedBy.BOLTRING
        # Ranks that are still starting have nothing to save: a short grace before SIGKILL.
        await asyncio.shield(self._kill_ranks(started, by, grace_s=1.0))
        ran = {rs.plan.rank for rs in started}
        for rs in self._ranks.values():
            if rs.plan.rank not in ran:
                # "ended" on its node's clock, as exit records are (RankState.here): its end is
                # known, so the job's wall is not a lower bound for want of it
                info = {"returncode": None, "stopped_by": str(by), "never_started": True}
                self._on_exit(rs, {**info, "ended": time.time() + rs.clock_offset})

    async def _tell_starts_to_stop(self) -> None:
        """Write the abort file on every node whose start command is in flight: a command that
        starts several ranks starts no more of them (cluster/agent/spawn.py)."""
        nodes = {n.name: n for n in self.config.nodes}
        for name, run in self._starting.items():
            if run.done():
                continue
            node = nodes[name]
            abort = f"{launcher.job_dir(node, self.job_id or '')}/{ABORT_FILE}"
            try:
                await asyncio.shield(self.transport(node).write_file(abort, b"", mode=0o644))
            except (TransportError, OSError) as e:
                self._log(f"{name}: cannot tell the launch to stop: {e}", LogLevel.WARN)

    async def _abort_launch(self, by: StoppedBy | None, reason: str) -> None:
        """Stop whatever a failed or interrupted launch started, and end the job."""
        self._killing = by is not None
        running = {n: t for n, t in self._starting.items() if not t.done()}
        await self._tell_starts_to_stop()
        if running:
            await asyncio.wait(list(running.values()), timeout=10)
        # Ranks that are still starting have nothing to save: a short grace before SIGKILL. Only
        # nodes a start command went to: elsewhere nothing started, and a node that could not be
        # reached gave a false "could not stop the ranks on h2" before the launch's own error.
        ranks = [rs for rs in self._ranks.values() if rs.node.name in self._starting]
        await asyncio.shield(self._kill_ranks(ranks, by or StoppedBy.BOLTRING, grace_s=1.0))
        self._reason = reason if by is None else f"stopped by you ({by}) during launch"
        self._stopped_by = by
        state = JobState.KILLED if by else JobState.FAILED
        self._set_state(state, self._reason, by)
        self._finish(state)

    async def _refuse_if_running(self) -> None:
        rec = record.active(self.config.source)
        if rec:
            alive = await self._alive_ranks_of(rec)
            if alive:
                raise ControllerError(
                    f"job {rec['job_id']} is still running ({len(alive)} ranks "
                    f"alive); `boltring kill` it or re-attach with `boltring`"
                )

    async def _sync_workspace(self) -> None:
        """The job's files (script folder, --data, job.sync) to every remote node, only what
        changed (nodes/sync.py); then a job path no root sends must already be on each node."""
        from boltring.cluster.jobs.events import SyncDone, SyncProgress
        from boltring.cluster.nodes import sync

        def progress(node: str, path: str, sent: int, total: int) -> None:
            self.emit(SyncProgress(node=node, path=path, sent=sent, total=total))

        try:
            done = await sync.sync_workspace(self.config, self.transport, progress)
            missing = await sync.missing_job_paths(self.config, self.transport, sync.sync_roots(self.config))
        except sync.SyncError as e:  # the hint goes in the line: launch() re-raises the message only
            raise ControllerError(f"{e}; {e.hint}" if e.hint else str(e), hint=e.hint) from None
        for r in done:
            self.emit(
                SyncDone(
                    r.node,
                    len(r.files_sent),
                    r.bytes_sent,
                    r.files_unchanged,
                    r.seconds,
                    r.workspace,
                    files_removed=len(r.files_removed),
                )
            )
            unchanged = f"{r.files_unchanged} files unchanged"
            self._log(f"{r.node}: workspace {r.workspace}: {r.summary()} ({unchanged})")
        if missing:
            raise ControllerError(
                "; ".join(str(e) for e in missing) + f"; {missing[0].hint}", hint=missing[0].hint
            )
