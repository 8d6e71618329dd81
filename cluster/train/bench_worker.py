"""One rank of `boltring bench`: times all_sum for each size with one backend, prints JSON.

    boltring  — boltring.netio.init() (environment from the bench launcher)
    mlx       — mx.distributed.init(backend="ring"), MLX's own ring (MLX_RANK, MLX_HOSTFILE)

Both time the same thing a training step pays: an evaluated mx.array in, an evaluated
mx.array with the sum out. With --wire-dtype, boltring times average_gradients of one float32
buffer instead, sent as that dtype (bytes count the float32 buffer: the effective bandwidth);
float32 there is average_gradients as it runs by default, the baseline of a half-precision wire.
Rank 0 prints one JSON line per size with every repeat's time and the extra memory: peak RSS
during the size's calls minus the RSS before them (input allocated, freed heap returned).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_baseline() -> int | None:
    """Return freed heap to the kernel and restart the peak-RSS counter; the RSS now (bytes).
    Linux only (VmHWM, clear_refs); None elsewhere."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return None
    rss = _status_kb("VmRSS")
    return None if rss is None else rss << 10


def peak_since_baseline() -> int | None:
    hwm = _status_kb("VmHWM")
    return None if hwm is None else hwm << 10


def machine_line() -> str:
    """This machine as the bench's tables name it: OS, architecture, cores, CPU, Python, mlx."""
    import mlx.core as mx

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu_name()}), "
        f"Python {platform.python_version()}, mlx {getattr(mx, '__version__', '?')}"
    )


def cpu_name() -> str:
    """ "Apple M4 Pro" on a Mac (sysctl), the model name from /proc/cpuinfo on Linux."""
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        return out or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m boltring.cluster.train.bench_worker")
    p.add_argument("--backend", choices=("boltring", "mlx"), required=True)
    p.add_argument("--sizes", required=True, help="comma list of byte counts")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--wire-dtype", default="", choices=("", "float32", "bfloat16", "float16"))
    a = p.parse_args()

    import mlx.core as mx

    dtype = getattr(mx, a.dtype)
    chunk_for = None
    ways = 0  # boltring: directions round the ring (ring.directions, resolved by the ring)
    if a.backend == "boltring":
        from boltring.netio import init
        from boltring.netio.ring import chunk_bytes_for

        group = init()
        rank, size = group.rank, group.size
        ways = group.ring.directions

        def chunk_for(nbytes: int) -> int:
            return chunk_bytes_for(nbytes // ways // size, group.ring.chunk_bytes)

        if a.wire_dtype:

            def all_sum(x):
                y = group.average_gradients({"g": x}, wire_dtype=a.wire_dtype)["g"]
                mx.eval(y)
                return y
        else:

            def all_sum(x):
                return group.all_sum(x)
    else:
        if a.wire_dtype:
            raise SystemExit("--wire-dtype is a boltring option")
        group = mx.distributed.init(backend="ring", strict=True)
        rank, size = group.rank(), group.size()

        def all_sum(x):
            y = mx.distributed.all_sum(x, group=group)
            mx.eval(y)
            return y

    machine = machine_line() if rank == 0 else ""
    for nbytes in (int(s) for s in a.sizes.split(",")):
        n = max(1, nbytes // mx.zeros((), dtype=dtype).itemsize)
        x = mx.ones((n,), dtype=dtype)
        mx.eval(x)
        warm = mx.zeros((1 << 18,), dtype=mx.float32)  # 1 MiB: every ring thread has run once
        all_sum(warm)
        del warm
        base = memory_baseline()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        times = []
        y = None
        for i in range(a.warmup + a.repeat):
            all_sum(mx.zeros((1,), dtype=mx.int32))  # line the ranks up so each op is timed alone
            y = None  # one result alive at a time, as in a training step
            t0 = time.perf_counter()
            y = all_sum(x)
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt)
        peak = peak_since_baseline()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        calls = a.warmup + a.repeat
        cpu_ms = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) * 1e3 / calls
        # context switches per call, all threads: each is a wake-up that costs CPU beyond the bytes
        switches = (ru1.ru_nvcsw - ru0.ru_nvcsw + ru1.ru_nivcsw - ru0.ru_nivcsw) / calls
        assert y is not None
        expected = 1.0 if a.wire_dtype else float(size)  # average_gradients gives the mean
        if (
            abs(float(y[0].astype(mx.float32)) - expected) > 1e-3
            or abs(float(y[-1].astype(mx.float32)) - expected) > 1e-3
        ):
            raise SystemExit(f"rank {rank}: wrong sum {y[0]} for {nbytes} bytes, expected {expected}")
        if rank == 0:
            out_bytes = n * x.itemsize
            record = {
                "backend": a.backend,
                "bytes": out_bytes,
                "ranks": size,
                "dtype": a.dtype,
                "times": times,
                "extra_mem_bytes": None if base is None or peak is None else peak - base,
                "cpu_ms_per_call": cpu_ms,  # rank 0's user + system CPU, all its threads
                "user_ms_per_call": (ru1.ru_utime - ru0.ru_utime) * 1e3 / calls,
                "switches_per_call": switches,
                "machine": machine,
            }
            if ways:
                record["directions"] = ways
                record["transport"] = group.ring.transport
            if a.wire_dtype:
                record["wire_dtype"] = a.wire_dtype
            elif chunk_for is not None:  # the bar: output + two chunks per direction
                record["allowed_extra_bytes"] = out_bytes + 2 * ways * chunk_for(out_bytes)
            print(json.dumps(record), flush=True)
        del x, y
    if a.backend == "boltring":
        group.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
