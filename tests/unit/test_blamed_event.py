"""The failure event names the blamed rank in typed fields (rank, node, what happened to it),
from the verdict, on the wire too; the app's rows take it from there, never from the reason's
words. A rank's own error line is a `log` event at level error, not one more line of `--run`."""

from __future__ import annotations

import asyncio
import io
import json
from types import SimpleNamespace

from rich.console import Console

from boltring.cluster.jobs import blame, rank_reads
from boltring.cluster.jobs.blame import RankFacts
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import (
    Blamed,
    Event,
    JobStarted,
    JobStateChanged,
    LogLine,
    RankErrorLine,
    RankExited,
)
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.states import JobState, LogLevel, StoppedBy
from boltring.tui.headless import HeadlessView
from boltring.tui.node_state import RankStatus
from boltring.tui.view_state import ClusterView
from tests.tui import feed

FROZE = "stopped responding (no heartbeat for 9 s), its process is frozen (SIGSTOP)"


def _victim(rank: int, node: str, peer: int, direction: str = "recv") -> RankFacts:
    exit = {"error": "PeerTimeout", "peer_rank": peer, "direction": direction}
    return RankFacts(rank, node, exited=True, returncode=1, exit=exit)


# -- blame: the verdict names the cause rank's node and what happened to it -------------------


def test_a_verdict_that_names_a_rank_says_its_node_and_what_happened_apart_from_the_line():
    frozen = RankFacts(1, "mini2", alive=True, frozen=True, silent_s=9.2)
    v = blame.decide([_victim(0, "mini1", 1), frozen, _victim(2, "mini3", 1)])
    assert (v.cause, v.node, v.what) == (1, "mini2", FROZE), v
    assert v.reason == f"rank 1 on mini2 {FROZE}"

    killed = RankFacts(1, "b", exited=True, returncode=-9, exit={"signal": "SIGKILL"})
    v = blame.decide([_victim(0, "a", 1), killed])
    assert (v.cause, v.node) == (1, "b") and v.what is not None and v.what.startswith("was killed (SIGKILL")

    nan = {
        "error": "NonFiniteLoss",
        "message": "loss became NaN at step 37 on rank 1 (job.allow_nonfinite …)",
    }
    v = blame.decide([RankFacts(1, "mini1", exited=True, returncode=1, exit=nan)])
    assert (v.cause, v.node, v.what) == (1, "mini1", "loss became NaN at step 37 on rank 1"), v


def test_a_ring_link_or_the_whole_ring_names_no_rank():
    link = blame.decide([_victim(0, "h1", 1, "send"), _victim(1, "h2", 0)])
    assert link.cause is None and link.node is None and link.what is None, link
    ring = blame.decide([_victim(0, "h1", 2), _victim(1, "h2", 0), _victim(2, "h3", 1)])
    assert ring.cause is None and ring.node is None and ring.what is None, ring


# -- watch: the state event of a failure carries it --------------------------------------------


def _controller(layout: dict[int, str]) -> tuple[JobController, list[Event]]:
    c = JobController(feed.lab_config())
    nodes = {n.name: n for n in c.config.nodes}
    c._ranks = {
        r: RankState(plan=SimpleNamespace(rank=r, run_dir="/nowhere"), node=nodes[n])  # type: ignore[arg-type]
        for r, n in layout.items()
    }
    seen: list[Event] = []
    c.add_listener(seen.append)
    return c, seen


def test_the_failed_and_restarting_events_carry_the_blamed_rank_and_json_has_it():
    c, seen = _controller({0: "mini1", 1: "mini2", 2: "mini3"})
    frozen = RankFacts(1, "mini2", alive=True, frozen=True, silent_s=9.2)
    asyncio.run(c._decide(blame.decide([_victim(0, "mini1", 1), frozen, _victim(2, "mini3", 1)])))
    c._set_state(JobState.RESTARTING, c._reason)  # as relaunch.py says a restart
    c._end(JobState.FAILED)
    states = [e for e in seen if isinstance(e, JobStateChanged)]
    assert [e.state for e in states] == [JobState.RESTARTING, JobState.FAILED]
    assert all(e.blamed == Blamed(rank=1, node="mini2", cause=FROZE) for e in states), states
    assert (states[-1].reason or "").startswith(f"rank 1 on mini2 {FROZE}; evidence: ")
    wire = json.loads(json.dumps(states[-1].to_dict(), default=str))
    assert wire["event"] == "state" and wire["state"] == "failed"
    assert wire["blamed"] == {"rank": 1, "node": "mini2", "cause": FROZE}, wire
    # other states carry none
    c._set_state(JobState.CHECKING)
    assert seen[-1].blamed is None  # type: ignore[attr-defined]


def test_a_failure_that_names_no_rank_has_blamed_null():
    c, seen = _controller({0: "mini1", 1: "mini2"})
    verdict = blame.decide([_victim(0, "mini1", 1, "send"), _victim(1, "mini2", 0)])

    async def decide() -> None:
        async def no_facts(**_kw):  # the link facts are not read here: the verdict stands
            return []

        c.run_checks = no_facts  # type: ignore[method-assign]
        await c._decide(verdict)

    asyncio.run(decide())
    c._end(JobState.FAILED)
    failed = [e for e in seen if isinstance(e, JobStateChanged)][-1]
    assert failed.state == JobState.FAILED and failed.blamed is None
    assert (failed.reason or "").startswith("ring link mini1→mini2 is down")
    assert json.loads(json.dumps(failed.to_dict(), default=str))["blamed"] is None


def test_link_facts_that_name_the_link_blame_no_rank(monkeypatch):
    """Both neighbours lost rank 1: without link facts its row is blamed (the line names it);
    once mini2's link facts say the link is down, the link is the cause, not a rank."""
    from boltring.cluster.jobs.events import CheckResult
    from boltring.cluster.states import CheckStatus

    facts = [_victim(0, "mini1", 1), _victim(1, "mini2", 0), _victim(2, "mini3", 1)]
    hub = blame.decide(facts)
    assert hub.cause == 1 and hub.node == "mini2" and hub.suspect_nodes == ["mini2"], hub

    c, seen = _controller({0: "mini1", 1: "mini2", 2: "mini3"})

    async def decide() -> None:
        async def link_down(**_kw):
            c.emit(CheckResult("mini2", "ring_iface", CheckStatus.FAIL, value="bridge0 is down"))
            return []

        c.run_checks = link_down  # type: ignore[method-assign]
        await c._decide(hub)

    asyncio.run(decide())
    c._end(JobState.FAILED)
    failed = [e for e in seen if isinstance(e, JobStateChanged)][-1]
    assert (failed.reason or "").startswith("ring link of mini2 is down: mini2 ring_iface: bridge0 is down")
    assert failed.blamed is None


# -- the app: rows from the event's field, not from the words -----------------------------------


def _stopped_by_boltring(v: ClusterView, *ranks: tuple[int, str]) -> None:
    for rank, node in ranks:
        v.apply(RankExited(rank, node, -15, reason="was stopped by boltring", stopped_by=StoppedBy.BOLTRING))


def _view() -> ClusterView:
    v = ClusterView(feed.lab_config())
    v.apply(JobStarted(feed.JOB_ID, None, 4, 200, ["mini1", "mini2", "mini3"], "example mlp"))
    v.apply(JobStateChanged(JobState.RUNNING, job_id=feed.JOB_ID))
    return v


def test_the_blamed_row_comes_from_the_event_not_from_the_reason():
    v = _view()
    _stopped_by_boltring(v, (0, "mini1"), (2, "mini2"))
    # a reason whose words name no rank first: only the field says which
    reason = f"job failed because rank 2 on mini2 {FROZE}"
    v.apply(JobStateChanged(JobState.FAILED, reason=reason, blamed=Blamed(2, "mini2", FROZE)))
    assert (v.ranks[2].status, v.ranks[2].reason) == (RankStatus.FAILED, FROZE)
    assert (v.ranks[0].status, v.ranks[0].reason) == (RankStatus.KILLED, "by boltring, because of rank 2")


def test_no_blamed_field_no_rank_blamed_whatever_the_reason_says():
    v = _view()
    _stopped_by_boltring(v, (0, "mini1"), (2, "mini2"))
    reason = f"rank 2 on mini2 {FROZE}; evidence: rank 1 on mini1 timed out receiving from rank 2"
    v.apply(JobStateChanged(JobState.FAILED, reason=reason))
    assert v.ranks[2].status == RankStatus.KILLED, v.ranks[2]
    assert v.ranks[0].reason == f"by boltring: rank 2 on mini2 {FROZE}", v.ranks[0]


def test_a_rank_whose_end_is_read_after_the_verdict_is_blamed_too():
    v = _view()
    v.apply(
        JobStateChanged(JobState.FAILED, reason=f"rank 2 on mini2 {FROZE}", blamed=Blamed(2, "mini2", FROZE))
    )
    _stopped_by_boltring(v, (2, "mini2"), (3, "mini3"))
    assert (v.ranks[2].status, v.ranks[2].reason) == (RankStatus.FAILED, FROZE)
    assert v.ranks[3].reason == "by boltring, because of rank 2"
    # the same final state again after checks (no reason): the blame stays
    v.apply(JobStateChanged(JobState.CHECKING))
    v.apply(JobStateChanged(JobState.FAILED))
    assert v.blamed == Blamed(2, "mini2", FROZE)


def test_a_restart_blames_the_rank_its_event_names():
    """The reason names no rank in its words (relaunch.py says "the job failed" when it has
    none): the event's field does."""
    v = _view()
    _stopped_by_boltring(v, (0, "mini1"), (2, "mini2"))
    v.apply(
        JobStateChanged(JobState.RESTARTING, reason="the job failed", blamed=Blamed(2, "mini2", "was killed"))
    )
    assert (v.ranks[2].status, v.ranks[2].reason) == (RankStatus.FAILED, "was killed")
    assert v.ranks[0].reason == "by boltring, because of rank 2"


# -- a rank's own error line ----------------------------------------------------------------


def test_a_rank_s_error_line_is_a_log_event_at_level_error(monkeypatch):
    c, seen = _controller({1: "mini2"})
    lines = [
        "Traceback (most recent call last):",
        "boltring-train: error: ValueError: bad thing",
        "step 3 done",
    ]

    async def read_new(rs, transport):
        return [], lines, None

    monkeypatch.setattr(rank_reads.follow, "read_new", read_new)
    asyncio.run(c._poll_rank(c._ranks[1]))
    logs = [e for e in seen if isinstance(e, LogLine | RankErrorLine)]
    assert [(e.text, str(e.level)) for e in logs] == [
        (lines[0], "info"),
        (lines[1], "error"),
        (lines[2], "info"),
    ]
    wire = [json.loads(json.dumps(e.to_dict(), default=str)) for e in logs]
    assert wire[1] == {
        "source": "rank 1@mini2",
        "text": lines[1],
        "level": "error",
        "node": "mini2",
        "rank": 1,
        "t": wire[1]["t"],
        "event": "log",
    }
    assert set(wire[0]) == set(wire[1])  # the same wire form as the rank's other lines


def test_headless_json_has_it_at_level_error_and_the_human_output_leaves_it_out(capsys):
    line = RankErrorLine("rank 1@mini2", "boltring-train: error: ValueError: bad thing", node="mini2", rank=1)
    HeadlessView(feed.idle(), json_out=True)(line)
    out = json.loads(capsys.readouterr().out)
    assert (out["event"], out["level"], out["text"]) == ("log", "error", line.text), out

    text = io.StringIO()
    human = HeadlessView(feed.idle(), json_out=False, console=Console(file=text, width=200))
    human(line)
    human(LogLine("controller", "rank 1 on mini2 failed: ValueError: bad thing", level=LogLevel.ERROR))
    assert text.getvalue().splitlines() == ["controller: rank 1 on mini2 failed: ValueError: bad thing"]


def test_the_app_log_shows_it_as_an_error():
    v = _view()
    v.apply(
        RankErrorLine("rank 1@mini2", "boltring-train: error: ValueError: bad thing", node="mini2", rank=1)
    )
    entry = v.log[-1]
    assert (entry.source, entry.text, entry.level, entry.node) == (
        "rank 1@mini2",
        "boltring-train: error: ValueError: bad thing",
        "error",
        "mini2",
    )
    assert v.nodes["mini2"].log[-1] is entry
