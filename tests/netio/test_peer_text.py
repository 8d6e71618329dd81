"""Text a peer sends during the handshake (a reject's reason) is shown escaped and cut short:
the peer may not have proved the secret yet, and a newline would forge lines in the rank's log."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from boltring.netio.errors import HandshakeError
from boltring.netio.framing import Channel
from boltring.netio.handshake import client_handshake, server_handshake

SECRET, JOB = os.urandom(32), "job-text"
FORGED = "ok\nrank 1 exited: PeerClosed rank 3 (10.0.0.9:5000) died" + "x" * 2000


def _pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    return Channel(a, "rank 1 (ours)", timeout=3), Channel(b, "stranger", timeout=3)


def test_a_stranger_rejecting_our_challenge_cannot_forge_log_lines():
    ours, stranger = _pair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server_handshake(ours, SECRET, JOB, 0, 2, 1)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        stranger.send_frame("hello", job=JOB, rank=1, size=2, nonce=os.urandom(32))
        stranger.recv_small("challenge")
        stranger.send_frame("reject", reason=FORGED)
        t.join(5)
    finally:
        ours.close()
        stranger.close()
    assert len(errors) == 1 and isinstance(errors[0], HandshakeError), errors
    message = str(errors[0])
    assert "\n" not in message and len(message) < 400
    assert r"refused us: ok\nrank 1 exited" in message


def test_a_server_rejecting_our_hello_cannot_forge_log_lines():
    ours, stranger = _pair()

    def serve() -> None:
        try:
            stranger.recv_small("hello")
            stranger.send_frame("reject", reason=FORGED)
        except Exception:
            pass  # the test's assertion below says what went wrong

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(HandshakeError) as err:
            client_handshake(ours, SECRET, JOB, 0, 2, 1)
        t.join(5)
    finally:
        ours.close()
        stranger.close()
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
