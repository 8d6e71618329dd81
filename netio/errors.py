"""Typed errors of the data plane. Every message names the peer and what was expected,
so a rank's log says which neighbour broke and how, never just "connection reset"."""

from __future__ import annotations


class NetioError(Exception):
    """Base class; `peer` is a human description such as "rank 1 (127.0.0.1:52521)"."""

    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


class FrameError(NetioError):
    """A frame was malformed: bad length, oversized, wrong version, wrong kind, bad header."""


class PeerClosed(NetioError):
    """The neighbour closed or reset the connection (it exited, crashed or was killed)."""


class PeerTimeout(NetioError):
    """No data moved for the inactivity timeout: the neighbour is hung or unreachable."""


class HandshakeError(NetioError):
    """A peer could not prove the job secret, or belongs to another job, rank or world size."""


class RingClosed(NetioError):
    """This rank's own ring was closed (Ring.close, Group.close): no neighbour is to blame."""


class ConnectTimeout(NetioError):
    """A ring neighbour did not come up (or never authenticated) within the connect timeout."""
