"""Bounded traffic between lab hosts, with sockets of the test process made inside namespaces."""

from __future__ import annotations

import socket
import threading
import time

from .netns import Lab


def tcp_throughput_mbit(lab: Lab, src, dst, *, seconds: float = 1.0, chunk: int = 1 << 16) -> float:
    """Mbit/s of one TCP stream src -> dst's ring address, measured at the receiver over
    `seconds` after its first byte. Takes about `seconds`; never more than seconds + 5."""
    d = lab.host(dst)
    srv = lab.socket(dst)
    cli = lab.socket(src)
    result: dict[str, float] = {}
    try:
        srv.settimeout(5)
        srv.bind((d.ring_ip, 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def receive() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                first = now = 0.0
                total = 0
                while True:
                    data = conn.recv(chunk)
                    now = time.perf_counter()
                    if not data:
                        break
                    if not first:
                        first = now  # bytes of the first read are not timed
                    else:
                        total += len(data)
                    if now - first >= seconds:
                        break
                result["mbit"] = total * 8 / max(now - first, 1e-6) / 1e6

        receiver = threading.Thread(target=receive, name="lab-throughput")
        receiver.start()
        # a small send buffer: the sender cannot run far ahead of what the link carries
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * 1024)
        cli.settimeout(0.5)
        cli.connect((d.ring_ip, port))
        buf = b"\x5a" * chunk
        deadline = time.monotonic() + seconds + 5
        while receiver.is_alive() and time.monotonic() < deadline:
            try:
                cli.send(buf)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break  # the receiver closed: done
        receiver.join(5)
    finally:
        cli.close()
        srv.close()
    if "mbit" not in result:
        raise RuntimeError(f"no throughput measured from {src} to {dst}")
    return result["mbit"]
