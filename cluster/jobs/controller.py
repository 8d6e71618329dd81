"""The job controller: one asyncio object that owns a job's life and reports it as events.

    checks → launching → running ⇄ stalled → finished | failed | killed   (restarting → launching)

It talks to nodes only through transports (local subprocesses or SSH) and emits events
(events.py); the TUI and the headless `--run` add a listener and call its methods. The parts
live beside it: record.py (the job record, written before any rank starts; every view of a
running job reads it), follow.py (each rank's metrics, log, exit record and heartbeat),
blame.py (the one common cause of a failure), restart.py (`--restarts`).

The class is built in layers, one file each: core.py (state, events, agent calls, summary),
launch.py, relaunch.py, watch.py, and this file (the public methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator

from boltring.cluster.jobs import follow, record
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.jobs.events import (
    JobStarted,
)
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.nodes.transport import TransportError
from boltring.cluster.states import JobState, LogLevel, StoppedBy

from .core import (
    POLL_S,
    ControllerCore,
)
from .watch import WatchMixin

# attach: how long a job whose controller is (re)starting its ranks is waited for to run
BETWEEN_ATTEMPTS_WAIT_S = 1.5

__all__ = ["POLL_S", "ControllerCore", "ControllerError", "JobController"]


class JobController(WatchMixin):
    """What the views use: run_checks, plan, launch, wait, kill, attach, read_once, request_stop,
    close, summary, oversubscribed; events through add_listener."""

    async def resume_point(self) -> str | None:
        """What `launch(resume=True)` would start from: "step 200 (step-000200.safetensors)",
        or None when this job's checkpoint directory on rank 0's node (plan.checkpoint_dir: one
        per config and example, script or module) holds no checkpoint (read through the
        transport; the ranks verify the file itself and fall back, saying so, when it is bad)."""
        return await self._resume_from()

    async def launch(self, resume: bool = False) -> str:
        launching = asyncio.get_running_loop().create_future()
        if not self.state.active:  # (a second launch is refused at once: it waits for nothing)
            self._launching = launching
        try:
            job_id = await self._launch(resume)
            self._owner = True  # its record names this controller its owner (record.new_record)
            self._follower = asyncio.create_task(self._follow())
        finally:
            launching.set_result(None)
        return job_id

    async def kill(self, by: StoppedBy = StoppedBy.APP) -> None:
        if not self.state.active:
            return
        self._killing, self._stopped_by = True, by
        self._log(f"stopping every rank of job {self.job_id} ({by})", LogLevel.WARN)
        if self.state == JobState.LAUNCHING:
            # Ranks are being started (a launch, or a restart's relaunch). Stopping them from here
            # would race their start: a rank whose pid is not written yet is missed, and in a
            # relaunch the last attempt's exit records are read as their end. The launch stops
            # what it started once each start answers (_start_ranks); here, only the starts in
            # flight are told to start no more.
            await self._tell_starts_to_stop()
        else:
            await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited], by)
        if self._launching is not None and not self._launching.done():
            await asyncio.shield(self._launching)  # a first launch: its follow task comes after it
        if self._follower is not None and self._done is not None:
            try:
                await self.wait()  # every rank's end, as the follow task reads it
            except ControllerError:
                pass  # the follow task died: the ends cannot be confirmed (unconfirmed_ranks)

    def unconfirmed_ranks(self) -> dict[str, list[int]]:
        """Node → its ranks whose end is not known (after a kill: those that may still run,
        on a node that could not be reached)."""
        left: dict[str, list[int]] = {}
        for r, rs in sorted(self._ranks.items()):
            if not rs.exited:
                left.setdefault(rs.node.name, []).append(r)
        return left

    async def setup(self, names: list[str] | None = None) -> list:
        """`boltring setup` of these nodes (default: all), for the app: every step and pip line is
        a LogLine of its node, then one line per node with the outcome (nodes/setup.py)."""
        from boltring.cluster.jobs.events import LogLine
        from boltring.cluster.nodes import setup as node_setup
        from boltring.cluster.nodes.setup_all import setup_nodes
        from boltring.cluster.nodes.wheels import config_wheelhouse, setup_extras, wanted

        nodes = [n for n in self.config.nodes if names is None or n.name in names]

        def report(node: str, kind: str, text: str) -> None:
            if text.strip():
                self.emit(LogLine(source=f"setup@{node}", text=text.strip(), node=node))

        want = wanted(setup_extras(self.config))
        wheelhouse = config_wheelhouse(self.config)
        results = await setup_nodes(
            self.config, self.transport, want, wheelhouse=wheelhouse, nodes=nodes, report=report
        )
        for r in results:
            level = LogLevel.ERROR if r.status == "failed" else LogLevel.INFO
            self.emit(LogLine(source=f"setup@{r.node}", text=node_setup.outcome(r), level=level, node=r.node))
        return results

    def request_stop(self, by: StoppedBy = StoppedBy.USER_KILL) -> str | None:
        """Ask the controller that owns a job between attempts (launching, or restarting with no
        rank alive) to stop it: a restart not to relaunch, a launch to stop what it starts (its
        follow looks for the request, watch._heed_stop_while_following). Returns the job id, or
        None when no such job exists."""
        rec = record.active(self.config.source)
        if not rec or not record.ask_stop(str(rec["job_id"]), str(by)):
            return None
        return str(rec["job_id"])

    def between_attempts(self) -> dict | None:
        """The record of this config's job while the controller that owns it has no rank to
        follow yet: launching, or restarting after a failure (attach follows only a job with
        ranks to read). None when there is none, or its controller is known to be gone."""
        rec = record.active(self.config.source)
        if not rec or rec.get("state") not in (JobState.LAUNCHING, JobState.RESTARTING):
            return None
        return None if record.watched(rec) is False else rec

    async def attach(self) -> bool:
        """Follow the job this config left running, if any; True when attached. The job (its
        steps, its ranks) comes from the record, as launched, never from the config as it is.
        A job that ended while nobody watched it is closed instead (see _close_ended). A node
        that cannot be asked may be running its ranks: the job is followed, and that node named
        (`status` said nothing of it, and with no node answering, "no job is running")."""
        rec = record.active(self.config.source)
        if not rec or self.state.active:
            return False
        # Its controller is starting ranks: those not restarted yet still hold the last
        # attempt's exit records, which a follow read as their end (and then stopped the fresh
        # ranks as a failure's leftovers). Followed once the record says running; `status`
        # says "between attempts" until then (between_attempts). A relaunch about to run is
        # waited for a moment: `status --follow` looks again only every second, and a short
        # job's whole last attempt could pass unseen in between.
        deadline = time.monotonic() + BETWEEN_ATTEMPTS_WAIT_S
        between = (JobState.LAUNCHING, JobState.RESTARTING)
        while rec.get("state") in between and record.watched(rec) is not False:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
            rec = record.read(str(rec["job_id"])) or {}
        if not record.is_active(rec):
            return False  # it ended meanwhile
        alive = await self._alive_ranks_of(rec)
        # Launching or restarting, a controller is between attempts and owns the record.
        followed = rec.get("state") in (JobState.RUNNING, JobState.STALLED)
        if not alive and not (self._unasked and followed):
            if followed:
                await self._close_ended(rec)
            elif not self._unasked and record.watched(rec) is False:
                await self._close_orphaned(rec)  # between attempts, and its controller is gone
            return False
        self._adopt(rec)
        self.emit(
            JobStarted(
                job_id=self.job_id or "",
                config=self.config.source,
                world_size=len(self._ranks),
                steps=self.config.job.steps,
                nodes=list(rec.get("nodes") or [n.name for n in self.config.nodes]),
                job=self.job_label(),
                attached=True,
                backend=self.config.ring.backend,
                t=self._started_at,
            )
        )  # the job's age, not ours
        self._set_state(JobState.RUNNING)  # (the views say "re-attached to job …" from JobStarted)
        for name, e in self._unasked.items():
            self._say_unreached(name, e)
        self._follower = asyncio.create_task(self._follow())
        return True

    def _say_unreached(self, name: str, e: TransportError) -> None:
        """One line for a node of the job that SSH cannot reach: which, why, what to do."""
        mine = [rs for rs in self._ranks.values() if rs.node.name == name]
        for rs in mine:
            rs.unreached = follow.unreached_text(e)
        if not mine:
            return
        self._outages.add(name)  # following on, its failed reads are this same outage (watch.py)
        hint = e.hint or f"check that {name} is on and reachable from here (`boltring check`)"
        ranks = ", ".join(str(rs.plan.rank) for rs in mine)
        self._log(
            f"could not reach {name} ({e.cause}): its rank{'s' if len(mine) > 1 else ''} {ranks} "
            f"could not be read and may still be running; {hint}",
            LogLevel.WARN,
        )

    async def read_once(self, timeout: float) -> None:
        """For `status` of a running job: wait until each rank's files were read to their end
        once, or its node could not be read, for at most `timeout` s; a rank still unread then
        is named, and counted out of the job's steps like one whose node cannot be reached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.state.active:
            if all(rs.read_to_end or rs.unreached for rs in self._ranks.values()):
                return
            await asyncio.sleep(0.05)
        slow = [rs for rs in self._ranks.values() if not rs.read_to_end and not rs.unreached]
        for name in sorted({rs.node.name for rs in slow}):
            mine = [rs for rs in slow if rs.node.name == name]
            for rs in mine:
                rs.unreached = f"not read within {timeout:g} s"
            ranks = ", ".join(str(rs.plan.rank) for rs in mine)
            self._log(
                f"{name}: the files of rank(s) {ranks} were not read within {timeout:g} s (its SSH "
                f"answers slowly); not counted: `boltring status --follow` reads on",
                LogLevel.WARN,
            )

    def _adopt(self, rec: dict) -> None:
        """Take over the job of record `rec`: its id, its job as launched, its ranks."""
        self.job_id = rec["job_id"]
        self.config = dataclasses.replace(self.config, job=record.job_from_record(rec, self.config.job))
        self._reset_job()
        self._record = rec
        self._owner = False  # it restarts the job only once it took it over (record.claim_restarts)
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
        # their times (exit.json, metrics lines) are on their nodes' clocks, as the launch measured
        follow.use_clocks(self._ranks.values(), record.clock_offsets(rec))
        self._started_at = rec.get("started") or time.time()

    async def _close_ended(self, rec: dict) -> None:
        """A job whose ranks all ended while no controller watched it (the app quit leaving it
        running, `--run` was SIGKILLed): its record still said "running", forever, in `runs`,
        the history and `status`. Read it to its end once, quietly, as a watching controller
        would have (metrics, exit records, the blame for a failure), and write how it ended.
        Never restarted: a view that merely opens must not launch anything."""
        with self._closing(rec):
            self._policy.max_restarts = 0
            await self._check_alive(list(self._ranks.values()))  # their exit records
            await self._follow()  # its summary's wall: until the last rank ended, not now (_wall)

    async def _close_orphaned(self, rec: dict) -> None:
        """A job launching or restarting whose controller ended meanwhile (SIGKILLed, the laptop
        slept and the app was killed) with none of its ranks running: nothing will launch or
        restart it, yet its record said so forever (`runs`: unwatched; `status`: nothing).
        Restarting, its last attempt's ranks ended in the failure that was to be restarted:
        read to their end as an unwatched job is, that failure is how it ended. Launching, the
        launch never finished: failed, saying so."""
        if rec.get("state") == JobState.RESTARTING:
            await self._close_ended(rec)
            return
        gone = ", ".join(f"pid {w['pid']}" for w in rec.get("watchers") or [] if isinstance(w, dict))
        with self._closing(rec):
            self._reason = (
                f"its launch never finished: the controller launching it ({gone or 'its process'}) "
                "ended first, and none of its ranks is running"
            )
            self._finish(JobState.FAILED)

    @contextlib.contextmanager
    def _closing(self, rec: dict) -> Iterator[None]:
        """Adopt `rec` to write how it ended, quietly (no view hears of a job it never showed),
        then forget it: this controller stays idle."""
        listeners, self._listeners = self._listeners, []
        try:
            self._adopt(rec)
            yield
        except ControllerError:
            pass  # the record cannot be written (a full disk): it stays as it was
        finally:
            self._listeners = listeners
            self.state, self.job_id, self._ranks, self._done, self._record = JobState.IDLE, None, {}, None, {}

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
