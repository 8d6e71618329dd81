"""Textual messages of the boltring app, and the inbox that turns controller events into them.

The controller calls its listeners synchronously, on the loop thread, for every event. The
listener must be cheap and must never re-enter the UI, so it only appends the event to an
`EventInbox` and, when none is already queued, posts one `EventsPending` message. The app drains
the whole inbox when that message arrives: a burst of a thousand metrics lines costs one message
(toolong does the same with its file watcher). `EventsPending.can_replace` lets a queued one
supersede another, for the same reason.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from textual.message import Message

from boltring.cluster.jobs.events import Event, LogLine, RankMetrics

# Kinds that arrive at a high rate and whose loss only thins a plot or a log; every other
# event (states, checks, starts, exits, summaries) is always kept.
_DROPPABLE = (LogLine, RankMetrics)


class EventsPending(Message):
    """One or more controller events wait in the app's inbox."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EventsPending)


class NodeSelected(Message):
    """A node panel got the focus (or lost it, node=None): filter the log to that node."""

    def __init__(self, node: str | None) -> None:
        super().__init__()
        self.node = node


class NodeDetailsRequested(Message):
    """Enter on a node panel: open its details screen."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node


class EventInbox:
    """Events between two deliveries to the app.

    `put` is the controller listener's whole job; `drain` is called by the app's handler.
    When the app falls behind by more than `limit` events, further metrics and log lines are
    counted and dropped (the next `drain` reports how many) so memory stays bounded.
    """

    def __init__(self, post: Callable[[Message], object], limit: int = 20_000) -> None:
        self._post = post
        self._limit = limit
        self._events: deque[Event] = deque()
        self._posted = False
        self.dropped = 0

    def put(self, event: Event) -> None:
        if len(self._events) >= self._limit and isinstance(event, _DROPPABLE):
            self.dropped += 1
            return
        self._events.append(event)
        if not self._posted:
            self._posted = True
            self._post(EventsPending())

    def drain(self) -> tuple[list[Event], int]:
        """All pending events, oldest first, and how many were dropped since the last drain."""
        # Clear the flag before taking the events: an event put in between either lands in
        # this batch or posts a fresh message, never neither.
        self._posted = False
        events = list(self._events)
        self._events.clear()
        dropped, self.dropped = self.dropped, 0
        return events, dropped

    def __len__(self) -> int:
        return len(self._events)
