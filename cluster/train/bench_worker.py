"""One rank of `boltring bench`: times all_sum for each size with one backend, prints JSON.

    boltring  — boltring.netio.init() (environment from the bench launcher)
    mlx       — mx.distributed.init(backend="ring"), MLX's own ring (MLX_RANK, MLX_HOSTFILE)

Both time the same thing a training step pays: an evaluated mx.array in, an evaluated
mx.array with the sum out. Rank 0 prints one JSON line per size with every repeat's time.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m boltring.cluster.train.bench_worker")
    p.add_argument("--backend", choices=("boltring", "mlx"), required=True)
    p.add_argument("--sizes", required=True, help="comma list of byte counts")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    a = p.parse_args()

    import mlx.core as mx

    dtype = getattr(mx, a.dtype)
    if a.backend == "boltring":
        from boltring.netio import init

        group = init()
        rank, size = group.rank, group.size

        def all_sum(x):
            return group.all_sum(x)
    else:
        group = mx.distributed.init(backend="ring", strict=True)
        rank, size = group.rank(), group.size()

        def all_sum(x):
            y = mx.distributed.all_sum(x, group=group)
            mx.eval(y)
            return y

    for nbytes in (int(s) for s in a.sizes.split(",")):
        n = max(1, nbytes // mx.zeros((), dtype=dtype).itemsize)
        x = mx.ones((n,), dtype=dtype)
        mx.eval(x)
        times = []
        for i in range(a.warmup + a.repeat):
            all_sum(mx.zeros((1,), dtype=mx.int32))  # line the ranks up so each op is timed alone
            t0 = time.perf_counter()
            y = all_sum(x)
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt)
        expected = float(size)
        if (
            abs(float(y[0].astype(mx.float32)) - expected) > 1e-3
            or abs(float(y[-1].astype(mx.float32)) - expected) > 1e-3
        ):
            raise SystemExit(f"rank {rank}: wrong sum {y[0]} for {nbytes} bytes, expected {expected}")
        if rank == 0:
            print(
                json.dumps(
                    {
                        "backend": a.backend,
                        "bytes": n * x.itemsize,
                        "ranks": size,
                        "dtype": a.dtype,
                        "times": times,
                    }
                ),
                flush=True,
            )
    if a.backend == "boltring":
        group.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
