"""A node whose disk is full or read-only (netns lab: a 5 MB tmpfs, or a read-only remount, over
h2's workspace): SFTP only answers "Failure", so the transport asks the node and the error says
"disk full (N MB free on MOUNT, … needed)" or "read-only file system (MOUNT)", with what to do;
the launch says it in its one line; no temp file is left behind."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.nodes.ssh import SshTransport
from boltring.cluster.nodes.transport import TransportError
from tests.integration.test_ssh_run import lab_yaml, run_cli
from tests.integration.test_sync import run_sync

pytestmark = pytest.mark.netns


def in_h2(lab, *argv: str) -> subprocess.CompletedProcess:
    """argv in h2's mount namespace: `ip netns exec` gave its sshd one of its own, so a mount
    made there is what the node's SSH sessions see (and nothing else on this machine)."""
    pid = lab.host("h2").sshd.pid
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", *argv], capture_output=True, text=True, check=True
    )


@pytest.fixture
def small_workspace(lab) -> Iterator[Path]:
    """h2's workspace folder on a 5 MB tmpfs of its own; unmounted after the test, whatever happens."""
    ws = lab.host("h2").workdir / "workspace"
    ws.mkdir(parents=True, exist_ok=True)
    in_h2(lab, "mount", "-t", "tmpfs", "-o", "size=5m", "boltring-test-small", str(ws))
    try:
        yield ws
    finally:
        subprocess.run(
            ["nsenter", "-t", str(lab.host("h2").sshd.pid), "-m", "umount", "-l", str(ws)], check=False
        )


def project(tmp_path: Path, name: str, big_mb: int) -> Path:
    p = tmp_path / name
    (p / "data").mkdir(parents=True)
    (p / "train.py").write_text("print('hi')\n")
    (p / "data" / "big.bin").write_bytes(b"\x01" * (big_mb << 20))
    return p


def h2_sync_error(lab, tmp_path: Path, proj: Path) -> TransportError:
    cfg = with_overrides(
        load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=5)), script=str(proj / "train.py")
    )
    h2 = [n for n in cfg.nodes if n.name == "h2"]
    with pytest.raises(TransportError) as e:
        asyncio.run(run_sync(cfg, nodes=h2))
    return e.value


def test_full_disk_says_disk_full_with_the_free_space(lab, tmp_path, home, small_workspace):
    proj = project(tmp_path, "fullproj", big_mb=8)
    err = h2_sync_error(lab, tmp_path, proj)
    msg = str(err)
    assert msg.startswith(f"h2: cannot write {small_workspace}/fullproj/data/big.bin: disk full ("), msg
    assert f"MB free on {small_workspace}" in msg and "8.0 MB needed" in msg, msg
    assert "Failure" not in msg
    assert "free space on h2" in (err.hint or ""), err.hint
    left = in_h2(lab, "find", str(small_workspace), "-name", "*.boltring-*").stdout
    assert not left, left  # the temp file went


def test_read_only_disk_says_read_only(lab, tmp_path, home, small_workspace):
    in_h2(lab, "mount", "-o", "remount,ro", str(small_workspace))
    proj = project(tmp_path, "roproj", big_mb=1)
    err = h2_sync_error(lab, tmp_path, proj)
    msg = str(err)
    assert "read-only file system" in msg and str(small_workspace) in msg, msg
    assert "Failure" not in msg
    assert "read-write" in (err.hint or ""), err.hint


async def test_write_file_on_a_full_disk(lab, small_workspace):
    t = SshTransport(lab.node("h2"), options=lab.ssh_options())
    try:
        with pytest.raises(TransportError, match=r"disk full \(\d+\.\d MB free on .*, 6\.0 MB needed\)"):
            await t.write_file(str(small_workspace / "blob"), b"x" * (6 << 20))
    finally:
        await t.close()


def test_launch_line_names_the_full_disk(lab, tmp_path, home, small_workspace):
    proj = project(tmp_path, "launchproj", big_mb=8)
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=5)
    res = run_cli("--run", "--skip-checks", "--config", str(cfg), "--script", str(proj / "train.py"))
    said = res.stdout + res.stderr
    assert res.returncode != 0
    line = next((x for x in said.splitlines() if "h2: cannot write" in x), "")
    assert "disk full (" in line and "MB free on" in line, said[-3000:]
