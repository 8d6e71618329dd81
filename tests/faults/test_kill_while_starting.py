"""A kill while ranks are being started (the launch, a restart's relaunch) stops the launch:
no rank runs on after it, and the job is recorded as killed at the step it really reached.
`status` between two attempts of --restarts says the job is restarting (it said "no job").

A kill used to signal only the ranks that existed, and the launch went on starting the rest:
those ran to their end (or forever) while the job read "killed", and a kill as a restart
relaunched read the last attempt's exit records and ended the job "at step 0" at once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time

from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs import record
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import JobRestarted, JobStateChanged, RankExited, RankMetrics, RankStarted
from boltring.cluster.states import JobState, StoppedBy
from tests.procs import boltring_processes, read_to_exit, start_cli

from .helpers import cli, config, events, rank_process_pid, write_config

FOREVER = "steps: 1000000"  # a rank left running is still running when the test looks


async def _launch_and_kill_on(cfg, first_event) -> tuple:
    """Launch `cfg` and kill() it from the first event `first_event(ev)` accepts, as the app's
    `k` does (a kill that runs while the controller goes on); (summary, every event)."""
    c = JobController(cfg, poll_s=0.1)
    seen: list = []
    kills: list[asyncio.Future] = []

    def listen(ev) -> None:
        seen.append(ev)
        if not kills and first_event(ev):
            kills.append(asyncio.ensure_future(c.kill()))

    c.add_listener(listen)
    try:
        await c.launch()
        summary = await asyncio.wait_for(c.wait(), 60)
        await asyncio.wait_for(kills[0], 60)
    finally:
        await c.close()
    return summary, seen


def _assert_killed_and_gone(summary, seen, home) -> None:
    left = boltring_processes(str(home))  # the ranks' command lines name their run dirs in home
    assert not left, f"ranks run on after the kill: {[p.cmdline() for p in left]}"
    assert summary.status == JobState.KILLED and summary.stopped_by == StoppedBy.APP, summary
    exits = {e.rank: e for e in seen if isinstance(e, RankExited)}
    assert set(exits) == set(summary.ranks), exits  # every rank's end is known
    assert all(e.stopped_by == StoppedBy.APP for e in exits.values()), exits  # none "finished"


def test_a_kill_as_the_launch_begins_starts_no_rank(tmp_path, no_leftovers):
    cfg = config(write_config(tmp_path, ranks=2, job=FOREVER))
    launching = lambda ev: isinstance(ev, JobStateChanged) and ev.state == JobState.LAUNCHING
    summary, seen = asyncio.run(_launch_and_kill_on(cfg, launching))
    _assert_killed_and_gone(summary, seen, no_leftovers)
    assert summary.steps == 0 and summary.reason == "stopped by you (the app) at step 0", summary


def test_a_kill_while_some_ranks_have_started_stops_them_and_the_rest(tmp_path, no_leftovers):
    """Node a's rank has started, node b's start command (two ranks) is under way: the kill
    tells b to start no more, and the launch stops whatever did start."""
    port = free_port_block(3)
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\nnodes:\n"
        "  - {name: a, local: true, ring_ip: 127.0.0.1, ranks: 1}\n"
        "  - {name: b, local: true, ring_ip: 127.0.0.2, ranks: 2}\n"
        f"ring: {{port: {port}}}\njob: {{example: mlp, global_batch: 60, {FOREVER}}}\n"
    )
    summary, seen = asyncio.run(_launch_and_kill_on(config(path), lambda ev: isinstance(ev, RankStarted)))
    _assert_killed_and_gone(summary, seen, no_leftovers)
    assert summary.reason == f"stopped by you (the app) at step {summary.steps}", summary
    rec = record.read(summary.job_id) or {}
    assert rec.get("state") == JobState.KILLED and rec["summary"]["steps"] == summary.steps, rec


def test_a_kill_as_a_restart_relaunches_stops_it_at_the_step_resumed_from(tmp_path, no_leftovers):
    cfg = config(
        write_config(
            tmp_path, ranks=2, job=f"{FOREVER}, checkpoint_every: 20, restarts: 1, restart_delay: 0.2"
        )
    )

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        kills: list[asyncio.Future] = []

        def listen(ev) -> None:
            seen.append(ev)
            if isinstance(ev, JobRestarted) and not kills:  # the relaunch is about to start ranks
                kills.append(asyncio.ensure_future(c.kill()))

        c.add_listener(listen)
        try:
            await c.launch()
            while sum(isinstance(e, RankMetrics) and e.rank == 1 for e in seen) < 30:  # past a checkpoint
                await asyncio.sleep(0.05)
            os.kill(rank_process_pid(c, 1, no_leftovers), signal.SIGKILL)
            summary = await asyncio.wait_for(c.wait(), 120)
            await asyncio.wait_for(kills[0], 60)
        finally:
            await c.close()
        return summary, seen

    summary, seen = asyncio.run(scenario())
    (restart,) = [e for e in seen if isinstance(e, JobRestarted)]
    after = seen[seen.index(restart) :]
    _assert_killed_and_gone(summary, after, no_leftovers)
    resumed = re.match(r"step (\d+) ", restart.resume_from or "")
    assert resumed and int(resumed[1]) >= 20, restart.resume_from
    # Not "0/1000000": the job is at the checkpoint the relaunch resumed from (no step after it ran).
    assert summary.steps == int(resumed[1]), (summary.steps, restart.resume_from)
    assert summary.reason == f"stopped by you (the app) at step {resumed[1]}", summary.reason
    rec = record.read(summary.job_id) or {}
    assert rec["summary"]["steps"] == summary.steps, rec  # what `boltring runs` and the history read


async def _fail_and_wait_for_restart(c: JobController, seen: list, home) -> None:
    """Launch, SIGKILL rank 1 once the ranks report, and return once the job waits to restart."""
    c.add_listener(seen.append)
    await c.launch()
    while sum(isinstance(e, RankMetrics) for e in seen) < 10:
        await asyncio.sleep(0.05)
    os.kill(rank_process_pid(c, 1, home), signal.SIGKILL)
    while c.state != JobState.RESTARTING:
        await asyncio.sleep(0.05)


def test_a_kill_while_waiting_to_restart_ends_the_wait_at_once(tmp_path, no_leftovers):
    """A failed job waits restart_delay before its relaunch: a kill then ends it at once, not
    after the rest of the delay (it held `k` and `boltring kill` for all of it)."""
    path = write_config(
        tmp_path, ranks=2, job=f"{FOREVER}, checkpoint_every: 20, restarts: 2, restart_delay: 60"
    )

    async def scenario():
        c = JobController(config(path), poll_s=0.1)
        try:
            await _fail_and_wait_for_restart(c, [], no_leftovers)
            t0 = time.monotonic()
            await asyncio.wait_for(c.kill(), 30)
            took = time.monotonic() - t0
            summary = await asyncio.wait_for(c.wait(), 30)
        finally:
            await c.close()
        return summary, took

    summary, took = asyncio.run(scenario())
    assert summary.status == JobState.KILLED and summary.stopped_by == StoppedBy.APP, summary
    assert took < 10, f"the kill waited {took:.1f} s for the restart delay"


def test_status_between_restart_attempts_says_restarting(tmp_path, no_leftovers):
    """`status` while a failed job waits to restart: "is restarting (restart 1 of 2)", exit 0
    (it said "no job is running for this config" and exited 1); `--json` says it as an event."""
    path = write_config(
        tmp_path, ranks=2, job=f"{FOREVER}, checkpoint_every: 20, restarts: 2, restart_delay: 60"
    )

    async def scenario():
        c = JobController(config(path), poll_s=0.1)
        try:
            await _fail_and_wait_for_restart(c, [], no_leftovers)
            plain = await asyncio.to_thread(cli, "status", "--config", str(path), timeout=60)
            assert plain.returncode == 0, plain.stdout + plain.stderr
            assert re.search(r"job \S+ is restarting \(restart 1 of 2\)", plain.stdout), plain.stdout
            as_json = await asyncio.to_thread(cli, "status", "--json", "--config", str(path), timeout=60)
            assert as_json.returncode == 0, as_json.stdout + as_json.stderr
            event = json.loads(as_json.stdout.strip().splitlines()[-1])
            assert event["event"] == "between_attempts" and event["state"] == "restarting", event
            assert event["restart"] == 1 and event["max_restarts"] == 2, event
            await asyncio.wait_for(c.kill(), 30)
            summary = await asyncio.wait_for(c.wait(), 30)
        finally:
            await c.close()
        return summary

    summary = asyncio.run(scenario())
    assert summary.status == JobState.KILLED and summary.stopped_by == StoppedBy.APP, summary


def test_status_follow_between_attempts_follows_the_relaunched_job(tmp_path, no_leftovers):
    """`status --follow` while the job waits to restart waits for its ranks, then follows the
    job to its end, and exits as the job did (0: finished)."""
    path = write_config(
        tmp_path, ranks=2, job="steps: 300, checkpoint_every: 20, restarts: 1, restart_delay: 4"
    )

    async def scenario():
        c = JobController(config(path), poll_s=0.1)
        try:
            await _fail_and_wait_for_restart(c, [], no_leftovers)
            proc = start_cli("status", "--follow", "--json", "--config", str(path))
            try:
                out, err = await asyncio.to_thread(read_to_exit, proc, 120)
            finally:
                if proc.poll() is None:
                    proc.kill()
            summary = await asyncio.wait_for(c.wait(), 60)
        finally:
            await c.close()
        return proc.returncode, out, err, summary

    code, out, err, summary = asyncio.run(scenario())
    assert summary.status == JobState.FINISHED, summary.reason
    evs = events(out)
    kinds = [e["event"] for e in evs]
    assert "between_attempts" in kinds, out[-2000:]  # said first, then the job as it runs again
    assert evs[kinds.index("between_attempts")]["restart"] == 1, out[-2000:]
    assert kinds.index("between_attempts") < kinds.index("step"), kinds
    assert code == 0, (out[-2000:], err[-2000:])
    assert evs[-1]["event"] == "summary" and evs[-1]["status"] == "finished", evs[-1]
