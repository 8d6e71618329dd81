"""The embedded default end to end: real ranks on loopback, real ring, real MLX training."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.jobs.controller import ControllerError, JobController
from boltring.cluster.jobs.events import JobSummary, RankMetrics
from tests.procs import kill_rank_once_it_reports, read_to_exit

CLI = [sys.executable, "-m", "boltring.tui.cli"]


def run_cli(*args: str, timeout: float = 240, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def steps_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if '"kind":"step"' in line]


def test_run_json_completes_default_job_and_loss_falls(no_leftovers):
    res = run_cli("--run", "--json", "--skip-checks", "--example", "mlp", "--steps", "60")
    assert res.returncode == 0, res.stderr[-2000:]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "state" and "start" in kinds and kinds[-1] == "summary"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 61))  # each step once, in order
    assert steps[-1]["total"] == 60
    assert set(steps[-1]["ranks"]) == {"0", "1"}
    assert all(v["samples_per_s"] > 0 and v["allreduce_gbps"] > 0 for v in steps[-1]["ranks"].values())
    summary = events[-1]
    assert summary["status"] == "finished" and summary["steps"] == 60
    assert summary["last_loss"] < summary["first_loss"] * 0.7, summary
    assert set(summary["ranks"]) == {"0", "1"}


def test_dry_run_prints_the_commands_and_starts_nothing(no_leftovers):
    res = run_cli("--run", "--dry-run", "--ranks", "3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("boltring.cluster.agent.spawn start") == 3
    assert "boltring.cluster.train.runner --example charlm" in res.stdout
    assert "Nothing is started" in res.stdout
    assert not (no_leftovers / ".boltring" / "runs").exists()


def test_bad_config_is_one_clear_line(tmp_path, home):
    cfg = tmp_path / "boltring.yaml"
    cfg.write_text("name: x\nnodes:\n  - name: a\n    local: true\n    ring_ip: 127.0.0.1\n    rnaks: 2\n")
    res = run_cli("--run", "--config", str(cfg))
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and str(cfg) in err[0] and ":6:" in err[0] and "ranks" in err[0], err


def test_ctrl_c_stops_every_rank(no_leftovers):
    proc = subprocess.Popen(
        [*CLI, "--run", "--json", "--skip-checks", "--example", "mlp", "--steps", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:  # wait until training is really under way
            if json.loads(line)["event"] == "step":
                break
        proc.send_signal(signal.SIGINT)
        out, err = read_to_exit(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["status"] == "killed"
    assert "every rank was killed" in err


def _config(ranks: int, steps: int, **kw):
    return with_overrides(load_config(None), ranks=ranks, steps=steps, example="mlp", **kw)


async def _run(config) -> tuple[JobSummary, list[RankMetrics]]:
    c = JobController(config, poll_s=0.1)
    seen: list[RankMetrics] = []
    c.add_listener(lambda ev: seen.append(ev) if isinstance(ev, RankMetrics) else None)
    await c.launch()
    summary = await asyncio.wait_for(c.wait(), 240)
    await c.close()
    return summary, seen


def test_data_parallel_loss_curve_matches_single_rank(no_leftovers):
    """Same seed, same global batch: 1, 2 and 4 ranks give the same loss curve."""
    curves = {}
    for n in (1, 2, 4):
        summary, seen = asyncio.run(_run(_config(n, 25, seed=7)))
        assert summary.status == "finished", summary.reason
        curves[n] = [m.loss for m in sorted((m for m in seen if m.rank == 0), key=lambda m: m.step)]
    assert len(curves[1]) == 25
    for n in (2, 4):
        for a, b in zip(curves[1], curves[n], strict=False):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (n, curves[1], curves[n])


def test_overlap_gives_the_same_loss_curve_bit_for_bit(no_leftovers):
    """ring.overlap: the built-in loop leaves the gradients to average_gradients, which reduces
    each bucket as MLX finishes it. With 2 ranks each sum is one addition, so nothing changes."""
    curves = {}
    for overlap in (False, True):
        config = _config(2, 12, seed=3)
        config = dataclasses.replace(config, ring=dataclasses.replace(config.ring, overlap=overlap))
        summary, seen = asyncio.run(_run(config))
        assert summary.status == "finished", summary.reason
        start = json.loads(
            (no_leftovers / summary.run_dir.removeprefix("~/") / "rank1" / "metrics.jsonl")
            .read_text()
            .splitlines()[0]
        )
        assert start["kind"] == "start" and start["overlap"] is overlap, start
        curves[overlap] = [m.loss for m in sorted((m for m in seen if m.rank == 0), key=lambda m: m.step)]
    assert len(curves[False]) == 12 and curves[True] == curves[False]


def test_killed_rank_fails_the_job_naming_it_and_leaves_nothing(no_leftovers):
    summary, took = kill_rank_once_it_reports(_config(3, 100000), 1, no_leftovers)
    assert summary.status == "failed"
    assert summary.reason.startswith("rank 1 on local "), summary.reason  # the cause, not a neighbour
    assert "code" not in summary.reason  # said in words, never as an exit code
    assert took < 60


def test_reattach_after_controller_restart_loses_no_lines(no_leftovers):
    config = _config(2, 100000)

    async def first():
        c = JobController(config, poll_s=0.1)
        seen = []
        c.add_listener(lambda ev: seen.append(ev) if isinstance(ev, RankMetrics) else None)
        job = await c.launch()
        while len(seen) < 4:
            await asyncio.sleep(0.05)
        with pytest.raises(ControllerError, match="still running"):
            await JobController(config).launch()  # a second launch is refused while it runs
        await c.close(kill_running=False)  # the controller quits; the job goes on
        return job

    async def second():
        c = JobController(config, poll_s=0.1)
        seen = []
        c.add_listener(lambda ev: seen.append(ev) if isinstance(ev, RankMetrics) else None)
        assert await c.attach()
        while len([m for m in seen if m.rank == 0]) < 50:
            await asyncio.sleep(0.05)
        await c.kill()
        summary = await asyncio.wait_for(c.wait(), 60)
        await c.close()
        return c, summary, seen

    job = asyncio.run(first())
    c, summary, seen = asyncio.run(second())
    assert c.job_id == job and summary.status == "killed"
    for rank in (0, 1):
        steps = [m.step for m in seen if m.rank == rank]
        # replayed from the start of the file: every step from 1 on, none lost or repeated
        assert steps == list(range(1, len(steps) + 1)), steps[:10]
        run_dir = Path(c._ranks[rank].plan.run_dir.replace("~", str(no_leftovers), 1))
        assert len(steps) == len(steps_of(run_dir / "metrics.jsonl"))


def test_checkpoint_then_resume_continues_where_it_stopped(no_leftovers, tmp_path):
    cfg = tmp_path / "boltring.yaml"
    cfg.write_text(
        "name: ck\nnodes:\n  - {name: box, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        "job: {example: mlp, steps: 30, seed: 3, global_batch: 64, checkpoint_every: 10}\n"
    )
    first = run_cli("--run", "--json", "--skip-checks", "--config", str(cfg))
    assert first.returncode == 0, first.stderr[-2000:]
    ckdir = no_leftovers / ".boltring" / "checkpoints" / "ck" / "mlp"  # <config name>/<example>
    assert (ckdir / "latest").exists() and not list(ckdir.glob(".*tmp*"))
    resumed = run_cli("--run", "--json", "--skip-checks", "--config", str(cfg), "--resume", "--steps", "50")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [json.loads(line) for line in resumed.stdout.splitlines() if '"event": "step"' in line]
    assert steps[0]["step"] == 31 and steps[-1]["step"] == 50
    fresh = run_cli("--run", "--json", "--skip-checks", "--config", str(cfg), "--steps", "50")
    fresh_steps = {
        e["step"]: e["loss"] for e in map(json.loads, fresh.stdout.splitlines()) if e["event"] == "step"
    }
    for e in steps:  # the resumed run follows the uninterrupted one
        assert abs(e["loss"] - fresh_steps[e["step"]]) <= 1e-5 * max(1, abs(e["loss"])), e


def test_another_example_of_the_config_does_not_resume_from_its_checkpoints(no_leftovers, tmp_path):
    """charlm leaves step-000020 in its config's checkpoints; `--example mlp --resume` in the
    same config claims no checkpoint, trains mlp from step 1 and finishes (it used to say
    "resume from step 20" and then fail on charlm's file)."""
    cfg = tmp_path / "boltring.yaml"
    cfg.write_text(
        "name: shared\nnodes:\n  - {name: box, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        "job: {example: charlm, steps: 20, seed: 3, global_batch: 16, checkpoint_every: 10}\n"
    )
    first = run_cli("--run", "--skip-checks", "--config", str(cfg))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    charlm_dir = no_leftovers / ".boltring" / "checkpoints" / "shared" / "charlm"
    assert (charlm_dir / "latest").read_text().strip() == "step-000020.safetensors"
    args = ["--run", "--skip-checks", "--config", str(cfg), "--example", "mlp", "--resume", "--steps", "25"]
    mlp = run_cli(*args)
    out = mlp.stdout + mlp.stderr
    assert mlp.returncode == 0, out[-3000:]
    assert "resume from" not in out and "CheckpointError" not in out, out[-3000:]
    mlp_dir = no_leftovers / ".boltring" / "checkpoints" / "shared" / "mlp"
    assert f"resume: no checkpoint in {mlp_dir}; started from step 0" in out, out[-3000:]
    again = run_cli(*args[:-1], "30", "--json")  # now mlp resumes from its own step 25
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert again.returncode == 0, again.stderr[-2000:]
    started = next(e for e in events if e["event"] == "start")
    assert started["resume_from"] == "step 25 (step-000025.safetensors)", started
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps[0] == 26 and steps[-1] == 30
    assert (charlm_dir / "latest").read_text().strip() == "step-000020.safetensors"  # untouched


USER_SCRIPT = """
import sys
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from boltring.netio import init

group = init()
steps = int(sys.argv[sys.argv.index("--steps") + 1])
mx.random.seed(0)                                  # same initial weights on every rank
model = nn.Linear(4, 1)
opt = optim.SGD(learning_rate=0.1)
w_true = mx.array([[1.0], [-2.0], [0.5], [3.0]])
x = mx.random.normal((64, 4), key=mx.random.key(group.rank + 1))   # this rank's shard
y = x @ w_true

def loss_fn(m):
    return ((m(x) - y) ** 2).mean()

step = nn.value_and_grad(model, loss_fn)
for i in range(1, steps + 1):
    loss, grads = step(model)
    grads = group.average_gradients(grads)
    opt.update(model, grads)
    mx.eval(model.parameters(), opt.state)
    mean = group.all_sum(loss).item() / group.size
    group.report(step=i, loss=mean, samples=64 * group.size)
group.close()
"""


def test_user_script_runs_on_every_rank_with_its_arguments(no_leftovers, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT)
    res = run_cli(
        "--run",
        "--json",
        "--skip-checks",
        "--ranks",
        "3",
        "--script",
        str(script),
        "--steps",
        "20",
        "--",
        "--steps",
        "20",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 21))
    assert steps[-1]["loss"] < steps[0]["loss"] * 0.2
    assert events[-1]["status"] == "finished" and set(events[-1]["ranks"]) == {"0", "1", "2"}
