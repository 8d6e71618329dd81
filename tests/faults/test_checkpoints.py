"""Verified checkpoints: a flipped bit, bytes overwritten with 0x7f or a truncated newest file is
reported by name and resume uses the newest one that verifies; old checkpoints are pruned; a
non-finite loss fails the run naming the step and rank."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from boltring.cluster.train import checkpoint, loop, mlp


def _train(solo, ck: Path, steps: int, *, resume=False, keep=3, lr=None, allow_nonfinite=False):
    cfg = loop.TrainConfig(
        steps=steps,
        seed=4,
        global_batch=16,
        checkpoint_every=5,
        checkpoint_dir=str(ck),
        resume=resume,
        keep_checkpoints=keep,
        lr=lr,
        allow_nonfinite=allow_nonfinite,
    )
    lines: list[str] = []
    res = loop.train(solo, cfg, mlp.make_task(cfg), log=lines.append)
    return res, lines


def _flip_sign_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + 3] ^= 0x80  # the sign bit of the first float32 of the first tensor
    path.write_bytes(bytes(data))


def _overwrite_7f(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header : 8 + header + 64] = b"\x7f" * 64
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    "damage", [_flip_sign_bit, _overwrite_7f, _truncate], ids=["sign-bit", "0x7f", "truncated"]
)
def test_corrupt_newest_checkpoint_is_named_and_the_previous_one_is_used(solo, tmp_path, damage):
    ck = tmp_path / "ck"
    _train(solo, ck, 15)
    newest = checkpoint.latest_path(ck)
    assert newest is not None and newest.name == "step-000015.safetensors"
    damage(newest)
    res, lines = _train(solo, ck, 20, resume=True)
    assert res.start_step == 10, lines
    text = "\n".join(lines)
    assert "step-000015.safetensors" in text and ("corrupt" in text or "cannot read" in text), text
    assert "using step-000010.safetensors, the newest checkpoint that verifies" in text, text
    # and the continued run is the uninterrupted one
    fresh, _ = _train(solo, tmp_path / "fresh", 20)
    assert res.losses[20] == fresh.losses[20]


def test_checkpoint_records_sha256_of_its_tensors(solo, tmp_path):
    _train(solo, tmp_path / "ck", 5)
    loaded = checkpoint.load_file(tmp_path / "ck" / "step-000005.safetensors")
    assert len(loaded.meta["sha256"]) == 64
    assert checkpoint.tensor_digest(loaded.arrays) == loaded.meta["sha256"]


def test_only_the_newest_keep_checkpoints_are_kept(solo, tmp_path):
    ck = tmp_path / "ck"
    res, lines = _train(solo, ck, 40, keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(ck)] == [
        "step-000030.safetensors",
        "step-000035.safetensors",
        "step-000040.safetensors",
    ]
    assert any("removed old checkpoint step-000025.safetensors" in line for line in lines)


def test_nan_loss_fails_naming_step_and_rank(solo, tmp_path):
    with pytest.raises(loop.NonFiniteLoss, match=r"loss became (NaN|infinite) at step \d+ on rank 0"):
        _train(solo, tmp_path / "ck", 40, lr=1e30)
    # nothing non-finite was saved
    for p in checkpoint.list_checkpoints(tmp_path / "ck"):
        assert checkpoint.verified(p)


def test_allow_nonfinite_lets_the_run_go_on(solo, tmp_path):
    res, _ = _train(solo, tmp_path / "ck", 12, lr=1e30, allow_nonfinite=True)
    assert res.final_step == 12 and not math.isfinite(res.losses[12])
