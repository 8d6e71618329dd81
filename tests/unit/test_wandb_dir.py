"""Rank 0's W&B files go into the rank's run directory (BOLTRING_RUN_DIR, where its log and
metrics are), not into ./wandb of the launch folder the rank runs in; a WANDB_DIR the user
set still wins. Real wandb, offline (WANDB_MODE=offline: no network, no account)."""

from __future__ import annotations

import pytest

from boltring.cluster.train.wandb_hook import ENV, WandbHook, wandb_dir
from boltring.netio.jobenv import RUN_DIR


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """A rank as spawn starts it: cwd the launch folder, BOLTRING_RUN_DIR its run directory."""
    launch, run_dir = tmp_path / "launch", tmp_path / "runs" / "job-h1" / "rank0"
    launch.mkdir()
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(launch)
    monkeypatch.setenv(ENV, "boltring-tests")
    monkeypatch.setenv(RUN_DIR, str(run_dir))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    return launch, run_dir


def _log_one_run(job_id: str) -> None:
    pytest.importorskip("wandb")
    hook = WandbHook.start(0, job_id, {"steps": 1}, print)
    assert hook is not None
    hook.log({"kind": "step", "rank": 0, "wall": 1.0, "step": 1, "loss": 0.5})
    hook.finish()


def test_rank_0_writes_wandb_files_in_its_run_directory(offline):
    launch, run_dir = offline
    _log_one_run("job-h1")
    assert list(run_dir.glob("wandb/offline-run-*job-h1/run-job-h1.wandb"))
    assert list(launch.iterdir()) == []  # nothing left in the user's folder


def test_wandb_dir_set_by_the_user_still_wins(offline, monkeypatch, tmp_path):
    launch, run_dir = offline
    mine = tmp_path / "mine"
    mine.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(mine))
    _log_one_run("job-h1b")
    assert list(mine.glob("wandb/offline-run-*job-h1b/run-job-h1b.wandb"))
    assert not (run_dir / "wandb").exists() and list(launch.iterdir()) == []


def test_the_directory_chosen_for_each_case():
    assert wandb_dir({RUN_DIR: "/r/rank0"}) == "/r/rank0"
    assert wandb_dir({RUN_DIR: "/r/rank0", "WANDB_DIR": "/mine"}) is None  # wandb reads it itself
    assert wandb_dir({}) is None  # a rank started by hand: wandb's own default, ./wandb
