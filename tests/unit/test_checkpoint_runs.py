"""A job started afresh (no --resume) in a folder that holds a longer earlier run's checkpoints:
prune keeps this run's newest checkpoints and leaves the earlier run's alone, and resume never
takes the earlier run's checkpoints (at higher steps) for this run's. Each run is its own rank
process, as the runner starts them (a run is the process that trains, or the run it resumes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from boltring.cluster.train import checkpoint


def _train(ck: Path, steps: int, *extra: str) -> str:
    args = ["--example", "mlp", "--steps", str(steps), "--seed", "4", "--global-batch", "16"]
    args += ["--checkpoint-every", "1", "--keep-checkpoints", "3", "--checkpoint-dir", str(ck), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTRING_")}
    res = subprocess.run(
        [sys.executable, "-m", "boltring.cluster.train.runner", *args, "--", "--hidden", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ck.parent,
        env=env,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout


def _names(*steps: int) -> list[str]:
    return [f"step-{s:06d}.safetensors" for s in steps]


def test_a_fresh_run_keeps_its_own_newest_and_resumes_only_from_them(tmp_path):
    ck = tmp_path / "ck"
    _train(ck, 10)  # the earlier, longer run: steps 8, 9, 10 are left
    out = _train(ck, 3)  # started again from step 0, without --resume
    assert [p.name for p in checkpoint.list_checkpoints(ck)] == _names(1, 2, 3, 8, 9, 10), out
    assert (ck / "latest").read_text() == "step-000003.safetensors\n"
    earlier, ours = (checkpoint.run_of(ck / name) for name in _names(10, 3))
    assert ours not in (None, earlier)

    # This run's newest fails to verify: resume takes its step 2, not the earlier run's step 10.
    newest = ck / "step-000003.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])
    out = _train(ck, 5, "--resume")
    assert "using step-000002.safetensors, the newest checkpoint that verifies" in out, out
    assert "resumed from step-000002.safetensors: step 2" in out, out
    # the resumed run is the same run, and its prune removes only its own older checkpoints
    assert checkpoint.run_of(ck / "step-000005.safetensors") == ours
    assert [p.name for p in checkpoint.list_checkpoints(ck)] == _names(3, 4, 5, 8, 9, 10), out


def test_no_fallback_to_another_run_when_none_of_this_runs_checkpoints_verify(tmp_path):
    ck = tmp_path / "ck"
    _train(ck, 10)
    _train(ck, 1)
    newest = ck / "step-000001.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])
    loaded, skipped = checkpoint.newest_verified(ck)
    assert loaded is None and len(skipped) == 1 and "step-000001.safetensors" in skipped[0]
