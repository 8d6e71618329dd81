"""After a login failure only a person can fix (key refused, host key unknown or changed), calls
do not log in again until a login file changes or PERSON_RETRY_S pass (netns lab, real sshd).
Logging in again at every call made failing logins by the second (the controller polls each rank
4 times a second), which OpenSSH 9.8's PerSourcePenalties punishes by refusing the laptop."""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from boltring.cluster.jobs.events import NodeState
from boltring.cluster.nodes import ssh
from boltring.cluster.nodes.ssh import SshTransport
from boltring.cluster.nodes.transport import AuthFailed, HostKeyUnknown, TransportError, Unreachable
from tests.lab import Lab

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


class SshdLog:
    """Connections the host's sshd saw since this was made (one per login attempt)."""

    def __init__(self, lab: Lab, host: str) -> None:
        self.path = lab.host(host).sshd_log
        self.start = self.path.stat().st_size

    async def connections(self) -> int:
        await asyncio.sleep(0.5)  # sshd logs a closed connection a moment after the client gave up
        with open(self.path, "rb") as f:
            f.seek(self.start)
            text = f.read().decode(errors="replace")
        return len(set(re.findall(r" port (\d+)", text.replace("listening on", ""))))


async def failures(t: SshTransport, call, n: int) -> list[TransportError]:
    """n calls, as a poller makes them; each must fail."""
    out = []
    for _ in range(n):
        with pytest.raises(TransportError) as e:
            await call(t)
        out.append(e.value)
        await asyncio.sleep(0.05)
    return out


async def test_refused_key_is_not_tried_at_every_call(lab: Lab, tmp_path, monkeypatch) -> None:
    h = lab.host("h1")
    key = tmp_path / "id_ed25519"  # the key the node does not accept, until the person fixes it
    shutil.copy(lab.new_client_key("refused"), key)
    events: list[NodeState] = []
    node = lab.node("h1", ssh=f"root@{h.control_ip}")
    t = SshTransport(
        node, events.append, options=lab.ssh_options(config_file=None, identity_files=(str(key),))
    )
    log = SshdLog(lab, "h1")
    try:
        errs = await failures(t, lambda t: t.read_from("~/.boltring/rank.log", 0), 9)
        assert await log.connections() == 1  # was 18: every call, and home() falling back to run
        assert all(type(e) is AuthFailed for e in errs)
        assert {(e.message, e.hint) for e in errs} == {(errs[0].message, errs[0].hint)}
        assert "authorized_keys" in (errs[0].hint or "")
        assert [e.state for e in events] == ["connecting", "auth failed"]  # the panel keeps saying so

        # after PERSON_RETRY_S, one login again (the fix may be on the node: ssh-copy-id)
        monkeypatch.setattr(ssh, "PERSON_RETRY_S", 0.3)
        await asyncio.sleep(0.4)
        await failures(t, lambda t: t.run(["true"]), 2)
        assert await log.connections() == 2

        # a changed key file is tried at once
        monkeypatch.setattr(ssh, "PERSON_RETRY_S", 600.0)
        shutil.copy(lab.client_key, key)
        assert (await t.run(["echo", "in"])).stdout == "in\n"
        assert t.state == "connected"
    finally:
        await t.close()


async def test_unknown_host_key_is_tried_again_once_known_hosts_changes(lab: Lab) -> None:
    lab.forget_host_key("h2")
    events: list[NodeState] = []
    t = SshTransport(lab.node("h2"), events.append, options=lab.ssh_options())
    log = SshdLog(lab, "h2")
    try:
        errs = await failures(t, lambda t: t.run(["true"]), 6)
        assert all(type(e) is HostKeyUnknown for e in errs)
        assert await log.connections() == 1
        lab.trust_host_key("h2")  # the person ran `ssh h2` and accepted the key
        assert (await t.run(["echo", "in"])).stdout == "in\n"
        assert [e.state for e in events] == ["connecting", "host key unknown", "connecting", "connected"]
    finally:
        await t.close()


async def test_home_does_not_log_in_again_after_a_failed_login(lab: Lab) -> None:
    """read_from("~/…") needs the home directory; a failed login is not an SFTP problem, so it is
    raised as it is instead of trying a second login through run()."""
    lab.stop_sshd("h3")
    events: list[NodeState] = []
    t = SshTransport(lab.node("h3"), events.append, options=lab.ssh_options())
    try:
        with pytest.raises(Unreachable, match="refused"):
            await t.read_from("~/.boltring/rank.log", 0)
        assert [e.state for e in events] == ["connecting", "unreachable"]
    finally:
        await t.close()
