"""What `--run`, `--json` and `runs` say about a job agrees with the ranks' own metrics files:
rates are totals over time, the loss shown with step S is step S's loss, a script's extra
report() fields reach the step events, and a --resume that trains nothing says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults.helpers import cli, events, write_config

SCRIPT = """
import os
import sys
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from boltring.netio import init

group = init()
args = sys.argv[1:]
opt_of = lambda name, default: args[args.index(name) + 1] if name in args else default
steps, fail_at, marker = int(opt_of("--steps", "15")), int(opt_of("--fail-at", "0")), opt_of("--marker", "")
mx.random.seed(0)
model = nn.Linear(4, 1)
opt = optim.SGD(learning_rate=0.05)
w_true = mx.array([[1.0], [-2.0], [0.5], [3.0]])
x = mx.random.normal((64, 4), key=mx.random.key(group.rank + 1))
y = x @ w_true
step = nn.value_and_grad(model, lambda m: ((m(x) - y) ** 2).mean())
for i in range(1, steps + 1):
    loss, grads = step(model)
    grads = group.average_gradients(grads)
    opt.update(model, grads)
    mx.eval(model.parameters(), opt.state)
    mean = group.all_sum(loss).item() / group.size
    if group.rank == 1 and i == fail_at and not (marker and os.path.exists(marker)):
        if marker:
            open(marker, "w").close()  # fail once: the restarted attempt runs through
        os._exit(3)  # after this step's collectives, before its report: rank 0 reports step i alone
    group.report(step=i, loss=mean, samples=64 * group.size, val_loss=mean * 2, accuracy=0.5)
group.close()
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def _lines(home: Path, summary: dict, rank: int) -> list[dict]:
    run_dir = Path(summary["run_dir"].replace("~", str(home), 1)) / f"rank{rank}"
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def file_rates(lines: list[dict], world: int) -> dict[str, float | None]:
    """A rank's rates as a user would check them in its metrics.jsonl: totals over the training
    time of each attempt (from a "start" line on: each line's steps ÷ its steps/s, a validation
    pass left out), the first step line of an attempt opening it."""
    attempts: list[list[dict]] = []
    for rec in lines:
        if rec["kind"] == "start":
            attempts.append([])
        elif rec["kind"] == "step":
            attempts[-1].append(rec)
    steps = seconds = samples = tokens = sent = ar_s = 0.0
    for seen in attempts:
        for prev, rec in zip(seen, seen[1:], strict=False):
            n = rec["step"] - prev["step"]
            steps += n
            seconds += n / rec["steps_per_s"]
            samples += rec["samples"] * n / world  # the global batch, 1/N of it on each rank
            tokens += rec["tokens_per_s"] * n / rec["steps_per_s"] if rec.get("tokens_per_s") else 0
            sent += rec["bytes_sent"] - prev["bytes_sent"]
            ar_s += rec["allreduce_s"]
    return {
        "steps_per_s": steps / seconds,
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds if tokens else None,
        "allreduce_gbps": sent / ar_s / 1e9,
    }


def assert_rates_match_files(home: Path, summary: dict) -> None:
    world = len(summary["ranks"])
    for rank, figures in summary["ranks"].items():
        expected = file_rates(_lines(home, summary, int(rank)), world)
        for name, value in expected.items():
            assert figures[name] == (None if value is None else pytest.approx(value, rel=1e-6)), (
                rank,
                name,
                figures,
                expected,
            )


def test_summary_rates_are_totals_over_time(no_leftovers):
    res = cli("--run", "--json", "--skip-checks", "--example", "charlm", "--steps", "30", timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = events(res.stdout)[-1]
    assert summary["event"] == "summary" and summary["status"] == "finished"
    assert_rates_match_files(no_leftovers, summary)
    assert summary["tokens_per_s"] == pytest.approx(sum(r["tokens_per_s"] for r in summary["ranks"].values()))


def test_summary_rates_span_each_attempt_of_a_restarted_job(no_leftovers, tmp_path):
    cfg = write_config(tmp_path, ranks=2, name="again", job="restarts: 1, restart_delay: 0.2")
    marker = tmp_path / "failed-once"
    res = cli(
        *("--run", "--json", "--skip-checks", "--config", str(cfg), "--script", str(_script(tmp_path))),
        *("--steps", "20", "--", "--steps", "20", "--fail-at", "8", "--marker", str(marker)),
        timeout=240,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summary = events(res.stdout)[-1]
    assert summary["status"] == "finished" and len(summary["restarts"]) == 1, summary
    assert sum(rec["kind"] == "start" for rec in _lines(no_leftovers, summary, 0)) == 2
    assert_rates_match_files(no_leftovers, summary)  # the restart's pause and startup not counted


def test_after_a_failure_the_loss_is_the_last_completed_steps(no_leftovers, tmp_path):
    """Rank 1 dies after step 5's collectives but before reporting it: rank 0 alone reported
    step 5. The job completed step 4, so the summary (and `runs`) pair step 4 with its loss."""
    res = cli(
        *("--run", "--json", "--skip-checks", "--script", str(_script(tmp_path))),
        *("--steps", "15", "--", "--steps", "15", "--fail-at", "5"),
        timeout=240,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    summary = events(res.stdout)[-1]
    rank0 = {rec["step"]: rec["loss"] for rec in _lines(no_leftovers, summary, 0) if rec["kind"] == "step"}
    assert max(rank0) == 5 and summary["steps"] == 4, (sorted(rank0), summary)
    assert summary["last_loss"] == rank0[4] != rank0[5]
    assert summary["first_loss"] == rank0[1]
    steps = [e for e in events(res.stdout) if e["event"] == "step"]
    assert steps[-1]["step"] == 4 and steps[-1]["loss"] == rank0[4]  # what the app's header shows
    runs = cli("runs", "--json", timeout=60)
    run = next(json.loads(line) for line in runs.stdout.splitlines() if summary["job_id"] in line)
    assert (run["steps"], run["last_loss"]) == (4, rank0[4]), run
    assert_rates_match_files(no_leftovers, summary)  # a job that ended early: the lines it has


def test_extra_report_fields_reach_the_json_step_events(no_leftovers, tmp_path):
    res = cli(
        *("--run", "--json", "--skip-checks", "--script", str(_script(tmp_path))),
        *("--steps", "15", "--", "--steps", "15"),
        timeout=240,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    step = [e for e in events(res.stdout) if e["event"] == "step"][-1]
    assert step["step"] == 15
    for rank, figures in step["ranks"].items():
        assert figures["accuracy"] == 0.5, (rank, figures)
        assert figures["val_loss"] == pytest.approx(step["loss"] * 2), (rank, figures)


def _ck_config(tmp_path: Path, name: str = "ck") -> Path:
    return write_config(tmp_path, ranks=2, name=name, job="steps: 30, seed: 3, checkpoint_every: 10")


def test_resume_without_a_checkpoint_says_so(no_leftovers, tmp_path):
    cfg = _ck_config(tmp_path)
    res = cli("--run", "--skip-checks", "--config", str(cfg), "--resume", "--steps", "15", timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    said = [line for line in res.stdout.splitlines() if "resume: no checkpoint in" in line]
    assert len(said) == 1 and said[0].endswith("started from step 0"), res.stdout
    fresh = _ck_config(tmp_path, "ck2")  # the run above left a checkpoint: another job name
    res = cli("--run", "--json", "--skip-checks", "--config", str(fresh), "--resume", "--steps", "5")
    logs = [e for e in events(res.stdout) if e["event"] == "log" and e["source"] == "controller"]
    assert [e["level"] for e in logs if "resume: no checkpoint in" in e["text"]] == ["warn"], logs


def test_resume_past_the_steps_is_refused_saying_nothing_is_left_to_train(no_leftovers, tmp_path):
    cfg = _ck_config(tmp_path)
    first = cli("--run", "--json", "--skip-checks", "--config", str(cfg), timeout=240)
    assert first.returncode == 0, first.stderr[-2000:]
    # Refused before any rank starts now (the ranks started, trained nothing and the job was
    # recorded "finished" with no step): one line, exit 2, and the same as a JSON error event.
    res = cli("--run", "--skip-checks", "--config", str(cfg), "--resume", "--steps", "15", timeout=240)
    assert res.returncode == 2 and res.stdout == "", res.stdout + res.stderr[-2000:]
    (said,) = res.stderr.strip().splitlines()
    assert "is at step 30 and the job has 15 steps: nothing is left to train" in said, said
    res = cli("--run", "--json", "--skip-checks", "--config", str(cfg), "--resume", "--steps", "15")
    errors = [e["text"] for e in events(res.stdout) if e["event"] == "error"]
    assert res.returncode == 2 and len(errors) == 1 and "nothing is left to train" in errors[0], res.stdout
