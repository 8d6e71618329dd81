"""What boltring sent to a node's workspace: the only files a sync ever removes there.

<workspace>/.boltring_sent.json = {"roots": {"proj": {"proj/train.py": [size, sha256], ...}}},
rewritten after each sync of those roots (other roots' entries kept). A file is removed only when
this record lists it, the laptop no longer has it (not even as a file .boltringignore now leaves
out), and the node's copy is still the one sent (same size and hash): what the job wrote in the
workspace, or changed since, stays. A record that is missing or unreadable removes nothing.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from boltring.cluster.nodes.transport import Transport

if TYPE_CHECKING:
    from boltring.cluster.nodes.sync import LocalFile, SyncRoot

SENT_RECORD = ".boltring_sent.json"
RECORD_MAX_BYTES = 64 << 20  # 20,000 files (sync's limit) take about 2 MB

Record = dict[str, dict[str, list]]  # root name -> workspace-relative path -> [size, sha256]


async def read(t: Transport, ws: str) -> Record:
    raw = await t.read_from(f"{ws}/{SENT_RECORD}", 0, RECORD_MAX_BYTES)
    try:
        roots = json.loads(raw or b"{}").get("roots", {})
    except (ValueError, AttributeError):
        return {}
    if not isinstance(roots, dict):
        return {}
    return {k: v for k, v in roots.items() if isinstance(k, str) and isinstance(v, dict)}


async def write(t: Transport, ws: str, record: Record, names: list[str], local: dict[str, LocalFile]) -> None:
    """The record with the entries of `names` replaced by what the laptop has now (all of it is
    on the node after a sync: sent now or unchanged)."""
    roots = {k: v for k, v in record.items() if k not in names}
    for name in names:
        roots[name] = {
            rel: [f.size, f.sha256] for rel, f in local.items() if rel == name or rel.startswith(name + "/")
        }
    await t.write_file(f"{ws}/{SENT_RECORD}", json.dumps({"roots": roots}).encode(), mode=0o644)


def gone_here(
    record: Record, roots: list[SyncRoot], local: dict[str, LocalFile], theirs: dict[str, list]
) -> list[str]:
    """Workspace-relative files to remove from the node: sent before, gone from the laptop, and
    on the node as sent (`theirs`: the node's manifest, [size, sha256] per file)."""
    gone = []
    for r in roots:
        for rel, sent in (record.get(r.name) or {}).items():
            if rel in local or theirs.get(rel) != sent:
                continue  # still sent, already gone, or no longer what boltring sent (the job's now)
            tail = rel[len(r.name) + 1 :] if rel.startswith(r.name + "/") else None
            if tail is None or os.path.lexists(r.local / tail):
                continue  # not under this root, or still on the laptop and only left out now
            gone.append(rel)
    return sorted(gone)


def parents(rels: list[str]) -> list[str]:
    """The folders above these workspace-relative files, below their root, deepest first: the
    ones to try removing (rmdir) once the files are gone."""
    dirs = {
        "/".join(parts[:i]) for rel in rels if len(parts := rel.split("/")) > 2 for i in range(2, len(parts))
    }
    return sorted(dirs, key=lambda d: (-d.count("/"), d))
