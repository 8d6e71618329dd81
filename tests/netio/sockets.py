"""Connected TCP sockets on loopback for in-process netio tests: ring links are TCP, and
TCP's buffering (partial writes as room frees up) is what the sender paths depend on."""

from __future__ import annotations

import socket


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(accepted server side, client side), both connected over 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    return server, client
