"""`--run --json`: every line on stdout is strict JSON (RFC 8259), which has no NaN or Infinity.
With `job.allow_nonfinite: true` a rank's loss may be NaN and a script's own figure infinite
(`report(accuracy=float("inf"))`); json.dumps wrote them as `NaN`/`Infinity`, which jq,
JavaScript's JSON.parse and Python's json.loads with a strict parse_constant refuse, so a CI
script lost the whole step or summary line. They go out as null."""

from __future__ import annotations

import json
import math

import pytest

from boltring.cluster.jobs.events import JobStarted, JobSummary, StepProgress
from boltring.cluster.states import JobState
from boltring.tui.headless import HeadlessView
from tests.tui import feed


def _strict(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_json_events_carry_no_nan_or_infinity(capsys: pytest.CaptureFixture[str]) -> None:
    v = HeadlessView(feed.idle(), json_out=True)
    v(JobStarted(job_id=feed.JOB_ID, config=None, world_size=2, steps=8, nodes=["local"], job="script t.py"))
    v(
        StepProgress(
            4,
            8,
            loss=math.nan,
            ranks={0: {"steps_per_s": 3.0, "accuracy": math.inf}, 1: {"steps_per_s": -math.inf}},
        )
    )
    v(
        JobSummary(
            job_id=feed.JOB_ID,
            status=JobState.FINISHED,
            steps=8,
            total_steps=8,
            first_loss=1.0,
            last_loss=math.nan,
            wall_s=2.0,
            ranks={0: {"node": "local", "steps_per_s": 4.0}},
            val_loss=math.inf,
        )
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    start, step, summary = (_strict(line) for line in lines)
    assert start["event"] == "start"
    assert step["event"] == "step" and step["step"] == 4 and step["loss"] is None
    assert step["ranks"] == {"0": {"steps_per_s": 3.0, "accuracy": None}, "1": {"steps_per_s": None}}
    assert summary["event"] == "summary"
    assert summary["first_loss"] == 1.0 and summary["last_loss"] is None and summary["val_loss"] is None
    assert summary["ranks"] == {"0": {"node": "local", "steps_per_s": 4.0}}


def test_runs_json_writes_a_nan_loss_as_null(home, capsys, tmp_path):
    """The job record keeps a NaN last loss (job.allow_nonfinite): `runs --json` (and the last
    job that `status --json` shows) printed it as NaN, which strict readers refuse."""
    from boltring.cluster.config.load import load_config
    from boltring.cluster.jobs import record
    from boltring.tui.runs_view import print_runs

    path = tmp_path / "c.yaml"
    path.write_text("name: nan\nnodes:\n  - {name: a, local: true}\n")
    rec = record.new_record(load_config(str(path)), "nan-1", [], resume=False)
    rec["state"] = JobState.FINISHED
    rec["summary"] = {
        "status": "finished",
        "steps": 4,
        "total_steps": 4,
        "first_loss": 1.0,
        "last_loss": math.nan,
    }
    record.write(rec)
    assert print_runs(json_out=True) == 0
    (line,) = capsys.readouterr().out.splitlines()
    strict = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in {line}"))
    assert strict["last_loss"] is None and strict["first_loss"] == 1.0, strict
