"""`boltring kill` with a node that cannot be reached: it waited for that node's ranks to end,
with no word, until the node came back (10 min in the lab audit), then said it had killed every
rank. It now stops what it can reach and says which node it could not."""

from __future__ import annotations

import asyncio

from boltring.cluster.jobs.events import RanksNotStopped
from boltring.tui import status_and_kill


class UnreachableNode:
    """The controller's side of `boltring kill` when h2 does not answer over SSH."""

    job_id = "lab-1"

    def __init__(self) -> None:
        self.listeners: list = []
        self.closed = False

    async def attach(self) -> bool:
        return True

    def add_listener(self, fn) -> None:
        self.listeners.append(fn)

    async def kill(self, by) -> None:
        for fn in self.listeners:
            fn(RanksNotStopped(node="h2", ranks=[1], cause="no SSH answer within 5 s"))
        await asyncio.Event().wait()  # h2's rank's end can never be read

    async def close(self) -> None:
        self.closed = True


def test_kill_says_which_node_it_could_not_reach_and_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(status_and_kill, "KILL_WAIT_S", 0.2)
    controller = UnreachableNode()
    assert asyncio.run(status_and_kill.run_kill(controller)) == 1  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.startswith(
        "boltring: stopped the ranks of job lab-1 it could reach; could not stop the ranks on h2"
    )
    assert "run `boltring kill` again once the node answers" in out and controller.closed
