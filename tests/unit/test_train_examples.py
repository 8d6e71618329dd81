"""The built-in examples learn, on a real 1-rank group from boltring.netio.init()."""

from __future__ import annotations

import numpy as np
import pytest

from boltring.cluster.train import charlm, loop, mlp


def _mean(losses: dict[int, float], steps) -> float:
    return float(np.mean([losses[s] for s in steps]))


def test_mlp_loss_falls(solo):
    cfg = loop.TrainConfig(steps=60, seed=0, global_batch=128, log_every=1)
    task = mlp.make_task(cfg)
    lines = []
    res = loop.train(solo, cfg, task, log=lines.append)
    assert res.final_step == 60 and sorted(res.losses) == list(range(1, 61))
    assert res.samples_seen == 60 * 128
    assert res.losses[1] > 1.2  # about ln 4 at the start
    assert _mean(res.losses, range(51, 61)) < 0.6 * _mean(res.losses, range(1, 6))
    assert task.accuracy() > 0.6
    assert any("step 60/60" in line for line in lines)
    assert sum("step " in line for line in lines) <= 12  # ~every 10 %, not every step


def test_charlm_loss_falls(solo):
    cfg = loop.TrainConfig(steps=40, seed=0, global_batch=32, log_every=1)
    task = charlm.make_task(cfg)
    assert task.vocab_size > 40 and task.num_examples > 20_000  # the shipped corpus
    res = loop.train(solo, cfg, task, log=lambda m: None)
    start, end = _mean(res.losses, range(1, 4)), _mean(res.losses, range(36, 41))
    assert start > 3.5  # about ln(vocab) at the start
    assert end < start - 0.8, (start, end)
    text = task.sample(length=20)
    assert text.startswith("The ") and len(text) == 24


def test_charlm_reads_data_file(solo, tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text("abcabcabd " * 200)
    cfg = loop.TrainConfig(steps=3, seed=1, global_batch=8, data=str(data))
    task = charlm.make_task(cfg, ["--context", "8", "--dim", "16", "--sample", "0"])
    assert task.chars == [" ", "a", "b", "c", "d"]
    x, y = task.batch(np.array([0, 5]))
    assert x.shape == (2, 8) and y.shape == (2, 8)
    np.testing.assert_array_equal(np.array(x)[:, 1:], np.array(y)[:, :-1])  # y is x shifted by one
    loop.train(solo, cfg, task, log=lambda m: None)
    assert charlm.summary(task) is None


def test_bad_example_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown argument.*--nope"):
        mlp.make_task(loop.TrainConfig(), ["--nope"])
    with pytest.raises(ValueError, match="divisible by --heads"):
        charlm.make_task(loop.TrainConfig(), ["--dim", "30", "--heads", "4"])
    with pytest.raises(FileNotFoundError, match="data file not found"):
        charlm.make_task(loop.TrainConfig(data="/nonexistent/book.txt"))


def test_config_validation(solo):
    task = mlp.make_task(loop.TrainConfig())
    for bad, msg in [
        (dict(global_batch=0), "--global-batch"),
        (dict(log_every=0), "--log-every"),
        (dict(seed=-1), "--seed"),
        (dict(lr=0.0), "--lr"),
    ]:
        with pytest.raises(ValueError, match=msg):
            loop.train(solo, loop.TrainConfig(**bad), task)
