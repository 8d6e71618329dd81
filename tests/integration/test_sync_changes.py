"""Changes the workspace sync used to miss or trip on, over SSH and SFTP to the test hosts
(netns lab): a file replaced by a folder of the same name (or the reverse) broke every later
sync, and now replaces the node's copy when boltring sent it, or is one error naming the node
and the path when it is not boltring's; a `chmod +x` alone was "nothing changed"; a file sent by
a sync that was killed midway stayed on the node after it was deleted here; and of two nodes
with full disks only the first was named."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.nodes.sync import SyncError
from boltring.cluster.nodes.transport import TransportError
from tests.integration.test_ssh_run import lab_yaml
from tests.integration.test_sync import run_sync
from tests.integration.test_sync_removed import on_node

pytestmark = pytest.mark.netns


def script_config(lab, tmp_path: Path, proj: Path):
    return with_overrides(
        load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=5)), script=str(proj / "train.py")
    )


def test_a_file_replaced_by_a_folder_and_the_reverse(lab, tmp_path, home):
    proj = tmp_path / "typeproj"
    (proj / "d").mkdir(parents=True)
    (proj / "train.py").write_text("print(1)\n")
    (proj / "a").write_text("file a\n")
    (proj / "d" / "x").write_text("x\n")
    (proj / "e").write_text("file e\n")
    cfg = script_config(lab, tmp_path, proj)
    h1 = [cfg.nodes[0]]
    ws = lab.hosts[0].workdir / "workspace" / "typeproj"
    asyncio.run(run_sync(cfg, nodes=h1))

    (proj / "a").unlink()
    (proj / "a").mkdir()
    (proj / "a" / "x").write_text("now in a folder\n")
    (proj / "d" / "x").unlink()
    (proj / "d").rmdir()
    (proj / "d").write_text("now a file\n")
    (r,) = asyncio.run(run_sync(cfg, nodes=h1))
    assert sorted(r.files_sent) == ["typeproj/a/x", "typeproj/d"] and r.files_removed == [
        "typeproj/a",
        "typeproj/d/x",
    ]
    assert (ws / "a" / "x").read_text() == "now in a folder\n" and (ws / "d").read_text() == "now a file\n"
    (again,) = asyncio.run(run_sync(cfg, nodes=h1))
    assert again.files_sent == [] and again.files_removed == []

    # not boltring's to remove: what the job wrote in a folder, a sent file the job changed
    (ws / "a" / "out.txt").write_text("the job's\n")
    (proj / "a" / "x").unlink()
    (proj / "a").rmdir()
    (proj / "a").write_text("a file again\n")
    with pytest.raises(SyncError) as e:
        asyncio.run(run_sync(cfg, nodes=h1))
    path = "~/.boltring/workspace/typeproj/a"
    assert (
        str(e.value) == f"h1: {path} is a folder there but a file here, and holds files boltring did not send"
    )
    assert e.value.hint == f"remove it on h1 (rm -r {path}) if nothing in it is needed, then launch again"
    assert (ws / "a" / "out.txt").exists() and (ws / "a" / "x").exists()  # nothing touched

    (ws / "a" / "out.txt").unlink()  # as the hint says, but only the job's file: boltring's x goes
    (ws / "e").write_text("changed by the job\n")
    (proj / "e").unlink()
    (proj / "e").mkdir()
    (proj / "e" / "y").write_text("y\n")
    with pytest.raises(
        SyncError, match=r"^h1: ~/\.boltring/workspace/typeproj/e is a file there but a folder here"
    ):
        asyncio.run(run_sync(cfg, nodes=h1))
    (ws / "e").unlink()
    (r,) = asyncio.run(run_sync(cfg, nodes=h1))
    assert sorted(r.files_sent) == ["typeproj/a", "typeproj/e/y"] and r.files_removed == ["typeproj/a/x"]
    assert on_node(lab.hosts[0], "typeproj") == {"train.py", "a", "d", "e/y"}


def test_a_permission_change_alone_reaches_the_node(lab, tmp_path, home):
    proj = tmp_path / "modeproj"
    proj.mkdir()
    (proj / "train.py").write_text("print(1)\n")
    (proj / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (proj / "run.sh").chmod(0o644)
    cfg = script_config(lab, tmp_path, proj)
    asyncio.run(run_sync(cfg))
    (proj / "run.sh").chmod(0o755)
    second = asyncio.run(run_sync(cfg))
    for h in lab.hosts:
        assert (h.workdir / "workspace" / "modeproj" / "run.sh").stat().st_mode & 0o777 == 0o755
    for r in second:  # by chmod: the content is not sent again
        assert r.summary() == "set the mode of 1 file as here, nothing sent"
        assert r.files_sent == [] and r.modes_set == ["modeproj/run.sh"], r
    third = asyncio.run(run_sync(cfg))
    assert all(r.summary() == "nothing changed, nothing sent" for r in third)


KILLED_SYNC = """
import asyncio, sys
from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.nodes import sync
from boltring.cluster.nodes.ssh import SshTransport
cfg = with_overrides(load_config(sys.argv[1]), script=sys.argv[2])
node = cfg.nodes[0]
t = SshTransport(node, options=cfg.ssh)
def progress(node, path, sent, total):
    print(sent, flush=True)
asyncio.run(sync.sync_workspace(cfg, lambda n: t, progress, [node]))
"""


def test_a_file_sent_by_a_killed_sync_is_removed_once_deleted_here(lab, tmp_path, home):
    proj = tmp_path / "killproj"
    proj.mkdir()
    (proj / "train.py").write_text("print(1)\n")
    cfg_path = lab_yaml(lab, tmp_path / "lab.yaml", steps=5)
    cfg = with_overrides(load_config(cfg_path), script=str(proj / "train.py"))
    h1 = [cfg.nodes[0]]
    asyncio.run(run_sync(cfg, nodes=h1))

    (proj / "a_new.py").write_text("x = 1\n")  # sent first (files go in name order)
    with open(proj / "z_big.bin", "wb") as f:
        f.truncate(100 << 20)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, str(cfg_path), str(proj / "train.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline()  # z_big.bin is under way: a_new.py has landed
        proc.send_signal(signal.SIGKILL)  # no cleanup, no last record
    finally:
        proc.kill()
        proc.wait(30)
    time.sleep(0.5)
    there = on_node(lab.hosts[0], "killproj")
    assert {f for f in there if not f.startswith(".z_big.bin.boltring-")} == {"a_new.py", "train.py"}, there

    (proj / "a_new.py").unlink()
    (proj / "z_big.bin").unlink()
    (r,) = asyncio.run(run_sync(cfg, nodes=h1))
    assert r.files_removed == ["killproj/a_new.py"] and r.stale_removed == 1
    assert on_node(lab.hosts[0], "killproj") == {"train.py"}


def in_host(lab, name: str, *argv: str) -> subprocess.CompletedProcess:
    """argv in that host's mount namespace (its sshd's: what the node's SSH sessions see)."""
    pid = lab.host(name).sshd.pid
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", *argv], capture_output=True, text=True, check=True
    )


@pytest.fixture
def two_small_workspaces(lab) -> Iterator[None]:
    """h1's and h2's workspace folders each on a 5 MB tmpfs; unmounted after the test."""
    mounted = []
    try:
        for name in ("h1", "h2"):
            ws = lab.host(name).workdir / "workspace"
            ws.mkdir(parents=True, exist_ok=True)
            in_host(lab, name, "mount", "-t", "tmpfs", "-o", "size=5m", "boltring-test-small", str(ws))
            mounted.append((name, ws))
        yield
    finally:
        for name, ws in mounted:
            pid = lab.host(name).sshd.pid
            subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", "-l", str(ws)], check=False)


def test_every_node_whose_sync_fails_is_named(lab, tmp_path, home, two_small_workspaces):
    proj = tmp_path / "fullproj2"
    proj.mkdir()
    (proj / "train.py").write_text("print(1)\n")
    (proj / "big.bin").write_bytes(b"\1" * (8 << 20))
    with pytest.raises(TransportError) as e:
        asyncio.run(run_sync(script_config(lab, tmp_path, proj)))
    said = str(e.value)
    assert "\n" not in said
    for name in ("h1", "h2"):
        assert (
            f"{name}: cannot write {lab.host(name).workdir}/workspace/fullproj2/big.bin: disk full (" in said
        )
    assert "h3" not in said
    assert (lab.host("h3").workdir / "workspace" / "fullproj2" / "big.bin").stat().st_size == 8 << 20
