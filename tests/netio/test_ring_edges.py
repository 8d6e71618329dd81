"""Edges of one collective on genuine Rings in threads: a slow or stuck last hop, close() in the
middle, a left neighbour accepted when the right one never comes, chunks that disagree and
text off the wire in errors, and the chunk size against the receivers' frame limit."""

from __future__ import annotations

import os
import socket
import threading
import time
import types
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest

from boltring.netio.errors import FrameError, PeerTimeout, RingClosed
from boltring.netio.framing import DEFAULT_MAX_PAYLOAD, Channel, pack_header
from boltring.netio.handshake import client_handshake
from boltring.netio.ring import Ring, _Direction, chunk_bytes_for

from .ranks import free_ports

SECRET = os.urandom(32)


def _rings(n: int, job: str, **options) -> list[Ring]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
    return [Ring(r, n, addrs, SECRET, job, connect_timeout=10, same_host="tcp", **options) for r in range(n)]


def _in_threads(rings: list[Ring], body: Callable[[int], object]) -> dict[int, object]:
    """connect() then body(rank) on every ring, each in its own thread; outcome (or error) by rank."""
    out: dict[int, object] = {}

    def go(r: int) -> None:
        try:
            rings[r].connect()
            out[r] = body(r)
        except BaseException as e:
            out[r] = e

    threads = [threading.Thread(target=go, args=(r,), daemon=True) for r in range(len(rings))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads), "a rank hung"
    finally:
        for ring in rings:
            ring.close()
    return out


def _hold_all_gather_frames(ring: Ring, before_each: Callable[[], object]) -> None:
    """Call before_each() on the sender thread before each all-gather frame rank 0 sends right
    (2 ranks: step 1 is the all-gather; those frames are read from the caller's result)."""
    chan = ring.right
    assert chan is not None
    orig = chan.send_frame

    def send_frame(kind, payload=None, **fields):
        if fields.get("step") == 1:
            before_each()
        return orig(kind, payload, **fields)

    chan.send_frame = send_frame


# 2 ranks, 12 chunks of 128 KiB a segment: over the sender's inline size, so every frame goes
# through the sender thread.
CHUNK = 128 << 10
ELEMS = 2 * 12 * CHUNK // 4


def test_a_slow_last_hop_is_waited_for_and_the_result_is_not_sent_after_return():
    # Each of rank 0's 12 last frames leaves 0.2 s late: 2.4 s in all, past the old fixed wait
    # (timeout + 1 s) but never a silence as long as the timeout. The caller then reuses its
    # result: what rank 1 receives must still be the sum, and rank 0's sender must be empty.
    rings = _rings(2, "slow-hop", timeout=0.8, chunk_bytes=CHUNK)
    xs = [np.full(ELEMS, r + 1, np.float32) for r in range(2)]
    outs = [np.empty(ELEMS, np.float32) for _ in range(2)]

    def body(r: int):
        if r == 0:
            _hold_all_gather_frames(rings[0], lambda: time.sleep(0.2))
        rings[r].allreduce(xs[r], outs[r], "float32")
        flushed = rings[r]._senders[0].flushed()
        if r == 0:
            outs[0][:] = -7.0  # the caller reuses its result buffer
        return flushed

    out = _in_threads(rings, body)
    assert out == {0: True, 1: True}, out
    assert np.unique(outs[1]).tolist() == [3.0]


def test_a_last_hop_that_makes_no_progress_fails_with_peer_timeout():
    rings = _rings(2, "stuck-hop", timeout=0.5, chunk_bytes=CHUNK)
    release = threading.Event()  # the stuck sender is let go at the end, whatever happened
    xs = [np.ones(ELEMS, np.float32) for _ in range(2)]

    def body(r: int):
        if r == 0:
            _hold_all_gather_frames(rings[0], lambda: release.wait(10))
        t0 = time.monotonic()
        try:
            rings[r].allreduce(xs[r], np.empty_like(xs[r]), "float32")
        finally:
            if r == 0:
                release.set()
        return time.monotonic() - t0

    try:
        out = _in_threads(rings, body)
    finally:
        release.set()
    assert isinstance(out[0], PeerTimeout), out[0]
    assert "accepted none of our last frames for 0.5 s" in str(out[0])


def test_close_during_a_collective_blames_this_rank_and_later_calls_say_closed():
    rings = _rings(2, "close")
    x = np.ones(1 << 16, np.float32)
    started = threading.Event()

    def body(r: int):
        if r == 0:
            started.wait(5)
            return None  # never joins the collective: rank 1 stays blocked until it closes
        closer = threading.Timer(0.2, rings[1].close)
        closer.start()
        started.set()
        try:
            rings[1].allreduce(x, np.empty_like(x), "float32")
        except Exception as e:
            first = e
        closer.join()
        with pytest.raises(RingClosed, match=r"rank 1's ring was closed") as later:
            rings[1].allreduce(x, np.empty_like(x), "float32")
        return first, later.value

    out = _in_threads(rings, body)
    first, later = cast(tuple[Exception, Exception], out[1])
    assert isinstance(first, RingClosed), first
    assert "rank 1 closed its ring" in str(first) and first.peer is None
    assert "not connected" not in str(later)


def test_a_left_neighbour_accepted_is_hung_up_on_when_the_right_one_never_comes():
    p0, p1 = free_ports(2)  # nobody ever listens on p1: rank 0's right neighbour never comes
    ring = Ring(
        0, 2, [f"127.0.0.1:{p0}", f"127.0.0.1:{p1}"], SECRET, "leak", connect_timeout=1.5, same_host="tcp"
    )
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            ring.connect()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    sock = None
    try:
        for _ in range(100):  # until rank 0 listens
            try:
                sock = socket.create_connection(("127.0.0.1", p0), timeout=1)
                break
            except OSError:
                time.sleep(0.02)
        assert sock is not None
        chan = Channel(sock, "rank 0", timeout=2)
        client_handshake(chan, SECRET, "leak", 1, 2, 0)  # we are its left neighbour, accepted
        t.join(10)
        assert errors, "connect() should have failed: the right neighbour never listened"
        sock.settimeout(2)
        assert sock.recv(1) == b"", "rank 0 still holds the accepted connection open"
    finally:
        if sock is not None:
            sock.close()
        ring.close()
        t.join(5)


def _expect_from(header: dict) -> str:
    """The error _Direction.expect raises for `header`, read off a socket pair."""
    a, b = socket.socketpair()
    try:
        recv = Channel(a, "rank 1 (peer)", timeout=2)
        b.sendall(pack_header("data", **header))
        ring = types.SimpleNamespace(size=2, _op=1)
        src = np.zeros(1 << 20, np.float32)
        none: Any = None  # expect() never sends
        plan = _Direction(cast(Any, ring), src, "float32", 0, recv, none, 1 << 18, lambda: src)
        with pytest.raises(FrameError) as err:
            plan.expect(0, 1 << 18, 0, "reduce-scatter")
        return str(err.value)
    finally:
        a.close()
        b.close()


EXPECTED = {"op": 1, "step": 0, "off": 0, "len": 1 << 20, "dtype": "float32"}


def test_a_chunk_of_another_size_is_named_with_its_size_and_the_likely_cause():
    message = _expect_from({**EXPECTED, "nbytes": 2 << 20})
    assert "sent a 2097152-byte chunk" in message and "expected 1048576 bytes" in message
    assert "ring.chunk_mb" in message


def test_text_from_the_wire_cannot_forge_lines_in_a_frame_error():
    message = _expect_from({**EXPECTED, "dtype": "float32\nrank 3 died", "nbytes": 1 << 20})
    assert "\n" not in message
    assert r"'float32\nrank 3 died'" in message


def test_chunks_never_exceed_what_a_receiver_accepts_in_one_frame():
    assert chunk_bytes_for(8 << 30, 1 << 30) <= DEFAULT_MAX_PAYLOAD
    assert chunk_bytes_for(64 << 20, 4 << 20) == 4 << 20  # the usual sizes are unchanged
