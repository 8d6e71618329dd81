"""Ring ports: the default block, and free ports for local ranks, all below the ephemeral range.

Outgoing connections take their local port from the kernel's ephemeral range: 32768-60999 on
Linux, 49152-65535 on macOS. A listening port inside it can be taken by any process's outgoing
connection on the same address (another job's ranks on loopback, an editor's language server)
before a rank binds it, and the job then fails with "Address already in use". Ports below 32768
are only ever taken on purpose.
"""

from __future__ import annotations

import random
import socket

EPHEMERAL_START = 32768  # the lowest first port of the usual ephemeral ranges (Linux)
DEFAULT_RING_PORT = 25250  # first ring port; a node's k-th local rank listens on port + k
# Where the pickers look: above the default's block (room for 256 ranks on a node, so a job
# on the default ports never meets a picked one) and below the ephemeral range.
_PICK_LOW, _PICK_HIGH = DEFAULT_RING_PORT + 256, EPHEMERAL_START - 768

_rng = random.Random()
_Avoid = set[int] | frozenset[int]


def bindable(host: str, port: int) -> bool:
    """Can a listener bind host:port right now?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the ranks' listeners do
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, host: str = "127.0.0.1", avoid: _Avoid = frozenset()) -> int:
    """A first port p such that p .. p+count-1 are free on `host` now and none is in `avoid`.

    The ports are below the ephemeral range, so nothing takes them by chance before the ranks
    bind them; two callers can still race for the same block, which `avoid` prevents within one
    process."""
    for _ in range(2000):
        first = _rng.randrange(_PICK_LOW, _PICK_HIGH - count)
        block = range(first, first + count)
        if not avoid.isdisjoint(block):
            continue
        if all(bindable(host, p) for p in block):
            return first
    raise OSError(f"no {count} consecutive free ports on {host} between {_PICK_LOW} and {_PICK_HIGH}")


def free_ports(n: int, host: str = "127.0.0.1", avoid: _Avoid = frozenset()) -> list[int]:
    """`n` distinct ports, each free on `host` now and not in `avoid` (one per local rank)."""
    ports: list[int] = []
    for _ in range(2000 + 20 * n):
        if len(ports) == n:
            return ports
        port = _rng.randrange(_PICK_LOW, _PICK_HIGH)
        if port not in avoid and port not in ports and bindable(host, port):
            ports.append(port)
    raise OSError(f"no {n} free ports on {host} between {_PICK_LOW} and {_PICK_HIGH}")
