"""How the CLI ends when its user or its reader leaves: Ctrl-C on `status --follow` stops only
the following, and a reader that closes the pipe early is no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from tests.faults.helpers import CLI, write_config
from tests.procs import read_to_exit


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _step_of(proc: subprocess.Popen) -> int:
    """The next step event's step from a `--run --json` process."""
    assert proc.stdout is not None
    for line in proc.stdout:
        ev = json.loads(line)
        if ev["event"] == "step":
            return ev["step"]
    raise AssertionError("the job ended")


def test_ctrl_c_on_status_follow_stops_following_and_leaves_the_job_running(no_leftovers, tmp_path):
    cfg = str(write_config(tmp_path, ranks=2, name="follow", job="steps: 1000000"))
    job = _start("--run", "--json", "--skip-checks", "--config", cfg)
    watcher = None
    try:
        _step_of(job)
        watcher = _start("--config", cfg, "status", "--follow")
        assert watcher.stdout is not None
        for line in watcher.stdout:  # following: it re-attached
            if line.startswith("re-attached to job"):
                job_id = line.split()[3].rstrip(":")
                break
        watcher.send_signal(signal.SIGINT)
        out, err = read_to_exit(watcher, timeout=60)
        assert watcher.returncode == 3, out + err
        assert "Traceback" not in err, err
        said = [line for line in (out + err).splitlines() if "stopped following" in line]
        assert said == [f"stopped following job {job_id}; it is still running — `boltring kill` stops it"], (
            out
        )
        before = _step_of(job)
        assert _step_of(job) > before and job.poll() is None  # the ranks train on
        job.send_signal(signal.SIGINT)
        read_to_exit(job, timeout=60)
        assert job.returncode == 130  # the job, stopped by its own Ctrl-C, ends as usual
    finally:
        if job.poll() is None:  # Ctrl-C: it stops its ranks (a SIGKILL would leave them)
            job.send_signal(signal.SIGINT)
            read_to_exit(job, timeout=60)
        if watcher is not None and watcher.poll() is None:
            watcher.kill()


def test_a_reader_that_leaves_early_is_no_traceback(home):
    """`boltring runs --json | head -1`: the pipe closes before boltring has written it all."""
    jobs = home / ".boltring" / "jobs"
    jobs.mkdir(parents=True)
    for i in range(3):
        rec = {"job_id": f"j-{i}", "config": "x.yaml", "state": "finished", "started": 1.0 + i, "ranks": []}
        (jobs / f"j-{i}.json").write_text(json.dumps(rec))
    for args in (["runs", "--json"], ["runs"]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the first line
        try:
            res = subprocess.run(
                [*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
            )
        finally:
            os.close(write_end)
        assert res.returncode == 141 and res.stderr == "", (args, res.stderr[-2000:])
