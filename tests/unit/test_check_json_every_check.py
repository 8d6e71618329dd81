"""`boltring check --json` lists every check of every node: a node SSH cannot reach has its ssh
check failed and each of its other checks skipped with the reason, in the shape of any other
skipped check; the table keeps that node to one line, which counts them.

Real checks: two local nodes on loopback, and a node whose SSH port (127.0.0.1) refuses."""

from __future__ import annotations

import io
import json
import socket
import sys

from rich.console import Console

from boltring.cluster.config.schema import Config, Node, RingOptions, SshOptions
from boltring.cluster.jobs.controller import JobController
from boltring.tui.check_view import run_check

PY = sys.executable


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: SSH is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster(tmp_path, *, python2: str = PY, far_port: int | None = None) -> Config:
    return Config(
        name="t",
        nodes=(
            Node(name="n1", ring_ip="127.0.0.1", local=True, ring_iface="lo", python=PY),
            Node(name="n2", ring_ip="127.0.0.2", local=True, ring_iface="lo", python=python2),
            Node(name="far", ring_ip="127.0.0.3", ssh=f"you@127.0.0.1:{far_port or closed_port()}"),
        ),
        ring=RingOptions(port=closed_port() + 300),
        ssh=SshOptions(
            config_file=str(tmp_path / "no-ssh-config"),
            known_hosts=str(tmp_path / "known_hosts"),
            connect_timeout_s=1.5,
        ),
    )


async def json_checks(config: Config, capsys, *, bandwidth: bool) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = await run_check(JobController(config), json_out=True, bandwidth=bandwidth)
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines]


def shape(name: str) -> str:
    """A check's name with its peer left out: route:n2 and route:far are the same check."""
    return name.partition(":")[0]


def per_node(checks: list[dict], node: str) -> list[dict]:
    return [c for c in checks if c["node"] == node]


async def test_unreachable_node_lists_every_check_as_skipped_with_why(tmp_path, home, capsys):
    code, checks = await json_checks(cluster(tmp_path), capsys, bandwidth=True)
    assert code == 1  # the ssh check failed: exit code as before
    far = per_node(checks, "far")
    ssh = far[0]
    assert (ssh["name"], ssh["status"]) == ("ssh", "fail") and "refused" in ssh["value"]
    # every check a reachable node has, the unreachable one has too (its peers are others)
    n1 = per_node(checks, "n1")
    assert sorted(shape(c["name"]) for c in far) == sorted(shape(c["name"]) for c in n1), (far, n1)
    assert {c["name"] for c in far if ":" in c["name"]} == {"route:n1", "rtt:n1", "route:n2", "rtt:n2"}
    # each skipped, saying why, in the shape of any other check
    for c in far[1:]:
        assert c["status"] == "skipped", c
        assert c["value"] == "no SSH connection (unreachable)", c
        assert c["hint"] is None and c["event"] == "check" and set(c) == set(n1[0]), c
    # its ring links too: measured between n1 and n2, skipped to and from far
    bw = {c["name"]: c for c in checks if c["node"] == "ring" and c["name"].startswith("bw:")}
    assert set(bw) == {"bw:n1->n2", "bw:n2->far", "bw:far->n1"}, bw
    assert bw["bw:n1->n2"]["value"].endswith("Gb/s")  # measured (its speed depends on the load here)
    for name in ("bw:n2->far", "bw:far->n1"):
        assert (bw[name]["status"], bw[name]["value"]) == ("skipped", "no SSH connection to far")
    ring = next(c for c in checks if (c["node"], c["name"]) == ("ring", "ring"))
    assert ring["value"].endswith("not checked from far")


async def test_skipped_checks_do_not_change_the_exit_code(tmp_path, home, capsys):
    # n2 has no python: failed python, its other checks skipped; far unreachable. Without far's
    # failure the code would still be 1 for n2's python; skipped ones add nothing to it.
    code, checks = await json_checks(
        cluster(tmp_path, python2="/nonexistent/python3"), capsys, bandwidth=False
    )
    assert code == 1
    failed = {(c["node"], c["name"]) for c in checks if c["status"] == "fail"}
    assert failed == {("far", "ssh"), ("n2", "python")}
    n2 = per_node(checks, "n2")
    n1 = per_node(checks, "n1")
    # a node without python lists every check too, skipped with its own reason
    assert sorted(shape(c["name"]) for c in n2) == sorted(shape(c["name"]) for c in n1), (n2, n1)
    assert all(c["value"] == "no python" for c in n2 if c["status"] == "skipped")


async def test_table_keeps_the_unreachable_node_to_one_line_that_counts_its_skipped_checks(
    tmp_path, home, capsys
):
    config = cluster(tmp_path)
    _, checks = await json_checks(config, capsys, bandwidth=False)
    skipped_far = sum(1 for c in checks if c["node"] == "far" and c["status"] == "skipped")
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None, highlight=False)
    code = await run_check(JobController(config), bandwidth=False, console=console)
    text = out.getvalue()
    assert code == 1
    (line,) = [ln for ln in text.splitlines() if ln.startswith("✘ far ssh:")]
    assert f"refused the connection (+{skipped_far} skipped) →" in line, line
    assert "no SSH connection" not in text  # no row per skipped check, none for far at all
    assert not [ln for ln in text.splitlines() if ln.startswith("│ far ") and "skipped" in ln]
    # the last line counts what --json lists
    n = {
        status: sum(1 for c in checks if c["status"] == status)
        for status in ("ok", "warn", "fail", "skipped")
    }
    assert n["fail"] == 1 and n["skipped"] == skipped_far == 15  # clock too
    warned = f", {n['warn']} warning" + ("s" if n["warn"] > 1 else "") if n["warn"] else ""
    last = f"{len(checks)} checks: {n['ok']} ok{warned}, 1 failed, +{n['skipped']} skipped"
    assert text.rstrip().splitlines()[-1] == last, text
    # the nodes table does not take a skipped check's reason for far's chip or memory
    (row,) = [ln for ln in text.splitlines() if ln.startswith("│ far ")]
    assert "SSH" not in row


async def test_an_unreachable_node_lists_its_job_paths_check_skipped_too(tmp_path):
    """A job that names folders gets a job_paths check on every node; on one SSH cannot reach, it
    is skipped with the others (bandwidth off: only the per-node checks)."""
    from boltring.cluster.config.schema import JobSpec
    from boltring.cluster.nodes.checks.run import check_cluster
    from boltring.cluster.nodes.errors import AuthFailed

    data = tmp_path / "data"
    data.mkdir()
    cfg = cluster(tmp_path)
    cfg = Config(
        name="t", nodes=cfg.nodes, ring=cfg.ring, ssh=cfg.ssh, job=JobSpec(example="lm", data=str(data))
    )
    refused = AuthFailed("far: you@127.0.0.1 refused every key", hint="ssh-copy-id")
    res = await check_cluster(cfg, {"far": refused}, bandwidth=False)
    got = {(r.node, r.name): (r.status, r.value) for r in res}
    assert got[("n1", "job_paths")][0] == "ok"
    assert got[("far", "job_paths")] == ("skipped", "no SSH connection (auth failed)")
    assert got[("far", "ssh")] == ("fail", "you@127.0.0.1 refused every key")
