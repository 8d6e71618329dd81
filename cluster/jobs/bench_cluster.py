"""`boltring bench --cluster`: the allreduce bench on the config's nodes, over their ring
addresses (the Thunderbolt links), not on local ranks.

Each cell (one backend, one size) is a short job, started the way every job starts: over SSH,
with the job secret on stdin, detached ranks, and the kill path if it is interrupted. The job
runs bench_worker as a module on every rank: with boltring's ring (backend boltring), or with
MLX's own ring (backend mlx-ring, the hostfile mlx.launch would use, on the same addresses).
Rank 0 prints one JSON line per size, which arrives here as its log line.

Before the cells, the nodes are checked as `boltring --run` checks them (`check_nodes`), which
also measures every ring link with plain TCP in the ring's own pattern: all links at once,
each node sending to one neighbour and receiving from the other. The slowest link is what
any ring can at best carry, so each busbw is also given as a fraction of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

from boltring.cluster.config.schema import Config
from boltring.cluster.nodes.checks.bandwidth import link_gbps
from boltring.cluster.states import JobState

from .bench import BenchError, BenchResult
from .controller import JobController
from .errors import ControllerError
from .events import CheckResult, Event, LogLine

WORKER = "boltring.cluster.train.bench_worker"
# The checks' own burst is 1 s, enough to tell Thunderbolt from Wi-Fi; as the reference a ring
# is measured against, the bench gives each link 3 s, so that TCP's start weighs less. On the
# shaped test hosts our ring still read above it in 5 of 16 cells (at most 113%), against 7 of
# 16 with 1 s: at 10 Gbit/s there the shared cores limit both, and they vary from run to run.
LINK_SECONDS = 3.0
CELL_TIMEOUT_S = 900.0  # one backend at one size; a hung MLX ring would otherwise wait forever
JOB_BACKEND = {"boltring": "boltring", "mlx": "mlx-ring"}  # bench backend -> ring.backend


def cell_config(
    config: Config, backend: str, size: int, repeat: int, dtype: str, wire_dtype: str = ""
) -> Config:
    """The config's nodes and ring, running bench_worker for one backend and size."""
    args = ["--backend", backend, "--sizes", str(size), "--repeat", str(repeat), "--dtype", dtype]
    args += ["--wire-dtype", wire_dtype] if wire_dtype else []
    job = dataclasses.replace(
        config.job, module=WORKER, example=None, script=None, args=tuple(args), restarts=0
    )
    ring = dataclasses.replace(config.ring, backend=JOB_BACKEND[backend])
    return dataclasses.replace(config, job=job, ring=ring)


async def run_cell(
    config: Config,
    backend: str,
    size: int,
    repeat: int,
    dtype: str = "float32",
    wire_dtype: str = "",
    *,
    timeout_s: float = CELL_TIMEOUT_S,
) -> BenchResult:
    """Run one cell as a job on the config's nodes and return rank 0's result. A cell that
    fails, or outlasts `timeout_s`, has every rank stopped and raises BenchError saying why."""
    controller = JobController(cell_config(config, backend, size, repeat, dtype, wire_dtype))
    lines: list[str] = []

    def listen(ev: Event) -> None:
        if isinstance(ev, LogLine) and ev.rank == 0 and ev.text.startswith("{"):
            lines.append(ev.text)

    controller.add_listener(listen)
    where = f"{backend} on {', '.join(n.name for n in config.nodes)}"
    try:
        try:
            await controller.launch()
        except ControllerError as e:
            raise BenchError(f"{where}: launch failed: {e}" + (f" ({e.hint})" if e.hint else "")) from None
        try:
            summary = await asyncio.wait_for(controller.wait(), timeout_s)
        except TimeoutError:
            raise BenchError(f"{where}: no result within {timeout_s:.0f} s; every rank was stopped") from None
    finally:
        controller.remove_listener(listen)
        await controller.close(kill_running=True)
    if summary.status != JobState.FINISHED:
        raise BenchError(
            f"{where}: job {summary.job_id} {summary.status}: {summary.reason or 'no reason given'}"
        )
    results = []
    for line in lines:
        try:
            results.append(BenchResult.from_worker(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue  # a rank's own output that merely starts with "{"
    if not results:
        raise BenchError(f"{where}: job {summary.job_id} finished but rank 0 printed no result")
    return results[0]


async def check_nodes(config: Config) -> tuple[Config, list[CheckResult]]:
    """Every check `boltring check` makes, bandwidth included: the results, and the config a
    launch would use after them (nodes in cable order with ring.order: cabling, ring.directions
    auto decided from the routes)."""
    controller = JobController(config)
    try:
        results = await controller.run_checks(bandwidth_seconds=LINK_SECONDS)
    finally:
        await controller.close()
    return controller.launch_config(), results


def slowest_link(results: list[CheckResult]) -> tuple[str, float] | None:
    """("a->b", Gbit/s) of the slowest ring link the checks measured, or None."""
    rates = link_gbps(results)
    if not rates:
        return None
    name = min(rates, key=rates.__getitem__)
    return name.removeprefix("bw:"), rates[name]
