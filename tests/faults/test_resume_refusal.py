"""A checkpoint in the job's own folder that its ranks would refuse (another --seed, another model
shape) is never announced as the resume point: `--resume` refuses it before any rank starts, in
one line naming the folder, what differs and what to do, and a restart under `--restarts` is not
made. The controller runs the ranks' own check (checkpoint.choose, through `runner
--check-resume` on rank 0's node), so both say the same thing.

It used to print "resume from step 20 (step-000020.safetensors)", start every rank, and fail
with the ranks' CheckpointError."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from boltring.cluster.jobs import plan
from boltring.cluster.jobs.controller import ControllerError, JobController
from boltring.cluster.jobs.events import JobRestarted, JobStarted, RankMetrics
from boltring.cluster.states import JobState
from boltring.cluster.train import checkpoint, loop, mlp, runner

from .helpers import cli, config, rank_process_pid, write_config


def _leave_checkpoint(directory: Path, *, seed: int, step: int = 20, args: tuple[str, ...] = ()) -> Path:
    """An mlp checkpoint at `step`, as a run with this seed and these example options writes it."""
    cfg = loop.TrainConfig(steps=step, seed=seed, global_batch=16)
    task = mlp.make_task(cfg, args)
    task.optimizer.init(task.model.trainable_parameters())
    return checkpoint.save(directory, task, step=step, samples_seen=step * 16, seed=seed, global_batch=16)


def _ckpt_dir(cfg) -> Path:
    return Path(os.path.expanduser(plan.checkpoint_dir(cfg.rank_layout()[0].node, cfg)))


def _check_resume(capsys, directory: Path, seed: int, *example_args: str) -> tuple[int, dict]:
    """`runner --check-resume` as the controller runs it (one JSON line), and its exit code."""
    argv = ["--example", "mlp", "--seed", str(seed), "--checkpoint-dir", str(directory), "--resume"]
    code = runner.main([*argv, "--check-resume", "--", *example_args])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_check_resume_says_what_rank_0_decides(solo, tmp_path, capsys):
    """--check-resume answers with rank 0's own decision, and its refusal is the ranks' line."""
    ck = tmp_path / "ck"
    assert _check_resume(capsys, ck, 3) == (0, {"resume": "none", "directory": str(ck)})
    _leave_checkpoint(ck, seed=3, step=10)
    _leave_checkpoint(ck, seed=3, step=20)

    code, ok = _check_resume(capsys, ck, 3)
    assert code == 0 and (ok["resume"], ok["file"], ok["step"]) == ("ok", "step-000020.safetensors", 20), ok
    assert ok["checked"] == ["example", "seed", "tensors"]

    code, refused = _check_resume(capsys, ck, 4)
    assert code == 2 and refused["resume"] == "refused", refused
    cfg = loop.TrainConfig(steps=30, seed=4, global_batch=16, resume=True, checkpoint_dir=str(ck))
    with pytest.raises(checkpoint.CheckpointError) as ranks:
        loop.train(solo, cfg, mlp.make_task(cfg), log=lambda m: None)
    assert refused["message"] == str(ranks.value)  # one check, one line

    code, shape = _check_resume(capsys, ck, 3, "--hidden", "8")
    assert code == 2, shape
    assert "it was written with --hidden 64 after `--`, this run has --hidden 8" in shape["message"], shape
    assert "float32[64, 32]" in shape["message"] and "mlx.core" not in shape["message"], shape


@pytest.mark.parametrize(
    ("seed", "args", "differs"),
    [
        (3, (), "was written with --seed 3, this run has --seed 4: resume with --seed 3"),
        (4, ("--hidden", "8"), "it was written with --hidden 8 after `--`, this run has --hidden 64"),
    ],
    ids=["another-seed", "another-model-shape"],
)
def test_a_checkpoint_the_ranks_refuse_is_refused_before_any_rank_starts(
    tmp_path, no_leftovers, seed, args, differs
):
    cfg = config(write_config(tmp_path, ranks=2, job="steps: 30, seed: 4, checkpoint_every: 10"))
    ck = _ckpt_dir(cfg)
    _leave_checkpoint(ck, seed=seed, args=args)

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        try:
            with pytest.raises(ControllerError) as point:
                await c.resume_point()  # the app's `r` dialog asks this first
            with pytest.raises(ControllerError) as launch:
                await c.launch(resume=True)
            return point.value, launch.value, seen, c.state
        finally:
            if c.state.active:  # the old code started the ranks: stop them
                await c.kill()
            await c.close()

    point, err, seen, state = asyncio.run(scenario())
    from boltring.cluster.jobs.resume_point import ResumeRefused

    assert isinstance(err, ResumeRefused) and err.nothing_started, err
    line = str(err)
    assert line.startswith("cannot resume: ") and "\n" not in line, line
    assert f"{ck}/step-000020.safetensors" in line and differs in line, line
    assert f"move the checkpoints in {ck} away (or delete them) to start this job from step 0" in line
    assert str(point) == line
    assert state == JobState.IDLE
    assert not any(isinstance(e, JobStarted) for e in seen)
    assert not (no_leftovers / ".boltring" / "runs").exists()  # no job record, no run directory


def test_the_resume_point_is_the_checkpoint_the_ranks_will_use(tmp_path, home):
    """A corrupt newest checkpoint: the ranks skip it and use the newest that verifies, and the
    announcement names that one (it named the corrupt file `latest` points at)."""
    cfg = config(write_config(tmp_path, ranks=1, job="steps: 30, seed: 4, checkpoint_every: 10"))
    ck = _ckpt_dir(cfg)
    _leave_checkpoint(ck, seed=4, step=10)
    newest = _leave_checkpoint(ck, seed=4, step=20)
    newest.write_bytes(newest.read_bytes()[:-100])

    async def point():
        c = JobController(cfg)
        try:
            return await c.resume_point()
        finally:
            await c.close()

    assert asyncio.run(point()) == "step 10 (step-000010.safetensors)"


def _refused_run(tmp_path: Path, no_leftovers: Path):
    path = write_config(tmp_path, ranks=2, job="steps: 30, seed: 4, checkpoint_every: 10")
    _leave_checkpoint(_ckpt_dir(config(path)), seed=3)
    res = cli("--run", "--skip-checks", "--config", str(path), "--resume", timeout=120)
    return res, res.stdout + res.stderr


def test_run_resume_from_a_checkpoint_the_ranks_refuse_is_one_line(tmp_path, no_leftovers):
    res, out = _refused_run(tmp_path, no_leftovers)
    assert res.returncode != 0, out
    assert "resume from" not in out and "started job" not in out and "CheckpointError" not in out, out
    (line,) = [x for x in out.splitlines() if "cannot resume: " in x]
    assert "was written with --seed 3, this run has --seed 4: resume with --seed 3" in line, out
    assert not (no_leftovers / ".boltring" / "runs").exists(), out


def test_run_resume_from_a_checkpoint_the_ranks_refuse_exits_2(tmp_path, no_leftovers):
    res, out = _refused_run(tmp_path, no_leftovers)
    assert res.returncode == 2, out


def test_a_restart_from_a_checkpoint_the_ranks_refuse_is_not_made(tmp_path, no_leftovers):
    """A fresh job (seed 4) with --restarts 1 in a folder holding a seed-3 checkpoint fails before
    its first checkpoint: the restart would resume from the seed-3 file, which the ranks refuse,
    so there is none, and the job's reason says why. It used to say "restart 1/1 from step 20
    (step-000020.safetensors)" and fail again on the ranks' CheckpointError."""
    job = "steps: 1000000, seed: 4, checkpoint_every: 100000, restarts: 1, restart_delay: 0.2"
    cfg = config(write_config(tmp_path, ranks=2, job=job))
    ck = _ckpt_dir(cfg)
    _leave_checkpoint(ck, seed=3)

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        await c.launch()
        try:
            while sum(isinstance(e, RankMetrics) for e in seen) < 10:
                await asyncio.sleep(0.05)
            os.kill(rank_process_pid(c, 1, no_leftovers), signal.SIGKILL)
            summary = await asyncio.wait_for(c.wait(), 120)
        finally:
            if c.state.active:
                await c.kill()
            await c.close()
        return summary, seen

    summary, seen = asyncio.run(scenario())
    assert summary.status == JobState.FAILED, summary
    assert not any(isinstance(e, JobRestarted) for e in seen), [
        e for e in seen if isinstance(e, JobRestarted)
    ]
    reason = summary.reason or ""
    assert "rank 1 on local was killed" in reason and "; not restarted: cannot resume: " in reason, reason
    assert f"{ck}/step-000020.safetensors was written with --seed 3, this run has --seed 4" in reason, reason


def test_a_resume_point_that_could_not_be_checked_says_so(tmp_path, home):
    """When the runner cannot build the example on rank 0's node (here charlm's --data is not
    there), the check cannot run: the file `latest` names is announced with a warning that it
    was not checked, never as if it had been."""
    import sys

    from boltring.cluster.config.schema import Config, JobSpec, Node

    node = Node("local", ring_ip="127.0.0.1", local=True, workdir=str(tmp_path), python=sys.executable)
    job = JobSpec(example="charlm", data=str(tmp_path / "gone.txt"), steps=10)
    cfg = Config(name="rp", source=None, nodes=(node,), job=job)
    ck = _ckpt_dir(cfg)
    ck.mkdir(parents=True)
    (ck / "step-000200.safetensors").write_bytes(b"x" * 16)
    (ck / "latest").write_text("step-000200.safetensors\n")

    async def point():
        c = JobController(cfg)
        said: list = []
        c.add_listener(said.append)
        try:
            return await c.resume_point(), [getattr(e, "text", "") for e in said]
        finally:
            await c.close()

    label, said = asyncio.run(point())
    assert label == "step 200 (step-000200.safetensors)"
    (line,) = [x for x in said if "not checked" in x]
    assert line.startswith(f"resume: {ck}/step-000200.safetensors was not checked before the launch ("), line
    assert "gone.txt" in line and line.endswith("the ranks check it when they start"), line


@pytest.mark.parametrize("steps", [20, 10])
def test_resuming_with_nothing_left_to_train_is_refused_before_any_rank_starts(tmp_path, no_leftovers, steps):
    """The newest checkpoint is at step 20 and the job has 20 (or 10) steps: the ranks started,
    trained nothing and "finished"; `runs` listed 0/20. Now one line says so and what to do."""
    path = write_config(tmp_path, ranks=2, job=f"steps: {steps}, seed: 4, checkpoint_every: 10")
    _leave_checkpoint(_ckpt_dir(config(path)), seed=4, step=20)
    res = cli("--run", "--skip-checks", "--config", str(path), "--resume", timeout=120)
    assert res.returncode == 2 and res.stdout == "", (res.stdout, res.stderr)
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(
        "boltring: cannot resume: the newest checkpoint, step 20 (step-000020.safetensors)"
    )
    assert f"the job has {steps} steps: nothing is left to train; raise --steps" in line, line
    assert not (no_leftovers / ".boltring" / "runs").exists()  # no rank started
