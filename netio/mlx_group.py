"""The worker API on MLX's own collectives (``--backend mlx-ring`` or ``jaccl``).

``boltring.netio.init()`` returns an :class:`MlxGroup` when the launcher set
``BOLTRING_BACKEND`` to an MLX backend. It is a :class:`~boltring.netio.group.Group` whose
collectives call ``mx.distributed`` (which reads ``MLX_RANK``, ``MLX_HOSTFILE`` or
``MLX_IBV_DEVICES``/``MLX_JACCL_COORDINATOR``, written by the launcher) instead of boltring's
socket ring. Everything else, ``report()`` and the metrics file first of all, is inherited, so
the panels and ``--json`` show the same figures whatever the backend.

Each collective is evaluated at once (``mx.eval``) so that its time can be measured; MLX's
collectives are lazy graph ops and could also run inside ``mx.compile``, but then nobody could
say how long they took. The bytes counted are what a ring allreduce moves per rank,
``2 (n-1)/n`` times the buffer each way (MLX reports no socket counters): the same definition
``boltring bench`` uses for bus bandwidth. The buffer is counted as it travels: float32
gradients sent as bfloat16 count 2 bytes each, as boltring's ring counts them, so
``allreduce_gbps`` means the same on both backends.

MLX's ring has no authentication and no timeout inside a collective; the job secret does not
protect it. Keep MLX backends on the Thunderbolt network between your own machines.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import numpy as np

from .group import Group, Pending
from .jobenv import JobEnv, JobEnvError
from .metrics import MetricsWriter


class _Counters:
    """What ``Group.report()`` and ``close()`` read from a ring, counted for MLX's collectives."""

    def __init__(self) -> None:
        self.ops = 0
        self.seconds = 0.0
        self.bytes_sent = 0
        self.bytes_recv = 0

    def add(self, nbytes: int, size: int, seconds: float) -> None:
        """One collective of a buffer of ``nbytes`` in its wire dtype, which took ``seconds``."""
        moved = int(nbytes * 2 * (size - 1) / size) if size > 1 else 0
        self.ops += 1
        self.seconds += seconds
        self.bytes_sent += moved
        self.bytes_recv += moved

    def close(self) -> None:
        pass  # MLX owns its sockets; they close when the process exits


def _mx_init(job: JobEnv):
    import mlx.core as mx

    name = job.mlx_backend
    if job.size == 1:
        return mx.distributed.init(strict=False)  # a 1-rank job needs no peers (singleton group)
    try:
        g = mx.distributed.init(backend=name or "any", strict=True)
    except Exception as e:
        raise JobEnvError(
            f"mx.distributed.init(backend={name!r}) failed on rank {job.rank}: {e}; "
            "start ranks with `boltring --run --backend " + job.backend + "`"
        ) from None
    if g.size() != job.size or g.rank() != job.rank:
        raise JobEnvError(
            f"MLX's {name} backend says rank {g.rank()} of {g.size()}, boltring planned rank "
            f"{job.rank} of {job.size}; MLX_RANK and the hostfile do not match the job"
        )
    return g


class MlxGroup(Group):
    """A :class:`Group` whose ``all_sum``, ``average_gradients`` and ``barrier`` use
    ``mx.distributed``. ``self.mx_group`` is the ``mx.distributed.Group`` for code that wants
    MLX's own API (``all_gather``, ``send``/``recv``)."""

    def __init__(self, job: JobEnv, *, log=None):
        # Group.__init__ would open boltring's ring: the same rank state without it (no comm
        # thread or pending collectives: MLX runs its collectives itself).
        self._init_rank(job, log)
        self.mx_group = _mx_init(job)
        self._last_report_t = time.perf_counter()  # the first report's interval: from here (Group)
        self.ring: Any = _Counters()
        self.metrics = MetricsWriter(job.run_dir, job.rank)
        self.metrics.write("start", size=self.size, job=job.job_id, node=job.node, backend=job.backend)

    def all_sum(self, x):
        """Sum of ``x`` over all ranks: same type (mx.array or numpy), shape and dtype."""
        import mlx.core as mx

        is_mx = type(x).__module__.startswith("mlx")
        if is_mx:
            a = x
        else:
            src = np.ascontiguousarray(np.asarray(x))
            # mx.array narrows float64 to float32 unless told otherwise: a sum of float64 values
            # came back rounded (1 + 1e-12 -> 1, 2**40 + 0.5 -> 2**40) even on one rank.
            a = mx.array(src, dtype=mx.float64) if src.dtype == np.float64 else mx.array(src)
        # float64 exists on MLX's CPU only (its GPU has none), and MLX's ring sums it exactly there.
        stream = mx.cpu if a.dtype == mx.float64 else None
        t0 = time.perf_counter()
        out = mx.distributed.all_sum(a, group=self.mx_group, stream=stream) if self.size > 1 else a
        mx.eval(out)
        self.ring.add(a.nbytes, self.size, time.perf_counter() - t0)
        if is_mx:
            return out
        return np.array(out, copy=True).astype(src.dtype, copy=False).reshape(src.shape)

    def all_sum_async(self, x) -> Pending:
        """The same call as on boltring's group; MLX's collective runs at once (MLX schedules its
        own communication), so the handle is already done."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        result = self.all_sum(x)
        done.set_result(None)
        return Pending(done, result)

    def average_gradients(self, grads, *, overlap: bool | None = None, wire_dtype: str | None = None):
        """Mean of a tree of mx.array over ranks with ``mlx.nn.average_gradients`` (it packs
        leaves of one dtype into buffers of up to ``ring.bucket_mb``), evaluated at once.
        ``wire_dtype`` (default ``ring.wire_dtype``): float32 leaves travel in that dtype and come
        back as float32 (MLX sums in the wire dtype, unlike boltring's ring, which accumulates in
        float32); ``overlap`` is accepted for the same signature: MLX's lazy graph orders the work."""
        import mlx.core as mx
        from mlx.nn import average_gradients
        from mlx.utils import tree_flatten

        self._grad_steps += 1  # a training step, for report() (Group.average_gradients)
        if self.size == 1:
            return grads
        flat: Any = tree_flatten(grads)
        leaves: list[Any] = [leaf for _, leaf in flat]
        if not leaves:
            return grads
        mx.eval(leaves)  # time the collective, not the backward pass that produced the gradients
        t0 = time.perf_counter()
        from mlx.utils import tree_map

        wire = wire_dtype or self.job.wire_dtype
        sent = grads
        if wire != "float32":
            half = getattr(mx, wire)
            sent = tree_map(lambda g: g.astype(half) if g.dtype == mx.float32 else g, grads)
            out = average_gradients(sent, group=self.mx_group, all_reduce_size=self.bucket_bytes)
            out = tree_map(lambda o, g: o.astype(g.dtype), out, grads)
        else:
            out = average_gradients(grads, group=self.mx_group, all_reduce_size=self.bucket_bytes)
        mx.eval(out)
        # The bytes that travelled: a half-precision wire's, not the float32 leaves' (counting
        # those doubled this backend's GB/s against boltring's ring for the same transfer).
        sent_flat: Any = tree_flatten(sent)
        wire_bytes = sum(a.nbytes for _, a in sent_flat)
        self.ring.add(wire_bytes, self.size, time.perf_counter() - t0)
        return out

    def barrier(self) -> None:
        self.all_sum(np.zeros(1, dtype=np.int32))
