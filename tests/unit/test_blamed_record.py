"""After a failure, the rank it was blamed on stays known: the `summary` event (`--run --json`)
and the job record (`runs`, `export`, the history, `status` with nothing running) carry the
failure's `blamed` field, as its `state` event did, and the plain summary and `runs` show it,
from that field, never out of the reason's words."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs import blame, record
from boltring.cluster.jobs.blame import RankFacts
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import Blamed, Event, JobSummary
from boltring.cluster.jobs.follow import RankState
from boltring.cluster.jobs.history import RunRecord, find_run
from boltring.cluster.states import JobState
from boltring.tui.run_summary import summary_table
from boltring.tui.runs_view import print_runs, run_result
from tests.tui import feed

FROZE = "stopped responding (no heartbeat for 9 s), its process is frozen (SIGSTOP)"
JOB = "h2-20260101-120000-bl01"


def _victim(rank: int, node: str, peer: int, direction: str = "recv") -> RankFacts:
    exit = {"error": "PeerTimeout", "peer_rank": peer, "direction": direction}
    return RankFacts(rank, node, exited=True, returncode=1, exit=exit)


def _controller(layout: dict[int, str]) -> tuple[JobController, list[Event]]:
    """A controller of job JOB whose ranks ran on `layout`'s nodes, its record on disk."""
    c = JobController(feed.lab_config())
    nodes = {n.name: n for n in c.config.nodes}
    c._ranks = {
        r: RankState(plan=SimpleNamespace(rank=r, run_dir=f"/nowhere/{JOB}/rank{r}"), node=nodes[n])  # type: ignore[arg-type]
        for r, n in layout.items()
    }
    c.job_id = JOB
    ranks = [{"rank": r, "node": n, "run_dir": f"/nowhere/{JOB}/rank{r}"} for r, n in layout.items()]
    c._record = record.new_record(c.config, JOB, ranks, resume=False)
    c._started_at = time.time() - 5
    c._record.update(state=JobState.RUNNING, started=c._started_at)
    record.write(c._record)
    seen: list[Event] = []
    c.add_listener(seen.append)
    return c, seen


def _summary(seen: list[Event]) -> JobSummary:
    return [e for e in seen if isinstance(e, JobSummary)][-1]


def test_the_summary_and_the_record_of_a_failed_job_name_the_blamed_rank(home, capsys):
    c, seen = _controller({0: "mini1", 1: "mini2", 2: "mini3"})
    frozen = RankFacts(1, "mini2", alive=True, frozen=True, silent_s=9.2)
    asyncio.run(c._decide(blame.decide([_victim(0, "mini1", 1), frozen, _victim(2, "mini3", 1)])))
    c._end(JobState.FAILED)
    blamed = {"rank": 1, "node": "mini2", "cause": FROZE}

    summary = _summary(seen)
    assert summary.blamed == Blamed(1, "mini2", FROZE), summary
    wire = json.loads(json.dumps(summary.to_dict(), default=str))  # as `--run --json` prints it
    assert wire["event"] == "summary" and wire["blamed"] == blamed, wire

    saved = json.loads(record.record_path(JOB).read_text())
    assert saved["blamed"] == blamed and saved["summary"]["blamed"] == blamed, saved

    run = find_run(JOB)
    assert run.blamed == Blamed(1, "mini2", FROZE)
    assert run_result(run).startswith(f"job {JOB} failed: ")
    assert "; blamed on rank 1 (mini2)" in run_result(run), run_result(run)
    print_runs(json_out=True)
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["blamed"] == blamed, row

    out = io.StringIO()
    Console(file=out, width=120).print(summary_table(summary))
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    assert lines[0] == f"job {JOB}: failed, blamed on rank 1 (mini2)", lines
    rows = [line.split("│")[1:3] for line in lines if line.startswith("│")]
    assert [[c.strip() for c in row] for row in rows] == [
        ["0", "mini1"],
        ["1", "mini2 (blamed)"],
        ["2", "mini3"],
    ]


def test_the_blame_comes_from_the_field_not_the_words(home):
    """A reason that names a rank, in a record whose `blamed` is null (a ring link): no rank is
    said to be blamed, however the line reads."""
    c, seen = _controller({0: "mini1", 1: "mini2"})
    verdict = blame.decide([_victim(0, "mini1", 1, "send"), _victim(1, "mini2", 0)])

    async def decide() -> None:
        async def no_facts(**_kw):  # no link facts: the verdict (a ring link) stands
            return []

        c.run_checks = no_facts  # type: ignore[method-assign]
        await c._decide(verdict)

    asyncio.run(decide())
    c._end(JobState.FAILED)
    assert _summary(seen).blamed is None
    saved = json.loads(record.record_path(JOB).read_text())
    assert saved["blamed"] is None and saved["summary"]["blamed"] is None, saved
    run = find_run(JOB)
    assert run.blamed is None and run.reason and "mini2" in run.reason
    assert "blamed" not in run_result(run)


def test_a_finished_job_blames_no_one(home):
    c, seen = _controller({0: "mini1", 1: "mini2"})
    c._end(JobState.FINISHED)
    assert _summary(seen).blamed is None
    assert json.loads(record.record_path(JOB).read_text())["blamed"] is None
    assert find_run(JOB).blamed is None


# -- a real job: rank 1 fails on its own --------------------------------------------------------

FAILS = """
import time
import mlx.core as mx
from boltring.netio import init

group = init()
x = mx.ones((16,))
for step in range(1, 1_000_000):
    if group.rank == 1 and step == 3:
        raise ValueError("bad batch at step 3")
    mx.eval(group.all_sum(x))
    group.report(step=step, loss=1.0, samples=1)
    time.sleep(0.02)
"""
CAUSE = "failed: ValueError: bad batch at step 3"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "BOLTRING_HOME": str(home / ".boltring"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "boltring.tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_a_real_failed_job_names_its_blamed_rank_after_the_fact(tmp_path, no_leftovers):
    home = no_leftovers
    script = tmp_path / "fails.py"
    script.write_text(FAILS)
    cfg = tmp_path / "fails.yaml"
    cfg.write_text(
        "name: fails\nnodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        f"ring: {{port: {free_port_block(2)}, timeout: 5}}\njob: {{script: {script}, steps: 1000000}}\n"
    )
    blamed = {"rank": 1, "node": "local", "cause": CAUSE}

    wire = _cli(home, "--run", "--json", "--skip-checks", "--config", str(cfg))
    assert wire.returncode == 1, wire.stdout[-2000:] + wire.stderr[-2000:]
    events = [json.loads(line) for line in wire.stdout.splitlines() if line.startswith("{")]
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert summary["status"] == "failed" and summary["blamed"] == blamed, summary

    (path,) = (home / ".boltring" / "jobs").glob("*.json")
    saved = json.loads(path.read_text())
    assert saved["blamed"] == blamed and saved["summary"]["blamed"] == blamed, saved
    (row,) = [json.loads(line) for line in _cli(home, "runs", "--json").stdout.splitlines()]
    assert (row["state"], row["blamed"]) == ("failed", blamed), row
    last = _cli(home, "status", "--config", str(cfg)).stdout.splitlines()[-1]
    assert last.startswith(f"last: job {saved['job_id']} failed: ") and "; blamed on rank 1 (local)" in last

    plain = _cli(home, "--run", "--skip-checks", "--config", str(cfg))
    assert plain.returncode == 1, plain.stdout[-2000:] + plain.stderr[-2000:]
    title = [line for line in plain.stdout.splitlines() if line.startswith("job ") and ": failed" in line]
    assert len(title) == 1 and title[0].endswith(": failed, blamed on rank 1 (local)"), plain.stdout


def test_the_runs_table_names_the_blamed_rank_from_the_record() -> None:
    from boltring.tui.screens.history import run_row

    run = RunRecord("j", None, "failed", None, 10, blamed=Blamed(1, "mini2", "was killed"))
    assert run_row(run)[2] == "failed (rank 1 on mini2)"
