"""The arguments after `--` are checked by the runner's own parsers before any rank starts, for
the launch and the dry run alike: a mistyped option or one boltring cannot honour is one line and
exit 2 (nothing started because of what was given), and `-- --help` after an example prints its
options instead of starting ranks that print them into their logs."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from boltring.cluster.config.load import load_config_text
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.job_args import JobArgsRefused, check_job_args_now, example_help
from boltring.cluster.train import runner
from tests.procs import cli_in

LOCAL = (
    "name: t\nnodes: [{name: a, local: true, ring_ip: 127.0.0.1, ranks: 2}]\njob: {example: mlp, steps: 2}\n"
)


def with_job(**job):
    config = load_config_text(LOCAL)
    return dataclasses.replace(config, job=dataclasses.replace(config.job, **job))


# --- the runner's check -------------------------------------------------------------------------


def test_the_runners_check_prints_the_examples_options_for_help(capsys):
    for words in (["--help"], ["-h"], ["--hidden", "8", "--help"]):
        assert runner.main(["--example", "mlp", "--check-args", "--", *words]) == 0
        out, err = capsys.readouterr()
        assert out.startswith("usage: --example mlp --") and "--hidden" in out, out
        assert err == ""


def test_the_runners_check_refuses_what_the_lm_loop_refuses(capsys):
    words = ["--model", "m", "--data", "d", "--grad-accumulation-steps", "2"]
    assert runner.main(["--example", "lm", "--check-args", "--", *words]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("boltring-train: error: --grad-accumulation-steps is not supported"), line
    assert runner.main(["--example", "lm", "--check-args", "--", "--model", "m", "--data", "d"]) == 0


# --- the controller's side ----------------------------------------------------------------------


def test_example_help_is_asked_for_only_by_help_words_after_an_example():
    assert example_help(with_job(args=("--hidden", "8"))) is None
    assert example_help(with_job(script="train.py", example=None, args=("--help",))) is None
    text = example_help(with_job(example="charlm", args=("--help",)))
    assert text is not None and text.startswith("usage: --example charlm --"), text


def test_the_dry_runs_check_is_the_launchs():
    config = with_job(args=("--bogus",))
    with pytest.raises(JobArgsRefused) as dry:
        check_job_args_now(config)
    with pytest.raises(JobArgsRefused) as launch:
        asyncio.run(JobController(config).check_job_args())
    assert str(dry.value) == str(launch.value)
    assert str(dry.value).startswith(
        "the job's arguments after `--` are wrong: unknown argument(s) for this example: --bogus"
    ), dry.value
    assert dry.value.nothing_started  # the views exit 2
    check_job_args_now(with_job(args=("--hidden", "8")))  # good arguments pass


def test_a_launch_whose_arguments_ask_for_help_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BOLTRING_HOME", str(tmp_path / ".boltring"))
    controller = JobController(with_job(args=("--help",)))
    with pytest.raises(JobArgsRefused, match=r"`--help` after `--` asks for the example's options"):
        asyncio.run(controller.launch())
    assert not (tmp_path / ".boltring" / "runs").exists()


# --- the CLI: one line, exit 2, for the launch and the dry run ----------------------------------


def test_a_mistyped_option_after_dashdash_is_exit_2_for_the_run_and_the_dry_run(tmp_path):
    run = cli_in(tmp_path, "--run", "--skip-checks", "--example", "mlp", "--", "--bogus")
    dry = cli_in(tmp_path, "--dry-run", "--example", "mlp", "--", "--bogus")
    assert run.returncode == dry.returncode == 2, (run.stdout, run.stderr, dry.stdout, dry.stderr)
    said = [x for x in (run.stdout + run.stderr).splitlines() if x.strip()]
    assert len(said) == 1 and "launch failed" not in said[0], said
    prefix = "boltring: the job's arguments after `--` are wrong: unknown argument(s)"
    assert said[0].startswith(prefix), said
    # the same line on the same stream for both: stderr, nothing on stdout
    assert run.stdout == dry.stdout == "" and dry.stderr.strip() == run.stderr.strip() == said[0]
    assert not (tmp_path / ".boltring" / "runs").exists()  # no rank started, no job record


def test_an_lm_option_boltring_cannot_honour_is_refused_before_any_rank(tmp_path):
    words = ["--model", "m", "--data", "d", "--grad-accumulation-steps", "2"]
    res = cli_in(tmp_path, "--run", "--skip-checks", "--example", "lm", "--", *words)
    assert res.returncode == 2, (res.stdout, res.stderr)
    (line,) = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    assert "--grad-accumulation-steps is not supported" in line, line
    assert not (tmp_path / ".boltring" / "runs").exists()


def test_dry_run_help_prints_the_examples_options_and_no_plan(tmp_path):
    res = cli_in(tmp_path, "--dry-run", "--example", "mlp", "--", "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: --example mlp --") and "# boltring dry run" not in res.stdout


def test_without_mlx_lm_here_the_lm_arguments_are_left_to_the_ranks_but_help_says_why(tmp_path):
    """The laptop may lack mlx-lm while the nodes have it: the check passes the arguments on
    (the ranks check them there); only the help, which needs mlx-lm's parser, is refused."""
    import subprocess
    import sys

    def check(*words: str) -> subprocess.CompletedProcess:
        code = (
            "import sys; sys.modules['mlx_lm'] = None\n"
            "from boltring.cluster.train.runner import main\n"
            f"sys.exit(main(['--example', 'lm', '--check-args', '--', *{list(words)!r}]))"
        )
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert check("--model", "m", "--data", "d").returncode == 0
    helped = check("--help")
    assert helped.returncode == 2 and "needs the mlx-lm package" in helped.stderr, helped.stderr
