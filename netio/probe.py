"""Bandwidth between two ring addresses, measured the way the ring moves bytes.

    python -m boltring.netio.probe serve --bind IP --port P [--seconds S] [--job ID]
    python -m boltring.netio.probe send  --to IP:P [--seconds S] [--bytes-limit N] [--job ID]

Both read a hex secret on stdin (never argv: argv is visible in `ps`) and prove it to each
other with the ring's own HMAC-SHA256 challenge-response (`handshake.py`: a fresh nonce each
way, `hmac.compare_digest`) before a single data byte moves. Data then travels as ring frames
(`framing.py`), so the figure includes the framing the ring pays.

The server binds only the given address (never 0.0.0.0), accepts one authenticated connection
and gives up with exit code 3 and a clear message
when nobody has authenticated within --accept-timeout seconds. It follows the ring's rule
(ring.py): a connection must complete the whole handshake within 1 s, or it is dropped (and
logged on stderr) while the server keeps waiting for the right sender, so a stranger that
connects and stays silent cannot use up the window and fail the measurement. The sender sends for at most
--seconds and at most --bytes-limit bytes, then both print one JSON line:

    {"gbps": 9.41, "bytes": 1176502272, "seconds": 1.0003, "role": "send"}

Exit codes: 0 measured, 2 bad arguments or secret, 3 nobody connected in time / could not
connect, 4 the transfer broke, 5 the peer failed the secret check.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import socket
import sys
import time

from .errors import HandshakeError, NetioError
from .framing import Channel
from .handshake import client_handshake, server_handshake

CHUNK_BYTES = 4 << 20
DEFAULT_SECONDS = 1.0
DEFAULT_BYTES_LIMIT = 8 << 30
DEFAULT_ACCEPT_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 5.0
IO_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT_S = 1.0  # the ring's rule: the whole handshake, not each read, within this
MAX_SECONDS = 30.0
SERVER_RANK, CLIENT_RANK, SIZE = 1, 0, 2

EXIT_OK, EXIT_USAGE, EXIT_NO_PEER, EXIT_BROKEN, EXIT_AUTH = 0, 2, 3, 4, 5


class ProbeFailure(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def read_secret(stream) -> bytes:
    line = stream.readline().strip()
    if not line:
        raise ProbeFailure("no secret on stdin: pass the hex secret as the first line of stdin", EXIT_USAGE)
    try:
        secret = bytes.fromhex(line)
    except ValueError:
        raise ProbeFailure("the secret on stdin is not hex", EXIT_USAGE) from None
    if len(secret) < 16:
        raise ProbeFailure(f"the secret is {len(secret)} bytes; at least 16 are needed", EXIT_USAGE)
    return secret


def check_bind_address(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ProbeFailure(f"--bind {ip!r} is not an IP address", EXIT_USAGE) from None
    if addr.is_unspecified:
        raise ProbeFailure(f"--bind {ip} would listen on every interface; give the ring address", EXIT_USAGE)
    return str(addr)


def _result(role: str, nbytes: int, seconds: float, **extra) -> dict:
    gbps = nbytes * 8 / seconds / 1e9 if seconds > 0 else 0.0
    return {"role": role, "gbps": round(gbps, 3), "bytes": nbytes, "seconds": round(seconds, 4), **extra}


def serve(
    bind: str,
    port: int,
    secret: bytes,
    *,
    job: str = "probe",
    accept_timeout: float = DEFAULT_ACCEPT_TIMEOUT,
    max_seconds: float = MAX_SECONDS,
    log=None,
    on_listening=None,
) -> dict:
    """Accept one authenticated sender on bind:port, receive until it says done, reply with the
    count. Returns the server-side measurement."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    try:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            lsock.bind((bind, port))
        except OSError as e:
            raise ProbeFailure(f"cannot listen on {bind}:{port}: {e.strerror or e}", EXIT_USAGE) from None
        lsock.listen(4)
        if on_listening:
            on_listening(lsock.getsockname()[1])
        deadline = time.monotonic() + accept_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailure(
                    f"probe server on {bind}:{port}: nobody connected and proved the "
                    f"secret within {accept_timeout:g} s",
                    EXIT_NO_PEER,
                )
            lsock.settimeout(left)
            try:
                conn, addr = lsock.accept()
            except TimeoutError:
                continue
            peer = f"{addr[0]}:{addr[1]}"
            chan = Channel(conn, f"probe sender {peer}", timeout=HANDSHAKE_TIMEOUT_S)
            # A deadline for the whole exchange: a peer that trickles bytes or says nothing must
            # not hold the one acceptor while the real sender waits in the backlog.
            chan.deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
            try:
                server_handshake(chan, secret, job, SERVER_RANK, SIZE, CLIENT_RANK)
            except NetioError as e:
                log(f"probe server: dropped {peer} within {HANDSHAKE_TIMEOUT_S:g} s: {e}")
                chan.close()
                continue
            chan.deadline = None
            try:
                return _receive(chan, max_seconds)
            finally:
                chan.close()
    finally:
        lsock.close()


def _receive(chan: Channel, max_seconds: float) -> dict:
    chan.sock.settimeout(IO_TIMEOUT)
    buf = memoryview(bytearray(CHUNK_BYTES))
    total = 0
    t0 = None
    hard_stop = time.monotonic() + max_seconds + IO_TIMEOUT
    try:
        while True:
            header = chan.recv_header("data", "done", max_payload=CHUNK_BYTES)
            if t0 is None:
                t0 = time.perf_counter()
            if header["kind"] == "done":
                break
            n = header["nbytes"]
            chan.recv_payload(buf[:n], "probe data")
            total += n
            if time.monotonic() > hard_stop:
                raise ProbeFailure("the sender kept sending past its time limit", EXIT_BROKEN)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        chan.send_frame("result", bytes=total, seconds=elapsed)
    except NetioError as e:
        raise ProbeFailure(f"transfer broke: {e}", EXIT_BROKEN) from None
    return _result("serve", total, elapsed, peer=chan.peer)


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            return socket.create_connection(
                (host, port), timeout=max(0.2, min(2.0, deadline - time.monotonic()))
            )
        except (TimeoutError, ConnectionRefusedError) as e:
            last = e  # the server may not be listening yet: retry until the deadline
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET):
                last = e
            else:
                raise ProbeFailure(
                    f"cannot connect to {host}:{port}: {e.strerror or e}", EXIT_NO_PEER
                ) from None
        time.sleep(0.05)
    reason = (getattr(last, "strerror", None) or str(last)) if last else "timed out"
    raise ProbeFailure(f"cannot connect to {host}:{port} within {timeout:g} s: {reason}", EXIT_NO_PEER)


def send(
    host: str,
    port: int,
    secret: bytes,
    *,
    seconds: float = DEFAULT_SECONDS,
    bytes_limit: int = DEFAULT_BYTES_LIMIT,
    job: str = "probe",
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> dict:
    """Connect, prove the secret, send for `seconds` (at most `bytes_limit` bytes), wait for the
    server's count. Returns the sender-side measurement (through the server's last byte)."""
    seconds = min(max(seconds, 0.05), MAX_SECONDS)
    sock = _connect(host, port, connect_timeout)
    chan = Channel(sock, f"probe server {host}:{port}", timeout=IO_TIMEOUT)
    try:
        # The whole handshake within a limit: a stranger on the port trickling bytes must not
        # hold the check (each read alone would wait IO_TIMEOUT, again and again).
        chan.deadline = time.monotonic() + IO_TIMEOUT
        try:
            client_handshake(chan, secret, job, CLIENT_RANK, SIZE, SERVER_RANK)
        except HandshakeError as e:
            raise ProbeFailure(f"secret check failed: {e}", EXIT_AUTH) from None
        except NetioError as e:
            raise ProbeFailure(f"handshake with {host}:{port} broke: {e}", EXIT_AUTH) from None
        chan.deadline = None
        payload = bytearray(CHUNK_BYTES)
        sent = 0
        t0 = time.perf_counter()
        stop = t0 + seconds
        try:
            while sent < bytes_limit and time.perf_counter() < stop:
                n = min(CHUNK_BYTES, bytes_limit - sent)
                chan.send_frame("data", memoryview(payload)[:n])
                sent += n
            chan.send_frame("done")
            header, _ = chan.recv_small("result")
        except NetioError as e:
            raise ProbeFailure(f"transfer broke after {sent} bytes: {e}", EXIT_BROKEN) from None
        elapsed = time.perf_counter() - t0
    finally:
        chan.close()
    got = header.get("bytes")
    if got != sent:
        raise ProbeFailure(f"the server counted {got} bytes, we sent {sent}", EXIT_BROKEN)
    server_s = header.get("seconds")
    extra = {}
    if isinstance(server_s, (int, float)) and server_s > 0:
        extra["server_gbps"] = round(sent * 8 / server_s / 1e9, 3)
    return _result("send", sent, elapsed, **extra)


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535; 0 picks a free one)")
    return port


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ProbeFailure(f"--to {text!r}: expected IP:PORT", EXIT_USAGE)
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None, stdin=None, stdout=None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    ap = argparse.ArgumentParser(
        prog="python -m boltring.netio.probe", description="Ring bandwidth probe (secret as hex on stdin)."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="receive one authenticated sender")
    s.add_argument("--bind", required=True, help="ring address to listen on (never 0.0.0.0)")
    s.add_argument("--port", type=_port, required=True)
    s.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help="expected send time (the server stops a sender that runs far past it)",
    )
    s.add_argument("--accept-timeout", type=float, default=DEFAULT_ACCEPT_TIMEOUT)
    s.add_argument("--job", default="probe", help="probe id both sides must agree on")
    c = sub.add_parser("send", help="send to a serving probe")
    c.add_argument("--to", required=True, metavar="IP:PORT")
    c.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    c.add_argument("--bytes-limit", type=int, default=DEFAULT_BYTES_LIMIT)
    c.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT)
    c.add_argument("--job", default="probe")
    args = ap.parse_args(argv)
    try:
        secret = read_secret(stdin)
        if args.cmd == "serve":
            bind = check_bind_address(args.bind)
            result = serve(
                bind,
                args.port,
                secret,
                job=args.job,
                accept_timeout=args.accept_timeout,
                max_seconds=min(max(args.seconds, 0.05), MAX_SECONDS) * 3,
            )
        else:
            host, port = _host_port(args.to)
            result = send(
                host,
                port,
                secret,
                seconds=args.seconds,
                bytes_limit=args.bytes_limit,
                job=args.job,
                connect_timeout=args.connect_timeout,
            )
    except ProbeFailure as e:
        print(f"probe {args.cmd}: {e}", file=sys.stderr, flush=True)
        stdout.write(json.dumps({"error": str(e), "code": e.code}) + "\n")
        stdout.flush()
        return e.code
    stdout.write(json.dumps(result) + "\n")
    stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
