"""`--example lm --resume` continues the very same run: LoRA dropout draws from per-step seeds
(nothing to restore), and the learning rate given now wins over the checkpoint's, as in
loop.train. One rank, in this process, on a tiny Llama built offline."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from boltring.cluster.train import checkpoint
from boltring.cluster.train.lm import train_lm
from boltring.cluster.train.lm_setup import make_optimizer, parse_lm_args
from boltring.cluster.train.loop import TrainConfig
from tests.lmkit import write_dataset, write_model

pytest.importorskip("mlx_lm")

STEPS = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("tiny-llama-resume")
    dropout = root / "dropout.yaml"
    dropout.write_text("lora_parameters:\n  rank: 8\n  dropout: 0.3\n  scale: 20.0\n")
    return write_model(root / "model"), write_dataset(root / "data", train=16, valid=4), dropout


def _train(solo, tiny, cfg: TrainConfig, dropout: bool) -> dict[int, float]:
    model, data, with_dropout = tiny
    flags = ["--model", str(model), "--data", str(data), "--num-layers", "2", "--learning-rate", "1e-2"]
    flags += ["-c", str(with_dropout)] if dropout else []
    args = parse_lm_args(cfg, flags, log=lambda m: None)
    return train_lm(solo, cfg, args, log=lambda m: None)


def _first_half_then(solo, tiny, cfg: TrainConfig, resumed: TrainConfig, dropout: bool) -> dict[int, float]:
    """Steps 1..STEPS/2 with ``cfg``, then --resume with ``resumed`` to STEPS."""
    shutil.rmtree(cfg.checkpoint_dir or "", ignore_errors=True)
    _train(solo, tiny, replace(cfg, steps=STEPS // 2), dropout)
    return _train(solo, tiny, replace(resumed, resume=True), dropout)


def _cfg(tmp_path) -> TrainConfig:
    return TrainConfig(
        steps=STEPS, seed=1, global_batch=4, checkpoint_every=STEPS // 2, checkpoint_dir=str(tmp_path / "ck")
    )


def test_a_resumed_run_with_dropout_follows_the_unbroken_one(solo, tiny, tmp_path):
    cfg = _cfg(tmp_path)
    whole = _train(solo, tiny, replace(cfg, checkpoint_every=0), dropout=True)
    resumed = _first_half_then(solo, tiny, cfg, cfg, dropout=True)
    assert sorted(resumed) == list(range(STEPS // 2 + 1, STEPS + 1))
    for step in resumed:
        assert resumed[step] == whole[step], (step, whole, resumed)
    # The checkpoint says where its randomness comes from: nothing there to restore.
    meta = checkpoint.load_file(tmp_path / "ck" / "step-000008.safetensors").meta
    assert "step_seed(seed, rank, step)" in json.loads(meta["rng"])["mx_random"]


def test_the_learning_rate_given_on_resume_wins_over_the_checkpoints(solo, tiny, tmp_path):
    cfg = _cfg(tmp_path)
    whole = _train(solo, tiny, replace(cfg, checkpoint_every=0), dropout=False)
    tiny_lr = _first_half_then(solo, tiny, cfg, replace(cfg, lr=1e-7), dropout=False)
    tinier_lr = _first_half_then(solo, tiny, cfg, replace(cfg, lr=1e-9), dropout=False)
    half = STEPS // 2
    assert tiny_lr[half + 1] == whole[half + 1]  # the loss before the first resumed update
    for step in range(half + 2, STEPS + 1):
        # 1e-7 and 1e-9 barely move the weights of step 4; 1e-2, the checkpoint's rate, does.
        assert tiny_lr[step] == pytest.approx(tinier_lr[step], rel=1e-4), step
        assert abs(tiny_lr[step] - whole[step]) > 1e-3, step


def test_lr_sets_the_initial_rate_of_an_lr_schedule(tmp_path):
    """mlx-lm ignores --learning-rate when -c gives an lr_schedule: the schedule's first argument
    is its initial rate (and warmup's target). boltring's --lr replaces that one."""
    config = tmp_path / "schedule.yaml"
    config.write_text("lr_schedule:\n  name: cosine_decay\n  arguments: [1.0e-2, 100]\n  warmup: 2\n")
    said: list[str] = []
    flags = ["--model", "m", "--data", str(tmp_path), "-c", str(config)]
    args = parse_lm_args(TrainConfig(lr=1e-3), flags, log=said.append)
    schedule = make_optimizer(args)._schedulers["learning_rate"]
    assert schedule(2).item() == pytest.approx(1e-3)  # the end of warmup: the initial rate
    assert any("--lr 0.001" in line and "lr_schedule" in line for line in said), said
    unchanged = make_optimizer(parse_lm_args(TrainConfig(), flags, log=said.append))
    assert unchanged._schedulers["learning_rate"](2).item() == pytest.approx(1e-2)
