"""spawn.py on the node: two starts in one run dir at once run one rank; a pid that names
another process than the rank's keeper (reused after a reboot or a SIGKILLed group, with no exit
record to date the rank's end) is neither alive nor signalled; a rank found dead without an exit
record while `kill` stops it carries who stopped it (stop.json)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.integration.test_spawn import SPAWN, spawn, wait_for


def _sleeper(marks) -> dict:
    code = f"open({str(marks)!r}, 'a').write('x'); import time; time.sleep(60)"
    return {"argv": [sys.executable, "-c", code]}


def test_two_starts_at_once_in_one_run_dir_run_one_rank(no_leftovers, tmp_path):
    for attempt in range(3):
        run, marks = tmp_path / f"rank{attempt}", tmp_path / f"starts{attempt}"
        procs = [
            subprocess.Popen(
                [*SPAWN, "start", str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        time.sleep(0.5)  # both started and waiting for their spec: now both start at once
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(json.dumps(_sleeper(marks)))
        for p in procs:
            p.stdin.close()  # type: ignore[union-attr]
        outs = [p.stdout.read() for p in procs]  # type: ignore[union-attr]
        for p in procs:
            p.wait(30)
        codes = sorted(p.returncode for p in procs)
        time.sleep(1.0)  # a second rank, had it started, has written its mark by now
        try:
            assert codes == [0, 3], outs
            assert "already running" in "".join(outs), outs
            assert marks.read_text() == "x", "the rank ran twice"
        finally:
            spawn("kill", run, None, "--grace", "1")


def test_a_pid_reused_with_no_exit_record_is_neither_alive_nor_signalled(no_leftovers, tmp_path):
    run = tmp_path / "rank0"
    assert spawn("start", run, _sleeper(tmp_path / "marks"))["_rc"] == 0
    pgid = int((run / "pid").read_text())
    os.killpg(pgid, signal.SIGKILL)  # keeper and rank at once: nobody writes exit.json
    assert wait_for(lambda: spawn("status", run)["alive"] is False)
    assert not (run / "exit.json").exists()
    time.sleep(3.0)  # the stranger starts clearly later than the keeper did
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True, cwd=tmp_path
    )
    try:
        (run / "pid").write_text(str(stranger.pid))  # as the kernel would reuse the number
        assert spawn("status", run)["alive"] is False
        res = spawn("kill", run, None, "--grace", "1")
        assert res["was_alive"] is False
        assert stranger.poll() is None, "kill signalled a process that is not the rank's"
    finally:
        stranger.kill()
        stranger.wait(10)


def test_a_pid_file_without_a_start_time_is_still_read(no_leftovers, tmp_path):
    """A run dir started by an older boltring: no pid.started; the rank is found as before."""
    run = tmp_path / "rank0"
    assert spawn("start", run, _sleeper(tmp_path / "marks"))["_rc"] == 0
    (run / "pid.started").unlink(missing_ok=True)
    assert spawn("status", run)["alive"] is True
    assert spawn("kill", run, None, "--grace", "1")["was_alive"] is True


def test_dead_without_an_exit_record_while_being_killed_says_who_stopped_it(no_leftovers, tmp_path):
    run = tmp_path / "rank0"
    assert spawn("start", run, _sleeper(tmp_path / "marks"))["_rc"] == 0
    (run / "stop.json").write_text(json.dumps({"by": "boltring kill", "at": time.time()}))
    os.killpg(int((run / "pid").read_text()), signal.SIGKILL)  # as kill's SIGKILL, before its record
    assert wait_for(lambda: spawn("status", run)["alive"] is False)
    answer = spawn("status", run)
    assert answer["exit"] is None and answer["stop"]["by"] == "boltring kill", answer
