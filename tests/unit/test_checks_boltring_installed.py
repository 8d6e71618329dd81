"""The boltring check says ok only when the node's python has boltring's code, whatever folders sit
in the node user's home, which is where the probe runs over SSH (live, on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.cluster.agent import nodeprobe
from boltring.cluster.agent.facts import ProbeRequest
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.nodes.checks.run import _bootstrap_input, check_node
from boltring.cluster.nodes.checks.verdicts import boltring_result
from boltring.cluster.nodes.transport import LocalTransport
from boltring.cluster.states import CheckStatus

PY = sys.executable
REQUEST: ProbeRequest = {
    "ring_ip": "127.0.0.1",
    "ring_iface": "lo",
    "ring_port": None,
    "ranks": 1,
    "neighbours": [],
}


def home_with_workdir(tmp_path: Path, egg_info: bool = False) -> Path:
    """A node user's home after a run with the README's `workdir: ~/boltring`; with egg_info,
    also the metadata a `pip install -e .` leaves in a clone, as if the home were one."""
    home = tmp_path / "home"
    (home / "boltring" / "setup").mkdir(parents=True)
    (home / "boltring" / "runs").mkdir()
    if egg_info:
        (home / "boltring.egg-info").mkdir()
        (home / "boltring.egg-info" / "PKG-INFO").write_text(
            "Metadata-Version: 2.1\nName: boltring\nVersion: 0.0.9\n"
        )
    return home


@pytest.mark.parametrize("egg_info", [False, True])
def test_shipped_probe_run_from_home_does_not_take_the_workdir_for_boltring(tmp_path, egg_info):
    home = home_with_workdir(tmp_path, egg_info)
    p = subprocess.run(
        [PY, "-S", "-c", nodeprobe.BOOTSTRAP],  # -S: this python has no boltring, as on the node
        input=_bootstrap_input(REQUEST).decode(),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=home,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["boltring"] == {"version": "unknown", "installed": False}


async def test_check_fails_boltring_on_a_venv_without_it_run_from_home(tmp_path):
    home = home_with_workdir(tmp_path)
    py = tmp_path / "python"  # a venv without boltring, run from the home folder as over SSH
    py.write_text(f'#!/bin/sh\ncd {home} && exec {PY} -S "$@"\n')
    py.chmod(0o755)
    node = Node(name="n1", ring_ip="127.0.0.1", local=True, ring_iface="lo", python=str(py))
    res = {r.name: r for r in await check_node(LocalTransport(node), Config(name="one", nodes=(node,)), node)}
    assert res["boltring"].status == CheckStatus.FAIL and res["boltring"].value == "not installed"
    assert "boltring setup" in (res["boltring"].hint or "")


def test_installed_without_a_version_is_not_ok():
    node = Node(name="n1", ring_ip="127.0.0.1", local=True)
    for laptop in ("0.1.0", None):
        facts = {"boltring": {"version": "unknown", "installed": True}}
        r = boltring_result(node, facts, {"boltring": laptop, "mlx": None})
        assert r.status == CheckStatus.WARN, laptop
        assert r.value == "version unknown (no package metadata)"
    facts = {"boltring": {"version": "0.1.0", "installed": True}}
    assert boltring_result(node, facts, {"boltring": "0.1.0", "mlx": None}).status == CheckStatus.OK
