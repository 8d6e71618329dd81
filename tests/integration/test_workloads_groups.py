"""The worker API follows the backend: `init()` on mlx-ring gives a group whose collectives run on
mx.distributed, with results that agree with boltring's ring and the same report() fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from boltring.netio.jobenv import JobEnv
from tests.lmkit import free_ports

WORKER = r"""
import json, sys
import mlx.core as mx
import numpy as np
from boltring.netio import init

with init() as g:
    r = g.rank
    out = {"type": type(g).__name__}
    out["int_sum"] = g.all_sum(np.array([r + 1, 2**20 * r, -7], dtype=np.int32)).tolist()
    out["int64_sum"] = g.all_sum(np.array([2**40 + r], dtype=np.int64)).tolist()
    rng = np.random.default_rng(r)
    out["float_sum"] = g.all_sum(mx.array(rng.standard_normal(1000).astype(np.float32))).tolist()
    grads = {"w": mx.array(rng.standard_normal((64, 33)).astype(np.float32)), "b": [mx.full((5,), float(r))]}
    avg = g.average_gradients(grads)
    out["avg_w"] = np.asarray(avg["w"]).ravel().tolist()
    out["avg_b"] = np.asarray(avg["b"][0]).tolist()
    out["async_sum"] = g.all_sum_async(np.array([r, 1], dtype=np.int32)).wait().tolist()
    half = g.average_gradients({"w": grads["w"]}, wire_dtype="bfloat16")["w"]
    out["avg_w_bf16"] = np.asarray(half).ravel().tolist()
    out["avg_w_bf16_dtype"] = str(half.dtype)
    g.barrier()
    out["report"] = sorted(g.report(step=1, loss=0.5, samples=4, tokens=100))
print("RESULT " + json.dumps(out), flush=True)
"""


def _run(tmp_path: Path, backend: str, size: int = 3) -> list[dict]:
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
        env = {
            **os.environ,
            **JobEnv(
                rank=r, size=size, job_id="t", ring=ring, run_dir=str(run_dir), backend=backend
            ).to_environ(),
            "BOLTRING_SECRET_FILE": str(secret),
        }
        if backend == "mlx-ring":
            env.update(MLX_RANK=str(r), MLX_HOSTFILE=str(hostfile))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
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


def test_mlx_ring_group_agrees_with_boltring_group(tmp_path):
    import numpy as np

    ours = _run(tmp_path, "boltring")
    mlx = _run(tmp_path, "mlx-ring")
    assert {r["type"] for r in ours} == {"Group"} and {r["type"] for r in mlx} == {"MlxGroup"}
    for a, b in zip(ours, mlx, strict=True):
        assert a["int_sum"] == b["int_sum"] == [6, 3 * 2**20, -21]  # integers: exact
        assert a["int64_sum"] == b["int64_sum"] == [3 * 2**40 + 3]
        np.testing.assert_allclose(a["float_sum"], b["float_sum"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a["avg_w"], b["avg_w"], rtol=1e-5, atol=1e-6)
        assert a["avg_b"] == b["avg_b"] == [1.0] * 5
        assert a["async_sum"] == b["async_sum"] == [3, 3]  # the same handle API on both
        assert a["avg_w_bf16_dtype"] == b["avg_w_bf16_dtype"] == "mlx.core.float32"
        np.testing.assert_allclose(a["avg_w_bf16"], a["avg_w"], rtol=2e-2, atol=2e-2)  # bf16 wire
        np.testing.assert_allclose(b["avg_w_bf16"], b["avg_w"], rtol=2e-2, atol=2e-2)
        assert a["report"] == b["report"]  # the same metrics fields whatever the backend
    assert all(r["float_sum"] == mlx[0]["float_sum"] for r in mlx)  # identical on every rank
    metrics = [
        json.loads(x) for x in (tmp_path / "mlx-ring" / "rank0" / "metrics.jsonl").read_text().splitlines()
    ]
    step = next(m for m in metrics if m["kind"] == "step")
    assert step["tokens_per_s"] > 0 and step["allreduce_s"] > 0 and step["bytes_sent"] > 0
    assert metrics[0]["backend"] == "mlx-ring"
