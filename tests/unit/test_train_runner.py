"""The worker entry point, run as a real process: CLI, examples, user scripts, errors, SIGTERM,
and a 2-rank resume where only rank 0 has the checkpoint (real netio ring on loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from boltring.cluster.train import checkpoint

RUNNER = [sys.executable, "-m", "boltring.cluster.train.runner"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTRING_")}
    env.update(extra)
    return env


def run(args, cwd, timeout=180, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RUNNER, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env(**env)
    )


def steps_of(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if '"kind":"step"' in line]


def test_help(tmp_path):
    res = run(["--help"], tmp_path)
    assert res.returncode == 0
    for word in (
        "--example",
        "--script",
        "--steps",
        "--seed",
        "--global-batch",
        "--lr",
        "--checkpoint-every",
        "--checkpoint-dir",
        "--resume",
        "--log-every",
        "--data",
        "mlp",
        "charlm",
    ):
        assert word in res.stdout, word
    res = run(["--example", "charlm", "--", "--help"], tmp_path)
    assert res.returncode == 0 and "--context" in res.stdout and "--layers" in res.stdout


def test_bad_command_line_exits_2(tmp_path):
    res = run(["--steps", "3"], tmp_path)
    assert res.returncode == 2 and "--example" in res.stderr
    res = run(["--example", "mlp", "--script", "x.py"], tmp_path)
    assert res.returncode == 2
    res = run(["--example", "mlp", "stray"], tmp_path)
    assert res.returncode == 2 and "after '--'" in res.stderr


def test_example_runs_reports_and_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    res = run(
        [
            "--example",
            "mlp",
            "--steps",
            "20",
            "--global-batch",
            "64",
            "--log-every",
            "5",
            "--checkpoint-every",
            "10",
            "--checkpoint-dir",
            str(ck),
        ],
        tmp_path,
        BOLTRING_RUN_DIR=str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    steps = steps_of(tmp_path)
    assert [s["step"] for s in steps] == [1, 5, 10, 15, 20]  # the first step too: where the loss began
    assert all(s["samples"] == 64 and s["loss"] > 0 for s in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert "step 20/20" in res.stdout and "train accuracy" in res.stdout
    assert [p.name for p in checkpoint.list_checkpoints(ck)] == [
        "step-000010.safetensors",
        "step-000020.safetensors",
    ]


def test_error_is_one_line_after_the_traceback_and_exit_1(tmp_path):
    res = run(["--example", "charlm", "--data", str(tmp_path / "missing.txt"), "--steps", "2"], tmp_path)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("boltring-train: error: FileNotFoundError: data file not found"), res.stderr
    assert "Traceback" in res.stderr
    res = run(["--example", "mlp", "--global-batch", "0"], tmp_path)
    assert res.returncode == 1 and "--global-batch must be >= 1" in res.stderr.splitlines()[-1]


def test_user_script_runs_as_main_with_its_args_and_can_report(tmp_path):
    script = tmp_path / "proj" / "train.py"
    script.parent.mkdir()
    (script.parent / "helper.py").write_text("VALUE = 41\n")
    script.write_text(
        textwrap.dedent("""
        import json, os, sys
        import helper  # the script's own directory is importable, as with `python train.py`
        from boltring.netio import init
        assert __name__ == "__main__"
        with init() as group:
            total = group.all_sum(__import__("numpy").array([helper.VALUE + 1.0], dtype="float32"))
            group.report(step=1, loss=0.5, samples=4)
            print(json.dumps({"argv": sys.argv, "rank": group.rank, "size": group.size,
                              "sum": float(total[0]), "steps": os.environ.get("BOLTRING_STEPS"),
                              "resume": os.environ.get("BOLTRING_RESUME")}))
    """)
    )
    run_dir = tmp_path / "run"
    res = run(
        ["--script", str(script), "--steps", "7", "--resume", "--", "--epochs", "3"],
        tmp_path,
        BOLTRING_RUN_DIR=str(run_dir),
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {
        "argv": [str(script), "--epochs", "3"],
        "rank": 0,
        "size": 1,
        "sum": 42.0,
        "steps": "7",
        "resume": "1",
    }
    assert steps_of(run_dir)[0]["loss"] == 0.5


@pytest.mark.parametrize(
    "body,code,last",
    [
        ("raise ValueError('bad\\nthing')", 1, "boltring-train: error: ValueError: bad thing"),
        ("import sys; sys.exit(3)", 3, None),
        ("import sys; sys.exit(0)", 0, None),
    ],
)
def test_user_script_failures(tmp_path, body, code, last):
    script = tmp_path / "s.py"
    script.write_text(body + "\n")
    res = run(["--script", str(script)], tmp_path)
    assert res.returncode == code, res.stderr
    if last:
        assert res.stderr.strip().splitlines()[-1] == last
    res = run(["--script", str(tmp_path / "nope.py")], tmp_path)
    assert res.returncode == 1 and "script not found" in res.stderr


def test_sigterm_exits_promptly_and_leaves_only_complete_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    proc = subprocess.Popen(
        [
            *RUNNER,
            "--example",
            "mlp",
            "--steps",
            "1000000",
            "--global-batch",
            "32",
            "--checkpoint-every",
            "1",
            "--checkpoint-dir",
            str(ck),
            "--log-every",
            "50",
            "--keep-checkpoints",
            "0",  # keep every checkpoint: the test waits for five
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(BOLTRING_RUN_DIR=str(tmp_path)),
    )
    try:
        deadline = time.monotonic() + 120
        while len(checkpoint.list_checkpoints(ck)) < 5:  # checkpoints are being written all the time
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert took < 10
    assert err.strip().splitlines()[-1] == "boltring-train: stopped by SIGTERM"
    assert not [p for p in ck.iterdir() if p.name.endswith(".tmp")]
    latest = checkpoint.latest_path(ck)
    assert latest is not None and (ck / "latest").read_text().strip() == latest.name
    for p in checkpoint.list_checkpoints(ck)[-3:]:
        checkpoint.load_file(p)  # complete and readable
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "end"  # the group was closed on the way out


def _ring_env(tmp_path: Path, size: int) -> list[dict[str, str]]:
    from tests.netio.ranks import free_ports, write_secret

    tmp_path.mkdir(parents=True, exist_ok=True)
    ports = free_ports(size)
    secret = write_secret(tmp_path / "job.secret")
    ring = json.dumps([f"127.0.0.1:{p}" for p in ports])
    return [
        _env(
            BOLTRING_RANK=str(r),
            BOLTRING_WORLD_SIZE=str(size),
            BOLTRING_JOB_ID="train-test",
            BOLTRING_RING=ring,
            BOLTRING_SECRET_FILE=str(secret),
            BOLTRING_TIMEOUT="30",
            BOLTRING_CONNECT_TIMEOUT="30",
            BOLTRING_RUN_DIR=str(tmp_path / f"rank{r}"),
        )
        for r in range(size)
    ]


def _run_ranks(tmp_path: Path, args_for, size: int) -> list[subprocess.CompletedProcess]:
    envs = _ring_env(tmp_path, size)
    procs = []
    try:
        for r in range(size):
            run_dir = Path(envs[r]["BOLTRING_RUN_DIR"])
            run_dir.mkdir(parents=True, exist_ok=True)
            procs.append(
                subprocess.Popen(
                    [*RUNNER, *args_for(r)],
                    cwd=run_dir,
                    env=envs[r],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        out = []
        for p in procs:
            o, e = p.communicate(timeout=180)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_ranks_resume_from_rank0_checkpoint_and_match_one_rank(tmp_path):
    """Rank 1 has no checkpoint directory at all: it gets the state from rank 0 over the ring."""
    common = ["--example", "mlp", "--seed", "4", "--global-batch", "64"]
    solo = run([*common, "--steps", "16"], tmp_path, BOLTRING_RUN_DIR=str(tmp_path / "solo"))
    assert solo.returncode == 0, solo.stderr
    reference = {s["step"]: s["loss"] for s in steps_of(tmp_path / "solo")}

    def first(r):
        return [
            *common,
            "--steps",
            "8",
            "--checkpoint-every",
            "8",
            "--checkpoint-dir",
            str(tmp_path / f"ck{r}"),
        ]

    def second(r):
        return [*common, "--steps", "16", "--resume", "--checkpoint-dir", str(tmp_path / f"ck{r}")]

    a = tmp_path / "a"
    res = _run_ranks(a, first, 2)
    assert [p.returncode for p in res] == [0, 0], [p.stderr[-3000:] for p in res]
    assert checkpoint.latest_path(tmp_path / "ck0").name == "step-000008.safetensors"
    assert not (tmp_path / "ck1").exists()  # only rank 0 writes

    b = tmp_path / "b"
    res = _run_ranks(b, second, 2)
    assert [p.returncode for p in res] == [0, 0], [p.stderr[-3000:] for p in res]
    assert "resumed from step-000008.safetensors" in res[0].stdout
    assert "resumed from rank 0: step 8" in res[1].stdout
    curves = [{s["step"]: s["loss"] for s in steps_of(b / f"rank{r}")} for r in range(2)]
    assert sorted(curves[0]) == list(range(9, 17))
    assert curves[0] == curves[1]  # every rank reports the same global loss, bitwise
    for step, loss in curves[0].items():
        assert abs(loss - reference[step]) <= 1e-4 * max(1.0, reference[step]), (step, loss, reference[step])
