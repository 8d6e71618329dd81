"""A job followed by two controllers at once: the one that launched it and `status --follow`
in another terminal (the app re-attaching is the same). Only the owner restarts it: both used
to restart it ("restart 1/1" twice), the second launch failed "a rank is already running", and
the job ended failed. The follower follows the owner's restart instead, to the job's end."""

from __future__ import annotations

import asyncio

from boltring.cluster.config.load import load_config
from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import JobRestarted, RankMetrics
from boltring.cluster.states import JobState
from tests.procs import read_to_exit, start_cli, wait_for_step

from .helpers import events

# Fails once on each rank, when the test says (the `go` file), then runs to its end.
FAILS_ONCE_ON_CUE = """
import sys
import time
from pathlib import Path

import mlx.core as mx

from boltring.netio import init

group = init()
here = Path(sys.argv[1])
marker = here / f"failed-once-{group.rank}"
for i in range(1, 61):
    loss = group.all_sum(mx.array(1.0 / i)).item() / group.size
    group.report(step=i, loss=loss, samples=group.size)
    time.sleep(0.05)
    if (here / "go").exists() and not marker.exists():
        marker.write_text("failed")
        sys.exit(1)
group.close()
"""


def test_only_the_owner_restarts_while_status_follow_watches(tmp_path, no_leftovers):
    (tmp_path / "train.py").write_text(FAILS_ONCE_ON_CUE)
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\nnodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        f"ring: {{port: {free_port_block(2)}}}\n"
        f"job: {{script: train.py, args: [{str(tmp_path)!r}], steps: 60, restarts: 1, restart_delay: 0.5}}\n"
    )

    async def scenario():
        c = JobController(load_config(str(path)), poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        proc = None
        try:
            await c.launch()
            while not any(isinstance(e, RankMetrics) for e in seen):
                await asyncio.sleep(0.05)
            proc = start_cli("status", "--follow", "--json", "--config", str(path))
            first = await asyncio.to_thread(wait_for_step, proc, 1)  # attached, following
            (tmp_path / "go").write_text("")
            summary = await asyncio.wait_for(c.wait(), 120)
            out, err = await asyncio.to_thread(read_to_exit, proc, 60)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
            await c.close()
        return summary, seen, proc.returncode, first + out, err

    summary, seen, code, out, err = asyncio.run(scenario())
    assert summary.status == JobState.FINISHED, summary.reason
    assert [e.attempt for e in seen if isinstance(e, JobRestarted)] == [1]
    assert len(summary.restarts) == 1, summary.restarts
    evs = events(out)
    assert "restart 1/1 in" not in out, out[-3000:]  # it never restarted the job itself
    assert "restarted by the controller that launched it (restart 1/1)" in out, out[-3000:]
    assert evs[-1]["event"] == "summary" and evs[-1]["status"] == "finished", (out[-3000:], err[-2000:])
    assert code == 0, (out[-3000:], err[-2000:])
