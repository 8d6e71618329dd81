"""A command given more input than a pipe holds (64 KB) still stops when its call is cancelled
(netns lab). The stopper used to pipe the input in with `head -c N`, which blocked on a command
that never read it, so the watcher that stops the command never started: the cancel waited out
its 6 s and the command kept running. Input is now spooled into an unlinked temp file first."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import pytest

from tests.integration.test_ssh_cancel import (
    STOPPED_WITHIN_S,
    make,
    marker_seconds,
    remote_pids,
    wait_started,
)
from tests.lab import Lab

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.mark.parametrize("size", [1_000, 200_000])
async def test_cancel_stops_a_command_that_never_reads_its_input(lab: Lab, size: int) -> None:
    t = make(lab)
    marker = marker_seconds()
    try:
        task = asyncio.ensure_future(t.run(["sleep", marker], input=b"x" * size, timeout=600))
        await wait_started(lab, "h1", marker)
        await asyncio.sleep(0.3)  # the watcher has started by now, if it ever does
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - cancelled_at
        assert not remote_pids(lab, "h1", marker), f"sleep still runs on h1 after the cancel ({size} B)"
        assert took < 2, f"stopping took {took:.1f} s"  # TERM ends sleep at once
        assert (await t.run(["echo", "ok"])).stdout == "ok\n"
    finally:
        for pid in remote_pids(lab, "h1", marker):  # never leave one behind, even on failure
            os.kill(pid, 9)
        await t.close()


async def test_input_is_in_an_unlinked_file_while_the_command_runs(lab: Lab) -> None:
    """The spooled input has no name on the node's disk: the command's stdin is a deleted file."""
    t = make(lab)
    marker = marker_seconds()
    secret = secrets.token_hex(16).encode()
    try:
        argv = ["sh", "-c", 'sleep "$1"; cat', "sh", marker]
        task = asyncio.ensure_future(t.run(argv, input=secret, timeout=STOPPED_WITHIN_S + 30))
        await wait_started(lab, "h1", marker, count=3)  # the stopper, the command, its sleep
        # the command itself (the stopper's argv holds the same words further on)
        (pid,) = [p for p in remote_pids(lab, "h1", marker) if _cmdline(p).startswith(b"sh\0-c\0sleep")]
        stdin = os.readlink(f"/proc/{pid}/fd/0")
        assert stdin.endswith(" (deleted)"), stdin
        assert Path(f"/proc/{pid}/fd/0").read_bytes() == secret
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        for pid in remote_pids(lab, "h1", marker):
            os.kill(pid, 9)
        await t.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
