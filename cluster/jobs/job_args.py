"""The job's arguments after `--`, checked before any rank starts: the runner's own
`--check-args` run here, its refusal as one line (JobArgsRefused: exit 2), and `-- --help`,
which prints the example's options instead of starting ranks. Used by the launch
(launch.py), the dry run and the CLI."""

from __future__ import annotations

import re
import subprocess
import sys

from boltring.cluster.config.schema import Config
from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.errors import ControllerError


class JobArgsRefused(ControllerError):
    """The job's arguments after `--` are ones its example refuses (a mistyped option, one
    boltring cannot honour), found by the runner's own check before any rank starts; or they
    ask for the example's help, which a launch does not print. Nothing was started because of
    what was given: exit 2, for the launch and the dry run alike."""

    title = "bad job arguments"
    nothing_started = True


HELP_WORDS = ("-h", "--help")  # the runner's (runner.HELP_WORDS), without importing MLX here


def asks_for_help(config: Config) -> bool:
    """The job runs a built-in example and its arguments after `--` ask for its options."""
    job = config.job
    return not (job.script or job.module) and any(a in HELP_WORDS for a in job.args)


def help_command(config: Config) -> str:
    """The command that prints the job's example's options."""
    return f"`boltring --run --example {config.job.example or 'mlp'} -- --help`"


def job_args_check_argv(config: Config) -> list[str] | None:
    """The runner's --check-args for this job, run here with this Python; None when there is
    nothing to check (no arguments, or a script or module, whose arguments are its own)."""
    job = config.job
    if job.script or job.module or not job.args:
        return None
    argv = launcher.runner_check_argv(config, config.nodes[0], "--check-args")
    return [sys.executable, *argv[1:]]


def job_args_refusal(config: Config, returncode: int, stderr: str) -> JobArgsRefused | None:
    """The check's answer as one line: None when it passed."""
    if not returncode:
        return None
    lines = [x for x in stderr.splitlines() if x.strip()]
    # "boltring-train: error: unknown argument(s) …": the runner's prefix says nothing here
    said = re.sub(r"^[^:]*: error: ", "", (lines or [f"(no message, exit code {returncode})"])[-1])
    return JobArgsRefused(
        f"the job's arguments after `--` are wrong: {said}",
        hint=f"{help_command(config)} lists the example's options",
    )


def example_help(config: Config) -> str | None:
    """The example's options, as `-- --help` after it asks for them (the runner's --check-args
    prints them; no rank starts); None when the job's arguments do not ask. JobArgsRefused
    when they cannot be shown (the lm example without mlx-lm on this machine)."""
    argv = job_args_check_argv(config)
    if argv is None or not asks_for_help(config):
        return None
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    refused = job_args_refusal(config, proc.returncode, proc.stderr)
    if refused:
        raise refused
    return proc.stdout


def check_job_args_now(config: Config) -> None:
    """The launch's argument check (LaunchMixin.check_job_args), for a caller without an event
    loop: the dry run refuses what the launch would refuse. Raises JobArgsRefused."""
    if asks_for_help(config):
        raise help_refusal(config)
    argv = job_args_check_argv(config)
    if argv is None:
        return
    proc = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    refused = job_args_refusal(config, proc.returncode, proc.stderr)
    if refused:
        raise refused


def help_refusal(config: Config) -> JobArgsRefused:
    """A launch whose arguments ask for the example's help: every rank would print it into its
    log and the job would "finish" at step 0. The CLI prints it instead (example_help)."""
    words = " ".join(a for a in config.job.args if a in HELP_WORDS)
    return JobArgsRefused(
        f"`{words}` after `--` asks for the example's options, and a launch does not print them: "
        f"{help_command(config)} does, and starts nothing"
    )
