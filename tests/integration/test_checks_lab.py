"""`boltring check` against three real SSH hosts in network namespaces (tests/lab).

A healthy cluster is all ok within 15 s; each fault the lab can make turns its own check to
fail with the hint a user needs. Ring addresses are 198.18.x on tb0, SSH goes over eth0.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from boltring.cluster.config.schema import Config
from boltring.cluster.nodes.checks.bandwidth import MIN_GBPS
from boltring.cluster.nodes.checks.hints import PYTHON_HINT
from boltring.cluster.nodes.checks.results import exit_code
from boltring.cluster.nodes.checks.run import check_cluster
from boltring.cluster.nodes.transport import TransportError

pytestmark = pytest.mark.netns


def lab_config(lab, **node_overrides) -> Config:
    """The config a user wrote for the healthy lab (ring addresses as first assigned, even after
    set_ring_ip moved one)."""
    nodes = tuple(
        lab.node(h, **{"ring_ip": h.base_ring_ip, **node_overrides.get(h.name, {})}) for h in lab.hosts
    )
    return Config(name="lab", nodes=nodes, ssh=lab.ssh_options())


async def run_checks(lab, config: Config, **kw):
    """What `boltring check` does: connect every node, hand over the transport or the error
    that kept it from connecting, run the checks; returns (results, seconds)."""
    from boltring.cluster.nodes.ssh import SshTransport

    t0 = time.monotonic()
    transports = {n.name: SshTransport(n, options=config.ssh) for n in config.nodes}

    async def connect(name, tr):
        try:
            await tr.connect()
            return tr
        except TransportError as e:
            return e

    given = dict(
        zip(transports, await asyncio.gather(*(connect(k, t) for k, t in transports.items())), strict=False)
    )
    try:
        results = await check_cluster(config, given, **kw)
    finally:
        await asyncio.gather(*(t.close() for t in transports.values()))
    return results, time.monotonic() - t0


def get(results, node, name):
    found = [r for r in results if r.node == node and r.name == name]
    assert found, f"no {name} check for {node}: {[(r.node, r.name) for r in results]}"
    return found[0]


def not_ok(results):
    return [(r.node, r.name, r.status, r.value) for r in results if r.status != "ok"]


async def test_healthy_cluster_is_all_ok_within_15_s(lab):
    results, elapsed = await run_checks(lab, lab_config(lab))
    assert elapsed < 15, elapsed
    assert not not_ok(results), not_ok(results)
    names = {(r.node, r.name) for r in results}
    for h in ("h1", "h2", "h3"):
        for name in (
            "ssh",
            "python",
            "boltring",
            "mlx",
            "chip",
            "memory",
            "ring_iface",
            "ring_ip",
            "mtu",
            "ports",
            "default_route",
        ):
            assert (h, name) in names
    assert get(results, "h1", "route:h2").value == "via tb0"
    assert get(results, "h1", "rtt:h3").value.endswith(" ms")
    assert get(results, "ring", "ring").value == "6/6 reachable"
    for a, b in (("h1", "h2"), ("h2", "h3"), ("h3", "h1")):
        bw = get(results, "ring", f"bw:{a}->{b}")
        assert bw.value.endswith(" Gb/s") and float(bw.value.split()[0]) >= MIN_GBPS
    assert exit_code(results) == 0


async def test_ring_interface_down(lab):
    lab.set_link("h2", up=False)
    results, elapsed = await run_checks(lab, lab_config(lab))
    r = get(results, "h2", "ring_iface")
    assert (r.status, r.value) == ("fail", "tb0 is down")
    assert "sudo ip link set tb0 up" in r.hint
    assert get(results, "ring", "bw:h1->h2").status == "skipped"
    assert get(results, "h1", "ring_iface").status == "ok"
    assert get(results, "h2", "route:h1").status == "fail"
    assert "tb0 is down on h2" in get(results, "h2", "route:h1").hint
    ring = get(results, "ring", "ring")
    assert ring.status == "fail"
    assert ring.value == "2/6 reachable; no route: h2->h1, h2->h3; no reply: h1->h2, h3->h2"
    assert exit_code(results) == 1
    assert elapsed < 15


async def test_wrong_ring_ip(lab):
    wrong = f"{lab.ring_net}.9"
    lab.set_ring_ip("h2", wrong)
    results, _ = await run_checks(lab, lab_config(lab))
    r = get(results, "h2", "ring_ip")
    h2 = lab.host("h2")
    assert r.status == "fail"
    assert r.value == f"tb0 holds {wrong}, not {h2.base_ring_ip}"
    assert f"ring_ip: {wrong}" in r.hint and f"ip addr add {h2.base_ring_ip}/24 dev tb0" in r.hint
    assert get(results, "h2", "ring_iface").status == "ok"


async def test_route_over_the_control_network(lab):
    h2 = lab.host("h2")
    lab.route_via_control("h1", h2.ring_ip)
    results, _ = await run_checks(lab, lab_config(lab))
    r = get(results, "h1", "route:h2")
    assert r.status == "fail"
    assert r.value == "traffic to h2 would go over eth0, not tb0"
    assert f"ip route replace {h2.ring_ip}/32 dev tb0" in r.hint
    assert get(results, "h1", "route:h3").status == "ok"
    assert get(results, "h2", "route:h1").status == "ok"


async def test_sshd_stopped(lab):
    lab.stop_sshd("h3")
    results, elapsed = await run_checks(lab, lab_config(lab))
    r = get(results, "h3", "ssh")
    assert r.status == "fail" and "refused" in r.value
    assert "Remote Login" in r.hint
    # its other checks and its links' are listed as skipped, saying why (the views fold them)
    h3 = [x for x in results if x.node == "h3"]
    why = "no SSH connection (unreachable)"
    assert h3[0] == r and {(x.status, x.value) for x in h3[1:]} == {("skipped", why)}
    assert get(results, "h1", "ssh").status == "ok" and get(results, "h1", "python").status == "ok"
    links = [x for x in results if x.name.startswith("bw:") and "h3" in x.name]
    assert {(x.name, x.status, x.value) for x in links} == {
        ("bw:h2->h3", "skipped", "no SSH connection to h3"),
        ("bw:h3->h1", "skipped", "no SSH connection to h3"),
    }
    assert get(results, "ring", "bw:h1->h2").status == "ok"
    assert elapsed < 15


@pytest.mark.parametrize(
    "fault, state, fix",
    [
        ("forget_host_key", "is not in", "once"),
        ("change_host_key", "changed", "ssh-keygen -R"),
    ],
)
async def test_host_key_unknown_or_changed(lab, fault, state, fix):
    getattr(lab, fault)("h2")
    results, elapsed = await run_checks(lab, lab_config(lab))
    r = get(results, "h2", "ssh")
    assert r.status == "fail" and state in (r.value + (r.hint or "")), r
    assert fix in r.hint, r.hint
    assert get(results, "h1", "ssh").status == "ok"
    assert elapsed < 15


async def test_missing_python(lab):
    results, _ = await run_checks(lab, lab_config(lab, h2={"python": "/nonexistent/bin/python3"}))
    r = get(results, "h2", "python")
    assert r.status == "fail" and "/nonexistent/bin/python3" in r.value
    assert r.hint == PYTHON_HINT
    assert get(results, "h2", "mlx").status == "skipped"
    assert get(results, "h1", "python").status == "ok"


async def test_python_without_mlx(lab, tmp_path):
    # Lab hosts share this filesystem: a wrapper whose python finds a broken "mlx" first.
    fake = tmp_path / "fakemlx" / "mlx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named mlx.core')\n")
    py = tmp_path / "python-no-mlx"
    py.write_text(f'#!/bin/sh\nPYTHONPATH={fake.parent} exec {sys.executable} "$@"\n')
    py.chmod(0o755)
    results, _ = await run_checks(lab, lab_config(lab, h3={"python": str(py)}))
    r = get(results, "h3", "mlx")
    assert r.status == "fail" and "mlx" in r.value
    assert r.hint.startswith("pip install mlx in that python")
    assert get(results, "h3", "python").status == "ok"
    assert get(results, "h3", "boltring").status == "ok"


async def test_shaped_slow_link_reports_its_bandwidth(lab):
    lab.shape("h1", 200)  # 200 Mbit/s each way on h1's ring link
    results, elapsed = await run_checks(lab, lab_config(lab))
    for name in ("bw:h1->h2", "bw:h3->h1"):  # out of h1, and into h1
        r = get(results, "ring", name)
        assert r.status == "fail", r
        gbps = float(r.value.split()[0])
        assert 0.05 <= gbps <= 0.3, r.value
        assert r.value.endswith(" Gb/s") and f"moves only {r.value}" in r.hint
    assert get(results, "ring", "bw:h2->h3").status == "ok"
    assert elapsed < 15
