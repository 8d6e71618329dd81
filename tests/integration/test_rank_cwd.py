"""Where a rank runs: local ranks in the folder boltring was started from (as `mlx.launch`
runs every process in the launching shell's folder), so a job's relative paths mean what they
mean in that shell; remote ranks in the mirror of that folder in the node's workspace, or the
same folder on the node, or the node's workdir. One function decides it (plan.rank_cwd), for
the launch, the job_paths check and the dry run alike.

The defect these pin: ranks ran in their run directory (~/.boltring/runs/<job>/rank0), so
`open("data.txt")` failed, `--model tiny` was taken for a Hugging Face repo id, and
`--adapter-path my_adapters` wrote into the run directory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.jobs.plan import describe_cwd, plan_job, rank_cwd, spawn_input
from boltring.cluster.nodes.checks.job_paths import job_paths_result
from boltring.cluster.nodes.transport import CommandResult, LocalTransport
from boltring.cluster.states import CheckStatus
from tests.lmkit import local_config

CLI = [sys.executable, "-m", "boltring.tui.cli"]
SPAWN = [sys.executable, "-m", "boltring.cluster.agent.spawn"]

# Written for mlx.launch: no boltring import, relative paths for its input and its output.
MX_SCRIPT = """
import os
import mlx.core as mx

group = mx.distributed.init()
text = open("data.txt").read().strip()
with open(f"out-rank{group.rank()}.txt", "w") as f:
    f.write(f"{text} {os.getcwd()}")
total = mx.distributed.all_sum(mx.array([1])).item()
assert total == group.size(), total
"""


def boltring(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI, started from `cwd` (the user's shell's folder)."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def events_of(res: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_a_script_reads_and_writes_relative_paths_in_the_launch_folder(tmp_path, no_leftovers):
    work, scripts = tmp_path / "work", tmp_path / "scripts"
    work.mkdir()
    scripts.mkdir()
    (work / "data.txt").write_text("hello\n")
    (scripts / "rel.py").write_text(MX_SCRIPT)  # the script's folder is not the launch folder
    config = local_config(tmp_path / "boltring.yaml", 2, backend="mlx-ring")
    res = boltring(work, "-c", str(config), "--run", "--skip-checks", "--script", "../scripts/rel.py")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for rank in (0, 1):
        assert (work / f"out-rank{rank}.txt").read_text() == f"hello {work.resolve()}"
    assert not list((no_leftovers / ".boltring" / "runs").glob("*/rank*/out-rank*.txt"))


def test_readme_lm_form_reads_tiny_and_data_here_and_writes_adapters_here(tmp_path, no_leftovers):
    pytest.importorskip("mlx_lm")
    from tests.lmkit import write_dataset, write_model

    work = tmp_path / "work"
    write_model(work / "tiny")
    write_dataset(work / "data", train=16, valid=4)
    config = local_config(work / "c.yaml", 2)
    res = boltring(
        work,
        *("-c", "c.yaml", "--run", "--json", "--example", "lm", "--steps", "3", "--global-batch", "4"),
        *("--", "--model", "tiny", "--data", "data", "--num-layers", "2", "--adapter-path", "my_adapters"),
    )
    assert config.exists()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    events = events_of(res)
    paths = [e for e in events if e["event"] == "check" and e["name"] == "job_paths"]
    assert [(e["status"], e["value"]) for e in paths] == [("ok", "2 paths readable")], paths
    assert (work / "my_adapters" / "adapters.safetensors").is_file()
    assert (work / "my_adapters" / "adapter_config.json").is_file()
    assert not list((no_leftovers / ".boltring" / "runs").glob("*/rank0/my_adapters"))


def spawn_start(run_dir: Path, spec: dict) -> dict:
    out = subprocess.run(
        [*SPAWN, "start", str(run_dir)], input=json.dumps(spec), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def ran_in(run_dir: Path) -> str:
    deadline = time.monotonic() + 20
    while not (run_dir / "exit.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads((run_dir / "exit.json").read_text())["returncode"] == 0, (
        run_dir / "rank.log"
    ).read_text()
    return (run_dir / "rank.log").read_text().strip()


def test_spawn_runs_the_rank_in_the_first_folder_that_exists_and_makes_the_last(tmp_path, no_leftovers):
    pwd = [sys.executable, "-c", "import os; print(os.getcwd())"]
    here, workdir = tmp_path / "here", tmp_path / "wd"
    here.mkdir()
    workdir.mkdir()
    # the launch folder is not on this node: the workdir
    spawn_start(tmp_path / "r0", {"argv": pwd, "cwd": [str(tmp_path / "not-on-this-node"), str(workdir)]})
    assert ran_in(tmp_path / "r0") == str(workdir)
    # it is: there
    spawn_start(tmp_path / "r1", {"argv": pwd, "cwd": [str(here), str(workdir)]})
    assert ran_in(tmp_path / "r1") == str(here)
    # the one choice (a workspace mirror no synced file has made yet) is made
    mirror = tmp_path / "ws" / "proj" / "sub"
    spawn_start(tmp_path / "r2", {"argv": pwd, "cwd": [str(mirror)]})
    assert ran_in(tmp_path / "r2") == str(mirror)
    # "~/" is the node user's home, as in argv
    spawn_start(tmp_path / "r3", {"argv": pwd, "cwd": ["~/"]})
    assert ran_in(tmp_path / "r3") == str(no_leftovers)
    # spec.json says where it ran
    assert json.loads((tmp_path / "r0" / "spec.json").read_text())["cwd"] == str(workdir)


def remote(name: str = "h1", **kw) -> Node:
    return Node(name=name, ssh=name, ring_ip="198.18.0.1", **kw)


def test_plan_local_ranks_run_in_the_launch_folder(tmp_path, monkeypatch, home):
    monkeypatch.chdir(tmp_path)
    config = Config(name="t", nodes=(Node(name="local", ring_ip="127.0.0.1", local=True, ranks=2),))
    plans = plan_job(config, "j")
    assert [p.cwd for p in plans] == [(str(tmp_path),)] * 2
    assert json.loads(spawn_input(plans[0], b"\0" * 32))["cwd"] == [str(tmp_path)]
    assert describe_cwd(plans[0].cwd, "local") == str(tmp_path)


def test_plan_remote_ranks_run_in_the_mirror_or_the_same_folder_or_the_workdir(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "train.py").write_text("")
    node = remote()
    script_job = Config(name="t", nodes=(node,), job=JobSpec(example=None, script=str(proj / "train.py")))
    # started inside the script's folder, which is synced: its mirror in the workspace
    monkeypatch.chdir(proj)
    assert rank_cwd(script_job, node) == ("~/.boltring/workspace/proj",)
    monkeypatch.chdir(proj / "sub")
    assert rank_cwd(script_job, node) == ("~/.boltring/workspace/proj/sub",)
    # a module job whose folder job.sync sends: the same
    module_job = Config(name="t", nodes=(node,), job=JobSpec(example=None, module="m", sync=(str(proj),)))
    assert rank_cwd(module_job, node) == ("~/.boltring/workspace/proj/sub",)
    # elsewhere: the same folder if the node has it, else the workdir
    monkeypatch.chdir(tmp_path)
    assert rank_cwd(script_job, node) == (str(tmp_path), "~/.boltring")
    assert describe_cwd(rank_cwd(script_job, node), "h1") == f"{tmp_path} if h1 has it, else ~/.boltring"


class NodeWithout(LocalTransport):
    """A node run by this machine that lacks one folder (as a Mac may lack the laptop's)."""

    def __init__(self, node: Node, lacks: Path):
        super().__init__(node)
        self.lacks = str(lacks)

    async def run(self, argv, *, input=None, timeout=30.0):
        if argv[:1] == ["test"] and argv[-1].startswith(self.lacks):
            return CommandResult(1, "", "")
        return await super().run(argv, input=input, timeout=timeout)


def test_job_paths_check_resolves_relative_paths_where_the_rank_will_run(tmp_path, monkeypatch):
    launch, workdir = tmp_path / "launch", tmp_path / "wd"
    (launch / "tiny").mkdir(parents=True)
    workdir.mkdir()
    monkeypatch.chdir(launch)
    node = remote(workdir=str(workdir))
    config = Config(name="t", nodes=(node,), job=JobSpec(example="lm", args=("--model", "tiny")))
    # the node has the launch folder: the rank runs there, and finds tiny
    r = asyncio.run(job_paths_result(config, node, LocalTransport(node)))
    assert (r.status, r.value) == (CheckStatus.OK, "1 path readable")
    # it has not: the rank runs in the workdir, which lacks tiny (the check said ok, asking in
    # the launch folder, and the rank then took "tiny" for a Hugging Face repo id)
    r = asyncio.run(job_paths_result(config, node, NodeWithout(node, launch)))
    assert r.status == CheckStatus.FAIL, r
    assert r.value == f"cannot read tiny (from {workdir}, where h1's ranks run)"
    (workdir / "tiny").mkdir()
    r = asyncio.run(job_paths_result(config, node, NodeWithout(node, launch)))
    assert (r.status, r.value) == (CheckStatus.OK, "1 path readable")


def test_job_paths_check_on_a_local_node_reads_the_launch_folder(tmp_path, monkeypatch):
    launch = tmp_path / "launch"
    (launch / "tiny").mkdir(parents=True)
    monkeypatch.chdir(launch)
    node = Node(name="local", ring_ip="127.0.0.1", local=True)
    config = Config(
        name="t", nodes=(node,), job=JobSpec(example="lm", args=("--model", "./tiny", "--data", "./d"))
    )
    r = asyncio.run(job_paths_result(config, node, LocalTransport(node)))
    assert (
        r.status == CheckStatus.FAIL
        and r.value == f"cannot read ./d (from {launch}, where local's ranks run)"
    )
    assert os.getcwd() == str(launch)
