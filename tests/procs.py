"""Finding the processes a test started, by a marker in their command line or environment."""

from __future__ import annotations

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
