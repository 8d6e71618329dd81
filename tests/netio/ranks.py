"""Run N real ranks of a boltring job as separate processes on loopback, for tests.

    with RankJob(tmp_path, size=3, timeout=5) as job:
        job.start({"cases": [...]})
        outcomes = job.wait(timeout=60)
    outcomes[0].result  # the rank's final JSON result

Each rank is `sys.executable rank_worker.py '<json spec>'` with the BOLTRING_* environment a
launcher would set: ring addresses 127.0.0.1 on free ports, the secret in a 0600 file, one run
directory per rank. stdout is read line by line (JSON events), stderr goes to a file. Every
wait has a timeout, and close() (also on any exception) SIGKILLs and reaps every child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from boltring.cluster.config import ports as ports_mod

HERE = Path(__file__).resolve().parent
WORKER = HERE / "rank_worker.py"

_handed_out: set[int] = set()  # never the same port twice in one test session


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` ports free on `host` (and on 127.0.0.1), below the ephemeral range (see ports.py)."""
    for _ in range(200):
        ports = ports_mod.free_ports(n, host, avoid=_handed_out)
        if host == "127.0.0.1" or all(ports_mod.bindable("127.0.0.1", p) for p in ports):
            _handed_out.update(ports)
            return ports
    raise RuntimeError(f"could not find {n} free ports on {host}")


def write_secret(path: Path, secret: bytes | None = None, mode: int = 0o600) -> Path:
    secret = os.urandom(32) if secret is None else secret
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    os.chmod(path, mode)
    return path


@dataclass
class RankOutcome:
    rank: int
    returncode: int | None
    result: dict | None  # the final {"event": "result"} line, or None if the rank crashed
    events: list[dict]
    stderr: str
    t_exit: float | None  # parent's time.time() when the exit was noticed

    def describe(self) -> str:
        return (
            f"rank {self.rank}: rc={self.returncode} result={self.result}\n"
            f"--- stderr ---\n{self.stderr[-4000:]}"
        )


@dataclass
class _Proc:
    rank: int
    popen: subprocess.Popen
    stderr_path: Path
    lines: list[dict] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    reader: threading.Thread | None = None
    t_exit: float | None = None


class RankJob:
    def __init__(
        self,
        tmp_path: Path,
        size: int,
        *,
        job_id: str = "netio-test",
        timeout: float = 20.0,
        connect_timeout: float = 20.0,
        chunk_mb: float | None = None,
        bucket_mb: float | None = None,
        directions: str | None = None,
        same_host: str | None = None,
        secret_mode: int = 0o600,
        host: str = "127.0.0.1",
    ):
        self.tmp = Path(tmp_path)
        self.size = size
        self.job_id = job_id
        self.ports = free_ports(size, host)
        self.ring = [f"{host}:{p}" for p in self.ports]
        self.secret_file = write_secret(self.tmp / "job.secret", mode=secret_mode)
        self.base_env = {
            "BOLTRING_WORLD_SIZE": str(size),
            "BOLTRING_JOB_ID": job_id,
            "BOLTRING_RING": json.dumps(self.ring),
            "BOLTRING_SECRET_FILE": str(self.secret_file),
            "BOLTRING_TIMEOUT": repr(float(timeout)),
            "BOLTRING_CONNECT_TIMEOUT": repr(float(connect_timeout)),
        }
        if chunk_mb is not None:
            self.base_env["BOLTRING_CHUNK_MB"] = repr(float(chunk_mb))
        if bucket_mb is not None:
            self.base_env["BOLTRING_BUCKET_MB"] = repr(float(bucket_mb))
        if directions is not None:
            self.base_env["BOLTRING_RING_DIRECTIONS"] = directions
        if same_host is not None:
            self.base_env["BOLTRING_RING_SAME_HOST"] = same_host
        self.procs: dict[int, _Proc] = {}

    def run_dir(self, rank: int) -> Path:
        return self.tmp / f"rank{rank}"

    def env(self, rank: int, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTRING_")}
        env.update(self.base_env)
        env["BOLTRING_RANK"] = str(rank)
        env["BOLTRING_RUN_DIR"] = str(self.run_dir(rank))
        env["BOLTRING_NODE"] = f"node{rank}"
        env["RANKS_TEST_PARENT"] = str(os.getpid())
        env.update(overrides)
        return env

    # -- lifecycle ---------------------------------------------------------------------------
    def start(
        self,
        spec: dict,
        ranks=None,
        env_overrides: dict[int, dict[str, str]] | None = None,
        per_rank: dict[int, dict] | None = None,
    ) -> None:
        """Start the given ranks (default: all) running `spec` (merged with per_rank[r])."""
        ranks = range(self.size) if ranks is None else ranks
        for r in ranks:
            rank_spec = {**spec, **((per_rank or {}).get(r, {}))}
            stderr_path = self.tmp / f"rank{r}.stderr"
            with open(stderr_path, "wb") as err:
                popen = subprocess.Popen(
                    [sys.executable, str(WORKER), json.dumps(rank_spec)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=self.env(r, **((env_overrides or {}).get(r, {}))),
                    cwd=self.tmp,
                )
            proc = _Proc(r, popen, stderr_path)
            proc.reader = threading.Thread(
                target=self._read, args=(proc,), daemon=True, name=f"rank{r}-stdout"
            )
            self.procs[r] = proc
            proc.reader.start()

    @staticmethod
    def _read(proc: _Proc) -> None:
        for raw in proc.popen.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"event": "raw", "text": raw.decode(errors="replace")}
            with proc.cond:
                proc.lines.append(obj)
                proc.cond.notify_all()
        with proc.cond:
            proc.lines.append({"event": "eof"})
            proc.cond.notify_all()

    def wait_event(self, rank: int, event: str, timeout: float) -> dict:
        """The first `event` line of `rank`; fails the test if it does not come in time."""
        proc = self.procs[rank]
        deadline = time.monotonic() + timeout
        with proc.cond:
            while True:
                for obj in proc.lines:
                    if obj.get("event") == event:
                        return obj
                    if obj.get("event") == "eof":
                        raise AssertionError(
                            f"rank {rank} ended before {event!r}:\n{self._outcome(proc).describe()}"
                        )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"rank {rank} sent no {event!r} within {timeout:g} s:\n"
                        f"{self._outcome(proc).describe()}"
                    )
                proc.cond.wait(remaining)

    def signal(self, rank: int, sig: int) -> None:
        self.procs[rank].popen.send_signal(sig)

    def wait(self, ranks=None, timeout: float = 60.0) -> dict[int, RankOutcome]:
        """Wait for the ranks to exit; on timeout kill everyone and fail with their stderr."""
        ranks = list(self.procs) if ranks is None else list(ranks)
        deadline = time.monotonic() + timeout
        pending = set(ranks)
        while pending:
            for r in sorted(pending):
                if self.procs[r].popen.poll() is not None:
                    self.procs[r].t_exit = self.procs[r].t_exit or time.time()
                    pending.discard(r)
            if not pending:
                break
            if time.monotonic() > deadline:
                stuck = {r: self._outcome(self.procs[r]) for r in sorted(pending)}
                self.close()
                raise AssertionError(
                    f"ranks {sorted(stuck)} did not exit within {timeout:g} s:\n"
                    + "\n".join(o.describe() for o in stuck.values())
                )
            time.sleep(0.01)  # polling interval only; exits are timed by t_exit
        out = {}
        for r in ranks:
            proc = self.procs[r]
            proc.reader.join(timeout=5)
            out[r] = self._outcome(proc)
        return out

    def _outcome(self, proc: _Proc) -> RankOutcome:
        with proc.cond:
            lines = list(proc.lines)
        result = next((o for o in lines if o.get("event") == "result"), None)
        try:
            stderr = proc.stderr_path.read_text(errors="replace")
        except OSError:
            stderr = ""
        return RankOutcome(proc.rank, proc.popen.poll(), result, lines, stderr, proc.t_exit)

    def close(self) -> None:
        """SIGKILL every child still alive (stopped ones too) and reap them all."""
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                try:
                    proc.popen.kill()
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()

    def __enter__(self) -> RankJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_job(tmp_path: Path, size: int, spec: dict, *, timeout: float = 60.0, **job_kwargs):
    """Start `size` ranks on `spec`, wait for all; returns (job, {rank: RankOutcome})."""
    with RankJob(tmp_path, size, **job_kwargs) as job:
        job.start(spec)
        return job, job.wait(timeout=timeout)


def expect_ok(outcomes: dict[int, RankOutcome]) -> dict[int, dict]:
    """Every rank exited 0 with an ok result; returns {rank: result}."""
    for o in outcomes.values():
        assert o.returncode == 0 and o.result and o.result.get("ok"), o.describe()
    return {r: o.result for r, o in outcomes.items()}


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Fail a test that leaves any child process of pytest behind (and kill it)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    for p in left:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=5)
    assert not left, f"child processes survived the test: {[p.pid for p in left]}"
