"""The summary's rates (follow.Totals) from lines a real Group wrote: totals over the training
time the lines cover, a validation pass left out as in each line's own rates; and a job with one
line per attempt shows that line's figures, which count every step it covers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

from boltring.cluster.config.schema import Node
from boltring.cluster.jobs import follow
from boltring.netio import init

STEP_S = 0.02  # one "training step" (a sleep: its time is known)
TOKENS = 100  # tokens this rank trains on per step
B = 8  # global batch


@pytest.fixture
def group(tmp_path, monkeypatch):
    """A real 1-rank Group writing tmp_path/metrics.jsonl (run alone: no launcher environment)."""
    for key in [k for k in os.environ if k.startswith("BOLTRING_")]:
        monkeypatch.delenv(key)
    with init({"BOLTRING_RUN_DIR": str(tmp_path)}) as g:
        yield g


def _train(g, steps: int) -> None:
    grads = {"w": mx.ones((4,))}
    for _ in range(steps):
        time.sleep(STEP_S)
        g.average_gradients(grads)


def _totals(run_dir: Path) -> dict:
    """What the controller's summary says of this rank, read as the controller reads the file."""
    plan: Any = type("Plan", (), {"rank": 0, "run_dir": str(run_dir)})()
    rs = follow.RankState(plan=plan, node=Node(name="n", ring_ip="127.0.0.1"))
    for line in (run_dir / "metrics.jsonl").read_bytes().splitlines():
        follow.take_line(rs, line, world_size=1)
    return rs.totals.rates()


def test_a_validation_pass_is_not_training_time_in_the_summary(group, tmp_path):
    val_s = 0.5  # four validation passes of 0.5 s next to 4 × 5 × 20 ms of training
    group.report(step=0, samples=B)  # opens the span (its figures are not summed)
    for step in range(5, 25, 5):
        _train(group, 5)
        t = time.perf_counter()
        time.sleep(val_s)
        group.report(step=step, samples=B, tokens=5 * TOKENS, exclude_s=time.perf_counter() - t)
    rates = _totals(tmp_path)
    # every line's own rate is training only: the summary is too, within scheduling noise
    per_step = 1 / rates["steps_per_s"]
    assert STEP_S <= per_step < STEP_S + 0.05, rates  # counting validation: ~0.12 s a step
    assert rates["tokens_per_s"] == pytest.approx(TOKENS * rates["steps_per_s"])
    assert rates["samples_per_s"] == pytest.approx(B * rates["steps_per_s"])


def test_one_line_per_attempt_counts_every_step_it_covers(group, tmp_path):
    """log_every = steps: the only line, at step 20, covers 20 steps since the group opened;
    it once counted 1 (20 steps of 20 ms read 1/0.4 s = 2.5 steps/s instead of ~50)."""
    _train(group, 20)
    rec = group.report(step=20, samples=B, tokens=20 * TOKENS)
    rates = _totals(tmp_path)
    assert rates["steps_per_s"] == rec["steps_per_s"]
    assert 20 * STEP_S <= 20 / rates["steps_per_s"] < 20 * STEP_S + 0.3, rates
    assert rates["tokens_per_s"] == pytest.approx(TOKENS * rates["steps_per_s"])  # one count of steps


def test_a_resumed_first_line_counts_the_steps_it_trained_not_its_step_number(group):
    """A run resumed at step 30 reports step 40 after 10 steps: 10 steps, not 40 (or 1)."""
    _train(group, 10)
    rec = group.report(step=40, samples=B, tokens=10 * TOKENS)
    assert rec["tokens_per_s"] / rec["steps_per_s"] == pytest.approx(TOKENS)
    assert rec["samples_per_s"] == pytest.approx(B * rec["steps_per_s"])


def test_a_first_line_without_gradient_averages_has_no_step_rate_rather_than_a_guess(group):
    time.sleep(STEP_S)
    rec = group.report(step=7, samples=B, tokens=TOKENS)
    assert rec["steps_per_s"] is None and rec["samples_per_s"] is None
    assert rec["tokens_per_s"] > 0  # the caller counted its tokens: that rate is known
    later = group.report(step=8, samples=B)  # from here on the step numbers say
    assert later["steps_per_s"] > 0 and later["samples_per_s"] == pytest.approx(B * later["steps_per_s"])
