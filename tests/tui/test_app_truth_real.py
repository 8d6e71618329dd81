"""What the app says, on the real controller, where its truth depends on what the controller
does: a launch failure's cause (the controller keeps a node's "node: cause" line when it
re-raises).
"""

from __future__ import annotations

import time
from pathlib import Path

from boltring.cluster.config.load import load_config
from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.states import JobState
from tests.tui.harness import make_app, wait_until


async def launch(pilot, app) -> None:
    await wait_until(pilot, lambda: "checks" not in app._busy and app.view.state == JobState.IDLE, 60)
    await pilot.press("l")
    await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmModal", 10)
    await pilot.press("a" if app.screen.anyway else "y")  # a check may fail on a busy machine


def ghost_config(tmp_path: Path, args: str) -> Path:
    """A local node, and "ghost", whose SSH port refuses every connection."""
    path = tmp_path / "ghost.yaml"
    path.write_text(
        "name: ghost\nnodes:\n"
        "  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 1}\n"
        '  - {name: ghost, ssh: "nobody@127.0.0.1:1", ring_ip: 127.0.0.2, ranks: 1}\n'
        f"ring: {{port: {free_port_block(2)}}}\nssh: {{connect_timeout: 2}}\n"
        f"job: {{example: mlp, steps: 100, args: [{args}]}}\n"
    )
    return path


async def launch_error(cfg_path: Path) -> str | None:
    app = make_app(JobController(load_config(str(cfg_path)), poll_s=0.1), clock=time.time)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(pilot, lambda: app.view.nodes["ghost"].lost and "checks" not in app._busy, 60)
        await launch(pilot, app)
        await wait_until(pilot, lambda: app.view.error is not None, 60)
        return app.view.error


async def test_launch_failure_blames_an_unreachable_node_only_when_it_is_the_cause(tmp_path, home):
    # refused for its arguments before any node is contacted: ghost has nothing to do with it
    error = await launch_error(ghost_config(tmp_path, '"--no-such-flag"'))
    assert error is not None and error.startswith("launching failed: the job's arguments"), error
    assert "ghost" not in error
    # failed reaching ghost: then it is named
    error = await launch_error(ghost_config(tmp_path, ""))
    assert error == "launching failed: cannot reach ghost"
