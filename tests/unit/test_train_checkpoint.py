"""Checkpoints: exact round trip, exact continuation, atomic writes (also under SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mlx.core as mx
import pytest

from boltring.cluster.train import charlm, checkpoint, loop, mlp


def _state(task) -> dict[str, mx.array]:
    return checkpoint._state_arrays(task)


def _assert_same_state(a, b):
    sa, sb = _state(a), _state(b)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert mx.array_equal(sa[k], sb[k]).item(), k


def _tmp_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


CHARLM_ARGS = ["--dim", "16", "--context", "16", "--sample", "0", "--warmup", "3"]


@pytest.mark.parametrize("example,args", [(mlp, []), (charlm, CHARLM_ARGS)])
def test_round_trip_restores_identical_params_and_optimizer_state(solo, tmp_path, example, args):
    cfg = loop.TrainConfig(
        steps=5, seed=3, global_batch=16, checkpoint_every=5, checkpoint_dir=str(tmp_path / "ck")
    )
    trained = example.make_task(cfg, args)
    res = loop.train(solo, cfg, trained, log=lambda m: None)
    assert [p.name for p in res.checkpoints] == ["step-000005.safetensors"]
    assert (tmp_path / "ck" / "latest").read_text() == "step-000005.safetensors\n"

    fresh = example.make_task(cfg, args)
    fresh.optimizer.init(fresh.model.trainable_parameters())
    info = checkpoint.restore(solo, tmp_path / "ck", fresh, seed=3)
    assert info.step == 5 and info.samples_seen == 5 * 16
    assert info.meta["task"] == example.NAME and info.meta["global_batch"] == "16"
    _assert_same_state(trained, fresh)
    opt_keys = [k for k in _state(fresh) if k.startswith("optimizer.")]
    assert "optimizer.step" in opt_keys and len(opt_keys) > 3  # momentum / Adam moments included


@pytest.mark.parametrize("example,args", [(mlp, []), (charlm, CHARLM_ARGS)])
def test_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(solo, tmp_path, example, args):
    def run(steps, ck, resume=False, every=0):
        cfg = loop.TrainConfig(
            steps=steps,
            seed=11,
            global_batch=32,
            checkpoint_every=every,
            checkpoint_dir=str(ck),
            resume=resume,
        )
        task = example.make_task(cfg, args)
        return loop.train(solo, cfg, task, log=lambda m: None), task

    whole, whole_task = run(12, tmp_path / "a")
    first, _ = run(5, tmp_path / "b", every=5)
    second, second_task = run(12, tmp_path / "b", resume=True)
    assert second.start_step == 5 and sorted(second.losses) == list(range(6, 13))
    assert second.samples_seen == whole.samples_seen == 12 * 32
    assert [first.losses[s] for s in range(1, 6)] == [whole.losses[s] for s in range(1, 6)]
    assert [second.losses[s] for s in range(6, 13)] == [whole.losses[s] for s in range(6, 13)]
    _assert_same_state(whole_task, second_task)


def test_resume_without_checkpoint_starts_fresh(solo, tmp_path):
    cfg = loop.TrainConfig(steps=2, global_batch=8, resume=True, checkpoint_dir=str(tmp_path / "none"))
    lines = []
    res = loop.train(solo, cfg, mlp.make_task(cfg), log=lines.append)
    assert res.start_step == 0 and res.final_step == 2
    assert any("no checkpoint" in line for line in lines)


def test_resume_refuses_another_seed_or_example(solo, tmp_path):
    ck = tmp_path / "ck"
    cfg = loop.TrainConfig(steps=2, seed=1, global_batch=8, checkpoint_every=2, checkpoint_dir=str(ck))
    loop.train(solo, cfg, mlp.make_task(cfg), log=lambda m: None)
    other = loop.TrainConfig(steps=4, seed=2, global_batch=8, resume=True, checkpoint_dir=str(ck))
    with pytest.raises(checkpoint.CheckpointError, match="--seed 1") as seed_err:
        loop.train(solo, other, mlp.make_task(other), log=lambda m: None)
    other = loop.TrainConfig(steps=4, seed=1, global_batch=8, resume=True, checkpoint_dir=str(ck))
    with pytest.raises(checkpoint.CheckpointError, match="example 'mlp'") as task_err:
        loop.train(solo, other, charlm.make_task(other, CHARLM_ARGS), log=lambda m: None)
    with pytest.raises(checkpoint.CheckpointError, match="does not match the model") as model_err:
        loop.train(solo, other, mlp.make_task(other, ["--hidden", "8", "--depth", "1"]), log=lambda m: None)
    # The hints are for a boltring user, who has no --checkpoint-dir: they name the directory.
    assert "resume with --seed 1" in str(seed_err.value)
    assert "belongs to another job" in str(task_err.value)
    for err in (seed_err, task_err, model_err):
        assert f"move the checkpoints in {ck} away" in str(err.value), err.value
        assert "--checkpoint-dir" not in str(err.value)


def test_corrupt_checkpoint_is_a_clear_error(solo, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "step-000003.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    (ck / "latest").write_text("step-000003.safetensors\n")
    cfg = loop.TrainConfig(steps=4, global_batch=8, resume=True, checkpoint_dir=str(ck))
    with pytest.raises(checkpoint.CheckpointError, match="cannot read checkpoint"):
        loop.train(solo, cfg, mlp.make_task(cfg), log=lambda m: None)


def _saved_task(tmp_path, solo):
    cfg = loop.TrainConfig(steps=1, seed=0, global_batch=8)
    task = mlp.make_task(cfg)
    loop.train(solo, cfg, task, log=lambda m: None)
    return task


def test_failure_before_rename_leaves_no_partial_checkpoint(solo, tmp_path):
    task = _saved_task(tmp_path, solo)
    ck = tmp_path / "ck"
    first = checkpoint.save(ck, task, step=1, samples_seen=8, seed=0, global_batch=8)

    def boom(tmp: Path):
        assert tmp.parent == ck and tmp.name.startswith(".") and tmp.stat().st_size > 0
        raise OSError("disk unplugged")

    # Fails while writing the checkpoint file itself.
    with pytest.raises(OSError, match="disk unplugged"):
        checkpoint.save(ck, task, step=2, samples_seen=16, seed=0, global_batch=8, before_replace=boom)
    assert checkpoint.list_checkpoints(ck) == [first]
    assert checkpoint.latest_path(ck) == first and _tmp_files(ck) == []

    # Fails after the checkpoint file is committed, while rewriting `latest`.
    calls = []

    def boom_on_latest(tmp: Path):
        calls.append(tmp.name)
        if len(calls) == 2:
            raise OSError("disk unplugged")

    with pytest.raises(OSError):
        checkpoint.save(
            ck, task, step=2, samples_seen=16, seed=0, global_batch=8, before_replace=boom_on_latest
        )
    assert ".latest." in calls[1]
    assert (ck / "latest").read_text() == "step-000001.safetensors\n"  # still the old, valid one
    assert checkpoint.latest_path(ck) == first and _tmp_files(ck) == []
    for p in checkpoint.list_checkpoints(ck):  # every visible file is complete
        assert checkpoint.load_file(p).step in (1, 2)


def test_sigkill_between_write_and_rename_leaves_no_partial_checkpoint(solo, tmp_path):
    ck = tmp_path / "ck"
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal
        from boltring.cluster.train import checkpoint, loop, mlp
        cfg = loop.TrainConfig(seed=0, global_batch=8)
        task = mlp.make_task(cfg)
        task.optimizer.init(task.model.trainable_parameters())
        ck = {str(ck)!r}
        checkpoint.save(ck, task, step=1, samples_seen=8, seed=0, global_batch=8)
        def die(tmp):
            print("dying with", tmp.name, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.save(ck, task, step=2, samples_seen=16, seed=0, global_batch=8, before_replace=die)
        print("not reached", flush=True)
    """)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTRING_")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "dying with .step-000002.safetensors." in proc.stdout and "not reached" not in proc.stdout

    leftovers = _tmp_files(ck)
    assert len(leftovers) == 1  # the dead writer's temp file: hidden, never read
    assert [p.name for p in checkpoint.list_checkpoints(ck)] == ["step-000001.safetensors"]
    assert checkpoint.latest_path(ck).name == "step-000001.safetensors"
    assert checkpoint.load_file(ck / "step-000001.safetensors").step == 1

    # Resuming sees step 1; the next save (another process) clears the dead writer's temp file.
    cfg = loop.TrainConfig(
        steps=3, seed=0, global_batch=8, checkpoint_every=3, checkpoint_dir=str(ck), resume=True
    )
    res = loop.train(solo, cfg, mlp.make_task(cfg), log=lambda m: None)
    assert res.start_step == 1 and res.final_step == 3
    assert _tmp_files(ck) == []
    assert checkpoint.latest_path(ck).name == "step-000003.safetensors"


def test_latest_falls_back_to_highest_complete_file(tmp_path, solo):
    task = _saved_task(tmp_path, solo)
    ck = tmp_path / "ck"
    checkpoint.save(ck, task, step=1, samples_seen=8, seed=0, global_batch=8)
    checkpoint.save(ck, task, step=12, samples_seen=96, seed=0, global_batch=8)
    (ck / "latest").unlink()
    (ck / ".step-000013.safetensors.otherhost.1.tmp").write_bytes(b"partial")
    assert checkpoint.latest_path(ck).name == "step-000012.safetensors"
    checkpoint.save(ck, task, step=13, samples_seen=104, seed=0, global_batch=8)
    assert (ck / ".step-000013.safetensors.otherhost.1.tmp").exists()  # not this host's to judge
    assert checkpoint.latest_path(ck).name == "step-000013.safetensors"


def test_checkpoint_has_no_pickle_and_describes_itself(tmp_path, solo):
    task = _saved_task(tmp_path, solo)
    path = checkpoint.save(
        tmp_path / "ck", task, step=7, samples_seen=56, seed=0, global_batch=8, world_size=2
    )
    raw = path.read_bytes()
    assert b"\x80\x04\x95" not in raw and b"\x80\x05\x95" not in raw  # no pickle protocol 4/5 frames
    arrays, meta = mx.load(str(path), return_metadata=True)
    assert meta["format"] == checkpoint.FORMAT and meta["step"] == "7" and meta["world_size"] == "2"
    assert '"kind": "stateless"' in meta["rng"]
    assert any(k.startswith("model.") for k in arrays) and "optimizer.step" in arrays


def test_broadcast_helpers_round_trip_every_dtype():
    arrays = {
        "a": mx.array([1.5, -2.0, float("nan")]),
        "b": mx.array([[1, 2], [3, 4]], dtype=mx.int64),
        "c": mx.array(7, dtype=mx.uint64),
        "d": mx.array([0.5, 3.25]).astype(mx.bfloat16),
        "e": mx.zeros((0, 3)),
    }
    for k, a in arrays.items():
        back = checkpoint._from_bytes(checkpoint._to_bytes(a), a)
        assert back.dtype == a.dtype and back.shape == a.shape
        assert mx.array_equal(back, a, equal_nan=True).item(), k
