"""SFTP calls are bounded like commands (netns lab): an SFTP server that stops answering (here:
SIGSTOPped, as a hung disk leaves it) makes read_from and write_file raise CommandTimeout naming
the node within their timeout, while keepalives would never notice (the connection itself still
answers); the next call starts a new SFTP session and works."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from boltring.cluster.nodes.ssh import SshTransport
from boltring.cluster.nodes.transport import CommandTimeout
from tests.lab import Lab
from tests.lab.netns import _netns_inode, _pids_in_netns

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@contextmanager
def sftp_servers_stopped(lab: Lab, host: str) -> Iterator[None]:
    """SIGSTOP the host's running SFTP servers (OpenSSH's internal-sftp, one per session);
    SIGCONT them on the way out, even when the test fails."""
    inode = _netns_inode(lab.host(host).ns)
    pids = []
    for pid in _pids_in_netns({inode} if inode else set()):
        try:
            if b"internal-sftp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            pass
    assert pids, "no SFTP server runs"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def test_stuck_sftp_times_out_naming_the_node(lab: Lab) -> None:
    h = lab.host("h1")
    (h.workdir / "f").write_bytes(b"hello")
    t = SshTransport(lab.node("h1"), options=lab.ssh_options())
    try:
        assert await t.read_from(str(h.workdir / "f"), 0) == b"hello"  # the SFTP session runs
        for call in (
            lambda: t.read_from(str(h.workdir / "f"), 0, timeout=1),
            lambda: t.write_file(str(h.workdir / "g"), b"data", timeout=1),
        ):
            with sftp_servers_stopped(lab, "h1"):
                started = time.monotonic()
                with pytest.raises(
                    CommandTimeout, match=r"^h1: cannot (read|write) .*: no answer from SFTP within 1 s"
                ):
                    await asyncio.wait_for(call(), 15)  # 15: the old code waited forever
                assert time.monotonic() - started < 5  # 1 s, and the grace for its cleanup
                # the next call starts a new SFTP session: the stuck one is not reused
                assert await t.read_from(str(h.workdir / "f"), 1, timeout=5) == b"ello"
        assert t.state == "connected"
    finally:
        await t.close()
