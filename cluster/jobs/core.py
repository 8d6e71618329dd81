"""The controller's shared core: its state, events, transports, the agent calls that every
part uses (stop ranks, ask their liveness), and the summary. The parts build on it:
launch.py (checks, launch) → relaunch.py (--restarts) → watch.py (following, blame) →
controller.py (the public JobController: launch, kill, attach, close).

(Over 400 lines: the state every part reads and writes — ranks, their reads, unreachable
nodes, the job's start and end — and the summary made from it live together; apart, the
summary would reach into the core's internals.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs import blame, follow, record
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.jobs.events import (
    Blamed,
    CheckResult,
    Event,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    RankExited,
    RanksNotStopped,
)
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.jobs.restart import RestartPolicy
from boltring.cluster.nodes.transport import LocalTransport, Transport, TransportError
from boltring.cluster.states import USER_STOPS, JobState, LogLevel, StoppedBy

POLL_S = 0.25  # how often metrics and logs are read; ranks report far less often than this
STATUS_EVERY_S = 3.0  # liveness check through `spawn status` (catches SIGKILLed keepers)
FAILURE_GRACE_S = 8.0  # after an uncertain failure, how long the others get before we stop them
# How long a rank that lost a ring peer waits for that peer's own record to be read (polls of
# other nodes come a moment later) before its end is said as a ring failure: see _on_exit.
VICTIM_HOLD_S = 2.0
LINK_FACTS_TIMEOUT_S = 4.0  # reading a suspect node's link facts must not delay the verdict long
LINK_CHECKS = ("ring_iface", "ring_ip", "route", "rtt", "mtu")
RESTART_CHECK_WAIT_S = 60.0  # a failing node's checks may recover (a link back up) this long


def _stopped_by(text: object) -> StoppedBy | None:
    """Who stopped a rank, from its exit record (None for no one, or a name we do not know)."""
    try:
        return StoppedBy(text) if text else None
    except ValueError:
        return None


def _stopped_end(stop: object) -> dict | None:
    """The end of a rank found dead with no exit record while `kill` stops it (spawn status
    hands its stop.json): stopped by whoever asked, not lost. Its kill writes the exit record
    only once the SIGKILLed group has gone; read as "lost" in between, a job stopped from
    another terminal ended failed (and could restart). "ended": when the stop was asked, on
    the node's clock, as exit records' times are."""
    if not isinstance(stop, dict) or not stop.get("by"):
        return None
    end = {"returncode": None, "signal": None, "killed": True, "stopped_by": stop["by"]}
    return {**end, "ended": stop.get("at")}


def _transport_for(node: Node, config: Config, on_state) -> Transport:
    if node.local:
        return LocalTransport(node, on_state)
    from boltring.cluster.nodes.ssh import SshTransport  # asyncssh is only imported for real clusters

    return SshTransport(node, on_state, options=config.ssh)


class ControllerCore:
    # Declared here, for every layer that reads or sets them (launch, relaunch, watch).
    config: Config
    state: JobState
    job_id: str | None
    poll_s: float
    checks: list[CheckResult]
    _ranks: dict[int, RankState]
    _follower: asyncio.Task | None
    _done: asyncio.Future | None
    _started_at: float
    _record: dict
    _starting: dict[str, asyncio.Future]
    _facts: dict[str, dict]
    _global_step: int
    _pending_steps: dict[int, float | None]
    _first_loss: float | None
    _last_loss: float | None
    _reason: str | None
    _stopped_by: StoppedBy | None
    _suspects: list[str]
    _link_facts: asyncio.Future | None
    _fresh_checks: list[CheckResult]
    _killing: bool
    _policy: RestartPolicy
    _unasked: dict[str, TransportError]

    def __init__(
        self,
        config: Config,
        *,
        transport_factory: Callable[[Node, Config, Callable], Transport] | None = None,
        poll_s: float = POLL_S,
    ):
        self.config = config
        self._auto_ways: int | None = None  # ring.directions auto, as the last checks decided it
        self.state = JobState.IDLE
        self.job_id = None
        self.poll_s = poll_s
        self._factory = transport_factory or _transport_for
        self._listeners: list[Callable[[Event], None]] = []
        self._failed_listeners: list[Callable[[Event], None]] = []  # said once each (emit)
        self._transports: dict[str, Transport] = {}
        self._ranks = {}
        self._follower = None
        self._done = None
        self._started_at = 0.0
        self._record = {}
        self._starting = {}  # node -> its `spawn start` command in flight
        self._launching: asyncio.Future | None = None  # done when launch() returns (kill waits for it)
        self._polls: dict[int, asyncio.Future] = {}  # rank -> its read in flight (watch._poll_round)
        self._facts = {}
        self._unasked = {}  # node -> why `spawn status` could not be asked there (_alive_ranks_of)
        # Launched by this controller, or taken over from a dead owner: the one that may restart
        # the job (record.claim_restarts). A re-attached one follows the owner's restarts.
        self._owner = False
        # When this attempt's ranks began to start (this clock), during a restart: an exit record
        # that ended before it is the last attempt's, never this one's end (_this_attempts).
        self._attempt_started = 0.0
        self.checks = []
        self._reset_job()

    def _reset_job(self) -> None:
        self._started_at = 0.0  # set once its ranks run: a launch that fails before has no wall
        self._global_step = -1
        self._pending_steps = {}  # rank 0's reported steps not yet emitted
        self._first_loss = None
        self._last_loss = None
        self._reason = None
        self._stopped_by = None
        self._suspects = []  # the node(s) the last failure was blamed on
        self._blamed: Blamed | None = None  # the rank it was blamed on, when the verdict names one
        self._link_facts = None  # link checks started at the first ring error
        self._fresh_checks = []  # their results, as each node answers
        self._killing = False
        self._gave_up = False  # ranks whose end was never confirmed after a stop (watch.py)
        self._said_not_stopped: set[str] = set()  # nodes named in a RanksNotStopped
        # Nodes whose ranks' files cannot be read now: said once when an outage starts and once
        # when the node answers again (watch._poll_rank), not at every failed read.
        self._outages: set[str] = set()
        self._policy = RestartPolicy(self.config.job.restarts, self.config.job.restart_delay_s)

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def emit(self, event: Event) -> None:
        if isinstance(event, CheckResult):
            self._fresh_checks.append(event)  # link facts, as they arrive (see _with_link_facts)
        elif isinstance(event, JobStarted) and event.attached:
            self._watch_record()
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception as e:  # a view's error is the view's, never the job's
                # emit runs inside the task that follows the job: a listener that raised (--run
                # printing into a closed pipe) killed it, and nothing watched the ranks or ended
                # the job again (a kill then waited forever). The view decides what its own
                # errors mean (headless: a closed output stops the job); here it is said once.
                self._listener_failed(fn, event, e)

    def _watch_record(self) -> None:
        """A re-attached controller (the app, `status`, `kill`) follows the job from now on: its
        record names it among the job's watchers, so `boltring runs` lists the job as running
        while it lives, even after the controller that launched it is gone (history.py)."""
        if not self.job_id:
            return
        record.add_watcher(self._record)  # its own copy, which it writes when the job ends
        try:
            record.watch(self.job_id)
        except ControllerError as e:  # the job is followed all the same; `runs` may not know
            self._log(str(e), LogLevel.WARN)

    def _listener_failed(self, fn: Callable[[Event], None], event: Event, e: Exception) -> None:
        if any(f == fn for f in self._failed_listeners):
            return
        self._failed_listeners.append(fn)
        try:
            print(
                f"boltring: a view of job {self.job_id or '(none yet)'} failed on a `{event.kind}` "
                f"event ({type(e).__name__}: {e}); the job goes on without it",
                file=sys.stderr,
                flush=True,
            )
        except (OSError, ValueError):  # stderr closed too: nobody to tell
            pass

    def _log(self, text: str, level: LogLevel = LogLevel.INFO) -> None:
        self.emit(LogLine(source="controller", text=text, level=level))

    def _set_state(self, state: JobState, reason: str | None = None, by: StoppedBy | None = None) -> None:
        self.state = state
        # A failure's state event (failed, or restarting after it) carries the rank its reason
        # blames, as the verdict decided (watch._decide): views never read it out of the words.
        blamed = self._blamed if state in (JobState.FAILED, JobState.RESTARTING) and reason else None
        self.emit(JobStateChanged(state=state, job_id=self.job_id, reason=reason, by=by, blamed=blamed))

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

    def launch_config(self) -> Config:
        """The config a launch plans from: ring.directions auto as the last checks decided it."""
        if self.config.ring.directions != 0 or not self._auto_ways:
            return self.config
        return dataclasses.replace(
            self.config, ring=dataclasses.replace(self.config.ring, directions=self._auto_ways)
        )

    def plan(self, resume: bool = False, job_id: str | None = None) -> list[launcher.PlannedRank]:
        jid = job_id or self.job_id or "<job-id>"
        config = self.launch_config()
        return launcher.plan_job(
            config,
            jid,
            resume=resume,
            command_line=lambda node, argv: self.transport(node).command_line(argv),
        )

    def job_label(self) -> str:
        """What the job runs, for humans: 'example charlm' or 'script train.py'."""
        job = self.config.job
        if job.script:
            return f"script {Path(job.script).name}"
        return f"module {job.module}" if job.module else f"example {job.example}"

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
                    end = ans.get("exit") or _stopped_end(ans.get("stop"))
                    self._on_exit(rs, end or {"returncode": None, "signal": "lost"})

        by_node: dict[str, list[RankState]] = {}
        for rs in ranks:
            by_node.setdefault(rs.node.name, []).append(rs)
        await asyncio.gather(*(node_status(self._ranks_node(n), m) for n, m in by_node.items()))

    def _ranks_node(self, name: str) -> Node:
        return next(rs.node for rs in self._ranks.values() if rs.node.name == name)

    def _this_attempts(self, rs: RankState, info: dict) -> bool:
        """Is `info` an end of this attempt? A rank a restart has not started yet (or failed to
        start) still has the last attempt's exit.json: read as its end, the restart's follow (or
        its failure path) took the fresh job for failed and stopped the new ranks."""
        ended = info.get("ended")
        if not self._attempt_started or not isinstance(ended, int | float):
            return True
        return rs.here(ended) >= self._attempt_started

    def _on_exit(self, rs: RankState, info: dict) -> None:
        if rs.exited or not self._this_attempts(rs, info):
            return
        rs.exited, rs.exit_info, rs.returncode = True, dict(info), info.get("returncode")
        if self._lost_a_peer(rs):
            if self._killing and self._stopped_by in USER_STOPS:
                # You are stopping the job and this rank lost a neighbour that was stopped
                # before it (on another node, its stop record was not there yet): it ended
                # because you stopped the job, not of a fault of its own.
                rs.exit_info["stopped_by"] = str(self._stopped_by)
            elif self._reason is None:
                # Why its peer went is not known yet: that peer's record (a stop by you from
                # another terminal, or its own failure) may be on a node read a moment later.
                # Its end is said once that is known (_say_held_exits), so never wrongly.
                rs.held_since = time.monotonic()
                return
        self._say_exit(rs)

    def _lost_a_peer(self, rs: RankState) -> bool:
        """It failed of a ring error: the cause is elsewhere (who stopped it, if anyone, not said)."""
        if rs.exit_info.get("stopped_by") or rs.returncode == 0:
            return False
        facts = rs.facts()
        return facts.blames is not None or facts.lost_unnamed_peer

    def _say_held_exits(self, *, final: bool = False) -> None:
        """The ends held back by _on_exit: stopped by you when you are stopping the job; as
        ring failures once the job's verdict is made, after VICTIM_HOLD_S, or at the end."""
        now = time.monotonic()
        for rs in self._ranks.values():
            if rs.held_since is None:
                continue
            if self._killing and self._stopped_by in USER_STOPS:
                rs.exit_info["stopped_by"] = str(self._stopped_by)
            elif not (final or self._reason is not None or now - rs.held_since >= VICTIM_HOLD_S):
                continue
            rs.held_since = None
            self._say_exit(rs)

    def _say_exit(self, rs: RankState) -> None:
        by = rs.exit_info.get("stopped_by")
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
            RankExited(
                rank=rs.plan.rank,
                node=rs.node.name,
                returncode=rs.returncode,
                reason=rs.exit_reason,
                stopped_by=_stopped_by(by),
            )
        )

    async def _kill_ranks(self, ranks: list[RankState], by: StoppedBy, grace_s: float = 5.0) -> None:
        async def node_kill(node: Node, mine: list[RankState]) -> None:
            argv = [
                *launcher.spawn_many_argv(node, "kill", [rs.plan.run_dir for rs in mine]),
                "--grace",
                f"{grace_s:g}",
                "--by",
                str(by),
            ]
            try:
                res = await self.transport(node).run(argv, timeout=60)
            except TransportError as e:
                # An event, not a log line: views name the nodes whose ranks may still run (and
                # --run stops waiting for them) by its class; each view says it in its own words.
                left = [rs.plan.rank for rs in mine if not rs.exited]
                if left:  # ranks whose end was read meanwhile need no stop
                    self._said_not_stopped.add(node.name)
                    self.emit(RanksNotStopped(node=node.name, ranks=left, cause=e.cause))
                return
            info = res.last_json() or {}
            for rs, ans in zip(mine, info.get("ranks", [info]), strict=False):
                if ans.get("alive"):
                    self._log(f"rank {rs.plan.rank} on {node.name} survived SIGKILL", LogLevel.ERROR)
                elif ans.get("exit") and not self._this_attempts(rs, ans["exit"]):
                    # not alive, and its only record the last attempt's: it never started in
                    # this one (a restart that failed part way), so it ended when it was stopped
                    never = {"returncode": None, "stopped_by": str(by), "never_started": True}
                    self._on_exit(rs, {**never, "ended": time.time() + rs.clock_offset})
                elif ans.get("exit"):
                    self._on_exit(rs, ans["exit"])

        by_node: dict[str, list[RankState]] = {}
        for rs in ranks:
            by_node.setdefault(rs.node.name, []).append(rs)
        await asyncio.gather(*(node_kill(self._ranks_node(n), m) for n, m in by_node.items()))

    async def wait(self) -> JobSummary:
        if self._done is None:
            raise ControllerError("no job was launched or attached")
        follower = self._follower
        if follower is not None and not self._done.done():
            # The follow task ends the job (its summary); should it ever die without doing so,
            # waiting for that summary would be waiting forever: say why instead.
            await asyncio.wait({asyncio.shield(self._done), follower}, return_when=asyncio.FIRST_COMPLETED)
            if not self._done.done() and follower.done() and not follower.cancelled():
                e = follower.exception()
                why = f"{type(e).__name__}: {e}" if e is not None else "it stopped following it"
                raise ControllerError(
                    f"controller lost track of job {self.job_id}: {why}",
                    hint="`boltring status` follows it again, `boltring kill` stops it",
                )
        return await asyncio.shield(self._done)

    def _finish(self, state: JobState) -> None:
        summary = self.summary(state)
        # The summary goes into the record too: `boltring runs`, the history screen and `status`
        # with nothing running read a finished job from there, remote nodes' files unread.
        wire = summary.to_dict()
        self._record.update(
            state=state,
            reason=self._reason,
            stopped_by=self._stopped_by,
            blamed=wire["blamed"],
            summary=wire,
        )
        try:
            if self._record.get("job_id") and not self._ended_by_owner():
                record.write(self._record)
        except ControllerError as e:  # said once, never swallowed; the summary still arrives
            if str(e) != self._reason:
                self._log(str(e), LogLevel.ERROR)
        self.emit(summary)
        if self._done is not None and not self._done.done():
            self._done.set_result(summary)

    def _ended_by_owner(self) -> bool:
        """A re-attached controller whose job its owner already wrote as ended: the owner's
        record stands (this one's copy, read earlier, would undo what the owner wrote since)."""
        if self._owner:
            return False
        on_disk = record.read(str(self._record["job_id"]))
        return on_disk is not None and not record.is_active(on_disk)

    def summary(self, status: JobState | None = None) -> JobSummary:
        status = status or self.state
        # totals over time, from what the ranks' lines carry (follow.Totals), never a mean of rates
        ranks = {r: follow.summary_figures(rs, self._started_at, status) for r, rs in self._ranks.items()}
        steps, first_loss, last_loss = self._progress(status)
        states = list(self._ranks.values())
        unread = bool(states) and all(rs.unreached is not None for rs in states)
        return JobSummary(
            job_id=self.job_id or "",
            status=status,
            steps=None if unread else steps,  # no rank read: not known, never a false 0
            total_steps=self.config.job.steps,
            first_loss=first_loss,
            last_loss=last_loss,
            wall_s=follow.wall_s(states, self._started_at, status),
            wall_s_is_lower_bound=follow.wall_is_lower_bound(states, self._started_at, status),
            # a rank not read may have reported: only what was read can say none did
            metrics_reported=not states
            or any(rs.last is not None or rs.steps_seen or rs.unreached is not None for rs in states),
            ranks=ranks,
            reason=self._reason,
            run_dir=launcher.job_dir(self.config.nodes[0], self.job_id or ""),
            stopped_by=self._stopped_by if status == JobState.KILLED else None,
            tokens_per_s=_sum_or_none(r["tokens_per_s"] for r in ranks.values()),
            val_loss=_last_val_loss(self._ranks.get(0)),
            restarts=list(self._policy.history),
            # as the failure's state event carried it: `runs`, export and the history read it
            # from the record afterwards, never out of the reason's words
            blamed=self._blamed if status in (JobState.FAILED, JobState.RESTARTING) else None,
        )

    def _progress(self, status: JobState) -> tuple[int, float | None, float | None]:
        """Steps done, first and last loss: the job's; while it runs and a node cannot be read,
        those of the ranks that could be (follow.progress_of_read)."""
        read = [rs for _, rs in sorted(self._ranks.items()) if rs.unreached is None]
        if status.final or len(read) == len(self._ranks) or not read:
            return max(self._global_step, 0), self._first_loss, self._last_loss
        return follow.progress_of_read(read)

    async def _alive_ranks_of(self, rec: dict) -> list[int]:
        """The ranks of `rec` alive now, every node asked at once (one that does not answer
        costs its connect timeout once, not once per node before it). The nodes that could not
        be asked go to self._unasked with why: their ranks may run, nobody can tell."""
        nodes = {n.name: n for n in self.config.nodes}
        by_node: dict[str, list[dict]] = {}
        for r in rec.get("ranks", []):
            if r.get("node") in nodes:
                by_node.setdefault(r["node"], []).append(r)
        self._unasked = {}

        async def ask(name: str, mine: list[dict]) -> list[int]:
            node = nodes[name]
            try:
                t = await self.connect(node)
                res = await t.run(
                    launcher.spawn_many_argv(node, "status", [r["run_dir"] for r in mine]), timeout=15
                )
            except TransportError as e:
                self._unasked[name] = e
                return []
            info = res.last_json() or {}
            answers = info.get("ranks", [info] if "alive" in info else [])
            return [r["rank"] for r, a in zip(mine, answers, strict=False) if a.get("alive")]

        found = await asyncio.gather(*(ask(name, mine) for name, mine in by_node.items()))
        return [rank for ranks in found for rank in ranks]


def _sum_or_none(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


def _last_val_loss(rs: RankState | None) -> float | None:
    vals = [m.val_loss for m in rs.steps_seen if m.val_loss is not None] if rs else []
    return vals[-1] if vals else None


def _cores(facts: dict) -> int | None:
    raw = (facts.get("hardware") or {}).get("cores")
    try:
        return int(str(raw).split()[-1].split(":")[0]) if raw is not None else None
    except ValueError:
        return None
