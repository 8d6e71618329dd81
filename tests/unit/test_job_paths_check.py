"""`boltring check` fails, naming node and path, when a node cannot read the model or data
folder an lm job names (issue: real workloads); a synced path and a repo id are not looked for."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.nodes.checks.job_paths import job_paths_result, named_paths
from boltring.cluster.nodes.transport import LocalTransport
from boltring.cluster.states import CheckStatus

NODE = Node(name="n1", ring_ip="127.0.0.1", local=True)


def config(*args: str, **job) -> Config:
    return Config(name="t", nodes=(NODE,), job=JobSpec(example="lm", args=args, **job))


def result(cfg: Config):
    return asyncio.run(job_paths_result(cfg, NODE, LocalTransport(NODE)))


def test_a_path_the_node_cannot_read_fails_naming_it(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    r = result(config("--model", "/nonexistent/boltring-model", "--data", str(data)))
    assert r.status == CheckStatus.FAIL and r.node == "n1"
    assert r.value == "cannot read /nonexistent/boltring-model"
    # n1 is a local node: never synced, so the hint is about this machine's own path, not job.sync
    assert "local nodes are never synced" in r.hint and "job.sync so" not in r.hint, r.hint


def test_readable_paths_pass(tmp_path: Path):
    model, data = tmp_path / "model", tmp_path / "data"
    model.mkdir()
    data.mkdir()
    r = result(config(f"--model={model}", "--data", str(data)))
    assert r.status == CheckStatus.OK and r.value == "2 paths readable"


def test_repo_ids_are_not_paths_and_no_paths_means_no_check():
    assert named_paths(config("--model", "mlx-community/Llama-3.2-1B-Instruct")) == []
    assert result(config("--model", "mlx-community/Llama-3.2-1B-Instruct")) is None
    assert named_paths(dataclasses.replace(config(), job=JobSpec(data="~/corpus.txt"))) == ["~/corpus.txt"]


def test_job_data_is_always_a_path_even_a_bare_name_that_does_not_exist(tmp_path: Path, monkeypatch):
    """job.data is a file or folder, never a repo id: a bare missing name passed every check,
    and the job failed after launch in rank 0's traceback."""
    monkeypatch.chdir(tmp_path)
    cfg = Config(name="t", nodes=(NODE,), job=JobSpec(example="charlm", data="nofile.txt"))
    assert named_paths(cfg) == ["nofile.txt"]
    r = result(cfg)
    assert r.status == CheckStatus.FAIL and r.value.startswith("cannot read nofile.txt"), r.value
