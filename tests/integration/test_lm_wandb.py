"""`--example lm` logs to W&B as the loop.py examples do (`job.wandb: <project>`): rank 0 alone,
one run named after the job, every metrics line (loss, val_loss, tokens_per_s …) at its step,
and the run finished however the job ends: 0 when it completes, 143 on SIGTERM, 1 on an error.

Real wandb, offline (WANDB_MODE=offline: no network, no account). Its run file (.wandb) is read
record by record: W&B's leveldb-style log of protobuf Records (wandb.proto.wandb_internal_pb2),
the only place an offline run keeps its history and exit code."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lmkit import local_config, run_job, write_dataset, write_model

pytest.importorskip("mlx_lm")
pytest.importorskip("wandb")

PROJECT = "boltring-tests"
_BLOCK = 32768  # W&B's log: 32 KiB blocks of records, each with a 7-byte header
_FULL, _LAST = 1, 4


def wandb_records(run_file: Path) -> list:
    """Every protobuf Record of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{run_file} is not a W&B run file"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left - 7
            continue
        pending += data[pos : pos + length]
        pos += length
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_file: Path) -> dict[int, dict]:
    """{step: {metric: value}} of the run's history records."""
    history = {}
    for r in wandb_records(run_file):
        if r.WhichOneof("record_type") == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            history[int(row.pop("_step"))] = row
    return history


def wandb_exit_code(run_file: Path) -> int | None:
    codes = [r.exit.exit_code for r in wandb_records(run_file) if r.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None


def the_run_file(wandb_parent: Path, job_id: str) -> Path:
    """The job's offline run file (wandb.init made it: none once the rank has ended means none
    ever), once wandb's writer, its own process, has written the exit record: a busy machine
    may still be flushing after the rank ended."""
    found = list(wandb_parent.glob(f"wandb/offline-run-*-{job_id}/run-{job_id}.wandb"))
    deadline = time.monotonic() + 60
    while found and wandb_exit_code(found[0]) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found, (
        f"no W&B run {job_id} under {wandb_parent}: {sorted(map(str, wandb_parent.rglob('*')))[:20]}"
    )
    return found[0]


def step_metrics(metrics_file: Path) -> dict[int, dict]:
    """{step: record} of a rank's metrics.jsonl."""
    lines = [json.loads(x) for x in metrics_file.read_text().splitlines()]
    return {m["step"]: m for m in lines if m["kind"] == "step"}


def assert_wandb_holds(history: dict[int, dict], metrics: dict[int, dict]) -> None:
    """Every number of every metrics line, at its step (bookkeeping aside)."""
    assert metrics and set(metrics) <= set(history), (sorted(metrics), sorted(history))
    for step, m in metrics.items():
        numbers = {
            k: v
            for k, v in m.items()
            if k not in ("kind", "rank", "wall", "step") and isinstance(v, (int, float))
        }
        logged = {k: history[step][k] for k in numbers if k in history[step]}
        assert logged == pytest.approx(numbers), f"step {step}: W&B has {history[step]}, metrics.jsonl {m}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-llama-h6")
    return write_model(root / "model"), write_dataset(root / "data", train=48, valid=8)


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    """wandb offline and quiet; its config and cache in tmp_path; WANDB_DIR unset, so rank 0's
    files go to its run directory."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("WANDB_DIR", raising=False)


def lm_args(model: Path, data: Path) -> list[str]:
    return ["--", "--model", str(model), "--data", str(data), "--fine-tune-type", "lora", "--num-layers", "1"]


def test_lm_job_logs_every_metrics_line_of_rank_0_to_wandb(tiny, tmp_path, offline_wandb, no_leftovers):
    """boltring --run, 2 ranks, job.wandb in the config: rank 0's W&B run holds its loss,
    val_loss and tokens/s at every logged step and ends with exit code 0; rank 1 logs nothing;
    no wandb process outlives the job (no_leftovers)."""
    model, data = tiny
    config = local_config(tmp_path / "boltring.yaml", 2)
    config.write_text(config.read_text() + f"  wandb: {PROJECT}\n")
    res, events = run_job(
        config,
        "--steps",
        "6",
        "--global-batch",
        "4",
        "--steps-per-eval",
        "3",
        "--example",
        "lm",
        *lm_args(model, data),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = events[-1]
    assert summary["status"] == "finished", summary
    run_dir = no_leftovers / summary["run_dir"].removeprefix("~/")
    job_id = run_dir.name
    history = wandb_history(the_run_file(run_dir / "rank0", job_id))
    metrics = step_metrics(run_dir / "rank0" / "metrics.jsonl")
    assert_wandb_holds(history, metrics)
    assert sorted(history) == [1, 2, 3, 4, 5, 6]
    assert {s for s, row in history.items() if "val_loss" in row} == {3, 6}
    assert all(row["tokens_per_s"] > 0 and "loss" in row for row in history.values())
    assert wandb_exit_code(the_run_file(run_dir / "rank0", job_id)) == 0
    assert not (run_dir / "rank1" / "wandb").exists()
    rank0_log = (run_dir / "rank0" / "rank.log").read_text()
    assert f"logging to W&B project {PROJECT} as run {job_id}" in rank0_log


def test_lm_rank_stopped_by_sigterm_finishes_its_wandb_run(tiny, tmp_path, offline_wandb, no_leftovers):
    """A rank of a long lm job gets SIGTERM (what `boltring stop` sends): it exits 143 and its
    W&B run ends with exit code 143, holding the losses logged before the stop."""
    model, data = tiny
    run_dir = tmp_path / "runs" / "job-h6-term" / "rank0"
    run_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "BOLTRING_RANK": "0",
        "BOLTRING_WORLD_SIZE": "1",
        "BOLTRING_JOB_ID": "job-h6-term",
        "BOLTRING_RUN_DIR": str(run_dir),
        "BOLTRING_WANDB": PROJECT,
    }
    argv = [sys.executable, "-m", "boltring.cluster.train.runner", "--example", "lm", "--steps", "100000"]
    argv += ["--global-batch", "4", "--checkpoint-dir", str(tmp_path / "ckpt"), *lm_args(model, data)]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        metrics_file = run_dir / "metrics.jsonl"
        while not (metrics_file.exists() and len(step_metrics(metrics_file)) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read() if proc.stdout else ""
            )
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out[-3000:]
    run_file = the_run_file(run_dir, "job-h6-term")
    assert wandb_exit_code(run_file) == 143
    assert_wandb_holds(wandb_history(run_file), step_metrics(run_dir / "metrics.jsonl"))


def test_a_loop_that_fails_marks_its_wandb_run_failed(tmp_path, offline_wandb, monkeypatch):
    """In-process, so wandb's own atexit hook cannot be what finishes the run: the error goes
    on to the caller (the runner reports it), and the W&B run is finished with exit code 1."""
    from boltring.cluster.train.wandb_hook import ENV, logging_to_wandb
    from boltring.netio import init

    run_dir = tmp_path / "rank0"
    run_dir.mkdir()
    environ = {"BOLTRING_RANK": "0", "BOLTRING_WORLD_SIZE": "1", "BOLTRING_JOB_ID": "job-h6-fail"}
    environ["BOLTRING_RUN_DIR"] = str(run_dir)
    monkeypatch.setenv("BOLTRING_RUN_DIR", str(run_dir))
    monkeypatch.setenv(ENV, PROJECT)
    said: list[str] = []
    with init(environ) as group, pytest.raises(RuntimeError, match="disk full"):
        with logging_to_wandb(group, {"task": "h6"}, said.append) as to_wandb:
            to_wandb(group.report(step=1, loss=0.75, samples=4))
            raise RuntimeError("disk full")
    run_file = the_run_file(run_dir, "job-h6-fail")
    assert wandb_exit_code(run_file) == 1
    assert wandb_history(run_file)[1]["loss"] == 0.75
    assert said == [f"[rank 0] logging to W&B project {PROJECT} as run job-h6-fail"]
