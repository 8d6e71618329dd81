"""What the checks tell the user to do: one line each, with commands that run as written.

An SSH failure's hint comes from its class (cluster/nodes/errors.py): the transport that failed
wrote it, knowing the exact target, port and files. Only a failure that arrives without one (an
error from elsewhere, or plain text) gets a hint here, chosen by the class, never by searching the
message for words.
"""

from __future__ import annotations

import shlex

from boltring.cluster.config.schema import Node
from boltring.cluster.config.ssh_target import parse_ssh_target
from boltring.cluster.nodes.errors import (
    AuthFailed,
    HostKeyChanged,
    HostKeyUnknown,
    TransportError,
    Unreachable,
)

SETUP = "`boltring setup`"

PYTHON_HINT = (
    "set python: in the config to an interpreter that has boltring installed "
    f"(e.g. ~/boltring/.venv/bin/python), or run {SETUP} to create one"
)
MLX_HINT = "pip install mlx in that python"

TB_LOOP_HINT = (
    "a cable loop with Thunderbolt Bridge on floods the network: remove one cable, or take "
    "the Thunderbolt ports out of the bridge and give each cable its own subnet "
    "(mlx.distributed_config --over thunderbolt --auto-setup)"
)

# RDMA over Thunderbolt (ring.backend: jaccl). Switching it on needs a person at the Mac: it is
# refused over SSH, even with sudo (MLX's docs and Apple's TN3205 say the same).
RDMA_NO_RDMA_CTL_HINT = (
    "RDMA over Thunderbolt needs macOS 26.2 or later on a Mac with Thunderbolt 5; "
    "update macOS, or use ring.backend: boltring or mlx-ring"
)
RDMA_DISABLED_HINT = (
    "enable it once at the Mac: start it in macOS Recovery, open Utilities → Terminal, run "
    "`rdma_ctl enable`, restart (it cannot be done over SSH)"
)
RDMA_NO_DEVICES_HINT = (
    "RDMA is on but no rdma_* device exists: restart the Mac, and check that its Thunderbolt "
    "ports are Thunderbolt 5 (Thunderbolt 4 shows no working RDMA)"
)
RDMA_INACTIVE_HINT = (
    "no RDMA port is PORT_ACTIVE: connect the Thunderbolt 5 cables, and enable RDMA on the Macs "
    "at the other ends too (`ibv_devinfo` shows each port's state)"
)


def ssh_command(node: Node, program: str = "ssh") -> str:
    """`ssh -p 2299 you@127.0.0.1` for a node whose ssh: is "you@127.0.0.1:2299" (OpenSSH takes
    the port as -p, never as host:port); `ssh mini2` for an alias."""
    target = node.ssh or node.name
    try:
        user, host, port = parse_ssh_target(target)
    except ValueError:
        return shlex.join([program, target])
    where = f"{user}@{host}" if user else host
    return shlex.join([program, *(["-p", str(port)] if port is not None else []), where])


def ssh_hint(node: Node, err: TransportError | str | None) -> str:
    """What to do about a node that SSH could not reach."""
    if isinstance(err, TransportError) and err.hint:
        return err.hint
    ssh = f"`{ssh_command(node)}`"
    if isinstance(err, HostKeyChanged):
        return (
            f"{node.name}'s host key changed: if it was reinstalled, remove the old key with "
            f"`ssh-keygen -R HOST` and run {ssh} once; otherwise stop, the connection may be intercepted"
        )
    if isinstance(err, HostKeyUnknown):
        return f"run {ssh} once to check and save its host key, then check again"
    if isinstance(err, AuthFailed):
        return f"copy your key to the node (`{ssh_command(node, 'ssh-copy-id')}`) or set identity_files"
    if isinstance(err, Unreachable):
        return f"check that {node.name} is on and reachable from here, then try {ssh}"
    return f"try {ssh} by hand to see why it fails"


def versions_differ_hint(what: str, mine: str) -> str:
    """boltring or mlx on a node differs from the laptop's: `boltring setup` installs the laptop's."""
    return f"run {SETUP} to install the laptop's {what} {mine} on every node"


def install_boltring_hint(node: Node) -> str:
    return (
        f"run {SETUP} to install boltring on {node.name} (or {node.python} -m pip install "
        f"boltring), or {PYTHON_HINT[0].lower() + PYTHON_HINT[1:]}"
    )


def missing_job_path_hint(node: Node, *, relative: bool = False) -> str:
    """What to do about a path the job names that `node` cannot read (the job_paths check).
    A local node is never synced: its ranks read this machine's own files, so the path is
    wrong here, not missing on a node."""
    if node.local:
        return (
            "it is not readable on this machine, where local ranks read it (local nodes are never "
            "synced): check the spelling, and that a relative path is relative to the folder you "
            "started boltring in"
        )
    return (
        "copy it to the same path on the node"
        + (" (a relative path: under the folder named)" if relative else "")
        + ", or add it to job.sync so boltring sends it"
    )
