"""SshTransport against real sshd test hosts (the netns lab): operations, failure states with their
hints, reconnection after a dropped connection, and secrets that never reach a command line."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
import time

import pytest

from boltring.cluster.jobs.events import NodeState, SshState
from boltring.cluster.nodes.ssh import SshTransport, parse_target
from boltring.cluster.nodes.transport import (
    AuthFailed,
    HostKeyChanged,
    HostKeyUnknown,
    TransportError,
    Unreachable,
)
from tests.lab import Lab

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    # only the keys a test names: never whatever agent the person running the tests has
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def make(lab: Lab, host: str = "h1", *, node=None, **options) -> tuple[SshTransport, list[NodeState]]:
    events: list[NodeState] = []
    t = SshTransport(node or lab.node(host), events.append, options=lab.ssh_options(**options))
    return t, events


def states(events: list[NodeState]) -> list[str]:
    return [e.state for e in events]


async def wait_for_state(
    t: SshTransport, events: list[NodeState], state: str, after: int = 0, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while state not in states(events)[after:]:
        assert time.monotonic() < deadline, f"no {state!r} in {states(events)}"
        await asyncio.sleep(0.02)


async def test_run_read_write(lab: Lab) -> None:
    h = lab.host("h1")
    t, events = make(lab)
    try:
        await t.connect()
        assert states(events) == ["connecting", "connected"]
        assert all(e.node == "h1" and e.state in set(SshState) for e in events)

        r = await t.run(["sh", "-c", 'echo "out $1"; echo err >&2; exit 3', "sh", "a b; $(x)"])
        assert (r.returncode, r.stdout, r.stderr) == (3, "out a b; $(x)\n", "err\n")
        r = await t.run(["cat"], input=b"\x00bytes\xff")
        assert r.ok and r.stdout == "\x00bytes\ufffd"
        r = await t.run(["sh", "-c", "cat; echo end"])  # no input: stdin is at EOF, never hangs
        assert r.stdout == "end\n"
        # "~/" words are resolved on the node; nothing else is expanded (every word is quoted)
        r = await t.run(["echo", "~/x", "a~/x", "~root", "$HOME", "*"])
        assert r.stdout == f"{h.home}/x a~/x ~root $HOME *\n"

        assert await t.home() == str(h.home)
        assert await t.resolve("~/.boltring/runs") == f"{h.home}/.boltring/runs"
        assert await t.resolve("~") == str(h.home)
        assert await t.resolve("/abs/~/x") == "/abs/~/x"

        await t.write_file("~/.boltring/a/b/secret.key", b"0123456789", mode=0o600)
        path = h.workdir / "a" / "b" / "secret.key"
        assert path.read_bytes() == b"0123456789"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await t.read_from("~/.boltring/a/b/secret.key", 3, 4) == b"3456"
        assert await t.read_from(str(path), 0) == b"0123456789"
        assert await t.read_from(str(path), 10) == b""  # at the end
        assert await t.read_from(str(path), 99) == b""  # truncated under the reader
        assert await t.read_from("~/.boltring/missing.log", 0) == b""

        # replacing a world-readable file never leaves the new content world-readable
        loose = h.workdir / "loose"
        loose.write_bytes(b"old")
        loose.chmod(0o644)
        await t.write_file(str(loose), b"new secret")
        assert stat.S_IMODE(loose.stat().st_mode) == 0o600 and loose.read_bytes() == b"new secret"
        await t.write_file("~/.boltring/script.py", b"print(1)\n", mode=0o644)
        assert stat.S_IMODE((h.workdir / "script.py").stat().st_mode) == 0o644
        assert not [p for p in h.workdir.rglob("*") if ".boltring-" in p.name]  # no temp files left

        argv = ["echo", "a b", "$HOME", "~/x y", "~"]
        line = t.command_line(argv)
        assert line == (
            f"ssh -F {lab.ssh_config} -o UserKnownHostsFile={lab.known_hosts} h1 -- "
            "'echo '\"'\"'a b'\"'\"' '\"'\"'$HOME'\"'\"' ~/'\"'\"'x y'\"'\"' ~'"
        )
        # pasted into a shell, the dry-run line does exactly what run() does
        pasted = subprocess.run(
            line, shell=True, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
        )
        assert pasted.returncode == 0, pasted.stderr
        assert pasted.stdout == (await t.run(argv)).stdout == f"a b $HOME {h.home}/x y {h.home}\n"
    finally:
        await t.close()
    assert t.state == "closed" and states(events)[-1] == "closed"
    with pytest.raises(TransportError, match="closed"):
        await t.run(["true"])


async def test_run_timeout(lab: Lab) -> None:
    t, _ = make(lab)
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"h1: sleep 30 took over 0.5 s"):
            await t.run(["sleep", "30"], timeout=0.5)
        assert time.monotonic() - started < 3
        assert (await t.run(["true"])).ok  # the connection is still fine
    finally:
        await t.close()


def test_parse_target() -> None:
    assert parse_target("mini1") == (None, "mini1", None)
    assert parse_target("me@198.18.0.2:2222") == ("me", "198.18.0.2", 2222)
    assert parse_target("me@[fe80::1]:22") == ("me", "fe80::1", 22)
    assert parse_target("fe80::1") == (None, "fe80::1", None)
    for bad in ("", "me@", "host:0", "host:x", "a b"):
        with pytest.raises(ValueError):
            parse_target(bad)


async def expect_failure(
    t: SshTransport, events: list[NodeState], cls: type[TransportError], *words: str
) -> TransportError:
    """connect() raises `cls`, whose state the node panel shows; the cause (message) and what to
    do (hint) are one line each, and the panel's detail holds both. `words` appear in one of
    them."""
    try:
        with pytest.raises(cls) as e:
            await t.connect()
    finally:
        await t.close()
    err = e.value
    msg, hint = str(err), err.hint or ""
    assert "\n" not in msg + hint and msg.startswith(f"{t.node.name}: ") and hint
    assert states(events) == ["connecting", cls.state, "closed"]
    for word in words:
        assert word in f"{msg} {hint}" and word in events[1].detail
    return err


async def test_sshd_stopped_is_unreachable(lab: Lab) -> None:
    lab.stop_sshd("h1")
    t, events = make(lab)
    err = await expect_failure(
        t, events, Unreachable, "refused", "enable Remote Login", "System Settings → General → Sharing"
    )
    assert f"`{t.ssh_command()}`" in (err.hint or "")  # a command that runs as written


async def test_no_ssh_answer_is_unreachable(lab: Lab) -> None:
    h = lab.host("h1")
    silent = lab.socket("h1")  # accepts TCP connections (backlog), never says a word
    try:
        silent.bind((h.control_ip, 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t, events = make(lab, node=lab.node("h1", ssh=f"root@{h.control_ip}:{port}"), connect_timeout_s=1.0)
        err = await expect_failure(
            t, events, Unreachable, f"no SSH answer from {h.control_ip}:{port} within 1 s"
        )
        # OpenSSH takes the port as -p: the hint must never say root@host:port
        assert f"-p {port} root@{h.control_ip}`" in (err.hint or "")
        assert f"@{h.control_ip}:{port}" not in (err.hint or "")
    finally:
        silent.close()


async def test_missing_ssh_config_is_mentioned(lab: Lab, tmp_path) -> None:
    absent = tmp_path / "no-such-config"
    t, events = make(lab, config_file=str(absent), connect_timeout_s=2.0)
    # "h1" is an alias of the lab's ssh config: without the file it is only a name
    await expect_failure(t, events, Unreachable, f"(there is no {absent}: no Host entry gives h1 a HostName")


async def test_unknown_host_key(lab: Lab, tmp_path) -> None:
    lab.forget_host_key("h1")
    t, events = make(lab)
    await expect_failure(t, events, HostKeyUnknown, "is not in", f"`{t.ssh_command()}` once")
    assert t.ssh_command() == f"ssh -F {lab.ssh_config} -o UserKnownHostsFile={lab.known_hosts} h1"
    # a missing known_hosts file trusts nothing (and never disables checking)
    t, events = make(lab, known_hosts=str(tmp_path / "absent"))
    await expect_failure(t, events, HostKeyUnknown, str(tmp_path / "absent"))


async def test_changed_host_key(lab: Lab) -> None:
    lab.change_host_key("h1")
    t, events = make(lab)
    ip = lab.host("h1").control_ip
    await expect_failure(t, events, HostKeyChanged, f"ssh-keygen -R {ip}", f"`{t.ssh_command()}` once")


async def test_wrong_client_key_is_auth_failed(lab: Lab) -> None:
    h = lab.host("h2")
    wrong = lab.new_client_key("stranger")
    node = lab.node("h2", ssh=f"root@{h.control_ip}")
    t, events = make(lab, node=node, config_file=None, identity_files=(str(wrong),))
    await expect_failure(t, events, AuthFailed, "authorized_keys", f"`{t.ssh_command('ssh-copy-id')}`")
    assert t.ssh_command("ssh-copy-id").endswith(f" root@{h.control_ip}")
    # ... and the right key through identity_files (no ssh config at all) works
    t, events = make(lab, node=node, config_file=None, identity_files=(str(lab.client_key),))
    try:
        assert (await t.run(["true"])).ok
    finally:
        await t.close()


async def test_dropped_connection_reconnects(lab: Lab) -> None:
    t, events = make(lab, "h2")
    try:
        await t.connect()
        assert lab.kill_ssh_sessions("h2") >= 1
        await wait_for_state(t, events, "connected", after=2)
        assert states(events)[2:5] == ["lost", "reconnecting", "connected"]
        assert (await t.run(["echo", "back"])).stdout == "back\n"
        assert (await t.read_from(str(lab.host("h2").dir / "sshd_config"), 0, 10)) == b"# boltring"

        # a call made right as the connection dies waits for the new one instead of failing
        n = len(events)
        lab.kill_ssh_sessions("h2")
        assert (await t.run(["echo", "again"])).stdout == "again\n"
        await t.write_file("~/after-drop", b"x")
        assert "lost" in states(events)[n:] and t.state == "connected"
    finally:
        await t.close()
    assert states(events)[-1] == "closed"


async def test_calls_wait_for_sshd_to_come_back(lab: Lab) -> None:
    t, events = make(lab, "h3", connect_timeout_s=5.0)
    try:
        await t.connect()
        lab.stop_sshd("h3", kill_sessions=True)
        await wait_for_state(t, events, "lost")
        pending = asyncio.ensure_future(t.run(["echo", "waited"]))
        await asyncio.sleep(1.2)  # attempts after 0.5 s and 1.5 s: refused, keeps retrying
        assert not pending.done()
        assert states(events)[-1] == "reconnecting" and "refused" in events[-1].detail
        lab.start_sshd("h3")
        assert (await asyncio.wait_for(pending, 8)).stdout == "waited\n"
        assert states(events)[-1] == "connected"
    finally:
        await t.close()


async def test_waiting_for_a_reconnect_is_bounded(lab: Lab) -> None:
    t, events = make(lab, "h3", connect_timeout_s=1.0)
    try:
        await t.connect()
        lab.stop_sshd("h3", kill_sessions=True)
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"h3: SSH connection lost and not back within 1 s"):
            await t.run(["true"])
        assert time.monotonic() - started < 3
    finally:
        await t.close()


async def test_reconnect_stops_on_a_changed_host_key(lab: Lab) -> None:
    t, events = make(lab, "h2")
    try:
        await t.connect()
        lab.change_host_key("h2")
        lab.kill_ssh_sessions("h2")
        await wait_for_state(t, events, "host key changed")
        assert states(events)[2:] == ["lost", "reconnecting", "host key changed"]
        with pytest.raises(HostKeyChanged) as e:
            await t.run(["true"])
        assert "ssh-keygen -R" in (e.value.hint or "")
        lab.trust_host_key("h2")  # the person checked and accepted the new key
        assert (await t.run(["true"])).ok and t.state == "connected"
    finally:
        await t.close()


async def test_secret_input_never_in_any_argv(lab: Lab) -> None:
    secret = b"secret-" + secrets.token_hex(16).encode()
    dest = lab.host("h1").workdir / "got-secret"
    t, _ = make(lab)
    seen: list[str] = []
    try:
        await t.connect()
        run = asyncio.ensure_future(t.run(["sh", "-c", 'cat > "$1"; sleep 1', "sh", str(dest)], input=secret))
        while not run.done():
            ps = await asyncio.to_thread(
                subprocess.run, ["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True
            )
            seen.append(ps.stdout)
            await asyncio.sleep(0.05)
        assert (await run).ok
    finally:
        await t.close()
    assert dest.read_bytes() == secret  # it did reach the command, through stdin
    assert len(seen) >= 5 and any(str(dest) in snapshot for snapshot in seen)  # we saw the command
    assert not any(secret.decode() in snapshot for snapshot in seen)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert secret not in f.read()
        except OSError:
            pass
