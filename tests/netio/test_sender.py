"""The ring's sender: small frames written at once by the submitting thread, large ones (and
everything behind a queued frame) by the sender thread; whatever the mix, frames reach the
peer whole and in the order they were submitted. Real TCP sockets on loopback, in-process."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from boltring.netio.framing import Channel
from boltring.netio.sender import INLINE_SEND_BYTES, Sender

from .sockets import tcp_pair


@pytest.fixture
def link():
    """(sender, reader Channel) over TCP on loopback; the sender thread is stopped afterwards."""
    r, w = tcp_pair()
    errors: list[BaseException] = []
    sender = Sender(Channel(w, "reader", timeout=10.0), errors.append)
    sender.start()
    reader = Channel(r, "sender", timeout=10.0, max_payload=64 << 20)
    yield sender, reader, errors
    sender.q.put(None)
    sender.join(timeout=5)
    sender.chan.close()
    reader.close()


def _frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [16, INLINE_SEND_BYTES, 4 << 20, 8, 3, 2 << 20, 100, INLINE_SEND_BYTES + 1, 5, 1 << 20, 7]
    return [rng.integers(0, 255, size=n, dtype=np.uint8) for n in sizes]


def _read_all(reader: Channel, n: int, out: list, slow: bool) -> None:
    try:
        for _ in range(n):
            h = reader.recv_header("data")
            buf = np.empty(h["nbytes"], np.uint8)
            if slow:
                threading.Event().wait(0.02)  # let the socket fill: later frames must queue
            reader.recv_payload(memoryview(buf), "a frame")
            out.append((h["i"], buf))
    except BaseException as e:
        out.append(e)


@pytest.mark.parametrize("slow", [False, True], ids=["fast-reader", "slow-reader"])
def test_frames_arrive_whole_and_in_order_whatever_path_they_take(link, slow):
    sender, reader, errors = link
    frames = _frames(3) * 3
    got: list = []
    t = threading.Thread(target=_read_all, args=(reader, len(frames), got, slow))
    t.start()
    for i, f in enumerate(frames):
        sender.submit(f, {"i": i})
    t.join(timeout=60)
    assert not t.is_alive() and not errors
    assert [i for i, _ in got] == list(range(len(frames)))
    for (_, buf), f in zip(got, frames, strict=True):
        np.testing.assert_array_equal(buf, f)
    done = threading.Event()
    sender.q.put(done)
    assert done.wait(5) and sender.flushed()


def test_a_small_frame_with_nothing_queued_skips_the_sender_thread(link):
    sender, reader, errors = link
    sender.submit(np.arange(10, dtype=np.float32), {"i": 0})
    assert sender.queued == 0 and sender.flushed()  # written by this thread, at once
    assert reader.recv_header("data")["i"] == 0
    buf = np.empty(10, np.float32)
    reader.recv_payload(memoryview(buf).cast("B"), "a frame")
    np.testing.assert_array_equal(buf, np.arange(10, dtype=np.float32))
    sender.submit(np.zeros(INLINE_SEND_BYTES + 4, np.uint8), {"i": 1})  # large: queued
    assert sender.queued == 1 and not errors


def test_a_small_frame_behind_a_queued_one_is_queued_too(link):
    sender, reader, errors = link
    big = np.ones(8 << 20, np.uint8)  # far more than the socket holds: the thread is still on it
    sender.submit(big, {"i": 0})
    sender.submit(np.arange(4, dtype=np.uint8), {"i": 1})
    assert sender.queued == 2  # not written ahead of the big frame
    got: list = []
    _read_all(reader, 2, got, slow=False)
    assert [i for i, _ in got] == [0, 1] and not errors
