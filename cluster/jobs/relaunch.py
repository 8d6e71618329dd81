"""--restarts: relaunching a failed job from its newest verified checkpoint (the policy is in
restart.py)."""

from __future__ import annotations

import asyncio
import time

from boltring.cluster.jobs import record
from boltring.cluster.jobs.events import (
    JobRestarted,
)
from boltring.cluster.states import CheckStatus, JobState, LogLevel, StoppedBy

from .core import RESTART_CHECK_WAIT_S
from .launch import LaunchMixin
from .resume_point import ResumeRefused

STOP_POLL_S = 0.25  # waiting to restart: how often a stop asked in the job record is looked for


class RestartMixin(LaunchMixin):
    async def _restart(self) -> bool:
        """Relaunch every rank from the newest verified checkpoint; False when a check of the
        failing node fails, the job's checkpoints are ones its ranks would refuse, or the user
        stopped the job meanwhile."""
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
            bad = [
                r
                for r in await self.run_checks(bandwidth=False, nodes=failing)
                if r.status == CheckStatus.FAIL
            ]
            if not bad:
                break
            what = f"{bad[0].node} {bad[0].name}: {bad[0].value or bad[0].hint}"
            if self._killing or time.monotonic() > deadline:
                self._reason = f"{cause}; not restarted: {what} still fails"
                return False
            if not said:
                self._log(f"waiting for {what} to pass before restarting", LogLevel.WARN)
                said = True
            await asyncio.sleep(2.0)
        # Every rank is gone, so what the restart continues from is settled now: check it as
        # rank 0 will, before saying "restart …" (a checkpoint the ranks refuse ends the job).
        resume = self.config.job.checkpoint_every > 0
        try:
            resume_from = await self._resume_from() if resume else None
        except ResumeRefused as e:
            self._reason = f"{cause}; not restarted: {e}"
            return False
        self._log(
            f"restart {attempt}/{self._policy.max_restarts} in {self._policy.delay_s:g} s: {cause}", "warn"
        )
        # A kill meanwhile, here or from another terminal (the record), ends the wait: it does
        # not hold `k` or `boltring kill` for the rest of restart_delay.
        deadline = time.monotonic() + self._policy.delay_s
        self._heed_stop_request()
        while not self._killing and time.monotonic() < deadline:
            await asyncio.sleep(min(STOP_POLL_S, max(deadline - time.monotonic(), 0)))
            self._heed_stop_request()
        if self._killing:
            return False
        ev = JobRestarted(
            job_id=self.job_id or "",
            attempt=attempt,
            max_restarts=self._policy.max_restarts,
            cause=cause,
            resume_from=resume_from,
        )
        self._policy.history.append(ev.to_dict())
        self.emit(ev)
        self._reason, self._suspects, self._link_facts = None, [], None
        self._pending_steps = {}
        self._continue_from(resume_from)  # not back to step 0 until the ranks report
        plans = {p.rank: p for p in self.plan(resume=resume, job_id=self.job_id)}
        for rs in self._ranks.values():
            rs.plan = plans[rs.plan.rank]
            rs.reset_for_restart()
        # The record says "restarting", with the restarts that ran, until the new ranks run:
        # `status` or `kill` from another terminal meanwhile finds no rank alive, and would close
        # a "running" job as ended (controller.attach); "restarting", it is this controller's.
        self._set_state(JobState.LAUNCHING)
        self._attempt_started = time.time()  # exit records older than this are the last attempt's
        await self._start_ranks(resume)  # a kill meanwhile: the ranks it started are stopped
        self._record.update(state=JobState.RUNNING, restarts=self._policy.history)
        record.write(self._record)
        # A `boltring kill` that found the record still "restarting" after _start_ranks looked
        # asked in the record, and said "it will not restart": heeded now that the ranks run
        # (once the record says running, a kill attaches and stops them itself).
        if not self._killing:
            self._heed_stop_request()
            if self._killing:
                by = self._stopped_by or StoppedBy.USER_KILL
                await self._kill_ranks([rs for rs in self._ranks.values() if not rs.exited], by)
        self._set_state(JobState.RUNNING)
        return True
