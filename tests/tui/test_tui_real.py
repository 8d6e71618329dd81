"""The app on the real controller: real local workers, and the SSH test hosts.

Press l and confirm, wait for the ranks' own metrics to reach the panels, press k and confirm,
and check that no worker process is left.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.jobs.controller import JobController
from boltring.tui.fmt import fmt_si
from boltring.tui.widgets.rank_row import RankRow
from tests.integration.test_ssh_run import lab_processes, lab_yaml
from tests.tui.harness import make_app, settle, wait_exit, wait_until


def rank_views(app):
    return [r for n in app.view.nodes.values() for r in n.ranks.values()]


def metrics_lines(path: Path) -> dict[int, dict]:
    return {
        rec["step"]: rec
        for rec in map(json.loads, path.read_text().splitlines())
        if rec.get("kind") == "step"
    }


async def launch_and_kill(pilot, app, *, ranks: int, timeout: float = 90) -> None:
    await settle(pilot)
    await pilot.press("l")
    await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmModal", 10)
    await pilot.press("a" if app.screen.anyway else "y")  # a check may fail on a busy machine
    await wait_until(
        pilot,
        lambda: (
            len(rank_views(app)) == ranks
            and all(r.step >= 20 and r.samples_per_s and r.allreduce_gbps for r in rank_views(app))
        ),
        timeout,
    )


async def kill(pilot, app) -> None:
    await pilot.press("k")
    await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmModal", 10)
    await pilot.press("y")
    await wait_until(pilot, lambda: app.view.state == "killed", 60)


async def test_launch_and_kill_real_local_workers(no_leftovers):
    config = with_overrides(load_config(None), ranks=2, example="mlp", steps=10**6)
    controller = JobController(config, poll_s=0.1)
    app = make_app(controller, clock=time.time)
    async with app.run_test(size=(120, 36)) as pilot:
        await launch_and_kill(pilot, app, ranks=2)
        # The panels' numbers are the workers' own: each matches a line of its metrics file.
        shown = {r.rank: (r.step, r.samples_per_s, r.steps_per_s) for r in rank_views(app)}
        for rank, (step, samples_per_s, steps_per_s) in shown.items():
            run_dir = Path(controller._ranks[rank].plan.run_dir.replace("~", str(no_leftovers), 1))
            line = metrics_lines(run_dir / "metrics.jsonl")[step]
            assert steps_per_s == pytest.approx(line["steps_per_s"])
            assert samples_per_s == pytest.approx(line["samples_per_s"] / config.world_size)
        app.refresh_now()
        rows = {row.rank: row.text() for row in app.query(RankRow)}
        for rv in rank_views(app):  # each rank's row shows its own figures
            assert (
                rows[rv.rank].startswith(f"r{rv.rank}") and f" {fmt_si(rv.samples_per_s)} " in rows[rv.rank]
            )
        assert "smp/s" in app.export_screenshot()
        await kill(pilot, app)
        assert all(r.status == "killed" for r in rank_views(app)), [r.status for r in rank_views(app)]
        app.simulate_key("q")  # the app exits: Pilot's press would wait on a closed app
        await wait_exit(app)


@pytest.mark.netns
async def test_launch_and_kill_over_ssh_shows_badges_and_checks(lab, tmp_path, home):
    config = load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=10**6))
    controller = JobController(config, poll_s=0.1)
    app = make_app(controller, clock=time.time)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(
            pilot,
            lambda: (
                app.view.state == "idle"
                and all(
                    {"ssh", "python", "mlx", "ring_iface"} <= set(n.checks) for n in app.view.nodes.values()
                )
            ),
            30,
        )
        for n in app.view.nodes.values():
            assert any(k.startswith(("rtt:", "route:")) for k in n.checks), sorted(n.checks)
            assert n.ssh_state == "connected", (n.name, n.ssh_state)
            assert n.checks["ring_iface"].status == "ok" and "tb0" in n.checks["ring_iface"].value
            assert n.checks["python"].value and n.checks["mlx"].value
        await launch_and_kill(pilot, app, ranks=3)
        assert {r.node for r in rank_views(app)} == {"h1", "h2", "h3"}
        await kill(pilot, app)
        app.simulate_key("q")  # the app exits: Pilot's press would wait on a closed app
        await wait_exit(app)
    assert lab_processes(lab) == []


@pytest.mark.bench
async def test_app_cpu_share_while_4_ranks_report_fast(no_leftovers):
    """Benchmark: the app's process (UI + controller) CPU share while 4 ranks report every step."""
    config = with_overrides(load_config(None), ranks=4, example="mlp", steps=10**6)
    controller = JobController(config)
    app = make_app(controller, clock=time.time)
    me = psutil.Process()
    async with app.run_test(size=(120, 36)) as pilot:
        await launch_and_kill(pilot, app, ranks=4)
        t0, c0 = time.monotonic(), sum(me.cpu_times()[:2])
        steps0 = min(r.step for r in rank_views(app))
        await pilot.pause(10.0)
        wall, cpu = time.monotonic() - t0, sum(me.cpu_times()[:2]) - c0
        lines_per_s = (min(r.step for r in rank_views(app)) - steps0) * 4 / wall
        await kill(pilot, app)
        app.simulate_key("q")  # the app exits: Pilot's press would wait on a closed app
        await wait_exit(app)
    share = cpu / wall
    print(json.dumps({"app_cpu_share_of_one_core": share, "metrics_lines_per_s": lines_per_s}))
    assert share < 0.5, f"the app used {share:.0%} of a core for {lines_per_s:.0f} metrics lines/s"
