"""The contract between the launcher and a rank: environment variables, nothing else.

The secret is never in the environment or on a command line: the launcher writes it to a
0600 file in the rank's run directory and passes only that file's path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .unixsock import SAME_HOST_CHOICES

RANK = "BOLTRING_RANK"
WORLD_SIZE = "BOLTRING_WORLD_SIZE"
JOB_ID = "BOLTRING_JOB_ID"
RING = "BOLTRING_RING"  # JSON list of "ip:port", by rank
SECRET_FILE = "BOLTRING_SECRET_FILE"
RUN_DIR = "BOLTRING_RUN_DIR"
TIMEOUT = "BOLTRING_TIMEOUT"  # seconds of inactivity inside a collective
CONNECT_TIMEOUT = "BOLTRING_CONNECT_TIMEOUT"
BUCKET_MB = "BOLTRING_BUCKET_MB"
CHUNK_MB = "BOLTRING_CHUNK_MB"
NODE = "BOLTRING_NODE"
BACKEND = "BOLTRING_BACKEND"  # boltring | mlx-ring | jaccl: who runs the collectives

MIN_SECRET_BYTES = 32  # what the controller generates (handshake.SECRET_BYTES)
MLX_BACKENDS = {"mlx-ring": "ring", "jaccl": "jaccl"}  # ring.backend -> mx.distributed.init(backend=)
WIRE_DTYPE = "BOLTRING_WIRE_DTYPE"  # what average_gradients sends float32 gradients as
OVERLAP = "BOLTRING_OVERLAP"  # "1": average_gradients overlaps the backward pass by default
DIRECTIONS = "BOLTRING_RING_DIRECTIONS"  # "auto", "1" or "2": ways round the ring at once (ring.py)
SAME_HOST = "BOLTRING_RING_SAME_HOST"  # "unix" or "tcp": how ranks on one host connect (unixsock.py)
ALLOW_NONFINITE = "BOLTRING_ALLOW_NONFINITE"  # "1": report() lets a NaN/inf loss go on (group.py)


def _flag(value: str, name: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(f"{name}={value!r} is not 0 or 1")
    return value == "1"


def parse_directions(value: str) -> int:
    """ring.directions as text ("auto", "1", "2") -> 0 (auto), 1 or 2."""
    if value not in ("auto", "1", "2"):
        raise ValueError(f"{DIRECTIONS}={value!r} is not auto, 1 or 2")
    return 0 if value == "auto" else int(value)


class JobEnvError(Exception):
    pass


@dataclass(frozen=True)
class JobEnv:
    rank: int = 0
    size: int = 1
    job_id: str = "solo"
    ring: tuple[str, ...] = ()
    secret_file: str | None = None
    run_dir: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 30.0
    bucket_mb: float = 32.0
    chunk_mb: float = 4.0
    node: str = "local"
    backend: str = "boltring"
    wire_dtype: str = "float32"
    overlap: bool = False  # ring.overlap: average_gradients' default (group.py)
    directions: int = 0  # ring.directions: 0 (auto), 1 or 2 (ring.py)
    same_host: str = "unix"  # ring.same_host: unix or tcp between ranks on one host (unixsock.py)
    allow_nonfinite: bool = False  # job.allow_nonfinite: report() does not fail on a NaN/inf loss

    @property
    def mlx_backend(self) -> str | None:
        """The ``mx.distributed.init(backend=...)`` name when MLX runs the collectives, else None."""
        return MLX_BACKENDS.get(self.backend)

    def to_environ(self) -> dict[str, str]:
        env = {
            RANK: str(self.rank),
            WORLD_SIZE: str(self.size),
            JOB_ID: self.job_id,
            RING: json.dumps(list(self.ring)),
            TIMEOUT: repr(self.timeout_s),
            CONNECT_TIMEOUT: repr(self.connect_timeout_s),
            BUCKET_MB: repr(self.bucket_mb),
            CHUNK_MB: repr(self.chunk_mb),
            NODE: self.node,
            BACKEND: self.backend,
            WIRE_DTYPE: self.wire_dtype,
            OVERLAP: "1" if self.overlap else "0",
            DIRECTIONS: str(self.directions or "auto"),
            SAME_HOST: self.same_host,
        }
        if self.secret_file:
            env[SECRET_FILE] = self.secret_file
        if self.run_dir:
            env[RUN_DIR] = self.run_dir
        if self.allow_nonfinite:  # only when set: the default job's environment stays as it was
            env[ALLOW_NONFINITE] = "1"
        return env

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> JobEnv:
        """The job this process belongs to; a 1-rank job when the launcher set nothing."""
        e = os.environ if environ is None else environ
        if RANK not in e:  # run alone; a script still reads whether its job allows a NaN loss
            try:
                allow = _flag(e.get(ALLOW_NONFINITE, "0"), ALLOW_NONFINITE)
            except ValueError as ex:
                raise JobEnvError(f"the boltring job environment is malformed ({ex})") from None
            return cls(run_dir=e.get(RUN_DIR), allow_nonfinite=allow)
        try:
            size = int(e[WORLD_SIZE])
            rank = int(e[RANK])
            ring = tuple(json.loads(e.get(RING, "[]")))
            job = cls(
                rank=rank,
                size=size,
                job_id=e.get(JOB_ID, "job"),
                ring=ring,
                secret_file=e.get(SECRET_FILE),
                run_dir=e.get(RUN_DIR),
                timeout_s=float(e.get(TIMEOUT, 60)),
                connect_timeout_s=float(e.get(CONNECT_TIMEOUT, 30)),
                bucket_mb=float(e.get(BUCKET_MB, 32)),
                chunk_mb=float(e.get(CHUNK_MB, 4)),
                node=e.get(NODE, "local"),
                backend=e.get(BACKEND, "boltring"),
                wire_dtype=e.get(WIRE_DTYPE, "float32"),
                overlap=_flag(e.get(OVERLAP, "0"), OVERLAP),
                directions=parse_directions(e.get(DIRECTIONS, "auto")),
                same_host=e.get(SAME_HOST, "unix"),
                allow_nonfinite=_flag(e.get(ALLOW_NONFINITE, "0"), ALLOW_NONFINITE),
            )
        except (KeyError, ValueError, TypeError) as ex:
            raise JobEnvError(
                f"the boltring job environment is malformed ({ex}); start ranks with "
                f"`boltring --run`, or run the script alone for a 1-rank group"
            ) from None
        if job.backend != "boltring" and job.mlx_backend is None:
            raise JobEnvError(f"{BACKEND}={job.backend!r} is not a backend; use boltring, mlx-ring or jaccl")
        own_ring = job.backend == "boltring"  # MLX backends read their peers from MLX_* variables
        if not 0 <= rank < size or (size > 1 and own_ring and len(ring) != size):
            raise JobEnvError(
                f"{RANK}={rank}, {WORLD_SIZE}={size} and {len(ring)} ring addresses do not fit together"
            )
        if job.same_host not in SAME_HOST_CHOICES:
            raise JobEnvError(f"{SAME_HOST}={job.same_host!r}; use unix or tcp")
        if job.wire_dtype not in ("float32", "bfloat16", "float16"):
            raise JobEnvError(f"{WIRE_DTYPE}={job.wire_dtype!r}; use float32, bfloat16 or float16")
        if size > 1 and own_ring and not job.secret_file:
            raise JobEnvError(f"{SECRET_FILE} is not set: ranks must prove the job secret")
        return job

    def read_secret(self) -> bytes:
        if not self.secret_file:
            return b""
        path = Path(self.secret_file)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise JobEnvError(f"secret file {path} has mode {mode:o}; it must be 0600")
        try:
            secret = bytes.fromhex(path.read_text().strip())
        except ValueError:
            secret = b""  # not hex: as unusable as an empty file, and refused with the same words
        # A short secret would let anyone who can reach the ring port guess it (an empty one
        # made every impostor's proof verify): the controller writes 32 random bytes.
        if len(secret) < MIN_SECRET_BYTES:
            raise JobEnvError(
                f"secret file {path} holds {len(secret)} bytes of hex; the job secret must be at "
                f"least {MIN_SECRET_BYTES} random bytes (64 hex digits), as the controller writes it"
            )
        return secret
