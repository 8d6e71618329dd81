"""`boltring setup` on the SSH test hosts (tests/lab): no venv at the configured path at first;
setup creates one per host from a wheelhouse (the namespaces reach no package index), then
`boltring check` passes and `--run` gives the local loss curve; a second setup is "up to date"
and reinstalls nothing; a wheelhouse missing a wheel fails that node only, naming the package.

The wheelhouse is made once per machine by `boltring setup --download-wheelhouse` itself (pip
download from the root namespace, which may reach PyPI), kept in $TMPDIR across sessions keyed by
the versions; boltring's own wheel is left out of it, so every session builds and uploads a wheel
of the tree under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pytest

from tests.integration.test_ssh_run import rank_losses

pytestmark = pytest.mark.netns
CLI = [sys.executable, "-m", "boltring.tui.cli"]
VENV = "~/venv/bin/python"  # per host: each host has its own home, so its own venv


def setup_yaml(
    lab, path: Path, *, python: dict[str, str] | None = None, steps: int = 20, extra: str = ""
) -> Path:
    python = python or {}
    nodes = "\n".join(
        f"  - {{name: {h.name}, ssh: {h.name}, ring_ip: {h.ring_ip}, ring_iface: tb0, "
        f"python: {python.get(h.name, VENV)}}}"
        for h in lab.hosts
    )
    path.write_text(f"""name: lab
ssh:
  config_file: {lab.ssh_config}
  known_hosts: {lab.known_hosts}
  connect_timeout: 5
ring: {{port: 52720, timeout: 20, connect_timeout: 20}}
nodes:
{nodes}
job: {{example: mlp, steps: {steps}, seed: 7, global_batch: 240}}
{extra}""")
    return path


def cli(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250", **env},
    )


@pytest.fixture(scope="module")
def state(lab3, tmp_path_factory):
    d = tmp_path_factory.mktemp("setup")
    env = {"HOME": str(d / "home"), "BOLTRING_HOME": str(d / "home" / ".boltring")}
    (d / "home").mkdir()
    return {"dir": d, "env": env}


@pytest.fixture(scope="module")
def wheelhouse(lab3, state) -> Path:
    """Every wheel boltring needs but boltring's own, for the hosts' platform (cached)."""
    key = hashlib.sha256(
        f"{sys.version_info[:2]} {metadata.version('mlx')} {metadata.requires('boltring')}".encode()
    ).hexdigest()[:12]
    cached = Path(tempfile.gettempdir()) / f"boltring-test-wheelhouse-{key}"
    if not (cached / ".complete").exists():
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        cfg = setup_yaml(
            lab3,
            state["dir"] / "download.yaml",
            python={h.name: "/nonexistent/bin/python" for h in lab3.hosts},
        )
        res = cli(
            "setup", "--config", str(cfg), "--download-wheelhouse", str(tmp), env=state["env"], timeout=1800
        )
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        for w in tmp.glob("boltring-*.whl"):
            w.unlink()
        (tmp / ".complete").write_text("")
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)
    return cached


@pytest.fixture(scope="module")
def installed(lab3, state, wheelhouse):
    """The first `boltring setup` of the three hosts (module-wide: installing takes a while)."""
    for h in lab3.hosts:
        assert not (h.home / "venv").exists()
    cfg = setup_yaml(lab3, state["dir"] / "lab.yaml")
    t0 = time.monotonic()
    res = cli("setup", "--config", str(cfg), "--wheelhouse", str(wheelhouse), env=state["env"])
    state["first_s"] = time.monotonic() - t0
    state["cfg"] = cfg
    state["first"] = res
    state["wheelhouse"] = wheelhouse
    print(f"first setup of 3 hosts: {state['first_s']:.1f} s")
    return state


def test_setup_creates_each_venv_then_check_passes_and_run_matches_local(lab, installed):
    res = installed["first"]
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for h in lab.hosts:
        py = h.home / "venv" / "bin" / "python"
        assert py.exists(), out[-2000:]
        info = subprocess.run(
            [
                str(py),
                "-c",
                "from importlib import metadata as m; print(m.version('boltring'), m.version('mlx'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert info == [metadata.version("boltring"), metadata.version("mlx")]
        # the venv is the node's own, not this test environment's editable install
        assert (
            str(h.home / "venv")
            in subprocess.run(
                [str(py), "-c", "import boltring.cluster; print(boltring.cluster.__file__)"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert f"{h.name}" in out and "installed" in out
    assert "boltring " + metadata.version("boltring") in out and "(new)" in out

    cfg, env = installed["cfg"], installed["env"]
    check = cli("check", "--json", "--no-bandwidth", "--config", str(cfg), env=env, timeout=120)
    results = [json.loads(line) for line in check.stdout.splitlines() if line.startswith("{")]
    for h in lab.hosts:
        for name in ("python", "boltring", "mlx"):
            (r,) = [c for c in results if c["node"] == h.name and c["name"] == name]
            assert r["status"] == "ok", r

    run = cli("--run", "--json", "--config", str(cfg), env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    events = [json.loads(line) for line in run.stdout.splitlines()]
    ssh_curve = [e["loss"] for e in events if e["event"] == "step"]

    import asyncio

    from boltring.cluster.config.load import load_config, with_overrides
    from boltring.cluster.jobs.controller import JobController

    local = with_overrides(load_config(None), ranks=3, example="mlp", steps=20, seed=7, global_batch=240)

    async def run_local():
        c = JobController(local, poll_s=0.1)
        seen = []
        c.add_listener(seen.append)
        await c.launch()
        await asyncio.wait_for(c.wait(), 120)
        await c.close()
        return seen

    old = os.environ.get("BOLTRING_HOME")
    os.environ["BOLTRING_HOME"] = env["BOLTRING_HOME"]
    try:
        local_curve = rank_losses(asyncio.run(run_local()))
    finally:
        os.environ.pop("BOLTRING_HOME") if old is None else os.environ.__setitem__("BOLTRING_HOME", old)
    assert len(ssh_curve) == len(local_curve) == 20
    for a, b in zip(ssh_curve, local_curve, strict=True):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (ssh_curve, local_curve)


def test_second_setup_is_up_to_date_and_reinstalls_nothing(lab, installed):
    assert installed["first"].returncode == 0
    site = {h.name: sorted((h.home / "venv" / "lib").glob("python*/site-packages"))[0] for h in lab.hosts}

    def snapshot():
        return {n: sorted((p.name, p.stat().st_mtime_ns) for p in s.iterdir()) for n, s in site.items()}

    before = snapshot()
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        # no wheelhouse and no index reachable: an up-to-date node needs neither
        res = cli("setup", "--config", str(installed["cfg"]), env=installed["env"])
        times.append(time.monotonic() - t0)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        assert out.count("up to date") >= 3 and "(new)" not in out and "was " not in out, out
    assert snapshot() == before  # not a file of any venv touched
    installed["second_s"] = times
    print(f"second setup, 3 hosts up to date, whole command: {', '.join(f'{t:.2f}' for t in times)} s")
    assert min(times) < 10, times  # "a second or two"; the bound leaves room for a busy CI box


def test_a_node_with_other_code_of_the_same_version_gets_boltring_alone_again(lab, installed):
    """Run from a source tree, the version does not tell the code apart: the node's record of the
    tree's digest does. A node whose record differs gets boltring's wheel again, nothing else."""
    assert installed["first"].returncode == 0
    h1 = lab.host("h1")
    record = h1.home / "venv" / "boltring-setup.json"
    mine = json.loads(record.read_text())
    assert mine["boltring"] == metadata.version("boltring") and mine["source"]
    site = sorted((h1.home / "venv" / "lib").glob("python*/site-packages"))[0]
    mlx_before = (site / "mlx").stat().st_mtime_ns
    record.write_text(json.dumps({**mine, "source": "0" * 16}))  # as if set up from older code
    res = cli(
        "setup",
        "--config",
        str(installed["cfg"]),
        "--wheelhouse",
        str(installed["wheelhouse"]),
        env=installed["env"],
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "rebuilt from source" in out and out.count("up to date") >= 2, out
    assert json.loads(record.read_text()) == mine
    assert (site / "mlx").stat().st_mtime_ns == mlx_before  # mlx untouched


def test_missing_wheel_fails_that_node_naming_the_package_while_others_finish(
    lab, installed, wheelhouse, tmp_path
):
    assert installed["first"].returncode == 0
    partial = tmp_path / "wheels"
    partial.mkdir()
    for w in wheelhouse.glob("*.whl"):
        if not w.name.lower().startswith("msgpack-"):
            shutil.copy2(w, partial / w.name)
    cfg = setup_yaml(lab, tmp_path / "lab.yaml", python={"h2": "~/venv-partial/bin/python"})
    res = cli("setup", "--config", str(cfg), "--wheelhouse", str(partial), env=installed["env"])
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "h2 failed at step pip" in out and "no wheel for msgpack" in out, out
    assert "h2 |" in out  # pip's last lines, labelled with the node
    lines = {
        line.split()[1]: line for line in out.splitlines() if line.strip().startswith(("│ h", "┃ h", "| h"))
    }
    assert "up to date" in lines.get("h1", "") and "up to date" in lines.get("h3", ""), out


async def test_app_setup_action_on_a_node_panel_shows_pip_and_rechecks(lab, wheelhouse, tmp_path):
    """s on h2's panel, confirm: h2 alone is set up (pip's lines in its log), then checks re-run."""
    from boltring.cluster.config.load import load_config
    from boltring.cluster.jobs.controller import JobController
    from boltring.cluster.jobs.events import LogLine
    from boltring.tui.widgets.node_panel import NodePanel
    from tests.tui.harness import make_app, wait_until

    cfg = setup_yaml(
        lab,
        tmp_path / "lab.yaml",
        python={"h2": "~/venv-app/bin/python"},
        extra=f"setup: {{wheelhouse: {wheelhouse}}}\n",
    )
    controller = JobController(load_config(cfg), poll_s=0.1)
    logs: list[LogLine] = []
    controller.add_listener(lambda e: logs.append(e) if isinstance(e, LogLine) else None)
    app = make_app(controller, clock=time.time)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(
            pilot, lambda: app.view.state == "idle" and "python" in app.view.nodes["h2"].checks, 60
        )
        assert app.view.nodes["h2"].checks["boltring"].status != "ok"  # no venv there yet
        panel = next(p for p in app.query(NodePanel) if p.node_name == "h2")
        panel.focus()
        await pilot.press("s")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmModal", 10)
        await pilot.press("y")
        await wait_until(pilot, lambda: any("setup installed" in e.text for e in logs), 300)
        await wait_until(
            pilot,
            lambda: (
                app.view.nodes["h2"].checks.get("boltring")
                and app.view.nodes["h2"].checks["boltring"].status == "ok"
            ),
            60,
        )
        for name in ("python", "boltring", "mlx"):
            assert app.view.nodes["h2"].checks[name].status == "ok"
        app.simulate_key("q")
    setup_lines = [e for e in logs if e.source.startswith("setup@")]
    assert {e.node for e in setup_lines} == {"h2"}  # only the focused node
    assert any(e.text.startswith("Successfully installed") for e in setup_lines)  # pip's own lines
