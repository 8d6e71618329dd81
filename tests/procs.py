"""Finding the processes a test started, by a marker in their command line or environment."""

from __future__ import annotations

import threading
import time

import psutil


def boltring_processes(marker: str, settle_s: float = 3.0) -> list[psutil.Process]:
    """Live (non-zombie) processes whose argv or environment mention `marker` (a tmp path).

    Waits up to `settle_s` for processes that are already on their way out."""
    deadline = time.monotonic() + settle_s
    while True:
        found = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if p.info["status"] == psutil.STATUS_ZOMBIE or p.pid == psutil.Process().pid:
                    continue
                cmd = " ".join(p.info["cmdline"] or [])
                if marker in cmd or marker in " ".join(p.environ().values()):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def kill_rank_once_it_reports(config, rank: int, home) -> tuple:
    """Launch `config` on a JobController, SIGKILL `rank`'s process group once that rank has
    written a metrics line, and follow the job to its end: (summary, seconds from the kill to
    the summary). `home` is the HOME the run directories' "~" stands for."""
    import asyncio
    import os
    import signal
    from pathlib import Path

    from boltring.cluster.jobs.controller import JobController
    from boltring.cluster.jobs.events import RankMetrics

    async def scenario():
        c = JobController(config, poll_s=0.1)
        metrics: list = []
        c.add_listener(lambda ev: metrics.append(ev) if isinstance(ev, RankMetrics) else None)
        await c.launch()
        while not any(m.rank == rank for m in metrics):
            await asyncio.sleep(0.1)
        run_dir = Path(c._ranks[rank].plan.run_dir.replace("~", str(home), 1))
        os.killpg(int((run_dir / "pid").read_text()), signal.SIGKILL)
        t0 = time.monotonic()
        summary = await asyncio.wait_for(c.wait(), 90)
        await c.close()
        return summary, time.monotonic() - t0

    return asyncio.run(scenario())


def read_to_exit(proc, timeout: float) -> tuple[str, str]:
    """(stdout, stderr) that `proc` prints from now until it exits, read through its own file objects.

    Use this, not `communicate(timeout=...)`, once a test has iterated `proc.stdout`: with two pipes
    and a timeout, communicate reads the raw pipes and silently drops the text the file object had
    already read ahead (up to 8 KiB), which can leave a line cut in half. Kills `proc` if it
    outlives `timeout`, so the reader threads always end."""
    from concurrent.futures import ThreadPoolExecutor
    from subprocess import TimeoutExpired

    pool = ThreadPoolExecutor(2)
    out = pool.submit(proc.stdout.read)
    err = pool.submit(proc.stderr.read) if proc.stderr is not None else None
    try:
        proc.wait(timeout)
    except TimeoutExpired:
        proc.kill()
        raise
    finally:
        pool.shutdown(wait=True)
    return out.result(), err.result() if err is not None else ""


def exit_after(proc, act, timeout: float) -> tuple[str, str, float]:
    """Do `act()` (send a signal, fill a disk) and read `proc` to its exit: (stdout, stderr,
    seconds from the act to the exit). Kills `proc` if it outlives `timeout`."""
    t0 = time.monotonic()
    act()
    out, err = read_to_exit(proc, timeout)
    return out, err, time.monotonic() - t0


def cli_in(cwd, *args: str, timeout: float = 60):
    """`boltring ARGS` run in folder `cwd`, which is also its HOME and holds its BOLTRING_HOME:
    configs, run directories and job records all stay in the test's folder."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "boltring.tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "HOME": str(cwd), "BOLTRING_HOME": str(cwd / ".boltring")},
    )


def start_cli(*args: str, stderr=-1):
    """`boltring ARGS` started in the background with its output piped (stderr: a subprocess
    constant, PIPE by default), for tests that act on a job while it runs."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "boltring.tui.cli", *args], stdout=subprocess.PIPE, stderr=stderr, text=True
    )


def wait_for_step(proc, step: int = 3) -> str:
    """The `--json` lines `proc` printed until its job reached `step`; AssertionError with its
    output when the job ended first."""
    import json

    assert proc.stdout is not None
    read = ""
    for line in proc.stdout:
        read += line
        ev = json.loads(line)
        if ev["event"] == "step" and ev["step"] >= step:
            return read
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"the job ended before step {step}; stdout:\n{read[-3000:]}\nstderr:\n{err[-2000:]}")


class PipeReader:
    """A CLI's stdout and stderr lines as they come, each pipe read by its own thread: a test
    watches `out` while the process runs, then waits for it and calls join(). (communicate()
    beside a reader thread races it for lines: lost events, broken JSON.)"""

    def __init__(self, proc) -> None:
        self.out: list[str] = []
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=lambda: self.out.extend(proc.stdout or []), daemon=True),
            threading.Thread(target=lambda: self._err.extend(proc.stderr or []), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def join(self, timeout: float = 10) -> str:
        """Once the process ended: wait for the rest of its output; its stderr, whole."""
        for t in self._threads:
            t.join(timeout)
        return "".join(self._err)
