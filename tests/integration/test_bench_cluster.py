"""`boltring bench --cluster` on real sshd test hosts: each cell is a job started over SSH, and
both rings run over the hosts' ring network (tb0), not the control network SSH uses."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_ssh_run import lab_processes, lab_yaml, run_cli

pytestmark = pytest.mark.netns


def test_both_rings_over_the_ring_network_of_three_hosts(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=10)
    res = run_cli(
        "bench",
        "--cluster",
        "--config",
        str(cfg),
        "--backend",
        "both",
        "--sizes",
        "256KB",
        "--repeat",
        "3",
        "--json",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "running boltring, 3 ranks on h1, h2, h3, 256 KB, 3 repeats" in res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r.get("backend", "ratio"), r["ranks"]) for r in rows] == [
        ("boltring", 3),
        ("mlx", 3),
        ("ratio", 3),
    ]
    assert rows[0]["transport"] == "tcp"  # ranks on different hosts
    # ring.directions auto: the checks saw every host reach both neighbours over tb0, one bridge
    assert rows[0]["directions"] == 1
    assert rows[2]["ratio_boltring_over_mlx"] > 0
    # the checks ran first and measured every ring link: each busbw is also a fraction of the slowest
    assert "running the checks on h1, h2, h3" in res.stderr
    assert rows[0]["link"] in ("h1->h2", "h2->h3", "h3->h1") and rows[0]["link_gbit_s"] > 1
    for r in rows[:2]:
        assert r["busbw_of_link"] == pytest.approx(r["busbw_gbps"] * 8 / r["link_gbit_s"])
    # both rings were given the hosts' tb0 addresses: ours in BOLTRING_RING, MLX's in the
    # hostfile the spawn agent writes for MLX_HOSTFILE
    ring_ips = [h.ring_ip for h in lab.hosts]
    specs = [json.loads(p.read_text()) for p in (lab.host("h2").workdir / "runs").glob("*/rank1/spec.json")]
    by_backend = {spec["env"]["BOLTRING_BACKEND"]: spec for spec in specs}
    assert sorted(by_backend) == ["boltring", "mlx-ring"], specs
    ours = json.loads(by_backend["boltring"]["env"]["BOLTRING_RING"])
    theirs = json.loads(by_backend["mlx-ring"]["files"]["MLX_HOSTFILE"])
    assert [a.rsplit(":", 1)[0] for a in ours] == ring_ips, ours
    assert [a.rsplit(":", 1)[0] for [a] in theirs] == ring_ips, theirs
    assert not lab_processes(lab)
