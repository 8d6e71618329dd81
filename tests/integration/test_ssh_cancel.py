"""A remote command stops when its caller stops waiting (netns lab): cancelling `run_lines` or
`run` (Ctrl-C or SIGTERM during `boltring setup`'s pip install or venv creation), or hitting its
timeout, stops the command and everything it started on the node before the call returns, within
a few seconds; no asyncio "exception was never retrieved" noise; the connection stays usable."""

from __future__ import annotations

import asyncio
import gc
import secrets
import time
from pathlib import Path

import pytest

from boltring.cluster.nodes.ssh import SshTransport
from boltring.cluster.nodes.transport import CommandTimeout, TransportError
from tests.lab import Lab
from tests.lab.netns import _netns_inode, _pids_in_netns

pytestmark = pytest.mark.netns

STOPPED_WITHIN_S = 6.0  # the call returns with the command gone within this (TERM, then KILL at 3 s)


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def make(lab: Lab, host: str = "h1") -> SshTransport:
    return SshTransport(lab.node(host), options=lab.ssh_options())


def marker_seconds() -> str:
    """A sleep length no other process on the machine uses: it names our processes in ps."""
    return f"{300 + secrets.randbelow(10**6) / 1000:.3f}"


def remote_pids(lab: Lab, host: str, marker: str) -> list[int]:
    """Processes in the host's namespace whose command line mentions marker (zombies excluded)."""
    inode = _netns_inode(lab.host(host).ns)
    found = []
    for pid in _pids_in_netns({inode} if inode else set()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(pid)
    return found


async def wait_started(lab: Lab, host: str, marker: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while len(remote_pids(lab, host, marker)) < count:
        assert time.monotonic() < deadline, f"the command with {marker} never started on {host}"
        await asyncio.sleep(0.05)


def never_retrieved(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Collects what asyncio would print as "exception was never retrieved" and the like."""
    said: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: said.append(str(ctx.get("message"))))
    return said


# sleeps in a child AND a grandchild: the whole process group must go, not just the first process
TREE = 'sleep "$1" & sh -c "sleep $1" & echo started; wait'


@pytest.mark.parametrize("how", ["run_lines", "run", "run with input"])
async def test_cancelled_command_is_stopped_on_the_node(lab: Lab, how: str) -> None:
    said = never_retrieved(asyncio.get_running_loop())
    t = make(lab)
    marker = marker_seconds()
    argv = ["sh", "-c", TREE, "sh", marker]
    lines: list[str] = []
    try:
        await t.connect()
        if how == "run_lines":
            call = t.run_lines(argv, lines.append, timeout=600)
        elif how == "run":
            call = t.run(argv, timeout=600)
        else:  # the command reads its input first, as spawn and the probes do
            argv = ["sh", "-c", 'read -r x; test "$x" = go || exit 9; ' + TREE, "sh", marker]
            call = t.run(argv, input=b"go\n", timeout=600)
        task = asyncio.ensure_future(call)
        await wait_started(lab, "h1", marker, count=2)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - cancelled_at
        left = remote_pids(lab, "h1", marker)
        assert not left, f"still running on h1 after the {how} call was cancelled: {left}"
        assert took < STOPPED_WITHIN_S, f"stopping took {took:.1f} s"
        # the connection is still fine
        assert (await t.run(["echo", "ok"])).stdout == "ok\n"
    finally:
        await t.close()
    del task
    gc.collect()
    await asyncio.sleep(0)
    assert not said, said


async def test_timed_out_command_is_stopped_on_the_node(lab: Lab) -> None:
    said = never_retrieved(asyncio.get_running_loop())
    t = make(lab)
    marker = marker_seconds()
    try:
        for call in ("run_lines", "run"):
            started = time.monotonic()
            argv = ["sh", "-c", TREE, "sh", marker]
            with pytest.raises(TransportError, match=r"h1: sh -c .* took over 1 s") as e:
                if call == "run_lines":
                    await t.run_lines(argv, lambda line: None, timeout=1)
                else:
                    await t.run(argv, timeout=1)
            assert isinstance(e.value, CommandTimeout)
            assert time.monotonic() - started < 1 + STOPPED_WITHIN_S
            assert not remote_pids(lab, "h1", marker), f"{call}: still running on h1 after its timeout"
    finally:
        await t.close()
    gc.collect()
    await asyncio.sleep(0)
    assert not said, said


async def test_command_that_ignores_sigterm_is_killed(lab: Lab) -> None:
    t = make(lab)
    marker = marker_seconds()
    stubborn = 'trap "" TERM; sleep "$1" & wait; sleep "$1"'
    try:
        task = asyncio.ensure_future(t.run_lines(["sh", "-c", stubborn, "sh", marker], print, timeout=600))
        await wait_started(lab, "h1", marker, count=2)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - cancelled_at < STOPPED_WITHIN_S
        assert not remote_pids(lab, "h1", marker)
    finally:
        await t.close()


async def test_commands_still_behave_as_before(lab: Lab) -> None:
    """What the stopper wraps is invisible: exit codes, stdin at EOF, input, output, a missing
    program, lines as they come."""
    t = make(lab)
    try:
        r = await t.run(["sh", "-c", 'echo "out $1"; echo err >&2; exit 3', "sh", "a b; $(x)"])
        assert (r.returncode, r.stdout, r.stderr) == (3, "out a b; $(x)\n", "err\n")
        assert (await t.run(["sh", "-c", "cat; echo end"])).stdout == "end\n"  # stdin at EOF
        big = secrets.token_bytes(300_000)  # more than a pipe holds
        r = await t.run(["sh", "-c", "wc -c; echo done"], input=big)
        assert r.stdout.split() == ["300000", "done"]
        r = await t.run(["true"], input=big)  # a command that never reads its input
        assert r.ok
        r = await t.run(["no-such-program-xyz"])
        assert r.returncode == 127
        lines: list[str] = []
        r = await t.run_lines(["sh", "-c", "echo one; echo two >&2; exit 4"], lines.append)
        assert r.returncode == 4 and sorted(lines) == ["one", "two"]
        # a background process the command leaves on purpose (e.g. a detached rank) keeps running
        marker = marker_seconds()
        detached = 'sleep "$1" </dev/null >/dev/null 2>&1 & echo $!'
        r = await t.run(["sh", "-c", detached, "sh", marker])
        assert r.ok and remote_pids(lab, "h1", marker)
        await t.run(["kill", r.stdout.strip()])
    finally:
        await t.close()
