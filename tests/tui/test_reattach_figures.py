"""What a re-attach (and any burst of steps read at once) shows must be true:

- each step event carries, per rank, that rank's figures at that step (its line for the step, or
  its latest line before it), never the rank's latest line for every step of the burst;
- the plain progress line of a burst is drawn once, with the latest step, not the first;
- the headless ETA follows the job's state: "stalled" while it is stalled, none once it ended.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from boltring.cluster.jobs import rank_reads
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import JobStarted, JobStateChanged, JobSummary, StepProgress
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.states import JobState
from boltring.tui.headless import HeadlessView
from boltring.tui.run_progress import PLAIN_EVERY_S
from tests.faults.helpers import cli, write_config
from tests.procs import start_cli, wait_for_step
from tests.tui import feed

# -- 1. each step with its own figures ---------------------------------------------------------


def _controller(ranks: int = 2) -> tuple[JobController, dict[int, RankState], list[StepProgress]]:
    c = JobController(feed.lab_config())
    node = c.config.nodes[0]
    states = {r: RankState(plan=SimpleNamespace(rank=r, run_dir="/nowhere"), node=node) for r in range(ranks)}  # type: ignore[arg-type]
    c._ranks = states
    seen: list[StepProgress] = []
    c.add_listener(lambda ev: seen.append(ev) if isinstance(ev, StepProgress) else None)
    return c, states, seen


def _line(step: int, sps: float, **extra: float) -> bytes:
    rec = {"kind": "step", "step": step, "loss": 5.0 - step / 10, "steps_per_s": sps, "wall": 1000.0 + step}
    return json.dumps({**rec, **extra}).encode()


def test_a_burst_pairs_each_step_with_each_rank_s_figures_at_that_step():
    c, rs, seen = _controller()
    for step in range(1, 6):  # rank 0 is read first, all at once (a re-attach)
        c._on_metrics_line(rs[0], _line(step, sps=step * 1.0, acc=step / 10))
    for step in (2, 4, 5):  # rank 1 reports now and then
        c._on_metrics_line(rs[1], _line(step, sps=100.0 + step, acc=1 + step / 10))
    assert [p.step for p in seen] == [1, 2, 3, 4, 5]
    for p in seen:
        assert p.ranks[0]["steps_per_s"] == p.step and p.ranks[0]["acc"] == p.step / 10, p
    assert 1 not in seen[0].ranks  # rank 1 has no line at or before step 1: not another's
    r1 = {p.step: p.ranks[1]["steps_per_s"] for p in seen[1:]}
    assert r1 == {2: 102.0, 3: 102.0, 4: 104.0, 5: 105.0}
    assert [p.step for p in seen] == sorted(p.step for p in seen)
    assert len(rs[0].unsent) == 1 and len(rs[1].unsent) == 1  # only what a later step may need


def test_lines_kept_for_later_steps_stay_bounded(monkeypatch):
    monkeypatch.setattr(rank_reads, "PENDING_KEEP", 10)
    c, rs, seen = _controller()
    for step in range(1, 101):  # rank 1 never reports
        c._on_metrics_line(rs[0], _line(step, sps=float(step)))
    assert len(rs[0].unsent) == 10 and not seen
    c._on_metrics_line(rs[1], _line(100, sps=1.0))
    assert [p.step for p in seen] == list(range(91, 101))
    assert all(p.ranks[0]["steps_per_s"] == p.step for p in seen)


def test_re_attach_with_real_ranks_gives_each_step_its_own_figures(tmp_path, no_leftovers):
    """`--run` is SIGKILLed (its ranks go on); `status` re-attaches and reads every step so far
    at once: every step event's figures are those of each rank's metrics line for that step."""
    cfg = write_config(tmp_path, ranks=2, job="steps: 1000000")
    proc = start_cli("--config", str(cfg), "--run", "--json", "--skip-checks", stderr=subprocess.DEVNULL)
    try:
        wait_for_step(proc, 30)
        os.kill(proc.pid, signal.SIGKILL)  # the ranks go on without it
        proc.wait(timeout=30)
        time.sleep(1)
        status = cli("--config", str(cfg), "status", "--json", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        killed = cli("--config", str(cfg), "kill", timeout=60)
    assert status.returncode == 0 and killed.returncode == 0, status.stdout + status.stderr + killed.stdout
    (rec,) = [json.loads(p.read_text()) for p in (no_leftovers / ".boltring" / "jobs").glob("*.json")]
    lines: dict[int, list[dict]] = {}
    for r, rank in enumerate(rec["ranks"]):
        path = Path(rank["run_dir"]).expanduser() / "metrics.jsonl"
        lines[r] = [m for m in map(json.loads, path.read_text().splitlines()) if m.get("kind") == "step"]
    events = [json.loads(s) for s in status.stdout.splitlines() if s.startswith("{")]
    steps = [e for e in events if e.get("event") == "step"]
    assert len(steps) >= 30, status.stdout
    for e in steps:
        for r, figures in e["ranks"].items():
            own = [m for m in lines[int(r)] if m["step"] <= e["step"]][-1]
            assert figures["steps_per_s"] == own["steps_per_s"], (e["step"], r, figures, own)
            assert figures["allreduce_gbps"] == own.get("allreduce_gbps"), (e["step"], r)
    for r in (0, 1):  # figures that differ from line to line, and so from step to step
        assert len({e["ranks"][str(r)]["steps_per_s"] for e in steps}) > len(steps) // 2


# -- 2. a burst draws once, with its latest step -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _plain() -> tuple[HeadlessView, io.StringIO, Clock]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200, color_system=None)
    clock = Clock()
    return HeadlessView(feed.idle(), json_out=False, console=console, clock=clock), out, clock


def _steps(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.startswith("step ")]


def test_a_re_attach_burst_draws_its_latest_step_not_its_first():
    async def main() -> list[str]:
        v, out, _ = _plain()
        now = time.time()
        v(JobStarted("j", None, 2, 200, ["local"], "example charlm", attached=True, t=now - 6))
        v(JobStateChanged(JobState.RUNNING, t=now))
        for s in range(1, 51):  # one poll's worth, read at once
            v(StepProgress(s, 200, loss=4.0 - s / 100, wall=now - 6 + s * 0.1, t=now))
        await asyncio.sleep(0)
        return _steps(out)

    lines = asyncio.run(main())
    assert len(lines) == 1 and lines[0].startswith("step 50/200 | elapsed 00:00:06 | ETA "), lines
    assert "loss 3.5000" in lines[0], lines


def test_run_s_first_line_comes_at_once_and_the_last_is_not_lost():
    async def main() -> list[list[str]]:
        v, out, clock = _plain()
        v(JobStarted("j", None, 2, 100, ["local"], "example mlp", t=time.time()))
        v(JobStateChanged(JobState.RUNNING))
        seen = []
        v(StepProgress(1, 100, loss=2.0, wall=1.0))
        await asyncio.sleep(0)
        seen.append(_steps(out))  # the first step is drawn within one turn of the loop
        for s in range(2, 8):
            clock.now += 0.5
            v(StepProgress(s, 100, loss=2.0 / s, wall=float(s)))
            await asyncio.sleep(0)
        seen.append(_steps(out))  # within PLAIN_EVERY_S of the first: no more lines yet
        v(StepProgress(8, 100, loss=0.25, wall=8.0))  # its draw is pending when the job ends
        v(JobStateChanged(JobState.FINISHED))
        v.finish(JobSummary("j", JobState.FINISHED, 8, 100, 2.0, 0.25, 4.0))
        await asyncio.sleep(0)
        seen.append(_steps(out))
        return seen

    first, middle, final = asyncio.run(main())
    assert len(first) == 1 and first[0].startswith("step 1/100"), first
    assert middle == first and 7 * 0.5 < PLAIN_EVERY_S
    assert len(final) == 2 and final[-1].startswith("step 8/100") and "loss 0.2500" in final[-1], final


# -- 3. the ETA follows the job's state ----------------------------------------------------------


def _running(v: HeadlessView, clock: Clock, upto: int) -> None:
    now = time.time()
    v(JobStarted("j", None, 2, 300, ["local"], "example mlp", t=now - upto / 10))
    v(JobStateChanged(JobState.RUNNING, t=now - upto / 10))
    for s in range(1, upto + 1):
        v(StepProgress(s, 300, loss=1.0, wall=now - (upto - s) / 10, ranks={0: {"samples_per_s": 1391.0}}))


def test_plain_eta_says_stalled_while_stalled_and_is_gone_after_a_failure():
    v, out, clock = _plain()
    _running(v, clock, 45)
    assert "| ETA 00:00:25 |" in v._line(v._progress), v._line(v._progress)  # type: ignore[arg-type]
    v(JobStateChanged(JobState.STALLED, reason="stalled: r1 silent 9 s"))
    assert v.eta() is None
    assert "| ETA stalled |" in v._line(v._progress), v._line(v._progress)  # type: ignore[arg-type]
    v(JobStateChanged(JobState.FAILED, reason="rank 1 on local stopped answering (frozen)"))
    clock.now += PLAIN_EVERY_S
    v.finish(JobSummary("j", JobState.FAILED, 45, 300, 1.0, 1.0, 13.0, reason="rank 1 on local froze"))
    last = _steps(out)[-1]
    assert last.startswith("step 45/300 | elapsed ") and "ETA" not in last, last
    assert "| loss 1.0000 |" in last


def test_bar_eta_says_stalled_while_stalled():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    clock = Clock()
    v = HeadlessView(feed.idle(), json_out=False, console=console, clock=clock)
    _running(v, clock, 45)
    v(JobStateChanged(JobState.STALLED, reason="stalled: r1 silent 9 s"))
    assert v._bar is not None
    v._bar.refresh()
    last = [line for line in out.getvalue().splitlines() if "45/300" in line][-1]
    assert "ETA stalled" in last, last
    v(JobStateChanged(JobState.FAILED, reason="rank 1 on local froze"))
    v.finish(JobSummary("j", JobState.FAILED, 45, 300, 1.0, 1.0, 13.0, reason="rank 1 on local froze"))
    last = [line for line in out.getvalue().splitlines() if "45/300" in line][-1]
    assert "ETA" not in last, last
