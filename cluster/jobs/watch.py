"""Following a running job: each rank's metrics, log, exit record and heartbeat; stalls; and
the one reason a failed job is given (blame.py decides, the link facts complete it)."""

from __future__ import annotations

import asyncio
import time

from boltring.cluster.jobs import blame, record
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.events import (
    Blamed,
    CheckResult,
    RanksNotStopped,
    RankStalled,
)
from boltring.cluster.states import CheckStatus, JobState, LogLevel, StoppedBy

from .core import (
    FAILURE_GRACE_S,
    LINK_CHECKS,
    LINK_FACTS_TIMEOUT_S,
    STATUS_EVERY_S,
    USER_STOPS,
)
from .rank_reads import RankReadsMixin

# After every rank was told to stop (a kill, a failure's verdict), how long ranks whose end is
# not read are waited for: a kill's grace and SIGKILL take ~10 s; a node gone for good, forever.
UNCONFIRMED_WAIT_S = 30.0
OWNER_POLL_S = 0.25  # a re-attached controller waiting for the owner's restart: how often it looks


class WatchMixin(RankReadsMixin):
    async def _follow(self) -> None:
        state = JobState.FAILED
        try:
            while True:
                state = await self._follow_attempt()
                if self._gave_up:  # ranks that may still run: never restarted beside them
                    break
                if self._policy.allows(state, self._stopped_by) and not self._may_restart():
                    # Its owner restarts it (both restarting, one found the other's ranks
                    # running and the job failed): follow the owner's relaunch, or its end.
                    ended = await self._follow_owners_restart()
                    if ended is None:
                        continue
                    state = ended
                elif self._policy.allows(state, self._stopped_by) and await self._restart():
                    continue
                if self._killing and state == JobState.FAILED:
                    state = JobState.KILLED  # stopped by a user while it waited to restart
                break
        except asyncio.CancelledError:
            for poll in self._polls.values():  # reads still in flight (a slow node's) stop too
                poll.cancel()
            raise
        except Exception as e:  # never die silently: the job ends, with the reason
            self._reason = f"controller lost track of the job: {type(e).__name__}: {e}"
            self._blamed = None
            self._log(self._reason, LogLevel.ERROR)
            await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited], StoppedBy.BOLTRING)
            state = JobState.FAILED
        finally:
            if self._done is not None and not self._done.done() and not self.state.final:
                if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    self._end(state)

    def _may_restart(self) -> bool:
        """The rule that keeps a job from being restarted twice: only its owner restarts it (the
        controller that launched it), and a re-attached one (the app, `status --follow`) only
        once it took the job over, under the record's lock, from an owner known to be gone."""
        if not self._owner and self.job_id and record.claim_restarts(self.job_id):
            self._owner = True
            self._log(f"the controller that launched job {self.job_id} is gone: restarting it from here")
        return self._owner

    async def _follow_owners_restart(self) -> JobState | None:
        """Not the owner: wait, as the owner restarts the job, for its relaunched ranks to run
        (None: they are followed from here on, as the owner follows them), or for how the owner
        ended the job instead (its state). Should the owner be gone meanwhile, take it over."""
        self._set_state(JobState.RESTARTING, self._reason)
        seen, asked = len(self._policy.history), False
        while True:
            rec = record.read(self.job_id or "") or {}
            raw = rec.get("restarts")
            restarts: list[dict] = raw if isinstance(raw, list) else []
            if rec.get("state") in (JobState.RUNNING, JobState.STALLED) and len(restarts) > seen:
                self._policy.history = list(restarts)
                self._reason, self._suspects, self._link_facts, self._pending_steps = None, [], None, {}
                self._continue_from(restarts[-1].get("resume_from"))
                for rs in self._ranks.values():
                    rs.reset_for_restart()
                of = f"{len(restarts)}/{self._policy.max_restarts}"
                self._log(f"restarted by the controller that launched it (restart {of})")
                self._set_state(JobState.RUNNING)
                return None
            if rec and not record.is_active(rec):
                self._reason = rec.get("reason") or self._reason
                by = rec.get("stopped_by")
                self._stopped_by = StoppedBy(by) if by in set(StoppedBy) else self._stopped_by
                try:
                    return JobState(rec["state"])
                except ValueError:  # a state this boltring does not know: not a success
                    return JobState.FAILED
            if not rec:
                return JobState.FAILED  # the record is gone: nothing to follow
            if self._killing and not asked:  # stopped here (the app's `k`): the owner must not restart
                asked = record.ask_stop(self.job_id or "", str(self._stopped_by or StoppedBy.APP))
            if self._may_restart():
                return None if await self._restart() else JobState.FAILED
            await asyncio.sleep(OWNER_POLL_S)

    def _heed_stop_while_following(self) -> bool:
        """`boltring kill` asked in the record while the job launched (no rank to stop yet,
        JobController.request_stop): stop its ranks now. True when this is news."""
        if self._killing:
            return False
        self._heed_stop_request()
        return self._killing

    async def _stop_unexited(self) -> None:
        by = self._stopped_by or StoppedBy.USER_KILL
        await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited], by)

    def _end(self, state: JobState) -> None:
        self._say_held_exits(final=True)
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
        self._blamed = None  # a restart's attempt: the last one's verdict is not this one's
        last_status = time.monotonic()
        failed_at: float | None = None
        stopping_since: float | None = None
        if self._heed_stop_while_following() or self._killing:  # (stopped while it launched)
            await self._stop_unexited()
        while True:
            await self._poll_round([rs for rs in self._ranks.values() if not rs.exited or rs.partial_metrics])
            stalled = [rs for rs in self._ranks.values() if rs.stalled_for() is not None]
            if time.monotonic() - last_status > STATUS_EVERY_S or (stalled and not self._killing):
                last_status = time.monotonic()
                await self._check_alive([rs for rs in self._ranks.values() if not rs.exited])
                if self._heed_stop_while_following():
                    await self._stop_unexited()
            self._report_stalls()
            self._notice_stop_by_you()
            self._say_held_exits()
            if self._killing or self._reason is not None:  # every rank was told to stop
                stopping_since = stopping_since or time.monotonic()
                if time.monotonic() - stopping_since > UNCONFIRMED_WAIT_S:
                    return self._give_up_unconfirmed()
            if all(rs.exited for rs in self._ranks.values()):
                await self._poll_round(list(self._ranks.values()), wait_s=None)
                self._notice_stop_by_you()
                self._say_held_exits(final=True)
                break
            bad = [rs for rs in self._ranks.values() if rs.exited and rs.returncode != 0]
            if bad and not self._killing and self._reason is None:
                failed_at = failed_at or time.monotonic()
                if self._link_facts is None and any(rs.facts().blames is not None for rs in bad):
                    # A ring error: read every node's link facts now, in the background, so a
                    # verdict that needs them does not wait for SSH round trips after the fact.
                    names = sorted({rs.node.name for rs in self._ranks.values()})
                    self._fresh_checks = []
                    self._link_facts = asyncio.ensure_future(self.run_checks(bandwidth=False, nodes=names))
                await self._check_alive([rs for rs in self._ranks.values() if not rs.exited])
                if self._notice_stop_by_you():  # the ranks it found ended were stopped by you
                    self._say_held_exits()
                    continue
                verdict = blame.decide([rs.facts() for rs in self._ranks.values()])
                if verdict.certain or time.monotonic() - failed_at > FAILURE_GRACE_S:
                    await self._decide(verdict)
                    self._say_held_exits()
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

    def _give_up_unconfirmed(self) -> JobState:
        """The ranks were told to stop UNCONFIRMED_WAIT_S ago and some ends were never read (their
        node does not answer, and may never: it was unplugged). The job ends failed, naming
        them: they may still run, and `boltring kill` stops them once their node answers. It
        waited for them forever (and so did kill()), and no restart is made beside them."""
        self._gave_up = True
        left: dict[str, list[int]] = {}
        for r, rs in sorted(self._ranks.items()):
            if not rs.exited:
                left.setdefault(rs.node.name, []).append(r)
                if (poll := self._polls.get(r)) is not None:
                    poll.cancel()  # a read hanging on that node's SSH: nobody waits for it now
        cause = f"their end was not confirmed within {UNCONFIRMED_WAIT_S:g} s of the stop"
        for node, ranks in left.items():
            if node not in self._said_not_stopped:  # (_kill_ranks may have said it already)
                self.emit(RanksNotStopped(node=node, ranks=ranks, cause=cause))
        where = "; ".join(f"rank(s) {', '.join(map(str, r))} on {n}" for n, r in left.items())
        # The job record ends here, so `boltring kill` will not find these ranks later: name the
        # command that stops them on their node once it answers, exactly as kill would run it.
        stops = "; ".join(self._stop_command(n, r) for n, r in left.items())
        self._reason = (
            f"{self._reason or 'stopped'}; {where}: {cause}, and may still run "
            f"(once the node answers, this stops them: {stops})"
        )
        self._log(self._reason, LogLevel.ERROR)
        return JobState.FAILED

    def _stop_command(self, node_name: str, ranks: list[int]) -> str:
        """The shell line that stops these ranks on their node (spawn kill over SSH)."""
        node = self._ranks[ranks[0]].node
        argv = launcher.spawn_many_argv(node, "kill", [self._ranks[r].plan.run_dir for r in ranks])
        return self.transport(node).command_line(argv)

    def _notice_stop_by_you(self) -> bool:
        """A rank's record says you stopped it (`boltring kill` from another terminal): the job
        is being stopped by you, whatever other ranks' records say. True when this is news."""
        if self._killing:
            return False
        user = next(
            (
                rs.exit_info["stopped_by"]
                for rs in self._ranks.values()
                if rs.exited and rs.exit_info.get("stopped_by") in USER_STOPS
            ),
            None,
        )
        if user:
            self._killing, self._stopped_by = True, StoppedBy(user)
            # the ranks now end one by one (each within its grace period): say why at once
            self._log(f"stopped by you ({user}) from another terminal: the ranks are ending", LogLevel.WARN)
        return bool(user)

    async def _decide(self, verdict: blame.Verdict) -> None:
        """The failure's one reason (said once), the rank it blames when it names one, and the
        node(s) a restart re-checks."""
        told = await self._with_link_facts(verdict)
        self._reason = told.text()
        self._blamed = None
        if told.cause is not None and told.node is not None and told.what is not None:
            self._blamed = Blamed(rank=told.cause, node=told.node, cause=told.what)
        cause = self._ranks.get(verdict.cause) if verdict.cause is not None else None
        self._suspects = verdict.suspect_nodes or ([cause.node.name] if cause else [])
        self._log(self._reason, LogLevel.ERROR)

    async def _with_link_facts(self, verdict: blame.Verdict) -> blame.Verdict:
        """The verdict as told; when it points at a node's ring link, that node's link checks
        (interface, address, route) say what is wrong, and the link is the cause, not a rank:
        "ring link of h2 is down: h2 ring_iface: tb0 is down (no carrier)"."""
        if not verdict.suspect_nodes:
            return verdict
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
                and r.status == CheckStatus.FAIL
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
            return verdict
        f = facts[0]
        head = f"ring link of {f.node} is down: {f.node} {f.name}: {f.value}"
        return blame.Verdict(None, head, verdict.evidence, suspect_nodes=verdict.suspect_nodes)

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
