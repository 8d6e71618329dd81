"""`boltring setup` from the command line, without test hosts: what pyenv.py says of a venv whose
mlx folder is gone, the live view's rows and plain lines, and the exits: a python that is not
a venv's is bad config (exit 2, naming file:line), --wheelhouse with --download-wheelhouse is
refused, unreachable nodes are a failure (1) for --download-wheelhouse too, a node named twice
is set up once, and Ctrl-C or SIGTERM while connecting ends with one line and 130."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from boltring.cluster.nodes.setup import PYENV_SOURCE, NodeSetup
from boltring.tui.setup_view import SetupView

CLI = [sys.executable, "-m", "boltring.tui.cli"]


def cli(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "BOLTRING_HOME": str(home / ".boltring"), "COLUMNS": "250"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def dist_info(site: Path, name: str, version: str, files: list[str]) -> None:
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (d / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"{d.name}/METADATA"]))


def test_pyenv_calls_mlx_broken_when_its_metadata_is_there_but_its_code_is_not(tmp_path):
    site = tmp_path / "site"
    dist_info(site, "mlx", "9.9.0", ["mlx/core.py", "mlx/__init__.py"])
    dist_info(site, "mlx-cpu", "9.9.0", ["mlx/lib/libmlx.so"])
    dist_info(site, "msgpack", "1.0.0", ["msgpack/__init__.py"])
    home = tmp_path / "home"  # the node user's home, where `python -c` runs: a decoy mlx there
    (home / "mlx").mkdir(parents=True)
    (home / "mlx" / "core.py").write_text("")
    res = subprocess.run(
        [sys.executable, "-S", "-c", PYENV_SOURCE.read_text(), "mlx", "msgpack"],
        capture_output=True,
        text=True,
        cwd=home,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=60,
        check=True,
    )
    info = json.loads(res.stdout.splitlines()[-1])
    assert info["dists"] == {"mlx": "9.9.0", "msgpack": "1.0.0"}
    assert set(info["broken"]) == {"mlx"}  # msgpack is not one setup verifies
    assert info["broken"]["mlx"]["error"].startswith("ModuleNotFoundError")
    assert info["broken"]["mlx"]["reinstall"] == {"mlx": "9.9.0", "mlx-cpu": "9.9.0"}
    assert info["pip"] is None  # no site-packages (-S): no pip to import


def test_pyenv_finds_nothing_broken_in_a_working_venv():
    res = subprocess.run(
        [sys.executable, "-c", PYENV_SOURCE.read_text(), "boltring", "mlx"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    info = json.loads(res.stdout.splitlines()[-1])
    assert info["broken"] == {} and info["pip"] and info["dists"]["mlx"]


def test_the_view_freezes_a_node_that_ended_and_says_so_in_plain_output():
    out = io.StringIO()
    view = SetupView([], Console(file=out, width=200, force_terminal=False))
    view.lines = {"h1": "waiting", "h2": "waiting"}
    view.report("h1", "step", "checking ~/venv/bin/python")
    view.report("h2", "step", "pip install")
    view.done(NodeSetup(node="h1", venv="~/venv", status="up to date", seconds=0.3))
    view.report("h1", "step", "late line")  # after its end: ignored
    view.started -= 13.0  # 13 s later, h2 still working
    rows = {r.split()[0]: r for r in _rendered(view).splitlines() if r.strip()}
    assert "0.3s" in rows["h1"] and "up to date" in rows["h1"] and "checking" not in rows["h1"]
    assert "13." in rows["h2"] and "pip install" in rows["h2"]
    view.done(
        NodeSetup(
            node="h2", venv="~/venv", status="failed", step="pip", error="exit 1", hint="do x", seconds=13.2
        )
    )
    lines = out.getvalue().splitlines()
    assert "h1: up to date (0.3 s)" in lines
    assert "h2: failed at step pip: exit 1 → do x (13.2 s)" in lines
    assert "late line" not in out.getvalue()


def _rendered(view: SetupView) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(view.render())
    return buf.getvalue()


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "boltring.yaml"
    path.write_text("name: t\nssh: {connect_timeout: 30}\n" + body)
    return path


def test_a_python_that_is_not_a_venvs_is_bad_config_naming_its_line(tmp_path):
    cfg = config(
        tmp_path,
        "defaults:\n"
        "  python: python3\n"
        "nodes:\n"
        "  - {name: a, ssh: root@127.0.0.1:1, ring_ip: 198.18.1.1, python: ~/venv/bin/python}\n"
        "  - name: b\n"
        "    ssh: root@127.0.0.2:1\n"
        "    ring_ip: 198.18.1.2\n"
        "    python: /opt/py\n"
        "  - {name: c, ssh: root@127.0.0.3:1, ring_ip: 198.18.1.3}\n",
    )
    res = cli("setup", "--config", str(cfg), home=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == ""  # nothing started
    lines = res.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        f"boltring setup: {cfg}:10: nodes[1].python: /opt/py is not a venv's interpreter"
    )
    assert lines[1].startswith(f"boltring setup: {cfg}:4: defaults.python: python3 is not a venv's")
    assert all("~/boltring/.venv/bin/python" in line for line in lines)
    # the nodes whose python is fine can still be set up alone
    res = cli("setup", "--config", str(cfg), "--node", "a", home=tmp_path)
    assert res.returncode == 1 and "a failed at step connect" in res.stdout


def test_wheelhouse_with_download_wheelhouse_is_refused_in_one_line(tmp_path):
    res = cli("setup", "--wheelhouse", "a", "--download-wheelhouse", "b", home=tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1
    assert "--download-wheelhouse: not allowed with argument --wheelhouse" in res.stderr


UNREACHABLE = "nodes:\n  - {name: a, ssh: root@127.0.0.1:1, ring_ip: 198.18.1.1, python: ~/venv/bin/python}\n"


def test_download_wheelhouse_with_every_node_unreachable_is_a_failure_not_bad_input(tmp_path):
    res = cli(
        "setup", "--config", str(config(tmp_path, UNREACHABLE)), "--download-wheelhouse", "w", home=tmp_path
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no node could be asked for its platform" in res.stdout
    assert "nothing accepts SSH there" in res.stdout  # the reason, with check's hint


def test_a_node_named_twice_is_set_up_once_and_its_failure_keeps_the_hint(tmp_path):
    cfg = config(tmp_path, UNREACHABLE)
    res = cli("setup", "--config", str(cfg), "--node", "a", "--node", "a", home=tmp_path)
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    assert "on a;" in out  # not "on a, a"
    assert (
        out.count("a failed at step connect: 127.0.0.1:1 refused the connection → nothing accepts SSH") == 1
    )
    assert out.count("a: failed at step connect") == 1  # its plain end line, once
    table = [line for line in out.splitlines() if line.startswith("│ a ")]
    assert len(table) == 1, out


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word: SSH waits in `connecting`."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for c in held:
        c.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_setup_ends_it_with_one_line_and_130(tmp_path, silent_server, sig):
    cfg = config(
        tmp_path,
        f"nodes:\n  - {{name: a, ssh: root@127.0.0.1:{silent_server}, ring_ip: 198.18.1.1, "
        "python: ~/venv/bin/python}\n",
    )
    env = {**os.environ, "HOME": str(tmp_path), "BOLTRING_HOME": str(tmp_path / ".boltring")}
    proc = subprocess.Popen(
        [*CLI, "setup", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("a: connecting"):
                break
        time.sleep(0.3)
        proc.send_signal(sig)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 10
    by = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert err.splitlines() == [
        f"boltring setup: interrupted ({by}): every node's setup was stopped; run it again to finish"
    ]
    assert "Traceback" not in out + err
