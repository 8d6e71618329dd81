"""The worker API: what a training script sees of the data plane.

    from boltring.netio import init
    group = init()
    grads = group.average_gradients(grads)
    group.report(step=i, loss=float(loss), samples=n)

`init()` reads the job from the environment the launcher set; run alone, it is a 1-rank
group whose collectives return their input, so the same script runs with and without boltring.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .buffers import mlx_operands, numpy_operands
from .jobenv import JobEnv
from .metrics import MetricsWriter, rss_mb
from .ring import Ring


def _is_mlx_array(x: Any) -> bool:
    return type(x).__module__.startswith("mlx")


class Group:
    def __init__(self, job: JobEnv, *, log=None):
        self.job = job
        self.rank, self.size = job.rank, job.size
        self.run_dir = Path(job.run_dir) if job.run_dir else Path.cwd()
        self._log = log or (lambda msg: print(f"[rank {job.rank}] {msg}", file=sys.stderr, flush=True))
        self.ring = Ring(
            job.rank,
            job.size,
            list(job.ring),
            job.read_secret(),
            job.job_id,
            timeout=job.timeout_s,
            connect_timeout=job.connect_timeout_s,
            chunk_bytes=int(job.chunk_mb * (1 << 20)),
            log=self._log,
        )
        self.bucket_bytes = max(1 << 16, int(job.bucket_mb * (1 << 20)))
        self.metrics = MetricsWriter(job.run_dir, job.rank)
        # Counters since the last report(): they turn into per-step throughput figures.
        self._last_report_t = time.perf_counter()
        self._last_step: int | None = None
        self._mark_seconds = 0.0
        self._mark_sent = 0
        self._closed = False
        self.ring.connect()
        self.metrics.write("start", size=self.size, job=job.job_id, node=job.node)

    # -- collectives ---------------------------------------------------------------------
    def all_sum(self, x):
        """Sum of `x` over all ranks: same type, shape and dtype; bitwise identical everywhere."""
        ops = mlx_operands(x) if _is_mlx_array(x) else numpy_operands(np.asarray(x))
        self.ring.allreduce(ops.src, ops.alloc, ops.wire)
        return ops.result

    def average_gradients(self, grads):
        """Mean of a tree (dicts/lists) of mx.array over ranks, in a few large buckets.

        Leaves are grouped by dtype and concatenated into buckets of up to `bucket_mb`, so a
        model of many small tensors costs a handful of ring round trips instead of hundreds.
        """
        import mlx.core as mx
        from mlx.utils import tree_flatten, tree_unflatten

        leaves = tree_flatten(grads)
        if self.size == 1 or not leaves:
            return grads
        averaged: dict[str, Any] = {}
        for bucket in self._buckets(leaves):
            flat = (
                mx.concatenate([a.reshape(-1) for _, a in bucket])
                if len(bucket) > 1
                else bucket[0][1].reshape(-1)
            )
            summed = self.all_sum(flat)
            mean = summed / self.size if mx.issubdtype(summed.dtype, mx.floating) else summed // self.size
            offsets = np.cumsum([a.size for _, a in bucket])[:-1].tolist()
            for (key, a), part in zip(bucket, mx.split(mean, offsets) if offsets else [mean], strict=False):
                averaged[key] = part.reshape(a.shape)
        return tree_unflatten([(k, averaged[k]) for k, _ in leaves])

    def _buckets(self, leaves):
        by_dtype: dict[Any, list] = {}
        for key, a in leaves:
            by_dtype.setdefault(a.dtype, []).append((key, a))
        for items in by_dtype.values():
            bucket, nbytes = [], 0
            for key, a in items:
                if bucket and nbytes + a.nbytes > self.bucket_bytes:
                    yield bucket
                    bucket, nbytes = [], 0
                bucket.append((key, a))
                nbytes += a.nbytes
            if bucket:
                yield bucket

    def barrier(self) -> None:
        self.all_sum(np.zeros(1, dtype=np.int32))

    # -- metrics -------------------------------------------------------------------------
    def report(
        self,
        step: int,
        loss: float | None = None,
        samples: int | None = None,
        tokens: int | None = None,
        exclude_s: float = 0.0,
        **extra,
    ) -> dict:
        """Append one metrics line: throughput since the previous report, allreduce figures.

        ``samples`` is the global batch of one step; ``tokens`` (language models) is the number
        of tokens THIS rank trained on since its previous report, reported as ``tokens_per_s``.
        ``exclude_s``: seconds of the interval that were not training (a validation pass), left
        out of the throughput figures.
        """
        now = time.perf_counter()
        dt = max(now - self._last_report_t - max(exclude_s, 0.0), 1e-9)
        steps = step - self._last_step if self._last_step is not None else 1
        ar_s = self.ring.seconds - self._mark_seconds
        sent = self.ring.bytes_sent - self._mark_sent
        record = self.metrics.write(
            "step",
            step=int(step),
            loss=None if loss is None else float(loss),
            samples=samples,
            steps_per_s=steps / dt,
            samples_per_s=None if samples is None else samples * steps / dt,
            allreduce_s=ar_s,
            allreduce_gbps=(sent / ar_s / 1e9) if ar_s > 0 else None,
            bytes_sent=self.ring.bytes_sent,
            bytes_recv=self.ring.bytes_recv,
            mem_mb=rss_mb(),
            tokens_per_s=None if tokens is None else tokens / dt,
            **extra,
        )
        self._last_report_t, self._last_step = now, int(step)
        self._mark_seconds, self._mark_sent = self.ring.seconds, self.ring.bytes_sent
        return record

    def log(self, message: str) -> None:
        self._log(message)

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.metrics.write(
            "end",
            allreduce_ops=self.ring.ops,
            allreduce_s=self.ring.seconds,
            bytes_sent=self.ring.bytes_sent,
            bytes_recv=self.ring.bytes_recv,
        )
        self.ring.close()
        self.metrics.close()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def init(environ: dict[str, str] | None = None) -> Group:
    """Join the job this process was started for (or a 1-rank group when started alone).

    With ``BOLTRING_BACKEND=mlx-ring`` or ``jaccl`` the group's collectives run on
    ``mx.distributed`` (netio/mlx_group.py); the API and ``report()`` are the same."""
    job = JobEnv.from_environ(environ)
    if job.mlx_backend is not None:
        from .mlx_group import MlxGroup

        return MlxGroup(job)
    return Group(job)
