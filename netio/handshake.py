"""Mutual proof of the per-job secret before any tensor byte moves.

The connecting rank (client) and the accepting rank (server) each send a fresh 32-byte
nonce; each answers with HMAC-SHA256(secret, transcript), where the transcript binds the
role, job id, both ranks, world size and both nonces. So a replayed answer, a peer from
another job or an impostor on the Thunderbolt network fails. The server proves first, so
anyone who connects and says hello gets one server MAC before it is dropped: it cannot
replay it (the next connection has a fresh nonce_s) or turn it into a client proof (the
role differs), and against a random 32-byte secret (JobEnv.read_secret requires one) it is
of no use for guessing the secret offline. No tensor byte moves before both proofs.

Text a peer sends (a reject's reason, a job id) is shown escaped and cut short: the peer may
not have proved anything yet, and a newline in it would forge lines in this rank's log.

    client → hello {job, rank, size, nonce_c}
    server → challenge {rank, nonce_s, mac_s}       (server proves first: it saw nonce_c)
    client → auth {mac_c}
    server → ok
"""

from __future__ import annotations

import hashlib
import hmac
import os

import msgpack

from .errors import HandshakeError, NetioError
from .framing import Channel

SECRET_BYTES = 32


def _mac(
    secret: bytes,
    role: str,
    job: str,
    client_rank: int,
    server_rank: int,
    size: int,
    nonce_c: bytes,
    nonce_s: bytes,
) -> bytes:
    transcript = msgpack.packb(
        ["boltring-ring-v1", role, job, client_rank, server_rank, size, nonce_c, nonce_s], use_bin_type=True
    )
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def _field(header: dict, key: str, kind: type, chan: Channel):
    value = header.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HandshakeError(f"{chan.peer} sent a {header.get('kind')} without a valid {key!r}", chan.peer)
    return value


def client_handshake(chan: Channel, secret: bytes, job: str, rank: int, size: int, server_rank: int) -> None:
    """Run on the rank that connected; raises HandshakeError if the server is not our peer."""
    nonce_c = os.urandom(32)
    chan.send_frame("hello", job=job, rank=rank, size=size, nonce=nonce_c)
    header, _ = chan.recv_small("challenge", "reject")
    if header["kind"] == "reject":
        raise HandshakeError(f"{chan.peer} refused us: {_reason(header)}", chan.peer)
    their_rank = _field(header, "rank", int, chan)
    nonce_s = _field(header, "nonce", bytes, chan)
    mac_s = _field(header, "mac", bytes, chan)
    if their_rank != server_rank:
        _refuse(chan, f"you are rank {their_rank}, rank {rank} expected rank {server_rank} there")
        raise HandshakeError(
            f"{chan.peer} says it is rank {their_rank}, expected rank {server_rank}", chan.peer
        )
    expected = _mac(secret, "server", job, rank, server_rank, size, nonce_c, nonce_s)
    if not hmac.compare_digest(mac_s, expected):
        _refuse(
            chan,
            f"your proof of the job secret did not verify for job {job!r}: "
            f"the two ranks hold different secrets",
        )
        raise HandshakeError(
            f"{chan.peer} could not prove the job secret: it is not part of job "
            f"{job} (another job on the same port, or an impostor)",
            chan.peer,
        )
    chan.send_frame("auth", mac=_mac(secret, "client", job, rank, server_rank, size, nonce_c, nonce_s))
    chan.recv_small("ok")


def server_handshake(chan: Channel, secret: bytes, job: str, rank: int, size: int, client_rank: int) -> None:
    """Run on the rank that accepted; raises HandshakeError (after telling the peer) on mismatch."""
    header, _ = chan.recv_small("hello")
    their_job = _field(header, "job", str, chan)
    their_rank = _field(header, "rank", int, chan)
    their_size = _field(header, "size", int, chan)
    nonce_c = _field(header, "nonce", bytes, chan)
    problem = None
    if their_job != job:
        problem = f"it belongs to job {their_job!r:.80}, we are job {job!r}"
    elif their_size != size:
        problem = f"it expects {their_size} ranks, this job has {size}"
    elif their_rank != client_rank:
        problem = f"it is rank {their_rank}, expected our left neighbour rank {client_rank}"
    elif len(nonce_c) != 32:
        problem = "its nonce is not 32 bytes"
    if problem:
        chan.send_frame("reject", reason=problem)
        raise HandshakeError(f"dropped {chan.peer}: {problem}", chan.peer)
    nonce_s = os.urandom(32)
    chan.send_frame(
        "challenge",
        rank=rank,
        nonce=nonce_s,
        mac=_mac(secret, "server", job, client_rank, rank, size, nonce_c, nonce_s),
    )
    header, _ = chan.recv_small("auth", "reject")
    if header["kind"] == "reject":  # the client could not verify our proof, or our rank
        raise HandshakeError(f"dropped {chan.peer}: it refused us: {_reason(header)}", chan.peer)
    mac_c = _field(header, "mac", bytes, chan)
    if not hmac.compare_digest(mac_c, _mac(secret, "client", job, client_rank, rank, size, nonce_c, nonce_s)):
        raise HandshakeError(f"dropped {chan.peer}: it could not prove the job secret", chan.peer)
    chan.send_frame("ok")


def _reason(header: dict) -> str:
    """A reject's reason as one line of at most 300 characters: control and other unprintable
    characters escaped as repr would (a newline becomes the two characters \\n)."""
    reason = header.get("reason")
    if reason is None:
        return "no reason given"
    if not isinstance(reason, str):
        return repr(reason)[:300]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason[:300])


def _refuse(chan: Channel, reason: str) -> None:
    """Tell the server why we hang up, so that its log says so too (best effort)."""
    try:
        chan.send_frame("reject", reason=reason)
    except NetioError:
        pass


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)
