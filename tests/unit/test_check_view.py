"""`boltring check` output (tui/check_view.py) on real checks: local nodes on loopback, and an
"unreachable" node whose SSH port (127.0.0.1) accepts TCP and never answers."""

from __future__ import annotations

import io
import re
import socket
import sys

import pytest
from rich.console import Console

from boltring.cluster.config.schema import Config, Node, RingOptions, SshOptions
from boltring.cluster.jobs.controller import JobController
from boltring.tui.check_view import run_check

PY = sys.executable
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_sshd():
    """A port on 127.0.0.1 that accepts connections and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def cluster(tmp_path, ssh_port: int) -> Config:
    return Config(
        name="t",
        nodes=(
            Node(name="n1", ring_ip="127.0.0.1", local=True, ring_iface="lo", python=PY),
            Node(name="n2", ring_ip="127.0.0.2", local=True, ring_iface="lo", python="/nonexistent/python3"),
            Node(name="far", ring_ip="127.0.0.3", ssh=f"you@127.0.0.1:{ssh_port}"),
        ),
        ring=RingOptions(port=free_port() + 200),
        ssh=SshOptions(
            config_file=str(tmp_path / "no-ssh-config"),
            known_hosts=str(tmp_path / "known_hosts"),
            connect_timeout_s=1.5,
        ),
    )


async def check_output(config: Config, *, terminal: bool) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=terminal, color_system=None, highlight=False)
    code = await run_check(JobController(config), bandwidth=False, console=console)
    return code, out.getvalue()


async def test_unreachable_node_is_one_runnable_line_and_skipped_checks_fold(tmp_path, silent_sshd, home):
    code, text = await check_output(cluster(tmp_path, silent_sshd), terminal=False)
    assert code == 1
    lines = text.splitlines()
    far = [ln for ln in lines if "far" in ln and "│ +" not in ln]
    # the nodes table names it once; then ONE line with the cause, how many of its checks could
    # not run, and a hint that runs as written
    ssh_lines = [ln for ln in far if ln.startswith("✘ far ssh:")]
    assert len(ssh_lines) == 1, text
    line = ssh_lines[0]
    assert "within 1.5 s (+15 skipped) →" in line
    assert not [ln for ln in lines if ln.startswith("│ far ") and "skipped" in ln]  # no row for it
    assert f"no SSH answer from 127.0.0.1:{silent_sshd} within 1.5 s" in line
    assert f"`ssh -o UserKnownHostsFile={tmp_path / 'known_hosts'} -p {silent_sshd} you@127.0.0.1`" in line
    assert f"you@127.0.0.1:{silent_sshd}`" not in line  # OpenSSH cannot run user@host:port
    # the missing ssh config is mentioned
    assert f"(there is no {tmp_path / 'no-ssh-config'}: no IdentityFile" in line
    assert "no SSH connection" not in text
    # the nodes table gives the target as OpenSSH takes it too
    assert re.search(rf"far\s+│\s+-p {silent_sshd} you@127\.0\.0\.1\s+│", text), text
    # n2 has no python: its checks that could not run fold into one "+N skipped" row
    assert re.search(r"n2\s+│\s+\+14 skipped\s+│\s+-\s+│\s+no python", text), text
    assert not re.search(r"│\s+- skipped\s+│", text)  # no row per skipped check
    assert re.search(r"49 checks: \d+ ok, (\d+ warnings?, )?2 failed, \+29 skipped$", text.rstrip()), text


async def test_spinner_per_node_while_waiting(tmp_path, silent_sshd, home):
    code, raw = await check_output(cluster(tmp_path, silent_sshd), terminal=True)
    text = ANSI.sub("", raw)
    assert code == 1
    assert re.search(r"far: connecting… [01]/1\.5 s", text), text  # counting against the timeout
    assert any(frame in text for frame in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")  # rich's "dots" spinner
    assert "ring links: reachability" in text
    assert "✘ far ssh:" in text  # and the result after it
