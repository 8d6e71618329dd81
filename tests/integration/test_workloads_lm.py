"""Real workloads end to end on local ranks: `--example lm` (mlx-lm fine-tuning of a tiny Llama
built offline here) on both backends, 1 vs 2 ranks, resume, and unmodified mx.distributed
scripts under `--backend mlx-ring` (and the clear refusal under `--backend boltring`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lmkit import lm_controller_config, local_config, run_job, write_dataset, write_model
from tests.procs import kill_rank_once_it_reports

pytest.importorskip("mlx_lm")

MX_SCRIPT = Path(__file__).with_name("mx_only_script.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-llama")
    return write_model(root / "model"), write_dataset(root / "data", train=48, valid=8)


def lm_args(model: Path, data: Path, *extra: str) -> list[str]:
    return ["--example", "lm", "--", "--model", str(model), "--data", str(data), *extra]


def step_losses(events: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if e["event"] == "step"}


@pytest.mark.parametrize("backend", ["boltring", "mlx-ring"])
def test_lm_lora_two_ranks(tiny, tmp_path, no_leftovers, backend):
    model, data = tiny
    config = local_config(tmp_path / "boltring.yaml", 2)
    res, events = run_job(
        config,
        "--backend",
        backend,
        "--steps",
        "12",
        "--global-batch",
        "4",
        "--steps-per-eval",
        "6",
        *lm_args(model, data, "--fine-tune-type", "lora", "--num-layers", "2", "--learning-rate", "1e-2"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    start = next(e for e in events if e["event"] == "start")
    assert start["backend"] == backend and start["job"] == "example lm"
    summary = events[-1]
    assert summary["status"] == "finished" and summary["steps"] == 12
    assert summary["last_loss"] < summary["first_loss"] * 0.95, summary
    assert summary["tokens_per_s"] > 0 and summary["val_loss"] is not None
    assert all(r["tokens_per_s"] > 0 for r in summary["ranks"].values())
    steps = [e for e in events if e["event"] == "step"]
    assert all(r["tokens_per_s"] > 0 for r in steps[-1]["ranks"].values())
    run_dir = no_leftovers / summary["run_dir"].removeprefix("~/")
    for rank in (0, 1):
        lines = (run_dir / f"rank{rank}" / "metrics.jsonl").read_text().splitlines()
        metrics = [json.loads(x) for x in lines if '"kind":"step"' in x]
        assert all(m["tokens_per_s"] > 0 and m["peak_mem_mb"] is not None for m in metrics)
        assert {m["step"] for m in metrics if m.get("val_loss") is not None} == {6, 12}
    # The adapters are where mlx_lm.generate --adapter-path finds them, and load.
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load

    adapters = no_leftovers / ".boltring" / "checkpoints" / "wl" / "lm" / "adapters"  # <config>/<example>
    assert json.loads((adapters / "adapter_config.json").read_text())["fine_tune_type"] == "lora"
    m, _ = load(str(model))
    load_adapters(m, str(adapters))
    # The same job gives the same loss curve on either backend (only the collective differs).
    ref = tmp_path.parent / "lora-curve.json"
    if ref.exists():
        other = {int(k): v for k, v in json.loads(ref.read_text()).items()}
        for step, loss in step_losses(events).items():
            assert loss == pytest.approx(other[step], rel=1e-4), step
    else:
        ref.write_text(json.dumps(step_losses(events)))


def test_full_finetune_one_rank_equals_two_ranks(tiny, tmp_path, no_leftovers):
    """1 rank and 2 ranks follow the same curve; with ring.overlap (the backward pass left to
    average_gradients, bucket by bucket) 2 ranks give the very same bits as without."""
    model, data = tiny
    curves = []
    for ranks, overlap in ((1, False), (2, False), (2, True)):
        name = f"full{ranks}{'o' if overlap else ''}"
        config = local_config(tmp_path / f"{name}.yaml", ranks, name=name, overlap=overlap)
        res, events = run_job(
            config,
            "--steps",
            "6",
            "--global-batch",
            "4",
            *lm_args(
                model, data, "--fine-tune-type", "full", "--num-layers", "-1", "--learning-rate", "1e-3"
            ),
        )
        assert res.returncode == 0, res.stderr[-3000:]
        curves.append(step_losses(events))
        start = json.loads(
            (no_leftovers / events[-1]["run_dir"].removeprefix("~/") / "rank0" / "metrics.jsonl")
            .read_text()
            .splitlines()[0]
        )
        assert start["kind"] == "start" and start["overlap"] is overlap, start
    one, two, two_overlapped = curves
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:
        assert abs(one[step] - two[step]) <= 1e-3 * abs(one[step]), (step, one[step], two[step])
    assert one[6] < one[1]
    assert two_overlapped == two  # each sum is one addition: the order cannot change a bit


def _runner(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "boltring.cluster.train.runner", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_lm_resume_continues_the_same_curve(tiny, tmp_path):
    model, _ = tiny
    # 16 examples / 4 a step: steps 5 and 6 are in the second epoch, and validation passes
    # (every step, 2 batches each) run before it: neither a resume nor a validation pass
    # may change the order of the training batches.
    data = write_dataset(tmp_path / "data", train=16, valid=8)
    common = ["--global-batch", "4", "--steps-per-eval", "1", "--checkpoint-dir", str(tmp_path / "ck")]
    extra = [
        "--",
        "--model",
        str(model),
        "--data",
        str(data),
        "--fine-tune-type",
        "dora",
        "--num-layers",
        "1",
    ]

    def losses(out: str) -> dict[int, float]:
        return {int(s): float(v) for s, v in re.findall(r"step (\d+)/\d+ loss ([0-9.]+)", out)}

    whole = _runner("--example", "lm", "--steps", "6", *common[:4], *extra, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    first = _runner(
        "--example", "lm", "--steps", "3", "--checkpoint-every", "3", *common, *extra, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "ck" / "step-000003.safetensors").is_file()
    rest = _runner("--example", "lm", "--steps", "6", "--resume", *common, *extra, cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert "resumed from step-000003.safetensors: step 3" in rest.stdout
    a, b = losses(whole.stdout), losses(rest.stdout)
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


def test_lm_without_mlx_lm_names_the_package(tmp_path):
    code = (
        "import sys; sys.modules['mlx_lm'] = None\n"
        "from boltring.cluster.train.runner import main\n"
        "sys.exit(main(['--example', 'lm', '--steps', '1', '--', '--model', 'm', '--data', 'd']))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "MissingPackage" in last and "pip install 'boltring[lm]'" in last, last


def test_mx_distributed_script_passes_its_checks_on_three_mlx_ring_ranks(tmp_path, no_leftovers):
    config = local_config(tmp_path / "boltring.yaml", 3)
    res, events = run_job(config, "--backend", "mlx-ring", "--global-batch", "3", "--script", str(MX_SCRIPT))
    assert res.returncode == 0, res.stderr[-3000:]
    passed = [e for e in events if e["event"] == "log" and "mx.distributed checks passed" in e["text"]]
    assert sorted(e["rank"] for e in passed) == [0, 1, 2]
    assert events[-1]["status"] == "finished"


def test_mx_distributed_module_under_boltring_backend_is_a_clear_error(tmp_path, no_leftovers, monkeypatch):
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    (pkg / "mxcheck.py").write_text(MX_SCRIPT.read_text())
    monkeypatch.setenv("PYTHONPATH", str(pkg) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Alone (no job environment), --module runs it like python -m: a 1-rank group passes.
    solo = _runner("--module", "mxcheck", cwd=tmp_path)
    assert solo.returncode == 0 and "rank 0/1: mx.distributed checks passed" in solo.stdout, solo.stderr
    config = local_config(tmp_path / "boltring.yaml", 2)
    res, events = run_job(config, "--backend", "boltring", "--module", "mxcheck", timeout=90)
    assert res.returncode != 0
    summary = events[-1]
    assert summary["status"] == "failed"
    assert "MxDistributedUnderBoltring" in summary["reason"] and "--backend mlx-ring" in summary["reason"]


def test_lm_on_mlx_ring_reattach_and_kill_leave_nothing(tiny, tmp_path, no_leftovers):
    import asyncio

    from boltring.cluster.jobs.controller import JobController
    from boltring.cluster.jobs.events import JobStarted, RankMetrics

    config = lm_controller_config(tmp_path, *tiny, "mlx-ring")

    async def first():
        c = JobController(config, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        job = await c.launch()
        while len({m.rank for m in seen if isinstance(m, RankMetrics)}) < 2:
            await asyncio.sleep(0.1)
        await c.close(kill_running=False)  # the controller quits; the job goes on
        return job, seen

    async def second():
        c = JobController(config, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        assert await c.attach()
        while len([m for m in seen if isinstance(m, RankMetrics) and m.rank == 1]) < 3:
            await asyncio.sleep(0.1)
        await c.kill()
        summary = await asyncio.wait_for(c.wait(), 60)
        await c.close()
        return c, summary, seen

    job, seen1 = asyncio.run(asyncio.wait_for(first(), 120))
    c, summary, seen2 = asyncio.run(asyncio.wait_for(second(), 120))
    starts = [e for e in seen1 + seen2 if isinstance(e, JobStarted)]
    assert [s.backend for s in starts] == ["mlx-ring", "mlx-ring"] and starts[1].attached
    assert c.job_id == job and summary.status == "killed"
    metrics = [m for m in seen2 if isinstance(m, RankMetrics)]
    assert all(m.tokens_per_s and m.tokens_per_s > 0 for m in metrics)
    assert summary.tokens_per_s and summary.tokens_per_s > 0


def test_lm_on_mlx_ring_a_dead_rank_fails_the_job_without_a_hung_rank(tiny, tmp_path, no_leftovers):

    config = lm_controller_config(tmp_path, *tiny, "mlx-ring")

    summary, took = kill_rank_once_it_reports(config, 1, no_leftovers)
    assert summary.status == "failed" and "rank 1" in summary.reason, summary.reason
    assert took < 60
