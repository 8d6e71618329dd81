"""Frames on a ring socket: a 4-byte length, a small msgpack header, then raw payload bytes.

    | u32 big-endian header length | msgpack map header | payload (header["nbytes"] bytes) |

The header is always a map with at least `v` (protocol version), `kind` and `nbytes`. The
payload is never serialised: senders pass a memoryview of the array itself to `sendmsg`, and
receivers `recv_into` a buffer they preallocated, so a tensor crosses the wire with no
user-space copy. Headers are plain msgpack (never Python object serialisation) with tight
limits, decoded with a fresh `unpackb` each time (never a reused Unpacker after an error),
and with ext types refused.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time

import msgpack

from .errors import FrameError, PeerClosed, PeerTimeout

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 4096  # headers are a few dozen bytes; anything bigger is an attack or a bug
RCVLOWAT_BYTES = 256 << 10  # wake a payload reader per this many bytes (Channel.recv_payload)
_HAS_LOWAT = hasattr(socket, "SO_RCVLOWAT")
DEFAULT_MAX_PAYLOAD = 256 << 20  # a single frame's payload; chunks are far smaller
_LEN = struct.Struct("!I")


def _refuse_ext(code, data):
    raise FrameError(f"msgpack extension type {code} is not allowed in a boltring header")


# Every msgpack ext format begins with one of these bytes (fixext 1-16, ext 8/16/32). A header
# in which none occurs holds no ext at all, so the walk below is skipped: it cost 5 us a frame,
# a quarter of a data frame's framing work.
_EXT_MARKER = re.compile(rb"[\xc7-\xc9\xd4-\xd8]")


def _has_timestamp(obj) -> bool:
    """msgpack decodes ext type -1 as a Timestamp without calling ext_hook: find those too."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, msgpack.Timestamp):
            return True
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return False


def pack_header(kind: str, nbytes: int = 0, **fields) -> bytes:
    """Length prefix + msgpack header, ready to be sent before `nbytes` of payload."""
    header = {"v": PROTOCOL_VERSION, "kind": kind, "nbytes": nbytes, **fields}
    body = msgpack.packb(header, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def unpack_header(body: bytes, peer: str) -> dict:
    try:
        header = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=MAX_HEADER_BYTES,
            max_bin_len=MAX_HEADER_BYTES,
            max_array_len=64,
            max_map_len=64,
        )
    except FrameError as e:
        raise FrameError(f"frame header from {peer} refused: {e}", peer) from None
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError …)
        raise FrameError(f"undecodable frame header from {peer}: {e}", peer) from None
    if _EXT_MARKER.search(body) and _has_timestamp(header):
        raise FrameError(
            f"frame header from {peer} refused: msgpack extension type -1 "
            f"(timestamp) is not allowed in a boltring header",
            peer,
        )
    if not isinstance(header, dict):
        raise FrameError(f"frame header from {peer} is a {type(header).__name__}, expected a map", peer)
    if header.get("v") != PROTOCOL_VERSION:
        raise FrameError(
            f"{peer} speaks protocol version {header.get('v')!r}, expected "
            f"{PROTOCOL_VERSION}: run the same boltring version on every node",
            peer,
        )
    if (
        not isinstance(header.get("kind"), str)
        or not isinstance(header.get("nbytes"), int)
        or header["nbytes"] < 0
    ):
        raise FrameError(f"frame header from {peer} lacks a valid kind/nbytes: {header!r:.200}", peer)
    return header


def _frame(kind: str, payload, fields: dict) -> tuple[list[memoryview], int]:
    """A frame as the buffers to write (header, then the payload's own memory) and its payload size."""
    view = memoryview(payload).cast("B") if payload is not None else None
    nbytes = view.nbytes if view is not None else 0
    parts = [memoryview(pack_header(kind, nbytes, **fields))]
    if view is not None and nbytes:
        parts.append(view)
    return parts, nbytes


def _unsent(parts: list[memoryview], sent: int) -> list[memoryview]:
    """What is left of `parts` after a write took `sent` bytes."""
    rest = list(parts)
    while rest and sent >= rest[0].nbytes:
        sent -= rest[0].nbytes
        rest.pop(0)
    if sent:
        rest[0] = rest[0][sent:]
    return rest


class Channel:
    """One connected socket to a named peer, with exact reads and vectored writes."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        *,
        timeout: float | None = 60.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ):
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self.max_payload = max_payload
        self.bytes_sent = 0
        self.bytes_recv = 0
        self.written = 0  # bytes the socket took, headers and partial writes included: progress
        # Optional time.monotonic() by which every read must be complete: bounds a whole
        # exchange (the handshake), where `timeout` alone only bounds each silence.
        self.deadline: float | None = None
        sock.settimeout(timeout)

    # -- sending -------------------------------------------------------------------------
    def send_frame(self, kind: str, payload=None, **fields) -> None:
        parts, nbytes = _frame(kind, payload, fields)
        self.send_parts(parts, kind)
        self.bytes_sent += nbytes

    def try_send_frame(self, kind: str, payload=None, **fields) -> list[memoryview]:
        """Write a frame without ever waiting: one `writev`, no poll. Returns what the socket did
        not take (empty when it took the whole frame); the caller must send that, with
        send_parts, before any other frame. On a blocking socket (no timeout) nothing is tried."""
        parts, nbytes = _frame(kind, payload, fields)
        self.bytes_sent += nbytes  # the caller sends the rest or the collective fails
        if self.sock.gettimeout() is None:
            return parts
        try:
            sent = os.writev(self.sock.fileno(), parts)  # the fd is O_NONBLOCK: it has a timeout
        except BlockingIOError:
            return parts
        except OSError as e:
            raise self._send_error(e, kind) from None
        self.written += sent
        return _unsent(parts, sent)

    def send_parts(self, parts: list[memoryview], what: str) -> None:
        try:
            while parts:
                sent = self.sock.sendmsg(parts)
                self.written += sent  # read by a collective waiting for its last frames (ring.py)
                parts = _unsent(parts, sent)
        except OSError as e:
            raise self._send_error(e, what) from None

    def _send_error(self, e: OSError, what: str) -> PeerTimeout | PeerClosed:
        """What a failed write means, naming the peer. (A plain function, not a context
        manager: entering and leaving one cost more than the rest of a small frame's send.)"""
        if isinstance(e, TimeoutError):
            return PeerTimeout(
                f"{self.peer} accepted no data for {self.timeout:g} s while we sent "
                f"a {what} frame: it is hung or its link is down",
                self.peer,
            )
        if isinstance(e, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return PeerClosed(
                f"{self.peer} closed the connection while we sent a {what} frame "
                f"({e.strerror or e}); see that rank's log",
                self.peer,
            )
        return PeerClosed(f"sending a {what} frame to {self.peer} failed: {e}", self.peer)

    # -- receiving -----------------------------------------------------------------------
    def recv_payload(self, view: memoryview, what: str) -> None:
        """Fill `view` with a payload announced by the last header (counted in bytes_recv).

        A large payload is read with SO_RCVLOWAT raised, so the thread wakes once per
        RCVLOWAT_BYTES that arrived instead of once per few packets: on a link slower than the
        CPU, data trickles in and each wake-up (poll, recv, a Python loop turn) costs more CPU
        than the bytes it copies."""
        lowat = min(view.nbytes, RCVLOWAT_BYTES) if view.nbytes >= RCVLOWAT_BYTES and _HAS_LOWAT else 0
        self._recv_exact(view, what, lowat)
        self.bytes_recv += view.nbytes

    def _set_lowat(self, nbytes: int) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)

    def _recv_exact(self, view: memoryview, what: str, lowat: int = 0) -> None:
        """Fill `view` exactly, or raise naming the peer and what we were waiting for.

        With `lowat`, the socket's receive low-water mark is lowered as the remaining bytes
        shrink below it (a poll waiting for more than will ever come would hang) and put back
        to 1 at the end, even on errors."""
        got, total = 0, view.nbytes
        try:
            if lowat:
                self._set_lowat(lowat)
            while got < total:
                if lowat > total - got:
                    lowat = total - got
                    self._set_lowat(lowat)
                if self.deadline is not None:
                    remaining = self.deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    self.sock.settimeout(remaining if self.timeout is None else min(remaining, self.timeout))
                n = self.sock.recv_into(view[got:], total - got)
                if n == 0:
                    raise PeerClosed(
                        f"{self.peer} closed the connection after {got} of {total} "
                        f"bytes of {what}; see that rank's log",
                        self.peer,
                    )
                got += n
        except TimeoutError:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise PeerTimeout(
                    f"{self.peer} was too slow: {what} was incomplete ({got} of {total} "
                    f"bytes) at its deadline",
                    self.peer,
                ) from None
            raise PeerTimeout(
                f"no data from {self.peer} for {self.timeout:g} s while waiting for "
                f"{what} ({got} of {total} bytes): it is hung or its link is down",
                self.peer,
            ) from None
        except (ConnectionResetError, ConnectionAbortedError) as e:
            raise PeerClosed(
                f"{self.peer} reset the connection while we waited for {what} "
                f"({e.strerror or e}); see that rank's log",
                self.peer,
            ) from None
        except OSError as e:
            raise PeerClosed(f"receiving {what} from {self.peer} failed: {e}", self.peer) from None
        finally:
            if lowat:
                try:
                    self._set_lowat(1)
                except OSError:
                    pass  # the socket is already broken; the error above says why

    def recv_header(self, *kinds: str, max_payload: int | None = None) -> dict:
        """Read one header; its kind must be one of `kinds` and its payload within limits."""
        prefix = bytearray(4)
        self._recv_exact(memoryview(prefix), "a frame header")
        (length,) = _LEN.unpack(prefix)
        if length == 0 or length > MAX_HEADER_BYTES:
            raise FrameError(
                f"{self.peer} sent a header of {length} bytes (limit "
                f"{MAX_HEADER_BYTES}): not a boltring peer, or a corrupted stream",
                self.peer,
            )
        body = bytearray(length)
        self._recv_exact(memoryview(body), "a frame header")
        header = unpack_header(bytes(body), self.peer)
        if kinds and header["kind"] not in kinds:
            raise FrameError(
                f"{self.peer} sent a {header['kind']!r} frame, expected {' or '.join(map(repr, kinds))}",
                self.peer,
            )
        limit = self.max_payload if max_payload is None else max_payload
        if header["nbytes"] > limit:
            raise FrameError(
                f"{self.peer} announced a {header['nbytes']}-byte payload, over the {limit}-byte limit",
                self.peer,
            )
        return header

    def recv_small(self, *kinds: str, max_payload: int = MAX_HEADER_BYTES) -> tuple[dict, bytes]:
        """A control frame: header plus a small payload read into fresh bytes."""
        header = self.recv_header(*kinds, max_payload=max_payload)
        payload = bytearray(header["nbytes"])
        if payload:
            self.recv_payload(memoryview(payload), f"a {header['kind']} payload")
        return header, bytes(payload)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
