"""Frames on a socket: round trips, and a typed error naming the peer for every way a stream
can be wrong (truncated, oversized, wrong version or kind, not a map, ext types, garbage,
silence). Everything runs over socket.socketpair(), in-process."""

from __future__ import annotations

import socket
import struct
import threading
import time

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from boltring.netio.errors import FrameError, NetioError, PeerClosed, PeerTimeout
from boltring.netio.framing import MAX_HEADER_BYTES, PROTOCOL_VERSION, Channel, pack_header

from .ranks import no_leftover_processes  # noqa: F401 - autouse fixture
from .sockets import tcp_pair

PEER = "rank 7 (127.0.0.1:4242)"


@pytest.fixture
def pair():
    """(reader Channel, raw writer socket); both closed afterwards."""
    a, b = socket.socketpair()
    chan = Channel(a, PEER, timeout=5.0, max_payload=1 << 20)
    yield chan, b
    chan.close()
    b.close()


def raw_frame(header, payload: bytes = b"", **packb_kwargs) -> bytes:
    body = msgpack.packb(header, use_bin_type=True, **packb_kwargs)
    return struct.pack("!I", len(body)) + body + payload


def hdr(**fields) -> dict:
    return {"v": PROTOCOL_VERSION, "kind": "data", "nbytes": 0, **fields}


# -- round trips ------------------------------------------------------------------------------
def test_round_trip_header_fields_and_payload(pair):
    chan, w = pair
    sender = Channel(w, "rank 0 (test)", timeout=5.0)
    payload = np.arange(1000, dtype=np.float32)
    sender.send_frame("data", payload, op=3, step=1, off=40, len=1000, dtype="float32")
    sender.send_frame("ok")
    h = chan.recv_header("data")
    assert h == {
        "v": 1,
        "kind": "data",
        "nbytes": 4000,
        "op": 3,
        "step": 1,
        "off": 40,
        "len": 1000,
        "dtype": "float32",
    }
    got = np.empty(1000, dtype=np.float32)
    chan.recv_payload(memoryview(got).cast("B"), "a test payload")
    np.testing.assert_array_equal(got, payload)
    assert chan.recv_small("ok") == ({"v": 1, "kind": "ok", "nbytes": 0}, b"")
    assert (sender.bytes_sent, chan.bytes_recv) == (4000, 4000)


def test_large_payload_round_trip_through_partial_sends():
    """8 MB is far more than a socket buffer: sendmsg sends it piecewise, header included."""
    a, b = socket.socketpair()
    reader = Channel(a, "reader", timeout=10.0, max_payload=64 << 20)
    writer = Channel(b, "writer", timeout=10.0)
    payload = np.random.default_rng(0).integers(0, 255, size=8 << 20, dtype=np.uint8)
    got = np.zeros_like(payload)
    errors = []

    def read():
        try:
            for i in range(2):
                h = reader.recv_header("data")
                assert h["nbytes"] == payload.nbytes and h["i"] == i
                reader.recv_payload(memoryview(got), "the big payload")
                np.testing.assert_array_equal(got, payload)
                got[:] = 0
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    try:
        writer.send_frame("data", payload, i=0)
        writer.send_frame("data", memoryview(payload), i=1)
    finally:
        t.join(timeout=20)
        reader.close()
        writer.close()
    assert not t.is_alive() and not errors, errors


# -- truncation and closed peers --------------------------------------------------------------
def test_truncated_length_prefix(pair):
    chan, w = pair
    w.sendall(b"\x00\x00")
    w.close()
    with pytest.raises(PeerClosed, match=r"after 2 of 4 bytes of a frame header") as ei:
        chan.recv_header()
    assert PEER in str(ei.value) and ei.value.peer == PEER


def test_truncated_header_body(pair):
    chan, w = pair
    w.sendall(struct.pack("!I", 20) + b"\x85\xa1v\x01\xa4")  # 5 of 20 announced bytes
    w.close()
    with pytest.raises(PeerClosed, match=r"after 5 of 20 bytes of a frame header") as ei:
        chan.recv_header()
    assert ei.value.peer == PEER and PEER in str(ei.value)


def test_peer_closes_mid_payload(pair):
    chan, w = pair
    w.sendall(raw_frame(hdr(nbytes=100), b"x" * 40))
    w.close()
    h = chan.recv_header("data")
    buf = bytearray(h["nbytes"])
    with pytest.raises(PeerClosed, match=r"after 40 of 100 bytes of a test chunk") as ei:
        chan.recv_payload(memoryview(buf), "a test chunk")
    assert ei.value.peer == PEER and str(ei.value).startswith(PEER)


def test_peer_closed_before_any_frame(pair):
    chan, w = pair
    w.close()
    with pytest.raises(PeerClosed, match=r"after 0 of 4 bytes"):
        chan.recv_header()


def test_peer_reset_is_peer_closed():
    a, b = tcp_pair()
    chan = Channel(a, PEER, timeout=5.0)
    try:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b.close()  # linger 0: an RST, not a FIN
        with pytest.raises(PeerClosed, match=r"rank 7 \(127\.0\.0\.1:4242\) (reset|closed) the connection"):
            chan.recv_header()
    finally:
        chan.close()


def test_sending_to_a_closed_peer_raises_peer_closed(pair):
    chan, w = pair
    w.close()
    with pytest.raises(
        PeerClosed, match=r"rank 7 .* while we sent a data frame|sending a data frame to rank 7"
    ):
        for _ in range(100):  # the first send may still land in the kernel buffer
            chan.send_frame("data", b"x" * 65536)


# -- limits ---------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [MAX_HEADER_BYTES + 1, 0xFFFFFFFF, 0])
def test_header_length_out_of_bounds(pair, length):
    chan, w = pair
    w.sendall(struct.pack("!I", length) + b"\x80" * 16)
    with pytest.raises(FrameError, match=rf"header of {length} bytes \(limit {MAX_HEADER_BYTES}\)") as ei:
        chan.recv_header()
    assert ei.value.peer == PEER and PEER in str(ei.value)


def test_header_of_exactly_the_limit_is_read(pair):
    chan, w = pair
    h = hdr(pad="")
    h["pad"] = "p" * (MAX_HEADER_BYTES - len(msgpack.packb(h)) - 2)  # str8 -> str16 header
    body = msgpack.packb(h)
    assert len(body) == MAX_HEADER_BYTES
    w.sendall(struct.pack("!I", len(body)) + body)
    assert chan.recv_header("data")["pad"] == h["pad"]


def test_payload_over_channel_limit(pair):
    chan, w = pair
    w.sendall(raw_frame(hdr(nbytes=(1 << 20) + 1)))
    with pytest.raises(
        FrameError, match=r"announced a 1048577-byte payload, over the 1048576-byte limit"
    ) as ei:
        chan.recv_header("data")
    assert ei.value.peer == PEER


def test_payload_over_per_call_limit(pair):
    chan, w = pair
    w.sendall(raw_frame(hdr(kind="hello", nbytes=MAX_HEADER_BYTES + 1)))
    with pytest.raises(FrameError, match=rf"over the {MAX_HEADER_BYTES}-byte limit"):
        chan.recv_small("hello")


# -- malformed headers ------------------------------------------------------------------------
@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_wrong_protocol_version(pair, version):
    chan, w = pair
    w.sendall(raw_frame(hdr(v=version)))
    with pytest.raises(FrameError, match=rf"speaks protocol version {version!r}, expected 1") as ei:
        chan.recv_header()
    assert ei.value.peer == PEER and PEER in str(ei.value)


def test_missing_version(pair):
    chan, w = pair
    w.sendall(raw_frame({"kind": "data", "nbytes": 0}))
    with pytest.raises(FrameError, match=r"protocol version None, expected 1"):
        chan.recv_header()


def test_wrong_kind(pair):
    chan, w = pair
    w.sendall(raw_frame(hdr(kind="hello")))
    with pytest.raises(FrameError, match=r"sent a 'hello' frame, expected 'data' or 'ok'") as ei:
        chan.recv_header("data", "ok")
    assert ei.value.peer == PEER


@pytest.mark.parametrize(
    "bad", [{"kind": 5}, {"kind": None}, {"nbytes": -1}, {"nbytes": "8"}, {"nbytes": 1.5}]
)
def test_invalid_kind_or_nbytes(pair, bad):
    chan, w = pair
    w.sendall(raw_frame(hdr(**bad)))
    with pytest.raises(FrameError, match=r"lacks a valid kind/nbytes"):
        chan.recv_header()


@pytest.mark.parametrize(
    "body,typename", [([1, "data", 0], "list"), (7, "int"), ("data", "str"), (None, "NoneType")]
)
def test_non_map_header(pair, body, typename):
    chan, w = pair
    w.sendall(raw_frame(body))
    with pytest.raises(FrameError, match=rf"frame header from {PEER[:6]}.* is a {typename}, expected a map"):
        chan.recv_header()


def header_with_raw_value(raw: bytes) -> bytes:
    """A valid header map plus one more entry "x" whose value is the given msgpack bytes."""
    body = msgpack.packb(hdr())
    assert body[0] == 0x83  # fixmap of 3
    return bytes([0x84]) + body[1:] + msgpack.packb("x") + raw


@pytest.mark.parametrize(
    "raw",
    [
        msgpack.packb(msgpack.ExtType(5, b"payload")),
        b"\xd4\xfb\x00",  # fixext1 of the reserved type -5
        b"\xd6\xff\x00\x00\x00\x01",  # fixext4 of type -1: a msgpack Timestamp
        msgpack.packb([1, msgpack.ExtType(127, b"")]),  # nested inside a list
    ],
    ids=["ext5", "ext-5", "timestamp", "nested"],
)
def test_ext_types_refused(pair, raw):
    chan, w = pair
    body = header_with_raw_value(raw)
    w.sendall(struct.pack("!I", len(body)) + body)
    with pytest.raises(
        FrameError,
        match=r"frame header from rank 7 .* refused: msgpack extension type -?\d+ (\(timestamp\) )?is not allowed",
    ) as ei:
        chan.recv_header()
    assert ei.value.peer == PEER


def test_non_string_map_key_refused(pair):
    chan, w = pair
    w.sendall(raw_frame({**hdr(), 5: "x"}))
    with pytest.raises(FrameError, match=r"undecodable frame header from rank 7"):
        chan.recv_header()


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1" * 10,  # 0xc1 is never used in msgpack
        msgpack.packb(hdr()) + b"\x01",  # trailing bytes after the map
        b"\x85\xa1v",  # a map cut short inside the announced length
        b"\x91" * 2000 + b"\xc0",  # nesting deeper than the unpacker's stack
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion elements
        b"\xc6\x7f\xff\xff\xff",  # a bin claiming 2 GB
    ],
    ids=["reserved-byte", "extra-data", "cut-short", "deep", "huge-array", "huge-bin"],
)
def test_garbage_header_bytes(pair, body):
    chan, w = pair
    w.sendall(struct.pack("!I", len(body)) + body)
    with pytest.raises(FrameError, match=r"undecodable frame header from rank 7 \(127\.0\.0\.1:4242\)") as ei:
        chan.recv_header()
    assert ei.value.peer == PEER


@pytest.mark.parametrize(
    "extra,ok",
    [
        ({"xs": list(range(64))}, True),
        ({"xs": list(range(65))}, False),
        ({"m": {str(i): i for i in range(64)}}, True),
        ({"m": {str(i): i for i in range(65)}}, False),
    ],
    ids=["list64", "list65", "map64", "map65"],
)
def test_header_container_limits(pair, extra, ok):
    chan, w = pair
    w.sendall(raw_frame(hdr(**extra)))
    if ok:
        assert chan.recv_header("data") == hdr(**extra)
    else:
        with pytest.raises(FrameError, match=r"undecodable frame header from rank 7 .*exceeds"):
            chan.recv_header("data")


def test_http_request_is_refused_quickly(pair):
    """What a stray HTTP client or port scanner would send."""
    chan, w = pair
    w.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(FrameError, match=r"header of \d+ bytes \(limit 4096\): not a boltring peer"):
        chan.recv_header()


# -- inactivity -------------------------------------------------------------------------------
def test_silent_peer_times_out():
    a, b = socket.socketpair()
    chan = Channel(a, PEER, timeout=0.3)
    try:
        t0 = time.monotonic()
        with pytest.raises(
            PeerTimeout,
            match=r"no data from rank 7 .* for 0\.3 s while waiting for "
            r"a frame header \(0 of 4 bytes\)",
        ) as ei:
            chan.recv_header()
        assert 0.25 <= time.monotonic() - t0 < 2.0
        assert ei.value.peer == PEER
    finally:
        chan.close()
        b.close()


def test_peer_stalling_mid_payload_times_out():
    a, b = socket.socketpair()
    chan = Channel(a, PEER, timeout=0.3)
    try:
        b.sendall(raw_frame(hdr(nbytes=100), b"y" * 40))
        h = chan.recv_header("data")
        with pytest.raises(PeerTimeout, match=r"while waiting for a test chunk \(40 of 100 bytes\)"):
            chan.recv_payload(memoryview(bytearray(h["nbytes"])), "a test chunk")
    finally:
        chan.close()
        b.close()


def test_peer_not_reading_times_out_the_sender():
    a, b = socket.socketpair()
    chan = Channel(a, PEER, timeout=0.3)
    try:
        t0 = time.monotonic()
        with pytest.raises(
            PeerTimeout,
            match=r"rank 7 .* accepted no data for 0\.3 s while we sent a "
            r"data frame",
        ):
            chan.send_frame("data", np.zeros(64 << 20, dtype=np.uint8))
        assert time.monotonic() - t0 < 3.0
    finally:
        chan.close()
        b.close()


# -- properties -------------------------------------------------------------------------------
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=40),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in ("v", "kind", "nbytes", "payload")),
    _values,
    max_size=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.text(min_size=1, max_size=20), fields=_fields, payload=st.binary(max_size=2000))
def test_random_headers_round_trip(kind, fields, payload):
    assume(len(pack_header(kind, len(payload), **fields)) <= 4 + MAX_HEADER_BYTES)
    a, b = socket.socketpair()
    reader, writer = Channel(a, "r", timeout=5.0), Channel(b, "w", timeout=5.0)
    try:
        writer.send_frame(kind, payload or None, **fields)
        h = reader.recv_header(kind)
        assert h == {"v": PROTOCOL_VERSION, "kind": kind, "nbytes": len(payload), **fields}
        got = bytearray(h["nbytes"])
        if got:
            reader.recv_payload(memoryview(got), "payload")
        assert bytes(got) == payload
    finally:
        reader.close()
        writer.close()


_garbage = st.one_of(
    st.binary(max_size=6000),
    # a plausible length prefix followed by random bytes exercises the msgpack decoder
    st.tuples(st.integers(1, 200), st.binary(max_size=300)).map(lambda t: struct.pack("!I", t[0]) + t[1]),
    # valid frames followed by junk
    st.tuples(st.binary(max_size=50), st.binary(max_size=100)).map(
        lambda t: raw_frame(hdr(nbytes=len(t[0])), t[0]) + t[1]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_garbage)
def test_random_garbage_never_hangs_and_raises_only_netio_errors(data):
    a, b = socket.socketpair()
    chan = Channel(a, "garbage peer", timeout=2.0, max_payload=1 << 16)
    try:
        b.sendall(data)
        b.shutdown(socket.SHUT_WR)  # the stream ends: a reader that waits for more would hang
        t0 = time.monotonic()
        with pytest.raises(NetioError) as ei:
            for _ in range(len(data) + 1):  # every frame consumes at least 5 bytes
                h = chan.recv_header()
                if h["nbytes"]:
                    chan.recv_payload(memoryview(bytearray(h["nbytes"])), "payload")
        assert not isinstance(ei.value, PeerTimeout), "the reader waited for bytes that never come"
        assert isinstance(ei.value, (FrameError, PeerClosed))
        assert "garbage peer" in str(ei.value) and ei.value.peer == "garbage peer"
        assert time.monotonic() - t0 < 1.0
    finally:
        chan.close()
        b.close()


# -- writes that never wait (try_send_frame) ----------------------------------------------------
@pytest.fixture
def tcp_link():
    """(reader Channel, writer socket) over TCP on loopback, as ring links are."""
    r, w = tcp_pair()
    chan = Channel(r, PEER, timeout=5.0, max_payload=1 << 20)
    yield chan, w
    chan.close()
    w.close()


def _fill(sock: socket.socket) -> int:
    """Write into `sock` until its buffers (and the peer's) are full; the bytes written."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(b"\0" * 65536)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5.0)
    return total


def _drain(sock: socket.socket, nbytes: int) -> None:
    while nbytes:
        nbytes -= len(sock.recv(min(nbytes, 1 << 20)))


def _finish_and_read(chan: Channel, sender: Channel, rest, filler: int, payload: np.ndarray, op: int):
    """Send what try_send_frame left while a reader drains `filler` bytes ahead of it, then
    reads the frame (at once: it may not fit in the sockets' buffers); it must arrive whole."""
    got = np.empty_like(payload)
    header: dict = {}

    def read() -> None:
        _drain(chan.sock, filler)
        header.update(chan.recv_header("data"))
        chan.recv_payload(memoryview(got).cast("B"), "the frame sent in two goes")

    reader = threading.Thread(target=read)
    reader.start()
    sender.send_parts(rest, "data")
    reader.join(timeout=10)
    assert not reader.is_alive() and header["op"] == op
    np.testing.assert_array_equal(got, payload)


def test_try_send_frame_sends_a_whole_frame_at_once(tcp_link):
    chan, w = tcp_link
    sender = Channel(w, "rank 0 (test)", timeout=5.0)
    payload = np.arange(256, dtype=np.float32)
    assert sender.try_send_frame("data", payload, op=1) == []
    assert sender.bytes_sent == payload.nbytes
    assert chan.recv_header("data")["op"] == 1
    got = np.empty_like(payload)
    chan.recv_payload(memoryview(got).cast("B"), "a test payload")
    np.testing.assert_array_equal(got, payload)


def test_try_send_frame_never_waits_and_returns_what_is_left(tcp_link):
    """A full socket takes nothing (or part): try_send_frame returns at once with the rest,
    and send_parts of that rest completes the frame once the reader drains: the stream stays
    whole and in order."""
    chan, w = tcp_link
    sender = Channel(w, "rank 0 (test)", timeout=5.0)
    filled = _fill(w)
    payload = np.random.default_rng(1).integers(0, 255, size=48 << 10, dtype=np.uint8)
    t0 = time.monotonic()
    rest = sender.try_send_frame("data", payload, op=2)
    assert time.monotonic() - t0 < 0.5  # no poll, no timeout: it did not wait
    assert (
        rest
        and sum(p.nbytes for p in rest) <= len(pack_header("data", payload.nbytes, op=2)) + payload.nbytes
    )
    _drain(chan.sock, 1 << 16)  # room again, but the reader is still behind the filler bytes
    _finish_and_read(chan, sender, rest, filled - (1 << 16), payload, op=2)


def test_try_send_frame_after_a_partial_write_keeps_the_frame_whole(tcp_link):
    """Room for part of a frame: the part goes, the rest comes back starting mid-frame."""
    chan, w = tcp_link
    # Fixed buffers (no autotuning), far smaller than the frame: once full, draining a little
    # can never make room for all of it (CI once saw a grown send buffer take a 128 KiB frame).
    w.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 10)
    chan.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    sender = Channel(w, "rank 0 (test)", timeout=5.0)
    filled = _fill(w)
    payload = np.arange(128 << 10, dtype=np.float32)  # 512 KiB
    whole = len(pack_header("data", payload.nbytes, op=3)) + payload.nbytes
    drained, rest = 0, None
    while rest is None or sum(p.nbytes for p in rest) == whole:  # the kernel takes nothing until
        assert drained < filled, "draining every filler byte never made room"  # enough room
        _drain(chan.sock, 16 << 10)
        drained += 16 << 10
        rest = sender.try_send_frame("data", payload, op=3)  # nothing went: the frame is unsent
    left = sum(p.nbytes for p in rest)
    assert 0 < left < whole
    _finish_and_read(chan, sender, rest, filled - drained, payload, op=3)


def test_try_send_frame_on_a_blocking_socket_writes_nothing(tcp_link):
    chan, w = tcp_link
    sender = Channel(w, "rank 0 (test)", timeout=None)  # blocking: a write there could wait
    parts = sender.try_send_frame("data", np.ones(4, np.float32))
    sender.send_parts(parts, "data")
    assert chan.recv_header("data")["nbytes"] == 16


def test_try_send_frame_to_a_closed_peer_is_peer_closed(tcp_link):
    chan, w = tcp_link
    sender = Channel(w, "rank 0 (test)", timeout=5.0)
    chan.close()
    with pytest.raises(PeerClosed, match="rank 0|closed"):
        for _ in range(3):  # the first write may still land in the buffer of a dying socket
            sender.try_send_frame("data", np.ones(1024, np.float32))
            time.sleep(0.05)
