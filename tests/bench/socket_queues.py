"""Does the ring keep a shaped link busy for the whole of each call? Samples host 0's sockets.

    python tests/bench/socket_queues.py [HOSTS [MBIT [MTU [REPEAT]]]]   (root; default 2 2000 1500 20)

Builds HOSTS test hosts (tests/lab), shapes their ring links as tests/bench/test_ring_shaped.py
does, measures plain TCP one way round (the machine limit), then runs REPEAT 64 MiB allreduces
while sampling `ss -tin` in host 0's namespace every few ms. Prints the limit, the ring's busbw,
and for host 0's sending socket (the one with the most unsent bytes) and its receiving one: how
many samples fell inside calls, the smallest unsent backlog seen inside a call, and the largest
receive queue. The sending socket's queue drops below BUSY_BYTES between calls; the script
prints each such gap's length. As many gaps as calls (REPEAT and one warm-up), each about as
long as the pause between calls, means the ring kept its queue filled for the whole of every
call; more gaps mean it starved the link inside calls. The receive queue says whether host 0
read promptly.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.test_ring_shaped import _shape_all, machine_limit, ring_busbw
from tests.lab.netns import Lab

BUSY_BYTES = 100_000  # a sending socket with more unsent bytes than this is inside a call


def parse_ss(out: str) -> list[tuple[str, str, int, int, int]]:
    """(local, peer, recv-q, send-q, notsent) per socket of `ss -Htin state established`."""
    socks: list[list[str]] = []
    for line in out.splitlines():
        if line and not line[0].isspace():
            socks.append([line, ""])
        elif socks:
            socks[-1][1] += line
    rows = []
    for head, info in socks:
        f = head.split()
        m = re.search(r"notsent:(\d+)", info)
        rows.append((f[2], f[3], int(f[0]), int(f[1]), int(m.group(1)) if m else 0))
    return rows


def queue_gaps(series: list[tuple[float, int]]) -> list[float]:
    """Lengths (s) of the stretches in which the queue stayed at or below BUSY_BYTES, from the
    last sample above it to the next one above it (the first stretch, before any call, left out)."""
    gaps, last_busy, low = [], None, False
    for t, queued in series:
        if queued > BUSY_BYTES:
            if low and last_busy is not None:
                gaps.append(t - last_busy)
            last_busy, low = t, False
        else:
            low = True
    return gaps


def main() -> int:
    hosts, mbit, mtu, repeat = (int(a) for a in [*sys.argv[1:], "2", "2000", "1500", "20"][:4])
    with Lab(hosts) as lab:
        _shape_all(lab, mbit, mtu)
        limit, _ = machine_limit(lab, hosts, 1)
        samples: list[tuple[float, str]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                out = lab.exec(lab.hosts[0], ["ss", "-Htin", "state", "established"]).stdout
                samples.append((time.monotonic(), out))
                time.sleep(0.003)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            ring = ring_busbw(lab, hosts, Path(lab.dir), repeat=repeat)
        finally:
            stop.set()
            sampler.join()
        by: dict[tuple[str, str], list[tuple[float, int, int]]] = defaultdict(list)
        for t, out in samples:
            for local, peer, recvq, sendq, _ in parse_ss(out):
                by[(local, peer)].append((t, recvq, sendq))
        sender = max(by, key=lambda k: max(s for _, _, s in by[k]))
        receiver = max(by, key=lambda k: max(r for _, r, _ in by[k]))
        gaps = queue_gaps([(t, s) for t, _, s in by[sender]])
        print(f"hosts {hosts}, {mbit} Mbit/s, MTU {mtu}: {len(samples)} samples")
        print(f"plain TCP one way round: {limit * 8 / 1e9:.3f} Gbit/s")
        print(
            f"ring: {ring['busbw'] * 8 / 1e9:.3f} Gbit/s median of {repeat} "
            f"({ring['busbw_range'][0] * 8 / 1e9:.3f}-{ring['busbw_range'][1] * 8 / 1e9:.3f})"
        )
        print(
            f"host 0 sending {sender[0]} -> {sender[1]}: {len(gaps)} gaps below {BUSY_BYTES // 1000} kB "
            f"for {repeat + 1} calls, ms: {' '.join(f'{g * 1e3:.0f}' for g in gaps)}"
        )
        recvq = sorted(r for _, r, _ in by[receiver])
        print(
            f"host 0 receiving {receiver[0]} <- {receiver[1]}: receive queue at most "
            f"{recvq[-1] / 1e6:.2f} MB, median {recvq[len(recvq) // 2] / 1e6:.2f} MB"
        )
        _shape_all(lab, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
