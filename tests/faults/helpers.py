"""Shared parts of the fault suite: a config per test, the CLI as a subprocess, a rank's pid."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from boltring.cluster.config.load import load_config
from boltring.cluster.config.ports import free_port_block

CLI = [sys.executable, "-m", "boltring.tui.cli"]


def write_config(
    tmp_path: Path,
    *,
    ranks: int = 3,
    name: str = "faults",
    job: str = "",
    ring: str = "",
    global_batch: int = 60,
) -> Path:
    """A local config on its own ring ports (other test sessions on this machine use the default)."""
    port = free_port_block(ranks)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        f"name: {name}\nnodes:\n  - {{name: local, local: true, ring_ip: 127.0.0.1, ranks: {ranks}}}\n"
        + f"ring: {{port: {port}{', ' + ring if ring else ''}}}\n"
        + f"job: {{example: mlp, global_batch: {global_batch}, {job}}}\n"
    )
    return cfg


async def run_job(cfg, timeout: float = 300):
    """Launch, follow to the end and close: (summary, every event seen)."""
    from boltring.cluster.jobs.controller import JobController

    c = JobController(cfg, poll_s=0.1)
    seen: list = []
    c.add_listener(seen.append)
    await c.launch()
    summary = await asyncio.wait_for(c.wait(), timeout)
    await c.close()
    return summary, seen


def loss_curve(seen: list) -> list[tuple[int, int, float]]:
    """Every (rank, step, loss) the ranks reported, in order: two runs with the same curve, bit
    for bit, give equal lists (floats compared exactly)."""
    from boltring.cluster.jobs.events import RankMetrics

    return sorted(
        {(e.rank, e.step, e.loss) for e in seen if isinstance(e, RankMetrics) and e.loss is not None}
    )


def config(path: Path):
    return load_config(str(path))


def cli(*args: str, timeout: float = 180, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def rank_pid(controller, rank: int, home: Path) -> int:
    run_dir = Path(controller._ranks[rank].plan.run_dir.replace("~", str(home), 1))
    return int((run_dir / "pid").read_text())


def rank_dir(controller, rank: int, home: Path) -> Path:
    return Path(controller._ranks[rank].plan.run_dir.replace("~", str(home), 1))


def rank_process_pid(controller, rank: int, home: Path) -> int:
    """The rank's own process (the keeper's child), for killing the rank and not its keeper."""
    import psutil

    children = psutil.Process(rank_pid(controller, rank, home)).children()
    assert children, "the rank has no process"
    return children[0].pid
