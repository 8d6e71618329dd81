"""What a controller takes for a rank's end, and the job record several processes write, with
real local ranks (spawn.py) and records:

- a record "restarting" (or launching) whose controller lives is not followed by a re-attach:
  its ranks not restarted yet still had the last attempt's exit records, read as their end;
- an exit record older than the attempt's start is never a rank's end (a restart that failed
  part way read the last attempt's, for ranks it never started);
- a rank found dead before its exit record while `kill` stops it (SIGKILLed, the record written
  a moment later) is stopped by whoever asked, not "lost";
- `boltring kill` asking a restart not to happen, and a re-attach naming itself a watcher, are
  never undone by another process's write of the whole record."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

from boltring.cluster.jobs import record
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.states import JobState, StoppedBy
from tests.integration.test_spawn import spawn, wait_for

from .helpers import config, write_config

JOB = "job-attempts"


def _setup(tmp_path, state: str = JobState.RUNNING):
    cfg = config(write_config(tmp_path, ranks=1))
    run = tmp_path / "rank0"
    run.mkdir()
    rec = record.new_record(cfg, JOB, [{"rank": 0, "node": "local", "run_dir": str(run)}], resume=False)
    rec["state"], rec["started"] = state, time.time() - 30
    record.write(rec)
    return cfg, run, rec


def _sleeper(run) -> None:
    assert spawn("start", run, {"argv": ["sleep", "60"]})["_rc"] == 0


def test_a_re_attach_between_attempts_does_not_follow_the_job(tmp_path, no_leftovers):
    cfg, run, _ = _setup(tmp_path, JobState.RESTARTING)  # its controller (this process) lives
    _sleeper(run)  # a rank already restarted; the others would still hold old exit records

    async def scenario() -> bool:
        c = JobController(cfg, poll_s=0.05)
        try:
            return await c.attach()
        finally:
            await c.close()

    try:
        assert asyncio.run(scenario()) is False
        assert record.read(JOB)["state"] == JobState.RESTARTING  # left to its controller
    finally:
        spawn("kill", run, None, "--grace", "1")


def test_the_last_attempts_exit_record_is_not_a_rank_end_in_a_restart(tmp_path, no_leftovers):
    cfg, run, rec = _setup(tmp_path)
    old = {"returncode": 1, "signal": None, "started": time.time() - 20, "ended": time.time() - 10}
    (run / "exit.json").write_text(json.dumps(old))  # the failed attempt's; never restarted

    async def scenario():
        c = JobController(cfg, poll_s=0.05)
        try:
            c._adopt(rec)
            c._attempt_started = time.time() - 1  # a restart's attempt, started a second ago
            rs = c._ranks[0]
            await c._kill_ranks([rs], StoppedBy.BOLTRING, grace_s=0.5)  # the restart's failure path
            return rs.exited, dict(rs.exit_info)
        finally:
            await c.close()

    exited, info = asyncio.run(scenario())
    assert exited and info.get("never_started") and info["returncode"] is None, info


def test_a_rank_dead_before_its_kill_wrote_the_record_is_stopped_not_lost(tmp_path, no_leftovers):
    cfg, run, rec = _setup(tmp_path)
    _sleeper(run)
    # as `kill --by` does: who stops it first, then SIGKILL; its exit record comes after
    (run / "stop.json").write_text(json.dumps({"by": "boltring kill", "at": time.time()}))
    os.killpg(int((run / "pid").read_text()), signal.SIGKILL)
    assert wait_for(lambda: spawn("status", run)["alive"] is False)

    async def scenario():
        c = JobController(cfg, poll_s=0.05)
        try:
            c._adopt(rec)
            rs = c._ranks[0]
            await c._check_alive([rs])
            return rs.exited, dict(rs.exit_info)
        finally:
            await c.close()

    exited, info = asyncio.run(scenario())
    assert exited and info.get("stopped_by") == "boltring kill" and info.get("signal") != "lost", info


def test_a_stop_asked_between_attempts_survives_the_owners_write(tmp_path, home):
    cfg, _, rec = _setup(tmp_path, JobState.RESTARTING)
    owners_copy = dict(rec)  # read before the kill; written after it (relaunch: "running")
    assert JobController(cfg).request_stop(StoppedBy.USER_KILL) == JOB
    owners_copy["state"] = JobState.RUNNING
    record.write(owners_copy)
    assert record.read(JOB)["stop_requested"] == StoppedBy.USER_KILL


def test_a_watcher_named_while_the_job_ends_never_makes_it_running_again(tmp_path, home, monkeypatch):
    _, _, rec = _setup(tmp_path)
    real = record.add_watcher
    reading = threading.Event()

    def slow_add_watcher(r):  # record.watch between its read and its write
        reading.set()
        time.sleep(0.5)
        real(r)

    monkeypatch.setattr(record, "add_watcher", slow_add_watcher)
    watcher = threading.Thread(target=record.watch, args=(JOB,))
    watcher.start()
    assert reading.wait(5)
    ended = dict(rec, state=JobState.FINISHED)  # the owner writes how the job ended meanwhile
    record.write(ended)
    watcher.join(10)
    assert record.read(JOB)["state"] == JobState.FINISHED
