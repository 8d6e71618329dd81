"""spawn.py: detached ranks in their own process group; kill leaves nothing; secrets stay off argv."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

SPAWN = [sys.executable, "-m", "boltring.cluster.agent.spawn"]


def spawn(action: str, run_dir, stdin: dict | None = None, *extra: str) -> dict:
    out = subprocess.run(
        [*SPAWN, action, str(run_dir), *extra],
        input=json.dumps(stdin) if stdin else None,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"_rc": out.returncode}


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_start_runs_detached_and_records_exit(no_leftovers, tmp_path):
    run = tmp_path / "rank0"
    info = spawn(
        "start",
        run,
        {
            "argv": [sys.executable, "-c", "import os,sys; print('hi', os.getpgrp()); sys.exit(3)"],
            "env": {"X": "1"},
        },
    )
    assert info["_rc"] == 0 and info["pid"] > 0
    assert wait_for(lambda: (run / "exit.json").exists())
    assert json.loads((run / "exit.json").read_text())["returncode"] == 3
    # the rank ran in the keeper's process group, detached from us
    assert f"hi {info['pid']}" in (run / "rank.log").read_text()
    assert spawn("status", run)["alive"] is False


def test_secret_is_a_0600_file_and_never_on_argv(no_leftovers, tmp_path):
    run = tmp_path / "rank0"
    secret = "ab" * 32
    info = spawn(
        "start", run, {"argv": [sys.executable, "-c", "import time; time.sleep(30)"], "secret": secret}
    )
    try:
        assert (run / "secret").stat().st_mode & 0o777 == 0o600
        assert (run / "secret").read_text() == secret
        assert secret not in (run / "spec.json").read_text()
        for p in psutil.process_iter(["cmdline"]):
            assert secret not in " ".join(p.info["cmdline"] or []), p
    finally:
        killed = spawn("kill", run)
    assert killed["was_alive"] and not killed["alive"]
    assert info["pid"] == killed["pid"]


def test_second_start_refused_while_first_alive(no_leftovers, tmp_path):
    run = tmp_path / "rank0"
    spec = {"argv": [sys.executable, "-c", "import time; time.sleep(30)"]}
    spawn("start", run, spec)
    try:
        again = spawn("start", run, spec)
        assert again["_rc"] == 3 and "already running" in again["error"]
    finally:
        spawn("kill", run)


def test_kill_escalates_to_sigkill_for_a_rank_that_ignores_sigterm(no_leftovers, tmp_path):
    run = tmp_path / "rank0"
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    spawn("start", run, {"argv": [sys.executable, "-c", code]})
    assert wait_for(lambda: "ready" in (run / "rank.log").read_text())
    t0 = time.monotonic()
    res = spawn("kill", run, None, "--grace", "0.5")
    assert res["forced"] and not res["alive"]
    assert time.monotonic() - t0 < 10
    assert res["exit"]["killed"] or res["exit"].get("signal") == "SIGKILL"


def test_missing_program_is_reported_in_the_log(no_leftovers, tmp_path):
    run = tmp_path / "rank0"
    spawn("start", run, {"argv": ["/nonexistent/python", "-V"]})
    assert wait_for(lambda: (run / "exit.json").exists())
    assert json.loads((run / "exit.json").read_text())["returncode"] == 127
    assert "cannot start /nonexistent/python" in (run / "rank.log").read_text()


def test_kill_records_who_stopped_every_rank_before_signalling_any(no_leftovers, tmp_path):
    """Ranks that end by themselves the moment their neighbour is stopped (a ring peer gone)
    must still say that you stopped them: every stop record is written before the first signal.
    Before, a rank's record was written just before its own signal, so with several ranks on a
    node a later one could die of the first one's end without it."""
    from boltring.cluster.config.ports import free_ports

    (port,) = free_ports(1)
    others = [tmp_path / f"rank{k}" for k in range(1, 8)]
    # rank0 holds a connection from each of the others, as ring neighbours do; each of them
    # fails on its own the moment that connection ends
    hub = (
        "import socket, time\n"
        f"srv = socket.create_server(('127.0.0.1', {port}))\n"
        f"conns = [srv.accept()[0] for _ in range({len(others)})]\n"
        "print('connected', flush=True)\n"
        "time.sleep(60)\n"
    )
    neighbour = (
        "import socket, sys, time\n"
        "for _ in range(200):\n"
        "    try:\n"
        f"        s = socket.create_connection(('127.0.0.1', {port}))\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
        "s.recv(1)\n"
        "sys.exit(1)\n"
    )
    first = tmp_path / "rank0"
    spawn("start", first, {"argv": [sys.executable, "-c", hub]})
    for run in others:
        spawn("start", run, {"argv": [sys.executable, "-c", neighbour]})
    assert wait_for(lambda: "connected" in (first / "rank.log").read_text())
    res = spawn("kill", first, None, *map(str, others), "--by", "boltring kill")
    exits = [r["exit"] for r in res["ranks"]]
    assert all(e.get("stopped_by") == "boltring kill" for e in exits), exits


def test_a_group_id_reused_after_the_rank_ended_is_left_alone(no_leftovers, tmp_path):
    """Days after a rank ended, its group id may name a stranger's new group (the kernel reuses
    a pid once nothing holds it). `kill` must not signal it, nor `status` call the rank alive.
    The stranger here is real: a process that leads its own group and started after the rank's
    exit record says it ended; the record points at it as an old pid file would."""
    run = tmp_path / "rank0"
    info = spawn("start", run, {"argv": [sys.executable, "-c", "pass"]})
    assert info["_rc"] == 0 and wait_for(lambda: (run / "exit.json").exists())
    time.sleep(3.5)  # the stranger must start clearly after the rank ended (2 s of rounding)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True, cwd=tmp_path
    )
    try:
        (run / "pid").write_text(str(stranger.pid))  # the number now names the stranger's group
        assert spawn("status", run)["alive"] is False
        res = spawn("kill", run, None, "--grace", "1")
        assert res["was_alive"] is False
        assert stranger.poll() is None, "kill signalled a group that is not the rank's"
        # the rank's own record is untouched: it still says how the rank ended
        assert json.loads((run / "exit.json").read_text())["returncode"] == 0
    finally:
        stranger.kill()
        stranger.wait(10)
