"""A node that never answers again after the job is stopped (unplugged): the job ends failed
after a bound, naming that node's ranks as unconfirmed (RanksNotStopped), and kill() returns.
The controller waited for their ends forever, and so did a kill. Real local ranks on two
"nodes" of this machine; node b's transport stops answering, as SSH to an unplugged Mac does."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import time

from boltring.cluster.config.load import load_config
from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs import watch
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import RankMetrics, RanksNotStopped
from boltring.cluster.nodes.errors import ConnectionLost
from boltring.cluster.nodes.transport import LocalTransport
from boltring.cluster.states import JobState, StoppedBy

from .helpers import rank_dir


class Unplugged(LocalTransport):
    down = False

    async def run(self, argv, *, input=None, timeout=30.0):
        if Unplugged.down:
            raise ConnectionLost(f"{self.node.name}: no SSH answer (unplugged)")
        return await super().run(argv, input=input, timeout=timeout)

    async def read_from(self, path, offset, limit=1 << 20):
        if Unplugged.down:
            raise ConnectionLost(f"{self.node.name}: no SSH answer (unplugged)")
        return await super().read_from(path, offset, limit)


def test_a_kill_with_a_node_gone_for_good_ends_failed_naming_its_ranks(tmp_path, no_leftovers, monkeypatch):
    monkeypatch.setattr(watch, "UNCONFIRMED_WAIT_S", 3.0, raising=False)
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\nnodes:\n  - {name: a, local: true, ring_ip: 127.0.0.1, ranks: 1}\n"
        "  - {name: b, local: true, ring_ip: 127.0.0.2, ranks: 1}\n"
        f"ring: {{port: {free_port_block(2)}}}\njob: {{example: mlp, global_batch: 60, steps: 1000000}}\n"
    )

    def factory(node, config, on_state):
        return (Unplugged if node.name == "b" else LocalTransport)(node, on_state)

    async def scenario():
        Unplugged.down = False
        c = JobController(load_config(str(path)), poll_s=0.1, transport_factory=factory)
        seen: list = []
        c.add_listener(seen.append)
        try:
            await c.launch()
            while sum(isinstance(e, RankMetrics) for e in seen) < 4:
                await asyncio.sleep(0.05)
            Unplugged.down = True
            t0 = time.monotonic()
            await asyncio.wait_for(c.kill(by=StoppedBy.USER_KILL), 30)
            took = time.monotonic() - t0
            summary = await asyncio.wait_for(c.wait(), 5)
            return summary, seen, took, c.unconfirmed_ranks(), rank_dir(c, 1, no_leftovers)
        finally:
            Unplugged.down = False
            await c.close()

    summary, seen, took, unconfirmed, b_run = asyncio.run(scenario())
    # The record has ended, so `boltring kill` would not find the rank: the reason names the
    # command that stops it on its node, and that command, pasted, does ("b answers again").
    said = (summary.reason or "").split("once the node answers, this stops them: ", 1)[-1].rstrip(")")
    words = shlex.split(said)
    assert words[-3:-1] == ["boltring.cluster.agent.spawn", "kill"], summary.reason
    assert os.path.expanduser(words[-1]) == str(b_run), (words, b_run)  # spawn expands the ~
    pasted = subprocess.run(shlex.split(said), capture_output=True, text=True, timeout=60)
    assert pasted.returncode == 0, pasted
    answer = json.loads(pasted.stdout.strip().splitlines()[-1])
    assert answer["run_dir"] == str(b_run), answer
    assert answer["alive"] is False, answer  # stopped by it, or ended by itself before
    assert summary.status == JobState.FAILED, summary
    assert unconfirmed == {"b": [1]}, unconfirmed
    assert [(e.node, e.ranks) for e in seen if isinstance(e, RanksNotStopped)] == [("b", [1])]
    assert "rank(s) 1 on b" in (summary.reason or "") and "may still run" in (summary.reason or ""), summary
    assert took < 20, took
