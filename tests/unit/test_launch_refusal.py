"""A launch whose plan cannot be made says why and leaves the controller idle."""

from __future__ import annotations

import asyncio

import pytest

from boltring.cluster.config.load import load_config_text
from boltring.cluster.jobs.controller import ControllerError, JobController
from boltring.cluster.states import JobState


def test_a_plan_that_cannot_be_made_leaves_the_job_idle(tmp_path):
    """job.sync naming a folder that went away after the CLI's check: the plan failed after
    the state was already "launching", outside the launch's error handling, so the app
    showed a launch that never ended."""
    path = tmp_path / "c.yaml"
    path.write_text("nodes:\n  - {name: a, local: true, ranks: 2}\njob: {example: mlp, sync: [./gone]}\n")
    controller = JobController(load_config_text(path.read_text(), str(path)))

    async def launch() -> None:
        try:
            await controller.launch()
        finally:
            await controller.close()

    with pytest.raises(ControllerError, match=r"job\.sync names \./gone"):
        asyncio.run(launch())
    assert controller.state == JobState.IDLE


def test_a_node_that_cannot_be_reached_at_launch_is_one_line(tmp_path):
    """No rank started anywhere: the abort said "could not stop the ranks on b" first, which was
    false, and made the failure two lines."""
    from tests.procs import cli_in

    path = tmp_path / "c.yaml"
    path.write_text(
        "ssh: {connect_timeout: 2, known_hosts: " + str(tmp_path / "kh") + "}\n"
        "nodes:\n  - {name: a, local: true, ranks: 1, ring_ip: 127.0.0.1}\n"
        "  - {name: b, ssh: 'you@127.0.0.1:1', ring_ip: 127.0.0.2}\n"
        "job: {example: mlp}\n"
    )
    res = cli_in(tmp_path, "--config", str(path), "--run", "--skip-checks", timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "could not stop the ranks" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert "launch failed: b:" in res.stdout + res.stderr


def test_every_node_that_cannot_be_reached_is_named_in_one_line_without_a_traceback(tmp_path):
    """Two nodes refusing SSH: only the first was named, and the second node's error, never
    retrieved from the gathered connects, printed a traceback as the command exited."""
    from tests.procs import cli_in

    path = tmp_path / "c.yaml"
    path.write_text(
        "ssh: {connect_timeout: 2, known_hosts: " + str(tmp_path / "kh") + "}\n"
        "nodes:\n  - {name: b, ssh: 'you@127.0.0.1:1', ring_ip: 198.18.0.2}\n"
        "  - {name: c, ssh: 'you@127.0.0.3:1', ring_ip: 198.18.0.4}\n"
        "job: {example: mlp}\n"
    )
    res = cli_in(tmp_path, "--config", str(path), "--run", "--skip-checks", timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.strip()]
    assert line.startswith("boltring: launch failed: b: ") and "; c: " in line, line
