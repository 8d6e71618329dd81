"""The machine limit for a ring: plain TCP streams in the ring's own pattern, nothing else.

    python tcp_ring.py RANK ADDR0,ADDR1,... BYTES_PER_DIRECTION [WAYS]
    python tcp_ring.py local N BYTES      N local processes on loopback, the traffic of 4
                                          allreduces of BYTES; prints the busbw equivalent

WAYS 2 (the default): every host sends to its right neighbour and to its left one at once, and
receives from both, the traffic of boltring's ring travelling both ways round. WAYS 1: every
host sends twice the bytes to its right neighbour and receives them from its left, the traffic
of a ring travelling one way (ring.directions: 1). Either way there is no framing, no reduction
and no Python per chunk: each stream is one sendall of a preallocated buffer and recv_into
loops of 4 MiB (the kernel copies run at C speed, the GIL is released). Prints one JSON line:
seconds from the first byte to the last, the bytes this host sent, and its CPU seconds (all,
and user) and context switches over the exchange.
Run inside a test host by tests/bench/test_ring_shaped.py.
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import threading
import time

PORT_OFFSET = 100  # listens on the ring port + this, so it never meets a ring job


def main() -> int:
    rank = int(sys.argv[1])
    addrs = sys.argv[2].split(",")
    per_dir = int(sys.argv[3])
    ways = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    n = len(addrs)
    host, port = addrs[rank].rsplit(":", 1)
    listener = socket.create_server((host, int(port) + PORT_OFFSET), backlog=4)
    listener.settimeout(30)
    peers = {"right": (rank + 1) % n, "left": (rank - 1) % n}
    if ways == 1:  # one way round: all the traffic to the right, all of it from the left
        peers = {"right": peers["right"]}
        per_dir *= 2
    out: dict[str, socket.socket] = {}
    accepted: list[socket.socket] = []

    def accept() -> None:
        for _ in range(ways):
            conn, _ = listener.accept()
            accepted.append(conn)

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    deadline = time.monotonic() + 30
    for side, peer in peers.items():
        h, p = addrs[peer].rsplit(":", 1)
        while True:
            try:
                out[side] = socket.create_connection((h, int(p) + PORT_OFFSET), timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    acceptor.join()
    listener.close()
    payload = memoryview(bytearray(per_dir))
    times: dict[str, float] = {}

    def send(sock: socket.socket) -> None:
        sock.sendall(payload)

    def recv(sock: socket.socket, key: str) -> None:
        buf = memoryview(bytearray(4 << 20))
        got, first = 0, 0.0
        while got < per_dir:
            k = sock.recv_into(buf, min(len(buf), per_dir - got))
            if k == 0:
                raise ConnectionError("peer closed early")
            if not first:
                first = time.perf_counter()
            got += k
        times[key] = time.perf_counter() - first

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=send, args=(s,)) for s in out.values()]
    threads += [threading.Thread(target=recv, args=(s, f"in{i}")) for i, s in enumerate(accepted)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in [*out.values(), *accepted]:
        s.close()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)  # this host's CPU for the whole exchange
    user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    switches = ru1.ru_nvcsw - ru0.ru_nvcsw + ru1.ru_nivcsw - ru0.ru_nivcsw
    row = {"rank": rank, "seconds": max(times.values()), "sent_bytes": ways * per_dir}
    row |= {"cpu_s": user + system, "user_s": user, "switches": switches}
    print(json.dumps(row), flush=True)
    return 0


def local(n: int, nbytes: int, rounds: int = 4) -> int:
    """The loopback machine limit: N local hosts, `rounds` allreduces' worth of ring traffic;
    bytes each host sends per second, for the slowest host (comparable to busbw)."""
    import subprocess

    from boltring.cluster.config.ports import free_ports

    addrs = ",".join(f"127.0.0.1:{p - PORT_OFFSET}" for p in free_ports(n))
    per_dir = rounds * (n - 1) * nbytes // n
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(r), addrs, str(per_dir)], stdout=subprocess.PIPE, text=True
        )
        for r in range(n)
    ]
    rows = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    limit = min(r["sent_bytes"] / r["seconds"] for r in rows)
    print(json.dumps({"hosts": n, "bytes": nbytes, "machine_limit_busbw_gbps": round(limit / 1e9, 3)}))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "local":
        raise SystemExit(local(int(sys.argv[2]), int(sys.argv[3])))
    raise SystemExit(main())
