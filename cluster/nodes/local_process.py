"""Commands on this machine, each in its own process group, stopped whole however the wait ends.

Used by LocalTransport (a local node's commands), setup's pip runs and the job-args check before
a launch. A command leads its own session, so a stop reaches everything it started (pip's build
backend, a shell's background jobs) and nothing else.

Why starting is shielded: asyncio (CPython 3.11) forks the process, then takes a few loop turns
to connect its pipes. A cancel in those turns (Ctrl-C, SIGTERM, a caller's timeout) made it kill
the leader alone and then wait until every pipe closed, which children that held them kept open
until they ended on their own: the cancel hung (a CI run waited 5 minutes for a `sleep`) and the
children outlived it. So a start runs to its end, and a cancel that came meanwhile stops the
whole group before it goes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

STOP_GRACE_S = 3.0  # SIGTERM, then this long for the command to end, then SIGKILL


async def start_group(argv: list[str], **pipes: Any) -> asyncio.subprocess.Process:
    """asyncio.create_subprocess_exec(*argv, **pipes) in a new session; safe to cancel."""
    starting = asyncio.ensure_future(asyncio.create_subprocess_exec(*argv, start_new_session=True, **pipes))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        while not starting.done():
            try:
                await asyncio.wait({starting})  # (unlike an await, a cancel here spares the start)
            except asyncio.CancelledError:
                pass  # a second cancel: the start must still end before the group can be stopped
        if not starting.cancelled() and starting.exception() is None:  # (it may never have started)
            await stop_group(starting.result())
        raise


async def stop_group(proc: asyncio.subprocess.Process, grace: float | None = STOP_GRACE_S) -> None:
    """SIGTERM to the command's process group, SIGKILL to what is left after `grace` seconds
    (at once when `grace` is None); returns once the command is gone, as SSH's stop does."""
    kill: tuple[tuple[signal.Signals, float | None], ...] = ((signal.SIGKILL, None),)
    steps = kill if grace is None else ((signal.SIGTERM, grace), *kill)
    for sig, wait_s in steps:
        _signal_group(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), wait_s)
        except TimeoutError:
            continue
        if sig == signal.SIGTERM:  # the leader is gone: anything left in its group goes too
            _signal_group(proc.pid, signal.SIGKILL)
        return


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
