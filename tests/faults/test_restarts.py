"""--restarts: a rank SIGKILLed twice with 2 restarts ends with the loss of an uninterrupted run;
a job a user stops is never restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import JobRestarted, JobStateChanged, RankMetrics
from boltring.cluster.states import JobState, StoppedBy

from .helpers import config, rank_process_pid, write_config

JOB = "steps: 240, seed: 5, checkpoint_every: 20, restart_delay: 0.5"


async def _run_to_end(cfg, kills: int, home) -> tuple:
    c = JobController(cfg, poll_s=0.1)
    seen: list = []
    c.add_listener(seen.append)
    await c.launch()
    for attempt in range(kills):

        def rank1_steps(attempt: int = attempt) -> list:
            after = [i for i, e in enumerate(seen) if isinstance(e, JobRestarted)]
            start = after[attempt - 1] if attempt else 0
            return [e for e in seen[start:] if isinstance(e, RankMetrics) and e.rank == 1]

        while len(rank1_steps()) < 30 + 10 * attempt:
            await asyncio.sleep(0.05)
        os.kill(rank_process_pid(c, 1, home), signal.SIGKILL)  # as the OOM killer would
        t0 = time.time()
        while sum(isinstance(e, JobRestarted) for e in seen) <= attempt:
            await asyncio.sleep(0.05)
        blamed = [e for e in seen if isinstance(e, JobStateChanged) and e.state == JobState.RESTARTING]
        print(f"\nMEASURED SIGKILL of rank 1 → blamed after {blamed[-1].t - t0:.1f} s: {blamed[-1].reason}")
    summary = await asyncio.wait_for(c.wait(), 300)
    await c.close()
    return summary, seen


def test_sigkilled_twice_with_two_restarts_ends_like_an_uninterrupted_run(tmp_path, no_leftovers):
    plain = config(write_config(tmp_path, ranks=2, name="plain", job=JOB))
    restarted = config(write_config(tmp_path, ranks=2, name="restarted", job=JOB + ", restarts: 2"))
    base, _ = asyncio.run(_run_to_end(plain, 0, no_leftovers))
    summary, seen = asyncio.run(_run_to_end(restarted, 2, no_leftovers))
    assert base.status == JobState.FINISHED, base.reason
    assert summary.status == JobState.FINISHED, summary.reason
    restarts = [e for e in seen if isinstance(e, JobRestarted)]
    assert [r.attempt for r in restarts] == [1, 2] and all(r.max_restarts == 2 for r in restarts)
    assert all("rank 1 on local was killed" in r.cause for r in restarts), [r.cause for r in restarts]
    assert all(r.resume_from and r.resume_from.startswith("step ") for r in restarts), restarts
    assert [r["attempt"] for r in summary.restarts] == [1, 2]
    assert summary.last_loss == base.last_loss, (summary.last_loss, base.last_loss)
    assert summary.steps == 240


def test_a_user_kill_is_never_restarted(tmp_path, no_leftovers):
    cfg = config(write_config(tmp_path, ranks=2, job="steps: 1000000, restarts: 3, restart_delay: 0.2"))

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        await c.launch()
        while sum(isinstance(e, RankMetrics) for e in seen) < 10:
            await asyncio.sleep(0.05)
        await c.kill(by=StoppedBy.USER_KILL)
        summary = await asyncio.wait_for(c.wait(), 60)
        await c.close()
        return summary, seen

    summary, seen = asyncio.run(scenario())
    assert summary.status == JobState.KILLED and summary.stopped_by == StoppedBy.USER_KILL
    assert not any(isinstance(e, JobRestarted) for e in seen)


def test_boltring_kill_while_waiting_to_restart_stops_the_restart(tmp_path, no_leftovers):
    from .helpers import cli

    path = write_config(tmp_path, ranks=2, job="steps: 1000000, restarts: 2, restart_delay: 6")
    cfg = config(path)

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        await c.launch()
        while sum(isinstance(e, RankMetrics) for e in seen) < 10:
            await asyncio.sleep(0.05)
        os.kill(rank_process_pid(c, 1, no_leftovers), signal.SIGKILL)
        while c.state != JobState.RESTARTING:
            await asyncio.sleep(0.05)
        res = await asyncio.to_thread(cli, "kill", "--config", str(path), timeout=60)
        summary = await asyncio.wait_for(c.wait(), 60)
        await c.close()
        return res, summary, seen

    res, summary, seen = asyncio.run(scenario())
    assert res.returncode == 0 and "will not restart" in res.stdout, res.stdout + res.stderr
    assert summary.status == JobState.KILLED and summary.stopped_by == StoppedBy.USER_KILL, summary
    assert not any(isinstance(e, JobRestarted) for e in seen)


FAILS_ONCE = """
import os
import sys
from pathlib import Path

import mlx.core as mx

from boltring.netio import init

group = init()
marker = Path(sys.argv[1]) / f"failed-once-{group.rank}"
for i in range(1, int(os.environ["BOLTRING_STEPS"]) + 1):
    loss = group.all_sum(mx.array(1.0 / i)).item() / group.size
    group.report(step=i, loss=loss, samples=group.size)
    if i == 5 and not marker.exists():
        marker.write_text("failed")
        sys.exit(1)
group.close()
"""


def test_a_script_restart_never_claims_the_examples_checkpoint(tmp_path, no_leftovers):
    """The mlp example of the config left step-000020; a script of the same config that fails
    once is restarted "from step 0" (it never wrote or read that checkpoint), and it does start
    again to its end. It used to say "restart 1/1 from step 20 (step-000020.safetensors)"."""
    from .helpers import cli, run_job

    path = write_config(
        tmp_path, ranks=2, name="shared", job="steps: 20, checkpoint_every: 10, restart_delay: 0.5"
    )
    summary, _ = asyncio.run(run_job(config(path)))
    assert summary.status == JobState.FINISHED, summary.reason
    script = tmp_path / "train.py"
    script.write_text(FAILS_ONCE)
    args = ["--run", "--skip-checks", "--config", str(path), "--script", str(script), "--steps", "12"]
    res = cli(*args, "--restarts", "1", "--", str(tmp_path), timeout=240)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "restart 1/1 from step 0 after:" in out, out[-3000:]
    assert "step-000020" not in out, out[-3000:]
    assert sorted(p.name for p in tmp_path.glob("failed-once-*")) == ["failed-once-0", "failed-once-1"]
