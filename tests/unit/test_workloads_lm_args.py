"""`--example lm` arguments: mlx-lm's own flags and YAML, with boltring's options on top."""

from __future__ import annotations

import pytest

pytest.importorskip("mlx_lm")

from boltring.cluster.train.lm_setup import parse_lm_args
from boltring.cluster.train.loop import TrainConfig


def test_boltring_options_win_over_mlx_lm_flags_and_say_so():
    said: list[str] = []
    cfg = TrainConfig(steps=30, global_batch=8, seed=3, lr=2e-4, steps_per_eval=5)
    args = parse_lm_args(
        cfg,
        ["--model", "m", "--data", "d", "--iters", "99", "--batch-size", "2", "--fine-tune-type", "dora"],
        said.append,
    )
    assert (args.iters, args.batch_size, args.seed, args.learning_rate) == (30, 8, 3, 2e-4)
    assert args.steps_per_eval == 5 and args.fine_tune_type == "dora"
    assert args.num_layers == 16 and args.optimizer == "adam"  # mlx-lm's defaults
    assert args.adapter_path is None  # next to the checkpoints unless given
    assert any("--iters 99 is replaced by boltring's --steps 30" in s for s in said)
    assert any("--batch-size 2 is replaced by boltring's --global-batch 8" in s for s in said)


def test_yaml_config_fills_what_the_flags_leave_open(tmp_path):
    y = tmp_path / "lora.yaml"
    y.write_text(
        "model: from-yaml\ndata: d\nnum_layers: 4\nlora_parameters: {rank: 4, dropout: 0.0, scale: 10.0}\n"
    )
    args = parse_lm_args(TrainConfig(), ["-c", str(y), "--num-layers", "2", "--adapter-path", "out"], print)
    assert args.model == "from-yaml" and args.num_layers == 2 and args.lora_parameters["rank"] == 4
    assert args.adapter_path == "out"


def test_unsupported_and_ignored_flags():
    with pytest.raises(ValueError, match="--grad-accumulation-steps is not supported"):
        parse_lm_args(TrainConfig(), ["--model", "m", "--data", "d", "--grad-accumulation-steps", "4"], print)
    said: list[str] = []
    parse_lm_args(TrainConfig(), ["--model", "m", "--data", "d", "--save-every", "5"], said.append)
    assert any("--save-every is ignored under boltring" in s for s in said)
    with pytest.raises(ValueError, match="unknown mlx-lm argument"):
        parse_lm_args(TrainConfig(), ["--model", "m", "--data", "d", "--bogus"], print)
    with pytest.raises(ValueError, match="needs -- --data"):
        parse_lm_args(TrainConfig(), ["--model", "m"], print)
