"""The lm example's loss curve with a half-precision wire (ring.wire_dtype), against float32:
full fine-tuning of the tiny Llama built offline, 2 local ranks, the same seed and batches.
Prints MEASURED lines for the README; asserts only that both runs train."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lmkit import local_config, run_job, write_dataset, write_model

pytestmark = pytest.mark.bench
pytest.importorskip("mlx_lm")

STEPS = 40


def losses(tmp_path: Path, model: Path, data: Path, wire: str) -> dict[int, float]:
    config = local_config(tmp_path / f"{wire}.yaml", 2, name=f"wire-{wire}")
    config.write_text(config.read_text().replace("ring:\n", f"ring:\n  wire_dtype: {wire}\n"))
    res, events = run_job(
        config,
        "--steps",
        str(STEPS),
        "--global-batch",
        "8",
        "--example",
        "lm",
        "--",
        "--model",
        str(model),
        "--data",
        str(data),
        "--fine-tune-type",
        "full",
        "--num-layers",
        "-1",
        "--learning-rate",
        "3e-3",
    )
    reason = next((e.get("reason") for e in events if e["event"] == "summary"), None)
    assert res.returncode == 0, reason or res.stderr[-3000:]
    return {e["step"]: e["loss"] for e in events if e["event"] == "step"}


def test_lm_loss_curve_with_a_half_precision_wire(tmp_path):
    model = write_model(tmp_path / "model", hidden=64, layers=2, intermediate=128)
    data = write_dataset(tmp_path / "data", train=96, valid=8)
    base = losses(tmp_path, model, data, "float32")
    assert len(base) == STEPS and base[STEPS] < base[1]
    for wire in ("bfloat16", "float16"):
        half = losses(tmp_path, model, data, wire)
        devs = [abs(half[s] - base[s]) / abs(base[s]) for s in base]
        print(
            f"MEASURED lm full fine-tune, 2 ranks, {STEPS} steps, wire {wire}: max relative loss "
            f"deviation {max(devs):.2%} at step {1 + devs.index(max(devs))}, mean {sum(devs) / len(devs):.2%}, "
            f"final {half[STEPS]:.4f} vs float32 {base[STEPS]:.4f}"
        )
        assert half[STEPS] < half[1]
