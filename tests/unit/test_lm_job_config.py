"""The lm job's size on the controller: mlx-lm's own --iters and --batch-size (after `--`) are
the job's steps and global batch where the user gave no boltring value, so the plan, the
progress ("steps n/N") and the ranks agree; and checkpoints are on unless turned off."""

from __future__ import annotations

import dataclasses

import pytest

from boltring.cluster.config import (
    EMBEDDED_SOURCE,
    ConfigError,
    load_config,
    load_config_text,
    with_overrides,
)
from boltring.cluster.config.lm_flags import lm_flag_conflicts, lm_flags
from boltring.cluster.config.schema import DEFAULT_CHECKPOINT_EVERY, JobSpec
from boltring.cluster.config.validate import BUILT_IN_SOURCE
from boltring.cluster.jobs.plan import runner_argv
from boltring.cluster.jobs.record import job_from_record, job_to_dict

LM = ["--model", "m", "--data", "d"]
TWO_RANKS = "nodes: [{name: a, local: true, ranks: 2}]\n"


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./boltring.yaml: boltring's own default config
    config = load_config()
    assert config.source == EMBEDDED_SOURCE == BUILT_IN_SOURCE
    return config


def _argv_value(config, flag: str) -> str:
    argv = runner_argv(config, config.nodes[0], "job", resume=False)
    return argv[argv.index(flag) + 1]


def test_batch_size_sizes_the_job_when_global_batch_is_only_the_embedded_default(embedded):
    # The audit: `--run --example lm --steps 2 -- … --batch-size 4` failed with "fewer than
    # --global-batch 240", the embedded config's charlm value.
    config = with_overrides(embedded, example="lm", args=[*LM, "--batch-size", "4"], steps=2)
    assert (config.job.steps, config.job.global_batch) == (2, 4)
    assert _argv_value(config, "--global-batch") == "4" and _argv_value(config, "--steps") == "2"
    assert lm_flag_conflicts(config.job) == []


def test_iters_is_the_step_count_the_controller_counts(embedded):
    # `--global-batch 4 --example lm -- … --iters 3` ran 300 steps.
    config = with_overrides(embedded, example="lm", args=[*LM, "--iters=3"], global_batch=4)
    assert (config.job.steps, config.job.global_batch) == (3, 4)
    assert _argv_value(config, "--steps") == "3"
    # A later replace (--restarts, --backend, the record on re-attach) keeps it.
    again = dataclasses.replace(config, job=dataclasses.replace(config.job, restarts=1))
    assert again.job.steps == 3
    restored = job_from_record({"job": job_to_dict(config.job)}, embedded.job)
    assert dataclasses.replace(embedded, job=restored).job.steps == 3


def test_a_config_file_without_steps_or_batch_takes_the_flags(tmp_path):
    config = load_config_text(
        TWO_RANKS + "job: {example: lm, args: [--model, m, --data, d, --iters, '5', --batch-size, '6']}\n"
    )
    assert (config.job.steps, config.job.global_batch) == (5, 6)


def test_boltring_values_the_user_gave_win_and_the_conflict_is_said(tmp_path):
    config = load_config_text(
        TWO_RANKS
        + "job: {example: lm, steps: 1000, global_batch: 8, args: [--iters, '3', --batch-size, '4']}\n"
    )
    assert (config.job.steps, config.job.global_batch) == (1000, 8)
    assert lm_flag_conflicts(config.job) == [
        "--steps 1000 (job.steps) wins over mlx-lm's --iters 3 after --: drop one of them to silence this",
        "--global-batch 8 (job.global_batch) wins over mlx-lm's --batch-size 4 after --: drop one of "
        "them to silence this",
    ]
    flags = with_overrides(load_config_text(TWO_RANKS), example="lm", args=["--iters", "3"], steps=7)
    assert flags.job.steps == 7 and len(lm_flag_conflicts(flags.job)) == 1


def test_only_the_lm_example_reads_the_flags(embedded):
    config = with_overrides(embedded, args=["--iters", "3", "--batch-size", "4"])  # charlm
    assert (config.job.steps, config.job.global_batch) == (300, 240)
    assert lm_flag_conflicts(config.job) == []


def test_a_batch_size_that_cannot_run_is_refused_in_one_line(embedded):
    with pytest.raises(ConfigError) as e:
        with_overrides(embedded, example="lm", args=[*LM, "--batch-size", "3"])
    assert str(e.value) == (
        "--example lm: --batch-size 3 after --: the batch over all ranks is not divisible by the "
        "world size 2; a multiple of 2 such as 2 or 4, so every rank gets the same share"
    )
    with pytest.raises(ConfigError, match="--iters 0 after --: 0 is less than 1"):
        with_overrides(embedded, example="lm", args=[*LM, "--iters", "0"])


def test_lm_flags_reads_as_mlx_lm_does():
    assert lm_flags(["--iters", "3", "--batch-size=4", "--iters", "5"]) == {"--iters": 5, "--batch-size": 4}
    assert lm_flags(["--iters", "x", "--batch-size"]) == {}  # the ranks' own check refuses these


def test_checkpoints_are_on_by_default_and_zero_turns_them_off():
    assert JobSpec().checkpoint_every == DEFAULT_CHECKPOINT_EVERY == 100
    config = load_config_text(TWO_RANKS)
    assert _argv_value(config, "--checkpoint-every") == "100"
    off = load_config_text(TWO_RANKS + "job: {checkpoint_every: 0}\n")
    assert _argv_value(off, "--checkpoint-every") == "0"


def test_a_boltring_value_given_equal_to_the_default_still_wins(embedded):
    # `--steps 300` is the embedded default's value, but given on the command line it is the
    # user's: `-- --iters 50` must not replace it silently, and the conflict is said.
    config = with_overrides(embedded, example="lm", args=[*LM, "--iters", "50"], steps=embedded.job.steps)
    assert config.job.steps == embedded.job.steps
    assert any("--iters 50" in line for line in lm_flag_conflicts(config.job))
    batch = with_overrides(embedded, example="lm", args=[*LM, "--batch-size", "4"], global_batch=240)
    assert batch.job.global_batch == 240
    assert any("--batch-size 4" in line for line in lm_flag_conflicts(batch.job))
