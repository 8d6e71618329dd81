"""Backends in the launch plan: the environment and files each rank gets, as mlx.launch sets them
(mlx 0.32 `_distributed_utils/launch.py`), the jaccl device matrix, --module, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest

from boltring.cluster.config.load import load_config_text
from boltring.cluster.config.ports import DEFAULT_RING_PORT
from boltring.cluster.jobs.plan import PlanError, plan_job, read_rdma_devices, spawn_input
from boltring.netio.jobenv import JobEnv, JobEnvError
from tests.procs import cli_in

THREE_MINIS = """
name: minis
nodes:
  - {name: mini1, ssh: mini1, ring_ip: 198.18.0.1, ranks: 2}
  - {name: mini2, ssh: mini2, ring_ip: 198.18.0.2}
  - {name: mini3, ssh: mini3, ring_ip: 198.18.0.3}
ring: {port: 52600}
job: {example: mlp, global_batch: 12}
"""

MATRIX = [[None, "rdma_en3", "rdma_en4"], ["rdma_en3", None, "rdma_en5"], ["rdma_en4", "rdma_en5", None]]


def config(text: str = THREE_MINIS, **ring):
    c = load_config_text(text)
    return dataclasses.replace(c, ring=dataclasses.replace(c.ring, **ring))


def test_boltring_backend_sets_no_mlx_variables():
    plans = plan_job(config(), "job-1")
    assert [p.env["BOLTRING_BACKEND"] for p in plans] == ["boltring"] * 4
    assert not any(k.startswith("MLX_") for p in plans for k in p.env)
    assert all(p.files == {} for p in plans)


def test_mlx_ring_sets_rank_and_hostfile_as_mlx_launch_does():
    plans = plan_job(config(backend="mlx-ring"), "job-1")
    expect = [["198.18.0.1:52600"], ["198.18.0.1:52601"], ["198.18.0.2:52600"], ["198.18.0.3:52600"]]
    for r, p in enumerate(plans):
        assert p.env["MLX_RANK"] == str(r) and p.env["BOLTRING_RANK"] == str(r)
        assert p.env["BOLTRING_BACKEND"] == "mlx-ring"
        assert json.loads(p.files["MLX_HOSTFILE"]) == expect
        assert json.loads(spawn_input(p, b"\x01\x02"))["files"] == p.files
    job = JobEnv.from_environ({**plans[1].env, "BOLTRING_SECRET_FILE": "/x"})
    assert job.backend == "mlx-ring" and job.mlx_backend == "ring" and job.rank == 1 and job.size == 4


def test_mlx_ring_with_one_rank_writes_no_hostfile():
    one = THREE_MINIS.split("  - {name: mini2")[0].replace("ranks: 2", "ranks: 1") + "job: {example: mlp}\n"
    (p,) = plan_job(config(one, backend="mlx-ring"), "job-1")
    assert p.files == {} and p.env["MLX_RANK"] == "0"


def test_jaccl_env_and_device_file():
    text = THREE_MINIS.replace("ranks: 2", "ranks: 1").replace("global_batch: 12", "global_batch: 9")
    plans = plan_job(config(text, backend="jaccl", rdma_devices=tuple(map(tuple, MATRIX))), "job-1")
    assert len(plans) == 3
    for r, p in enumerate(plans):
        assert p.env["MLX_RANK"] == str(r)
        assert p.env["MLX_JACCL_COORDINATOR"] == "198.18.0.1:52600"
        assert json.loads(p.files["MLX_IBV_DEVICES"]) == MATRIX
        assert "MLX_HOSTFILE" not in p.files
    assert JobEnv.from_environ(plans[2].env).mlx_backend == "jaccl"


def test_jaccl_refuses_without_matrix_or_with_two_ranks_on_a_node():
    with pytest.raises(PlanError, match="RDMA device of every node pair") as e:
        plan_job(config(THREE_MINIS.replace("ranks: 2", "ranks: 1"), backend="jaccl"), "j")
    assert "mlx.distributed_config" in (e.value.hint or "")
    with pytest.raises(PlanError, match="one rank per node; mini1"):
        plan_job(config(backend="jaccl", rdma_devices=tuple(map(tuple, MATRIX))), "j")


def test_read_rdma_devices_from_mlx_hostfile_or_matrix():
    hostfile = [
        {"ssh": f"mini{i + 1}", "ips": [f"198.18.0.{i + 1}"], "rdma": row} for i, row in enumerate(MATRIX)
    ]
    assert read_rdma_devices(json.dumps(hostfile), 3) == tuple(map(tuple, MATRIX))
    assert read_rdma_devices(json.dumps({"backend": "jaccl", "hosts": hostfile}), 3) == tuple(
        map(tuple, MATRIX)
    )
    assert read_rdma_devices(json.dumps(MATRIX), 3) == tuple(map(tuple, MATRIX))
    with pytest.raises(PlanError, match="not a 2 x 2"):
        read_rdma_devices(json.dumps(MATRIX), 2)
    bad = [row[:] for row in MATRIX]
    bad[1][1] = "rdma_en9"
    with pytest.raises(PlanError, match="row 1, column 1 must be null"):
        read_rdma_devices(json.dumps(bad), 3)
    bad = [row[:] for row in MATRIX]
    bad[0][2] = None
    with pytest.raises(PlanError, match="no RDMA device from node 0 to node 2"):
        read_rdma_devices(json.dumps(bad), 3)
    with pytest.raises(PlanError, match="not JSON"):
        read_rdma_devices("{", 3)


def test_jobenv_mlx_backend_needs_no_boltring_ring_or_secret_but_names_bad_backends():
    env = {"BOLTRING_RANK": "1", "BOLTRING_WORLD_SIZE": "2", "BOLTRING_BACKEND": "mlx-ring"}
    assert JobEnv.from_environ(env).size == 2
    with pytest.raises(JobEnvError, match="BOLTRING_SECRET_FILE"):
        JobEnv.from_environ({**env, "BOLTRING_BACKEND": "boltring", "BOLTRING_RING": '["a:1","b:2"]'})
    with pytest.raises(JobEnvError, match="'nccl' is not a backend"):
        JobEnv.from_environ({**env, "BOLTRING_BACKEND": "nccl"})


def test_module_and_steps_per_eval_reach_the_runner_argv():
    c = config()
    c = dataclasses.replace(c, job=dataclasses.replace(c.job, module="mypkg.train", steps_per_eval=5))
    argv = plan_job(c, "j")[0].argv
    assert argv[argv.index("--module") + 1] == "mypkg.train" and "--example" not in argv
    assert argv[argv.index("--steps-per-eval") + 1] == "5"


def test_spawn_agent_writes_backend_files_and_points_the_variable_at_them(tmp_path):
    run_dir = tmp_path / "rank0"
    probe = "import os; print(os.environ['MLX_HOSTFILE']); print(open(os.environ['MLX_HOSTFILE']).read())"
    spec = {
        "argv": [sys.executable, "-c", probe],
        "env": {"MLX_RANK": "0"},
        "files": {"MLX_HOSTFILE": '[["127.0.0.1:1"]]'},
    }
    res = subprocess.run(
        [sys.executable, "-m", "boltring.cluster.agent.spawn", "start", str(run_dir)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 20
    while not (run_dir / "exit.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = (run_dir / "rank.log").read_text().splitlines()
    assert log[0] == str(run_dir / "mlx_hostfile.json") and log[1] == '[["127.0.0.1:1"]]'
    bad = {**spec, "files": {"rm -rf": "x"}}
    res = subprocess.run(
        [sys.executable, "-m", "boltring.cluster.agent.spawn", "start", str(tmp_path / "r1")],
        input=json.dumps(bad),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode != 0 and "bad file variable name" in res.stdout


def test_cli_dry_run_shows_the_backend_environment_and_files(tmp_path):
    res = cli_in(tmp_path, "--dry-run", "--backend", "mlx-ring", "--ranks", "2", "--module", "mypkg.train")
    assert res.returncode == 0, res.stderr
    assert "backend mlx-ring" in res.stdout and "module mypkg.train" in res.stdout
    assert '"MLX_RANK": "1"' in res.stdout and "file MLX_HOSTFILE" in res.stdout
    assert "runner --module mypkg.train" in res.stdout


def test_cli_jaccl_without_devices_is_one_clear_line(tmp_path):
    (tmp_path / "boltring.yaml").write_text(
        "name: m\nnodes:\n  - {name: a, ssh: a, ring_ip: 198.18.0.1}\n  - {name: b, ssh: b, ring_ip: 198.18.0.2}\n"
    )
    res = cli_in(tmp_path, "--dry-run", "--backend", "jaccl")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "jaccl" in lines[0] and "--rdma-devices" in lines[0], lines
    (tmp_path / "devices.json").write_text(json.dumps([[None, "rdma_en2"], ["rdma_en2", None]]))
    res = cli_in(tmp_path, "--dry-run", "--backend", "jaccl", "--rdma-devices", "devices.json")
    assert res.returncode == 0, res.stderr
    assert f'"MLX_JACCL_COORDINATOR": "198.18.0.1:{DEFAULT_RING_PORT}"' in res.stdout
    assert (
        'file MLX_IBV_DEVICES (written in the run dir): [[null, "rdma_en2"], ["rdma_en2", null]]'
        in res.stdout
    )


def test_cli_lm_without_model_or_data_is_one_clear_line(tmp_path):
    res = cli_in(tmp_path, "--run", "--example", "lm", "--", "--model", "m")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--example lm needs --data after --" in lines[0], lines
    res = cli_in(tmp_path, "--dry-run", "--example", "lm", "--", "--model", "m", "--data=d")
    assert res.returncode == 0 and "runner --example lm" in res.stdout


def test_checkpoint_dir_is_keyed_by_what_the_job_runs():
    """Jobs of one config that run different things never share a checkpoint directory: a
    charlm checkpoint is no resume point for --example mlp, nor for a script."""
    c = config()

    def ckdir(**job) -> str:
        argv = plan_job(dataclasses.replace(c, job=dataclasses.replace(c.job, **job)), "j")[0].argv
        return argv[argv.index("--checkpoint-dir") + 1]

    dirs = {
        "charlm": ckdir(example="charlm"),
        "mlp": ckdir(example="mlp"),
        "lm": ckdir(example="lm"),
        "script": ckdir(script=__file__),
        "module": ckdir(module="mypkg.train"),
        "odd module": ckdir(module="my pkg/train"),
    }
    assert dirs["charlm"] == "~/.boltring/checkpoints/minis/charlm"
    assert dirs["mlp"] == "~/.boltring/checkpoints/minis/mlp"
    assert dirs["lm"] == "~/.boltring/checkpoints/minis/lm"
    assert dirs["script"] == "~/.boltring/checkpoints/minis/script-test_workloads_plan"
    assert dirs["module"] == "~/.boltring/checkpoints/minis/module-mypkg.train"
    odd = dirs["odd module"].removeprefix("~/.boltring/checkpoints/minis/")
    assert "/" not in odd and odd.startswith("module-my-pkg") and ".." not in odd.split("-")
    assert len(set(dirs.values())) == len(dirs)
