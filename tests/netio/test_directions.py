"""ring.directions: how many ways round the ring a collective travels, and what reaches the wire.

Three genuine Rings in threads of this process, on loopback: with one direction no rank sends
anything to its left neighbour; with two, both connections carry half of the payload each way.
"""

from __future__ import annotations

import pytest

from boltring.netio.jobenv import JobEnv, JobEnvError
from boltring.netio.ring import ring_directions

from .ranks import free_ports
from .ring_threads import reduce_in_threads

SIZE = 3
ELEMS = (1 << 20) + 7  # 4 MiB of float32, over the two-way threshold, not divisible by 3


def _run_ring(directions: int) -> list[tuple[int, int, int]]:
    """Each rank's (directions taken, payload bytes sent left, payload bytes sent right)."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(SIZE)]
    views, _ = reduce_in_threads(addrs, ELEMS, job="dirs", directions=directions)
    return [(v.directions, v.sent_left, v.sent_right) for v in views]


@pytest.mark.parametrize("directions", [1, 2])
def test_the_payload_travels_the_ways_round_the_ring_that_were_asked_for(directions):
    payload = 2 * (SIZE - 1) * ELEMS * 4 / SIZE  # what each rank sends in all (a ring's 2(n-1)/n)
    slack = 4 * SIZE  # segments differ by at most one element
    for taken, left, right in _run_ring(directions):
        assert taken == directions
        if directions == 1:
            assert left == 0 and abs(right - payload) <= slack
        else:
            assert abs(left - payload / 2) <= slack and abs(right - payload / 2) <= slack


def test_auto_takes_one_direction_for_two_ranks_and_for_ranks_on_one_host():
    local = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    nodes = ["198.18.0.1:1", "198.18.0.2:1", "198.18.0.3:1"]
    assert ring_directions(0, 2, local[:2]) == 1
    assert ring_directions(0, 2, nodes[:2]) == 1
    assert ring_directions(2, 2, nodes[:2]) == 1  # two ranks: one direction already uses both ways
    assert ring_directions(0, 3, local) == 1
    assert ring_directions(0, 3, nodes) == 2
    assert ring_directions(1, 3, nodes) == 1
    assert ring_directions(2, 3, local) == 2


def test_directions_travel_in_the_job_environment_and_bad_values_are_refused():
    env = JobEnv(rank=0, size=1, directions=2).to_environ()
    assert env["BOLTRING_RING_DIRECTIONS"] == "2" and JobEnv.from_environ(env).directions == 2
    default = JobEnv(rank=0, size=1).to_environ()
    assert default["BOLTRING_RING_DIRECTIONS"] == "auto" and JobEnv.from_environ(default).directions == 0
    with pytest.raises(JobEnvError, match=r"BOLTRING_RING_DIRECTIONS='3' is not auto, 1 or 2"):
        JobEnv.from_environ({**env, "BOLTRING_RING_DIRECTIONS": "3"})
