"""A node whose wall clock is off (a Mac on Thunderbolt only: no internet, no network time):
boltring's figures stay true, and `boltring check` says so (tests/lab: real sshd test hosts).

The clock is off for every boltring process on h2: the lab sets its wall clock off in every
Python started over SSH there (sshd's SetEnv: tests/lab/clockskew), so the spawn agent, the
rank's keeper (exit.json) and the rank itself (its metrics lines) all read time.time() 90 s
ahead or behind, while their monotonic clocks run true, as on a Mac that drifted. Before: the job's `wall` was the controller's start against the ranks' ends
by their nodes' clocks, so h2 +90 s made a 5 s job read 95 s, and -90 s read 0 s.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import LogLine, RankMetrics
from boltring.cluster.jobs.history import list_runs
from boltring.cluster.states import CheckStatus, JobState
from tests.procs import start_cli, wait_for_step

pytestmark = pytest.mark.netns
SKEW_S = 90.0
ERR_S = 0.5  # how far off a measured clock offset may be (its error_s: half an SSH round trip)
STEPS = 500  # the mlp example: about 5 s on the lab


def lab_yaml(lab, path: Path, *, port: int, steps: int = STEPS) -> Path:
    """The lab as a config; each node's workdir its own home's, written out in full, so that
    the run directories are paths this machine reads too (`boltring runs` reads rank 0's
    metrics when its run directory is here)."""
    nodes = "\n".join(
        f"  - {{name: {h.name}, ssh: {h.name}, ring_ip: {h.ring_ip}, ring_iface: tb0, workdir: {h.workdir}}}"
        for h in lab.hosts
    )
    path.write_text(f"""name: labclock
ssh:
  config_file: {lab.ssh_config}
  known_hosts: {lab.known_hosts}
  connect_timeout: 5
ring: {{port: {port}, timeout: 60, connect_timeout: 20}}
defaults: {{python: {sys.executable}}}
nodes:
{nodes}
job: {{example: mlp, seed: 3, global_batch: 240, steps: {steps}}}
""")
    return path


def run_dir(lab, job: str, rank: int) -> Path:
    return lab.host(rank + 1).workdir / "runs" / job / f"rank{rank}"


def job_record(home: Path, job: str) -> dict:
    return json.loads((home / ".boltring" / "jobs" / f"{job}.json").read_text())


@pytest.mark.parametrize("skew", [SKEW_S, -SKEW_S], ids=["ahead", "behind"])
def test_the_wall_of_a_job_with_a_node_clock_off_is_the_time_it_ran(lab, tmp_path, home, skew):
    lab.skew_clock("h2", skew)
    cfg = load_config(str(lab_yaml(lab, tmp_path / "lab.yaml", port=52860)))

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(lambda e: seen.append((time.time(), e)))
        job = await c.launch()
        began = time.monotonic()  # the ranks all run: the job's start, by the controller
        summary = await asyncio.wait_for(c.wait(), 180)
        took = time.monotonic() - began  # to its summary: the ends, and the last read of them
        await c.close()
        return job, summary, took, seen

    job, summary, took, seen = asyncio.run(scenario())
    assert summary.status == JobState.FINISHED and summary.steps == STEPS, summary
    assert took > 2, took  # long enough for the skew to be far more than the job
    assert abs(summary.wall_s - took) < 2, (summary.wall_s, took)
    for r in range(3):  # every rank ended with the job, h2's (rank 1) too
        assert abs(summary.ranks[r]["ended_s"] - summary.wall_s) < 2, summary.ranks

    # the rank on h2 really read a clock `skew` off: its own metrics lines say so
    arrivals = {e.step: at for at, e in seen if isinstance(e, RankMetrics) and e.rank == 1}
    lines = [json.loads(x) for x in (run_dir(lab, job, 1) / "metrics.jsonl").read_text().splitlines()]
    written = {x["step"]: x["wall"] for x in lines if x.get("kind") == "step"}
    step = max(arrivals)
    print(
        f"\nMEASURED h2 {skew:+.0f} s: rank 1 wrote wall {written[step]:.2f} for step {step}, read here "
        f"at {arrivals[step]:.2f}; summary wall {summary.wall_s:.2f} s, controller measured {took:.2f} s"
    )
    assert abs(written[step] - arrivals[step] - skew) < 2
    # its events carry that time on the controller's clock, as every other event's
    for at, e in seen:
        if isinstance(e, RankMetrics):
            assert -3 < e.wall - at < 0.5, (e.rank, e.wall, at)

    clocks = job_record(home, job)["clocks"]
    assert abs(clocks["h2"]["offset_s"] - skew) < 0.5 and clocks["h2"]["error_s"] < 0.5, clocks
    assert all(abs(clocks[h]["offset_s"]) <= 0.5 for h in ("h1", "h3")), clocks
    said = [e.text for _, e in seen if isinstance(e, LogLine) and "h2's clock is" in e.text]
    assert len(said) == 1 and ("ahead" if skew > 0 else "behind") in said[0], said


def test_check_warns_that_h2s_clock_is_off_and_says_by_how_much(lab, tmp_path, home):
    from tests.faults.helpers import cli

    lab.skew_clock("h2", SKEW_S)
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", port=52870)
    res = cli("--config", str(cfg), "check", "--no-bandwidth", "--json", timeout=120)
    checks = {(c["node"], c["name"]): c for c in map(json.loads, res.stdout.splitlines()) if "name" in c}
    h2 = checks[("h2", "clock")]
    print(f"\nMEASURED check: h2 clock {h2['value']}; h1 {checks[('h1', 'clock')]['value']}")
    assert h2["status"] == CheckStatus.WARN, h2
    m = re.fullmatch(r"(\d+\.\d) s ahead of this computer's \(±(\d\.\d\d) s\)", h2["value"])
    assert m and abs(float(m[1]) - SKEW_S) < 0.5 and float(m[2]) < 0.5, h2
    assert h2["hint"].startswith(f"h2's clock is {h2['value']}"), h2
    assert "sudo date -s '-90 seconds'" in h2["hint"], h2  # the lab's hosts run Linux
    for node in ("h1", "h3"):
        assert checks[(node, "clock")]["status"] == CheckStatus.OK, checks[(node, "clock")]
    assert res.returncode == 0, res.stdout + res.stderr  # a warning never fails the check

    text = cli("--config", str(cfg), "check", "--no-bandwidth", timeout=120)
    assert "h2's clock is 90" in text.stdout and text.returncode == 0, text.stdout + text.stderr


def start_unwatched(lab, tmp_path: Path, *, port: int) -> tuple[str, float]:
    """A job launched by `--run`, which is then SIGKILLed: its ranks finish unwatched. Returns
    its id and when (this machine's clock) every rank's exit record was there."""
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", port=port)
    proc = start_cli("--config", str(cfg), "--run", "--json", "--skip-checks")
    try:
        first = json.loads(wait_for_step(proc, step=2).splitlines()[0])
        proc.send_signal(signal.SIGKILL)  # the controller dies; the detached ranks go on
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    job = first["job_id"]
    exits = [run_dir(lab, job, r) / "exit.json" for r in range(3)]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in exits):
        assert time.monotonic() < deadline, "the ranks never finished"
        time.sleep(0.05)
    return job, time.time()


def test_runs_lists_an_unwatched_jobs_wall_on_the_controllers_clock(lab, tmp_path, home):
    """With no summary, `runs` takes the wall from rank 0's last metrics line: h1's clock."""
    lab.skew_clock("h1", SKEW_S)
    job, ended = start_unwatched(lab, tmp_path, port=52880)
    (run,) = [r for r in list_runs() if r.job_id == job]
    started = job_record(home, job)["started"]
    print(
        f"\nMEASURED runs: wall {run.wall_s:.2f} s; the ranks had ended {ended - started:.2f} s after the start"
    )
    # seen here after the fact, so later than the ranks' own ends, less the offset's error (error_s)
    assert run.wall_s is not None and -ERR_S < ended - started - run.wall_s < 2, (run.wall_s, ended - started)


def test_status_closes_an_unwatched_job_with_its_wall_on_the_controllers_clock(lab, tmp_path, home):
    """The next `status` re-attaches, reads the ends (h2's on its clock) and writes the summary.
    Needs the controller to give re-attached ranks the record's clock offsets (controller._adopt:
    follow.use_clocks(..., record.clock_offsets(rec)); see the report of this change)."""
    from tests.faults.helpers import cli

    lab.skew_clock("h2", SKEW_S)
    job, ended = start_unwatched(lab, tmp_path, port=52890)
    started = job_record(home, job)["started"]
    res = cli("--config", str(tmp_path / "lab.yaml"), "status", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = job_record(home, job)["summary"]
    print(f"\nMEASURED status: wall {summary['wall_s']:.2f} s; the ranks ended {ended - started:.2f} s after")
    assert summary["status"] == "finished" and -ERR_S < ended - started - summary["wall_s"] < 2, summary
