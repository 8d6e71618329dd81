"""The worker API: what a training script sees of the data plane.

    from boltring.netio import init
    group = init()
    grads = group.average_gradients(grads)
    group.report(step=i, loss=float(loss), samples=n)

`init()` reads the job from the environment the launcher set; run alone, it is a 1-rank
group whose collectives return their input, so the same script runs with and without boltring.

A NaN or infinite loss given to `report()` raises :class:`NonFiniteLoss` unless the job sets
`job.allow_nonfinite: true` (BOLTRING_ALLOW_NONFINITE=1; `group.allow_nonfinite`): the rank
fails, and the job with it, naming the step and the rank, as the built-in examples do.
"""

from __future__ import annotations

import concurrent.futures
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .buffers import (
    keep_freed_memory,
    keep_mlx_buffers,
    mlx_async_operands,
    mlx_inplace_operands,
    mlx_operands,
    numpy_operands,
    widened_mean,
)
from .jobenv import JobEnv
from .metrics import MetricsWriter, rss_mb
from .ring import Ring

HALF_WIRE = ("bfloat16", "float16")  # wire dtypes average_gradients may cast float32 buckets to


def _is_mlx_array(x: Any) -> bool:
    return type(x).__module__.startswith("mlx")


class Pending:
    """A collective started by all_sum_async: wait() returns its result or raises its error."""

    def __init__(self, future: concurrent.futures.Future, result: Any):
        self._future, self._result = future, result

    def done(self) -> bool:
        return self._future.done()

    def wait(self):
        self._future.result()
        return self._result

    def exception(self) -> BaseException | None:
        """Wait for the collective; its error, or None (never raises)."""
        return self._future.exception()


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training on would only spread it through the ring."""


def check_loss(loss: float, *, step: int, rank: int, allow: bool) -> None:
    """Raise NonFiniteLoss when ``loss`` is NaN or infinite and the job does not allow it.

    The one check of every loop: the built-in examples' own (cluster/train/loop.py, lm.py) and
    ``Group.report``'s, which is how a script's loss is checked. The runner prints the error as
    one line and records it for the controller, whose verdict is the message up to
    " (job.allow_nonfinite" (jobs/blame.py): keep that wording."""
    if allow or math.isfinite(loss):
        return
    what = "NaN" if math.isnan(loss) else "infinite"
    raise NonFiniteLoss(
        f"loss became {what} at step {step} on rank {rank} (job.allow_nonfinite: true lets the run continue)"
    )


class Group:
    def __init__(self, job: JobEnv, *, log=None):
        self._init_rank(job, log)
        self.ring = Ring(
            job.rank,
            job.size,
            list(job.ring),
            job.read_secret(),
            job.job_id,
            timeout=job.timeout_s,
            connect_timeout=job.connect_timeout_s,
            chunk_bytes=int(job.chunk_mb * (1 << 20)),
            directions=job.directions,
            same_host=job.same_host,
            log=self._log,
        )
        self.metrics = MetricsWriter(job.run_dir, job.rank)
        if self.size > 1:
            keep_freed_memory()  # outputs of every step reuse warm memory (see buffers.py)
            keep_mlx_buffers()
        self.ring.connect()
        # The first report's interval starts here, not before the connect: waiting for the other
        # ranks to start is not training (the "start" line below marks the same moment).
        self._last_report_t = time.perf_counter()
        self.metrics.write(
            "start",
            size=self.size,
            job=job.job_id,
            node=job.node,
            wire_dtype=job.wire_dtype,
            overlap=job.overlap,
            directions=self.ring.directions,
            transport=self.ring.transport,
        )

    def _init_rank(self, job: JobEnv, log) -> None:
        """What every group holds whichever backend moves its bytes (MlxGroup shares it): who
        this rank is, where it logs, and the counters report() turns into per-step figures."""
        self.job = job
        self.rank, self.size = job.rank, job.size
        # report() refuses a NaN/inf loss unless this is True (job.allow_nonfinite); the built-in
        # loops set it from their own --allow-nonfinite, a script may set it itself.
        self.allow_nonfinite = job.allow_nonfinite
        self.run_dir = Path(job.run_dir) if job.run_dir else Path.cwd()
        self._log = log or (lambda msg: print(f"[rank {job.rank}] {msg}", file=sys.stderr, flush=True))
        self.bucket_bytes = max(1 << 16, int(job.bucket_mb * (1 << 20)))
        self._last_report_t = time.perf_counter()
        self._last_step: int | None = None
        self._grad_steps = 0  # average_gradients calls since the last report: steps trained (report)
        self._mark_seconds = 0.0
        self._mark_sent = 0
        self._closed = False
        self._comm: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[Pending] = []

    # -- collectives ---------------------------------------------------------------------
    def all_sum(self, x):
        """Sum of `x` over all ranks: same type, shape and dtype; bitwise identical everywhere."""
        self._drain()  # collectives run in call order on every rank: queued ones go first
        ops = mlx_operands(x) if _is_mlx_array(x) else numpy_operands(np.asarray(x))
        self.ring.allreduce(ops.src, ops.alloc, ops.wire)
        return ops.result

    def all_sum_async(self, x) -> Pending:
        """Start the sum of `x` over all ranks on the communication thread and return at once;
        `.wait()` returns what all_sum would. Collectives run one at a time in call order, so
        every rank must start the same ones in the same order (as for all_sum).

        An mx.array is not evaluated on this thread: its evaluation is started (mx.async_eval)
        and the communication thread waits for it before summing, as average_gradients with
        overlap does, so a lazy x costs the caller nothing here.

        A numpy array is read in place, by the communication thread, while the collective runs:
        do not modify it until wait() returns (pass a copy to reuse the buffer at once). No
        copy is made here: it would cost a pass over the whole buffer and as much memory again
        on every call, to protect against a reuse the caller can avoid (a non-contiguous x is
        copied anyway, at call time, into the C order the ring reads)."""
        if _is_mlx_array(x):
            ready, result = mlx_async_operands(x)
        else:
            ops = numpy_operands(np.asarray(x))
            ready, result = (lambda: ops), ops.result

        def run() -> None:
            ops = ready()
            self.ring.allreduce(ops.src, ops.alloc, ops.wire)

        return self._submit(run, result)

    def _submit(self, run: Callable[[], None], result: Any) -> Pending:
        if self._comm is None:
            self._comm = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="boltring-comm")
        pending = Pending(self._comm.submit(run), result)
        self._pending = [p for p in self._pending if not p.done()]  # finished ones hold memory
        self._pending.append(pending)
        return pending

    def _drain(self) -> None:
        while self._pending:
            self._pending.pop(0).wait()

    def average_gradients(self, grads, *, overlap: bool | None = None, wire_dtype: str | None = None):
        """Mean of a tree (dicts/lists) of mx.array over ranks, in a few large buckets.

        Leaves are grouped by dtype and concatenated into buckets of up to `bucket_mb`, so a
        model of many small tensors costs a handful of ring round trips instead of hundreds.
        The concatenation is ours, so it is summed in place: no second buffer.

        wire_dtype ("bfloat16"/"float16", default the job's ring.wire_dtype) sends float32
        buckets in half precision: half the bytes. Each hop adds in float32 and rounds once to
        the wire dtype; the mean is taken in float32.

        overlap=True (default the job's ring.overlap) starts evaluating the buckets last layer
        first (mx.async_eval) and reduces each bucket on the communication thread as soon as it
        is ready, while MLX still computes the rest of the backward pass.
        """
        import mlx.core as mx
        from mlx.utils import tree_flatten, tree_unflatten

        self._grad_steps += 1
        flat_tree: Any = tree_flatten(grads)
        leaves: list[tuple[str, Any]] = list(flat_tree)
        if self.size == 1 or not leaves:
            return grads
        wire = wire_dtype or self.job.wire_dtype
        overlap = self.job.overlap if overlap is None else overlap
        if wire not in HALF_WIRE and wire != "float32":
            raise ValueError(f"wire_dtype {wire!r}: use float32, bfloat16 or float16")
        # Backprop finishes the last layers first: with overlap, their bucket goes first.
        buckets = list(self._buckets(leaves[::-1] if overlap else leaves))
        flats = [self._bucket_array(bucket, wire) for bucket in buckets]
        if overlap:
            mx.async_eval(*[f for f, _ in flats])
        done: list[tuple[Any, Any]] = []
        for flat, owned in flats:
            if not overlap:
                done.append((self._reduce_bucket(flat, owned), None))
                continue
            mx.eval(flat)  # this bucket's share of the backward pass; later ones still run
            done.append(self._reduce_bucket_async(flat, owned))
        averaged: dict[str, Any] = {}
        for bucket, (summed, pending) in zip(buckets, done, strict=True):
            if pending is not None:
                summed = pending.wait()
            dtype = bucket[0][1].dtype
            if summed.dtype != dtype:  # half-precision wire: back to float32, then the mean
                mean = widened_mean(str(dtype).split(".")[-1], self.size)(summed)
            elif mx.issubdtype(dtype, mx.floating):
                mean = summed / self.size
            else:
                mean = summed // self.size
            offsets = np.cumsum([a.size for _, a in bucket])[:-1].tolist()
            for (key, a), part in zip(bucket, mx.split(mean, offsets) if offsets else [mean], strict=False):
                averaged[key] = part.reshape(a.shape)
        return tree_unflatten([(k, averaged[k]) for k, _ in leaves])

    @staticmethod
    def _bucket_array(bucket, wire: str):
        """(flat array of the bucket, whether we own its memory and may sum in place)."""
        import mlx.core as mx

        arrays = [a.reshape(-1) for _, a in bucket]
        half = wire in HALF_WIRE and arrays[0].dtype == mx.float32
        if half:  # cast, then concatenate half the bytes: 7% less time than the other order
            arrays = [a.astype(getattr(mx, wire)) for a in arrays]
        flat = mx.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        # A lone leaf sent as it is shares the caller's gradient memory; a cast or a concatenation is ours.
        return flat, half or len(arrays) > 1

    def _reduce_bucket(self, flat, owned: bool):
        if not owned:
            return self.all_sum(flat)
        self._drain()
        ops = mlx_inplace_operands(flat)
        self.ring.allreduce_(ops.src, ops.wire)
        return ops.result

    def _reduce_bucket_async(self, flat, owned: bool):
        if not owned:
            return None, self.all_sum_async(flat)
        ops = mlx_inplace_operands(flat)
        return None, self._submit(lambda: self.ring.allreduce_(ops.src, ops.wire), ops.result)

    def _buckets(self, leaves):
        by_dtype: dict[Any, list] = {}
        for key, a in leaves:
            by_dtype.setdefault(a.dtype, []).append((key, a))
        for items in by_dtype.values():
            bucket: list[tuple[str, Any]] = []
            nbytes = 0
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

        The first report of a process (a launch, a resume) covers the time since the ring
        connected, setup included, and as many steps as ``average_gradients`` calls since then:
        the step numbers cannot say, a resumed run starts at its checkpoint's step. A script
        that never calls ``average_gradients`` gets no steps/s or samples/s on that line.

        ``allreduce_gbps`` is effective: the bytes this rank sent on the wire over the seconds
        its collectives took, waiting inside them for slower ranks included. It is what the
        collectives delivered to this step, at most what the link carries, not the link's speed.

        A NaN or infinite ``loss`` raises NonFiniteLoss (nothing is written) unless
        ``allow_nonfinite``: the rank fails and the job names the step and this rank.
        """
        if loss is not None:
            check_loss(float(loss), step=int(step), rank=self.rank, allow=self.allow_nonfinite)
        now = time.perf_counter()
        dt = max(now - self._last_report_t - max(exclude_s, 0.0), 1e-9)
        # Each training step averages its gradients once: on the first line, where no earlier
        # step number exists, those calls are the steps (counting 1 made a 10-step interval
        # read 0.43 steps/s next to tokens/s that counted all 10). None: unknown, not guessed.
        steps = step - self._last_step if self._last_step is not None else self._grad_steps or None
        ar_s = self.ring.seconds - self._mark_seconds
        sent = self.ring.bytes_sent - self._mark_sent
        record = self.metrics.write(
            "step",
            step=int(step),
            loss=None if loss is None else float(loss),
            samples=samples,
            steps_per_s=None if steps is None else steps / dt,
            samples_per_s=None if samples is None or steps is None else samples * steps / dt,
            allreduce_s=ar_s,
            allreduce_gbps=(sent / ar_s / 1e9) if ar_s > 0 else None,
            bytes_sent=self.ring.bytes_sent,
            bytes_recv=self.ring.bytes_recv,
            mem_mb=rss_mb(),
            tokens_per_s=None if tokens is None else tokens / dt,
            **extra,
        )
        self._last_report_t, self._last_step, self._grad_steps = now, int(step), 0
        self._mark_seconds, self._mark_sent = self.ring.seconds, self.ring.bytes_sent
        return record

    def log(self, message: str) -> None:
        self._log(message)

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let queued collectives finish (each is bounded by the ring's timeout); their errors
        # belong to whoever waits on their handles, and must not keep the ring open here.
        for pending in self._pending:
            pending.exception()
        self._pending = []
        if self._comm is not None:
            self._comm.shutdown(wait=False)
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
