"""job.wandb: the controller passes the project to every rank; rank 0 alone logs each metrics
line to W&B (offline here: WANDB_MODE=offline writes the run under WANDB_DIR, no network)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.jobs.plan import plan_job
from boltring.cluster.train.wandb_hook import ENV, WandbHook


def test_plan_passes_the_project_to_every_rank():
    node = Node("local", ring_ip="127.0.0.1", local=True, ranks=2)
    with_wandb = Config(
        name="w", source=None, nodes=(node,), job=JobSpec(example="mlp", wandb="boltring-tests")
    )
    assert all(p.env[ENV] == "boltring-tests" for p in plan_job(with_wandb, "job-1"))
    without = Config(name="w", source=None, nodes=(node,), job=JobSpec(example="mlp"))
    assert all(ENV not in p.env for p in plan_job(without, "job-1"))


def test_no_hook_without_a_project_or_off_rank_0(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert WandbHook.start(0, "job-1", {}, print) is None
    monkeypatch.setenv(ENV, "boltring-tests")
    assert WandbHook.start(1, "job-1", {}, print) is None


def test_without_wandb_installed_the_job_runs_and_says_why(monkeypatch):
    monkeypatch.setenv(ENV, "boltring-tests")
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: import raises
    said: list[str] = []
    assert WandbHook.start(0, "job-1", {}, said.append) is None
    assert said and "wandb is not installed" in said[0]


def test_rank_0_logs_every_metrics_line_offline(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    monkeypatch.setenv(ENV, "boltring-tests")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    hook = WandbHook.start(0, "job-w1", {"steps": 3}, print)
    assert hook is not None
    for step in (1, 2, 3):
        hook.log(
            {"kind": "step", "rank": 0, "wall": 1.0, "step": step, "loss": 1.0 / step, "samples_per_s": 64.0}
        )
    hook.finish()
    # The offline run file holds W&B's protobuf history records; this wandb has no reader for
    # it, so look for what each record must carry: the keys and the JSON of each value.
    # wandb's own writer process may still be flushing after finish() on a busy machine.
    (run_file,) = tmp_path.glob("wandb/offline-run-*job-w1/run-job-w1.wandb")
    deadline = time.monotonic() + 60
    while b"samples_per_s" not in (data := run_file.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for value in (0.5, 1 / 3):  # the loss of steps 2 and 3
        assert json.dumps(value).encode() in data
    assert b"samples_per_s" in data and b"_step" in data
    assert b'"kind"' not in data and b"wall" not in data  # bookkeeping is not logged
