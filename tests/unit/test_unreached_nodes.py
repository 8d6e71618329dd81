"""`boltring status` and the summary's wall when a node of the job cannot be reached, on nodes
played by a fake transport (the lab version, with real sshd hosts: tests/faults/
test_status_unreachable.py).

- status named no unreachable node and printed "steps 0/… loss – → –" for a job that trained;
  with no node answering it did not even attach (and closing the job as ended never returned);
- the summary's wall counted until the controller read the last exit record, not until the
  last rank ended; a rank whose end was never learned must be said, not made up."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.jobs import record
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import RankMetrics
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.nodes.transport import CommandResult, Transport, Unreachable
from boltring.cluster.states import JobState, StoppedBy
from boltring.tui import headless, run_summary, status_and_kill

JOB = "u-20261201-000000-abcd"
NODES = ("a", "b", "c")


def _config() -> Config:
    return Config(
        name="u",
        source="/configs/u.yaml",
        nodes=tuple(Node(n, ring_ip=f"198.18.1.{i + 1}", ssh=n) for i, n in enumerate(NODES)),
        job=JobSpec(example="mlp", steps=200, global_batch=60),
    )


def _run_dir(rank: int) -> str:
    return f"~/.boltring/runs/{JOB}/rank{rank}"


def _metrics(steps: int, t0: float) -> bytes:
    lines = [{"kind": "start", "rank": 0}] + [
        {"kind": "step", "step": s, "loss": 4.0 - s / 100, "steps_per_s": 10.0, "wall": t0 + s / 10}
        for s in range(1, steps + 1)
    ]
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


class FakeNode(Transport):
    """A node that answers `spawn status` (every rank alive) and serves its ranks' metrics; a
    node in `down` answers nothing, like one whose link is down; one in `slow` never returns."""

    def __init__(self, node, on_state, files: dict[str, bytes], down: set[str], slow: set[str]):
        super().__init__(node, on_state)
        self.files, self.down, self.slow = files, down, slow

    async def connect(self) -> None:
        if self.node.name in self.down:
            raise Unreachable(
                f"{self.node.name}: no SSH answer from {self.node.name}:22 within 3 s",
                hint=f"is the node on and on this network? try `ssh {self.node.name}`",
            )

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        await self.connect()
        answers = [{"alive": True, "was_alive": True} for _ in argv[4:]]
        return CommandResult(0, json.dumps({"ranks": answers}), "")

    async def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        await self.connect()
        if self.node.name in self.slow:
            await asyncio.Event().wait()
        return self.files.get(path, b"")[offset : offset + limit]

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        await self.connect()

    async def close(self) -> None:
        pass


def _job_left_running(home, *, down=(), slow=(), steps=50) -> JobController:
    """A record of a job running on a, b and c (one rank each, rank r on NODES[r]), and a
    controller whose transports are FakeNodes."""
    config = _config()
    started = time.time() - 100
    ranks = [{"rank": r, "node": n, "run_dir": _run_dir(r)} for r, n in enumerate(NODES)]
    rec = record.new_record(config, JOB, ranks, resume=False)
    rec.update(state=JobState.RUNNING, started=started)
    record.write(rec)
    files = {f"{_run_dir(r)}/metrics.jsonl": _metrics(steps + r, started) for r in range(len(NODES))}
    return JobController(
        config,
        poll_s=0.05,
        transport_factory=lambda node, cfg, emit: FakeNode(node, emit, files, set(down), set(slow)),
    )


def test_status_names_the_node_it_cannot_reach_and_sums_up_the_ranks_it_read(home, capsys):
    c = _job_left_running(home, down={"b"})
    t0 = time.monotonic()
    code = asyncio.run(asyncio.wait_for(status_and_kill.run_status(c), 20))
    out = capsys.readouterr().out
    assert code == 0, out  # a job that runs: status exits 0
    assert time.monotonic() - t0 < 5, out
    said = [line for line in out.splitlines() if "could not reach b" in line]
    assert len(said) == 1, out  # which node, why, what to do: one line
    assert "no SSH answer from b:22 within 3 s" in said[0] and "rank 1" in said[0], said
    assert "try `ssh b`" in said[0], said
    # the slowest rank read (rank 0, at step 50) and its loss there; b's rank 1 not counted
    assert "steps 50/200  loss 3.9900 → 3.5000  wall" in out, out
    assert "b (not read)" in out, out


def test_status_json_says_which_rank_was_not_read(home, capsys):
    c = _job_left_running(home, down={"a"})
    assert asyncio.run(asyncio.wait_for(status_and_kill.run_status(c, json_out=True), 20)) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["status"] == "running", summary
    # rank 0 (a) could not be read: steps and loss from ranks 1 and 2 (the slowest: 51 steps)
    assert (summary["steps"], summary["last_loss"]) == (51, pytest.approx(3.49)), summary
    assert "no SSH answer" in summary["ranks"]["0"]["unread"], summary["ranks"]
    assert "unread" not in summary["ranks"]["1"], summary["ranks"]
    assert any("could not reach a" in e.get("text", "") for e in events), events


def test_status_with_no_node_answering_says_so_and_shows_no_false_zero(home, capsys):
    """It said "no job is running for this config" (or never returned, closing the job as
    ended): the job may well run, and nobody can tell."""
    c = _job_left_running(home, down=set(NODES))
    code = asyncio.run(asyncio.wait_for(status_and_kill.run_status(c), 20))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no job is running" not in out, out
    assert all(sum(f"could not reach {n} " in line for line in out.splitlines()) == 1 for n in NODES), out
    assert "steps ?/200  loss – → –" in out, out


def test_status_names_a_node_whose_files_it_could_not_read_in_time(home, capsys, monkeypatch):
    monkeypatch.setattr(status_and_kill, "STATUS_READ_S", 0.5)
    c = _job_left_running(home, slow={"c"})
    t0 = time.monotonic()
    assert asyncio.run(asyncio.wait_for(status_and_kill.run_status(c), 20)) == 0
    out = capsys.readouterr().out
    assert time.monotonic() - t0 < 5, out
    assert "c: the files of rank(s) 2 were not read within 0.5 s" in out, out
    assert "steps 50/200" in out, out  # ranks 0 and 1, read


def test_kill_with_no_node_answering_names_them_instead_of_no_job(home, capsys, monkeypatch):
    monkeypatch.setattr(status_and_kill, "KILL_WAIT_S", 0.5)
    c = _job_left_running(home, down={"a", "b", "c"})
    assert asyncio.run(asyncio.wait_for(status_and_kill.run_kill(c), 20)) == 1
    out = capsys.readouterr().out
    assert "no job is running" not in out, out
    assert "could not stop the ranks on a" in out and "run `boltring kill` again" in out, out


# -- the summary's wall ----------------------------------------------------------------------


def _ended_job(ends: dict[int, float | None], started: float = 1000.0) -> JobController:
    """A controller whose job (ranks 0..2 on a, b, c) ended: each rank's exit record says when."""
    c = JobController(_config())
    c.job_id, c._started_at = JOB, started
    nodes = {n.name: n for n in c.config.nodes}
    for r, ended in ends.items():
        rs = RankState(plan=type("Plan", (), {"rank": r, "run_dir": _run_dir(r)})(), node=nodes[NODES[r]])  # type: ignore[arg-type]
        rs.exited, rs.returncode = True, 0
        rs.exit_info = {"returncode": 0, **({"ended": ended} if ended is not None else {})}
        rs.last = RankMetrics(rank=r, node=NODES[r], step=300, loss=1.0, wall=started + 10.0)
        c._ranks[r] = rs
    c._global_step = 300
    return c


def test_the_wall_of_an_ended_job_is_its_last_rank_s_end_not_when_it_was_read():
    c = _ended_job({0: 1014.0, 1: 1013.5, 2: 1012.0})  # read long after (time.time() is now)
    summary = c.summary(JobState.FINISHED)
    assert summary.wall_s == pytest.approx(14.0)
    assert [summary.ranks[r]["ended_s"] for r in range(3)] == [14.0, 13.5, 12.0]
    assert "wall 00:00:14  run dir" in run_summary.summary_line(summary)


def test_a_rank_whose_end_was_never_read_is_said_and_the_wall_is_what_the_records_prove():
    c = _ended_job({0: 1012.0, 1: None, 2: 1011.0})  # rank 1's keeper died with no record
    summary = c.summary(JobState.FAILED)
    assert summary.wall_s == pytest.approx(12.0)  # the known ends, and every rank's last line
    assert summary.ranks[1]["ended_s"] is None
    line = run_summary.summary_line(summary)
    assert "wall ≥ 00:00:12 (the end of rank 1 on b was not read)" in line, line


def test_a_running_job_s_wall_is_its_age():
    c = _ended_job({0: None, 1: None, 2: None}, started=time.time() - 30)
    summary = c.summary(JobState.RUNNING)
    assert summary.wall_s == pytest.approx(30, abs=2)
    assert "ended_s" not in summary.ranks[0] and "≥" not in run_summary.summary_line(summary)


def test_a_read_cut_off_half_way_loses_no_metrics_line(home):
    """The node's link dropped between reading a rank's metrics and its log: the lines read were
    dropped with the error, and the offset had moved past them: never seen again."""
    from boltring.cluster.jobs import follow

    files = {f"{_run_dir(0)}/metrics.jsonl": _metrics(5, 1000.0)}
    node = _config().nodes[0]
    t = FakeNode(node, None, files, set(), set())
    real = t.read_from

    async def log_read_fails_once(path, offset, limit=1 << 20):
        if path.endswith("rank.log") and not getattr(t, "failed", False):
            t.failed = True  # type: ignore[attr-defined]
            raise Unreachable("a: connection dropped", hint="try `ssh a`")
        return await real(path, offset, limit)

    t.read_from = log_read_fails_once  # type: ignore[method-assign]
    rs = RankState(plan=type("Plan", (), {"rank": 0, "run_dir": _run_dir(0)})(), node=node)  # type: ignore[arg-type]
    with pytest.raises(Unreachable):
        asyncio.run(follow.read_new(rs, t))
    assert rs.unreached == "connection dropped; try `ssh a`"
    metrics, _, _ = asyncio.run(follow.read_new(rs, t))
    assert len(metrics) == 6 and rs.unreached is None and rs.read_to_end  # the start line and 5 steps


# -- following and stopping with a node unreachable ----------------------------------------


class StoppableNode(FakeNode):
    """A FakeNode whose ranks `spawn kill` stops: each then has an exit record, as a keeper
    writes it (stopped by whoever the kill names)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.exits: dict[str, dict] = {}

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        await self.connect()
        verb, dirs = argv[3], [a for a in argv[4:] if a.startswith("~/")]
        if verb == "kill":
            by = argv[argv.index("--by") + 1]
            for d in dirs:
                self.exits[d] = {
                    "returncode": -15,
                    "signal": "SIGTERM",
                    "stopped_by": by,
                    "ended": time.time(),
                }
        answers = [
            {
                "alive": d not in self.exits,
                "was_alive": True,
                **({"exit": self.exits[d]} if d in self.exits else {}),
            }
            for d in dirs
        ]
        return CommandResult(0, json.dumps({"ranks": answers}), "")

    async def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        run_dir = path.rsplit("/", 1)[0]
        if path.endswith("/exit.json") and run_dir in self.exits:
            await self.connect()
            return json.dumps(self.exits[run_dir]).encode()[offset:]
        return await super().read_from(path, offset, limit)


def _followed_job(home, down: set[str]) -> tuple[JobController, set[str]]:
    """`_job_left_running` with StoppableNodes; `down` can be changed while it runs."""
    c = _job_left_running(home)
    files = c._factory(c.config.nodes[0], c.config, None).files  # type: ignore[arg-type,attr-defined]
    c._factory = lambda node, cfg, emit: StoppableNode(node, emit, files, down, set())
    return c, down


def test_run_stopped_while_a_node_is_unreachable_ends_at_once_naming_it(home, capsys, monkeypatch):
    """Ctrl-C on `--run` while b could not be reached waited for b's rank with no limit: the
    follow never read its end. Now it exits 130 with one line naming the node."""
    c, _ = _followed_job(home, down={"b"})

    async def scenario():
        assert await c.attach()
        interrupted = asyncio.Event()
        view = headless.HeadlessView(c, json_out=False)
        c.add_listener(view)
        await asyncio.sleep(0.3)
        interrupted.set()
        t0 = time.monotonic()
        code = await headless.follow_to_end(c, view, interrupted, [StoppedBy.CTRL_C])
        took = time.monotonic() - t0
        await c.close()
        return code, took

    code, took = asyncio.run(asyncio.wait_for(scenario(), 60))
    out = capsys.readouterr().err  # an error line: stderr, as every command's
    assert code == 130, out
    assert took < 5, (took, out)  # b's stop failed: nothing more to wait for (never KILL_WAIT_S)
    said = [
        line for line in out.splitlines() if line.startswith("boltring: interrupted (Ctrl-C): stopped the")
    ]
    assert len(said) == 1, out
    assert "could not confirm that rank 1 on b (no SSH answer from b:22 within 3 s) stopped" in said[0], said
    assert "`boltring kill` stops it once b answers" in said[0], said
    # its record still says running: `status` and `kill` find the job once b answers
    assert json.loads((home / ".boltring" / "jobs" / f"{JOB}.json").read_text())["state"] == JobState.RUNNING


def test_run_stop_waits_for_an_end_it_cannot_read_at_most_the_kill_wait(home, capsys, monkeypatch):
    """b takes the stop command, then cannot be reached: its rank's end is never read. The wait
    is bounded by KILL_WAIT_S, as `boltring kill`'s is."""
    monkeypatch.setattr(headless, "KILL_WAIT_S", 1.0)
    c, down = _followed_job(home, down=set())

    async def scenario():
        assert await c.attach()
        await asyncio.sleep(0.3)
        b = c.transport(c.config.nodes[1])
        real_run = b.run

        async def kill_then_vanish(argv, **kw):
            if argv[3] != "kill":
                return await real_run(argv, **kw)
            down.add("b")  # the stop is on its way; no answer comes back, and no read gets there
            return CommandResult(0, json.dumps({"ranks": [{"alive": False}]}), "")

        b.run = kill_then_vanish  # type: ignore[method-assign]
        view = headless.HeadlessView(c, json_out=False)
        c.add_listener(view)
        interrupted = asyncio.Event()
        interrupted.set()
        t0 = time.monotonic()
        code = await headless.follow_to_end(c, view, interrupted, [StoppedBy.SIGTERM])
        took = time.monotonic() - t0
        await c.close()
        return code, took

    code, took = asyncio.run(asyncio.wait_for(scenario(), 60))
    out = capsys.readouterr().err  # an error line: stderr, as every command's
    assert code == 130 and 1.0 <= took < 4, (code, took, out)
    assert (
        "boltring: interrupted (SIGTERM): stopped the ranks it could reach; could not confirm that rank 1 on b "
        "(no end read within 1 s) stopped" in out
    ), out


def test_status_follow_says_an_outage_once_and_its_end_once(home, capsys):
    """`status --follow` said "b: no SSH answer …" at every failed read, several a second."""
    c, down = _followed_job(home, down={"b"})

    async def scenario():
        c.add_listener(headless.HeadlessView(c, json_out=False))
        assert await c.attach()
        await asyncio.sleep(1.0)  # 20 polls of b that fail
        down.discard("b")
        await asyncio.sleep(0.5)
        down.add("b")  # a second outage: said again, once
        await asyncio.sleep(0.5)
        await c.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    lines = capsys.readouterr().out.splitlines()
    about_b = [line for line in lines if "b:22" in line or "b answers" in line]
    assert len([line for line in lines if "could not reach b" in line]) == 1, lines
    assert len([line for line in lines if "b answers again" in line]) == 1, lines
    outages = [line for line in lines if line.startswith("controller: b: no SSH answer")]
    assert len(outages) == 1, about_b  # the second outage; the first was said by the attach
    assert "its ranks are read again once it answers" in outages[0], outages


# -- the summary says what it does not know, in JSON and in the app ------------------------


def test_the_json_summary_says_the_wall_is_a_lower_bound_and_the_app_writes_it():
    from boltring.tui.view_state import ClusterView

    c = _ended_job({0: 1012.0, 1: None, 2: 1011.0})
    summary = c.summary(JobState.FAILED)
    d = json.loads(json.dumps(summary.to_dict(), default=str))
    assert d["wall_s"] == pytest.approx(12.0) and d["wall_s_is_lower_bound"] is True, d
    assert d["ranks"]["1"]["ended_s"] is None
    view = ClusterView(c.config)
    view.apply(summary)
    assert f"job {JOB} failed: 300/200 steps in ≥ 00:00:12" in view.log[-1].text, view.log[-1].text
    # every end read: the wall is the job's own, said plainly
    known = _ended_job({0: 1014.0, 1: 1013.5, 2: 1012.0}).summary(JobState.FINISHED)
    assert known.wall_s_is_lower_bound is False
    view.apply(known)
    assert "steps in 00:00:14" in view.log[-1].text and "≥" not in view.log[-1].text


def test_status_json_with_no_node_answering_says_its_steps_are_not_known(home, capsys):
    """JSON said `"steps": 0` where the text said `steps ?/200`."""
    c = _job_left_running(home, down=set(NODES))
    assert asyncio.run(asyncio.wait_for(status_and_kill.run_status(c, json_out=True), 20)) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["steps"] is None, summary
    assert summary["metrics_reported"] is True, summary  # not read is not "reported none"
