"""Genuine Rings in threads of this process: connect them, sum one random vector per rank,
check the sums (close to float64's, the same bits on every rank), and say how each rank did it."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from boltring.netio.ring import Ring


@dataclass(frozen=True)
class RankView:
    directions: int  # ways round the ring the collective took
    transport: str  # Ring.transport: "unix", "tcp" or "tcp+unix"
    families: frozenset[int]  # socket families of its two connections
    sent_left: int  # payload bytes sent to the left neighbour
    sent_right: int


def reduce_in_threads(
    addrs: list[str], elems: int, *, job: str = "threads", **ring_options
) -> tuple[list[RankView], list[np.ndarray]]:
    """One Ring per address (with `ring_options`), one allreduce of `elems` float32 each."""
    secret, n = os.urandom(32), len(addrs)
    rings = [Ring(r, n, addrs, secret, job, timeout=10, connect_timeout=10, **ring_options) for r in range(n)]
    inputs = [np.random.default_rng(r).standard_normal(elems).astype(np.float32) for r in range(n)]
    outputs = [np.empty_like(x) for x in inputs]
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            rings[r].connect()
            rings[r].allreduce(inputs[r], outputs[r], "float32")
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not errors, errors
        assert not any(t.is_alive() for t in threads), "a rank hung"
        reference = np.sum([x.astype(np.float64) for x in inputs], axis=0)
        for out in outputs:
            np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
            assert out.tobytes() == outputs[0].tobytes()  # the same bits on every rank
        views = []
        for ring in rings:
            left, right = ring.left, ring.right
            assert left is not None and right is not None
            views.append(
                RankView(
                    ring.directions,
                    ring.transport,
                    frozenset({left.sock.family, right.sock.family}),
                    left.bytes_sent,
                    right.bytes_sent,
                )
            )
        return views, outputs
    finally:
        for ring in rings:
            ring.close()
