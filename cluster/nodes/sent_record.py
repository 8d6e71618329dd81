"""What boltring sent to a node's workspace: the only files a sync ever removes there.

<workspace>/.boltring_sent.json = {"roots": {"proj": {"proj/train.py": [[size, sha256]], ...}}}:
each file's versions boltring sent. It is written twice per sync of those roots (other roots'
entries kept): before the first upload, with each file's new version beside the ones recorded
before, so that a sync cut short anywhere (Ctrl-C, a dropped connection, a killed laptop) leaves
every file on the node either as it was or as sent, both on record; and after the last, with
only what the laptop has now. A file is removed only when this record lists it, the laptop no
longer has it as a file (not even one .boltringignore now leaves out; a folder there now does
not count), and the node's copy is one boltring sent (same size and hash): what the job wrote in
the workspace, or changed since, stays. A record that is missing or unreadable removes nothing.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from boltring.cluster.nodes.transport import Transport

if TYPE_CHECKING:
    from boltring.cluster.nodes.sync import LocalFile, SyncRoot

SENT_RECORD = ".boltring_sent.json"
RECORD_MAX_BYTES = 64 << 20  # 20,000 files (sync's limit) take about 2 MB

Record = dict[str, dict[str, list[list]]]  # root name -> workspace-relative path -> [[size, sha256], ...]


async def read(t: Transport, ws: str) -> Record:
    raw = await t.read_from(f"{ws}/{SENT_RECORD}", 0, RECORD_MAX_BYTES)
    try:
        roots = json.loads(raw or b"{}").get("roots", {})
    except (ValueError, AttributeError):
        return {}
    if not isinstance(roots, dict):
        return {}
    return {
        k: {rel: _versions(v) for rel, v in files.items()}
        for k, files in roots.items()
        if isinstance(k, str) and isinstance(files, dict)
    }


def _versions(value: Any) -> list[list]:
    """An entry's versions: a list of [size, sha256], or one [size, sha256] alone (as a record
    was written before versions were kept)."""
    if not isinstance(value, list):
        return []
    if len(value) == 2 and isinstance(value[0], int) and isinstance(value[1], str):
        return [value]
    return [v for v in value if isinstance(v, list) and len(v) == 2]


async def write(
    t: Transport,
    ws: str,
    record: Record,
    names: list[str],
    local: dict[str, LocalFile],
    *,
    keep: bool = False,
) -> None:
    """The record with the entries of `names` replaced by what the laptop has now (all of it is
    on the node after a sync: sent now or unchanged). With `keep` (before the uploads), every
    version recorded before stays beside the laptop's."""
    roots = {k: v for k, v in record.items() if k not in names}
    for name in names:
        mine = {
            rel: [[f.size, f.sha256]] for rel, f in local.items() if rel == name or rel.startswith(name + "/")
        }
        if keep:
            for rel, old in (record.get(name) or {}).items():
                mine[rel] = old + [v for v in mine.get(rel, []) if v not in old]
        roots[name] = mine
    await t.write_file(f"{ws}/{SENT_RECORD}", json.dumps({"roots": roots}).encode(), mode=0o644)


def gone_here(
    record: Record, roots: list[SyncRoot], local: dict[str, LocalFile], theirs: dict[str, list]
) -> list[str]:
    """Workspace-relative files to remove from the node: sent before, gone from the laptop, and
    on the node as sent (`theirs`: the node's manifest, [size, sha256, mode] per file)."""
    gone = []
    for r in roots:
        for rel, sent in (record.get(r.name) or {}).items():
            if rel in local or theirs.get(rel, [])[:2] not in sent:
                continue  # still sent, already gone, or no longer what boltring sent (the job's now)
            if rel == r.name:
                here = r.local  # a root that was a file
            elif rel.startswith(r.name + "/"):
                here = r.local / rel[len(r.name) + 1 :]
            else:
                continue  # not under this root
            # Still a file here, only left out now: it stays. A folder here now (the file was
            # replaced by one) does not keep it: the node's copy would be in the folder's way.
            if os.path.lexists(here) and not os.path.isdir(here):
                continue
            gone.append(rel)
    return sorted(gone)


def parents(rels: list[str]) -> list[str]:
    """The folders above these workspace-relative files, below their root, deepest first: the
    ones to try removing (rmdir) once the files are gone."""
    dirs = {
        "/".join(parts[:i]) for rel in rels if len(parts := rel.split("/")) > 2 for i in range(2, len(parts))
    }
    return sorted(dirs, key=lambda d: (-d.count("/"), d))
