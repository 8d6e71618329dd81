"""Counters for boltring's allreduce, per rank and per call: where the time and memory go.

    python tests/bench/profile_ring.py RANKS BYTES [REPEAT [unix|tcp]]

Starts RANKS local ranks, talking over Unix sockets (or loopback TCP with `tcp`: see
ring.same_host). Each times REPEAT all_sum calls of a float32 mx.array of BYTES and prints one
JSON line with, per call:
- wall ms (median), user and system CPU ms and minor page faults (resource.getrusage);
- ms spent inside Channel.recv_header (mostly waiting for the left neighbour), recv_payload
  (recv_into), send_parts (sendmsg; on the sender threads) and add_into, and how many calls;
- recv_into system calls, and bytes copied per byte reduced: kernel copies of every byte sent
  and received, the additions' two reads and one write, MLX's zero-fill of the output and
  the kernel's zeroing of freshly faulted pages, over the buffer's size.
For native frames too: py-spy record --native -o out.svg -- python tests/bench/profile_ring.py …
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict


def worker(nbytes: int, repeat: int) -> None:
    import mlx.core as mx

    from boltring.netio import framing, ring
    from boltring.netio.group import init

    stats: dict[str, float] = defaultdict(float)
    lock = threading.Lock()

    def timed(obj, name: str) -> None:
        orig = getattr(obj, name)

        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                with lock:
                    stats[f"{name}_ms"] += (time.perf_counter() - t0) * 1e3
                    stats[f"{name}_calls"] += 1

        setattr(obj, name, call)

    for name in ("recv_header", "recv_payload", "send_parts"):
        timed(framing.Channel, name)
    timed(ring, "add_into")
    orig_add = ring.add_into

    def counting_add(out, a, b, wire):
        with lock:
            stats["add_bytes_out"] += out.nbytes
        return orig_add(out, a, b, wire)

    ring.add_into = counting_add  # type: ignore[assignment]
    group = init()
    for chan in (group.ring.left, group.ring.right):
        sock = chan.sock

        class Counting:  # counts recv_into system calls on this channel's socket
            def __getattr__(self, name, _sock=sock):
                return getattr(_sock, name)

            def recv_into(self, *a, _sock=sock):
                stats["recv_into_syscalls"] += 1
                return _sock.recv_into(*a)

        chan.sock = Counting()  # type: ignore[assignment]
    x = mx.ones((nbytes // 4,), dtype=mx.float32)
    mx.eval(x)
    for _ in range(2):
        group.all_sum(x)
    group.barrier()
    stats.clear()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    sent0, recv0 = group.ring.bytes_sent, group.ring.bytes_recv
    times = []
    for _ in range(repeat):
        group.barrier()
        t0 = time.perf_counter()
        y = group.all_sum(x)
        times.append(time.perf_counter() - t0)
        del y
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    per = {k: round(v / repeat, 3) for k, v in stats.items()}
    faults = (ru1.ru_minflt - ru0.ru_minflt) / repeat
    # Memory passes per call: the kernel copies every byte sent and received once, each
    # addition reads two operands and writes one, MLX zero-fills the output, and the kernel
    # zeroes every freshly faulted page.
    copied = (
        (group.ring.bytes_sent - sent0 + group.ring.bytes_recv - recv0) / repeat
        + 3 * per.get("add_bytes_out", 0)
        + x.nbytes
        + faults * 4096
    )
    # a barrier is one tiny collective per repeat: its frames are in the counts above
    out = {
        "rank": group.rank,
        "ranks": group.size,
        "bytes": x.nbytes,
        "wall_ms_median": round(statistics.median(times) * 1e3, 2),
        "user_ms": round((ru1.ru_utime - ru0.ru_utime) / repeat * 1e3, 2),
        "sys_ms": round((ru1.ru_stime - ru0.ru_stime) / repeat * 1e3, 2),
        "minor_faults": round(faults, 1),
        "bytes_copied_per_byte_reduced": round(copied / x.nbytes, 2),
        **per,
    }
    print(json.dumps(out), flush=True)
    group.close()


def launch(ranks: int, nbytes: int, repeat: int, same_host: str = "unix") -> int:
    from boltring.cluster.config.ports import free_ports
    from boltring.netio.jobenv import JobEnv

    with tempfile.TemporaryDirectory() as tmp:
        secret = os.path.join(tmp, "secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, secrets.token_bytes(32).hex().encode())
        os.close(fd)
        addrs = tuple(f"127.0.0.1:{p}" for p in free_ports(ranks))
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(nbytes), str(repeat)],
                env={
                    **os.environ,
                    **JobEnv(
                        rank=r,
                        size=ranks,
                        job_id="profile",
                        ring=addrs,
                        secret_file=secret,
                        same_host=same_host,
                    ).to_environ(),
                },
            )
            for r in range(ranks)
        ]
        return max(p.wait(timeout=600) for p in procs)


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        raise SystemExit(
            launch(
                int(sys.argv[1]),
                int(sys.argv[2]),
                int(sys.argv[3]) if len(sys.argv) > 3 else 20,
                sys.argv[4] if len(sys.argv) > 4 else "unix",
            )
        )
