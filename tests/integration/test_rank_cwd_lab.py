"""Where remote ranks run, on the SSH test hosts (tests/lab): in the workspace mirror of the
launch folder when the launch syncs it, else in the same folder when the node has it (the lab
hosts share this machine's filesystem, so they always do; the workdir fallback is tested in
test_rank_cwd.py). The job_paths check looks for relative paths in that same folder."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config
from boltring.cluster.nodes.checks.job_paths import job_paths_result
from boltring.cluster.nodes.ssh import SshTransport
from boltring.cluster.states import CheckStatus
from tests.integration.test_ssh_run import lab_processes, lab_yaml

pytestmark = pytest.mark.netns

SCRIPT = """
import os
import mlx.core as mx
from boltring.netio import init

group = init()
text = open("data.txt").read().strip()
with open(f"out-rank{group.rank}.txt", "w") as f:
    f.write(f"{text} {os.getcwd()}")
assert group.all_sum(mx.array([1.0])).item() == group.size
group.close()
"""


def run_from(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "boltring.tui.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_remote_ranks_run_in_the_synced_mirror_or_the_same_folder(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=1)
    proj = tmp_path / "cwdproj"  # the hosts' homes outlive the test: a name no other test uses
    proj.mkdir()
    (proj / "rel.py").write_text(SCRIPT)
    (proj / "data.txt").write_text("synced\n")
    # started in the script's folder: each rank runs in its copy in the node's workspace
    res = run_from(proj, "--run", "--skip-checks", "-c", str(cfg), "--script", "rel.py")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for rank, h in enumerate(lab.hosts):
        mirror = h.workdir / "workspace" / "cwdproj"
        assert (mirror / f"out-rank{rank}.txt").read_text() == f"synced {mirror}"
        # the hosts' homes also hold other tests' runs (the lab is shared): this job's is the newest
        newest = max((h.workdir / "runs").glob(f"*/rank{rank}/spec.json"), key=lambda p: p.stat().st_mtime)
        spec = json.loads(newest.read_text())
        assert spec["cwd"] == str(mirror)
    assert not list(proj.glob("out-rank*"))
    # started elsewhere: the same folder, which the hosts have
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.txt").write_text("same folder\n")
    res = run_from(elsewhere, "--run", "--skip-checks", "-c", str(cfg), "--script", "../cwdproj/rel.py")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for rank in range(3):
        assert (elsewhere / f"out-rank{rank}.txt").read_text() == f"same folder {elsewhere}"
    assert not lab_processes(lab)


def test_job_paths_check_over_ssh_looks_where_the_ranks_run(lab, tmp_path, home, monkeypatch):
    launch = tmp_path / "launch"
    (launch / "data").mkdir(parents=True)  # here, so on the hosts at the same path
    (lab.host("h1").home / "tiny").mkdir(exist_ok=True)  # in h1's home only, not where ranks run
    monkeypatch.chdir(launch)
    base = load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=1))
    job = dataclasses.replace(base.job, example="lm", args=("--model", "./tiny", "--data", "data"))
    config = dataclasses.replace(base, job=job)

    async def check_all():
        out = {}
        for node in config.nodes:
            t = SshTransport(node, options=config.ssh)
            try:
                await t.connect()
                out[node.name] = await job_paths_result(config, node, t)
            finally:
                await t.close()
        return out

    try:
        results = asyncio.run(check_all())
    finally:
        (lab.host("h1").home / "tiny").rmdir()
    for name, r in results.items():
        assert r is not None and r.status == CheckStatus.FAIL, (name, r)
        assert r.value == f"cannot read ./tiny (from {launch}, where {name}'s ranks run)", r
