"""A NaN or infinite loss fails every kind of job, as the README's Faults section says: `--example
lm` (its own loop) and a `--script` that reports the loss with `group.report()`, not only mlp and
charlm. The job fails with the same one line as charlm's NaN ("loss became NaN at step N on rank
R"), exit code 1, and the lm job writes no checkpoint or adapters at or after that step;
`job.allow_nonfinite: true` lets both go on."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config_text
from boltring.cluster.jobs.plan import plan_job
from boltring.cluster.train import checkpoint
from boltring.netio import init
from boltring.netio.group import NonFiniteLoss
from boltring.netio.jobenv import JobEnv, JobEnvError
from tests.lmkit import local_config, run_job, write_dataset, write_model

# Rank 1 reports a NaN loss at step 4; rank 0 is by then waiting in the next step's collective.
NAN_SCRIPT = """\
from boltring.netio import init

with init() as group:
    for step in range(1, 9):
        group.barrier()
        bad = group.rank == 1 and step == 4
        group.report(step=step, loss=float("nan") if bad else 1.0 / step, samples=4)
"""

# The line the job fails with, as for charlm's NaN (tests/faults/test_blame.py).
NAN_LINE = re.compile(r"loss became (NaN|infinite) at step (\d+) on rank ([01])\b")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-llama-nan")
    return write_model(root / "model"), write_dataset(root / "data", train=48, valid=8)


def _config(path: Path, *job_lines: str) -> Path:
    """lmkit's 2-rank local config, with more `job:` keys."""
    local_config(path, 2)
    with open(path, "a") as f:
        f.writelines(f"  {line}\n" for line in job_lines)
    return path


def _lm_nan_job(tiny, config: Path):
    """A full fine-tune whose learning rate of 1e30 makes the loss NaN within a few steps,
    with a checkpoint (and adapters) every step."""
    model, data = tiny
    return run_job(
        config,
        "--example",
        "lm",
        "--steps",
        "6",
        "--global-batch",
        "4",
        "--",
        "--model",
        str(model),
        "--data",
        str(data),
        "--fine-tune-type",
        "full",
        "--num-layers",
        "-1",
        "--learning-rate",
        "1e30",
    )


def _finite(loss: float | None) -> bool:
    """A loss as JSON carries it: NaN may come back as NaN or as null."""
    return loss is not None and math.isfinite(loss)


def _summary(res, events: list[dict]) -> dict:
    assert events and events[-1].get("event") == "summary", (res.stdout[-3000:], res.stderr[-3000:])
    return events[-1]


def test_lm_nan_loss_fails_the_job_and_saves_nothing_from_that_step_on(tiny, tmp_path, no_leftovers):
    config = _config(tmp_path / "boltring.yaml", "checkpoint_every: 1")
    res, events = _lm_nan_job(tiny, config)
    summary = _summary(res, events)
    assert res.returncode == 1, (summary, res.stderr[-3000:])
    assert summary["status"] == "failed", summary
    reason = summary["reason"] or ""
    m = NAN_LINE.match(reason)
    assert m, reason
    assert reason.count("loss became") == 1, reason
    bad_step = int(m[2])
    assert bad_step >= 2, reason  # step 1's loss is the untrained model's: finite
    # No checkpoint of the bad step or later; the good ones before it stay and verify.
    ck_dir = no_leftovers / ".boltring" / "checkpoints" / "wl" / "lm"
    saved = checkpoint.list_checkpoints(ck_dir)
    steps = [int(p.name.removeprefix("step-").removesuffix(".safetensors")) for p in saved]
    assert steps and max(steps) == bad_step - 1, (steps, reason)
    assert all(checkpoint.verified(p) for p in saved)
    # The adapters were last written with the checkpoint before the bad step, never at or after it.
    run_dir = no_leftovers / summary["run_dir"].removeprefix("~/")
    log0 = (run_dir / "rank0" / "rank.log").read_text()
    written = [int(s) for s in re.findall(r"adapters at step (\d+):", log0)]
    assert written and max(written) == bad_step - 1, (written, reason)
    assert (ck_dir / "adapters" / "adapters.safetensors").is_file()
    # The rank that saw it says it in one line, without a traceback.
    bad_log = (run_dir / f"rank{m[3]}" / "rank.log").read_text()
    assert "NonFiniteLoss: loss became" in bad_log and "Traceback" not in bad_log, bad_log[-2000:]


def test_script_reporting_nan_fails_the_job_naming_step_and_rank(tmp_path, no_leftovers):
    script = tmp_path / "nan_script.py"
    script.write_text(NAN_SCRIPT)
    config = _config(tmp_path / "boltring.yaml")
    res, events = run_job(config, "--script", str(script), "--steps", "8", "--global-batch", "4")
    summary = _summary(res, events)
    assert res.returncode == 1, (summary, res.stderr[-3000:])
    assert summary["status"] == "failed", summary
    reason = summary["reason"] or ""
    # rank 1 saw it; rank 0, waiting for it in a collective, is only evidence
    assert reason.startswith("loss became NaN at step 4 on rank 1"), reason
    assert reason.count("loss became") == 1, reason
    run_dir = no_leftovers / summary["run_dir"].removeprefix("~/")
    log1 = (run_dir / "rank1" / "rank.log").read_text()
    assert "NonFiniteLoss: loss became NaN at step 4 on rank 1" in log1, log1[-2000:]
    assert "Traceback" not in log1, log1[-2000:]


def test_allow_nonfinite_lets_lm_and_script_jobs_go_on(tiny, tmp_path, no_leftovers):
    config = _config(tmp_path / "lm.yaml", "checkpoint_every: 2", "allow_nonfinite: true")
    res, events = _lm_nan_job(tiny, config)
    summary = _summary(res, events)
    assert res.returncode == 0, (summary, res.stderr[-3000:])
    assert summary["status"] == "finished" and summary["steps"] == 6, summary
    assert not _finite(summary["last_loss"]), summary

    script = tmp_path / "nan_script.py"
    script.write_text(NAN_SCRIPT)
    config = _config(tmp_path / "script.yaml", "allow_nonfinite: true")
    res, events = run_job(config, "--script", str(script), "--steps", "8", "--global-batch", "4")
    summary = _summary(res, events)
    assert res.returncode == 0, (summary, res.stderr[-3000:])
    assert summary["status"] == "finished" and summary["steps"] == 8, summary
    run_dir = no_leftovers / summary["run_dir"].removeprefix("~/")
    lines = (run_dir / "rank1" / "metrics.jsonl").read_text().splitlines()
    reported = {r["step"]: r["loss"] for r in map(json.loads, lines) if r.get("kind") == "step"}
    assert sorted(reported) == list(range(1, 9)) and not _finite(reported[4]), reported


# --- the parts on their own: the rank's environment and Group.report -----------------------------


def test_the_job_tells_every_rank_whether_nonfinite_losses_are_allowed():
    nodes = "name: n\nnodes:\n  - {name: local, local: true, ranks: 2}\n"
    secret = {"BOLTRING_SECRET_FILE": "secret"}  # the spawn agent adds it; JobEnv requires it

    def rank_jobs(config_text: str) -> list[JobEnv]:
        return [
            JobEnv.from_environ({**p.env, **secret})
            for p in plan_job(load_config_text(config_text, "n.yaml"), "j")
        ]

    allowed = rank_jobs(nodes + "job: {allow_nonfinite: true}\n")
    assert len(allowed) == 2 and all(job.allow_nonfinite for job in allowed)
    assert all(job.to_environ()["BOLTRING_ALLOW_NONFINITE"] == "1" for job in allowed)
    assert not any(job.allow_nonfinite for job in rank_jobs(nodes))
    # a script run alone (no launcher) reads it too
    assert JobEnv.from_environ({"BOLTRING_ALLOW_NONFINITE": "1"}).allow_nonfinite
    with pytest.raises(JobEnvError, match=r"BOLTRING_ALLOW_NONFINITE='yes' is not 0 or 1"):
        JobEnv.from_environ({"BOLTRING_ALLOW_NONFINITE": "yes"})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_report_refuses_a_nonfinite_loss_unless_allowed(tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    what = "NaN" if math.isnan(bad) else "infinite"
    with init({"BOLTRING_RUN_DIR": str(tmp_path)}) as group:
        group.report(step=1, loss=2.5)
        with pytest.raises(NonFiniteLoss, match=rf"^loss became {what} at step 2 on rank 0 \("):
            group.report(step=2, loss=bad)
    with init({"BOLTRING_RUN_DIR": str(tmp_path), "BOLTRING_ALLOW_NONFINITE": "1"}) as group:
        record = group.report(step=3, loss=bad)
    assert record["step"] == 3


def test_a_script_started_by_hand_with_allow_nonfinite_is_told_so() -> None:
    """The runner's --allow-nonfinite reaches a script's group.report() as it does in a job
    (plan.py sets the variable there; by hand only the runner's flag says it)."""
    from boltring.cluster.train import runner
    from boltring.netio import NonFiniteLoss  # scripts can catch it by this name

    with_flag = runner._script_env(runner.parse_args(["--script", "train.py", "--allow-nonfinite"]))
    without = runner._script_env(runner.parse_args(["--script", "train.py"]))
    assert with_flag["BOLTRING_ALLOW_NONFINITE"] == "1"
    assert "BOLTRING_ALLOW_NONFINITE" not in without
    assert issubclass(NonFiniteLoss, Exception)
