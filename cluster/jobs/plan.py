"""What runs where: turns a Config and a job id into one launch plan per rank.

The plan is data (argv lists, environment, run directories), so `--dry-run` prints exactly what
`launch` executes, and the secret is kept out of it: it travels on the spawn command's stdin.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.netio.jobenv import JobEnv

RUNNER_MODULE = "boltring.cluster.train.runner"
SPAWN_MODULE = "boltring.cluster.agent.spawn"


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


def spawn_argv(node: Node, verb: str, run_dir: str) -> list[str]:
    """The agent command that starts, kills or reports one rank (`spawn start|kill|status`)."""
    return [node.python, "-m", SPAWN_MODULE, verb, run_dir]


def new_job_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def job_dir(node: Node, job_id: str) -> str:
    return f"{node.workdir.rstrip('/')}/runs/{job_id}"


def checkpoint_dir(node: Node, config: Config) -> str:
    return f"{node.workdir.rstrip('/')}/checkpoints/{config.name}"


def script_remote_path(node: Node, job_id: str, script: str) -> str:
    return f"{job_dir(node, job_id)}/script/{Path(script).name}"


def runner_argv(config: Config, node: Node, job_id: str, *, resume: bool) -> list[str]:
    job: JobSpec = config.job
    argv = [node.python, "-m", RUNNER_MODULE]
    if job.script:
        argv += ["--script", script_remote_path(node, job_id, job.script)]
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
        argv += ["--data", job.data]
    if resume:
        argv.append("--resume")
    if job.args:
        argv += ["--", *job.args]
    return argv


def plan_job(config: Config, job_id: str, *, resume: bool = False, command_line=None) -> list[PlannedRank]:
    """One PlannedRank per rank, in rank order. `command_line(node, argv)` renders a command
    as its transport would run it (ssh …); by default the plain quoted argv."""
    import shlex

    layout = config.rank_layout()
    ring = tuple(slot.ring_addr for slot in layout)
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
            node=node.name,
        ).to_environ()
        argv = runner_argv(config, node, job_id, resume=resume)
        spawn = spawn_argv(node, "start", run_dir)
        rendered = command_line(node, spawn) if command_line else shlex.join(spawn)
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
            )
        )
    return plans


def spawn_input(plan: PlannedRank, secret: bytes) -> bytes:
    """The JSON a rank's spawn command reads on stdin (the only place the secret travels)."""
    return json.dumps({"argv": plan.argv, "env": plan.env, "secret": secret.hex()}).encode()


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
