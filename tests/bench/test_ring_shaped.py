"""Benchmark (`pytest -m bench`): our ring on test hosts whose ring links are shaped with tc.

Three hosts, each ring link (tb0) bounded to 2 Gbit/s in each direction. Every rank sends
2(n-1)/n of the buffer through its one link, so the bus bandwidth can at best equal the link
rate: the ratio busbw / 2 Gbit/s is how much of the link the ring uses.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

import pytest

from boltring.netio.jobenv import JobEnv
from tests.netio.ranks import write_secret

pytestmark = [pytest.mark.bench, pytest.mark.netns]
LINK_MBIT = 2000


def test_ring_allreduce_uses_at_least_90_percent_of_a_shaped_link(lab, tmp_path):
    for h in lab.hosts:
        lab.shape(h, LINK_MBIT)
    secret = write_secret(tmp_path / "secret")
    ring = tuple(f"{h.ring_ip}:52700" for h in lab.hosts)
    procs = []
    for r, h in enumerate(lab.hosts):
        env = {
            **os.environ,
            **JobEnv(
                rank=r,
                size=len(ring),
                job_id="shaped",
                ring=ring,
                secret_file=str(secret),
                timeout_s=60,
                chunk_mb=float(os.environ.get("BENCH_CHUNK_MB", 4)),
            ).to_environ(),
        }
        procs.append(
            lab.popen(
                h,
                [
                    sys.executable,
                    "-m",
                    "boltring.cluster.train.bench_worker",
                    "--backend",
                    "boltring",
                    "--sizes",
                    str(64 << 20),
                    "--repeat",
                    "5",
                    "--warmup",
                    "1",
                ],
                env=env,
                stdout=-1,
                stderr=-1,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    result = json.loads(outs[0][0].strip().splitlines()[-1])
    n = result["ranks"]
    busbw = result["bytes"] * 2 * (n - 1) / n / statistics.median(result["times"])
    bound = LINK_MBIT * 1e6 / 8
    ratio = busbw / bound
    print(
        json.dumps(
            {
                "ranks": n,
                "bytes": result["bytes"],
                "link_mbit": LINK_MBIT,
                "busbw_gbit": busbw * 8 / 1e9,
                "ratio_of_link": ratio,
            }
        )
    )
    assert ratio >= 0.9, f"busbw {busbw * 8 / 1e9:.2f} Gbit/s is {ratio:.0%} of the {LINK_MBIT} Mbit/s link"
