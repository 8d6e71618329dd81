"""A full disk (a small tmpfs mounted for the test, as root): every write failure is one clear
error naming the file and "No space left on device", the job stops cleanly, --run returns."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.fixtures import skip_unless_ci
from tests.procs import exit_after, start_cli, wait_for_step

from .helpers import CLI, events, write_config


@pytest.fixture
def small_disk(no_leftovers) -> Iterator[Path]:
    """HOME (and so BOLTRING_HOME, runs and checkpoints) on a 24 MB tmpfs mounted over it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        skip_unless_ci("the full-disk tests need root to mount a small tmpfs")
    mnt = no_leftovers
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> None:
    """Fill the file system to the last byte."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_no_room_for_the_job_record_starts_nothing(small_disk):
    no_leftovers = small_disk
    (no_leftovers / ".boltring" / "jobs").mkdir(parents=True)
    fill(small_disk)
    res = subprocess.run(
        [*CLI, "--run", "--skip-checks", "--example", "mlp", "--steps", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    lines = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    assert len(lines) == 1, lines
    assert "No space left on device" in lines[0] and "/.boltring/jobs/" in lines[0], lines
    assert not (no_leftovers / ".boltring" / "runs").exists()  # no rank was started


def test_disk_full_during_a_run_fails_the_job_naming_the_file(small_disk, tmp_path):
    cfg = write_config(tmp_path, ranks=2, job="steps: 1000000")  # outside the small disk
    proc = start_cli("--run", "--json", "--skip-checks", "--config", str(cfg))
    try:
        wait_for_step(proc, 1)
        out, err, took = exit_after(proc, lambda: fill(small_disk), timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-2000:]
    evs = events(out)
    summary = evs[-1]
    assert summary["event"] == "summary" and summary["status"] == "failed", summary
    assert "No space left on device" in summary["reason"], summary["reason"]
    # Whichever write comes first names its file: a metrics line or a log line, or on a fast
    # machine the checkpoint of step 100 (seen once: 144 steps/s). A checkpoint leaves no part.
    named = [f for f in ("metrics.jsonl", "rank.log", ".safetensors") if f in summary["reason"]]
    assert named, summary["reason"]
    checkpoints = small_disk / ".boltring" / "checkpoints"
    assert not [p.name for p in checkpoints.rglob("*.tmp")], "a checkpoint was left half written"
    record_errors = [e for e in evs if e["event"] == "error" and "job record" in e.get("text", "")]
    assert all("No space left on device" in e["text"] for e in record_errors), record_errors
    print(f"\nMEASURED disk full → job failed and --run returned after {took:.1f} s: {summary['reason']}")


def test_a_checkpoint_that_does_not_fit_names_its_file_and_leaves_no_part(small_disk, solo):
    from boltring.cluster.train import checkpoint, loop, mlp

    cfg = loop.TrainConfig(steps=1, global_batch=8)
    task = mlp.make_task(cfg)
    loop.train(solo, cfg, task, log=lambda m: None)
    ck = small_disk / "ck"
    checkpoint.save(ck, task, step=1, samples_seen=8, seed=0, global_batch=8)
    fill(small_disk)
    with pytest.raises(OSError) as err:
        checkpoint.save(ck, task, step=2, samples_seen=16, seed=0, global_batch=8)
    assert "No space left on device" in str(err.value) and "step-000002.safetensors" in str(err.value)
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-000001.safetensors"]  # no part
    assert checkpoint.latest_path(ck) == ck / "step-000001.safetensors"
