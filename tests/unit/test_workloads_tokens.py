"""tokens/s in a rank's report(): charlm through the shared loop (the lm example reports its own)."""

from __future__ import annotations

import json

import pytest

from boltring.cluster.train import charlm, loop
from boltring.netio import init


def test_charlm_reports_tokens_per_second(tmp_path):
    cfg = loop.TrainConfig(steps=4, seed=0, global_batch=8, log_every=2)
    task = charlm.make_task(cfg, ["--context", "8"])
    with init({"BOLTRING_RUN_DIR": str(tmp_path)}) as group:  # a real 1-rank group with a run dir
        loop.train(group, cfg, task, log=lambda m: None)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x) for x in lines if '"kind":"step"' in x]
    assert [s["step"] for s in steps] == [1, 2, 4]  # the first step too: where the loss began
    assert all(s["tokens_per_s"] > 0 for s in steps)
    # 8 windows of 8 predicted characters a step: tokens/s is 8 x samples/s on one rank. (Not
    # on the first report, where report() cannot know how many steps came before it.)
    assert steps[2]["tokens_per_s"] / steps[2]["samples_per_s"] == pytest.approx(8.0, rel=1e-6)
