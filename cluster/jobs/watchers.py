"""Who watches a job: a controller process, named in the job record so that another one can
tell whether it is still alive (record.watched, `boltring runs`' "unwatched").

A watcher is {"pid", "host", "machine", "started"}. The pid alone is not enough: a laptop that
runs for weeks gives a dead app's pid to another process, which then seemed to watch the job.
So is its start time (`started`: /proc on Linux, `ps -o lstart=` on macOS). The hostname alone is
not enough either: a Mac's changes with its network ("MacBook-Pro.local", then the café's
"macbook-pro.lan"), after which its own watchers looked like another machine's and could not be
checked. So is the machine's id (`machine`: /etc/machine-id on Linux, IOPlatformUUID on macOS),
which a hostname change leaves alone. Records written before either was kept compare what
they have.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import Any


def this_controller() -> dict[str, Any]:
    """This process as a watcher of a job, as its record names it."""
    me: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    if machine := machine_id():
        me["machine"] = machine
    if started := _my_start(os.getpid()):  # keyed by pid: a fork is another process
        me["started"] = started
    return me


def valid(w: object) -> bool:
    """A watcher as a record holds it (older records: pid and host only)."""
    return (
        isinstance(w, dict)
        and isinstance(w.get("pid"), int)
        and isinstance(w.get("host"), str)
        and all(isinstance(w.get(k), str) for k in ("machine", "started") if k in w)
    )


def on_this_machine(w: dict[str, Any]) -> bool:
    """Does watcher `w` run on this machine: the same machine id when both are known, else the
    same hostname."""
    mine = machine_id()
    if mine and w.get("machine"):
        return w["machine"] == mine
    return w["host"] == socket.gethostname()


def alive(w: dict[str, Any]) -> bool:
    """Is watcher `w` (of this machine) alive: its pid is, is not a zombie, and when the record
    says when it started, is the same process, not a later one given its pid."""
    pid = w["pid"]
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    else:
        try:  # Linux: the state after the command name; elsewhere, kill's answer stands
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1] == ["Z"]:
                return False
        except OSError:
            pass
    if w.get("started"):
        now = process_started(pid)
        return now is None or now == w["started"]
    return True


@cache
def _my_start(pid: int) -> str | None:
    return process_started(pid)


def process_started(pid: int) -> str | None:
    """When process `pid` of this machine started, as a token that differs for a later process
    given the same pid; None when that cannot be told (no such process). Linux: the start time
    in /proc/<pid>/stat (clock ticks since boot); elsewhere (macOS) `ps -o lstart=`, to the
    second, within which a pid is not reused."""
    try:
        return "ticks:" + Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        pass
    return started_by_ps(pid)


def started_by_ps(pid: int) -> str | None:
    """process_started, by `ps` (macOS and the BSDs; Linux's procps answers the same)."""
    out = _output(["ps", "-o", "lstart=", "-p", str(pid)])
    text = " ".join((out or "").split())
    return f"lstart:{text}" if text else None


@cache
def machine_id() -> str | None:
    """This machine's id, which a hostname change leaves alone; None when it has none."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):  # Linux (systemd, dbus)
        try:
            if text := Path(path).read_text().strip():
                return text
        except OSError:
            pass
    return platform_uuid(_output(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]) or "")  # macOS


def platform_uuid(ioreg: str) -> str | None:
    """The IOPlatformUUID in `ioreg -rd1 -c IOPlatformExpertDevice`'s output (macOS)."""
    m = re.search(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]+)"', ioreg)
    return m[1] if m else None


def _output(argv: list[str]) -> str | None:
    """A command's stdout when it ran and succeeded, else None (not installed: another OS)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None
