"""`--example lm` with a rank whose shard has no target token: `--mask-prompt` with prompts
longer than --max-seq-length. The loss is summed per token on each rank and divided by the
global token count, so that rank adds zero (its local mean would be 0/0 = NaN), and 2 ranks
follow the 1-rank curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lmkit import local_config, run_job, sentences, write_model

pytest.importorskip("mlx_lm")


def _prompt_past_the_limit(directory: Path) -> Path:
    """Pairs of examples of the same length, a long prompt first: iterate_batches sorts by
    length (stably) and deals each pair of a global batch of 2 to ranks 0 and 1, so rank 0
    always gets the long prompt, which --max-seq-length 32 cuts before its completion."""
    directory.mkdir(parents=True)
    short, long_ = sentences(1, seed=3)[0] + " ", " ".join(sentences(6, seed=4)) + " "
    rows = [{"prompt": long_, "completion": short}, {"prompt": short, "completion": long_}] * 4
    for name in ("train", "valid"):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def _chat_model(directory: Path) -> Path:
    """The tiny model with the simplest chat template, which prompt/completion data needs."""
    model = write_model(directory)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return model


def test_a_rank_without_target_tokens_adds_zero_and_two_ranks_follow_one(tmp_path, no_leftovers):
    model = _chat_model(tmp_path / "model")
    data = _prompt_past_the_limit(tmp_path / "data")
    lm = ["--model", str(model), "--data", str(data), "--fine-tune-type", "lora", "--num-layers", "2"]
    lm += ["--learning-rate", "1e-2", "--mask-prompt", "--max-seq-length", "32"]
    curves = []
    for ranks in (1, 2):
        config = local_config(tmp_path / f"r{ranks}.yaml", ranks, name=f"es{ranks}")
        res, events = run_job(
            config,
            "--steps",
            "4",
            "--global-batch",
            "2",
            "--steps-per-eval",
            "4",
            "--example",
            "lm",
            "--",
            *lm,
            timeout=240,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        curves.append({e["step"]: e["loss"] for e in events if e["event"] == "step"})
        assert events[-1]["val_loss"] is not None  # validation has empty shards too
    one, two = curves
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), (step, one, two)
    assert one[4] < one[1]
