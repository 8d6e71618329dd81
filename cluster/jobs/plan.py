"""What runs where: turns a Config and a job id into one launch plan per rank.

The plan is data (argv lists, environment, run directories), so `--dry-run` prints exactly what
`launch` executes, and the secret is kept out of it: it travels on the spawn command's stdin.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.errors import BoltringError
from boltring.cluster.nodes.sync import SyncError, SyncRoot, map_args, remote_path, sync_roots, workspace_dir
from boltring.netio.jobenv import JobEnv

RUNNER_MODULE = "boltring.cluster.train.runner"
SPAWN_MODULE = "boltring.cluster.agent.spawn"


class PlanError(BoltringError):
    """The config cannot be turned into a launch plan (e.g. jaccl without an RDMA device matrix)."""

    title = "launch plan"


@dataclass(frozen=True)
class PlannedRank:
    rank: int
    node: str
    where: str  # "local" or the ssh target
    command: str  # the exact command line the transport runs (secret not included)
    run_dir: str
    argv: list[str] = field(default_factory=list)  # the rank's own program
    env: dict[str, str] = field(default_factory=dict)
    spawn_argv: list[str] = field(default_factory=list)  # what the transport executes
    # Files the spawn agent writes into the run directory before it starts the rank: the
    # variable named by the key is set to the file's path (MLX_HOSTFILE, MLX_IBV_DEVICES), as
    # mlx.launch does with its temp files.
    files: dict[str, str] = field(default_factory=dict)
    # The rank's working folder: candidates, the first that is a folder on the node wins and
    # the last is made when none is (rank_cwd). Relative paths in the job resolve from it.
    cwd: tuple[str, ...] = ()


def spawn_argv(node: Node, verb: str, run_dir: str) -> list[str]:
    """The agent command that starts, kills or reports one rank (`spawn start|kill|status`)."""
    return [node.python, "-m", SPAWN_MODULE, verb, run_dir]


def spawn_many_argv(node: Node, verb: str, run_dirs: list[str]) -> list[str]:
    """One agent command for several ranks of one node (`spawn start|kill|status DIR…`)."""
    return [node.python, "-m", SPAWN_MODULE, verb, *run_dirs]


def new_job_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def job_dir(node: Node, job_id: str) -> str:
    return f"{node.workdir.rstrip('/')}/runs/{job_id}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _component(text: str) -> str:
    """`text` as one safe path component: runs of other characters become "-", no leading dot."""
    return _UNSAFE.sub("-", text).strip("-").lstrip(".") or "job"


def job_key(job: JobSpec) -> str:
    """What the job runs, as a directory name: the example name ("charlm", "mlp", "lm"),
    "script-<file stem>" for a script, "module-<name>" for a module. Jobs of one config that
    run different things keep their checkpoints apart (a charlm checkpoint is no mlp resume)."""
    if job.script:
        return _component(f"script-{Path(job.script).stem}")
    if job.module:
        return _component(f"module-{job.module}")
    return _component(job.example or "mlp")


def checkpoint_dir(node: Node, config: Config) -> str:
    """<workdir>/checkpoints/<config name>/<job key>: where the job's ranks read and write
    checkpoints (--checkpoint-dir), and where `--resume` and `--restarts` look."""
    return f"{node.workdir.rstrip('/')}/checkpoints/{config.name}/{job_key(config.job)}"


def script_remote_path(node: Node, job_id: str, script: str) -> str:
    """Where the script is on the node: inside its folder, synced to the node's workspace
    (nodes/sync.py); a local node runs the laptop's own file."""
    local = Path(script).expanduser().resolve()
    if node.local:
        return str(local)
    return f"{workspace_dir(node)}/{local.parent.name}/{local.name}"


def job_roots(config: Config) -> list[SyncRoot]:
    """What the launch syncs (nodes/sync.py). Its refusals (a job.sync path that does not exist,
    a script in the home folder) are PlanErrors here, with the launch's own words: the launch
    stops on them before any rank starts, so a plan (--dry-run) that showed them would lie."""
    try:
        return sync_roots(config)
    except SyncError as e:
        raise PlanError(e.message, hint=e.hint) from None


def _roots(config: Config, node: Node) -> list[SyncRoot]:
    return [] if node.local else job_roots(config)  # local ranks read the laptop's own files


def launch_folder() -> Path:
    """The folder boltring was started from: where the user's relative paths point."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise PlanError(
            "the folder boltring was started from no longer exists",
            hint="cd to the job's folder and start boltring again",
        ) from None


def rank_cwd(config: Config, node: Node, roots: list[SyncRoot] | None = None) -> tuple[str, ...]:
    """Where a rank on `node` runs, so that the job's relative paths ("data.txt", `--model
    tiny`, `--adapter-path out`) mean what they mean in the shell that started boltring.

    As candidates: the rank runs in the first that is a folder on the node (spawn decides
    there, the job_paths check asks the node the same way), the last is made when none is.
    - a local node: the launch folder itself (mlx.launch runs every process there);
    - a remote node, when the launch folder is inside what the launch syncs (the script's
      folder, job.data, job.sync): its mirror in the node's workspace, where the synced
      files are;
    - otherwise the same absolute folder if the node has it (mlx.launch `cd`s to the
      launching shell's folder on every host when it exists), else the node's workdir.
    One function for the launch, the check and the dry run, so they cannot disagree."""
    here = launch_folder()
    if node.local:
        return (str(here),)
    mirror = remote_path(node, str(here), job_roots(config) if roots is None else roots)
    if mirror:
        return (mirror,)
    return (str(here), node.workdir)


def describe_cwd(cwd: tuple[str, ...] | list[str], node: str) -> str:
    """rank_cwd's answer in words: "/Users/me/proj if h1 has it, else ~/.boltring"."""
    if not cwd:
        return "the run directory"
    *tried, last = cwd
    return "".join(f"{c} if {node} has it, else " for c in tried) + last


def local_words(argv: list[str]) -> list[str]:
    """A local rank's command with "~" and "~/…" words expanded, as LocalTransport.run does
    before it executes them: the dry-run line, pasted into a shell, then uses the same run
    directory (shlex would quote a "~/…" word, and a quoted "~" does not expand)."""
    return [os.path.expanduser(w) if w == "~" or w.startswith("~/") else w for w in argv]


def runner_argv(config: Config, node: Node, job_id: str, *, resume: bool) -> list[str]:
    job: JobSpec = config.job
    argv = [node.python, "-m", RUNNER_MODULE]
    roots = _roots(config, node)  # synced paths: the job sees them under the node's workspace
    if job.script:
        script = remote_path(node, job.script, roots) if roots else None
        argv += ["--script", script or script_remote_path(node, job_id, job.script)]
    elif job.module:
        argv += ["--module", job.module]
    else:
        argv += ["--example", job.example or "mlp"]
    argv += [
        "--steps",
        str(job.steps),
        "--seed",
        str(job.seed),
        "--global-batch",
        str(job.global_batch),
        "--log-every",
        str(job.log_every),
        "--checkpoint-every",
        str(job.checkpoint_every),
        "--checkpoint-dir",
        checkpoint_dir(node, config),
    ]
    if job.learning_rate is not None:
        argv += ["--lr", repr(job.learning_rate)]
    if job.data:
        argv += ["--data", remote_path(node, job.data, roots) or job.data]
    if job.steps_per_eval is not None:  # an explicit 0 too: it turns mlx-lm's own flag off
        argv += ["--steps-per-eval", str(job.steps_per_eval)]
    if job.allow_nonfinite:
        argv.append("--allow-nonfinite")
    if job.keep_checkpoints != 3:
        argv += ["--keep-checkpoints", str(job.keep_checkpoints)]
    if resume:
        argv.append("--resume")
    if job.args:
        argv += ["--", *map_args(node, job.args, roots)]
    return argv


def runner_check_argv(config: Config, node: Node, flag: str, *, resume: bool = False) -> list[str]:
    """The runner's command for one of its checks (`--check-args`, `--check-resume`): the
    rank's own command line with the flag before `--` (it is the runner's, not the example's)."""
    argv = runner_argv(config, node, "check", resume=resume)
    cut = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:cut], flag, *argv[cut:]]


def mlx_ring_hostfile(config: Config) -> str:
    """MLX_HOSTFILE's content for the mlx-ring backend: a JSON list, by rank, of ["ip:port"]
    (what mlx.launch writes; the port is the rank's boltring ring port, so the same firewall
    rule serves both backends)."""
    return json.dumps([[slot.ring_addr] for slot in config.rank_layout()])


def read_rdma_devices(text: str, nodes: int, source: str = "the RDMA device file") -> tuple:
    """The n x n device matrix from an MLX hostfile with ``rdma`` lists (what
    ``mlx.distributed_config --backend jaccl --output-hostfile`` writes: a list of hosts, or an
    object with "hosts") or from a bare JSON matrix. Checked like mlx.launch checks it."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise PlanError(f"{source} is not JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("hosts")
    if isinstance(data, list) and all(isinstance(h, dict) for h in data):
        data = [h.get("rdma") for h in data]
    if not (isinstance(data, list) and all(isinstance(row, list) for row in data)):
        raise PlanError(
            f"{source} holds no RDMA device matrix",
            hint="an MLX hostfile with rdma lists (mlx.distributed_config --backend jaccl) "
            "or a JSON n x n list",
        )
    if len(data) != nodes or any(len(row) != nodes for row in data):
        raise PlanError(f"{source} is not a {nodes} x {nodes} matrix (the config has {nodes} nodes)")
    for i, row in enumerate(data):
        for j, dev in enumerate(row):
            if i == j and dev is not None:
                raise PlanError(
                    f"{source}: row {i}, column {i} must be null (a node has no RDMA link to itself)"
                )
            if i != j and not (isinstance(dev, str) and dev):
                raise PlanError(f"{source}: no RDMA device from node {i} to node {j}")
    return tuple(tuple(row) for row in data)


def jaccl_env_and_files(config: Config) -> tuple[dict[str, str], dict[str, str]]:
    """Environment and files of the jaccl backend: the coordinator is rank 0's ring address."""
    n = len(config.nodes)
    crowded = [node.name for node in config.nodes if node.ranks != 1]
    if crowded:
        raise PlanError(
            f"the jaccl backend runs one rank per node; {', '.join(crowded)} set ranks above 1",
            hint="set ranks: 1 on every node, or use --backend mlx-ring",
        )
    if n > 1 and len(config.ring.rdma_devices) != n:
        raise PlanError(
            "the jaccl backend needs the RDMA device of every node pair",
            hint="write them with `mlx.distributed_config --over thunderbolt --backend jaccl "
            "--output-hostfile F` on a node and pass --rdma-devices F",
        )
    env = {"MLX_JACCL_COORDINATOR": config.rank_layout()[0].ring_addr}
    files = {"MLX_IBV_DEVICES": json.dumps([list(row) for row in config.ring.rdma_devices])} if n > 1 else {}
    return env, files


def backend_env_and_files(config: Config, rank: int) -> tuple[dict[str, str], dict[str, str]]:
    """What MLX's launcher would set for this rank (mlx/_distributed_utils/launch.py, mlx 0.32):
    MLX_RANK, and per backend the variables that name files (written by the spawn agent)."""
    backend = config.ring.backend
    if backend == "boltring":
        return {}, {}
    env = {"MLX_RANK": str(rank)}
    if backend == "mlx-ring":
        # One rank needs no hostfile (mlx.launch writes an empty one); the group is a singleton.
        return env, ({"MLX_HOSTFILE": mlx_ring_hostfile(config)} if config.world_size > 1 else {})
    if backend == "jaccl":
        extra, files = jaccl_env_and_files(config)
        return {**env, **extra}, files
    raise PlanError(f"unknown backend {backend!r}", hint="boltring, mlx-ring or jaccl")


def plan_job(config: Config, job_id: str, *, resume: bool = False, command_line=None) -> list[PlannedRank]:
    """One PlannedRank per rank, in rank order. `command_line(node, argv)` renders a command
    as its transport would run it (ssh …); by default the plain quoted argv."""
    import shlex

    layout = config.rank_layout()
    ring = tuple(slot.ring_addr for slot in layout)
    roots = job_roots(config)  # the launch syncs first, even with only local nodes: refuse what it refuses
    plans = []
    for slot in layout:
        node = slot.node
        run_dir = f"{job_dir(node, job_id)}/rank{slot.rank}"
        env = JobEnv(
            rank=slot.rank,
            size=len(layout),
            job_id=job_id,
            ring=ring,
            timeout_s=config.ring.timeout_s,
            connect_timeout_s=config.ring.connect_timeout_s,
            bucket_mb=config.ring.bucket_mb,
            chunk_mb=config.ring.chunk_mb,
            wire_dtype=config.ring.wire_dtype,
            overlap=config.ring.overlap,
            directions=config.ring.directions,
            same_host=config.ring.same_host,
            node=node.name,
            backend=config.ring.backend,
            allow_nonfinite=config.job.allow_nonfinite,  # for a script's group.report() too
        ).to_environ()
        mlx_env, files = backend_env_and_files(config, slot.rank)
        env.update(mlx_env)
        if config.job.wandb:  # rank 0 logs to this W&B project (cluster/train/wandb_hook.py)
            env["BOLTRING_WANDB"] = config.job.wandb
        argv = runner_argv(config, node, job_id, resume=resume)
        spawn = spawn_argv(node, "start", run_dir)
        shown = local_words(spawn) if node.local else spawn  # ssh lines leave "~/" to the node's shell
        rendered = command_line(node, shown) if command_line else shlex.join(shown)
        plans.append(
            PlannedRank(
                rank=slot.rank,
                node=node.name,
                where="local" if node.local else (node.ssh or node.name),
                command=rendered,
                run_dir=run_dir,
                argv=argv,
                env=env,
                spawn_argv=spawn,
                files=files,
                cwd=rank_cwd(config, node, roots),
            )
        )
    return plans


def _rank_spec(plan: PlannedRank) -> dict:
    """What the spawn agent needs to start one rank: its program, environment, working folder
    (rank_cwd's candidates), and the files a backend reads by path (MLX_HOSTFILE,
    MLX_IBV_DEVICES)."""
    spec: dict = {"argv": plan.argv, "env": plan.env}
    if plan.cwd:
        spec["cwd"] = list(plan.cwd)
    if plan.files:
        spec["files"] = plan.files
    return spec


def spawn_input(plan: PlannedRank, secret: bytes) -> bytes:
    """The JSON a rank's spawn command reads on stdin (the only place the secret travels)."""
    return json.dumps({**_rank_spec(plan), "secret": secret.hex()}).encode()


def spawn_many_input(plans: list[PlannedRank], secret: bytes) -> bytes:
    """stdin of `spawn start DIR…` for several ranks of one node."""
    return json.dumps({"secret": secret.hex(), "ranks": [_rank_spec(p) for p in plans]}).encode()


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
