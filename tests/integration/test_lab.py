"""The netns lab itself: topology, real OpenSSH with strict host keys, faults, shaping, cleanup."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.lab import Lab, cleanup_stale
from tests.lab.fixtures import require_lab
from tests.lab.netns import ETC_NETNS, _link_names, _netns_list, _pids_with_arg, _slots, lab_dir_for
from tests.lab.traffic import tcp_throughput_mbit

pytestmark = pytest.mark.netns


def ssh(lab: Lab, host: str, *command: str, timeout: float = 15) -> subprocess.CompletedProcess:
    """The real OpenSSH client, strict host key checking, never a prompt."""
    return subprocess.run(
        [
            "ssh",
            "-F",
            str(lab.ssh_config),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            host,
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def route_dev(lab: Lab, host: str, dest: str) -> str:
    out = lab.exec(host, ["ip", "-o", "route", "get", dest], check=True).stdout.split()
    return out[out.index("dev") + 1]


def leftovers(lab_id: str) -> list[str]:
    d = lab_dir_for(lab_id)
    found = [n for n in [*_netns_list(), *_link_names()] if n.startswith(lab_id)]
    found += [f"pid {p}" for p in _pids_with_arg(f"{d}/")]
    found += [str(d)] if d.exists() else []
    found += [
        f"/etc/netns/{e}"
        for e in (os.listdir(ETC_NETNS) if ETC_NETNS.exists() else [])
        if e.startswith(lab_id)
    ]
    found += [f"slot {k}" for k, owner in _slots().items() if owner == lab_id]
    return found


def test_hosts_reach_each_other_over_tb0(lab: Lab) -> None:
    hosts = lab.hosts
    for a, b in zip(hosts, hosts[1:] + hosts[:1], strict=False):
        assert route_dev(lab, a.name, b.ring_ip) == "tb0"
        p = lab.exec(a.name, ["ping", "-c", "1", "-W", "2", b.ring_ip])
        assert p.returncode == 0, p.stdout + p.stderr


def test_root_namespace_cannot_reach_the_ring(lab: Lab) -> None:
    h1 = lab.host("h1")
    br = f"{lab.id}br"
    assert (
        "inet"
        not in subprocess.run(["ip", "-o", "addr", "show", "dev", br], capture_output=True, text=True).stdout
    )
    p = subprocess.run(["ping", "-c", "1", "-W", "1", h1.ring_ip], capture_output=True, text=True)
    assert p.returncode != 0
    with socket.socket() as s:
        s.settimeout(2)
        with pytest.raises(OSError) as e:
            s.connect((h1.ring_ip, 22))
    assert e.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    # ... while the control network works
    assert subprocess.run(["ping", "-c", "1", "-W", "2", h1.control_ip], capture_output=True).returncode == 0


def test_openssh_client_with_strict_host_keys(lab: Lab) -> None:
    p = ssh(lab, "h1", "true")
    assert p.returncode == 0, p.stderr
    # every host has its own home: "~" on h2 is not /root and not h1's
    p = ssh(lab, "h2", 'printf %s "$HOME"; echo; pwd')
    assert p.stdout.split() == [str(lab.host("h2").home)] * 2
    assert lab.host("h2").workdir.is_dir()

    lab.forget_host_key("h1")
    p = ssh(lab, "h1", "true")
    assert p.returncode == 255 and "Host key verification failed" in p.stderr

    lab.trust_host_key("h1")
    lab.change_host_key("h1")
    p = ssh(lab, "h1", "true")
    assert p.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in p.stderr

    lab.trust_host_key("h1")
    assert ssh(lab, "h1", "true").returncode == 0


def test_sshd_stop_and_dropped_sessions(lab: Lab) -> None:
    session = subprocess.Popen(
        ["ssh", "-F", str(lab.ssh_config), "h3", "sleep 30"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not lab.ssh_session_pids("h3"):
            assert time.monotonic() < deadline and session.poll() is None
            time.sleep(0.02)
        assert lab.kill_ssh_sessions("h3") >= 1
        assert session.wait(10) == 255  # the client saw its connection drop
    finally:
        session.kill()
        session.wait()
    assert lab.sshd_running("h3")
    assert ssh(lab, "h3", "true").returncode == 0  # the listener is still there

    lab.stop_sshd("h3")
    p = ssh(lab, "h3", "true")
    assert p.returncode == 255 and "Connection refused" in p.stderr
    lab.start_sshd("h3")
    assert ssh(lab, "h3", "true").returncode == 0


def test_link_address_and_route_faults(lab: Lab) -> None:
    h1, h2 = lab.host("h1"), lab.host("h2")
    lab.set_link("h2", up=False)
    assert lab.exec("h1", ["ping", "-c", "1", "-W", "1", h2.ring_ip]).returncode != 0
    lab.set_link("h2", up=True)

    lab.set_ring_ip("h2", f"{lab.ring_net}.99")
    assert h2.ring_ip == f"{lab.ring_net}.99"
    assert lab.exec("h1", ["ping", "-c", "1", "-W", "2", h2.ring_ip]).returncode == 0

    lab.route_via_control("h1", h2.ring_ip)
    assert route_dev(lab, "h1", h2.ring_ip) == "eth0"  # "ring traffic over Wi-Fi"
    assert lab.exec("h1", ["ping", "-c", "1", "-W", "2", h2.ring_ip]).returncode == 0

    lab.reset()
    assert h2.ring_ip == h2.base_ring_ip
    assert route_dev(lab, "h1", h2.ring_ip) == "tb0"
    assert lab.exec("h1", ["ping", "-c", "1", "-W", "2", h2.ring_ip]).returncode == 0
    assert h1.routes == set()


def test_shaping_bounds_both_directions(lab: Lab) -> None:
    limit = 20
    free = tcp_throughput_mbit(lab, "h1", "h2", seconds=0.4)
    lab.shape("h2", limit)
    into = tcp_throughput_mbit(lab, "h1", "h2", seconds=1.0)  # ring -> h2: bridge-side qdisc
    out = tcp_throughput_mbit(lab, "h2", "h1", seconds=1.0)  # h2 -> ring: tb0 qdisc
    other = tcp_throughput_mbit(lab, "h1", "h3", seconds=0.3)  # not shaped
    for got in (into, out):
        assert 0.3 * limit < got < 1.3 * limit, (free, into, out)
    assert free > 5 * limit and other > 5 * limit, (free, other)
    lab.shape("h2", None)
    assert tcp_throughput_mbit(lab, "h1", "h2", seconds=0.3) > 5 * limit


def test_lab_leaves_nothing_behind(lab3: Lab) -> None:
    session = None
    try:
        with Lab(2) as lab:
            assert lab.control_net != lab3.control_net  # parallel labs get their own subnets
            lab_id = lab.id
            lab.popen("h1", ["sleep", "60"])
            session = subprocess.Popen(
                ["ssh", "-F", str(lab.ssh_config), "h2", "sleep 60"],
                stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while not lab.ssh_session_pids("h2") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert lab.ssh_session_pids("h2")
        assert session.wait(10) == 255  # its sshd went away with the lab
    finally:
        if session:
            session.kill()
            session.wait()
    assert leftovers(lab_id) == []

    with pytest.raises(RuntimeError, match="boom"):
        with Lab(1) as lab:
            lab_id = lab.id
            raise RuntimeError("boom")
    assert leftovers(lab_id) == []
    assert ssh(lab3, "h1", "true").returncode == 0  # the session lab was not touched


def test_stale_lab_of_a_killed_run_is_removed(lab3: Lab) -> None:
    script = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from tests.lab import Lab
        with Lab(1) as lab:
            print(lab.id, flush=True)
            time.sleep(60)
    """)
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", script, root], stdout=subprocess.PIPE, text=True)
    try:
        lab_id = proc.stdout.readline().strip()
        assert lab_id.startswith("blt"), lab_id
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the child; its sshd keeps running
        proc.wait()
        proc.stdout.close()
    assert leftovers(lab_id)
    assert lab_id in cleanup_stale()
    assert leftovers(lab_id) == []
    assert ssh(lab3, "h1", "true").returncode == 0


def test_require_lab_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.lab.fixtures as fx

    monkeypatch.setattr(fx, "lab_available", lambda: "no namespaces here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no namespaces here"):
        require_lab()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no namespaces here"):
        require_lab()
