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
