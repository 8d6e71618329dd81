"""job.steps_per_eval: an explicit 0 ("no validation") is kept apart from "not set" all the way
from the config file to the lm example's resolved arguments, so mlx-lm's own --steps-per-eval
after `--` can no longer turn validation back on behind a config that said 0."""

from __future__ import annotations

import pytest

from boltring.cluster.config import ConfigError, load_config_text
from boltring.cluster.config.lm_flags import lm_flag_conflicts, lm_flags
from boltring.cluster.config.schema import JobSpec
from boltring.cluster.jobs.plan import runner_argv
from boltring.cluster.train import runner

TWO_RANKS = "nodes: [{name: a, local: true, ranks: 2}]\n"
LM_ARGS = "[--model, m, --data, d, --steps-per-eval, '50']"


def _lm_config(steps_per_eval: str = ""):
    setting = f"steps_per_eval: {steps_per_eval}, " if steps_per_eval else ""
    return load_config_text(TWO_RANKS + f"job: {{example: lm, {setting}args: {LM_ARGS}}}\n")


def _rank_argv(config) -> list[str]:
    """The runner's own arguments in the plan of rank 0 (after `python -m <runner>`)."""
    argv = runner_argv(config, config.nodes[0], "job", resume=False)
    assert argv[1:3] == ["-m", "boltring.cluster.train.runner"]
    return argv[3:]


def _resolved(config, said: list[str]):
    """What the lm example on a rank trains with, from the plan's command line."""
    pytest.importorskip("mlx_lm")
    from boltring.cluster.train.lm_setup import parse_lm_args

    cfg = runner.config_from_args(runner.parse_args(_rank_argv(config)))
    return parse_lm_args(cfg, cfg.args, said.append)


def test_an_explicit_zero_in_the_config_beats_mlx_lms_flag():
    config = _lm_config("0")
    assert config.job.steps_per_eval == 0
    argv = _rank_argv(config)
    cut = argv.index("--")
    assert argv[argv.index("--steps-per-eval") + 1] == "0"
    assert argv.index("--steps-per-eval") < cut  # boltring's flag, before mlx-lm's own
    said: list[str] = []
    assert _resolved(config, said).steps_per_eval == 0  # no validation
    assert said == ["[lm] --steps-per-eval 50 is replaced by boltring's --steps-per-eval 0"]
    assert lm_flag_conflicts(config.job) == [
        "--steps-per-eval 0 (job.steps_per_eval) wins over mlx-lm's --steps-per-eval 50 after --: "
        "drop one of them to silence this"
    ]


def test_not_set_passes_no_flag_and_mlx_lms_own_applies():
    config = _lm_config()
    assert config.job.steps_per_eval is None
    argv = _rank_argv(config)
    assert argv.index("--steps-per-eval") > argv.index("--")  # only mlx-lm's, after --
    said: list[str] = []
    assert _resolved(config, said).steps_per_eval == 50 and said == []
    assert lm_flag_conflicts(config.job) == []


def test_a_value_equal_to_mlx_lms_says_nothing():
    config = _lm_config("50")
    said: list[str] = []
    assert _resolved(config, said).steps_per_eval == 50 and said == []
    assert lm_flag_conflicts(config.job) == []


def test_neither_given_means_no_validation():
    pytest.importorskip("mlx_lm")
    from boltring.cluster.train.lm_setup import parse_lm_args

    ns = runner.parse_args(["--example", "lm", "--", "--model", "m", "--data", "d"])
    assert ns.steps_per_eval is None  # the runner's default: the example's own
    cfg = runner.config_from_args(ns)
    assert parse_lm_args(cfg, cfg.args, print).steps_per_eval == 0  # not mlx-lm's 200


def test_the_schema_default_is_unset_and_a_value_is_still_checked():
    assert JobSpec().steps_per_eval is None
    assert load_config_text(TWO_RANKS).job.steps_per_eval is None
    with pytest.raises(ConfigError, match="steps_per_eval.*-1 is less than 0"):
        load_config_text(TWO_RANKS + "job: {steps_per_eval: -1}\n")
    with pytest.raises(ConfigError, match="steps_per_eval"):
        load_config_text(TWO_RANKS + "job: {steps_per_eval: often}\n")


def test_a_script_gets_an_explicit_zero_and_nothing_when_unset():
    zero = runner.parse_args(["--script", "t.py", "--steps-per-eval", "0"])
    assert runner._script_env(zero)["BOLTRING_STEPS_PER_EVAL"] == "0"
    unset = runner.parse_args(["--script", "t.py"])
    assert "BOLTRING_STEPS_PER_EVAL" not in runner._script_env(unset)


def test_lm_flags_reads_steps_per_eval_as_mlx_lm_does():
    assert lm_flags(["--steps-per-eval=5", "--steps-per-eval", "7"])["--steps-per-eval"] == 7
