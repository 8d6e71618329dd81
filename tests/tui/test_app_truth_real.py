"""What the app says, on the real controller, where its truth depends on what the controller
does: quitting while the job restarts (the relaunch is this process's), and a launch failure's
cause (the controller keeps a node's "node: cause" line when it re-raises).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from boltring.cluster.config.load import load_config
from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.history import last_run
from boltring.cluster.states import JobState
from boltring.tui.screens.quit_modal import QuitModal
from tests.faults.helpers import config, rank_process_pid, write_config
from tests.tui.harness import make_app, settle, wait_exit, wait_until


async def launch(pilot, app) -> None:
    await wait_until(pilot, lambda: "checks" not in app._busy and app.view.state == JobState.IDLE, 60)
    await pilot.press("l")
    await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmModal", 10)
    await pilot.press("a" if app.screen.anyway else "y")  # a check may fail on a busy machine


async def test_quit_while_restarting_offers_no_leave_and_kill_ends_it(tmp_path, no_leftovers):
    """Closing the controller cancels its follow task, which is what relaunches: "leave it
    running" would leave nothing running. The dialog offers Kill and Cancel; Kill ends the job,
    with no rank left and no relaunch."""
    job = "steps: 1000000, restarts: 2, restart_delay: 5"
    cfg = config(write_config(tmp_path, ranks=2, name="restarting", job=job))
    controller = JobController(cfg, poll_s=0.1)
    app = make_app(controller, clock=time.time)
    async with app.run_test(size=(140, 40)) as pilot:
        await launch(pilot, app)
        await wait_until(pilot, lambda: app.view.state == JobState.RUNNING and app.view.step >= 5, 120)
        os.kill(rank_process_pid(controller, 1, no_leftovers), signal.SIGKILL)  # as the OOM killer would
        await wait_until(pilot, lambda: app.view.state == JobState.RESTARTING, 60)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitModal), 10)
        assert not app.screen.query("#leave")
        assert "quitting now would leave nothing running" in str(app.screen.query_one("#message").content)
        await pilot.press("l")  # not offered: nothing happens
        await settle(pilot)
        assert isinstance(app.screen, QuitModal) and app.return_code is None
        app.simulate_key("k")  # the app exits: Pilot's press would wait on a closed app
        await wait_exit(app, timeout=90)
    run = last_run(cfg.source)
    assert run is not None and run.state == JobState.KILLED, run
    # no_leftovers: no rank of a relaunch runs on


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
