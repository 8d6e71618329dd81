"""The `boltring` command: the Textual app by default, `--run` headless, and subcommands.

Only argument parsing and dispatch live here; the work is in boltring.cluster (control
plane), and the two views (tui.app and tui.headless) only watch its controller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from boltring.cluster.config.schema import EXAMPLES

DESCRIPTION = """\
Train one MLX model data-parallel across Thunderbolt-wired Macs (or N local ranks).

  boltring                      open the terminal app on the config (keys: l launch, k kill, q quit)
  boltring --run                run the job headless: progress, summary, exit code
  boltring check                check every node: SSH, python/mlx, Thunderbolt interface, routes, bandwidth
  boltring bench                allreduce benchmark: boltring's ring vs MLX's own ring backend
  boltring status | kill        follow or stop a job left running
  boltring hostfile             write the MLX hostfile (mlx.launch --hostfile) for this cluster

The config is --config FILE, else ./boltring.yaml, else the embedded local default
(2 ranks on loopback). It may also be an MLX hostfile, a smolcluster cluster_config.yaml or
a jupiter cluster.yaml: boltring reports what it mapped and ignored.
"""


def config_parent(*, in_subcommand: bool = False) -> argparse.ArgumentParser:
    """`--config`, shared by the main command and every subcommand that reads a config.

    In a subcommand its default is SUPPRESS, so `boltring -c F check` keeps the F given before it."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=argparse.SUPPRESS if in_subcommand else None,
        help="cluster config (default: ./boltring.yaml, else the embedded local default)",
    )
    return p


def job_parent() -> argparse.ArgumentParser:
    """What a job runs and how long: shared by `boltring` (app and --run)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--ranks", "-n", type=int, metavar="N", help="number of local ranks (local default only; default 2)"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--example",
        metavar="NAME",
        choices=EXAMPLES,
        help="built-in example: mlp (classifier on generated data) or charlm "
        "(character-level transformer on a shipped text)",
    )
    what.add_argument(
        "--script",
        metavar="FILE",
        help="your own MLX training script, run on every rank; it calls boltring.netio.init()",
    )
    p.add_argument("--steps", type=int, metavar="S", help="training steps (overrides the config)")
    p.add_argument("--seed", type=int, metavar="K", help="random seed (same seed, same loss curve)")
    p.add_argument(
        "--global-batch", type=int, metavar="B", help="samples per step across all ranks; each rank takes B/N"
    )
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    return p


def main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="boltring",
        description=DESCRIPTION,
        parents=[config_parent(), job_parent()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after `--` go to the training script or example. "
        "Each subcommand has its own --help.",
    )
    p.add_argument("--run", action="store_true", help="run the job headless instead of opening the app")
    p.add_argument(
        "--json",
        action="store_true",
        help="with --run: one JSON event per line on stdout (start, step, log, error, summary)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print exactly what would be started where, and start nothing"
    )
    p.add_argument("--skip-checks", action="store_true", help="with --run: launch even if node checks fail")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND")
    cfg = config_parent(in_subcommand=True)

    c = sub.add_parser(
        "check",
        parents=[cfg],
        help="check every node and link",
        description="Check every node before a run: SSH and host key, python/mlx/boltring "
        "versions, memory, the Thunderbolt ring interface and address, the route "
        "to each ring neighbour, round-trip time and a short bandwidth probe. "
        "Exit code 1 when any check fails.",
    )
    c.add_argument("--json", action="store_true", help="one JSON object per check")
    c.add_argument("--no-bandwidth", action="store_true", help="skip the bandwidth probes")

    b = sub.add_parser(
        "bench",
        help="allreduce benchmark: boltring's ring vs MLX's ring",
        description="Allreduce benchmark on local ranks over loopback: boltring's ring and, "
        "in the same run, MLX's own ring backend (mx.distributed, launched with a "
        "generated hostfile). Reports the median time over repeats, algorithm "
        "bandwidth and bus bandwidth (busbw = bytes x 2(n-1)/n / time, as "
        "nccl-tests define it), the ratio boltring/MLX, and each backend's extra memory "
        "(peak RSS during the calls minus the RSS before them).",
    )
    b.add_argument(
        "--ranks",
        "-n",
        default="2",
        metavar="N[,N…]",
        help="local ranks, or a list such as 2,3,4 (one run per count, both backends each; default 2)",
    )
    b.add_argument(
        "--sizes", default="1MB,16MB,64MB", help="comma list of buffer sizes (default 1MB,16MB,64MB)"
    )
    b.add_argument(
        "--backend",
        choices=("boltring", "mlx", "both"),
        default="both",
        help="boltring's ring, MLX's ring, or both in the same invocation (default; gives the ratio)",
    )
    b.add_argument("--repeat", type=int, default=10, metavar="R", help="timed repeats per size (median)")
    b.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16", "int32"))
    b.add_argument(
        "--wire-dtype",
        choices=("bfloat16", "float16"),
        default=None,
        help="time boltring's average_gradients sending the float32 buffer as this dtype "
        "(ring.wire_dtype); busbw then counts float32 bytes, the effective bandwidth",
    )
    b.add_argument("--json", action="store_true", help="one JSON object per result")

    st = sub.add_parser(
        "status",
        parents=[cfg],
        help="show (and follow) the job left running",
        description="Show the job left running for this config (re-attaching to follow it)",
    )
    st.add_argument("--follow", action="store_true", help="keep following until the job ends")
    st.add_argument("--json", action="store_true", help="JSON events")

    sub.add_parser(
        "kill",
        parents=[cfg],
        help="stop every rank of the job left running",
        description="Kill every rank of the job left running for this config",
    )

    h = sub.add_parser(
        "hostfile",
        parents=[cfg],
        help="write the MLX hostfile for mlx.launch",
        description="Write the MLX hostfile (JSON, as mlx.distributed_config writes it) for this config",
    )
    h.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    return p


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """(boltring's words, the script's words after the first `--`).

    argparse cannot hold a free list of pass-through words beside optional subcommands (it would
    try to read the first of them as a subcommand), so the split happens before parsing."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _load(args, ranks=None):
    from boltring.cluster.config.load import ConfigError, load_config_with_report, with_overrides

    try:
        config, report = load_config_with_report(args.config)
        if report is not None:
            print(f"boltring: read {config.source} as {report.source_format}:", file=sys.stderr)
            for line in report.mapped:
                print(f"  mapped  {line}", file=sys.stderr)
            for line in report.ignored:
                print(f"  ignored {line}", file=sys.stderr)
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
        return config
    except ConfigError as e:
        raise SystemExit(f"boltring: {e}") from None


def _dry_run(controller, resume: bool) -> int:
    plans = controller.plan(resume=resume)
    config = controller.config
    print(
        f"# boltring dry run: config {config.source}, {config.world_size} ranks, "
        f"{controller.job_label()}, {config.job.steps} steps. Nothing is started."
    )
    for p in plans:
        print(f"\n# rank {p.rank} on {p.node} ({p.where}); run dir {p.run_dir}")
        print("#   the secret goes on stdin, never on the command line")
        print(p.command)
        print(f"#   which starts: {' '.join(p.argv)}")
        ring_env = {k: v for k, v in p.env.items() if k in ("BOLTRING_RANK", "BOLTRING_RING")}
        print(f"#   environment: {json.dumps(ring_env)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv, script_args = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    parser = main_parser()
    args = parser.parse_args(argv)
    if args.command is not None:
        if script_args:
            parser.error(f"`--` passes arguments to a training job; `boltring {args.command}` takes none")
        return _sub(args.command, args)
    args.script_args = script_args
    if args.script:
        args.script = str(Path(args.script).resolve())
    config = _load(args, ranks=args.ranks)

    from boltring.cluster.jobs.controller import JobController

    controller = JobController(config)
    if args.dry_run:
        return _dry_run(controller, args.resume)
    if args.run:
        from .headless import run_headless

        return asyncio.run(
            run_headless(controller, json_out=args.json, resume=args.resume, skip_checks=args.skip_checks)
        )
    if not sys.stdout.isatty():
        raise SystemExit("boltring: the app needs a terminal; use `boltring --run` for headless runs")
    from .app import run_app

    return run_app(controller)


def _sub(name: str, args) -> int:
    if name == "bench":
        from boltring.cluster.jobs.bench import run_bench_cli

        return run_bench_cli(args)
    config = _load(args)
    if name == "hostfile":
        from boltring.cluster.config.importers import write_mlx_hostfile

        text = write_mlx_hostfile(config)
        if args.output:
            Path(args.output).write_text(text + ("\n" if not text.endswith("\n") else ""))
            print(f"boltring: wrote {args.output} ({config.world_size} ranks)", file=sys.stderr)
        else:
            print(text)
        return 0
    from boltring.cluster.jobs.controller import JobController

    controller = JobController(config)
    if name == "check":
        from .check_view import run_check

        return asyncio.run(run_check(controller, json_out=args.json, bandwidth=not args.no_bandwidth))
    if name == "status":
        from .headless import run_status

        return asyncio.run(run_status(controller, follow=args.follow, json_out=args.json))
    from .headless import run_kill

    return asyncio.run(run_kill(controller))


if __name__ == "__main__":
    sys.exit(main())
