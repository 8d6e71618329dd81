"""Following one rank: its metrics.jsonl and rank.log read by byte offset, its exit record, and
its heartbeat (when its metrics lines arrive and how often they usually do).

Nothing here decides the job's fate; the controller asks `RankState.stalled_for()` and hands
the facts to blame.py. What the ranks' lines and records add up to in the job's summary is
here too: each rank's totals (Totals), the job's wall time by the ranks' own ends, and its steps
when a node could not be read.

Two clocks: the controller's, and each node's (a Mac on Thunderbolt only has no network time
and drifts seconds to minutes). A time a node wrote (a metrics line's "wall", exit.json's
"ended") is put on the controller's clock (RankState.here) before it meets one of the
controller's (the job's start), with the node's offset measured when its ranks were started
(launch.py). Durations on one rank's own clock (its rates, its heartbeat) need no conversion;
the controller's own waits use its monotonic clock.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from boltring.cluster.config.schema import Node
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.blame import RankFacts
from boltring.cluster.jobs.events import RankMetrics
from boltring.cluster.nodes.transport import Transport, TransportError, last_json_object
from boltring.cluster.states import JobState

READ_LIMIT = 1 << 20  # what one read of a file returns at most (the transports' default)
STALL_FACTOR = 3.0  # silent for this many usual heartbeat intervals: stalled
STALL_FLOOR_S = 3.0  # never call a rank stalled sooner than this (polling, GC pauses, checkpoints)


@dataclass
class RankState:
    plan: launcher.PlannedRank
    node: Node
    metrics_offset: int = 0
    log_offset: int = 0
    partial_metrics: bytes = b""
    partial_log: bytes = b""
    last: RankMetrics | None = None
    steps_seen: list[RankMetrics] = field(default_factory=list)
    # Its lines the job's step events have not gone past yet (and the latest one they have):
    # each step event carries, per rank, that rank's figures at that step (see figures_at).
    unsent: deque[RankMetrics] = field(default_factory=deque)
    exited: bool = False
    returncode: int | None = None
    exit_info: dict[str, Any] = field(default_factory=dict)
    exit_reason: str | None = None
    last_log: str = ""
    beats: list[float] = field(default_factory=list)  # monotonic arrival time of metrics lines
    walls: list[float] = field(default_factory=list)  # the rank's own clock on those lines
    alive: bool | None = None
    frozen: bool = False
    stalled: bool = False  # a RankStalled was emitted and no heartbeat came since
    held_since: float | None = None  # it lost a ring peer: its end waits to be said (core._on_exit)
    # What `status` waits for before it sums a running job up (controller.read_once): its
    # metrics read to their end once, or why its node could not be read ("cause; what to do").
    # A rank whose node cannot be read is counted out of the job's steps, not counted as at 0.
    read_to_end: bool = False
    unreached: str | None = None
    totals: Totals = field(default_factory=lambda: Totals())
    # Its node's wall clock minus the controller's (facts.ClockOffset.applied_s), as measured
    # when its ranks were started; kept in the job record ("clocks") for a re-attach. 0: the
    # same clock as far as the measurement can tell, or never measured (an older node).
    clock_offset: float = 0.0

    def here(self, node_time: float) -> float:
        """A time its node wrote (exit.json, a metrics line), on the controller's clock."""
        return float(node_time) - self.clock_offset

    def beat(self, wall: float | None) -> None:
        self.beats.append(time.monotonic())
        del self.beats[:-20]
        if wall is not None:
            self.walls.append(float(wall))
            del self.walls[:-20]
        self.stalled = False

    def usual_interval(self) -> float | None:
        """Median time between this rank's recent heartbeats, by the rank's own clock (lines
        read in one poll arrive together); the first, with compilation, left out. None until
        there are two lines after the first."""
        times = self.walls if len(self.walls) >= 3 else self.beats
        gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
        return statistics.median(gaps) if gaps else None

    def silent_s(self) -> float | None:
        return time.monotonic() - self.beats[-1] if self.beats else None

    def stall_after(self) -> float | None:
        usual = self.usual_interval()
        return None if usual is None else max(STALL_FACTOR * usual, STALL_FLOOR_S)

    def stalled_for(self) -> float | None:
        """Seconds of silence when past the stall threshold, else None."""
        limit, silent = self.stall_after(), self.silent_s()
        if self.exited or limit is None or silent is None or silent < limit:
            return None
        return silent

    def reset_for_restart(self) -> None:
        self.exited, self.returncode, self.exit_info, self.exit_reason = False, None, {}, None
        self.totals.new_attempt()
        self.last, self.beats, self.walls = None, [], []
        self.unsent.clear()
        self.alive, self.frozen, self.stalled, self.held_since = None, False, False, None

    def figures_at(self, step: int) -> RankMetrics | None:
        """This rank's line for `step`, or its latest line before it; None when it has none.
        Steps are asked for in order: the lines before that one are dropped (bounded memory)."""
        while len(self.unsent) > 1 and self.unsent[1].step <= step:
            self.unsent.popleft()
        first = self.unsent[0] if self.unsent else None
        return first if first is not None and first.step <= step else None

    def facts(self) -> RankFacts:
        return RankFacts(
            rank=self.plan.rank,
            node=self.node.name,
            exited=self.exited,
            returncode=self.returncode,
            exit=self.exit_info,
            alive=self.alive,
            frozen=self.frozen,
            silent_s=self.silent_s(),
            stopped_by=self.exit_info.get("stopped_by"),
        )


def lines(rs: RankState, attr: str, data: bytes) -> list[bytes]:
    """Complete lines only; a half-written last line waits for the next read."""
    buf = getattr(rs, attr) + data
    *complete, rest = buf.split(b"\n")
    setattr(rs, attr, rest)
    return complete


# What report() always writes; any other numeric field is the script's own (report(**extra)).
STANDARD_FIELDS = frozenset(
    {
        "kind", "rank", "wall", "step", "loss", "samples", "steps_per_s", "samples_per_s",
        "allreduce_s", "allreduce_gbps", "bytes_sent", "bytes_recv", "mem_mb", "tokens_per_s",
    }
)  # fmt: skip


def take_line(rs: RankState, line: bytes, world_size: int) -> RankMetrics | None:
    """One metrics line of `rs`: its event for a step line (counted in the rank's totals), None
    otherwise. A "start" line (the rank's Group opening: a launch, a restart) begins a new
    attempt, whose counters (bytes, time) start afresh."""
    rec = last_json_object(line.decode(errors="replace"))
    if not rec:
        return None
    if rec.get("kind") == "start":
        rs.totals.new_attempt()
        return None
    if rec.get("kind") != "step":
        return None
    ev = metrics_event(rs, rec, world_size)
    rs.totals.add(ev)
    return ev


def metrics_event(rs: RankState, rec: dict[str, Any], world_size: int) -> RankMetrics:
    return RankMetrics(
        rank=rs.plan.rank,
        node=rs.node.name,
        step=int(rec.get("step", 0)),
        loss=rec.get("loss"),
        steps_per_s=rec.get("steps_per_s"),
        samples_per_s=_per_rank(rec.get("samples_per_s"), world_size),
        allreduce_gbps=rec.get("allreduce_gbps"),
        allreduce_s=rec.get("allreduce_s"),
        bytes_sent=rec.get("bytes_sent"),
        bytes_recv=rec.get("bytes_recv"),
        mem_mb=rec.get("mem_mb"),
        wall=_number_or_none(rec.get("wall"), rs.here),  # on the controller's clock, like every event's
        tokens_per_s=rec.get("tokens_per_s"),
        val_loss=rec.get("val_loss"),
        peak_mem_mb=rec.get("peak_mem_mb"),
        extra={k: v for k, v in rec.items() if k not in STANDARD_FIELDS and _number(v)},
    )


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _number_or_none(v: object, convert: Callable[[float], float]) -> float | None:
    return convert(float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else None


def use_clocks(ranks: Iterable[RankState], offsets: Mapping[str, float]) -> None:
    """Give each rank its node's clock offset (record.clock_offsets), before its files are read."""
    for rs in ranks:
        rs.clock_offset = offsets.get(rs.node.name, 0.0)


async def read_new(rs: RankState, t: Transport) -> tuple[list[bytes], list[str], dict | None]:
    """New complete metrics lines, new log lines, and the exit record if it appeared. A node that
    cannot be read marks the rank unreached (why) until a read of it succeeds again. A read cut
    off half way is undone: the lines it took would be lost, and the next read takes them again."""
    kept = rs.metrics_offset, rs.log_offset, rs.partial_metrics, rs.partial_log
    try:
        got = await _read_new(rs, t)
    except TransportError as e:
        rs.metrics_offset, rs.log_offset, rs.partial_metrics, rs.partial_log = kept
        rs.unreached = unreached_text(e)
        raise
    rs.unreached = None
    return got


def unreached_text(e: TransportError) -> str:
    """Why a node could not be read, and what to do: "no SSH answer …; is the node on …"."""
    return f"{e.cause}; {e.hint}" if e.hint else e.cause


async def _read_new(rs: RankState, t: Transport) -> tuple[list[bytes], list[str], dict | None]:
    metrics: list[bytes] = []
    logs: list[str] = []
    data = await t.read_from(f"{rs.plan.run_dir}/metrics.jsonl", rs.metrics_offset)
    if data:
        rs.metrics_offset += len(data)
        metrics = lines(rs, "partial_metrics", data)
    at_end = len(data) < READ_LIMIT  # less than asked for: the file's end, for now
    data = await t.read_from(f"{rs.plan.run_dir}/rank.log", rs.log_offset)
    if data:
        rs.log_offset += len(data)
        for line in lines(rs, "partial_log", data):
            text = line.decode(errors="replace").rstrip()
            if text:
                logs.append(text)
    info = None
    if not rs.exited:
        raw = await t.read_from(f"{rs.plan.run_dir}/exit.json", 0)
        info = last_json_object(raw.decode(errors="replace")) if raw else None
    rs.read_to_end = rs.read_to_end or at_end
    return metrics, logs, info


def summary_figures(rs: RankState, started: float, status: JobState) -> dict[str, Any]:
    """One rank's part of the job's summary: its node and rates (Totals), why its node could
    not be read (then it is not counted in the job's steps), and once the job ended, when the
    rank ended after the job's start by its own record, put on the controller's clock (None:
    its end was never learned)."""
    # where the rank's own output is (its prints, its traceback): `--run` shows no more of it
    figures: dict[str, Any] = {"node": rs.node.name, **rs.totals.rates()}
    figures["log"] = f"{rs.plan.run_dir}/rank.log"
    if rs.unreached is not None:
        figures["unread"] = rs.unreached
    if status.final and started:
        ended = rs.exit_info.get("ended")
        figures["ended_s"] = None if ended is None else max(0.0, rs.here(ended) - started)
    return figures


def wall_s(ranks: list[RankState], started: float, status: JobState) -> float:
    """A running job's age. An ended job's time from its start to its last rank's end, as the
    ranks' exit records say, not until the controller read them: a node it could not reach for
    a while made a job whose ranks ran 14 s read 47 s. A rank whose end was never learned (no
    record) leaves the latest moment the records prove, a lower bound, and its "ended_s" None
    says so. The start is the controller's clock; the ends, read on the nodes' clocks, are put
    on it (RankState.here: a node 60 s behind made a 20 s job read 0 s), off by at most what
    the offset's measurement allows (facts.clock_offset: a fraction of a second). 0 for a job
    whose ranks never all started."""
    if not started or not status.final:
        return time.time() - started if started else 0.0
    ends = [rs.here(e) for rs in ranks if (e := rs.exit_info.get("ended")) is not None]
    known = list(ends)
    if len(ends) < len(ranks):  # its last metrics lines at least: the rank ran until then
        known += [rs.last.wall for rs in ranks if rs.last and rs.last.wall is not None]  # (converted)
    return max(0.0, max(known) - started) if known else 0.0


def wall_is_lower_bound(ranks: list[RankState], started: float, status: JobState) -> bool:
    """True when wall_s is only what the records prove: the job ended and a rank's end was
    never learned (the summary's JSON says so, the views write "≥")."""
    return bool(started) and status.final and any(rs.exit_info.get("ended") is None for rs in ranks)


def progress_of_read(read: list[RankState]) -> tuple[int, float | None, float | None]:
    """Steps done, first and last loss of a running job, from the ranks that could be read (in
    rank order) when others could not: unread ranks held the job's step at 0, "steps 0/… loss –
    → –" for a job that trains. The slowest of these ranks' step, and the losses the first of
    them (rank 0 when it was read) reported up to it."""
    step = max(min(rs.last.step if rs.last else 0 for rs in read), 0)
    losses = [m.loss for m in read[0].steps_seen if m.step <= step and m.loss is not None]
    return step, (losses[0] if losses else None), (losses[-1] if losses else None)


def _per_rank(samples_per_s, world_size):
    # Workers report the global batch as samples; a rank processes 1/N of it.
    return None if samples_per_s is None else samples_per_s / max(world_size, 1)


@dataclass
class Totals:
    """What one rank did, summed from its metrics lines: steps, samples, tokens, ring bytes sent
    and all-reduce seconds, over the training time those lines cover. The summary's rates are
    these totals over that time: a mean of each line's own rates would weigh a line that covers
    1 ms like one that covers 1 s (the audit saw 0.09 GB/s reported for a real 0.015).

    Training time, not the wall time between the lines: report() leaves a validation pass out of
    each line's rates (exclude_s), and so does the summary (counting it made an lm job with
    --steps-per-eval 5 read 309 tokens/s per rank for a real 2870).

    Each attempt (the launch, each restart) is a span of its own: its first line, which covers
    startup and compilation, only opens it, and its byte counters start from zero again."""

    steps: int = 0
    seconds: float = 0.0  # training time of the lines after the first of every attempt
    samples: float | None = None  # this rank's share of the global batches
    tokens: float | None = None
    bytes_sent: int | None = None
    allreduce_s: float | None = None
    first: RankMetrics | None = None  # the very first line: the figures when no span exists yet
    _prev: RankMetrics | None = None  # the latest line of the current attempt

    def new_attempt(self) -> None:
        self._prev = None

    def add(self, ev: RankMetrics) -> None:
        prev, self._prev = self._prev, ev
        self.first = self.first or ev
        if prev is None or ev.step < prev.step:
            return  # opens an attempt (a step that went back is a resumed run we saw no start of)
        steps = ev.step - prev.step
        # report() computes each rate over the training time since its previous report: steps ÷
        # steps/s gives that time back, and rate × time the count each rate was computed from.
        interval = steps / ev.steps_per_s if ev.steps_per_s else None
        if interval is None:  # a line without steps/s: only the wall time between lines is known
            if ev.wall is None or prev.wall is None:
                return
            interval = max(0.0, ev.wall - prev.wall)
        self.steps += steps
        self.seconds += interval
        self.samples = _plus(self.samples, _times(ev.samples_per_s, interval))
        self.tokens = _plus(self.tokens, _times(ev.tokens_per_s, interval))
        if ev.bytes_sent is not None and prev.bytes_sent is not None:  # counters of the process
            self.bytes_sent = _plus(self.bytes_sent, max(0, ev.bytes_sent - prev.bytes_sent))
        self.allreduce_s = _plus(self.allreduce_s, ev.allreduce_s)

    def rates(self) -> dict[str, float | None]:
        """steps/s, samples/s, tokens/s and all-reduce GB/s (effective: bytes sent over the
        seconds inside collectives, see Group.report): totals over time. With no span yet (one
        line per attempt), the first line's own figures, the only ones there are: since the ring
        connected, setup included (Group.report)."""
        if self.seconds <= 0:
            names = ("steps_per_s", "samples_per_s", "tokens_per_s", "allreduce_gbps")
            return {name: getattr(self.first, name, None) for name in names}
        ar_s, sent = self.allreduce_s, self.bytes_sent
        return {
            "steps_per_s": self.steps / self.seconds,
            "samples_per_s": None if self.samples is None else self.samples / self.seconds,
            "tokens_per_s": None if self.tokens is None else self.tokens / self.seconds,
            "allreduce_gbps": sent / ar_s / 1e9 if sent is not None and ar_s else None,
        }


def _plus(total, value):
    """A sum that stays None until a value arrives (a figure no line carried is unknown, not 0)."""
    if value is None:
        return total
    return value if total is None else total + value


def _times(rate: float | None, seconds: float) -> float | None:
    return None if rate is None else rate * seconds
