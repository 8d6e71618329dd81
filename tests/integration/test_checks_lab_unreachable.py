"""`boltring check --json` against the netns lab's real SSH hosts when some cannot be reached:
every check of every node is listed (passed, failed, or skipped with why), in one shape, and the
exit code still says only whether a check failed.

The lab's faults are undone by its `lab` fixture (lab.reset() before and after each test), even
when a test fails."""

from __future__ import annotations

import json

import pytest

from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.controller import JobController
from boltring.tui.check_view import run_check

pytestmark = pytest.mark.netns

PER_NODE = ["ssh", "python", "boltring", "mlx", "chip", "memory", "ring_iface", "ring_ip", "mtu", "ports",
            "route", "rtt", "route", "rtt", "default_route", "clock"]  # fmt: skip


def lab_config(lab) -> Config:
    nodes = tuple(lab.node(h, ring_ip=h.base_ring_ip) for h in lab.hosts)
    return Config(name="lab", nodes=nodes, ssh=lab.ssh_options(connect_timeout_s=3.0))


async def check_json(lab, capsys) -> tuple[int, list[dict]]:
    """`boltring check --json`, as the CLI runs it (its controller, its SSH transports)."""
    capsys.readouterr()
    code = await run_check(JobController(lab_config(lab)), json_out=True)
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def shapes(checks: list[dict], node: str) -> list[str]:
    return sorted(c["name"].partition(":")[0] for c in checks if c["node"] == node)


def assert_all_listed_skipped(checks: list[dict], node: str, why: str) -> None:
    mine = [c for c in checks if c["node"] == node]
    assert shapes(checks, node) == sorted(PER_NODE), mine
    ssh = next(c for c in mine if c["name"] == "ssh")
    assert ssh["status"] == "fail" and ssh["hint"], ssh
    others = {h for c in mine if (h := c["name"].partition(":")[2])}
    assert len(others) == 2 and node not in others  # its two ring neighbours
    for c in mine:
        if c["name"] != "ssh":
            assert (c["status"], c["value"], c["hint"]) == ("skipped", why, None), c
            assert set(c) == set(ssh), c  # the shape of every other check


@pytest.mark.parametrize(
    "fault, why",
    [
        ("stop_sshd", "no SSH connection (unreachable)"),
        ("forget_host_key", "no SSH connection (host key unknown)"),
    ],
)
async def test_a_node_ssh_cannot_reach_lists_each_check_skipped_with_why(lab, capsys, fault, why):
    getattr(lab, fault)("h3")
    code, checks = await check_json(lab, capsys)
    assert code == 1  # its ssh check failed
    assert_all_listed_skipped(checks, "h3", why)
    for h in ("h1", "h2"):  # the others as always: all there, all checked
        assert shapes(checks, h) == sorted(PER_NODE)
        assert not [c for c in checks if c["node"] == h and c["status"] in ("skipped", "fail")]
    bw = {c["name"]: c for c in checks if c["name"].startswith("bw:")}
    assert set(bw) == {"bw:h1->h2", "bw:h2->h3", "bw:h3->h1"}
    assert bw["bw:h1->h2"]["value"].endswith("Gb/s")  # measured
    for name in ("bw:h2->h3", "bw:h3->h1"):
        assert (bw[name]["status"], bw[name]["value"]) == ("skipped", "no SSH connection to h3")
    ring = next(c for c in checks if (c["node"], c["name"]) == ("ring", "ring"))
    assert ring["value"] == "4/4 reachable; not checked from h3"


async def test_no_node_reachable_still_lists_every_check(lab, capsys):
    for h in ("h1", "h2", "h3"):
        lab.stop_sshd(h)
    code, checks = await check_json(lab, capsys)
    assert code == 1
    for h in ("h1", "h2", "h3"):
        assert_all_listed_skipped(checks, h, "no SSH connection (unreachable)")
    ring = [c for c in checks if c["node"] == "ring"]
    assert {c["name"]: c["status"] for c in ring} == {
        "ring": "skipped",
        "bw:h1->h2": "skipped",
        "bw:h2->h3": "skipped",
        "bw:h3->h1": "skipped",
    }
    assert ring[0]["value"] == "not checked from h1, h2, h3: no SSH connection"
    assert not [c for c in checks if c["status"] == "fail" and c["name"] != "ssh"]
