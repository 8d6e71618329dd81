"""What a job names is what the nodes get (a node here is a folder of this machine, reached by
LocalTransport): a job.sync path that the script folder's .boltringignore leaves out is sent all
the same (it was rewritten into the workspace and never sent, and both checks called it
synced); a path .boltringignore leaves out and the job does not sync is named by the checks; an
argument naming a symlinked folder in the script folder is rewritten to where its files went;
and when several nodes fail to sync, every one is named."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config
from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.plan import runner_argv
from boltring.cluster.nodes import sync
from boltring.cluster.nodes.checks.job_paths import job_paths_result
from boltring.cluster.nodes.transport import LocalTransport, TransportError
from boltring.cluster.states import CheckStatus


def project(tmp_path: Path, job: str, *, nodes: int = 1, python: str = sys.executable) -> Config:
    """proj/ with train.py and data/train.bin, data/ in its .boltringignore, and a config beside
    them whose job is `job` (YAML flow mapping entries); nodes n1… with workdirs in tmp_path."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "train.py").write_text("print(1)\n")
    (proj / "data" / "train.bin").write_bytes(b"\1" * 100)
    (proj / "data" / "notes.log").write_text("log\n")
    (proj / ".boltringignore").write_text("data/\n*.log\n")
    listed = "\n".join(
        f"  - {{name: n{i}, ssh: n{i}, ring_ip: 10.0.0.{i}, python: {python}, workdir: {tmp_path}/n{i}}}"
        for i in range(1, nodes + 1)
    )
    cfg = proj / "boltring.yaml"
    cfg.write_text(f"name: t\nnodes:\n{listed}\njob: {{script: train.py, {job}}}\n")
    return load_config(cfg)


def synced(cfg: Config) -> list[sync.NodeSync]:
    ts = {n.name: LocalTransport(n) for n in cfg.nodes}
    return asyncio.run(sync.sync_workspace(cfg, lambda n: ts[n.name]))


def missing(cfg: Config) -> list[str]:
    errors = asyncio.run(sync.missing_job_paths(cfg, LocalTransport, sync.sync_roots(cfg)))
    return [str(e) for e in errors]


def check(cfg: Config):
    node = cfg.nodes[0]
    return asyncio.run(job_paths_result(cfg, node, LocalTransport(node)))


def test_a_job_sync_path_the_ignore_file_leaves_out_is_sent(tmp_path, monkeypatch):
    cfg = project(tmp_path, "sync: [data], args: [--data, data/train.bin]")
    monkeypatch.chdir(tmp_path / "proj")
    (r,) = synced(cfg)
    # named, so sent as it would be on its own: its own ignore rules (none), not the folder's *.log
    assert sorted(r.files_sent) == [
        "proj/boltring.yaml",
        "proj/data/notes.log",
        "proj/data/train.bin",
        "proj/train.py",
    ]
    ws = tmp_path / "n1" / "workspace" / "proj"
    assert (ws / "data" / "train.bin").read_bytes() == b"\1" * 100
    argv = runner_argv(cfg, cfg.nodes[0], "j", resume=False)
    assert argv[argv.index("--data") + 1] == f"{tmp_path}/n1/workspace/proj/data/train.bin"
    assert missing(cfg) == []
    assert check(cfg).status == CheckStatus.OK
    # the ignore file still counts for the rest of the folder
    (tmp_path / "proj" / "run.log").write_text("x")
    (again,) = synced(cfg)
    assert again.files_sent == [] and not (ws / "run.log").exists()


def test_an_ignored_path_the_job_names_but_does_not_sync_is_named_by_the_checks(tmp_path, monkeypatch):
    cfg = project(tmp_path, "args: [--data, data/train.bin]")
    monkeypatch.chdir(tmp_path / "proj")
    (r,) = synced(cfg)
    assert sorted(r.files_sent) == ["proj/boltring.yaml", "proj/train.py"]
    assert missing(cfg) == ["n1: data/train.bin is on this machine but not on the node"]
    result = check(cfg)
    assert result.status == CheckStatus.FAIL and "data/train.bin" in result.value, result.value


def test_an_argument_naming_a_symlinked_folder_in_the_script_folder_is_rewritten(tmp_path, monkeypatch):
    dataset = tmp_path / "datasets" / "foo"
    dataset.mkdir(parents=True)
    (dataset / "shard0.bin").write_bytes(b"s")
    proj = tmp_path / "proj"
    proj.mkdir()
    os.symlink("../datasets/foo", proj / "dataset")
    cfg = project(tmp_path, f"args: [--data, {proj / 'dataset'}, '--eval={proj}/dataset/shard0.bin']")
    monkeypatch.chdir(tmp_path)
    (r,) = synced(cfg)
    assert "proj/dataset/shard0.bin" in r.files_sent
    ws = f"{tmp_path}/n1/workspace/proj"
    assert sync.map_args(cfg.nodes[0], cfg.job.args, sync.sync_roots(cfg)) == [
        "--data",
        f"{ws}/dataset",
        "--eval",
        f"{ws}/dataset/shard0.bin",
    ]
    assert missing(cfg) == []
    assert check(cfg).status == CheckStatus.OK


def test_every_node_that_fails_to_sync_is_named(tmp_path):
    cfg = project(tmp_path, "args: []", nodes=3, python="/nonexistent/python3")
    with pytest.raises(TransportError) as e:
        synced(cfg)
    said = str(e.value)
    assert all(f"n{i}: cannot run /nonexistent/python3" in said for i in (1, 2, 3)), said
    assert "\n" not in said and e.value.hint
