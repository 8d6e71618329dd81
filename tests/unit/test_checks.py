"""Controller-side checks: pure verdicts on hand-written facts, live checks of local nodes on
loopback (127.0.0.x only), and the authenticated bandwidth probe."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from boltring.cluster.config.schema import Config, Node, RingOptions
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks.bandwidth import bw_result, measure_bandwidth
from boltring.cluster.nodes.checks.hints import PYTHON_HINT, ssh_command, ssh_hint
from boltring.cluster.nodes.checks.results import count_checks, exit_code
from boltring.cluster.nodes.checks.ring import ring_links, ring_neighbours
from boltring.cluster.nodes.checks.run import check_cluster, check_node
from boltring.cluster.nodes.checks.verdicts import node_results
from boltring.cluster.nodes.transport import (
    AuthFailed,
    HostKeyChanged,
    HostKeyUnknown,
    LocalTransport,
    Unreachable,
)
from boltring.cluster.states import CheckStatus
from boltring.netio import probe

PY = sys.executable


def by_name(results):
    return {r.name: r for r in results}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- ring neighbours ---------------------------------------------------------------------------


def cfg(*ranks: int, **kw) -> Config:
    return Config(
        name="t",
        nodes=tuple(
            Node(name=f"n{i}", ring_ip=f"127.0.0.{i}", local=True, ring_iface="lo", python=PY, ranks=r, **kw)
            for i, r in enumerate(ranks, 1)
        ),
    )


def names(d):
    return {k: [n.name for n in v] for k, v in d.items()}


def test_neighbours_wrap_around_and_skip_self():
    assert names(ring_neighbours(cfg(1, 1, 1))) == {
        "n1": ["n3", "n2"],
        "n2": ["n1", "n3"],
        "n3": ["n2", "n1"],
    }
    assert names(ring_neighbours(cfg(1, 1))) == {"n1": ["n2"], "n2": ["n1"]}
    assert names(ring_neighbours(cfg(4))) == {"n1": []}
    # n1 holds ranks 0,1; n2 rank 2; n3 rank 3: n1's neighbours are n3 (before 0) and n2 (after 1)
    assert names(ring_neighbours(cfg(2, 1, 1))) == {
        "n1": ["n3", "n2"],
        "n2": ["n1", "n3"],
        "n3": ["n2", "n1"],
    }


def test_ring_links_are_directed_ring_order():
    links = lambda c: [(a.name, b.name) for a, b in ring_links(c)]
    assert links(cfg(1, 1, 1)) == [("n1", "n2"), ("n2", "n3"), ("n3", "n1")]
    assert links(cfg(2, 1)) == [("n1", "n2"), ("n2", "n1")]
    assert links(cfg(3)) == []


def test_counts_and_exit_code():
    S = CheckStatus
    rs = [CheckResult(node="a", name="x", status=s) for s in (S.OK, S.OK, S.WARN, S.SKIPPED, S.SKIPPED)]
    counts = count_checks(rs)
    assert (counts.ok, counts.warn, counts.fail, counts.skipped, counts.total) == (2, 1, 0, 2, 5)
    assert str(counts) == "2 ok, 1 warning, +2 skipped" and exit_code(rs) == 0
    rs.append(CheckResult(node="a", name="y", status=S.FAIL))
    assert str(count_checks(rs)) == "2 ok, 1 warning, 1 failed, +2 skipped" and exit_code(rs) == 1


# -- verdicts on facts (pure) ------------------------------------------------------------------

A = Node(name="a", ring_ip="198.18.1.1", ssh="a", ring_iface="tb0", python="/opt/py/bin/python")
B = Node(name="b", ring_ip="198.18.1.2", ssh="b", ring_iface="tb0")
TWO = Config(name="two", nodes=(A, B))


def linux_facts(**over) -> dict:
    facts = {
        "platform": "linux",
        "boltring": {"version": "0.1.0", "installed": True},
        "mlx": {"version": "0.32.4", "metal": False},
        "hardware": {"chip": "AMD EPYC", "memory_bytes": 32 << 30},
        "memory": {"total_bytes": 32 << 30, "available_bytes": 20 << 30},
        "interfaces": {
            "names": {},
            "holder": "tb0",
            "ring_iface": "tb0",
            "resolved_by": "config",
            "exists": True,
            "up": True,
            "admin_up": True,
            "mtu": 1500,
            "addresses": ["198.18.1.1"],
            "status": "UP",
            "members": [],
            "member_status": {},
            "all": {
                "tb0": {"up": True, "mtu": 1500, "addresses": ["198.18.1.1"]},
                "eth0": {"up": True, "mtu": 1500, "addresses": ["198.18.0.1"]},
            },
        },
        "ports": {"52520": "free"},
        "linux": {"default_routes": {"routes": [{"iface": "eth0", "gateway": "198.18.0.254"}]}},
        "neighbours": [
            {
                "name": "b",
                "ring_ip": "198.18.1.2",
                "route": {"iface": "tb0", "gateway": None},
                "ping": {"sent": 3, "received": 3, "loss_pct": 0.0, "avg_ms": 0.05},
            }
        ],
    }
    for path, value in over.items():
        d = facts
        keys = path.split("__")
        for k in keys[:-1]:
            d = d[k] if not k.isdigit() else d[int(k)]
        d[keys[-1]] = value
    return facts


def verdicts(facts, versions=None, node=A):
    return by_name(
        node_results(
            TWO,
            node,
            facts,
            versions or {"boltring": "0.1.0", "mlx": "0.32.4"},
            ring_neighbours(TWO)[node.name],
        )
    )


def test_healthy_facts_are_all_ok():
    res = verdicts(linux_facts())
    assert {k: r.status for k, r in res.items()} == {
        "boltring": "ok",
        "mlx": "ok",
        "chip": "ok",
        "memory": "ok",
        "ring_iface": "ok",
        "ring_ip": "ok",
        "mtu": "ok",
        "ports": "ok",
        "route:b": "ok",
        "rtt:b": "ok",
        "default_route": "ok",
    }
    assert res["rtt:b"].value == "0.05 ms" and res["memory"].value == "32 GB (20 GB free)"


def test_interface_down():
    r = verdicts(linux_facts(interfaces__up=False, interfaces__admin_up=False, interfaces__status="DOWN"))[
        "ring_iface"
    ]
    assert (r.status, r.value) == ("fail", "tb0 is down")
    assert "sudo ip link set tb0 up" in r.hint


def test_wrong_ring_ip_says_what_the_interface_holds():
    res = verdicts(linux_facts(interfaces__holder=None, interfaces__addresses=["198.18.1.9"]))
    r = res["ring_ip"]
    assert (r.status, r.value) == ("fail", "tb0 holds 198.18.1.9, not 198.18.1.1")
    assert "ring_ip: 198.18.1.9" in r.hint and "ip addr add 198.18.1.1/24 dev tb0" in r.hint
    assert "ports" not in res  # nothing to bind while the address is missing


def test_address_on_another_interface():
    r = verdicts(linux_facts(interfaces__holder="eth1"))["ring_ip"]
    assert (r.status, r.value) == ("fail", "198.18.1.1 is on eth1, not tb0")


def test_route_via_the_control_network():
    r = verdicts(linux_facts(neighbours__0__route={"iface": "eth0", "gateway": None}))["route:b"]
    assert r.status == "fail"
    assert r.value == "traffic to b would go over eth0, not tb0"
    assert "ip route replace 198.18.1.2/32 dev tb0" in r.hint


def test_neighbour_address_that_is_our_own():
    r = verdicts(linux_facts(neighbours__0__route={"iface": "lo", "type": "local"}))["route:b"]
    assert r.status == "fail" and "an address of a itself" in r.value


def test_mlx_missing_and_versions_differ():
    res = verdicts(linux_facts(mlx={"error": "ModuleNotFoundError: No module named 'mlx'"}))
    assert res["mlx"].status == "fail" and res["mlx"].hint.startswith("pip install mlx in that python")
    res = verdicts(linux_facts(), versions={"boltring": "0.2.0", "mlx": "0.33.0"})
    assert res["boltring"].status == "warn" and res["boltring"].value == "0.1.0 (laptop 0.2.0)"
    assert res["mlx"].status == "warn" and res["mlx"].value == "0.32.4 (laptop 0.33.0)"
    # versions that differ from the laptop's: `boltring setup` installs the laptop's
    assert "`boltring setup`" in res["boltring"].hint and "boltring 0.2.0" in res["boltring"].hint
    assert "`boltring setup`" in res["mlx"].hint and "mlx 0.33.0" in res["mlx"].hint
    res = verdicts(linux_facts(boltring={"version": "unknown", "installed": False}))
    assert res["boltring"].status == "fail" and "pip install boltring" in res["boltring"].hint
    assert "`boltring setup`" in res["boltring"].hint


def test_rtt_verdicts():
    ping = lambda **p: verdicts(linux_facts(neighbours__0__ping=p))["rtt:b"]
    assert ping(sent=3, received=0, loss_pct=100.0).value == "no reply"
    slow = ping(sent=3, received=3, loss_pct=0.0, avg_ms=4.2)
    assert (slow.status, slow.value) == ("warn", "4.20 ms")
    lossy = ping(sent=3, received=2, loss_pct=33.3, avg_ms=0.2)
    assert lossy.status == "warn" and "33.3% lost" in lossy.value
    missing = ping(error="ping not found", missing=True)
    assert (missing.status, missing.value) == ("skipped", "ping not found")


def test_memory_ports_chip_and_default_route_warnings():
    res = verdicts(
        linux_facts(
            memory={"total_bytes": 32 << 30, "available_bytes": 1 << 30},
            ports={"52520": "Address already in use"},
            linux={"default_routes": {"routes": [{"iface": "tb0"}]}},
        )
    )
    assert res["memory"].status == "warn"
    assert res["ports"].status == "warn" and "boltring kill" in res["ports"].hint
    assert res["default_route"].status == "warn"
    node = Node(name="a", ring_ip="198.18.1.1", ssh="a", ring_iface="tb0", chip="M4 Pro", memory_gb=64)
    res = verdicts(linux_facts(), node=node)
    assert res["chip"].status == "warn" and res["memory"].status == "warn"


def test_ssh_hints_come_from_the_error_class_never_from_its_words():
    n = Node(name="mini2", ring_ip="198.18.1.2", ssh="mini2")
    # the transport's own hint wins
    assert ssh_hint(n, AuthFailed("mini2: refused", hint="do this")) == "do this"
    # without one, the class decides; the words of the message do not
    assert "ssh-copy-id mini2" in ssh_hint(n, AuthFailed("mini2: connection refused"))
    assert "`ssh mini2` once" in ssh_hint(n, HostKeyUnknown("mini2: authentication failed"))
    assert "ssh-keygen -R" in ssh_hint(n, HostKeyChanged("mini2: x"))
    assert "reachable" in ssh_hint(n, Unreachable("mini2: host key changed"))
    assert ssh_hint(n, "mini2: host key changed") == "try `ssh mini2` by hand to see why it fails"
    # OpenSSH takes the port as -p: a hint never says user@host:port
    p = Node(name="h", ring_ip="198.18.1.3", ssh="you@127.0.0.1:2299")
    assert ssh_command(p) == "ssh -p 2299 you@127.0.0.1"
    assert "`ssh -p 2299 you@127.0.0.1`" in ssh_hint(p, Unreachable("h: timed out"))
    assert "127.0.0.1:2299" not in ssh_hint(p, Unreachable("h: timed out"))
    assert ssh_command(p, "ssh-copy-id") == "ssh-copy-id -p 2299 you@127.0.0.1"


# -- live, local nodes on loopback -------------------------------------------------------------


def local(name="n1", ip="127.0.0.1", **kw) -> Node:
    return Node(name=name, ring_ip=ip, local=True, ring_iface="lo", python=kw.pop("python", PY), **kw)


async def test_check_node_healthy_local():
    node = local()
    t0 = time.monotonic()
    res = by_name(await check_node(LocalTransport(node), Config(name="one", nodes=(node,)), node))
    assert time.monotonic() - t0 < 10
    assert res["ssh"].value == "local"
    for name in ("ssh", "python", "boltring", "mlx", "chip", "memory", "ring_iface", "ring_ip", "mtu"):
        assert res[name].status == "ok", res[name]
    assert res["python"].value == sys.version.split()[0]


async def test_python_under_home_is_expanded(home):
    (home / "venv" / "bin").mkdir(parents=True)
    wrapper(home / "venv" / "bin", "python", f'exec {PY} "$@"')  # a symlink would leave the venv
    node = local(python="~/venv/bin/python")
    res = by_name(await check_node(LocalTransport(node), Config(name="one", nodes=(node,)), node))
    assert res["python"].status == "ok" and res["mlx"].status == "ok"


async def test_missing_python_fails_with_the_hint():
    node = local(python="/nonexistent/bin/python3")
    res = await check_node(LocalTransport(node), Config(name="one", nodes=(node,)), node)
    r = by_name(res)["python"]
    assert r.status == "fail" and "/nonexistent/bin/python3" in r.value
    assert r.hint == PYTHON_HINT and "`boltring setup`" in PYTHON_HINT
    assert by_name(res)["mlx"].status == "skipped"


def wrapper(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text(f"#!/bin/sh\n{body}\n")
    p.chmod(0o755)
    return str(p)


async def test_python_without_mlx(tmp_path):
    fake = tmp_path / "fakemlx" / "mlx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('libmlx.so: cannot open shared object file')\n")
    py = wrapper(tmp_path, "python", f'PYTHONPATH={fake.parent} exec {PY} "$@"')
    node = local(python=py)
    res = by_name(await check_node(LocalTransport(node), Config(name="one", nodes=(node,)), node))
    assert res["python"].status == "ok" and res["boltring"].status == "ok"
    assert res["mlx"].status == "fail" and "libmlx.so" in res["mlx"].value
    assert res["mlx"].hint.startswith("pip install mlx in that python")


async def test_python_without_boltring_is_still_probed(tmp_path):
    py = wrapper(tmp_path, "python", f'cd {tmp_path} && exec {PY} -S "$@"')  # no site-packages
    node = local(python=py)
    res = by_name(await check_node(LocalTransport(node), Config(name="one", nodes=(node,)), node))
    assert res["boltring"].status == "fail" and "pip install boltring" in res["boltring"].hint
    assert res["mlx"].status == "fail"
    assert res["ring_iface"].status == "ok" and res["ring_ip"].status == "ok"  # from shipped source


async def test_unreachable_node_is_one_line_with_cause_and_hint():
    node = Node(name="mini9", ring_ip="198.18.1.9", ssh="mini9")
    err = Unreachable("mini9: 198.18.1.9:22 refused the connection", hint="enable Remote Login")
    res = await check_node(err, Config(name="one", nodes=(node,)), node)
    assert (res[0].name, res[0].status) == ("ssh", "fail")
    # then every check it could not run, skipped with why (`check --json` lists each; the views
    # fold them into the ssh line's "+N skipped")
    why = "no SSH connection (unreachable)"
    skipped = [r.name for r in res[1:] if (r.status, r.value) == ("skipped", why)]
    assert skipped == [r.name for r in res[1:]]
    assert {"python", "mlx", "ring_iface", "default_route"} <= set(skipped)
    assert res[0].value == "198.18.1.9:22 refused the connection" and res[0].hint == "enable Remote Login"


THREE = Config(
    name="three",
    nodes=(local("n1", "127.0.0.1"), local("n2", "127.0.0.2"), local("n3", "127.0.0.3")),
    ring=RingOptions(port=free_port() + 100),
)


async def test_check_cluster_three_local_nodes_all_ok():
    seen: list[CheckResult] = []
    t0 = time.monotonic()
    res = await check_cluster(THREE, {n.name: LocalTransport(n) for n in THREE.nodes}, on_result=seen.append)
    elapsed = time.monotonic() - t0
    assert elapsed < 15
    bad = [r for r in res if r.status not in ("ok",)]
    assert not bad, bad
    rs = by_name(r for r in res if r.node == "ring")
    assert rs["ring"].value == "6/6 reachable"
    for name in ("bw:n1->n2", "bw:n2->n3", "bw:n3->n1"):
        assert rs[name].value.endswith(" Gb/s") and float(rs[name].value.split()[0]) > 1
    assert {(r.node, r.name) for r in seen} == {(r.node, r.name) for r in res}
    assert exit_code(res) == 0


async def test_check_cluster_slow_link_fails_with_its_bandwidth():
    res = await check_cluster(
        THREE, {n.name: LocalTransport(n) for n in THREE.nodes}, bandwidth_seconds=0.2, min_gbps=10_000
    )
    bw = [r for r in res if r.name.startswith("bw:")]
    assert len(bw) == 3 and all(r.status == "fail" and r.value.endswith("Gb/s") for r in bw)
    assert "moves only" in bw[0].hint


async def test_check_cluster_without_bandwidth_and_through_a_controller():
    class Controller:  # what JobController passes: connect(node) -> Transport
        async def connect(self, node):
            if node.name == "n3":
                raise Unreachable("n3: connection refused", hint="start sshd")
            return LocalTransport(node)

    res = await check_cluster(THREE, Controller(), bandwidth=False)
    rs = {(r.node, r.name): r for r in res}
    assert rs[("n3", "ssh")].status == "fail" and rs[("n3", "ssh")].hint == "start sshd"
    # n3's other checks are listed, skipped with why (the views fold them into its one line)
    n3 = [r for r in res if r.node == "n3"]
    assert n3[0] == rs[("n3", "ssh")] and len(n3) > 1
    assert {(r.status, r.value) for r in n3[1:]} == {("skipped", "no SSH connection (unreachable)")}
    assert not any(r.name.startswith("bw:") for r in res)
    assert rs[("n1", "route:n2")].status == "ok"
    # n3 could not be probed, but n1 and n2 pinged it: their directions are known, n3's are not
    # listed again (its ssh line says why)
    ring = rs[("ring", "ring")]
    assert ring.status == "ok" and ring.value == "4/4 reachable; not checked from n3"


# -- the bandwidth probe -----------------------------------------------------------------------

SECRET = "ab" * 32


def serve_in_thread(port, secret=SECRET, accept_timeout=5.0):
    out: dict = {}

    def target():
        try:
            out["result"] = probe.serve(
                "127.0.0.1",
                port,
                bytes.fromhex(secret),
                accept_timeout=accept_timeout,
                log=lambda m: out.setdefault("log", []).append(m),
            )
        except probe.ProbeFailure as e:
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def test_probe_measures_after_both_sides_prove_the_secret():
    port = free_port()
    th, out = serve_in_thread(port)
    res = probe.send("127.0.0.1", port, bytes.fromhex(SECRET), seconds=0.2, bytes_limit=64 << 20)
    th.join(10)
    assert res["bytes"] == 64 << 20 and res["gbps"] > 0 and res["seconds"] > 0
    assert out["result"]["bytes"] == res["bytes"]


def test_probe_wrong_secret_is_refused_and_server_keeps_waiting():
    port = free_port()
    th, out = serve_in_thread(port, accept_timeout=2.0)
    with pytest.raises(probe.ProbeFailure) as e:
        probe.send("127.0.0.1", port, bytes.fromhex("cd" * 32), seconds=0.1)
    assert e.value.code == probe.EXIT_AUTH
    # a stranger that sends garbage is dropped too; then the right sender is measured
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    res = probe.send("127.0.0.1", port, bytes.fromhex(SECRET), seconds=0.1, bytes_limit=8 << 20)
    th.join(10)
    assert res["bytes"] == 8 << 20 and "result" in out
    assert len(out["log"]) >= 1


def test_probe_cli_timeout_bind_and_secret_rules():
    port = free_port()
    t0 = time.monotonic()
    p = subprocess.run(
        [
            PY,
            "-m",
            "boltring.netio.probe",
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--accept-timeout",
            "0.5",
        ],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == probe.EXIT_NO_PEER and time.monotonic() - t0 < 10
    assert "nobody connected" in p.stderr and "nobody connected" in json.loads(p.stdout)["error"]
    p = subprocess.run(
        [PY, "-m", "boltring.netio.probe", "serve", "--bind", "0.0.0.0", "--port", str(port)],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == probe.EXIT_USAGE and "every interface" in p.stderr
    p = subprocess.run(
        [PY, "-m", "boltring.netio.probe", "send", "--to", f"127.0.0.1:{port}"],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == probe.EXIT_USAGE and "no secret on stdin" in p.stderr
    p = subprocess.run(
        [PY, "-m", "boltring.netio.probe", "send", "--to", f"127.0.0.1:{port}", "--connect-timeout", "0.3"],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == probe.EXIT_NO_PEER and "cannot connect" in p.stderr


async def test_measure_bandwidth_keeps_the_secret_off_argv():
    seen: list[tuple[list[str], bytes | None]] = []

    class Spy(LocalTransport):
        async def run(self, argv, *, input=None, timeout=30.0):
            seen.append((list(argv), input))
            return await super().run(argv, input=input, timeout=timeout)

    a, b = local("n1", "127.0.0.1"), local("n2", "127.0.0.2")
    res = await measure_bandwidth(Spy(a), a, PY, Spy(b), b, PY, free_port(), seconds=0.2)
    assert res["gbps"] > 0
    (serve_argv, secret_in), (send_argv, secret_in2) = sorted(seen, key=lambda x: "send" in x[0])
    assert secret_in == secret_in2 and len(secret_in.strip()) == 64
    secret = secret_in.decode().strip()
    assert all(secret not in word for word in serve_argv + send_argv)
    assert serve_argv[serve_argv.index("--bind") + 1] == "127.0.0.2"


def silent_connection(port: int, host: str = "127.0.0.1", wait_s: float = 5.0) -> socket.socket:
    """A stranger that connects to the probe's port and never says a word (retries until the
    server listens)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return socket.create_connection((host, port), timeout=1)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_probe_drops_a_silent_connection_within_a_second_and_measures_the_real_sender():
    port = free_port()
    th, out = serve_in_thread(port, accept_timeout=4.0)
    silent = silent_connection(port)
    try:
        t0 = time.monotonic()
        res = probe.send("127.0.0.1", port, bytes.fromhex(SECRET), seconds=0.1, bytes_limit=8 << 20)
        took = time.monotonic() - t0
    finally:
        silent.close()
    th.join(10)
    assert res["bytes"] == 8 << 20 and out["result"]["bytes"] == res["bytes"]
    assert took < 3  # the silent peer held the acceptor for about 1 s, not 10
    assert any("dropped" in m and "within 1 s" in m for m in out["log"])


async def test_bandwidth_check_passes_despite_a_silent_connection_to_its_port():
    class Stranger(LocalTransport):
        """The sender's node, where someone else connects to the probe port first and stays silent."""

        silent: socket.socket | None = None

        async def run(self, argv, *, input=None, timeout=30.0):
            if "send" in argv:
                host, port = argv[argv.index("--to") + 1].rsplit(":", 1)
                self.silent = await asyncio.to_thread(silent_connection, int(port), host)
            return await super().run(argv, input=input, timeout=timeout)

    a, b = local("n1", "127.0.0.1"), local("n2", "127.0.0.2")
    sender = Stranger(a)
    try:
        res = await measure_bandwidth(sender, a, PY, LocalTransport(b), b, PY, free_port(), seconds=0.2)
    finally:
        if sender.silent is not None:
            sender.silent.close()
    assert sender.silent is not None
    assert bw_result(a, b, res, 0.001).status == "ok", res
