"""What `boltring` accepts on its command line: the main options, the shared `--config` and job
parents, every subcommand with its --help text, and the `--` split. cli.py dispatches what this
parses; keeping the words a user types apart from what they do keeps both files short.
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

from boltring.cluster.config.schema import BACKENDS, EXAMPLES
from boltring.cluster.jobs.bench import ITEMSIZE

DESCRIPTION = """\
Train one MLX model data-parallel across Thunderbolt-wired Macs (or N local ranks).

  boltring                      open the terminal app on the config (keys: l launch, k kill, q quit)
  boltring --run                run the job headless: progress, summary, exit code
  boltring check                check every node: SSH, python/mlx, Thunderbolt interface, routes, bandwidth
  boltring setup                give every node a venv with this machine's boltring and mlx (over SSH)
  boltring bench                allreduce benchmark: boltring's ring vs MLX's own ring backend
  boltring status | kill        follow or stop a job left running (status: else the last job's result)
  boltring runs                 past jobs: id, config, state, steps, loss, wall time, run directory
  boltring export RUN --csv F   a run's metrics as CSV, TensorBoard events (--tensorboard DIR) or SVG
  boltring hostfile             write the MLX hostfile (mlx.launch --hostfile) for this cluster

The config is --config FILE, else ./boltring.yaml, else the embedded local default
(2 ranks on loopback). It may also be an MLX hostfile, a smolcluster cluster_config.yaml or
a jupiter cluster.yaml: boltring reports what it mapped and ignored.
"""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: what is wrong and where to read more, without the usage
    block argparse prints first (seven lines for the main command, which push the reason out of
    sight). Subcommands are made with the same class (add_subparsers uses the parent's)."""

    words: list[str] = []  # the command line being parsed (set by the CLI), for error()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {self._plainer(message)} (`{self.prog} --help` explains every option)\n")

    def _plainer(self, message: str) -> str:
        """`boltring --dry-run --data x`: argparse does not know --data, takes x for a
        subcommand, and says "invalid choice: 'x'", which names neither. Name the option."""
        m = re.match(r"argument \[SUBCOMMAND\]: invalid choice: '(.*)' (\(.*\))", message)
        if m and m[1] in self.words:
            before = self.words[: self.words.index(m[1])]
            if before and before[-1].startswith("-"):
                return f"unrecognized option {before[-1]} (with {m[1]!r})"
        if m:
            return f"unknown subcommand {m[1]!r} {m[2]}"
        return message


def config_parent(*, in_subcommand: bool = False) -> Parser:
    """`--config`, shared by the main command and every subcommand that reads a config.

    In a subcommand its default is SUPPRESS, so `boltring -c F check` keeps the F given before it."""
    p = Parser(add_help=False)
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=argparse.SUPPRESS if in_subcommand else None,
        help="cluster config (default: ./boltring.yaml, else the embedded local default)",
    )
    return p


def job_parent() -> Parser:
    """What a job runs and how long: shared by `boltring` (app and --run)."""
    p = Parser(add_help=False)
    p.add_argument(
        "--ranks", "-n", type=int, metavar="N", help="number of local ranks (local default only; default 2)"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--example",
        metavar="NAME",
        choices=EXAMPLES,
        help="built-in example: mlp (classifier on generated data), charlm "
        "(character-level transformer on a shipped text) or lm (fine-tune an mlx-lm model: "
        "LoRA, DoRA or full; mlx-lm's flags after --, e.g. -- --model DIR --data DIR; "
        "needs pip install 'boltring[lm]')",
    )
    what.add_argument(
        "--script",
        metavar="FILE",
        help="your own MLX training script, run on every rank; it calls boltring.netio.init(), "
        "or mx.distributed.init() with an MLX --backend (scripts for mlx.launch run unmodified)",
    )
    what.add_argument(
        "--module",
        metavar="NAME",
        help="an installed Python module run on every rank, like python -m NAME (and torchrun -m)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="who runs the collectives: boltring (our authenticated ring, default), mlx-ring "
        "(MLX's TCP ring: mx.distributed works, boltring writes MLX_HOSTFILE) or jaccl "
        "(MLX's RDMA over Thunderbolt 5, macOS 26.2+; needs --rdma-devices)",
    )
    p.add_argument(
        "--rdma-devices",
        metavar="FILE",
        help="jaccl: the RDMA device of every node pair, as the hostfile "
        "`mlx.distributed_config --over thunderbolt --backend jaccl --output-hostfile FILE` writes "
        "(or a JSON n x n matrix, null on the diagonal)",
    )
    p.add_argument(
        "--steps-per-eval",
        type=int,
        metavar="N",
        help="lm example: validation loss every N steps, 0 for none (overrides job.steps_per_eval "
        "and mlx-lm's own --steps-per-eval after --)",
    )
    p.add_argument("--steps", type=int, metavar="S", help="training steps (overrides the config)")
    p.add_argument("--seed", type=int, metavar="K", help="random seed (same seed, same loss curve)")
    p.add_argument(
        "--global-batch", type=int, metavar="B", help="samples per step across all ranks; each rank takes B/N"
    )
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--restarts",
        type=int,
        metavar="N",
        help="when the job fails, stop every rank, re-check the failing node and relaunch from the "
        "newest verified checkpoint, up to N times, after job.restart_delay (default 5 s); "
        "a job you stop is never restarted (overrides job.restarts)",
    )
    return p


def at_least_one(text: str) -> int:
    """`runs --limit`: a count of 1 or more. 0 or less showed "no past jobs yet" beside a full
    history, and -1 dropped the oldest job without a word."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a whole number, 1 or more, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"give 1 or more, not {n}")
    return n


def main_parser() -> Parser:
    p = Parser(
        prog="boltring",
        description=DESCRIPTION,
        parents=[config_parent(), job_parent()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after `--` go to the training script or example. "
        "Each subcommand has its own --help.",
    )
    p.add_argument(
        "--run",
        action="store_true",
        help="run the job headless instead of opening the app: progress, a summary, an exit code "
        "(0 finished, 1 failed, 2 not started, 130 stopped by you, 141 its output closed by its "
        "reader, e.g. `| head`: every rank is stopped). A script's or module's own output is "
        "shown as `rank N: …` (tracebacks stay in each rank's rank.log: a failure is one line); "
        "an example shows its progress and rank 0's notes",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="with --run: one JSON event per line on stdout (start, step, log, error, summary); "
        "with --dry-run: the plan as events (plan, then rank_plan per rank)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print exactly what would be started where, and start nothing"
    )
    p.add_argument("--skip-checks", action="store_true", help="with --run: launch even if node checks fail")
    # Optional: without one, boltring opens the app (or runs the job with --run/--dry-run).
    sub = p.add_subparsers(dest="command", metavar="[SUBCOMMAND]")
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
        parents=[cfg],
        help="allreduce benchmark: boltring's ring vs MLX's ring",
        description="Allreduce benchmark: boltring's ring and, in the same run, MLX's own ring "
        "backend (mx.distributed, launched with a generated hostfile). By default on local "
        "ranks over loopback; with --cluster on the config's nodes over their ring "
        "(Thunderbolt) addresses, each cell a short job started over SSH like any job. "
        "Reports the median time over repeats, algorithm bandwidth and bus bandwidth "
        "(busbw = bytes x 2(n-1)/n / time, as nccl-tests define it), the ratio boltring/MLX, "
        "and each backend's extra memory on rank 0 (peak RSS during the calls minus the RSS "
        "before them). With both backends, each size runs one backend right after the other, "
        "alternating which goes first, so that a ratio compares two measurements taken "
        "seconds apart.",
    )
    b.add_argument(
        "--cluster",
        action="store_true",
        help="run on the config's nodes (--config, else ./boltring.yaml) over their ring "
        "addresses: ranks per node, ring.directions and ring.same_host come from the config. "
        "The nodes are checked first, as --run checks them; the checks' bandwidth burst gives "
        "the slowest ring link, and each busbw is also shown as a fraction of it",
    )
    b.add_argument(
        "--skip-checks",
        action="store_true",
        help="with --cluster: benchmark even if checks fail (and without the link figure)",
    )
    b.add_argument(
        "--ranks",
        "-n",
        metavar="N[,N…]",
        help="local ranks, or a list such as 2,3,4 (every size for each count; default 2)",
    )
    b.add_argument(
        "--sizes", default="1MB,16MB,64MB", help="comma list of buffer sizes (default 1MB,16MB,64MB)"
    )
    b.add_argument(
        "--backend",
        choices=("boltring", "mlx", "both"),
        default=None,
        help="boltring's ring, MLX's ring, or both in the same invocation (gives the ratio). Default: "
        "both for local ranks; boltring with --cluster, where MLX's ring would listen on your ring "
        "network with no authentication: ask for mlx or both there",
    )
    b.add_argument("--repeat", type=int, default=10, metavar="R", help="timed repeats per size (median)")
    b.add_argument("--dtype", default="float32", choices=tuple(ITEMSIZE))
    b.add_argument(
        "--wire-dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="time boltring's average_gradients sending the float32 buffer as this dtype "
        "(ring.wire_dtype); busbw then counts float32 bytes, the effective bandwidth. float32 "
        "times average_gradients as it runs by default: the baseline of a half-precision wire",
    )
    b.add_argument(
        "--directions",
        choices=("auto", "1", "2"),
        help="ways round boltring's ring at once (ring.directions; default auto). auto: one, as for any "
        "ranks on one host; 2 times the path that nodes cabled to both neighbours take",
    )
    b.add_argument(
        "--same-host",
        choices=("unix", "tcp"),
        help="how boltring's local ranks reach each other (ring.same_host; default unix). unix: "
        "a Unix socket, as a job's ranks on one host use by default; tcp: loopback TCP, the path MLX's ring "
        "takes and the one ranks on different nodes take",
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

    s = sub.add_parser(
        "setup",
        parents=[cfg],
        help="give every node a venv with this machine's boltring and mlx",
        description="Set up every node (or the --node ones) over SSH: find a Python 3.11+, create "
        "the venv the node's `python:` belongs to (e.g. ~/boltring/.venv/bin/python), and install "
        "exactly the boltring and mlx versions of this machine, plus setup.extras (and the lm extra "
        "when the config's job.example is lm; for --example lm given on the command line, put "
        "setup: {extras: [lm]} in the config). boltring's own wheel is built or found here and uploaded "
        "over SFTP. A node already on those versions is reported up to date and nothing is "
        "reinstalled. Exit code 1 when any node failed (the others still finish), 2 when a node's "
        "python: is not a venv's interpreter (nothing starts), 130 on Ctrl-C or SIGTERM.",
    )
    s.add_argument(
        "--node",
        action="append",
        metavar="NAME",
        help="set up only this node (repeat for more; default: every node)",
    )
    # one or the other: --download-wheelhouse sets nothing up, so a --wheelhouse with it was
    # silently ignored
    source = s.add_mutually_exclusive_group()
    source.add_argument(
        "--wheelhouse",
        metavar="DIR",
        help="folder of wheels on this machine (overrides setup.wheelhouse): every wheel the nodes "
        "need is uploaded from it and pip runs with --no-index, for nodes without internet access",
    )
    source.add_argument(
        "--download-wheelhouse",
        metavar="DIR",
        help="instead of setting up, fill DIR with the wheels the nodes need, for their platform and "
        "Python (asked from the nodes), with `pip download --platform ... --only-binary=:all:`",
    )

    rn = sub.add_parser(
        "runs",
        parents=[cfg],
        help="list past jobs",
        description="List past jobs, newest first: id, config, state (and who stopped it), steps done "
        "of the total, first → last loss, wall time and run directory (`unwatched`: the record says the job "
        "runs, but no controller that watched it is alive; `--json` has `watched` and, for a failure, "
        "`blamed`). Read from the job records "
        "in ~/.boltring/jobs (BOLTRING_HOME) and, for the loss, from rank 0's metrics file when "
        "the run directory is on this machine. With --config, only that config's jobs.",
    )
    rn.add_argument("--json", action="store_true", help="one JSON object per job")
    rn.add_argument(
        "--limit", type=at_least_one, default=20, metavar="N", help="at most N jobs, N ≥ 1 (default 20)"
    )

    ex = sub.add_parser(
        "export",
        parents=[cfg],
        help="write a run's metrics as CSV, TensorBoard events or an SVG loss plot",
        description="Write the metrics of one past job (every rank's step lines) for other tools. "
        "RUN is a job id as `boltring runs` lists it, a unique prefix of one, or `last`; with "
        "--config, one of that config's jobs (`last`: its newest). The ranks' metrics files must be "
        "on this machine (local runs; copy a remote run directory first). A file's folder must "
        "exist; --tensorboard needs pip install 'boltring[export]'.",
    )
    ex.add_argument("run", metavar="RUN", help="job id, a unique prefix of it, or `last`")
    ex.add_argument("--csv", metavar="FILE", help="one row per rank and step (step, rank, wall, loss, …)")
    ex.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="TensorBoard event files under DIR/<job id> (loss; per-rank samples/s, GB/s, memory)",
    )
    ex.add_argument("--svg", metavar="FILE", help="the loss curve as an SVG image")

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


def subcommand_options(parser: argparse.ArgumentParser, name: str) -> set[str]:
    """The option strings subcommand `name` takes (`status`: --json, --follow, …). argparse
    keeps them in its private tables; this is the one place that reads them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return set(action.choices[name]._option_string_actions)
    return set()
