"""Process groups on the node: which are alive, in what state, and whether a group id still
names the rank it was recorded for. Standard library only (spawn.py's helpers, on the node).

A rank's group id is its keeper's pid (spawn.py). Once the keeper and every member have gone,
the kernel may hand that number to a new process, which can lead a group of its own: a
`boltring kill` days later would then signal a stranger's processes. `reused` tells that case
apart from the rank's own leftovers (members outliving the keeper keep the number in use, so
it cannot be reused while they live).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def _proc_groups() -> list[tuple[int, str]] | None:
    """(process group, one-letter state) of every live process, from /proc; None without /proc.
    Zombies count as gone (an init that never reaps leaves them)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):
            out.append((int(fields[2]), fields[0]))
    return out


def group_states(pgid: int) -> list[str] | None:
    """One-letter process states (R, S, D, T …) of the live members of the group; None when the
    system cannot tell (no /proc and no ps)."""
    procs = _proc_groups()
    if procs is not None:  # Linux
        return [state for group, state in procs if group == pgid]
    try:  # macOS: ps knows the group
        out = subprocess.run(
            ["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [w[0] for w in out.split() if w and w[0] not in ("Z",)]


def live_groups(pgids: set[int]) -> set[int]:
    """Which of these process groups still have a live member: one pass over /proc for all
    of them (a kill of 80 ranks polls this every 50 ms), group by group elsewhere."""
    procs = _proc_groups()
    if procs is None:
        return {g for g in pgids if group_alive(g)}
    return {group for group, _ in procs if group in pgids}


def group_alive(pgid: int) -> bool:
    """Is any live (non-zombie) process left in the group?"""
    if Path("/proc").is_dir():
        return bool(group_states(pgid))
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def started_at(pid: int) -> float | None:
    """When process `pid` started, in this node's time.time() (to a second or better); None
    when there is no such process or the system cannot tell."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():  # Linux: boot time plus the start in clock ticks
        try:
            fields = stat.read_text()
            ticks = int(fields[fields.rindex(")") + 2 :].split()[19])
            boot = next(
                int(line.split()[1])
                for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime ")
            )
        except (OSError, ValueError, StopIteration, IndexError):
            return None
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    try:  # macOS: ps's elapsed time, [[dd-]hh:]mm:ss
        out = subprocess.run(
            ["ps", "-o", "etime=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    if out.returncode != 0 or not text:
        return None
    days, _, clock = text.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return time.time() - seconds - int(days or 0) * 86400


def reused(pgid: int, ended: float | None) -> bool:
    """Does the number `pgid` now belong to a process that started after the rank `ended`
    (its exit record's time)? Then it is someone else's group: never signal it."""
    if ended is None:
        return False
    began = started_at(pgid)
    return began is not None and began > ended + 2.0  # one clock, but boot time is whole seconds
