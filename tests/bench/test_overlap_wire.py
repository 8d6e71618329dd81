"""Benchmarks (`pytest -m bench`): overlap of communication with the backward pass, and the
half-precision wire's effect on charlm's loss curve. Each test prints one JSON line per figure.

On this 2-core VM the ranks' MLX compute and the ring's kernel copies run on the same two
cores, so overlap can only hide communication where a core would otherwise wait (for a link);
see the README's Performance section for what a Mac mini would gain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.netio.jobenv import JobEnv
from tests.netio.ranks import write_secret

pytestmark = pytest.mark.bench
STEPS_PY = Path(__file__).with_name("charlm_steps.py")
MODELS = {"charlm": [], "charlm-wide": ["--dim", "128", "--layers", "4", "--heads", "4"]}


def local_run(ranks: int, steps: int, *opts: str, model: str = "charlm", batch: int = 64) -> dict:
    argv = [sys.executable, str(STEPS_PY), "launch", "--ranks", str(ranks), "--steps", str(steps)]
    argv += ["--batch", str(batch), *opts, "--", *MODELS[model]]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _summary(d: dict, **extra) -> dict:
    return {
        **extra,
        "ranks": d["ranks"],
        "params": d["params"],
        "grad_mb": round(d["grad_mb"], 3),
        "overlap": d["overlap"],
        "wire": d["wire"],
        "step_ms_median": round(d["step_ms_median"], 2),
        "step_ms_range": [round(x, 2) for x in d["step_ms_range"]],
    }


def test_half_precision_wire_loss_curve_of_charlm():
    """300 steps of charlm on 2 local ranks: float32 vs bfloat16 and float16 on the wire."""
    curves = {w: local_run(2, 300, "--wire", w)["losses"] for w in ("float32", "bfloat16", "float16")}
    base = curves["float32"]
    for wire in ("bfloat16", "float16"):
        dev = max(abs(a - b) / abs(b) for a, b in zip(curves[wire], base, strict=True))
        row = {
            "model": "charlm",
            "steps": 300,
            "wire": wire,
            "max_rel_deviation": round(dev, 5),
            "final_loss": round(curves[wire][-1], 4),
            "final_loss_float32": round(base[-1], 4),
        }
        print(json.dumps(row))
        assert dev < 0.05, row


@pytest.mark.parametrize("model", list(MODELS))
def test_overlap_step_time_local_ranks(model):
    """Same losses with and without overlap (2 ranks: each sum is one addition), and the step
    times of both, measured back to back."""
    runs = {o: local_run(2, 40, *(["--overlap"] if o else []), model=model, batch=32) for o in (False, True)}
    for d in runs.values():
        print(json.dumps(_summary(d, model=model, where="local")))
    assert runs[True]["losses"] == runs[False]["losses"]


@pytest.mark.netns
@pytest.mark.parametrize("model", list(MODELS))
def test_overlap_step_time_on_shaped_hosts(lab2_at_2gbit, tmp_path, model):
    lab = lab2_at_2gbit
    runs = {}
    for overlap in (False, True):
        secret = write_secret(tmp_path / f"secret-{overlap}")
        ring = tuple(f"{h.ring_ip}:52800" for h in lab.hosts)
        procs = []
        for r, h in enumerate(lab.hosts):
            env = {
                **os.environ,
                **JobEnv(
                    rank=r, size=2, job_id="overlap", ring=ring, secret_file=str(secret), bucket_mb=4.0
                ).to_environ(),
            }
            argv = [sys.executable, str(STEPS_PY), "worker", "--steps", "40", "--batch", "32"]
            argv += ["--overlap"] if overlap else []
            procs.append(
                lab.popen(h, [*argv, "--", *MODELS[model]], env=env, stdout=-1, stderr=-1, text=True)
            )
        outs = [p.communicate(timeout=1800) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
        runs[overlap] = json.loads(outs[0][0].strip().splitlines()[-1])
    for d in runs.values():
        print(json.dumps(_summary(d, model=model, where="2 test hosts, 2 Gbit/s")))
    assert runs[True]["losses"] == runs[False]["losses"]
