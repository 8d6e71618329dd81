"""`boltring setup` repairing what it used to call fine or could not fix, on the SSH test hosts
(one lab, two setup runs shared by the tests below):

1. first run: h1's venv was made `--without-pip` (ensurepip gives it pip back, then it is
   installed); h2's venv is new; h3's venv lies on a 3 MB tmpfs, so `python -m venv` fails in
   ensurepip: h3 fails at step venv and the half-made venv is removed.
2. second run: h2's site-packages/mlx was moved away (its dist-info left), h3's tmpfs grown: h2
   gets mlx reinstalled (it was "up to date" before), h3 is installed, h1 is up to date.
Then: an up-to-date run builds no wheel; sshd stopped or an unknown host key shows check's hint;
SIGTERM while pip runs ends setup with one line and exit 130.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.test_setup import cli, setup_yaml, state, wheelhouse  # noqa: F401 (fixtures)

pytestmark = pytest.mark.netns
PYTHONS = {"h1": "~/venv-r1/bin/python", "h2": "~/venv-r2/bin/python", "h3": "~/small/venv/bin/python"}


def site_packages(venv: Path) -> Path:
    return sorted((venv / "lib").glob("python*/site-packages"))[0]


def on_host(h, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """argv in the mount namespace of the host's sshd (`ip netns exec` gave it its own): where
    the node's commands see their files."""
    assert h.sshd is not None
    return subprocess.run(["nsenter", "-t", str(h.sshd.pid), "-m", "--", *argv], timeout=120, **kw)


@pytest.fixture(scope="module")
def runs(lab3, state, wheelhouse, tmp_path_factory):  # noqa: F811
    h1, h2, h3 = lab3.hosts
    for h in lab3.hosts:
        for d in ("venv-r1", "venv-r2", "small"):
            assert not (h.home / d).exists()
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(h1.home / "venv-r1")], check=True)
    small = h3.home / "small"
    small.mkdir()
    on_host(h3, ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    cfg = setup_yaml(lab3, tmp_path_factory.mktemp("repairs") / "lab.yaml", python=PYTHONS)
    out: dict = {"cfg": cfg, "env": state["env"], "wheelhouse": wheelhouse}
    try:
        out["first"] = cli("setup", "--config", str(cfg), "--wheelhouse", str(wheelhouse), env=state["env"])
        out["small_after_first"] = on_host(
            h3, ["ls", "-A", str(small)], capture_output=True, text=True
        ).stdout
        sp = site_packages(h2.home / "venv-r2")
        if (sp / "mlx").is_dir():
            (sp / "mlx").rename(sp / "mlx.moved")
        on_host(h3, ["mount", "-o", "remount,size=2g", str(small)], check=True)
        out["second"] = cli("setup", "--config", str(cfg), "--wheelhouse", str(wheelhouse), env=state["env"])
        yield out
    finally:
        on_host(h3, ["umount", "-l", str(small)], check=False)
        for h in lab3.hosts:
            for d in ("venv-r1", "venv-r2", "venv-sig", "small"):
                shutil.rmtree(h.home / d, ignore_errors=True)


def test_first_run_restores_pip_and_removes_the_venv_it_could_not_make(lab3, runs):
    res = runs["first"]
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-4000:]
    assert "h1: ~/venv-r1 has no pip: python -m ensurepip" in out
    assert "pip (restored with ensurepip)" in out
    assert "h3 failed at step venv" in out and "ensurepip" in out, out[-4000:]
    assert "the half-made ~/small/venv was removed" in out
    assert runs["small_after_first"] == ""  # nothing for the next run to take for a venv
    assert "download-wheelhouse" not in out  # no hint pointing at the wheelhouse
    # each node's end as it ends, before the table (plain output)
    table_at = out.index("boltring setup\n")
    for line in ("h1: installed:", "h2: installed:", "h3: failed at step venv:"):
        assert 0 <= out.find(line) < table_at, out[-4000:]
    # the wheelhouse's own files go only as wheels: not its .complete marker
    sent = sorted(p.name for p in (lab3.hosts[0].workdir / "setup" / "wheelhouse").iterdir())
    assert sent and all(n.endswith(".whl") for n in sent), sent


def test_second_run_reinstalls_a_moved_mlx_and_finishes_the_grown_disk(lab3, runs):
    res = runs["second"]
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    # (or, when the source tree changed between the two runs, boltring alone again)
    assert "h1: up to date" in out or "h1: installed: boltring 0.1.0 (rebuilt from source" in out, out
    assert "mlx 0.32.4 (reinstalled: " in out or "(reinstalled: ModuleNotFoundError" in out, out[-4000:]
    assert "h3: installed:" in out
    for h, venv in ((lab3.hosts[1], "venv-r2"), (lab3.hosts[2], "small/venv")):
        py = h.home / venv / "bin" / "python"
        on_host(h, [str(py), "-c", "import mlx.core, boltring.cluster"], check=True)


def test_an_up_to_date_run_builds_no_wheel(lab3, runs, tmp_path):
    assert runs["second"].returncode == 0
    env = {**runs["env"], "BOLTRING_HOME": str(tmp_path / "fresh")}  # no cached wheel
    t0 = time.monotonic()
    res = cli("setup", "--config", str(runs["cfg"]), env=env)
    took = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert out.count("up to date") >= 3 and "building boltring's wheel" not in out
    assert not (tmp_path / "fresh" / "wheels").exists()
    print(f"up-to-date setup of 3 hosts, no cached wheel: {took:.2f} s")


def test_unreachable_nodes_show_checks_hint(lab, runs):
    lab.stop_sshd("h3")
    lab.forget_host_key("h2")
    res = cli(
        "setup", "--config", str(runs["cfg"]), "--node", "h3", "--node", "h2", "--node", "h3", env=runs["env"]
    )
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    assert out.count("h3 failed at step connect:") == 1
    h3 = next(line for line in out.splitlines() if line.startswith("h3 failed at step connect"))
    assert "refused the connection → nothing accepts SSH there" in h3, h3
    h2 = next(line for line in out.splitlines() if line.startswith("h2 failed at step connect"))
    assert " → " in h2, h2  # what to do about the unknown key, as check says it


def test_a_system_python_is_refused_on_the_node_naming_the_config_line(lab, runs):
    cfg = setup_yaml(lab, runs["cfg"].with_name("system.yaml"), python={**PYTHONS, "h2": "/usr/bin/python3"})
    res = cli("setup", "--config", str(cfg), "--node", "h2", env=runs["env"])
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    line = next(x for x in out.splitlines() if x.startswith("h2 failed at step config"))
    assert "python is /usr/bin/python3, not a venv's interpreter (it is Python 3." in line, line
    assert "of /usr)" in line and f"({cfg}:" in line and "nodes[1].python)" in line, line
    assert "h2: pip install" not in out and "h2: creating" not in out


def _pips(venv: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if venv in cmd and "pip" in cmd:
            out.append(p)
    return out


def test_sigterm_while_pip_runs_ends_setup_with_one_line_and_130(lab, runs):
    h1 = lab.host("h1")
    cfg = setup_yaml(lab, runs["cfg"].with_name("sig.yaml"), python={"h1": "~/venv-sig/bin/python"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "boltring.tui.cli", "setup", "--config", str(cfg), "--node", "h1"]
        + ["--wheelhouse", str(runs["wheelhouse"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **runs["env"], "COLUMNS": "250"},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("h1: pip install"):
                break
        deadline = time.monotonic() + 60
        while not _pips(str(h1.home / "venv-sig")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    # the node's pip is stopped too (the SSH transport ends a cancelled command's process)
    deadline = time.monotonic() + 15
    while _pips(str(h1.home / "venv-sig")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _pips(str(h1.home / "venv-sig")) == []
    assert err.splitlines() == [
        "boltring setup: interrupted (SIGTERM): every node's setup was stopped; run it again to finish"
    ]
    assert "Traceback" not in out + err
