"""Blame: a frozen rank is named (not its neighbours), within ring.timeout + 5 s; a stall is
reported before the timeout; each neighbour's timeout is evidence, once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

from boltring.cluster.jobs.blame import RankFacts, decide, evidence_of
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import JobStateChanged, RankMetrics, RankStalled
from boltring.cluster.states import JobState

from .helpers import config, rank_pid, run_job, write_config

RING_TIMEOUT_S = 8.0


def test_decide_follows_the_blame_chain_to_the_frozen_rank():
    facts = [
        RankFacts(
            0,
            "local",
            exited=True,
            returncode=1,
            exit={"error": "PeerTimeout", "peer_rank": 2, "direction": "recv"},
        ),
        RankFacts(1, "local", alive=True, frozen=True, silent_s=12.4),
        RankFacts(
            2,
            "local",
            exited=True,
            returncode=1,
            exit={"error": "PeerTimeout", "peer_rank": 1, "direction": "recv"},
        ),
    ]
    v = decide(facts)
    assert v.cause == 1 and v.certain
    assert v.reason.startswith("rank 1 on local stopped responding (no heartbeat for 12 s)"), v.reason
    assert len(v.evidence) == 2 and all("timed out" in e for e in v.evidence), v.evidence


def test_decide_names_a_sigkilled_rank_over_its_victims():
    facts = [
        RankFacts(
            0,
            "a",
            exited=True,
            returncode=1,
            exit={"error": "PeerClosed", "peer_rank": 1, "direction": "send"},
        ),
        RankFacts(1, "b", exited=True, returncode=-9, exit={"signal": "SIGKILL"}),
        RankFacts(2, "c", exited=True, returncode=1, exit={"error": "PeerClosed", "peer_rank": 1}),
    ]
    v = decide(facts)
    assert v.cause == 1 and "rank 1 on b was killed" in v.reason, v.reason


def test_decide_two_ranks_blaming_each_other_is_a_link():
    facts = [
        RankFacts(
            0,
            "h1",
            exited=True,
            returncode=1,
            exit={"error": "PeerTimeout", "peer_rank": 1, "direction": "send"},
        ),
        RankFacts(
            1,
            "h2",
            exited=True,
            returncode=1,
            exit={"error": "PeerTimeout", "peer_rank": 0, "direction": "recv"},
        ),
    ]
    v = decide(facts)
    assert v.cause is None and "ring link h1→h2 is down" in v.reason, v.reason


def test_evidence_says_which_way_the_data_went():
    """exit.json's direction is the rank's own: "send" is data it sent to the peer, "recv" data
    it waited for from the peer (runner.write_why); without one, only the peer is named."""

    def evidence(**exit) -> str:
        return evidence_of(RankFacts(0, "local", exited=True, returncode=1, exit=exit))

    sent = evidence(error="PeerClosed", peer_rank=1, direction="send")
    assert sent == "rank 0 on local lost the connection sending to rank 1"
    waited = evidence(error="PeerTimeout", peer_rank=2, direction="recv")
    assert waited == "rank 0 on local timed out receiving from rank 2"
    assert evidence(error="PeerClosed", peer_rank=1) == "rank 0 on local lost the connection with rank 1"
    never = evidence(error="ConnectTimeout", peer_rank=1, direction="recv")
    assert never == "rank 0 on local could not set up its ring connection with rank 1"


def test_the_verdict_names_the_blamed_rank_apart_from_its_line():
    """What the failure event's `blamed` is made of: the cause rank, its node, and what happened
    to it without "rank N on NODE"; none when the cause is a link (views never parse the line)."""
    frozen = RankFacts(1, "local", alive=True, silent_s=9.0)
    victim = RankFacts(0, "local", exited=True, returncode=1, exit={"error": "PeerTimeout", "peer_rank": 1})
    v = decide([victim, frozen], stall_s=3.0)
    assert (v.cause, v.node, v.what) == (1, "local", "stopped responding (no heartbeat for 9 s)"), v
    assert v.text() == "rank 1 on local stopped responding (no heartbeat for 9 s); evidence: " + evidence_of(
        victim
    )
    link = decide(
        [
            RankFacts(0, "h1", exited=True, returncode=1, exit={"error": "PeerTimeout", "peer_rank": 1}),
            RankFacts(1, "h2", exited=True, returncode=1, exit={"error": "PeerTimeout", "peer_rank": 0}),
        ]
    )
    assert link.cause is None and link.node is None and link.what is None, link


def test_sigstopped_rank_is_named_stalled_then_blamed(tmp_path, no_leftovers):
    home = no_leftovers
    cfg = config(write_config(tmp_path, ranks=3, job="steps: 1000000", ring=f"timeout: {RING_TIMEOUT_S}"))

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        await c.launch()
        while sum(isinstance(e, RankMetrics) and e.rank == 1 for e in seen) < 20:
            await asyncio.sleep(0.1)
        pid = rank_pid(c, 1, home)
        os.killpg(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            summary = await asyncio.wait_for(c.wait(), RING_TIMEOUT_S + 60)
        finally:
            try:
                os.killpg(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        failed_at = next(e.t for e in seen if isinstance(e, JobStateChanged) and e.state == JobState.FAILED)
        await c.close()
        return seen, summary, failed_at - (time.time() - (time.monotonic() - t0)), t0

    seen, summary, detect_s, _ = asyncio.run(scenario())
    stalled = [e for e in seen if isinstance(e, RankStalled)]
    assert stalled and {e.rank for e in stalled} == {1}, stalled  # only the frozen rank
    assert any(isinstance(e, JobStateChanged) and e.state == JobState.STALLED for e in seen)
    assert summary.status == JobState.FAILED
    reason = summary.reason or ""
    assert reason.startswith("rank 1 on local stopped responding (no heartbeat for"), reason
    assert reason.count("rank 0 on local") <= 1 and reason.count("rank 2 on local") <= 1, reason
    assert detect_s <= RING_TIMEOUT_S + 5, f"detected after {detect_s:.1f} s"
    print(f"\nMEASURED sigstop detection {detect_s:.1f} s (ring.timeout {RING_TIMEOUT_S:g} s)")
    # a rank the controller stopped itself says so
    from boltring.cluster.jobs.events import RankExited

    exits = {e.rank: e.reason for e in seen if isinstance(e, RankExited)}
    assert exits[1] == "was stopped by boltring", exits


HUNG_SCRIPT = """
import time
import mlx.core as mx
from boltring.netio import init

group = init()
x = mx.ones((1024,))
for step in range(1, 1_000_000):
    if group.rank == 1 and step == 20:
        while True:  # stuck in its own code: alive, not frozen, silent
            time.sleep(1)
    mx.eval(group.all_sum(x))
    group.report(step=step, loss=1.0, samples=1)
    time.sleep(0.02)
"""


def test_neighbours_of_a_hung_rank_are_said_to_have_failed_before_the_verdict(tmp_path, no_leftovers):
    """A rank that hangs alive (no signal, not frozen) leaves the verdict uncertain for
    FAILURE_GRACE_S; its neighbours, which timed out on it, must not stay unsaid until then:
    their ends are held for VICTIM_HOLD_S at most (a stop by you could still explain them)."""
    from boltring.cluster.config.ports import free_port_block
    from boltring.cluster.jobs.core import FAILURE_GRACE_S
    from boltring.cluster.jobs.events import RankExited

    script = tmp_path / "hung.py"
    script.write_text(HUNG_SCRIPT)
    path = tmp_path / "hung.yaml"
    path.write_text(
        "name: hung\nnodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 3}\n"
        f"ring: {{port: {free_port_block(3)}, timeout: 3}}\n"
        f"job: {{script: {script}, steps: 1000000}}\n"
    )

    summary, seen = asyncio.run(run_job(config(path), timeout=60))
    assert summary.status == JobState.FAILED
    assert (summary.reason or "").startswith("rank 1 on local stopped responding"), summary.reason
    failed_at = next(e.t for e in seen if isinstance(e, JobStateChanged) and e.state == JobState.FAILED)
    exits = {e.rank: e for e in seen if isinstance(e, RankExited)}
    for victim in (0, 2):
        # rank 2 times out on rank 1; rank 0 on rank 1 too, or loses rank 2 when that one ends
        assert re.match(
            r"(timed out|lost the connection) (receiving from|sending to) rank [12]$",
            exits[victim].reason or "",
        ), exits
        # said once the hold is over, long before the verdict (which waits FAILURE_GRACE_S)
        assert failed_at - exits[victim].t > FAILURE_GRACE_S / 2, (failed_at, exits)
    assert exits[1].reason == "was stopped by boltring", exits


def test_nan_loss_fails_the_job_naming_step_and_rank(tmp_path, no_leftovers):
    from .helpers import cli, events, write_config

    cfg = write_config(tmp_path, ranks=2, job="steps: 200, lr: 1.0e+30")
    res = cli("--run", "--json", "--skip-checks", "--config", str(cfg), timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    summary = events(res.stdout)[-1]
    assert summary["status"] == "failed"
    import re

    assert re.match(r"loss became (NaN|infinite) at step \d+ on rank [01]", summary["reason"]), summary[
        "reason"
    ]
    assert summary["reason"].count("loss became") == 1, summary["reason"]
    assert not list((no_leftovers / ".boltring").rglob("secret"))  # removed when the ranks ended


def test_more_ranks_than_cores_is_warned_before_start(tmp_path, no_leftovers):
    from .helpers import cli, write_config

    n = (os.cpu_count() or 1) + 1
    cfg = write_config(tmp_path, ranks=1, job="steps: 3")
    res = cli("--run", "--skip-checks", "--config", str(cfg), "--ranks", str(n), timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"runs {n} ranks on {os.cpu_count()} cores" in res.stdout, res.stdout[:2000]


def test_mlx_ring_victim_that_names_no_peer_is_not_the_cause():
    """MLX's ring says "connection to a peer was lost" without the peer: the rank that was
    killed is the cause, the one that lost it is evidence."""
    victim = RankFacts(
        rank=0,
        node="local",
        exited=True,
        returncode=1,
        exit={"error": "RuntimeError", "message": "[ring] connection to a peer was lost"},
    )
    killed = RankFacts(rank=1, node="local", exited=True, returncode=-9, exit={"signal": "SIGKILL"})
    v = decide([victim, killed])
    assert v.cause == 1 and "rank 1 on local was killed" in v.reason
    assert v.evidence == ["rank 0 on local lost a ring peer"]


def test_ranks_that_failed_on_their_own_are_not_called_peer_losers():
    a = RankFacts(
        rank=0, node="local", exited=True, returncode=1, exit={"error": "ValueError", "message": "bad"}
    )
    b = RankFacts(
        rank=1, node="local", exited=True, returncode=1, exit={"error": "ValueError", "message": "bad"}
    )
    v = decide([a, b])
    assert v.cause == 0 and v.evidence == []


FAILING_SCRIPT = """
import time
import mlx.core as mx
from boltring.netio import init

group = init()
x = mx.ones((16,))
for step in range(1, 1_000_000):
    if group.rank == 1 and step == 5:
        raise ValueError("bad batch at step 5")
    mx.eval(group.all_sum(x))
    group.report(step=step, loss=1.0, samples=1)
    time.sleep(0.02)
"""


def test_a_rank_that_fails_is_blamed_in_the_state_event_and_its_error_line_is_an_error(
    tmp_path, no_leftovers
):
    """--json: the failure's state event names the blamed rank in `blamed`, and the rank's own
    `boltring-train: error: …` line is a log event at level error (not an `error` event: that is
    the controller's one verdict). --run without --json still says the failure in one line."""
    from boltring.cluster.config.ports import free_port_block

    from .helpers import cli, events

    script = tmp_path / "fails.py"
    script.write_text(FAILING_SCRIPT)
    cfg = tmp_path / "fails.yaml"
    cfg.write_text(
        "name: fails\nnodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        f"ring: {{port: {free_port_block(2)}, timeout: 5}}\njob: {{script: {script}, steps: 1000000}}\n"
    )
    res = cli("--run", "--json", "--skip-checks", "--config", str(cfg), timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    evs = events(res.stdout)
    failed = [e for e in evs if e["event"] == "state" and e["state"] == "failed"]
    assert len(failed) == 1, failed
    assert failed[0]["blamed"] == {
        "rank": 1,
        "node": "local",
        "cause": "failed: ValueError: bad batch at step 5",
    }
    assert failed[0]["reason"].startswith("rank 1 on local failed: ValueError: bad batch at step 5"), failed
    own = [e for e in evs if e.get("source") == "rank 1@local" and "boltring-train: error: " in e["text"]]
    assert [(e["event"], e["level"], e["rank"], e["node"]) for e in own] == [("log", "error", 1, "local")], (
        own
    )
    assert own[0]["text"] == "boltring-train: error: ValueError: bad batch at step 5"
    errors = [e for e in evs if e["event"] == "error"]
    assert [e["source"] for e in errors] == ["controller"], errors  # the verdict, once
    tracebacks = [e for e in evs if e["event"] == "log" and e["text"].startswith("Traceback")]
    assert tracebacks and all(e["level"] == "info" for e in tracebacks), tracebacks

    res = cli("--run", "--skip-checks", "--config", str(cfg), timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "boltring-train" not in res.stdout + res.stderr, res.stdout[-3000:]
    said = [line for line in res.stdout.splitlines() if "bad batch at step 5" in line]
    assert len(said) == 1 and "rank 1 on local failed: ValueError" in said[0], res.stdout[-3000:]
