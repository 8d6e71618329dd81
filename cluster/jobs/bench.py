"""`boltring bench`: allreduce on N local ranks, boltring's ring against MLX's own ring backend.

Both backends run in the same invocation, on the same machine, with the same sizes, dtype and
repeats, so their ratio is a fair like-for-like figure. Bus bandwidth follows nccl-tests:
busbw = bytes × 2(n−1)/n ÷ time — what each rank's links must carry.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from boltring.cluster.agent.probes_macos import parse_size as parse_size_or_none
from boltring.cluster.agent.spawn import write_atomic
from boltring.cluster.config.ports import free_ports
from boltring.cluster.errors import BoltringError
from boltring.netio.jobenv import JobEnv, parse_directions


class BenchError(BoltringError):
    """A bench that ran and failed (a cell could not start, a rank died): exit 1."""

    title = "bench error"


class BenchRefused(BenchError):
    """Nothing was benchmarked because of what was given (a size, the ranks, an option) or
    because the checks failed: exit 2, as for `boltring --run` (README, exit codes)."""


ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4}  # bench --dtype choices
MAX_ELEMENTS = 2**31 - 1  # MLX's shapes are 32-bit: a larger array cannot be made at all


def parse_size(text: str) -> int:
    """ "16MB" → 16 MiB in bytes (sizes are binary, like MLX's and nccl-tests' tables)."""
    size = parse_size_or_none(text)
    if size is None:
        raise BenchRefused(f"cannot read size {text!r}; write sizes like 1MB,16MB,64MB or 4096")
    return size


def parse_sizes(text: str, itemsize: int) -> list[int]:
    """ "1MB,16MB" → byte counts, each once, in the order given; every one whole elements of
    `itemsize` bytes, at least one element and at most MAX_ELEMENTS (an allreduce of 3 bytes
    of float32 would time one element and report it as 3 B)."""
    sizes: list[int] = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        size = parse_size(item)
        if size < itemsize:
            raise BenchRefused(f"size {item!r} is less than one {itemsize}-byte element; write e.g. 4KB")
        if size % itemsize:
            raise BenchRefused(
                f"size {item!r} is not a whole number of {itemsize}-byte elements; write e.g. 4KB"
            )
        if size // itemsize > MAX_ELEMENTS:
            raise BenchRefused(
                f"size {item!r} is {size // itemsize:,} elements; MLX arrays hold at most {MAX_ELEMENTS:,}"
            )
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise BenchRefused(f"--sizes {text!r} names no size; write sizes like 1MB,16MB,64MB")
    return sizes


def fits_local_memory(ranks: int, nbytes: int) -> None:
    """Refuse, before any rank starts, a local cell whose ranks would not fit in this machine's
    memory: each rank holds its input and its result (2 x the size), so 4 ranks x 4 GB need
    32 GB. Beyond it the kernel's OOM killer would end ranks midway, or the machine would swap."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return  # no figure on this system: let it try
    need = ranks * 2 * nbytes
    if need > total:
        raise BenchRefused(
            f"{ranks} local ranks x {human_size(nbytes)} need about {need / 2**30:.1f} GB of memory "
            f"(input and result per rank); this machine has {total / 2**30:.1f} GB: use smaller "
            "--sizes or fewer --ranks"
        )


def parse_ranks(text: str) -> list[int]:
    """ "2,3,4" → [2, 3, 4]: one bench per rank count, each with both backends."""
    try:
        ranks = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise BenchRefused(f"cannot read --ranks {text!r}; write a count or a list like 2,3,4") from None
    if not ranks or min(ranks) < 2:
        raise BenchRefused("bench needs at least 2 ranks (--ranks 2, or a list like 2,3,4)")
    return ranks


@dataclass
class BenchResult:
    backend: str
    ranks: int
    bytes: int
    dtype: str
    times: list[float]
    wire_dtype: str = ""  # boltring average_gradients' wire dtype, when not the array's own
    extra_mem_bytes: int | None = None  # peak RSS during the collectives minus the baseline
    allowed_extra_bytes: int | None = None  # output + two chunks per direction (the bar)
    cpu_ms_per_call: float | None = None  # rank 0's CPU (user + system) per call
    directions: int | None = None  # boltring: ways round the ring the collective took
    transport: str | None = None  # boltring: "unix" or "tcp" between its local ranks (ring.same_host)

    machine: str = ""  # rank 0's machine, as bench_worker.machine_line() describes it

    @classmethod
    def from_worker(cls, d: dict) -> BenchResult:
        """One JSON line of rank 0's bench_worker."""
        return cls(
            backend=d["backend"],
            ranks=d["ranks"],
            bytes=d["bytes"],
            dtype=d["dtype"],
            times=d["times"],
            wire_dtype=d.get("wire_dtype", ""),
            extra_mem_bytes=d.get("extra_mem_bytes"),
            allowed_extra_bytes=d.get("allowed_extra_bytes"),
            cpu_ms_per_call=d.get("cpu_ms_per_call"),
            directions=d.get("directions"),
            transport=d.get("transport"),
            machine=d.get("machine", ""),
        )

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def algbw(self) -> float:
        return self.bytes / self.median_s / 1e9

    @property
    def busbw(self) -> float:
        return self.algbw * 2 * (self.ranks - 1) / self.ranks

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "ranks": self.ranks,
            "bytes": self.bytes,
            "dtype": self.dtype,
            "median_ms": self.median_s * 1e3,
            "algbw_gbps": self.algbw,
            "busbw_gbps": self.busbw,
            "repeats": len(self.times),
            "min_ms": min(self.times) * 1e3,
            "max_ms": max(self.times) * 1e3,
            **({"wire_dtype": self.wire_dtype} if self.wire_dtype else {}),
            "cpu_ms_per_call": self.cpu_ms_per_call,
            **({"directions": self.directions} if self.directions else {}),
            **({"transport": self.transport} if self.transport else {}),
            "extra_mem_mb": None if self.extra_mem_bytes is None else self.extra_mem_bytes / (1 << 20),
            "allowed_extra_mem_mb": (
                None if self.allowed_extra_bytes is None else self.allowed_extra_bytes / (1 << 20)
            ),
        }


def run_backend(
    backend: str,
    ranks: int,
    sizes: list[int],
    repeat: int,
    dtype: str = "float32",
    timeout: float = 600.0,
    wire_dtype: str = "",
    directions: str = "auto",
    same_host: str = "unix",
) -> list[BenchResult]:
    """Start `ranks` local processes of bench_worker with one backend; rank 0's timings.
    `directions` is ring.directions as a user writes it: auto, 1 or 2."""
    ports = free_ports(ranks)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    with tempfile.TemporaryDirectory(prefix="boltring-bench-") as tmp:
        env_base = dict(os.environ)
        if backend == "mlx":
            hostfile = Path(tmp) / "hostfile.json"
            hostfile.write_text(json.dumps([[a] for a in addrs]))
        else:
            secret = Path(tmp) / "secret"
            write_atomic(secret, secrets.token_bytes(32).hex(), mode=0o600)
        procs = []
        try:
            for r in range(ranks):
                env = dict(env_base)
                if backend == "mlx":
                    env.update({"MLX_RANK": str(r), "MLX_HOSTFILE": str(hostfile)})
                else:
                    env.update(
                        JobEnv(
                            rank=r,
                            size=ranks,
                            job_id="bench",
                            ring=tuple(addrs),
                            secret_file=str(secret),
                            timeout_s=120,
                            connect_timeout_s=60,
                            directions=parse_directions(directions),
                            same_host=same_host,
                        ).to_environ()
                    )
                argv = [
                    sys.executable,
                    "-m",
                    "boltring.cluster.train.bench_worker",
                    "--backend",
                    backend,
                    "--sizes",
                    ",".join(map(str, sizes)),
                    "--repeat",
                    str(repeat),
                    "--dtype",
                    dtype,
                    *(["--wire-dtype", wire_dtype] if wire_dtype else []),
                ]
                procs.append(
                    subprocess.Popen(
                        argv,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        start_new_session=True,
                    )
                )
            outs = []
            for p in procs:
                out, err = p.communicate(timeout=timeout)
                outs.append((p.returncode, out, err))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for r, (rc, _out, err) in enumerate(outs):
            if rc != 0:
                last = (err.strip().splitlines() or ["no output"])[-1]
                raise BenchError(f"{backend} rank {r} failed (exit {rc}): {last}")
        lines = outs[0][1].splitlines()
        return [BenchResult.from_worker(json.loads(line)) for line in lines if line.startswith("{")]


def human_size(n: int) -> str:
    for unit, f in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"
