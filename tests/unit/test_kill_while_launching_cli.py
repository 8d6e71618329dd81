"""`boltring kill` while another terminal's controller is launching the job: it asks that
controller to stop (the record's stop request) and waits until the job has ended, saying so.
It said "was waiting to restart; it will not restart", words for another case, and returned at
once while ranks were still being started."""

from __future__ import annotations

import asyncio
import threading
import time

from boltring.cluster.config.load import load_config
from boltring.cluster.jobs import record
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.states import JobState
from boltring.tui import status_and_kill


def _launching_job(tmp_path) -> tuple:
    path = tmp_path / "c.yaml"
    path.write_text("name: kl\nnodes:\n  - {name: a, local: true, ranks: 2}\n")
    cfg = load_config(str(path))
    rec = record.new_record(cfg, "kl-1", [], resume=False)
    rec["state"] = JobState.LAUNCHING
    record.add_watcher(rec)  # this process stands for the controller launching it
    record.write(rec)
    return cfg, "kl-1"


def _kill(cfg) -> int:
    return asyncio.run(status_and_kill.run_kill(JobController(cfg)))


def test_kill_during_a_launch_waits_for_its_controller_to_stop_it(home, tmp_path, capsys):
    cfg, job = _launching_job(tmp_path)

    def owner() -> None:  # the launching controller: it sees the request and ends the job
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (record.read(job) or {}).get("stop_requested"):
                record.update(job, lambda r: r.update(state=JobState.KILLED) or True)
                return
            time.sleep(0.1)

    t = threading.Thread(target=owner)
    t.start()
    code = _kill(cfg)
    t.join(20)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"job {job} is launching; asked its controller to stop it" in out, out
    assert f"job {job} was stopped during its launch" in out and "restart" not in out, out


def test_a_launch_that_does_not_stop_in_time_is_said_so(home, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(status_and_kill, "KILL_WAIT_S", 1.0)  # the wait's bound, shortened
    cfg, job = _launching_job(tmp_path)
    assert _kill(cfg) == 1
    out = capsys.readouterr().out
    assert "still launching after 1 s; the request stands" in out, out
    assert (record.read(job) or {}).get("stop_requested"), record.read(job)
