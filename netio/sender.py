"""The ring's writer for one connection: data frames in order, small ones at once.

Each ring connection has one Sender thread, so a rank keeps receiving and reducing while its
chunks go out. Small frames skip the thread (see `Sender`): for a 4 KiB allreduce the hand-off
was most of the time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

from .framing import Channel

INLINE_SEND_BYTES = 64 << 10  # frames up to this size may skip the sender thread (Sender.submit)


class Sender(threading.Thread):
    """Streams data frames to one channel, in order: a frame is queued for this thread, or,
    when it is small and nothing is queued, written at once by the thread that submits it.

    Handing a frame to this thread costs a wake-up and a turn of the GIL each way, about 50 us
    on the 2-core VM: nothing beside a large chunk, but most of a small allreduce. A small
    frame therefore goes straight to the socket when the queue is empty and the socket takes
    it without waiting (`try_send_frame`, one non-blocking write); what it does not take is
    queued first in line, so frames never overtake each other and no thread blocks writing
    while its own reads are due (which, round a ring, could deadlock)."""

    def __init__(self, chan: Channel, on_error: Callable[[BaseException], None]):
        super().__init__(name=f"boltring-send-{chan.peer}", daemon=True)
        self.chan = chan
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.on_error = on_error
        self.failed = False
        self.lock = threading.Lock()  # one writer on the socket at a time
        self.queued = 0  # frames queued; only the submitting thread writes it
        self.finished = 0  # of those, written or dropped; only this thread writes it

    def submit(self, view: np.ndarray, fields: dict) -> None:
        if (
            view.nbytes <= INLINE_SEND_BYTES
            and self.queued == self.finished
            and not self.failed
            and self.lock.acquire(blocking=False)
        ):
            try:
                rest = self.chan.try_send_frame("data", view, **fields)
            except BaseException as e:
                self.failed = True
                self.on_error(e)
                return
            finally:
                self.lock.release()
            if not rest:
                return
            item: object = rest
        else:
            item = (view, fields)
        self.queued += 1
        self.q.put(item)

    def flushed(self) -> bool:
        """Every submitted frame is in the kernel's hands (or the collective failed)."""
        return self.queued == self.finished

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            if not self.failed:  # else drain silently: the collective is already being aborted
                try:
                    with self.lock:
                        if isinstance(item, list):  # the rest of a frame begun by submit()
                            self.chan.send_parts(item, "data")
                        else:
                            view, fields = item
                            self.chan.send_frame("data", view, **fields)
                except BaseException as e:
                    self.failed = True
                    self.on_error(e)
            # Drop the view now: held until the next frame, it would keep the whole previous
            # output alive while the caller allocates the next one (twice the memory).
            item = view = None
            self.finished += 1
