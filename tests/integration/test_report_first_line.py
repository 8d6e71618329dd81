"""report() on real ranks of both backends: the first line of a run (here a resume, at step 30)
counts the steps it trained and not the wait for the other ranks to start, and a half-precision
wire counts the same bytes on boltring's ring and on MLX's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.netio.jobenv import JobEnv
from tests.lmkit import free_ports

LATE_S = 1.5  # rank 1 starts this late: rank 0 waits in init() for it
STEPS, TOKENS, B, ELEMS = 10, 50, 8, 1000

WORKER = rf"""
import json, os, time
import mlx.core as mx
from boltring.netio import init

if os.environ["BOLTRING_RANK"] == "1":
    time.sleep({LATE_S})
with init() as g:
    grads = {{"w": mx.ones(({ELEMS},), dtype=mx.float32)}}
    for _ in range({STEPS}):  # a run resumed at step 30 trains steps 31..40
        time.sleep(0.01)
        g.average_gradients(grads)
    first = g.report(step=40, samples={B}, tokens={STEPS * TOKENS})
    before = g.ring.bytes_sent
    g.average_gradients(grads, wire_dtype="bfloat16")
    half = g.ring.bytes_sent - before
print("RESULT " + json.dumps({{"first": first, "half_bytes": half}}), flush=True)
"""


def _run(tmp_path: Path, backend: str, size: int = 2) -> list[dict]:
    """`size` real ranks of `backend` on loopback (as tests/integration/test_workloads_groups)."""
    port = free_ports(size)
    ring = tuple(f"127.0.0.1:{port + k}" for k in range(size))
    secret = tmp_path / f"secret-{backend}"
    secret.write_text("ab" * 32)
    secret.chmod(0o600)
    hostfile = tmp_path / f"hostfile-{backend}.json"
    hostfile.write_text(json.dumps([[a] for a in ring]))
    procs = []
    for r in range(size):
        run_dir = tmp_path / backend / f"rank{r}"
        run_dir.mkdir(parents=True)
        job = JobEnv(rank=r, size=size, job_id="t", ring=ring, run_dir=str(run_dir), backend=backend)
        env = {**os.environ, **job.to_environ(), "BOLTRING_SECRET_FILE": str(secret)}
        if backend == "mlx-ring":
            env.update(MLX_RANK=str(r), MLX_HOSTFILE=str(hostfile))
        cmd = [sys.executable, "-c", WORKER]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict]]:
    tmp = tmp_path_factory.mktemp("first-line")
    return {backend: _run(tmp, backend) for backend in ("boltring", "mlx-ring")}


@pytest.mark.parametrize("backend", ["boltring", "mlx-ring"])
def test_the_first_line_counts_the_steps_it_trained_and_not_the_wait_to_connect(runs, backend):
    for rank, res in enumerate(runs[backend]):
        first = res["first"]
        # one count of steps behind every rate: 10, not 1 (nor the step number, 40)
        assert first["tokens_per_s"] / first["steps_per_s"] == pytest.approx(TOKENS), (rank, first)
        assert first["samples_per_s"] == pytest.approx(B * first["steps_per_s"]), (rank, first)
        # rank 0 waited LATE_S for rank 1 to start; its interval begins once they are connected
        assert STEPS / first["steps_per_s"] < LATE_S, (rank, first)


def test_a_half_precision_wire_counts_the_same_bytes_on_both_backends(runs):
    # a ring moves 2 (n-1)/n of the buffer from each rank: 2 ranks, ELEMS bfloat16 values each
    for backend, results in runs.items():
        assert sum(r["half_bytes"] for r in results) == 2 * ELEMS * 2, backend
