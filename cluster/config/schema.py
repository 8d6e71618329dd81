"""The validated shape of a boltring config: plain dataclasses, no I/O.

Each field a user can write in YAML is declared with `setting(...)`: its YAML key (when it
differs from the field name), its checker (from `values.py`) and the "expected" text of its
error message. The validator reads that metadata, so adding a key is one edit, here.
Everything after the loader trusts these objects.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltring.cluster.config import values as v
from boltring.cluster.config.ports import DEFAULT_RING_PORT

DEFAULT_BATCH_PER_RANK = 128  # a job without global_batch takes this many examples per rank
EXAMPLES = ("mlp", "charlm", "lm")  # built-in examples under cluster/train/
BACKENDS = ("boltring", "mlx-ring", "jaccl")  # who runs the collectives (ring.backend, --backend)
WIRE_DTYPES = ("float32", "bfloat16", "float16")  # what average_gradients sends (ring.wire_dtype)
SAME_HOST = ("unix", "tcp")  # how ranks on one host reach each other (ring.same_host; netio/unixsock.py)
RING_ORDERS = ("config", "cabling")


DEFAULT_CHECKPOINT_EVERY = 100  # job.checkpoint_every of a config that sets none


def default_global_batch(world_size: int) -> int:
    """The global batch of a job that sets none: divisible by any world size."""
    return DEFAULT_BATCH_PER_RANK * max(1, world_size)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    check: Callable[[Any], Any],
    expected: str,
    key: str | None = None,
) -> Any:
    """A field a config file may set: `key` in YAML (default: the field name), checked by
    `check`, and `expected` says what a valid value looks like in an error message."""
    return field(default=default, metadata={"key": key, "check": check, "expected": expected})


@dataclass(frozen=True)
class Key:
    """One YAML key of a section, as the validator sees it."""

    yaml: str
    field: str
    check: Callable[[Any], Any]
    expected: str


def keys_of(cls: type) -> dict[str, Key]:
    """The YAML keys of a section's dataclass, in declaration order."""
    out = {}
    for f in dataclasses.fields(cls):
        if "check" in f.metadata:
            yaml_key = f.metadata["key"] or f.name
            out[yaml_key] = Key(yaml_key, f.name, f.metadata["check"], f.metadata["expected"])
    return out


@dataclass(frozen=True)
class SshOptions:
    """How the controller reaches nodes; defaults follow OpenSSH's own files."""

    config_file: str | None = setting(  # aliases, HostName, User, Port, IdentityFile
        "~/.ssh/config", check=v.opt_text, expected="a path such as ~/.ssh/config, or null to read none"
    )
    known_hosts: str | None = setting(  # always checked; never disabled
        "~/.ssh/known_hosts",
        check=v.text,
        expected="a known_hosts path such as ~/.ssh/known_hosts (boltring always checks host keys)",
    )
    identity_files: tuple[str, ...] = setting(  # extra keys besides those ssh_config names
        (), check=v.text_list, expected="a list of key files such as [~/.ssh/id_ed25519]"
    )
    connect_timeout_s: float = setting(
        10.0,
        key="connect_timeout",
        check=v.positive,
        expected="seconds to wait for an SSH connection, such as 10",
    )
    keepalive_interval_s: float = setting(
        15.0,
        key="keepalive_interval",
        check=v.positive,
        expected="seconds between SSH keepalives, such as 15",
    )
    keepalive_count_max: int = setting(
        3, check=v.int_min(1), expected="how many unanswered keepalives drop a connection, such as 3"
    )


@dataclass(frozen=True)
class Node:
    name: str = setting(
        check=v.name, expected="a unique name of letters, digits, '.', '_' or '-', such as mini1"
    )
    # the address ranks on this node listen on (Thunderbolt Bridge, or loopback)
    ring_ip: str = setting(check=v.ip, expected="the node's Thunderbolt Bridge address such as 172.31.0.2")
    local: bool = setting(  # run ranks as subprocesses of this machine, no SSH
        False, check=v.boolean, expected="true to run this node's ranks on this machine without SSH, or false"
    )
    ssh: str | None = setting(  # "alias" from ~/.ssh/config or "user@host[:port]"
        None, check=v.ssh_target, expected="an alias from ~/.ssh/config such as mini1, or user@host[:port]"
    )
    ring_iface: str | None = setting(  # e.g. "bridge0"; checks find it from ring_ip when absent
        None, check=v.iface, expected="a network interface name such as bridge0"
    )
    python: str = setting(  # interpreter on the node that can import mlx and boltring
        "python3",
        check=v.text,
        expected="the node's interpreter that can import mlx, such as ~/boltring/.venv/bin/python",
    )
    workdir: str = setting(  # runs/ and checkpoints/ live here on the node
        "~/.boltring",
        check=v.text,
        expected="a directory on the node for runs and checkpoints, such as ~/boltring",
    )
    ranks: int = setting(  # ranks started on this node
        1, check=v.int_min(1), expected="how many ranks to start on this node, a whole number such as 1"
    )
    chip: str | None = setting(None, check=v.text, expected='the chip name, such as "M4"')
    memory_gb: float | None = setting(None, check=v.positive, expected="the node's memory in GB, such as 16")
    role: str | None = setting(  # informational (e.g. "controller", "worker")
        None, check=v.text, expected='a free-form label such as "worker"'
    )


@dataclass(frozen=True)
class JobSpec:
    example: str | None = setting(  # built-in example name, or None when script is set
        "mlp",
        check=v.choice("a built-in example", EXAMPLES, suggest=False),
        expected=f"one of {', '.join(EXAMPLES)} (or set script instead)",
    )
    script: str | None = setting(  # user script path (on the controller), run on every rank
        None,
        check=v.text,
        expected="the path of a Python training script, relative to this config file",
    )
    args: tuple[str, ...] = setting(  # arguments for the script / example
        (), check=v.text_list, expected="a list of text arguments such as [--hidden, '256']"
    )
    steps: int = setting(200, check=v.int_min(1), expected="a whole number of training steps, at least 1")
    seed: int = setting(0, check=v.int_min(0), expected="a whole number, 0 or more")
    # summed over all ranks, each rank takes global_batch / world_size. None in a file means
    # "not set": Config resolves it to default_global_batch(world size), marked as a default.
    global_batch: int | None = setting(
        None,
        check=v.int_min(1),
        expected="the batch size summed over all ranks, a positive whole number",
    )
    learning_rate: float | None = setting(  # None: the example's own default
        None, key="lr", check=v.positive, expected="a positive learning rate such as 0.05"
    )
    # A checkpoint every N steps and at the last step. Not 0 by default: a config that left it
    # out wrote none, so --resume and --restarts silently started over.
    checkpoint_every: int = setting(
        DEFAULT_CHECKPOINT_EVERY,
        check=v.int_min(0),
        expected="steps between checkpoints (one is also written at the last step), or 0 for none at all",
    )
    log_every: int = setting(  # steps between metrics lines
        1, check=v.int_min(1), expected="steps between metrics lines, at least 1"
    )
    data: str | None = setting(  # data file for examples that read one (charlm)
        None, check=v.text, expected="the path of the data file the example reads"
    )
    module: str | None = (
        setting(  # an installed module run on every rank (python -m), instead of example/script
            None, check=v.text, expected="an installed Python module run on every rank, like python -m NAME"
        )
    )
    keep_checkpoints: int = setting(  # newest checkpoints kept; older ones are pruned
        3, check=v.int_min(1), expected="how many newest checkpoints to keep, such as 3"
    )
    allow_nonfinite: bool = setting(  # False: a NaN/inf loss fails the job, naming step and rank
        False, check=v.boolean, expected="true to keep training when the loss becomes NaN or inf"
    )
    restarts: int = setting(  # --restarts: relaunch a failed job from its newest verified checkpoint
        0, check=v.int_min(0), expected="how many times a failed job is relaunched, such as 0 or 2"
    )
    restart_delay_s: float = setting(
        5.0, key="restart_delay", check=v.positive, expected="seconds to wait before a restart, such as 5"
    )
    sync: tuple[str, ...] = setting(  # local paths sent to every node's workdir before launch, when changed
        (),
        check=v.text_list,
        expected="a list of local paths sent to every node before launch, such as [data/]",
    )
    wandb: str | None = setting(  # W&B project; rank 0 logs there when wandb is installed
        None,
        check=v.text,
        expected="a Weights & Biases project name (rank 0 logs there when wandb is installed)",
    )
    # Validation every N steps (lm example); 0 = none. None = not set: the example's own (lm:
    # mlx-lm's --steps-per-eval after `--`, else none), so an explicit 0 still means none.
    steps_per_eval: int | None = setting(
        None, check=v.int_min(0), expected="steps between validation passes, or 0 for none"
    )
    global_batch_is_default: bool = False  # set by Config when it resolved global_batch=None
    # The value a default gave steps and global_batch: the schema's, or the embedded local.yaml's
    # (its job values are boltring's defaults, not the user's); None when the user set them.
    # A value the user gives later (with_overrides) differs from it. Only where the user set
    # neither do the lm example's own --iters and --batch-size size the job (Config, below).
    steps_default: int | None = None
    global_batch_default: int | None = None

    def user_set(self, field: str) -> bool:
        """Did the user give job.<field> ("steps", "global_batch"), in a file or a flag?"""
        return getattr(self, f"{field}_default") != getattr(self, field)


@dataclass(frozen=True)
class RingOptions:
    port: int = setting(
        DEFAULT_RING_PORT,
        check=v.port,
        expected="a TCP port from 1024 to 65535 (a node's ranks use port, port+1, ...)",
    )
    timeout_s: float = setting(  # inactivity timeout inside one collective
        60.0,
        key="timeout",
        check=v.positive,
        expected="seconds a collective may wait without progress, such as 60",
    )
    connect_timeout_s: float = setting(  # how long ranks wait for their neighbours at start
        30.0,
        key="connect_timeout",
        check=v.positive,
        expected="seconds ranks wait for their neighbours, such as 30",
    )
    bucket_mb: float = setting(  # gradient bucket size for average_gradients
        32.0, check=v.positive, expected="megabytes of gradients per averaging bucket, such as 32"
    )
    chunk_mb: float = setting(  # frame payload size on the wire; receivers refuse frames over 256 MiB
        4.0,
        check=v.positive_at_most(256),
        expected="megabytes per frame on the wire, such as 4 (at most 256: receivers refuse larger frames)",
    )
    order: str = setting(  # "config": nodes in file order; "cabling": reordered to follow the cables
        "config",
        check=v.choice("a ring order", RING_ORDERS),
        expected="config (nodes in file order) or cabling (reordered to follow the Thunderbolt cables)",
    )
    backend: str = setting(  # one of BACKENDS
        "boltring",
        check=v.choice("a collective backend", BACKENDS),
        expected="boltring (our ring), mlx-ring (MLX's TCP ring) or jaccl (MLX's RDMA over Thunderbolt 5)",
    )
    wire_dtype: str = setting(  # one of WIRE_DTYPES; half precision halves the bytes of average_gradients
        "float32",
        check=v.choice("a wire dtype", WIRE_DTYPES),
        expected="float32 (exact), bfloat16 or float16 (half the bytes; each hop rounds the partial sum)",
    )
    overlap: bool = setting(  # average_gradients reduces each bucket while MLX computes the next
        False,
        check=v.boolean,
        expected="true to reduce finished gradient buckets while the backward pass still runs, or false",
    )
    directions: int = setting(  # 0: auto (ring.py picks); 1 or 2 ways round the ring at once
        0,
        check=v.auto_or_int((1, 2)),
        expected=(
            "auto, 1 (ring addresses on one Thunderbolt Bridge chain, hub or switch) or 2 "
            "(each node reaches its two neighbours over separate cables)"
        ),
    )
    same_host: str = setting(  # how ranks on one host reach each other (netio/unixsock.py)
        "unix",
        check=v.choice("a same-host transport", SAME_HOST),
        expected="unix (ranks on one host talk over a Unix socket: less CPU) or tcp (their ring addresses)",
    )
    # jaccl: n x n RDMA device names by node (row i, column j: the device on node i that reaches
    # node j; None on the diagonal), from `--rdma-devices FILE` (mlx.distributed_config's output).
    # Not a YAML key: it comes from the command line.
    rdma_devices: tuple[tuple[str | None, ...], ...] = ()


@dataclass(frozen=True)
class SetupOptions:
    """`boltring setup`: how nodes get the same environment as the laptop."""

    wheelhouse: str | None = setting(  # local folder of wheels: nodes install with --no-index
        None, check=v.text, expected="a local folder of wheels for offline nodes, such as ./wheels"
    )
    extras: tuple[str, ...] = setting(  # boltring extras installed on nodes, e.g. ("lm",)
        (), check=v.text_list, expected="boltring extras to install on the nodes, such as [lm]"
    )


@dataclass(frozen=True)
class Config:
    name: str  # [A-Za-z0-9._-]+; the file's stem when the file sets none
    nodes: tuple[Node, ...]
    job: JobSpec = field(default_factory=JobSpec)
    ring: RingOptions = field(default_factory=RingOptions)
    ssh: SshOptions = field(default_factory=SshOptions)
    setup: SetupOptions = field(default_factory=SetupOptions)
    source: str | None = None  # path of the file it came from ("<embedded local.yaml>" for the default)

    def __post_init__(self) -> None:
        # The default batch depends on the world size, so it is resolved here, where both are
        # known, and again by dataclasses.replace when --ranks changes the world size.
        job = self.job
        if job.global_batch is None:
            batch = default_global_batch(self.world_size)
            job = dataclasses.replace(
                job, global_batch=batch, global_batch_is_default=True, global_batch_default=batch
            )
        # The lm example's --iters and --batch-size size the job here, not on the ranks, so that
        # the plan, the progress ("steps n/N") and the summary count the steps that run.
        from boltring.cluster.config.lm_flags import with_lm_flags  # it imports JobSpec from here

        job = with_lm_flags(job, self.world_size)
        if job is not self.job:
            object.__setattr__(self, "job", job)  # frozen: the documented way in __post_init__

    @property
    def world_size(self) -> int:
        return sum(n.ranks for n in self.nodes)

    def rank_layout(self) -> list[RankSlot]:
        """Ranks in ring order: nodes in config order, a node's ranks consecutive."""
        slots: list[RankSlot] = []
        for node in self.nodes:
            for k in range(node.ranks):
                slots.append(
                    RankSlot(
                        rank=len(slots),
                        node=node,
                        local_index=k,
                        ring_addr=f"{node.ring_ip}:{self.ring.port + k}",
                    )
                )
        return slots


@dataclass(frozen=True)
class RankSlot:
    rank: int
    node: Node
    local_index: int  # index of this rank among its node's ranks
    ring_addr: str  # "ip:port" this rank listens on


def boltring_home() -> Path:
    """Controller-side state (job records for re-attach). BOLTRING_HOME overrides for tests."""
    return Path(os.environ.get("BOLTRING_HOME", "~/.boltring")).expanduser()
