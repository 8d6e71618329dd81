"""`--example lm` checkpoints end to end on a tiny Llama built offline: the newest
keep_checkpoints are kept, loadable adapters are written with every checkpoint (so a stopped
job leaves some), --resume says what it found as the other examples do, and mlx-lm's own
--iters/--batch-size size the job the controller counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lmkit import free_ports, run_job, write_dataset, write_model
from tests.procs import read_to_exit

pytest.importorskip("mlx_lm")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-llama-ck")
    return write_model(root / "model"), write_dataset(root / "data", train=32, valid=8)


def _lm(model: Path, data: Path, *extra: str) -> list[str]:
    return ["--", "--model", str(model), "--data", str(data), "--num-layers", "2", *extra]


def _runner(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "boltring.cluster.train.runner", "--example", "lm", *args]


def _loads(model: Path, adapters: Path) -> None:
    """mlx_lm.generate --adapter-path would load them."""
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load

    assert json.loads((adapters / "adapter_config.json").read_text())["fine_tune_type"] == "lora"
    m, _ = load(str(model))
    load_adapters(m, str(adapters))


def test_lm_keeps_the_newest_checkpoints(tiny, tmp_path):
    model, data = tiny
    ck = tmp_path / "ck"
    args = ["--steps", "5", "--global-batch", "4", "--checkpoint-every", "1", "--keep-checkpoints", "2"]
    res = subprocess.run(
        _runner(*args, "--checkpoint-dir", str(ck), *_lm(model, data), cwd=tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-000004.safetensors", "step-000005.safetensors"]
    assert "removed old checkpoint step-000003.safetensors (keeping 2)" in res.stdout


def test_a_stopped_lm_job_leaves_loadable_adapters(tiny, tmp_path):
    model, data = tiny
    ck = tmp_path / "ck"
    args = [
        "--steps",
        "100000",
        "--global-batch",
        "4",
        "--checkpoint-every",
        "2",
        "--checkpoint-dir",
        str(ck),
    ]
    proc = subprocess.Popen(
        _runner(*args, *_lm(model, data), cwd=tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the adapters of step 2's checkpoint, or step 6 without them
            seen.append(line)
            if line.startswith(("[rank 0] adapters at step 2:", "[rank 0] step 6/")):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = read_to_exit(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen and seen[-1].startswith("[rank 0] adapters at step 2:"), "".join(seen)[-3000:]
    assert proc.returncode != 0 and "step 100000/" not in out  # stopped, not finished
    adapters = ck / "adapters"
    assert sorted(p.name for p in adapters.iterdir()) == ["adapter_config.json", "adapters.safetensors"]
    assert json.loads((adapters / "adapter_config.json").read_text())["adapter_path"] == str(adapters)
    _loads(model, adapters)


def _config(path: Path) -> Path:
    """Two local ranks; neither steps nor global_batch: mlx-lm's flags size the job."""
    path.write_text(
        "name: lmck\n"
        "nodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        f"ring:\n  port: {free_ports(2)}\n"
        "job:\n  checkpoint_every: 1\n  keep_checkpoints: 2\n"
    )
    return path


def test_lm_resume_says_what_it_found_and_mlx_lm_flags_size_the_job(tiny, tmp_path, no_leftovers):
    model, data = tiny
    config = _config(tmp_path / "boltring.yaml")
    ck = no_leftovers / ".boltring" / "checkpoints" / "lmck" / "lm"

    res, events = run_job(
        config, "--resume", "--example", "lm", *_lm(model, data, "--iters", "4", "--batch-size", "4")
    )
    assert res.returncode == 0, res.stderr[-3000:]
    start = next(e for e in events if e["event"] == "start")
    assert start["steps"] == 4  # the controller counts what the ranks run
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert events[-1]["steps"] == 4 and events[-1]["status"] == "finished"
    warned = [e["text"] for e in events if e["event"] == "log" and e["level"] == "warn"]
    assert f"resume: no checkpoint in {ck}; started from step 0" in warned, warned
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-000003.safetensors", "step-000004.safetensors"]
    _loads(model, ck / "adapters")

    newest = ck / "step-000004.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])  # a truncated newest checkpoint
    res, events = run_job(
        config, "--resume", "--example", "lm", *_lm(model, data, "--iters", "6", "--batch-size", "4")
    )
    assert res.returncode == 0, res.stderr[-3000:]
    said = [e["text"] for e in events if e["event"] == "log" and e.get("rank") == 0]
    skipped = [t for t in said if "resume: skipped" in t]
    assert len(skipped) == 1 and "step-000004.safetensors" in skipped[0], said
    assert any(
        "resume: using step-000003.safetensors, the newest checkpoint that verifies" in t for t in said
    )
    assert [e["step"] for e in events if e["event"] == "step"] == [4, 5, 6]
    assert os.path.getsize(ck / "adapters" / "adapters.safetensors") > 0
