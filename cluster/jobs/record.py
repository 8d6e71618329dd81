"""The job record: BOLTRING_HOME/jobs/<job id>.json, the one source of truth about a job.

It is written *before* any rank starts (state "launching"), so whatever was started can always
be found and killed, and it holds the job as launched with every command-line override (steps,
ranks, seed …) and each rank's node and run directory. `boltring status`, `kill`, a re-attaching
app and the summary read the job from here, never from the config file as it is now.

A write that fails (a full disk) raises ControllerError naming the file and the system's reason,
e.g. "cannot write the job record /…/jobs/x.json: No space left on device".
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from boltring.cluster.agent.spawn import write_atomic
from boltring.cluster.config.schema import Config, JobSpec, boltring_home
from boltring.cluster.jobs.errors import ControllerError
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
    }


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


def write(record: dict[str, Any]) -> None:
    path = record_path(record["job_id"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=1, default=str))
    except OSError as e:
        where = e.filename or path
        raise ControllerError(
            f"cannot write the job record {where}: {e.strerror or e}",
            hint="free disk space under BOLTRING_HOME (or point BOLTRING_HOME elsewhere)",
        ) from None


def read(job_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads(record_path(job_id).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
