"""A job left launching or restarting by a controller that ended meanwhile (SIGKILLed, or the
app killed while its laptop slept), with none of its ranks running: nothing will launch or
restart it. Its record said "launching"/"restarting" forever (`runs`: unwatched; `status`:
"no job is running", and the record never closed). The next `status`, `kill` or app on its
config closes it: launching, as failed because its launch never finished; restarting, with the
failure its last attempt ended in. A controller still alive between attempts is left alone.

Nodes are played by a transport in this file (their `spawn status` answers)."""

from __future__ import annotations

import asyncio
import json
import time

from boltring.cluster.jobs import record, watchers
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.nodes.transport import CommandResult
from boltring.cluster.states import JobState
from tests.unit.test_unreached_nodes import JOB, NODES, FakeNode, _config, _run_dir
from tests.unit.test_unwatched_runs import _ended_process


class EndedNode(FakeNode):
    """A node whose ranks are not running: never started (no exit record) or, given `exits`,
    ended with that exit record."""

    exits: dict | None = None

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        await self.connect()
        answers = [{"alive": False, "exit": self.exits} for _ in argv[4:]]
        return CommandResult(0, json.dumps({"ranks": answers}), "")


def _record(state: str, watcher_pid: int) -> None:
    config = _config()
    ranks = [{"rank": r, "node": n, "run_dir": _run_dir(r)} for r, n in enumerate(NODES)]
    rec = record.new_record(config, JOB, ranks, resume=False)
    rec["state"] = state
    rec["watchers"] = [{"pid": watcher_pid, "host": watchers.this_controller()["host"]}]
    if state == JobState.RESTARTING:
        rec["started"] = time.time() - 30
    record.record_path(JOB).parent.mkdir(parents=True, exist_ok=True)
    record.record_path(JOB).write_text(json.dumps(rec))


def _attach(exits: dict | None = None) -> tuple[bool, dict]:
    def transport(node, cfg, emit):
        t = EndedNode(node, emit, {}, set(), set())
        t.exits = exits
        return t

    async def scenario() -> bool:
        c = JobController(_config(), poll_s=0.05, transport_factory=transport)
        try:
            return await asyncio.wait_for(c.attach(), 20)
        finally:
            await c.close()

    attached = asyncio.run(scenario())
    rec = record.read(JOB)
    assert rec is not None
    return attached, rec


def test_a_launch_whose_controller_died_is_closed_as_failed_saying_why(home):
    dead = _ended_process()
    _record(JobState.LAUNCHING, dead)
    attached, rec = _attach()
    assert not attached
    assert rec["state"] == JobState.FAILED, rec
    assert rec["reason"] == (
        f"its launch never finished: the controller launching it (pid {dead}) ended first, "
        "and none of its ranks is running"
    )
    assert rec["summary"]["status"] == JobState.FAILED and rec["summary"]["reason"] == rec["reason"]
    assert record.active(_config().source) is None  # `status`, `kill` and `runs` see it ended


def test_a_restart_whose_controller_died_ends_with_the_failure_it_was_to_restart(home):
    _record(JobState.RESTARTING, _ended_process())
    failed = {"returncode": 1, "signal": None, "started": time.time() - 20, "ended": time.time() - 10}
    attached, rec = _attach(exits=failed)
    assert not attached
    assert rec["state"] == JobState.FAILED, rec
    assert rec["reason"] == "rank 0 on a exited with an error (code 1); see its log", rec["reason"]
    assert not rec.get("restarts"), rec  # closing it never restarts it


def test_a_controller_alive_between_attempts_keeps_its_job(home):
    import os

    for state in (JobState.LAUNCHING, JobState.RESTARTING):
        _record(state, os.getpid())  # the launching controller: alive
        attached, rec = _attach()
        assert not attached and rec["state"] == state, rec
