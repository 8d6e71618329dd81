"""The `boltring` command: the Textual app by default, `--run` headless, and subcommands.

Only argument parsing and dispatch live here; the work is in boltring.cluster (control
plane), and the two views (tui.app and tui.headless) only watch its controller.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .cli_parser import main_parser, split_passthrough, subcommand_options
from .console import say_error

NOT_STARTED = 2  # exit code: nothing started, because of what was given (README, exit codes)


class Refused(Exception):
    """A bad option value or config: one line (each of its lines a problem), exit NOT_STARTED.

    Before, these exited 1, the code of a job that ran and failed, so a script could not tell
    a typo from a crashed rank; argparse's own errors and failed checks were already 2."""


def _read_config(path: str | None):
    """The config as written (--config, ./boltring.yaml or the embedded default), saying what
    was mapped from another tool's format; a bad file is one line per problem and exit."""
    from boltring.cluster.config import ConfigError, load_config_with_report

    try:
        config, report = load_config_with_report(path)
    except ConfigError as e:
        raise Refused(str(e)) from None
    if report is not None:
        print(f"boltring: read {config.source} as {report.source_format}:", file=sys.stderr)
        for line in report.mapped:
            print(f"  mapped  {line}", file=sys.stderr)
        for line in report.ignored:
            print(f"  ignored {line}", file=sys.stderr)
    return config


def _load(args, ranks=None):
    from boltring.cluster.config import ConfigError, with_overrides

    config = _read_config(args.config)
    try:
        if (
            ranks is not None
            or any(
                getattr(args, k, None) is not None
                for k in ("example", "script", "steps", "seed", "global_batch")
            )
            or getattr(args, "script_args", None)
        ):
            config = with_overrides(
                config,
                ranks=ranks,
                example=getattr(args, "example", None),
                script=getattr(args, "script", None),
                args=getattr(args, "script_args", None) or None,
                steps=getattr(args, "steps", None),
                seed=getattr(args, "seed", None),
                global_batch=getattr(args, "global_batch", None),
            )
        restarts = getattr(args, "restarts", None)
        if restarts is not None:
            if restarts < 0:
                raise Refused(f"--restarts {restarts}: give 0 or more restarts")
            import dataclasses

            config = dataclasses.replace(config, job=dataclasses.replace(config.job, restarts=restarts))
        return _with_workload(config, args)
    except ConfigError as e:
        raise Refused(str(e)) from None


def _with_workload(config, args):
    """--backend, --module, --rdma-devices and --steps-per-eval applied to the config, then the
    launch plan built once so that a backend that cannot start says why before anything runs."""
    import dataclasses

    from boltring.cluster.config.lm_flags import lm_flag_conflicts
    from boltring.cluster.jobs.plan import PlanError, plan_job, read_rdma_devices

    ring, job = config.ring, config.job
    if getattr(args, "backend", None):
        ring = dataclasses.replace(ring, backend=args.backend)
    if getattr(args, "rdma_devices", None):
        if ring.backend != "jaccl":  # read by nothing else: taken silently, it looked in effect
            raise Refused(
                f"--rdma-devices is read by the jaccl backend only, and this job runs {ring.backend}: "
                "add --backend jaccl (or set ring.backend: jaccl), or drop --rdma-devices"
            )
        path = Path(args.rdma_devices).expanduser()
        try:
            text = path.read_text()
        except OSError as e:
            raise Refused(f"--rdma-devices {path}: {e.strerror}") from None
        try:
            matrix = read_rdma_devices(text, len(config.nodes), source=str(path))
        except PlanError as e:
            raise Refused(f"{e}" + (f" ({e.hint})" if e.hint else "")) from None
        ring = dataclasses.replace(ring, rdma_devices=matrix)
    if getattr(args, "module", None):
        job = dataclasses.replace(job, module=args.module, example=None, script=None)
    elif getattr(args, "example", None) or getattr(args, "script", None):
        job = dataclasses.replace(job, module=None)
    if getattr(args, "steps_per_eval", None) is not None:
        if args.steps_per_eval < 0:
            raise Refused("--steps-per-eval must be 0 or more")
        if job.example and job.example != "lm":  # a script or module reads BOLTRING_STEPS_PER_EVAL
            raise Refused(
                f"--steps-per-eval is read by the lm example (and scripts), and the {job.example} "
                "example has no validation loss: drop --steps-per-eval"
            )
        job = dataclasses.replace(job, steps_per_eval=args.steps_per_eval)
    config = dataclasses.replace(config, ring=ring, job=job)
    # The job's own checks, for the job command only: every subcommand's namespace carries the
    # main parser's defaults too, and `status` or `check` must not refuse a config for its job.
    if getattr(args, "command", None) is None:
        if job.example == "lm" and not job.script and not job.module:
            _check_lm_args(job.args)
            for line in lm_flag_conflicts(job):  # which of two given values wins, before it starts
                print(f"boltring: {line}", file=sys.stderr)
        try:  # the plan for the chosen backend, now: what cannot start says why before anything runs
            plan_job(config, "plan-check")
        except PlanError as e:
            raise Refused(f"{e}" + (f" ({e.hint})" if e.hint else "")) from None
    return config


def _check_lm_args(words) -> None:
    """--example lm needs a model and data; say so here rather than from every rank."""
    words = list(words)
    given = {w.split("=", 1)[0] for w in words}
    if given & {"-c", "--config", "-h", "--help"}:
        return  # mlx-lm's YAML config may name them; the ranks check. `-- --help`: _job prints it
    missing = [flag for flag in ("--model", "--data") if flag not in given]
    if missing:
        raise Refused(
            f"--example lm needs {' and '.join(missing)} after --, e.g. "
            "`boltring --run --example lm -- --model mlx-community/Qwen3-0.6B-4bit --data ./data`"
        )


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(list(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()  # output a closed pipe refused fails here, not at interpreter exit
    except BrokenPipeError:
        # `boltring runs --json | head -3`: the reader has gone, which is not an error of ours.
        # As the Python docs advise (signal module, "Note on SIGPIPE"): point stdout at devnull
        # so the exit does not fail flushing it again, and exit quietly with SIGPIPE's code, as
        # `--run` does (headless.OUTPUT_CLOSED_EXIT).
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: list[str]) -> int:
    argv, script_args = split_passthrough(argv)
    parser = main_parser()
    parser.words = argv
    args = parser.parse_args(argv)
    if args.command is not None:
        if script_args:
            parser.error(f"`--` passes arguments to a training job; `boltring {args.command}` takes none")
        job_options = _job_options_before(argv, args.command)
        own = subcommand_options(parser, args.command)
        if job_options and all(w in own for w in job_options):  # `--json status`: the right option, too early
            cmd = f"boltring {args.command} {' '.join(job_options)}"
            parser.error(f"{', '.join(job_options)} goes after the subcommand: `{cmd}`")
        if job_options:
            what = "is an option" if len(job_options) == 1 else "are options"
            parser.error(
                f"{', '.join(job_options)} {what} of a job (`boltring --run …`), not of `boltring "
                f"{args.command}`; its own options go after it (`boltring {args.command} --help`)"
            )
        configs = _configs_given(argv)
        if len(set(configs)) > 1:  # argparse keeps the last, silently: the other looked in use
            parser.error(f"--config is given twice ({', '.join(configs)}): give one")
    elif args.json and not (args.run or args.dry_run):
        parser.error("--json prints the events of a headless run or a dry run: add --run or --dry-run")
    try:
        return _sub(args.command, args) if args.command is not None else _job(args, script_args)
    except Refused as e:
        # scripts read the reason where they read events
        say_error(str(e), json_event=args.command is None and args.json)
        return NOT_STARTED


def _configs_given(argv: list[str]) -> list[str]:
    """Every value of -c/--config on the command line, in order."""
    out = []
    for i, w in enumerate(argv):
        if w in ("-c", "--config") and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif w.startswith("--config="):
            out.append(w.split("=", 1)[1])
        elif w.startswith("-c") and len(w) > 2 and not w.startswith("--"):
            out.append(w[2:])
    return out


def _job_options_before(argv: list[str], command: str) -> list[str]:
    """The job's options written before a subcommand (`boltring --dry-run kill`): argparse
    takes them, then lets the subcommand's defaults overwrite or ignore them, so `--dry-run
    kill` really killed and `--json check` printed a table. Only --config is shared."""
    before = argv[: argv.index(command)] if command in argv else []
    words = [w.split("=", 1)[0] for w in before if w.startswith("-")]
    return [w for w in words if w not in ("-c", "--config")]


def _job(args, script_args: list[str]) -> int:
    """`boltring` (the app), `boltring --run` and `boltring --dry-run`."""
    args.script_args = script_args
    if args.script:
        args.script = str(Path(args.script).resolve())
    config = _load(args, ranks=args.ranks)
    from boltring.cluster.jobs.job_args import JobArgsRefused, example_help

    try:  # `-- --help` after an example: its options, here, and nothing starts
        shown = example_help(config)
    except JobArgsRefused as e:
        raise Refused(str(e)) from None
    if shown is not None:
        print(shown, end="" if shown.endswith("\n") else "\n")
        return 0

    from boltring.cluster.jobs.controller import JobController

    controller = JobController(config)
    if args.dry_run:
        from .dry_run import print_plan

        return print_plan(controller, args.resume, json_out=args.json, skip_checks=args.skip_checks)
    if args.run:
        from .headless import run_headless

        return asyncio.run(
            run_headless(controller, json_out=args.json, resume=args.resume, skip_checks=args.skip_checks)
        )
    if not sys.stdout.isatty():
        raise Refused("the app needs a terminal; use `boltring --run` for headless runs")
    from .app import run_app

    return run_app(controller)


def _history_config(args) -> str | None:
    """`runs` and `export` with --config: that config's source, as its job records name it, so
    both look among its jobs only; a bad path is the usual one-line config error. None: all jobs."""
    return _load(args).source if getattr(args, "config", None) else None


def _sub(name: str, args) -> int:
    if name == "bench":
        from .bench_view import run_bench_cli

        if args.repeat < 1:  # one line, not a traceback from a median of nothing
            print(f"boltring bench: --repeat {args.repeat}: give at least 1 timed repeat", file=sys.stderr)
            return 2
        return run_bench_cli(args, _read_config(args.config) if args.cluster else None)
    if name == "runs":
        from .runs_view import print_runs

        return print_runs(json_out=args.json, limit=args.limit, config=_history_config(args))
    if name == "export":
        if not (args.csv or args.tensorboard or args.svg):
            raise Refused("say what to write: --csv FILE, --tensorboard DIR or --svg FILE")
        from .runs_view import export_run

        return export_run(
            args.run, csv=args.csv, tensorboard=args.tensorboard, svg=args.svg, config=_history_config(args)
        )
    config = _load(args)
    if name == "hostfile":
        from boltring.cluster.agent.spawn import write_atomic
        from boltring.cluster.config import write_mlx_hostfile

        text = write_mlx_hostfile(config)
        if args.output:
            try:
                write_atomic(Path(args.output), text + ("\n" if not text.endswith("\n") else ""))
            except OSError as e:
                raise SystemExit(
                    f"boltring: cannot write {args.output}: {e.strerror}; "
                    "give -o a file in an existing, writable directory"
                ) from None
            print(f"boltring: wrote {args.output} ({config.world_size} ranks)", file=sys.stderr)
        else:
            print(text)
        return 0
    if name == "setup":
        from .setup_view import setup_main

        return setup_main(config, args.node, args.wheelhouse, args.download_wheelhouse)
    from boltring.cluster.jobs.controller import JobController

    controller = JobController(config)
    if name == "check":
        from .check_view import run_check

        return asyncio.run(run_check(controller, json_out=args.json, bandwidth=not args.no_bandwidth))
    if name == "status":
        from .status_and_kill import run_status

        return asyncio.run(run_status(controller, follow=args.follow, json_out=args.json))
    from .status_and_kill import run_kill

    return asyncio.run(run_kill(controller))


if __name__ == "__main__":
    sys.exit(main())
