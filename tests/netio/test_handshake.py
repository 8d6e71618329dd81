"""The ring handshake: HMAC challenge-response on the job secret, binding job id, ranks, world
size and protocol version.

First over socketpairs (client and server in threads, each closing its end on failure as the
Ring does); then against a real Ring listener, where impostors must be dropped within about a
second and logged while the genuine neighbour still gets in.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

import msgpack
import numpy as np
import psutil
import pytest

from boltring.netio import unixsock
from boltring.netio.errors import FrameError, HandshakeError, NetioError, PeerClosed
from boltring.netio.framing import Channel, pack_header
from boltring.netio.handshake import _mac, client_handshake, new_secret, server_handshake
from boltring.netio.ring import HANDSHAKE_TIMEOUT_S, Ring

from .ranks import free_ports, no_leftover_processes  # noqa: F401 - autouse fixture
from .sockets import unix_bound

SECRET = bytes(range(32))
JOB = "job-a"


# -- over a socketpair ------------------------------------------------------------------------
def run_pair(client: dict | None = None, server: dict | None = None, timeout: float = 5.0):
    """Run client_handshake and server_handshake against each other; returns their outcomes
    (None, or the exception raised). Defaults: job-a of 3 ranks, client rank 0, server rank 1."""
    c = {"secret": SECRET, "job": JOB, "rank": 0, "size": 3, "server_rank": 1, **(client or {})}
    s = {"secret": SECRET, "job": JOB, "rank": 1, "size": 3, "client_rank": 0, **(server or {})}
    a, b = socket.socketpair()
    cchan = Channel(a, "rank 1 (server end)", timeout=timeout)
    schan = Channel(b, "rank 0 (client end)", timeout=timeout)
    out: dict[str, BaseException | None] = {}

    def side(name, fn, chan, kwargs):
        try:
            fn(chan, **kwargs)
            out[name] = None
        except BaseException as e:
            out[name] = e
            chan.close()  # as the Ring does: a failed handshake closes the connection

    threads = [
        threading.Thread(target=side, args=("client", client_handshake, cchan, c)),
        threading.Thread(target=side, args=("server", server_handshake, schan, s)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 2)
    assert not any(t.is_alive() for t in threads), "a handshake side hung"
    return out, cchan, schan


def test_success_and_channel_usable_afterwards():
    out, cchan, schan = run_pair()
    try:
        assert out == {"client": None, "server": None}
        cchan.send_frame("data", b"abc", op=1)
        h, payload = schan.recv_small("data")
        assert (h["op"], payload) == (1, b"abc")
    finally:
        cchan.close()
        schan.close()


@pytest.mark.parametrize("wrong", ["client", "server"])
def test_wrong_secret_fails_on_both_sides(wrong):
    out, cchan, schan = run_pair(**{wrong: {"secret": new_secret()}})
    assert isinstance(out["client"], HandshakeError), out
    assert isinstance(out["server"], HandshakeError), out
    assert "could not prove the job secret" in str(out["client"])
    assert str(out["client"]).startswith("rank 1 (server end)")
    assert "rank 0 (client end)" in str(out["server"]) and "secret" in str(out["server"])
    assert out["client"].peer == "rank 1 (server end)" and out["server"].peer == "rank 0 (client end)"


@pytest.mark.parametrize(
    "client,server,reason",
    [
        ({"job": "job-b"}, {}, "it belongs to job 'job-b', we are job 'job-a'"),
        ({"size": 4}, {}, "it expects 4 ranks, this job has 3"),
        ({"rank": 2}, {}, "it is rank 2, expected our left neighbour rank 0"),
        ({}, {"client_rank": 2}, "it is rank 0, expected our left neighbour rank 2"),
    ],
    ids=["job", "size", "client-rank", "server-expects-other-rank"],
)
def test_mismatch_is_rejected_with_the_reason(client, server, reason):
    out, _, _ = run_pair(client, server)
    assert isinstance(out["server"], HandshakeError) and isinstance(out["client"], HandshakeError), out
    assert str(out["server"]) == f"dropped rank 0 (client end): {reason}"
    assert str(out["client"]) == f"rank 1 (server end) refused us: {reason}"


def test_server_with_another_rank_is_refused_by_the_client():
    out, _, _ = run_pair(server={"rank": 2})
    assert isinstance(out["client"], HandshakeError), out
    assert "says it is rank 2, expected rank 1" in str(out["client"])
    assert isinstance(out["server"], HandshakeError), out  # and the server learns it failed


def raw_client(sock: socket.socket):
    """A Channel for a hand-written (hostile) client."""
    return Channel(sock, "server", timeout=5.0)


def serve_in_thread(chan: Channel, **kwargs):
    out: dict = {}
    args = {"secret": SECRET, "job": JOB, "rank": 1, "size": 3, "client_rank": 0, **kwargs}

    def run():
        try:
            server_handshake(chan, **args)
            out["result"] = None
        except BaseException as e:
            out["result"] = e
            chan.close()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_reflected_server_proof_is_not_a_client_proof():
    """The transcript binds the role: echoing the server's MAC back does not authenticate."""
    a, b = socket.socketpair()
    t, out = serve_in_thread(Channel(b, "attacker", timeout=5.0))
    c = raw_client(a)
    try:
        c.send_frame("hello", job=JOB, rank=0, size=3, nonce=os.urandom(32))
        challenge, _ = c.recv_small("challenge")
        c.send_frame("auth", mac=challenge["mac"])
        with pytest.raises(PeerClosed):
            c.recv_small("ok")
    finally:
        t.join(5)
        c.close()
    assert isinstance(out["result"], HandshakeError)
    assert "could not prove the job secret" in str(out["result"])


def test_replayed_client_proof_is_refused():
    """A proof recorded for one server nonce does not work with the next one."""
    nonce_c = os.urandom(32)
    # session 1: a genuine client's proof, as an eavesdropper would record it
    a, b = socket.socketpair()
    t, out = serve_in_thread(Channel(b, "client", timeout=5.0))
    c = raw_client(a)
    c.send_frame("hello", job=JOB, rank=0, size=3, nonce=nonce_c)
    ch1, _ = c.recv_small("challenge")
    recorded = _mac(SECRET, "client", JOB, 0, 1, 3, nonce_c, ch1["nonce"])
    c.send_frame("auth", mac=recorded)
    c.recv_small("ok")
    t.join(5)
    c.close()
    assert out["result"] is None
    # session 2: the same hello and the recorded proof
    a, b = socket.socketpair()
    t, out = serve_in_thread(Channel(b, "replayer", timeout=5.0))
    c = raw_client(a)
    try:
        c.send_frame("hello", job=JOB, rank=0, size=3, nonce=nonce_c)
        ch2, _ = c.recv_small("challenge")
        assert ch2["nonce"] != ch1["nonce"]
        c.send_frame("auth", mac=recorded)
        with pytest.raises(PeerClosed):
            c.recv_small("ok")
    finally:
        t.join(5)
        c.close()
    assert isinstance(out["result"], HandshakeError), out


@pytest.mark.parametrize(
    "hello,message",
    [
        ({"rank": True}, "without a valid 'rank'"),
        ({"rank": "0"}, "without a valid 'rank'"),
        ({"job": None}, "without a valid 'job'"),
        ({"nonce": "x" * 32}, "without a valid 'nonce'"),
        ({"nonce": b"short"}, "its nonce is not 32 bytes"),
    ],
)
def test_malformed_hello_is_rejected(hello, message):
    a, b = socket.socketpair()
    t, out = serve_in_thread(Channel(b, "client", timeout=5.0))
    c = raw_client(a)
    try:
        c.send_frame("hello", **{"job": JOB, "rank": 0, "size": 3, "nonce": os.urandom(32), **hello})
        try:  # a mismatch is answered with a reject; a malformed field just closes
            h, _ = c.recv_small("reject")
            assert message in h["reason"]
        except PeerClosed:
            pass
    finally:
        t.join(5)
        c.close()
    assert isinstance(out["result"], HandshakeError) and message in str(out["result"]), out


def test_other_protocol_version_is_refused():
    a, b = socket.socketpair()
    t, out = serve_in_thread(Channel(b, "rank 0 (old boltring)", timeout=5.0))
    body = msgpack.packb(
        {"v": 2, "kind": "hello", "nbytes": 0, "job": JOB, "rank": 0, "size": 3, "nonce": os.urandom(32)},
        use_bin_type=True,
    )
    a.sendall(struct.pack("!I", len(body)) + body)
    t.join(5)
    a.close()
    assert isinstance(out["result"], FrameError)
    assert "rank 0 (old boltring) speaks protocol version 2, expected 1" in str(out["result"])


def test_client_refuses_an_unexpected_frame():
    a, b = socket.socketpair()
    c = Channel(a, "rank 1 (not a boltring server)", timeout=5.0)
    srv = Channel(b, "client", timeout=5.0)
    try:

        def answer():
            srv.recv_small("hello")
            srv.send_frame("data")

        t = threading.Thread(target=answer)
        t.start()
        with pytest.raises(
            FrameError,
            match=r"rank 1 \(not a boltring server\) sent a 'data' frame, "
            r"expected 'challenge' or 'reject'",
        ):
            client_handshake(c, SECRET, JOB, 0, 3, 1)
        t.join(5)
    finally:
        c.close()
        srv.close()


# -- against a real Ring listener -------------------------------------------------------------
class RingThread:
    """Ring.connect() in a thread, with the Ring's log lines captured."""

    def __init__(self, rank, size, addrs, secret=SECRET, job=JOB, connect_timeout=15.0, same_host="tcp"):
        self.logs: list[str] = []
        self.ring = Ring(
            rank,
            size,
            addrs,
            secret,
            job,
            timeout=5.0,
            connect_timeout=connect_timeout,
            same_host=same_host,
            log=self.logs.append,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"ring{rank}")

    def _run(self):
        try:
            self.ring.connect()
        except BaseException as e:
            self.error = e

    def start(self):
        self.thread.start()
        return self

    def join(self, timeout=20.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "Ring.connect() did not return"
        assert self.error is None, f"Ring.connect() failed: {self.error}\nlog: {self.logs}"


def connect_when_listening(addr: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(addr, timeout=5.0)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # retry interval while the listener comes up


def dial(addr: str, transport: str) -> tuple[socket.socket, str]:
    """Connect to a Ring's listener for `addr` as its left neighbour would (over TCP or its
    Unix socket); returns the socket and how the Ring's log names such a connection."""
    if transport == "tcp":
        host, port = addr.rsplit(":", 1)
        s = connect_when_listening((host, int(port)))
        return s, "{}:{}".format(*s.getsockname())
    path, deadline = unixsock.socket_path(JOB, addr), time.monotonic() + 10
    while True:
        try:
            return unixsock.connect(path, timeout=5.0), "a local process"
        except (FileNotFoundError, ConnectionRefusedError):
            assert time.monotonic() < deadline, f"nothing listens on {path}"
            time.sleep(0.02)  # retry interval while the listener comes up


def wait_for_drop(rt: RingThread, n: int, who: str, timeout: float) -> float:
    """Seconds until the Ring logged its n-th dropped connection, which must name `who`."""
    t0 = time.monotonic()
    while len(drops := [line for line in rt.logs if line.startswith("dropped")]) < n:
        assert time.monotonic() - t0 < timeout, f"no {n}th drop logged in {timeout} s: {rt.logs}"
        time.sleep(0.005)  # polling interval; the assertion is on the measured time
    assert drops[n - 1].startswith(f"dropped {who} "), drops
    return time.monotonic() - t0


def wait_for_log(rt: RingThread, needle: str, timeout: float) -> float:
    """Seconds until a log line containing `needle` appears (fails after `timeout`)."""
    t0 = time.monotonic()
    while not any(needle in line for line in rt.logs):
        assert time.monotonic() - t0 < timeout, f"no log line with {needle!r} in {timeout} s: {rt.logs}"
        time.sleep(0.005)  # polling interval; the assertion is on the measured time
    return time.monotonic() - t0


def wait_closed_by_peer(sock: socket.socket, limit: float) -> float:
    """Seconds until the other end closes `sock` (EOF or reset); fails after `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        r, _, _ = select.select([sock], [], [], 0.05)
        if r:
            try:
                if sock.recv(4096) == b"":
                    return time.monotonic() - t0
            except ConnectionResetError:
                return time.monotonic() - t0
    raise AssertionError(f"the connection was not dropped within {limit} s")


def allreduce_pair(rings, arrays):
    threads = [
        threading.Thread(target=r.allreduce_, args=(a, "float32"))
        for r, a in zip(rings, arrays, strict=False)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)


@pytest.fixture
def two_addrs():
    return [f"127.0.0.1:{p}" for p in free_ports(2)]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_ring_drops_impostors_within_a_second_and_admits_the_genuine_neighbour(two_addrs, transport):
    """Over TCP, and over the Unix socket that neighbours on one host use (ring.same_host)."""
    addrs = two_addrs
    r0 = RingThread(0, 2, addrs, same_host=transport).start()
    r1 = None
    limit = HANDSHAKE_TIMEOUT_S + 0.5  # "within 1 s", plus scheduling slack
    try:
        # 1. a client with the wrong secret, running the genuine protocol
        s, src = dial(addrs[0], transport)
        t0 = time.monotonic()
        with pytest.raises(HandshakeError, match="could not prove the job secret"):
            client_handshake(Channel(s, "rank 0", timeout=5.0), new_secret(), JOB, 1, 2, 0)
        s.close()
        wait_for_drop(r0, 1, src, limit)
        assert time.monotonic() - t0 <= limit

        # 2. a forged proof: a right-looking hello, then a random MAC
        s, src = dial(addrs[0], transport)
        c = Channel(s, "rank 0", timeout=5.0)
        c.send_frame("hello", job=JOB, rank=1, size=2, nonce=os.urandom(32))
        c.recv_small("challenge")
        c.send_frame("auth", mac=os.urandom(32))
        elapsed = wait_closed_by_peer(s, limit)
        s.close()
        wait_for_drop(r0, 2, src, 1.0)
        assert "could not prove the job secret" in [x for x in r0.logs if x.startswith("dropped")][1]
        assert elapsed <= limit

        # 3. a silent connection (a port scan, or a process that hung)
        s, src = dial(addrs[0], transport)
        elapsed = wait_closed_by_peer(s, 5.0)
        s.close()
        assert elapsed <= limit, f"a silent connection held the listener for {elapsed:.2f} s"
        wait_for_drop(r0, 3, src, 1.0)

        # 4. a slow connection that trickles a valid hello, one byte every 0.2 s
        s, src = dial(addrs[0], transport)
        frame = pack_header("hello", job=JOB, rank=1, size=2, nonce=os.urandom(32))
        t0 = time.monotonic()
        dropped_after = None
        for byte in frame:
            try:
                s.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped_after = time.monotonic() - t0
                break
            r, _, _ = select.select([s], [], [], 0.2)
            if r:
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                if data == b"":
                    dropped_after = time.monotonic() - t0
                    break
        s.close()
        assert dropped_after is not None and dropped_after <= limit, (
            f"a connection trickling its hello was not dropped within {limit} s "
            f"(dropped after {dropped_after}); it would keep the genuine neighbour out"
        )
        wait_for_drop(r0, 4, src, 1.0)

        # the genuine left neighbour still gets in, and the ring works
        r1 = RingThread(1, 2, addrs, same_host=transport).start()
        r0.join()
        r1.join()
        assert r0.ring.left.peer == f"rank 1 ({addrs[1]})"
        a = [np.array([1, 2, 3], dtype=np.float32), np.array([10, 20, 30], dtype=np.float32)]
        allreduce_pair([r0.ring, r1.ring], a)
        for x in a:
            np.testing.assert_array_equal(x, [11, 22, 33])
    finally:
        for rt in (r0, r1):
            if rt is not None:
                rt.thread.join(20)
                rt.ring.close()
    assert len([line for line in r0.logs if line.startswith("dropped")]) == 4, r0.logs
    assert r0.ring.transport == transport
    if transport == "unix":  # the socket's name went with its listener, once the neighbour was in
        assert not unix_bound(unixsock.socket_path(JOB, addrs[0]))


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_ring_skips_an_impostor_right_neighbour_and_keeps_waiting(two_addrs, transport):
    """Rank 0 reaches a server with the wrong secret on rank 1's address (or its Unix socket):
    it logs, retries, and connects once the genuine rank 1 listens there (well before the
    connect timeout)."""
    addrs = two_addrs
    if transport == "tcp":
        impostor = socket.create_server(("127.0.0.1", int(addrs[1].rsplit(":", 1)[1])))
    else:
        impostor = unixsock.listen(unixsock.socket_path(JOB, addrs[1]))
    impostor.settimeout(10)
    r0 = RingThread(0, 2, addrs, same_host=transport).start()
    r1 = None
    try:
        conn, _ = impostor.accept()
        with pytest.raises(NetioError):
            server_handshake(Channel(conn, "rank 0", timeout=5.0), new_secret(), JOB, 1, 2, 0)
        conn.close()
        impostor.close()
        wait_for_log(r0, "failed", 5.0)
        assert any(
            f"handshake with rank 1 ({addrs[1]}) failed" in line and "secret" in line and "retrying" in line
            for line in r0.logs
        ), r0.logs
        r1 = RingThread(1, 2, addrs, same_host=transport).start()
        r0.join()
        r1.join()
        a = [np.ones(5, dtype=np.float32), np.full(5, 2, dtype=np.float32)]
        allreduce_pair([r0.ring, r1.ring], a)
        np.testing.assert_array_equal(a[0], np.full(5, 3))
    finally:
        impostor.close()
        for rt in (r0, r1):
            if rt is not None:
                rt.thread.join(20)
                rt.ring.close()


def test_listener_binds_only_the_ring_address():
    p0, p1 = free_ports(2, host="127.0.0.3")
    addrs = [f"127.0.0.3:{p0}", f"127.0.0.4:{p1}"]
    r0 = RingThread(0, 2, addrs).start()
    r1 = None
    try:
        deadline = time.monotonic() + 10
        while True:
            listening = [
                c
                for c in psutil.Process().net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == p0
            ]
            if listening or time.monotonic() > deadline:
                break
            time.sleep(0.01)  # polling until the listener exists
        assert [tuple(c.laddr) for c in listening] == [("127.0.0.3", p0)]
        for other in ("127.0.0.1", "127.0.0.4"):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((other, p0), timeout=2).close()
        r1 = RingThread(1, 2, addrs).start()
        r0.join()
        r1.join()
        assert r0.logs == [] and r1.logs == []  # nobody else ever reached the listeners
    finally:
        for rt in (r0, r1):
            if rt is not None:
                rt.thread.join(20)
                rt.ring.close()


def test_a_trickling_right_neighbour_cannot_hold_a_rank_past_its_connect_timeout(two_addrs):
    """Something listening on rank 1's address accepts rank 0 and trickles a valid-looking
    challenge, a byte a second: each read is quick, so only a limit on the whole exchange ends
    it. Rank 0 must give up within its connect timeout (2 s), naming its right neighbour."""
    addrs = two_addrs
    impostor = socket.create_server(("127.0.0.1", int(addrs[1].rsplit(":", 1)[1])))
    impostor.settimeout(10)
    stop = threading.Event()

    def trickle() -> None:
        frame = pack_header("challenge", nonce=os.urandom(32), proof=os.urandom(32)) * 100
        while not stop.is_set():
            try:
                conn, _ = impostor.accept()
            except OSError:
                return
            with conn:
                for byte in frame:
                    if stop.wait(1.0):  # one byte a second, forever
                        return
                    try:
                        conn.send(bytes([byte]))
                    except OSError:
                        break

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    r0 = RingThread(0, 2, addrs, connect_timeout=2.0)
    t0 = time.monotonic()
    try:
        r0.start().thread.join(15)
        elapsed = time.monotonic() - t0
        assert not r0.thread.is_alive(), "a trickling neighbour held Ring.connect() for 15 s"
        assert elapsed < 4.0, f"connect took {elapsed:.1f} s against a 2 s connect timeout"
        assert "could not reach its right neighbour rank 1" in str(r0.error), r0.error
    finally:
        stop.set()
        impostor.close()
        feeder.join(5)
        r0.thread.join(5)
        r0.ring.close()


def test_a_connection_that_fails_to_tune_is_dropped_and_the_neighbour_still_gets_in(two_addrs, monkeypatch):
    """macOS refuses TCP_NODELAY (EINVAL) on a connection its peer already reset. Linux accepts
    it, so the kernel's answer is injected for the first accepted connection only; the stranger
    that makes it is real, and so is everything else. The acceptor must drop it, log it and keep
    listening: it died, and rank 0 failed with a bare KeyError."""
    from boltring.netio import ring as ring_module

    real_tune, failed = ring_module._tune, []

    def tune(sock: socket.socket) -> None:
        if not failed and sock.getsockname()[1] == int(two_addrs[0].rsplit(":", 1)[1]):
            failed.append(sock)
            raise OSError(22, "Invalid argument")
        real_tune(sock)

    monkeypatch.setattr(ring_module, "_tune", tune)
    r0 = RingThread(0, 2, two_addrs).start()
    r1 = None
    try:
        s, src = dial(two_addrs[0], "tcp")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # a reset, as a stranger's scan leaves it
        wait_for_drop(r0, 1, src, 5.0)
        assert "Invalid argument" in r0.logs[0], r0.logs
        r1 = RingThread(1, 2, two_addrs).start()
        r0.join()
        r1.join()
        a = [np.ones(4, dtype=np.float32), np.full(4, 5, dtype=np.float32)]
        allreduce_pair([r0.ring, r1.ring], a)
        np.testing.assert_array_equal(a[1], np.full(4, 6))
    finally:
        for rt in (r0, r1):
            if rt is not None:
                rt.thread.join(20)
                rt.ring.close()
