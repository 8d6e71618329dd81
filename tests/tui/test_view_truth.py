"""The view never shows something false: the review's view defects (v1-v4 and the node details
screen), each driven through the real ClusterView and widgets with the controller's own events.

1. a node that drops SSH and reconnects: its ranks run again once their lines are read;
2. a second launch shows none of the first job's figures (a restart keeps its own);
3. a re-attach with a node out of reach: its ranks may still be running, not "not running";
4. the ring strip follows the ring the controller runs (cabling order), not the config's;
5. the node details screen: tok/s, a live SSH detail; "stale" by the rank's own interval.
"""

from __future__ import annotations

import asyncio
import dataclasses

from boltring.cluster.config.schema import Config, JobSpec, Node, RingOptions
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import (
    CheckResult,
    Event,
    JobRestarted,
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    NodeState,
    RankExited,
    RankMetrics,
    RankStarted,
    RingOrder,
    StepProgress,
    SyncProgress,
)
from boltring.cluster.states import CheckStatus, JobState, SshState, StoppedBy
from boltring.tui.node_state import RankStatus, RankView
from boltring.tui.screens.node_details import NodeDetailsScreen
from boltring.tui.view_state import ClusterView
from boltring.tui.widgets.rank_row import RankHeader, RankRow
from boltring.tui.widgets.ring_strip import ring_content
from boltring.tui.widgets.status_header import StatusHeader
from tests.tui import feed
from tests.tui.harness import settle
from tests.unit.test_cabling import LINE, SampleMac, all_facts, cluster

NOW = 1000.0


def view_of(*events: Event, config: Config | None = None) -> ClusterView:
    v = ClusterView(config or feed.lab_config(), clock=lambda: NOW)
    for ev in events:
        v.apply(ev)
    return v


def row(rv: RankView, now: float = NOW) -> str:
    """The rank's row as the panel draws it, 120 columns wide."""
    r = RankRow(rv.rank)
    r._args = (rv, now, None)
    return r._line(120).plain


def header(v: ClusterView, now: float = NOW) -> str:
    return StatusHeader()._line(v, now, 0).plain


def started(job_id: str = "A", t: float = 100.0, **kw) -> list[Event]:
    """A job of the lab config launched at `t`, every rank started."""
    nodes = ["mini1", "mini2", "mini3"]
    evs: list[Event] = [
        JobStateChanged(JobState.LAUNCHING, job_id=job_id, t=t),
        *(RankStarted(r, n, t=t) for r, n in ((0, "mini1"), (1, "mini1"), (2, "mini2"), (3, "mini3"))),
        JobStarted(job_id, None, 4, 200, nodes, "example mlp", t=t, **kw),
        JobStateChanged(JobState.RUNNING, job_id=job_id, t=t),
    ]
    return evs


def metrics(v: ClusterView, step: int, t: float) -> None:
    for rv in list(v.ranks.values()):
        v.apply(RankMetrics(rv.rank, rv.node, step=step, samples_per_s=64.0, wall=t, t=t))


# -- 1. a node that drops SSH and reconnects ---------------------------------------------------


def test_ranks_of_a_node_that_reconnects_run_again():
    v = view_of(*started())
    metrics(v, 10, 110)
    v.apply(NodeState("mini2", SshState.LOST, "connection dropped: reset", t=111))
    # its rank may well run on: never "lost", and the step it was last read at
    assert row(v.ranks[2]) == "r2   not read since step 10: may still be running (connection dropped: reset)"
    v.apply(NodeState("mini2", SshState.RECONNECTING, "next attempt in 1 s", t=111))
    v.apply(NodeState("mini2", SshState.CONNECTED, "mini2:22", t=113))
    assert "mini2 answers again" in row(v.ranks[2])
    metrics(v, 20, 120)
    assert v.ranks[2].status == RankStatus.RUNNING and v.ranks[2].reason is None
    assert row(v.ranks[2]).startswith("r2      20")  # its figures, no status words
    assert v.cluster_rate("samples_per_s") == 256.0  # every rank counted in the header's smp/s
    # a rank whose end was read stays ended, whatever line of it is read late
    v.apply(RankExited(3, "mini3", returncode=0, t=121))
    v.apply(RankMetrics(3, "mini3", step=21, wall=121, t=122))
    assert v.ranks[3].status == RankStatus.DONE


# -- 2. a second launch ------------------------------------------------------------------------


def job_a_finished() -> ClusterView:
    v = view_of(*started("A", t=1000.0))
    v.apply(SyncProgress("mini2", "data/big.bin", sent=100, total=100, t=999.0))
    for s in range(1, 201):
        v.apply(StepProgress(step=s, total=200, loss=2.0 / s, wall=1000 + s * 3, t=1000 + s * 3))
    for rv in v.ranks.values():
        v.apply(RankExited(rv.rank, rv.node, returncode=0, t=1600))
    v.apply(JobStateChanged(JobState.FINISHED, job_id="A", t=1601))
    v.apply(JobSummary("A", JobState.FINISHED, 200, 200, 2.0, 0.01, 600.0, t=1601))
    return v


def test_a_second_launch_shows_none_of_the_first_jobs_figures():
    v = job_a_finished()
    v.apply(JobStateChanged(JobState.LAUNCHING, job_id="B", t=4000))
    line = header(v, 4030)
    assert "elapsed --:--:--" in line and "200/200" not in line and "0.0100" not in line, line
    assert not v.loss_history  # `p` has no curve of job A to save as loss-B.svg
    assert all(row(rv) == f"r{rv.rank}   not running" for rv in v.ranks.values())  # not A's "done"
    v.apply(SyncProgress("mini2", "data/big.bin", sent=30, total=100, t=4001))
    assert "sync data/big.bin █░░░ 0/0 MB" in v.log[-1].text  # B's sync is shown again
    v.apply(JobStateChanged(JobState.FAILED, job_id="B", reason="mini3: no SSH answer", t=4031))
    assert "200/200" not in header(v, 4100) and "elapsed --:--:--" in header(v, 4100)

    # killed while launching: no step of the job before it
    v = job_a_finished()
    v.apply(JobStateChanged(JobState.LAUNCHING, job_id="B", t=4000))
    v.apply(JobStateChanged(JobState.KILLED, job_id="B", by=StoppedBy.APP, t=4005))
    assert v.stopped_line() == "stopped by you"
    # with the controller's words for it, the view says them: no step was made
    v = job_a_finished()
    v.apply(JobStateChanged(JobState.LAUNCHING, job_id="B", t=4000))
    said = "stopped by you (the app) during launch"
    v.apply(JobStateChanged(JobState.KILLED, job_id="B", by=StoppedBy.APP, reason=said, t=4005))
    assert v.stopped_line() == said, v.stopped_line()
    assert v.log[-1].text == f"job killed: {said}", v.log[-1].text


def test_a_restart_keeps_its_jobs_figures():
    v = view_of(*started("A", t=1000.0))
    for s in range(1, 61):
        v.apply(StepProgress(step=s, total=200, loss=1.0, wall=1000 + s, t=1000 + s))
    v.apply(JobStateChanged(JobState.RESTARTING, job_id="A", reason="rank 2 failed", t=1070))
    v.apply(JobRestarted("A", 1, 3, "rank 2 failed", resume_from="step 50 (step-50.safetensors)", t=1071))
    v.apply(JobStateChanged(JobState.LAUNCHING, job_id="A", t=1072))
    # the same job: its elapsed time, its curve and its step go on
    assert (v.started_t, v.step, len(v.loss_history), len(v.restarts)) == (1000.0, 60, 60, 1)
    # and so does a state the same job comes back to after checks
    v = job_a_finished()
    v.apply(JobStateChanged(JobState.CHECKING, job_id="A", t=1700))
    v.apply(JobStateChanged(JobState.FINISHED, job_id="A", t=1701))
    assert (v.step, v.started_t, v.loss) == (200, 1000.0, 0.01)
    # (a new job's launch does reset them: see above; this guards the restart against it)
    v.apply(JobStateChanged(JobState.LAUNCHING, job_id="B", t=1800))
    assert (v.step, v.started_t, v.loss) == (0, None, None)


# -- 3. re-attaching while a node is out of reach ----------------------------------------------


def test_reattach_with_a_node_out_of_reach_says_its_ranks_may_still_run():
    why = "no SSH answer from mini3:22 within 10 s"
    v = view_of(
        NodeState("mini1", SshState.LOCAL, t=10),
        NodeState("mini2", SshState.CONNECTED, t=10),
        NodeState("mini3", SshState.CONNECTING, t=10),
        NodeState("mini3", SshState.UNREACHABLE, why, t=20),
        JobStarted("J", None, 4, 200, ["mini1", "mini2", "mini3"], "example mlp", attached=True, t=0),
        JobStateChanged(JobState.RUNNING, job_id="J", t=21),
        LogLine(
            "controller", f"could not reach mini3 ({why}): its rank 3 may still be running", "warn", t=21
        ),
    )
    for r in (0, 1, 2):
        v.apply(RankMetrics(r, v.ranks[r].node, step=120, samples_per_s=64, t=22, wall=22))
    assert row(v.ranks[3]) == f"r3   not read: may still be running ({why})"
    # it answers later and its rank's lines are read: running
    v.apply(NodeState("mini3", SshState.CONNECTED, "mini3:22", t=30))
    v.apply(RankMetrics(3, "mini3", step=125, samples_per_s=64, t=31, wall=31))
    assert v.ranks[3].status == RankStatus.RUNNING


# -- 4. the ring strip in the ring's own order -------------------------------------------------


def abcd() -> Config:
    nodes = tuple(Node(n, ring_ip=f"198.18.1.{i + 1}", ssh=n) for i, n in enumerate("abcd"))
    return Config(
        name="lab",
        source="x.yaml",
        nodes=nodes,
        job=JobSpec(example="mlp", steps=100, global_batch=256),
        ring=dataclasses.replace(RingOptions(), order="cabling"),
    )


def test_ring_strip_follows_the_order_the_job_runs():
    """v3: the checks reordered the nodes a, b, c, d to a, c, b, d; the job runs in it."""
    v = view_of(config=abcd())
    order = ["a", "c", "b", "d"]
    for i, n in enumerate(order):
        v.apply(CheckResult("ring", f"bw:{n}->{order[(i + 1) % 4]}", CheckStatus.OK, "40 Gb/s"))
    v.apply(JobStarted("J", None, 4, 100, order, "example mlp"))
    v.apply(JobStateChanged(JobState.RUNNING))
    for rank, n in enumerate(order):
        v.apply(RankStarted(rank, n))
        v.apply(RankMetrics(rank, n, step=5, allreduce_gbps=4.8))
    assert [(a, b) for a, b, _, _ in v.ring_links()] == [("a", "c"), ("c", "b"), ("b", "d"), ("d", "a")]
    assert ring_content(v).plain.startswith("ring a ⇄4.80/5.00⇄ c ⇄4.80/5.00⇄ b ⇄4.80/5.00⇄ d ⇄4.80/5.00⇄ ↺")


def test_ring_strip_follows_the_cables_from_the_checks_on(monkeypatch):
    """The real controller's checks (macOS samples cabled mini1-mini3-mini2) reorder the ring
    before any launch: the strip and the planned ranks take that order at once."""
    config = cluster(ring_order="cabling")
    facts = all_facts(monkeypatch, config, LINE)
    ctl = JobController(
        config, transport_factory=lambda node, cfg, emit: SampleMac(node, facts[node.name], emit)
    )
    v = ClusterView(config)
    ctl.add_listener(v.apply)
    asyncio.run(ctl.run_checks(bandwidth=False))
    assert [(a, b) for a, b, _, _ in v.ring_links()] == [
        ("mini1", "mini3"),
        ("mini3", "mini2"),
        ("mini2", "mini1"),
    ]
    assert ring_content(v).plain.startswith("ring mini1 ⇄ mini3 ⇄ mini2 ⇄ ↺")
    # rank 1 runs on mini3 now, as the launch will place it
    assert {rv.rank: rv.node for rv in v.ranks.values()} == {0: "mini1", 1: "mini3", 2: "mini2"}


def test_ring_strip_does_not_say_no_bandwidth_was_measured_after_a_reorder():
    v = view_of(config=abcd())
    for i, n in enumerate("abcd"):  # the checks measured the config's ring
        v.apply(CheckResult("ring", f"bw:{n}->{'abcd'[(i + 1) % 4]}", CheckStatus.OK, "40 Gb/s"))
    v.apply(RingOrder(["a", "d", "c", "b"]))  # the other way round: not one link measured
    assert ring_content(v).plain == "ring a ⇄ d ⇄ c ⇄ b ⇄ ↺  these links not measured yet"


# -- 5. stale by the rank's own interval; the node details screen ------------------------------


def test_a_rank_reporting_every_30_s_is_not_stale_between_its_lines():
    rv = RankView(rank=0, node="mini1", status=RankStatus.RUNNING)
    for i in range(4):
        rv.take(RankMetrics(0, "mini1", step=i, wall=100 + 30 * i, t=100 + 30 * i))
    assert not rv.stale(190 + 20)  # 20 s after its last line, 30 s being its pace
    assert rv.stale(190 + 100)  # past 3 of its intervals: what the controller calls stalled
    fast = RankView(rank=1, node="mini1", status=RankStatus.RUNNING)
    for i in range(4):
        fast.take(RankMetrics(1, "mini1", step=i, wall=100 + 0.5 * i, t=100 + 0.5 * i))
    assert fast.stale(101.5 + 5)  # a rank of 0.5 s steps silent for 5 s


async def test_node_details_shows_tokens_and_a_live_ssh_detail(open_app):
    async with open_app(feed.running()) as (app, pilot):
        v = app.view
        v.apply(NodeState("mini2", SshState.LOST, "no SSH answer from mini2:22 within 10 s", t=NOW))
        app.push_screen(NodeDetailsScreen(v, "mini2", cursor_blink=False))
        await settle(pilot)
        screen = app.screen
        assert "no SSH answer" in str(screen.query_one("#details-address").content)
        v.apply(NodeState("mini2", SshState.CONNECTED, "mini2:22", t=NOW))
        v.apply(RankMetrics(2, "mini2", step=121, tokens_per_s=5120.0, samples_per_s=70.0, wall=NOW, t=NOW))
        app.refresh_now()
        await pilot.pause()
        address = str(screen.query_one("#details-address").content)
        assert "no SSH answer" not in address and "mini2:22" in address
        assert "tok/s" in str(screen.query_one(RankHeader).render())
        assert "5.12k" in screen.query_one(RankRow).text()


def test_stale_uses_the_controllers_own_stall_limits():
    from boltring.cluster.jobs import follow
    from boltring.tui import node_state

    assert (node_state.STALL_FACTOR, node_state.STALL_FLOOR_S) == (follow.STALL_FACTOR, follow.STALL_FLOOR_S)
