"""Sockets for in-process netio tests. Connected TCP sockets on loopback: ring links between
hosts are TCP, and TCP's buffering (partial writes as room frees up) is what the sender paths
depend on. And whether a same-host neighbour's Unix socket is still bound."""

from __future__ import annotations

import os
import socket

from boltring.netio import unixsock


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(accepted server side, client side), both connected over 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    return server, client


def unix_bound(path: str) -> bool:
    """Whether a socket is bound to `path` (for an abstract name, from /proc/net/unix)."""
    if not path.startswith("\0"):
        return os.path.exists(path)
    with open("/proc/net/unix") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(len(row) > 7 and row[-1] == unixsock.describe(path) for row in rows)
