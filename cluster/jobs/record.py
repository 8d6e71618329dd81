"""The job record: BOLTRING_HOME/jobs/<job id>.json, the one source of truth about a job.

It is written *before* any rank starts (state "launching"), so whatever was started can always
be found and killed, and it holds the job as launched with every command-line override (steps,
ranks, seed …) and each rank's node and run directory. `boltring status`, `kill`, a re-attaching
app and the summary read the job from here, never from the config file as it is now.

Each node's wall clock against the controller's (`clocks`), as measured when its ranks were
started, is kept with the job: the times its ranks write (their ends, their metrics lines) are on
that node's clock, and whoever sums the job up (the summary, a re-attach, `boltring runs`) puts
them on the controller's before comparing them with its start (follow.RankState.here).

It also names the controllers that watch the job (`watchers`: each one's pid, host, machine
and start time, watchers.py): the
one that launched it, and each that re-attached since (the app, `status`, `kill`). Once none of
them is alive, nothing follows the ranks or will write how the job ended, and `boltring runs`
says so instead of "running" (history.py).

Several processes write one record (the controller that launched the job, one that re-attached,
`boltring kill` asking a restart not to happen): every read-modify-write holds the record's lock
(`locked`, an flock on jobs/.<job id>.lock) and every write replaces the file whole (atomic), so
none undoes another's change made between its read and its write. The controller that restarts
the job is its `owner` (claim_restarts): one at a time, so a job is never restarted twice.

A write that fails (a full disk) raises ControllerError naming the file and the system's reason,
e.g. "cannot write the job record /…/jobs/x.json: No space left on device".
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from boltring.cluster.agent.facts import ClockOffset
from boltring.cluster.agent.spawn import write_atomic
from boltring.cluster.config.schema import Config, JobSpec, boltring_home
from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.jobs.watchers import alive, on_this_machine, this_controller, valid
from boltring.cluster.states import JobState

_TUPLE_FIELDS = ("args", "sync")


def jobs_dir() -> Path:
    return boltring_home() / "jobs"


def record_path(job_id: str) -> Path:
    return jobs_dir() / f"{job_id}.json"


def is_active(record: dict[str, Any] | None) -> bool:
    """The record's job may have live ranks (launching, running, stalled, restarting)."""
    try:
        return record is not None and JobState(record.get("state")).active
    except ValueError:
        return False


def new_record(config: Config, job_id: str, ranks: list[dict[str, Any]], *, resume: bool) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "state": "launching",
        "config": config.source,
        "created": time.time(),
        "started": None,
        "steps": config.job.steps,  # kept at the top level for older readers
        "world_size": len(ranks),
        "nodes": [n.name for n in config.nodes],
        "job": job_to_dict(config.job),
        "resume": resume,
        "ranks": ranks,
        "restarts": [],
        "stopped_by": None,
        "reason": None,
        "blamed": None,  # failed: {"rank", "node", "cause"} of the rank the reason blames
        "watchers": [this_controller()],
        "owner": this_controller(),  # the one controller that may restart it (claim_restarts)
        "clocks": {},  # node -> {"offset_s", "error_s"}: its clock - this one's (note_clock)
    }


def note_clock(record: dict[str, Any], node: str, reading: ClockOffset) -> None:
    """Keep how far `node`'s wall clock is from the controller's (node - controller, seconds),
    and the measurement's error, in the record (written with it)."""
    clocks = record.get("clocks")
    if not isinstance(clocks, dict):
        clocks = record["clocks"] = {}
    clocks[node] = {"offset_s": reading.offset_s, "error_s": reading.error_s}


def clock_offsets(record: dict[str, Any]) -> dict[str, float]:
    """node -> what to take from a time read on its clock to put it on the controller's
    (ClockOffset.applied_s); a node the record has no measurement of is left out (0: a record
    written before boltring measured clocks)."""
    raw = record.get("clocks")
    out: dict[str, float] = {}
    for node, c in raw.items() if isinstance(raw, dict) else ():
        if isinstance(c, dict) and all(_number(c.get(k)) for k in ("offset_s", "error_s")):
            out[str(node)] = ClockOffset(float(c["offset_s"]), float(c["error_s"])).applied_s
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def job_to_dict(job: JobSpec) -> dict[str, Any]:
    d = dataclasses.asdict(job)
    for k in _TUPLE_FIELDS:
        if k in d:
            d[k] = list(d[k])
    return d


def job_from_record(record: dict[str, Any], default: JobSpec) -> JobSpec:
    """The JobSpec the job was launched with; fields the record lacks keep `default`'s."""
    saved = record.get("job")
    if not isinstance(saved, dict):
        return dataclasses.replace(default, steps=int(record.get("steps", default.steps)))
    known = {f.name for f in dataclasses.fields(JobSpec)}
    values = {k: (tuple(v) if k in _TUPLE_FIELDS else v) for k, v in saved.items() if k in known}
    return dataclasses.replace(default, **values)


def add_watcher(record: dict[str, Any]) -> None:
    """Name this process among the record's watchers (once)."""
    me = this_controller()
    watchers = _watchers(record)
    if me not in watchers:
        record["watchers"] = [*watchers, me]


def watch(job_id: str) -> None:
    """Name this process among the watchers of the record on disk, read afresh under its lock:
    the copy a re-attaching controller read may be seconds old, and written back whole it could
    undo what the job's other controller wrote since (its end)."""

    def name_me(fresh: dict[str, Any]) -> bool:
        if not is_active(fresh):
            return False
        add_watcher(fresh)
        return True

    update(job_id, name_me)


def ask_stop(job_id: str, by: str) -> bool:
    """Ask the job's owner, in its record, to stop it while it is between attempts (launching,
    or restarting with no rank alive); False when it is not. Looked at under the lock: the owner
    writes "running" once its (re)launched ranks run and then looks for a stop asked (relaunch),
    so a stop asked before is heeded, and after it the job is running and has ranks to stop."""

    def ask(fresh: dict[str, Any]) -> bool:
        if fresh.get("state") not in (JobState.LAUNCHING, JobState.RESTARTING):
            return False
        fresh["stop_requested"] = by
        return True

    asked = False

    def note(fresh: dict[str, Any]) -> bool:
        nonlocal asked
        asked = ask(fresh)
        return asked

    update(job_id, note)
    return asked


def claim_restarts(job_id: str) -> bool:
    """May this controller restart the job? Only its owner may: the controller that launched
    it, or one that re-attached and took it over here once the owner was known to be gone (a
    process of this machine no longer alive). Taken under the record's lock, so of two that
    find the owner gone one gets it; an owner on another machine is never taken over (nobody
    here can tell it is gone). Records written before `owner` was kept: the first watcher,
    the controller that launched the job."""
    me = this_controller()

    def take(fresh: dict[str, Any]) -> bool:
        owner = fresh.get("owner")
        if not valid(owner):
            watchers = _watchers(fresh)
            owner = watchers[0] if watchers else None
        if owner == me:
            return False  # already ours: nothing to write
        if owner is not None and (not on_this_machine(owner) or alive(owner)):
            raise _NotYours
        fresh["owner"] = me
        return True

    try:
        fresh = update(job_id, take)
    except _NotYours:
        return False
    return fresh is not None


class _NotYours(Exception):
    """The job's owner is alive (or cannot be told gone): claim_restarts gets nothing."""


def watched(record: dict[str, Any]) -> bool | None:
    """Is a controller that watches this job alive? None when that cannot be told here: the
    record names none (written before boltring named them), or one runs on another machine."""
    watchers = _watchers(record)
    if not watchers:
        return None
    if any(alive(w) for w in watchers if on_this_machine(w)):
        return True
    return False if all(on_this_machine(w) for w in watchers) else None


def _watchers(record: dict[str, Any]) -> list[dict[str, Any]]:
    raw = record.get("watchers")
    return [w for w in raw if valid(w)] if isinstance(raw, list) else []


def _merge_watchers(record: dict[str, Any], on_disk: dict[str, Any] | None) -> None:
    """Keep the watchers another process named in the file since this one read it (a controller
    rewrites its own copy of the record: an app that re-attached meanwhile was dropped), less
    those of this machine that have ended (a script calling `status` every minute would grow
    the list without end); with none alive, the last one stays, so the record still tells that
    nothing watches the job."""
    merged = _watchers(record)
    if isinstance(on_disk, dict):
        merged += [w for w in _watchers(on_disk) if w not in merged]
    if not merged and "watchers" not in record:
        return
    me = this_controller()
    live = [w for w in merged if w == me or not on_this_machine(w) or alive(w)]
    record["watchers"] = live or merged[-1:]


@contextlib.contextmanager
def locked(job_id: str) -> Iterator[None]:
    """Hold job `job_id`'s record lock: around every read-modify-write of the record, by any
    process of this machine (the record lives here, under BOLTRING_HOME)."""
    path = jobs_dir() / f".{job_id}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _cannot_write(e, path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update(job_id: str, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """Read the record afresh, let `change` edit it, and write it back when `change` says so,
    all under the record's lock. The record as it now is, or None when there is none."""
    with locked(job_id):
        fresh = read(job_id)
        if fresh is not None and change(fresh):
            _write(fresh)
        return fresh


def write(record: dict[str, Any]) -> None:
    """Write a controller's own copy of the record, under its lock, keeping what other processes
    wrote into it since that copy was read (see _write)."""
    with locked(record["job_id"]):
        _write(record)


def _write(record: dict[str, Any]) -> None:
    path = record_path(record["job_id"])
    try:
        on_disk = _read_path(path)
        _merge_watchers(record, on_disk)
        # Asked by `boltring kill` while the job waited to restart (JobController.request_stop):
        # the owner's next write of its own copy erased it, and the job restarted after "it will
        # not restart". Once asked, it stays asked.
        if on_disk and on_disk.get("stop_requested") and not record.get("stop_requested"):
            record["stop_requested"] = on_disk["stop_requested"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=1, default=str))
    except OSError as e:
        raise _cannot_write(e, path) from None


def _cannot_write(e: OSError, path: Path) -> ControllerError:
    return ControllerError(
        f"cannot write the job record {e.filename or path}: {e.strerror or e}",
        hint="free disk space under BOLTRING_HOME (or point BOLTRING_HOME elsewhere)",
    )


def _read_path(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read(job_id: str) -> dict[str, Any] | None:
    return _read_path(record_path(job_id))


def active(config_source: str) -> dict[str, Any] | None:
    """The newest job of this config that may still have live ranks, whatever other configs
    (another cluster, a bench cell) launched since. Found by reading the records, not through
    one "current job" pointer: such a pointer, moved by any launch, left a running job that
    `status` and `kill` could no longer find."""
    newest: dict[str, Any] | None = None
    for path in jobs_dir().glob("*.json"):
        rec = read(path.stem)
        if rec is None or rec.get("config") != config_source or not is_active(rec):
            continue
        if newest is None or float(rec.get("created") or 0) > float(newest.get("created") or 0):
            newest = rec
    return newest
