"""The validated shape of a boltring config: plain dataclasses, no I/O.

`config.py` turns YAML (and the formats users come from) into these objects and is the
only place that reports errors with file/line/key; everything after it trusts them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RING_PORT = 52520  # first ring port; a node's k-th local rank listens on port + k
EXAMPLES = ("mlp", "charlm", "lm")  # built-in examples under cluster/train/
BACKENDS = ("boltring", "mlx-ring", "jaccl")  # who runs the collectives (ring.backend, --backend)
WIRE_DTYPES = ("float32", "bfloat16", "float16")  # what average_gradients sends (ring.wire_dtype)


@dataclass(frozen=True)
class SshOptions:
    """How the controller reaches nodes; defaults follow OpenSSH's own files."""

    config_file: str | None = "~/.ssh/config"  # aliases, HostName, User, Port, IdentityFile
    known_hosts: str | None = "~/.ssh/known_hosts"  # always checked; never disabled
    identity_files: tuple[str, ...] = ()  # extra keys besides those ssh_config names
    connect_timeout_s: float = 10.0
    keepalive_interval_s: float = 15.0
    keepalive_count_max: int = 3


@dataclass(frozen=True)
class Node:
    name: str
    ring_ip: str  # the address ranks on this node listen on (Thunderbolt Bridge, or loopback)
    local: bool = False  # run ranks as subprocesses of this machine, no SSH
    ssh: str | None = None  # "alias" from ~/.ssh/config or "user@host[:port]"
    ring_iface: str | None = None  # e.g. "bridge0"; checks find it from ring_ip when absent
    python: str = "python3"  # interpreter on the node that can import mlx and boltring
    workdir: str = "~/.boltring"  # runs/ and checkpoints/ live here on the node
    ranks: int = 1  # ranks started on this node
    chip: str | None = None
    memory_gb: float | None = None
    role: str | None = None  # informational (e.g. "controller", "worker")


@dataclass(frozen=True)
class JobSpec:
    example: str | None = "mlp"  # built-in example name, or None when script is set
    script: str | None = None  # user script path (on the controller), run on every rank
    args: tuple[str, ...] = ()  # arguments for the script / example
    steps: int = 200
    seed: int = 0
    global_batch: int = 256  # each rank takes global_batch / world_size
    learning_rate: float | None = None  # None: the example's own default
    checkpoint_every: int = 0  # 0 = no checkpoints
    log_every: int = 1  # steps between metrics lines
    data: str | None = None  # data file for examples that read one (charlm)
    module: str | None = None  # an installed module run on every rank (python -m), instead of example/script
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are pruned
    allow_nonfinite: bool = False  # False: a NaN/inf loss fails the job, naming step and rank
    restarts: int = 0  # --restarts: relaunch a failed job from its newest verified checkpoint
    restart_delay_s: float = 5.0
    sync: tuple[str, ...] = ()  # local paths sent to every node's workdir before launch, when changed
    wandb: str | None = None  # W&B project; rank 0 logs there when wandb is installed
    steps_per_eval: int = 0  # validation every N steps (lm example); 0 = none


@dataclass(frozen=True)
class RingOptions:
    port: int = DEFAULT_RING_PORT
    timeout_s: float = 60.0  # inactivity timeout inside one collective
    connect_timeout_s: float = 30.0  # how long ranks wait for their neighbours at start
    bucket_mb: float = 32.0  # gradient bucket size for average_gradients
    chunk_mb: float = 4.0  # frame payload size on the wire
    order: str = "config"  # "config": nodes in file order; "cabling": reordered to follow the cables
    backend: str = "boltring"  # one of BACKENDS
    wire_dtype: str = "float32"  # one of WIRE_DTYPES; half precision halves the bytes of average_gradients
    # jaccl: n x n RDMA device names by node (row i, column j: the device on node i that reaches
    # node j; None on the diagonal), from `--rdma-devices FILE` (mlx.distributed_config's output)
    rdma_devices: tuple[tuple[str | None, ...], ...] = ()


@dataclass(frozen=True)
class SetupOptions:
    """`boltring setup`: how nodes get the same environment as the laptop."""

    wheelhouse: str | None = None  # local folder of wheels: nodes install with --no-index
    extras: tuple[str, ...] = ()  # boltring extras installed on nodes, e.g. ("lm",)


@dataclass(frozen=True)
class Config:
    name: str
    nodes: tuple[Node, ...]
    job: JobSpec = field(default_factory=JobSpec)
    ring: RingOptions = field(default_factory=RingOptions)
    ssh: SshOptions = field(default_factory=SshOptions)
    setup: SetupOptions = field(default_factory=SetupOptions)
    source: str | None = None  # path of the file it came from ("<embedded local.yaml>" for the default)

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
