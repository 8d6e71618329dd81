"""`--example lm` with LoRA dropout: every rank draws its own masks (lm.step_seed of seed, rank
and step), while the model starts the same on every rank."""

from __future__ import annotations

import json

import pytest

from tests.lmkit import local_config, run_job, sentences, write_model

pytest.importorskip("mlx_lm")


def test_ranks_draw_different_dropout_masks(tmp_path, no_leftovers):
    """Every example is the same text. Rank 0 of 2 draws what the only rank of a 1-rank job
    draws, so when rank 1 drew rank 0's masks too, both ranks would have the same gradients,
    and the 2-rank job would follow the 1-rank one exactly. At step 1 they agree (LoRA's B
    starts at zero: dropout, on the input of A, cannot change the loss yet); at step 2, after
    an update made of the ranks' gradients, they must not. Without dropout 1 and 2 ranks
    follow the same curve (test_lm_empty_shard, test_workloads_lm)."""
    model = write_model(tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    line = json.dumps({"text": " ".join(sentences(3, seed=5))}) + "\n"
    for name in ("train", "valid"):
        (data / f"{name}.jsonl").write_text(line * 8)
    dropout = tmp_path / "dropout.yaml"
    dropout.write_text("lora_parameters:\n  rank: 8\n  dropout: 0.5\n  scale: 20.0\n")
    lm = ["--model", str(model), "--data", str(data), "--num-layers", "2", "-c", str(dropout)]
    lm += ["--learning-rate", "1e-2"]
    curves = []
    for ranks in (1, 2):
        config = local_config(tmp_path / f"r{ranks}.yaml", ranks, name=f"dr{ranks}")
        res, events = run_job(
            config, "--steps", "2", "--global-batch", str(ranks), "--example", "lm", "--", *lm
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        curves.append({e["step"]: e["loss"] for e in events if e["event"] == "step"})
    one, two = curves
    assert two[1] == pytest.approx(one[1], rel=1e-6), (one, two)
    assert abs(two[2] - one[2]) > 1e-3 * one[2], (one, two)
