"""Reading a running job's ranks: one poll round over every rank (metrics lines, log lines,
exit records, each node's reads bounded so one slow node holds no one), and what a metrics line
tells: the rank's figures, the job's step and loss, how a --resume went."""

from __future__ import annotations

import asyncio
import re

from boltring.cluster.jobs import follow
from boltring.cluster.jobs.events import LogLine, RankErrorLine, RankMetrics, StepProgress
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.nodes.transport import TransportError
from boltring.cluster.states import LogLevel

from .relaunch import RestartMixin

POLL_WAIT_S = 1.0  # a poll round waits this long for a slow node's reads (see _poll_round)
# A rank's own error lines in its log: the runner's last line when it fails, and its keeper's
# when the rank cannot start or its exit record cannot be written (cluster/agent/spawn.py).
RANK_ERROR_PREFIXES = ("boltring-train: error: ", "boltring: cannot start ", "boltring: cannot write ")


class RankReadsMixin(RestartMixin):
    async def _poll_round(self, ranks: list[RankState], wait_s: float | None = POLL_WAIT_S) -> None:
        """Read what `ranks` wrote, each node's reads on their own. A node whose SSH hangs (a
        reconnect waits for its timeout) held every rank's reads with it: the ranks of healthy
        nodes went unread for that long and were then reported stalled. A round waits at most
        `wait_s` (None: until all are read); a slower read goes on and is waited for in the next
        round. One read of a rank at a time: two would read the same lines twice."""
        polls = self._polls
        tasks = []
        for rs in ranks:
            task = polls.get(rs.plan.rank)
            if task is None or task.done():
                task = polls[rs.plan.rank] = asyncio.ensure_future(self._poll_rank(rs))
            tasks.append(task)
        if not tasks:
            return
        try:
            await asyncio.wait(tasks, timeout=wait_s)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        for task in tasks:  # an error of ours, not a node's: raised, as gather did
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _poll_rank(self, rs: RankState) -> None:
        try:
            metrics, logs, info = await follow.read_new(rs, self.transport(rs.node))
        except TransportError as e:
            self._node_unreadable(rs.node.name, e)  # the transport reconnects; we retry next poll
            return
        self._node_readable(rs.node.name)
        for line in metrics:
            self._on_metrics_line(rs, line)
        for text in logs:
            rs.last_log = text
            src = f"rank {rs.plan.rank}@{rs.node.name}"
            if text.startswith(RANK_ERROR_PREFIXES):  # level error, and not one more line of --run
                self.emit(RankErrorLine(source=src, text=text, node=rs.node.name, rank=rs.plan.rank))
            else:
                self.emit(LogLine(source=src, text=text, node=rs.node.name, rank=rs.plan.rank))
            self._note_resume(rs, text)
        if info is not None:
            self._on_exit(rs, info)

    def _node_unreadable(self, name: str, e: TransportError) -> None:
        """A read of a node's files failed: said once per outage (`status --follow` said it at
        every read of every rank, several times a second, for as long as the node was away)."""
        if name in self._outages:
            return
        self._outages.add(name)
        hint = f"; {e.hint}" if e.hint else ""
        self._log(f"{name}: {e.cause}{hint} (its ranks are read again once it answers)", LogLevel.WARN)

    def _node_readable(self, name: str) -> None:
        if name in self._outages:
            self._outages.discard(name)
            self._log(f"{name} answers again: its ranks are read again", LogLevel.INFO)

    def _on_metrics_line(self, rs: RankState, line: bytes) -> None:
        ev = follow.take_line(rs, line, len(self._ranks))
        if ev is None:
            return
        rs.beat(ev.wall)
        rs.last = ev
        rs.steps_seen.append(ev)
        rs.unsent.append(ev)
        if len(rs.unsent) > PENDING_KEEP:  # a rank far ahead of one that never reports: stay bounded
            rs.unsent.popleft()
        self.emit(ev)
        if rs.plan.rank == 0:
            self._pending_steps[ev.step] = ev.loss
            if len(self._pending_steps) > PENDING_KEEP:  # a rank that never reports: stay bounded
                del self._pending_steps[next(iter(self._pending_steps))]
        # The job's step is the slowest rank's; ranks are read one after another, so rank 0 may
        # already be ahead: emit every reported step up to the new global step with its own loss.
        step = min((r.last.step if r.last else -1) for r in self._ranks.values())
        if step > self._global_step:
            self._global_step = step
            for done in sorted(k for k in self._pending_steps if k <= step):
                loss = self._pending_steps.pop(done)
                self._note_loss(loss)
                # each rank's figures at this step (its line for it, or its latest before it),
                # never its latest line: a burst pairs every step with its own figures
                at = {r: s.figures_at(done) for r, s in self._ranks.items()}
                ranks = {r: _rank_figures(m) for r, m in at.items() if m is not None}
                self.emit(
                    StepProgress(step=done, total=self.config.job.steps, loss=loss, ranks=ranks, wall=ev.wall)
                )
            for s in self._ranks.values():
                s.figures_at(step)  # the lines no later step event needs are let go

    def _note_loss(self, loss: float | None) -> None:
        """The summary's first and last loss come from the steps the job completed (every rank
        passed them), so "steps 4/15 loss a → b" pairs step 4 with step 4's loss, never with the
        loss of a step only rank 0 reached before the job failed."""
        if loss is None:
            return
        if self._first_loss is None:
            self._first_loss = loss
        self._last_loss = loss

    def _note_resume(self, rs: RankState, text: str) -> None:
        """Rank 0 says in its log how a --resume went; the two outcomes that leave nothing to
        show for it (no checkpoint, or one already past --steps) are said by the controller, so
        that `--run` (which leaves rank INFO lines out) and `--json` carry them."""
        if rs.plan.rank != 0:
            return
        if m := _NO_CHECKPOINT.search(text):
            self._log(f"resume: no checkpoint in {m[1]}; started from step 0", LogLevel.WARN)
        elif m := _PAST_STEPS.search(text):
            self._log(
                f"resume: the checkpoint is at step {m[1]} and --steps is {m[2]}: nothing was trained "
                "(raise --steps to go on)",
                LogLevel.WARN,
            )


PENDING_KEEP = 10_000  # rank 0's steps waiting for the slowest rank, at most
# What the built-in runner (cluster/train/loop.py) logs on rank 0 for those two outcomes.
_NO_CHECKPOINT = re.compile(r"resume: no checkpoint in (.+); starting from step 0")
_PAST_STEPS = re.compile(r"nothing to do: the checkpoint is at step (\d+), --steps is (\d+)")


def _rank_figures(m: RankMetrics) -> dict[str, float | None]:
    """A rank's figures in a step event: its throughput, then its own extra fields."""
    return {
        "steps_per_s": m.steps_per_s,
        "samples_per_s": m.samples_per_s,
        "allreduce_gbps": m.allreduce_gbps,
        "tokens_per_s": m.tokens_per_s,
        **m.extra,
    }
