"""Files deleted or renamed on the laptop leave the nodes at the next sync (netns lab): `mv
lib/util.py lib/helpers.py` left both on every node. Only what boltring itself sent before (its
record of the last sync of that folder) and is gone here is removed; never what the job wrote
there, a sent file the job changed since, a file now left out by .boltringignore, or anything
outside the synced folders. The sync line and the `sync` event say how many were removed; a
symlinked folder in the script folder reaches the nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import LogLine, SyncDone
from boltring.cluster.nodes import sent_record
from tests.integration.test_ssh_run import lab_yaml
from tests.integration.test_sync import run_sync

pytestmark = pytest.mark.netns


def make_project(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    (p / "lib" / "sub").mkdir(parents=True)
    (p / "train.py").write_text("print('hi')\n")
    (p / "lib" / "util.py").write_text("X = 1\n")
    (p / "lib" / "sub" / "deep.py").write_text("Y = 1\n")
    (p / "vocab.txt").write_text("abc\n")
    (p / "changed_there.txt").write_text("as sent\n")
    (p / "now_ignored.txt").write_text("keep me\n")
    return p


def on_node(h, root: str) -> set[str]:
    base = h.workdir / "workspace" / root
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


async def controller_sync(cfg) -> list:
    c = JobController(cfg)
    seen: list = []
    c.add_listener(seen.append)
    try:
        await c._sync_workspace()
    finally:
        await c.close()
    return seen


def test_deleted_and_renamed_files_leave_the_nodes_and_nothing_else(lab, tmp_path, home):
    proj = make_project(tmp_path, "rmproj")
    other = tmp_path / "otherdata"
    other.mkdir()
    (other / "keep.bin").write_bytes(b"k")
    cfg = with_overrides(
        load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=5)), script=str(proj / "train.py")
    )
    with_other = dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, sync=(str(other),)))
    first = asyncio.run(run_sync(with_other))
    assert all(len(r.files_sent) == 7 and r.files_removed == [] for r in first)

    for h in lab.hosts:  # what the job wrote on the node, and a sent file it changed
        ws = h.workdir / "workspace" / "rmproj"
        (ws / "outputs").mkdir()
        (ws / "outputs" / "ckpt.bin").write_bytes(b"job")
        (ws / "lib" / "cache.json").write_text("{}")
        (ws / "changed_there.txt").write_text("the job rewrote this\n")

    (proj / "lib" / "util.py").rename(proj / "lib" / "helpers.py")
    (proj / "vocab.txt").unlink()
    shutil.rmtree(proj / "lib" / "sub")
    (proj / "changed_there.txt").unlink()
    (proj / ".boltringignore").write_text("now_ignored.txt\n")
    # this sync names only the script folder: otherdata, synced before, is not touched
    seen = asyncio.run(controller_sync(cfg))
    done = {e.node: e for e in seen if isinstance(e, SyncDone)}
    assert set(done) == {"h1", "h2", "h3"}
    assert all(d.files_sent == 1 and d.files_removed == 3 for d in done.values()), done
    said = [e.text for e in seen if isinstance(e, LogLine) and "workspace" in e.text]
    assert len(said) == 3 and all(
        "sent 1 changed file (6 bytes)" in t and "removed 3 files deleted here" in t for t in said
    ), said
    for h in lab.hosts:
        assert on_node(h, "rmproj") == {
            "train.py",
            "lib/helpers.py",
            "lib/cache.json",  # the job's
            "outputs/ckpt.bin",  # the job's
            "changed_there.txt",  # changed by the job since it was sent
            "now_ignored.txt",  # still here, only left out now
        }
        assert not (h.workdir / "workspace" / "rmproj" / "lib" / "sub").exists()  # emptied: gone
        assert on_node(h, "otherdata") == {"keep.bin"}
        wire = done[h.name].to_dict()
        assert wire["event"] == "sync" and wire["files_removed"] == 3

    again = asyncio.run(run_sync(cfg))  # nothing more to remove, nothing to send
    assert all(r.files_sent == [] and r.files_removed == [] for r in again)
    # a record it cannot read removes nothing
    for h in lab.hosts:
        (h.workdir / "workspace" / sent_record.SENT_RECORD).write_text("not json")
    (proj / "lib" / "helpers.py").unlink()
    kept = asyncio.run(run_sync(cfg))
    assert all(r.files_removed == [] for r in kept)
    assert all("lib/helpers.py" in on_node(h, "rmproj") for h in lab.hosts)
    record = json.loads((lab.hosts[0].workdir / "workspace" / sent_record.SENT_RECORD).read_text())
    assert "lib/helpers.py" not in json.dumps(record["roots"]["rmproj"])  # rewritten after that sync


def test_symlinked_folder_reaches_the_nodes(lab, tmp_path, home):
    data = tmp_path / "datasets" / "foo"
    data.mkdir(parents=True)
    (data / "shard0.txt").write_text("tokens\n")
    proj = make_project(tmp_path, "linkproj")
    os.symlink(data, proj / "dataset")
    cfg = with_overrides(
        load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=5)), script=str(proj / "train.py")
    )
    (r, *_) = asyncio.run(run_sync(cfg, nodes=[cfg.nodes[0]]))
    assert "linkproj/dataset/shard0.txt" in r.files_sent
    got = lab.hosts[0].workdir / "workspace" / "linkproj" / "dataset" / "shard0.txt"
    assert got.read_text() == "tokens\n" and not got.parent.is_symlink()
