"""`boltring runs` lists a job as running only while a controller that watches it is alive.

The job record names its watchers (the controller that launched it, and each one that
re-attached: the app, `status`, `kill`), by pid and host. Once none is alive, nothing follows
the ranks or will write how the job ended: wherever they ran, the record's "running" may be
false, and the job is listed as "unwatched" (`watched: false` in `--json`), with the command
that reads its nodes and records how it ended."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from boltring.cluster.config.ports import free_port_block
from boltring.cluster.jobs import record, watchers
from boltring.cluster.jobs.history import list_runs
from boltring.tui.runs_view import print_runs
from boltring.tui.screens.history import run_row
from tests.procs import read_to_exit, start_cli, wait_for_step

HERE = socket.gethostname()
CONFIG = "/configs/h2 lab.yaml"


def _ended_process() -> int:
    """The pid of a process of this machine that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def dead_pid() -> int:
    return _ended_process()


def _write(job_id: str, *, state: str = "running", watchers=None, ranks=None, **extra) -> None:
    """A record as the controller writes it for a job on two remote nodes (their run dirs are
    not on this machine), named by `watchers` (left out when None: an older record)."""
    rec = {
        "job_id": job_id,
        "state": state,
        "config": CONFIG,
        "created": time.time() - 60,
        "started": time.time() - 55,
        "steps": 1000,
        "ranks": ranks
        or [
            {"rank": 0, "node": "mini2", "run_dir": f"~/.boltring/runs/{job_id}/rank0"},
            {"rank": 1, "node": "mini3", "run_dir": f"~/.boltring/runs/{job_id}/rank1"},
        ],
        **extra,
    }
    if watchers is not None:
        rec["watchers"] = watchers
    record.record_path(job_id).parent.mkdir(parents=True, exist_ok=True)
    record.record_path(job_id).write_text(json.dumps(rec))


def _state(job_id: str) -> tuple[str, bool | None]:
    (run,) = [r for r in list_runs() if r.job_id == job_id]
    return run.state, run.watched


def test_a_job_whose_controller_is_gone_is_not_listed_as_running(home, dead_pid, capsys):
    _write("gone", watchers=[{"pid": dead_pid, "host": HERE}])
    assert _state("gone") == ("unwatched", False)
    (run,) = list_runs()
    assert run_row(run)[2] == "unwatched"  # the app's past-runs view: the same word

    print_runs(json_out=True)
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["state"], row["watched"]) == ("unwatched", False), row

    out = io.StringIO()
    print_runs(console=Console(file=out, width=250))
    text = out.getvalue()
    assert "unwatched" in next(line for line in text.splitlines() if "gone" in line), text
    note = text.strip().splitlines()[-1]
    assert note.startswith("unwatched: its record says it has not ended, but no controller watches it"), note
    assert (
        "; `boltring status -c '/configs/h2 lab.yaml'` asks its nodes which (`--follow` watches it again"
        in note
    ), note


def test_a_job_whose_controller_is_alive_is_running(home, dead_pid):
    _write("alive", watchers=[{"pid": dead_pid, "host": HERE}, {"pid": os.getpid(), "host": HERE}])
    assert _state("alive") == ("running", True)


@pytest.mark.parametrize("state", ["launching", "stalled", "restarting"])
def test_every_state_of_a_live_job_is_unwatched_once_its_controller_is_gone(home, dead_pid, state):
    _write("gone", state=state, watchers=[{"pid": dead_pid, "host": HERE}])
    assert _state("gone") == ("unwatched", False)


def test_what_cannot_be_told_here_is_left_as_the_record_says(home, dead_pid):
    # a watcher on another host (a BOLTRING_HOME shared between machines): its pid means nothing here
    _write("elsewhere", watchers=[{"pid": dead_pid, "host": HERE}, {"pid": 1, "host": HERE + "-other"}])
    assert _state("elsewhere") == ("running", None)
    _write("older")  # written before records named their watchers
    assert _state("older") == ("running", None)


def test_an_ended_job_has_no_watched_flag_and_ended_unread_stays_ended(home, dead_pid):
    _write("done", state="finished", watchers=[{"pid": dead_pid, "host": HERE}])
    assert _state("done") == ("finished", None)
    run_dirs = [home / ".boltring" / "runs" / "here" / f"rank{r}" for r in (0, 1)]
    for d in run_dirs:
        d.mkdir(parents=True)
        (d / "exit.json").write_text('{"returncode": 0}')
    ranks = [{"rank": r, "node": "local", "run_dir": str(d)} for r, d in enumerate(run_dirs)]
    _write("here", ranks=ranks, watchers=[{"pid": dead_pid, "host": HERE}])
    assert _state("here") == ("ended", False)  # every exit record is here: it has ended


# -- the record: who writes the watchers -----------------------------------------------------


def test_a_new_record_names_the_controller_that_writes_it():
    from tests.tui import feed

    rec = record.new_record(feed.lab_config(), "x", [], resume=False)
    assert rec["watchers"] == [watchers.this_controller()] and rec["blamed"] is None
    assert record.watched({**rec, "state": "running"}) is True


def test_a_controller_writing_its_own_copy_keeps_the_watchers_named_since(home, dead_pid):
    """The launcher rewrites its copy of the record (a restart, the end): an app that
    re-attached meanwhile stays named; watchers of this machine that ended are dropped, but
    with none alive the last stays, so the record still tells that nothing watches."""
    app = {"pid": os.getppid(), "host": HERE}  # some live process other than this one
    launcher_copy = {"job_id": "j", "state": "restarting", "watchers": [{"pid": dead_pid, "host": HERE}]}
    _write("j", watchers=[{"pid": dead_pid, "host": HERE}, app])
    record.write(launcher_copy)
    assert json.loads(record.record_path("j").read_text())["watchers"] == [app]

    last = {"pid": _ended_process(), "host": HERE}
    _write("k", watchers=[{"pid": dead_pid, "host": HERE}, last])
    record.write({"job_id": "k", "state": "running"})
    assert json.loads(record.record_path("k").read_text())["watchers"] == [last]
    assert _state("k") == ("unwatched", False)


def test_re_attaching_names_this_process_in_the_record_as_it_is_now(home, dead_pid):
    """watch() reads the record afresh: the copy a re-attaching controller holds may be older
    than the end its launcher wrote meanwhile, which it must not undo."""
    _write("j", watchers=[{"pid": dead_pid, "host": HERE}])
    record.watch("j")
    assert json.loads(record.record_path("j").read_text())["watchers"] == [watchers.this_controller()]
    assert _state("j") == ("running", True)
    _write(
        "ended", state="finished", watchers=[{"pid": dead_pid, "host": HERE}], summary={"status": "finished"}
    )
    record.watch("ended")
    saved = json.loads(record.record_path("ended").read_text())
    assert saved["state"] == "finished" and saved["watchers"] == [{"pid": dead_pid, "host": HERE}]


# -- a real job: its `--run` is SIGKILLed, its ranks go on --------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "boltring.tui.cli", *args], capture_output=True, text=True, timeout=120
    )


def _listed(cfg: Path) -> dict:
    res = _cli("--config", str(cfg), "runs", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[0])


def test_a_job_whose_run_was_killed_is_unwatched_until_a_controller_follows_it(tmp_path, no_leftovers):
    cfg = tmp_path / "unwatched.yaml"
    cfg.write_text(
        "name: unwatched\nnodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        f"ring: {{port: {free_port_block(2)}}}\njob: {{example: mlp, global_batch: 40, steps: 1000000}}\n"
    )
    run = start_cli("--config", str(cfg), "--run", "--json", "--skip-checks")
    follower = None
    killed = None
    try:
        wait_for_step(run)
        assert _listed(cfg)["state"] == "running"
        run.send_signal(signal.SIGKILL)  # the controller dies; its detached ranks go on
        run.wait(timeout=30)
        gone = _listed(cfg)
        assert gone["state"] == "unwatched", gone
        assert gone["watched"] is False, gone

        follower = start_cli("--config", str(cfg), "status", "--follow", "--json")
        wait_for_step(follower)  # re-attached: it watches the job now
        watched = _listed(cfg)
        assert (watched["state"], watched["watched"]) == ("running", True), watched

        killed = _cli("--config", str(cfg), "kill")
        assert killed.returncode == 0, killed.stdout + killed.stderr
        read_to_exit(follower, timeout=60)
    finally:
        if killed is None:  # the test failed with the ranks running: stop them as a user would
            _cli("--config", str(cfg), "kill")
        for proc in (run, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    after = _listed(cfg)
    assert (after["state"], after["watched"]) == ("killed", None), after


@pytest.fixture
def other_process():
    """A live process of this machine, as a later one given a dead watcher's pid would be."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_process_that_got_a_dead_watchers_pid_does_not_watch_its_job(home, other_process):
    """The pid is alive, but not the process the record named: its start time differs."""
    pid = other_process.pid
    _write("reused", watchers=[{"pid": pid, "host": HERE, "started": "ticks:1"}])
    assert _state("reused") == ("unwatched", False)
    _write("same", watchers=[{"pid": pid, "host": HERE, "started": watchers.process_started(pid)}])
    assert _state("same") == ("running", True)
    _write("older", watchers=[{"pid": pid, "host": HERE}])  # a record without start times
    assert _state("older") == ("running", True)


def test_a_record_names_its_controller_with_its_start_time(home):
    _write("mine", watchers=[])
    rec = record.read("mine")
    assert rec is not None
    record.add_watcher(rec)
    record.write(rec)
    (me,) = json.loads(record.record_path("mine").read_text())["watchers"]
    machine = Path("/etc/machine-id").read_text().strip()
    assert me == {
        "pid": os.getpid(),
        "host": HERE,
        "machine": machine,
        "started": watchers.process_started(os.getpid()),
    }
    assert me["started"].startswith("ticks:")  # Linux: /proc/<pid>/stat


def test_ps_tells_when_a_process_started_as_on_macos():
    """The macOS way (`ps -o lstart=`), run here: the same answer for one process, none for an
    ended one, another for a process started in a later second."""
    mine = watchers.started_by_ps(os.getpid())
    assert mine is not None and mine == watchers.started_by_ps(os.getpid())
    assert mine.startswith("lstart:") and len(mine.split()) == 5, mine  # "lstart:Wed Dec 2 01:34:38 2026"
    assert watchers.started_by_ps(_ended_process()) is None
    time.sleep(1.1)  # lstart counts seconds
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert watchers.started_by_ps(later.pid) not in (None, mine)
    finally:
        later.kill()
        later.wait()


def test_a_new_hostname_leaves_this_machines_watchers_its_own(home, dead_pid, monkeypatch):
    """A Mac's hostname changes with its network: its watchers are still known to be its own,
    by the machine id, so a dead one still makes the job unwatched (it read "cannot tell")."""
    me = watchers.this_controller()
    _write("moved", watchers=[{**me, "pid": dead_pid, "started": "ticks:1"}])
    monkeypatch.setattr(socket, "gethostname", lambda: "macbook-pro.lan")
    assert _state("moved") == ("unwatched", False)
    _write("moved", watchers=[me])
    assert _state("moved") == ("running", True)
    # a watcher of another machine (another id) cannot be checked from here
    _write("other", watchers=[{**me, "machine": "0" * 32}])
    assert _state("other")[1] is None


def test_the_machine_id_of_a_mac_is_its_platform_uuid():
    sample = (Path(__file__).parents[1] / "samples" / "macos" / "ioreg_platform.txt").read_text()
    assert watchers.platform_uuid(sample) == "4C4C4544-0042-3510-8052-B4C04F4B4E32"
    assert watchers.platform_uuid("") is None
