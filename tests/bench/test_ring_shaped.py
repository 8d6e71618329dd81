"""Benchmark (`pytest -m bench`): our ring on test hosts whose ring links are shaped with tc.

Four test hosts; rings of 2, 3 and 4 of them; each host's ring link (tb0) bounded to 2, 5 or
10 Gbit/s in each direction; a 64 MiB float32 allreduce, median of 5.

- Link bound: every rank sends 2(n-1)/n of the buffer through its one link, so busbw can at
  best equal the link rate.
- Machine limit, measured in the same run on the same shaped hosts: plain TCP streams in the
  ring's pattern (tcp_ring.py: no framing, no reduction), both one way round (each host sends
  right and receives from the left, as the ring here does) and two ways (each host sends and
  receives both ways at once); the limit is the faster of the two. On this 2-core VM every
  host's kernel work shares the same two cores, so above a few Gbit/s the cores, not the
  links, limit both.
- Bars (issue 13): at 2 Gbit/s within 5% of the link bound; at 5 and 10 Gbit/s within 15% of
  the lower of the link bound and the machine limit. Each row says which one limits.
- The test hosts hang off one bridge, one link each, as Macs on a switch would: the ring runs
  with ring.directions 1, the setting for that topology (a second direction would add CPU and
  no bandwidth; README, Performance).
- Half-precision wire: average_gradients of the same float32 buffer sent as bfloat16, against
  average_gradients with the default float32 wire; effective busbw counts float32 bytes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.netio.jobenv import JobEnv
from tests.lab.fixtures import require_lab
from tests.lab.netns import Lab
from tests.netio.ranks import write_secret

pytestmark = [pytest.mark.bench, pytest.mark.netns]
SIZE = 64 << 20
PORT = 52700
TCP_RING = Path(__file__).with_name("tcp_ring.py")
DIRECTIONS = 1  # one link per host (a bridge, like a switch): see the module docstring


@pytest.fixture(scope="module")
def lab4():
    require_lab()
    with Lab(4) as lab:
        yield lab


def _shape_all(lab: Lab, mbit: float | None, mtu: int = 1500) -> None:
    """tc shaping on every host's ring link, and the ring network's MTU (1500, or 9000 for
    jumbo frames: the bridge, each bridge-side veth and each host's tb0)."""
    for h in lab.hosts:
        lab.shape(h, mbit)
    for h in lab.hosts:
        subprocess.run(["ip", "link", "set", h.ring_veth, "mtu", str(mtu)], check=True)
        subprocess.run(["ip", "-n", h.ns, "link", "set", "tb0", "mtu", str(mtu)], check=True)
    subprocess.run(["ip", "link", "set", f"{lab.id}br", "mtu", str(mtu)], check=True)


def ring_busbw(
    lab: Lab, n: int, tmp: Path, *, wire: str = "", dtype: str = "float32", repeat: int = 5
) -> dict:
    """Median busbw (bytes/s) of a 64 MiB allreduce over the first n hosts; with `wire`,
    average_gradients sending the float32 buffer as that dtype (effective busbw); with a
    2-byte `dtype`, the ring alone on a buffer of that dtype and half the bytes."""
    hosts = lab.hosts[:n]
    secret = write_secret(tmp / f"secret-{n}-{wire or 'f32'}-{dtype}")
    nbytes = SIZE if dtype == "float32" else SIZE // 2
    ring = tuple(f"{h.ring_ip}:{PORT}" for h in hosts)
    procs = []
    for r, h in enumerate(hosts):
        env = {
            **os.environ,
            **JobEnv(
                rank=r,
                size=n,
                job_id="shaped",
                ring=ring,
                secret_file=str(secret),
                timeout_s=60,
                directions=DIRECTIONS,
            ).to_environ(),
        }
        argv = [sys.executable, "-m", "boltring.cluster.train.bench_worker", "--backend", "boltring"]
        argv += ["--sizes", str(nbytes), "--repeat", str(repeat), "--warmup", "1", "--dtype", dtype]
        argv += ["--wire-dtype", wire] if wire else []
        procs.append(lab.popen(h, argv, env=env, stdout=-1, stderr=-1, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    result = json.loads(outs[0][0].strip().splitlines()[-1])
    times = result["times"]
    factor = 2 * (n - 1) / n * result["bytes"]
    return {
        "cpu_ms_per_call": result.get("cpu_ms_per_call"),
        "user_ms_per_call": result.get("user_ms_per_call"),
        "switches_per_call": result.get("switches_per_call"),
        "directions": result.get("directions"),
        "median_s": statistics.median(times),
        "busbw": factor / statistics.median(times),
        "busbw_range": [factor / max(times), factor / min(times)],
    }


def machine_limit(lab: Lab, n: int, ways: int, rounds: int = 4) -> tuple[float, float]:
    """Bytes/s each host sends in the ring pattern with plain TCP, one or two `ways` round the
    ring (the slowest host's figure), and host 0's CPU ms per allreduce's worth of traffic."""
    hosts = lab.hosts[:n]
    addrs = ",".join(f"{h.ring_ip}:{PORT}" for h in hosts)
    per_dir = rounds * (n - 1) * SIZE // n  # `rounds` allreduces' worth of traffic, each way
    argv = [sys.executable, str(TCP_RING)]
    procs = [
        lab.popen(h, [*argv, str(r), addrs, str(per_dir), str(ways)], stdout=-1, stderr=-1, text=True)
        for r, h in enumerate(hosts)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    rows = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    return min(r["sent_bytes"] / r["seconds"] for r in rows), rows[0]["cpu_s"] * 1e3 / rounds


@pytest.mark.parametrize("mtu", [1500, 9000])
@pytest.mark.parametrize("mbit", [2000, 5000, 10000])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_against_link_bound_and_machine_limit(lab4, tmp_path, n, mbit, mtu):
    _shape_all(lab4, mbit, mtu)
    try:
        # The machine is shared: measure the limit right before and right after the ring,
        # one way and two ways round, and compare against the faster pattern's mean.
        before = {ways: machine_limit(lab4, n, ways) for ways in (1, 2)}
        ring = ring_busbw(lab4, n, tmp_path)
        after = {ways: machine_limit(lab4, n, ways) for ways in (2, 1)}
    finally:
        _shape_all(lab4, None)
    means = {ways: (before[ways][0] + after[ways][0]) / 2 for ways in (1, 2)}
    fastest = max(means, key=means.__getitem__)
    limit = means[fastest]
    link = mbit * 1e6 / 8
    bound = min(link, limit)
    which = "link" if link <= limit else "machine"
    row = {
        "hosts": n,
        "mtu": mtu,
        "bytes": SIZE,
        "link_gbit": mbit / 1000,
        "machine_limit_gbit": round(limit * 8 / 1e9, 2),
        "machine_limit_ways": fastest,
        "machine_limit_before_after_gbit": {
            f"{ways}-way": [round(before[ways][0] * 8 / 1e9, 2), round(after[ways][0] * 8 / 1e9, 2)]
            for ways in (1, 2)
        },
        # what plain TCP cost host 0 for the same traffic, in the faster pattern: the ring's
        # framing, reduction and output allocation come on top of this
        "tcp_rank0_cpu_ms_per_allreduce": round((before[fastest][1] + after[fastest][1]) / 2, 1),
        "limited_by": which,
        "busbw_gbit": round(ring["busbw"] * 8 / 1e9, 3),
        "busbw_range_gbit": [round(b * 8 / 1e9, 3) for b in ring["busbw_range"]],
        "of_link": round(ring["busbw"] / link, 4),
        "of_bound": round(ring["busbw"] / bound, 4),
        "rank0_cpu_ms_per_call": round(ring["cpu_ms_per_call"], 1),
        "rank0_user_ms_per_call": round(ring["user_ms_per_call"], 1),
        "rank0_switches_per_call": round(ring["switches_per_call"]),
        "directions": ring["directions"],
    }
    print(json.dumps(row))
    if mbit == 2000 and mtu == 9000:  # the link bound itself, whatever the machine limit says
        assert ring["busbw"] >= 0.95 * link, row
    elif mbit == 2000:
        # At MTU 1500, TCP/IP and Ethernet headers take 4.4% of every frame: even plain TCP
        # streams stay near 95.5% of the link, so the bar is 95% of what TCP itself carries.
        assert ring["busbw"] >= 0.95 * bound, row
    else:
        assert ring["busbw"] >= 0.85 * bound, row


@pytest.mark.parametrize("n", [2, 3, 4])
def test_half_precision_wire_on_a_shaped_link(lab4, tmp_path, n):
    """bfloat16 on the wire halves the bytes: average_gradients' effective busbw (float32 bytes
    averaged per second) should be near twice what it is with the default float32 wire on a
    2 Gbit/s link. Both include the mean; the bfloat16 one adds the casts to bfloat16 and back,
    which run before and after the ring. The ring alone on a bfloat16 buffer of half the bytes,
    against the float32 ring alone (all_sum), shows what the wire itself gives."""
    _shape_all(lab4, 2000)
    try:
        f32 = ring_busbw(lab4, n, tmp_path, wire="float32")
        bf16 = ring_busbw(lab4, n, tmp_path, wire="bfloat16")
        f32_ring = ring_busbw(lab4, n, tmp_path)
        ring_alone = ring_busbw(lab4, n, tmp_path, dtype="bfloat16")
    finally:
        _shape_all(lab4, None)
    row = {
        "hosts": n,
        "link_gbit": 2.0,
        "float32_busbw_gbit": round(f32["busbw"] * 8 / 1e9, 3),
        "bfloat16_effective_busbw_gbit": round(bf16["busbw"] * 8 / 1e9, 3),
        "speedup": round(bf16["busbw"] / f32["busbw"], 3),
        # average_gradients with bfloat16 against the float32 ring alone (all_sum, no mean)
        "speedup_over_all_sum": round(bf16["busbw"] / f32_ring["busbw"], 3),
        # the same float32 bytes' worth moved by the ring alone as bfloat16: half the time
        "ring_alone_speedup": round(f32_ring["median_s"] / ring_alone["median_s"], 3),
        # what average_gradients adds to the ring: the casts and the mean, the mean alone
        "casts_and_mean_ms": round((bf16["median_s"] - ring_alone["median_s"]) * 1e3, 1),
        "float32_mean_ms": round((f32["median_s"] - f32_ring["median_s"]) * 1e3, 1),
    }
    print(json.dumps(row))
    assert bf16["busbw"] >= 1.6 * f32["busbw"], row
