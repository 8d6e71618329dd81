"""A rank that leaves early (its script returns, exit code 0) while the others are still in a
collective is the cause, named as such: not "rank 0 failed: connection to a peer was lost" (MLX's
ring, which names no peer) nor "rank 1 exited with an error (code 0)" (boltring's ring)."""

from __future__ import annotations

import pytest

from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs.blame import RankFacts, decide

from .helpers import cli, events

LEFT = "exited (code 0) while the others were still in a collective"


def left_rank(rank: int = 1) -> RankFacts:
    return RankFacts(rank, "local", exited=True, returncode=0, exit={"returncode": 0})


def test_boltring_ring_the_rank_the_others_lost_left():
    lost = RankFacts(
        0,
        "local",
        exited=True,
        returncode=1,
        exit={"error": "PeerClosed", "peer_rank": 1, "direction": "recv"},
    )
    v = decide([lost, left_rank()])
    assert (v.cause, v.reason, v.what) == (1, f"rank 1 on local {LEFT}", LEFT)
    assert v.evidence == ["rank 0 on local lost the connection receiving from rank 1"] and v.certain


def test_mlx_ring_names_the_rank_that_left_not_the_one_that_lost_an_unnamed_peer():
    lost = RankFacts(
        0,
        "local",
        exited=True,
        returncode=1,
        exit={"error": "RuntimeError", "message": "[ring] connection to a peer was lost"},
    )
    v = decide([lost, left_rank()])
    assert (v.cause, v.reason) == (1, f"rank 1 on local {LEFT}"), v.reason
    assert v.evidence == ["rank 0 on local lost a ring peer"] and v.certain


def test_a_rank_that_failed_on_its_own_is_still_the_cause_over_one_that_left():
    own = RankFacts(0, "local", exited=True, returncode=1, exit={"error": "ValueError", "message": "bad"})
    v = decide([own, left_rank()])
    assert v.cause == 0 and v.reason == "rank 0 on local failed: ValueError: bad"


def test_a_lone_unnamed_peer_loss_waits_while_other_ranks_still_run():
    lost = RankFacts(
        0,
        "local",
        exited=True,
        returncode=1,
        exit={"error": "RuntimeError", "message": "[ring] connection to a peer was lost"},
    )
    running = RankFacts(1, "local", alive=True)
    assert not decide([lost, running]).certain  # rank 1 may yet be found frozen or gone
    assert decide([lost, RankFacts(1, "local", exited=True, returncode=1, exit={})]).certain


BOLTRING_SCRIPT = """
import sys, time
import mlx.core as mx
from boltring.netio import init

group = init()
x = mx.ones((16,))
for step in range(1, 1_000_000):
    if group.rank == 1 and step == 5:
        sys.exit(0)
    mx.eval(group.all_sum(x))
    group.report(step=step, loss=1.0, samples=1)
    time.sleep(0.02)
"""

MLX_SCRIPT = """
import sys, time
import mlx.core as mx

group = mx.distributed.init()
x = mx.ones((16,))
for step in range(1, 1_000_000):
    if group.rank() == 1 and step == 5:
        sys.exit(0)
    mx.eval(mx.distributed.all_sum(x, group=group))
    time.sleep(0.02)
"""


@pytest.mark.parametrize("backend, script", [("boltring", BOLTRING_SCRIPT), ("mlx-ring", MLX_SCRIPT)])
def test_a_rank_that_exits_early_is_named(tmp_path, no_leftovers, backend, script):
    path = tmp_path / "leaves.py"
    path.write_text(script)
    cfg = tmp_path / "leaves.yaml"
    cfg.write_text(
        "name: leaves\nnodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        f"ring: {{port: {free_port_block(2)}, timeout: 5, backend: {backend}}}\n"
        f"job: {{script: {path}, steps: 1000000}}\n"
    )
    res = cli("--run", "--json", "--skip-checks", "--config", str(cfg), timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    failed = [e for e in events(res.stdout) if e["event"] == "state" and e["state"] == "failed"]
    assert len(failed) == 1, failed
    assert failed[0]["blamed"] == {"rank": 1, "node": "local", "cause": LEFT}, failed
    assert failed[0]["reason"].startswith(f"rank 1 on local {LEFT}"), failed
