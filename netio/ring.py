"""Ring allreduce over TCP: reduce-scatter then all-gather, chunked and pipelined.

Rank r listens on its ring address, connects to its right neighbour r+1 and accepts its left
neighbour r-1; both connections are authenticated (handshake.py) before any data moves.

Where each node reaches its two neighbours over separate cables, buffers above a small size are
split in two halves that travel round the ring in opposite directions at once (as MLX's ring
does), so both directions of every cable carry data. Where the ring shares one network (two
nodes on one cable, a bridge chain, a switch, ranks on one host), one direction already keeps
both ways of every cable busy, and a second would only cost CPU: see `ring_directions`.
Within one direction each
segment moves in chunks: a Sender (sender.py) streams chunks on its own thread while the
receiving thread reduces the chunks that arrive, and each reduced chunk is handed on for the
next hop at once — so send, receive and reduce overlap.

Determinism: a segment's sum is accumulated along the ring by one fixed chain of ranks and
then broadcast in the all-gather, so every rank ends with bitwise-identical results, and the
same inputs give the same bits on every run.

(Over 400 lines: connection setup, the collective and its per-direction plan share the ring's
state and error path; split apart they would have to expose each other's internals.)
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from . import unixsock
from .buffers import WIRE_DTYPES, add_into
from .errors import ConnectTimeout, FrameError, HandshakeError, NetioError, PeerTimeout, RingClosed
from .framing import DEFAULT_MAX_PAYLOAD, Channel
from .handshake import client_handshake, server_handshake
from .sender import Sender

CW, CCW = 0, 1  # clockwise: send right, receive left; counter-clockwise: the reverse
BIDIRECTIONAL_MIN_BYTES = 256 << 10  # below this, one direction: latency beats bandwidth
MIN_CHUNK_BYTES = 2 << 20  # smallest frame payload of a large collective (chunk_bytes_for)
HANDSHAKE_TIMEOUT_S = 1.0  # a peer that cannot prove the secret is dropped within this
CLIENT_HANDSHAKE_S = 5.0  # connecting side: per attempt (the acceptor may be busy dropping a stranger)


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Ring:
    def __init__(
        self,
        rank: int,
        size: int,
        addrs: list[str],
        secret: bytes,
        job_id: str,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 30.0,
        chunk_bytes: int = 4 << 20,
        directions: int = 0,
        same_host: str = "unix",
        log: Callable[[str], None] | None = None,
    ):
        if not 0 <= rank < size or (size > 1 and len(addrs) != size):
            raise ValueError(f"rank {rank} / size {size} / {len(addrs)} ring addresses do not match")
        self.rank, self.size = rank, size
        self.addrs = addrs
        self.secret, self.job_id = secret, job_id
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.chunk_bytes = max(4096, int(chunk_bytes))
        self.directions = ring_directions(directions, size, addrs)
        if same_host not in unixsock.SAME_HOST_CHOICES:
            raise ValueError(f"same_host {same_host!r}: use unix or tcp")
        self.same_host = same_host
        self.log = log or (lambda msg: None)
        self.right: Channel | None = None  # we connected to rank+1
        self.left: Channel | None = None  # rank-1 connected to us
        self._senders: list[Sender] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._error_lock = threading.Lock()
        self._scratch: dict[tuple[int, str], np.ndarray] = {}
        self._op = 0
        self.ops = 0
        self.seconds = 0.0

    # -- setup ---------------------------------------------------------------------------
    def peer_name(self, r: int) -> str:
        return f"rank {r} ({self.addrs[r]})"

    def unix_path(self, r: int) -> str | None:
        """The Unix socket rank r listens on for its left neighbour, or None: TCP."""
        left = (r - 1) % self.size  # one IP is one machine: the same host part, the same host
        if self.same_host != "unix" or parse_addr(self.addrs[r])[0] != parse_addr(self.addrs[left])[0]:
            return None
        return unixsock.socket_path(self.job_id, self.addrs[r])

    @property
    def transport(self) -> str:
        """How this rank reaches its neighbours: "tcp", "unix" or "tcp+unix" ("none" alone)."""
        if self.size == 1:
            return "none"
        own, right = self.unix_path(self.rank), self.unix_path((self.rank + 1) % self.size)
        return "+".join(sorted({"tcp" if p is None else "unix" for p in (own, right)}))

    def connect(self) -> None:
        if self.size == 1:
            return
        left = (self.rank - 1) % self.size
        right = (self.rank + 1) % self.size
        host, port = parse_addr(self.addrs[self.rank])
        own_path, right_path = self.unix_path(self.rank), self.unix_path(right)
        try:
            if own_path is None:
                listener = socket.create_server((host, port), family=_family(host), backlog=8)
            else:
                listener = unixsock.listen(own_path)
        except OSError as e:
            if own_path is not None:
                raise NetioError(
                    f"rank {self.rank} cannot listen on {unixsock.describe(own_path)}, the Unix "
                    f"socket for its left neighbour on this host: {e.strerror or e} (set "
                    f"ring.same_host: tcp to use {self.addrs[self.rank]} instead)"
                ) from None
            raise NetioError(
                f"rank {self.rank} cannot listen on {self.addrs[self.rank]}: "
                f"{e.strerror or e} (is the ring address configured on this node, "
                f"and the port free?)"
            ) from None
        deadline = time.monotonic() + self.connect_timeout
        accepted: dict[str, object] = {}
        stop = threading.Event()
        acceptor = threading.Thread(
            target=self._accept_left,
            args=(listener, left, deadline, accepted, stop),
            name="boltring-accept",
            daemon=True,
        )
        acceptor.start()
        connected = False
        try:
            self.right = self._connect_right(right, right_path, deadline)
            connected = True
        except BaseException:
            # A signal (SIGTERM: the job is being stopped) or an error: the acceptor must not
            # hold this rank until the connect timeout. It did, and the rank ignored SIGTERM
            # until the SIGKILL 5 s later.
            stop.set()
            raise
        finally:
            acceptor.join()
            listener.close()
            if own_path is not None:  # the neighbour is in (or never came): the name has done its job
                unixsock.unlink_quietly(own_path)
            if not connected and "chan" in accepted:
                # Closed, not left to the garbage collector: the left neighbour would otherwise
                # wait on a connection nobody reads until its own timeout, blaming no one.
                accepted["chan"].close()  # type: ignore[attr-defined]
        if "chan" not in accepted:
            if self.right:
                self.right.close()
            raise accepted.get("error") or NetioError(  # type: ignore[misc]
                f"rank {self.rank} stopped accepting its left neighbour {self.peer_name(left)} "
                f"on {self.addrs[self.rank]} (see this rank's log)"
            )
        left_chan: Channel = accepted["chan"]  # type: ignore[assignment]
        right_chan = self.right
        self.left = left_chan
        for chan in (left_chan, right_chan):
            chan.sock.settimeout(self.timeout)
            chan.timeout = self.timeout
        self._senders = [Sender(right_chan, self._fail), Sender(left_chan, self._fail)]
        for s in self._senders:
            s.start()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="boltring-ccw")

    def _connect_right(self, right: int, path: str | None, deadline: float) -> Channel:
        host, port = parse_addr(self.addrs[right])
        delay, last = 0.05, "no attempt"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectTimeout(
                    f"rank {self.rank} could not reach its right neighbour {self.peer_name(right)} "
                    f"within {self.connect_timeout:g} s (last error: {last}); check that it "
                    f"started and that its ring address is reachable",
                    self.peer_name(right),
                )
            try:
                if path is None:
                    sock = socket.create_connection((host, port), timeout=min(remaining, 2.0))
                else:
                    sock = unixsock.connect(path, timeout=min(remaining, 2.0))
                chan = Channel(sock, self.peer_name(right), timeout=CLIENT_HANDSHAKE_S)
                # A limit on the whole exchange, not only on each read: whatever answers at the
                # neighbour's address could trickle a byte every few seconds and hold this rank
                # far past connect_timeout (nothing else would ever time it out).
                chan.deadline = min(deadline, time.monotonic() + CLIENT_HANDSHAKE_S)
                try:
                    _tune(sock)
                    client_handshake(chan, self.secret, self.job_id, self.rank, self.size, right)
                except BaseException:
                    chan.close()
                    raise
                chan.deadline = None
                return chan
            except HandshakeError as e:
                last = str(e)
                self.log(f"handshake with {self.peer_name(right)} failed: {e}; retrying")
            except (OSError, NetioError) as e:
                last = str(e) if isinstance(e, NetioError) else (e.strerror or str(e))
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def _accept_left(
        self,
        listener: socket.socket,
        left: int,
        deadline: float,
        out: dict[str, object],
        stop: threading.Event,
    ) -> None:
        listener.settimeout(0.2)  # how soon `stop` is seen
        while not stop.is_set():
            if time.monotonic() > deadline:
                out["error"] = ConnectTimeout(
                    f"rank {self.rank} waited {self.connect_timeout:g} s on {self.addrs[self.rank]} "
                    f"but its left neighbour {self.peer_name(left)} never connected and proved the "
                    f"job secret",
                    self.peer_name(left),
                )
                return
            try:
                sock, addr = listener.accept()
            except TimeoutError:
                continue
            except OSError as e:
                out["error"] = NetioError(f"accepting ring connections failed: {e}")
                return
            who = f"{addr[0]}:{addr[1]}" if sock.family != socket.AF_UNIX else "a local process"
            try:
                _tune(sock)
            except OSError as e:  # macOS refuses TCP_NODELAY (EINVAL) on a connection already reset
                self.log(f"dropped {who} before its handshake: {e.strerror or e}")
                sock.close()
                continue
            chan = Channel(sock, f"connection from {who}", timeout=HANDSHAKE_TIMEOUT_S)
            # The whole handshake, not each read, must fit in the limit: a peer trickling bytes
            # would otherwise hold the single acceptor, and keep the genuine neighbour out.
            chan.deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
            try:
                server_handshake(chan, self.secret, self.job_id, self.rank, self.size, left)
            except NetioError as e:
                self.log(f"dropped {who} within {HANDSHAKE_TIMEOUT_S:g} s: {e}")
                chan.close()
                continue
            chan.deadline = None
            chan.peer = self.peer_name(left)
            out["chan"] = chan
            return

    # -- the collective --------------------------------------------------------------------
    def allreduce_(self, flat: np.ndarray, wire_dtype: str) -> None:
        """Sum `flat` (1-D, C-contiguous, writable) across ranks, in place."""
        self.allreduce(flat, flat, wire_dtype)

    def allreduce(self, src: np.ndarray, dst, wire_dtype: str) -> None:
        """dst = sum over ranks of src (1-D, C-contiguous, same length; src is only read).

        `dst` may be a zero-argument callable returning the array: it is called only after the
        first hop of data is on its way, so allocating (and page-faulting) the output overlaps
        with the network instead of delaying it. No copy of src into dst is ever made: every
        element of dst is written exactly once by a reduction or by a received chunk.
        """
        if src.size == 0:
            return
        if self._closed:
            raise RingClosed(f"rank {self.rank}'s ring was closed (close() was called): no collective runs")
        if self.size == 1:
            out = dst() if callable(dst) else dst
            if out is not src:
                np.copyto(out, src)
            return
        if self._error is not None:
            raise NetioError(f"the ring is broken by an earlier error: {self._error}") from self._error
        if self.left is None:
            raise NetioError("the ring is not connected (call connect() first)")
        self._op += 1
        t0 = time.perf_counter()
        if self.directions == 2 and src.nbytes >= BIDIRECTIONAL_MIN_BYTES and src.size >= 2 * self.size:
            half = src.size // 2
            parts = [(slice(0, half), CW), (slice(half, src.size), CCW)]
        else:
            parts = [(slice(0, src.size), CW)]
        try:
            plans = [self._plan_direction(src[sl], wire_dtype, d) for sl, d in parts]
            for plan in plans:  # first hop: our own segments leave at once, straight from src
                plan.send_own()
            out = dst() if callable(dst) else dst
            for plan, (sl, _) in zip(plans, parts, strict=False):
                plan.dst = out[sl]
        except BaseException as e:
            self._fail(e)
            plans = []
        if len(plans) == 2:
            assert self._pool is not None  # connect() made it
            other = self._pool.submit(plans[1].run)
            try:
                plans[0].run()
            except BaseException as e:
                self._fail(e)
            try:
                other.result()
            except BaseException as e:
                self._fail(e)
        elif plans:
            try:
                plans[0].run()
            except BaseException as e:
                self._fail(e)
        if self._error is not None:
            raise self._error
        self.ops += 1
        self.seconds += time.perf_counter() - t0

    def _fail(self, e: BaseException) -> None:
        """Record the first error and unblock every thread of this collective at once."""
        with self._error_lock:
            if self._error is not None:
                return
            self._error = e
        for chan in (self.left, self.right):
            if chan is not None:
                try:
                    chan.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _plan_direction(self, src: np.ndarray, wire: str, direction: int) -> _Direction:
        if direction == CW:
            v, recv, sender = self.rank, self.left, self._senders[0]
        else:  # the mirrored ring: rank r sits at position -r, so its "right" is rank r-1
            v, recv, sender = (-self.rank) % self.size, self.right, self._senders[1]
        assert recv is not None  # connect() made both channels
        chunk = max(1, chunk_bytes_for(src.nbytes // self.size, self.chunk_bytes) // src.itemsize)
        scratch = lambda: self._scratch_for(direction, wire, chunk)
        return _Direction(self, src, wire, v, recv, sender, chunk, scratch)

    def _scratch_for(self, direction: int, wire: str, elems: int) -> np.ndarray:
        key = (direction, wire)
        buf = self._scratch.get(key)
        if buf is None or buf.size < elems:
            buf = np.empty(elems, dtype=WIRE_DTYPES[wire])
            self._scratch[key] = buf
        return buf

    # -- accounting and teardown -----------------------------------------------------------
    @property
    def bytes_sent(self) -> int:
        return sum(c.bytes_sent for c in (self.left, self.right) if c is not None)

    @property
    def bytes_recv(self) -> int:
        return sum(c.bytes_recv for c in (self.left, self.right) if c is not None)

    def close(self) -> None:
        # Recorded first, through the error path: a collective running on another thread then
        # fails with this (its sockets are shut down under it), not with "Bad file descriptor"
        # blaming a neighbour (who would blame us back: a circle of blame).
        self._closed = True
        self._fail(RingClosed(f"rank {self.rank} closed its ring (close() was called) during a collective"))
        for s in self._senders:
            s.q.put(None)
        for chan in (self.left, self.right):
            if chan is not None:
                chan.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self.left = self.right = None


class _Direction:
    """One half of a collective travelling one way round the ring (see the module docstring).

    At position v of an n-ring, reduce-scatter step s receives segment (v-s-1) mod n from the
    left, adds it to our own values and passes the sum on; after n-1 steps segment (v+1) mod n
    holds the full sum, and the all-gather passes finished segments round, received straight
    into place. Each chunk is queued for the next hop as soon as it is reduced or received.
    """

    def __init__(
        self,
        ring: Ring,
        src: np.ndarray,
        wire: str,
        v: int,
        recv: Channel,
        sender: Sender,
        chunk: int,
        scratch: Callable[[], np.ndarray],
    ):
        self.ring, self.src, self.wire, self.v = ring, src, wire, v
        self.recv, self.sender, self.chunk = recv, sender, chunk
        self.n, self.op, self.total, self.item = ring.size, ring._op, src.size, src.itemsize
        self.base, self.extra = divmod(src.size, ring.size)
        self.dst: np.ndarray | None = None
        self.scratch_for = scratch

    def chunks(self, seg: int):
        start = seg * self.base + min(seg, self.extra)
        stop = start + self.base + (1 if seg < self.extra else 0)
        for a in range(start, stop, self.chunk):
            yield a, min(a + self.chunk, stop)

    def send(self, buf: np.ndarray, a: int, b: int, step: int) -> None:
        self.sender.submit(
            buf[a:b], {"op": self.op, "step": step, "off": a, "len": self.total, "dtype": self.wire}
        )

    def expect(self, a: int, b: int, step: int, what: str) -> None:
        # No per-chunk max_payload here: a larger chunk must fail the comparison below,
        # whose message says why (ranks disagree on shapes), before any payload is read.
        h = self.recv.recv_header("data")
        fields = (h.get("op"), h.get("step"), h.get("off"), h.get("len"), h.get("dtype"))
        if fields != (self.op, step, a, self.total, self.wire) or h["nbytes"] != (b - a) * self.item:
            raise self._mismatch(h, fields, a, b, step, what)

    def _mismatch(self, h: dict, fields: tuple, a: int, b: int, step: int, what: str) -> FrameError:
        """The error for a chunk that is not the one expected. The peer's fields come off the
        wire: anything but an int or a plain name is shown with repr, cut short (`_shown`), so
        a newline in a dtype cannot forge log lines."""
        peer, want = self.recv.peer, (b - a) * self.item
        if fields == (self.op, step, a, self.total, self.wire):  # only the chunk's size differs
            return FrameError(
                f"{peer} sent a {h['nbytes']}-byte chunk of {self.wire}[{self.total}] at offset {a} "
                f"(step {step}, op {self.op}), expected {want} bytes during {what}: the ranks split "
                f"segments into different chunks, so ring.chunk_mb or the boltring version differs "
                f"between them",
                peer,
            )
        op, st, off, length, dtype = (_shown(v) for v in fields)
        return FrameError(
            f"{peer} sent {dtype}[{length}] chunk at offset {off} (step {st}, op {op}), "
            f"expected {self.wire}[{self.total}] at offset {a} (step {step}, op {self.op}) "
            f"during {what}: every rank must call the same collectives with the same shapes and "
            f"dtypes, in the same order",
            peer,
        )

    def send_own(self) -> None:
        for a, b in self.chunks(self.v):  # reduce-scatter step 0: our own segment, from src
            self.send(self.src, a, b, 0)

    def run(self) -> None:
        n, v, src, dst, recv = self.n, self.v, self.src, self.dst, self.recv
        assert dst is not None
        # Out of place, the left's partial sum lands straight in dst and our values are added
        # there: one pass over memory fewer than a scratch buffer, and no scratch at all. In
        # place (dst is src), landing in dst would overwrite our own values before they are
        # added, so one chunk of scratch per direction is used instead.
        scratch = self.scratch_for() if np.shares_memory(src, dst) else None
        for s in range(n - 1):  # reduce-scatter: the left's partial sum plus ours, passed on
            for a, b in self.chunks((v - s - 1) % n):
                self.expect(a, b, s, "reduce-scatter")
                if scratch is None:
                    recv.recv_payload(dst[a:b].data.cast("B"), "a reduce-scatter chunk")
                    add_into(dst[a:b], dst[a:b], src[a:b], self.wire)
                else:
                    tmp = scratch[: b - a]
                    recv.recv_payload(tmp.data.cast("B"), "a reduce-scatter chunk")
                    add_into(dst[a:b], tmp, src[a:b], self.wire)
                self.send(dst, a, b, s + 1)  # next hop, or all-gather step 0 when s == n-2
        for s in range(n - 1):  # all-gather: finished segments straight into place
            step = n - 1 + s
            for a, b in self.chunks((v - s) % n):
                self.expect(a, b, step, "all-gather")
                recv.recv_payload(dst[a:b].data.cast("B"), "an all-gather chunk")
                if s < n - 2:
                    self.send(dst, a, b, step + 1)
        if not self.sender.flushed():
            self.wait_flushed()

    def wait_flushed(self) -> None:
        """Return once the sender has written every frame queued so far, or the collective has
        failed. Until then dst must not go back to the caller: the sender still reads it, and
        what the caller wrote there next would reach the neighbour as this collective's sum.

        A slow reader is waited for as long as the socket takes bytes (the sum of a large
        collective may take many timeouts to drain); no byte for the ring's timeout is a hung
        neighbour, failed through the ring's error path."""
        done = threading.Event()
        self.sender.q.put(done)
        chan, timeout = self.sender.chan, self.ring.timeout
        written, last_progress = chan.written, time.monotonic()
        while not done.wait(0.05):
            if self.ring._error is not None:
                return  # allreduce raises it; _fail shut the sockets, so nothing more leaves
            if chan.written != written:
                written, last_progress = chan.written, time.monotonic()
            elif time.monotonic() - last_progress > timeout:
                self.ring._fail(
                    PeerTimeout(
                        f"{chan.peer} accepted none of our last frames for {timeout:g} s after we "
                        f"received all of ours: it is hung or its link is down",
                        chan.peer,
                    )
                )
                return


def _shown(value: object) -> str:
    """A header field from a peer, for an error message: ints and plain names as they are."""
    if (type(value) is int) or (isinstance(value, str) and value.isidentifier() and len(value) <= 40):
        return str(value)
    return repr(value)[:40]


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def ring_directions(requested: int, size: int, addrs: list[str]) -> int:
    """How many ways round the ring a collective travels at once: 1 or 2.

    `requested` is ring.directions: 1 or 2, or 0 for auto. Two ranks always use one: each sends
    on its own connection, so one direction already keeps both ways of their link busy (measured
    with profile_ring.py, 2 ranks, 16 MiB: 8.6-9.1 ms of CPU per call against 9.7-9.8 ms with
    two). Auto picks one as well when every rank is on the same host, where there is no cable,
    only CPU: 3 local ranks x 64 MB, 45-46 ms of CPU per call against 47-50 ms with two. Across
    nodes it picks two: where each node reaches its neighbours over separate cables, the second
    direction doubles the bandwidth. Where the ring addresses share one network (a Thunderbolt
    Bridge chain, a hub, a switch) one direction already loads both ways of every cable, and the
    second only costs CPU. The controller tells those apart from the routes its checks saw and
    passes 1 or 2 (cluster/nodes/checks/ring.py, directions_from_routes); auto reaches this
    function only when it could not, and then two, because the other mistake halves the
    bandwidth."""
    if size < 3:
        return 1
    if requested in (1, 2):
        return requested
    return 1 if len({parse_addr(a)[0] for a in addrs}) == 1 else 2


def chunk_bytes_for(segment_bytes: int, max_chunk: int) -> int:
    """Frame payload for one segment: about 1/16 of it, between 2 MiB and `max_chunk`, and at
    most half the segment (down to 1 MiB).

    Small chunks start the next hop sooner; large ones cost fewer frames, and every frame costs
    CPU (header, queue hand-off, wake-ups, a socket option). Measured with
    tests/bench/profile_ring.py on the 2-core VM: 4 ranks, 64 MiB, 1 MiB frames cost each rank
    59–65 ms of CPU per call and 2 MiB frames 55–58 ms (3 runs each); 2 ranks, 16 MiB, 256 KiB
    frames 14.5 ms, 1 MiB 10.3 ms, 4 MiB 9.5 ms. Two chunks a segment at least: with one,
    every hop would wait for the whole segment before passing any of it on."""
    chunk = min(max_chunk, max(MIN_CHUNK_BYTES, segment_bytes // 16))
    # Never over what a receiver accepts in one frame (framing.DEFAULT_MAX_PAYLOAD): with a
    # large ring.chunk_mb, a segment over 4 GiB would otherwise be refused mid-collective.
    return min(chunk, max(segment_bytes // 2, 1 << 20), DEFAULT_MAX_PAYLOAD)


def _tune(sock: socket.socket) -> None:
    if sock.family == socket.AF_UNIX:
        unixsock.tune(sock)
        return
    # Small control frames must not wait for Nagle; payloads are large anyway.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
