"""charlm training steps timed, with or without overlap and a half-precision wire.

    python charlm_steps.py worker --steps N [--overlap] [--wire bfloat16] [--batch B] [-- charlm args]
        one rank (BOLTRING_* environment set by a launcher): prints one JSON line on rank 0
    python charlm_steps.py launch --ranks N ...same options...
        N local ranks on loopback; prints rank 0's JSON line

Each step is what cluster/train/loop.py does, except that the gradients are handed to
average_gradients unevaluated, so overlap=True can reduce the last layers' bucket while MLX
still evaluates the rest of the backward pass (loop.py evaluates them first). The loss curve
is the global mean loss of every step (all_sum of the local losses / N), as loop.py logs it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("worker", "launch"))
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--overlap", action="store_true")
    p.add_argument("--wire", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--bucket-mb", type=float, default=4.0)
    return p.parse_args(argv), extra


def worker(a: argparse.Namespace, extra: list[str]) -> int:
    import mlx.core as mx
    import mlx.nn as nn

    from boltring.cluster.train.charlm import make_task
    from boltring.cluster.train.loop import TrainConfig, global_batch_indices, shard_bounds
    from boltring.netio import init

    group = init()
    cfg = TrainConfig(steps=a.steps, seed=0, global_batch=a.batch)
    task = make_task(cfg, extra)
    model, opt = task.model, task.optimizer
    opt.init(model.trainable_parameters())
    mx.eval(model.parameters(), opt.state)
    lo, hi = shard_bounds(a.batch, group.rank, group.size)
    loss_and_grad = nn.value_and_grad(model, task.loss)
    times, losses = [], []
    nparams = sum(v.size for _, v in __import__("mlx.utils").utils.tree_flatten(model.parameters()))
    for step in range(1, a.steps + 1):
        idx = global_batch_indices(0, (step - 1) * a.batch, a.batch, task.num_examples)[lo:hi]
        batch = task.batch(idx)
        group.barrier()  # every rank starts the step together: the time is the step's own
        t0 = time.perf_counter()
        loss, grads = loss_and_grad(model, *batch)
        grads = group.average_gradients(grads, overlap=a.overlap, wire_dtype=a.wire)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state, loss)
        times.append(time.perf_counter() - t0)
        total = group.all_sum(mx.array([loss.item()], dtype=mx.float32))
        losses.append(float(total.item()) / group.size)
    if group.rank == 0:
        warm = times[min(5, len(times) - 1) :]
        print(
            json.dumps(
                {
                    "ranks": group.size,
                    "overlap": a.overlap,
                    "wire": a.wire,
                    "params": int(nparams),
                    "grad_mb": nparams * 4 / (1 << 20),
                    "step_ms_median": statistics.median(warm) * 1e3,
                    "step_ms_range": [min(warm) * 1e3, max(warm) * 1e3],
                    "losses": losses,
                }
            ),
            flush=True,
        )
    group.close()
    return 0


def launch(a: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    from boltring.cluster.config.ports import free_ports
    from boltring.netio.jobenv import JobEnv

    with tempfile.TemporaryDirectory() as tmp:
        secret = os.path.join(tmp, "secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, secrets.token_bytes(32).hex().encode())
        os.close(fd)
        addrs = tuple(f"127.0.0.1:{p}" for p in free_ports(a.ranks))
        wargv = [sys.executable, __file__, "worker", *argv[1:]]
        procs = [
            subprocess.Popen(
                wargv,
                env={
                    **os.environ,
                    **JobEnv(
                        rank=r,
                        size=a.ranks,
                        job_id="charlm-steps",
                        ring=addrs,
                        secret_file=secret,
                        bucket_mb=a.bucket_mb,
                    ).to_environ(),
                },
                stdout=subprocess.PIPE,
                text=True,
            )
            for r in range(a.ranks)
        ]
        outs = [p.communicate(timeout=1800)[0] for p in procs]
        if any(p.returncode for p in procs):
            print(f"a rank failed: {[p.returncode for p in procs]}", file=sys.stderr)
            return 1
        sys.stdout.write(outs[0])
    return 0


def main() -> int:
    a, extra = parse(sys.argv[1:])
    if a.mode == "worker":
        return worker(a, extra)
    return launch(a, extra, sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
