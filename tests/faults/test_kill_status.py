"""`boltring kill` from another terminal, `status` and re-attach: all read the job record (the
job as launched with its overrides), and a user's kill is KILLED "by" someone, in words."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.procs import exit_after, read_to_exit, start_cli, wait_for_step

from .helpers import cli, events, write_config


def test_kill_from_another_terminal_reads_as_killed_by_you(no_leftovers):
    proc = start_cli(
        "--run", "--json", "--skip-checks", "--ranks", "3", "--example", "mlp", "--steps", "1000000"
    )
    try:
        early = wait_for_step(proc)
        status = cli("status", "--json", timeout=60)
        assert status.returncode == 0, status.stderr
        summary = json.loads(status.stdout.strip().splitlines()[-1])
        assert summary["total_steps"] == 1000000, summary  # the job as launched, not the config's
        assert set(summary["ranks"]) == {"0", "1", "2"}, summary  # --ranks 3: all three
        killed = cli("kill", timeout=60)
        assert killed.returncode == 0, killed.stderr
        out, err = read_to_exit(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    evs = events(early + out)
    final = [e for e in evs if e["event"] == "state"][-1]
    assert final["state"] == "killed" and final["by"] == "boltring kill", final
    assert final["reason"].startswith("stopped by you (boltring kill) at step "), final
    assert "code" not in final["reason"] and "143" not in final["reason"]
    assert evs[-1]["event"] == "summary" and evs[-1]["stopped_by"] == "boltring kill"
    assert {e["rank"] for e in evs if e["event"] == "rank_start"} == {0, 1, 2}
    exits = [e for e in evs if e["event"] == "rank_exit"]
    assert {e["rank"] for e in exits} == {0, 1, 2}
    assert all(e["reason"] == "was stopped by you (boltring kill)" for e in exits), exits
    assert all(e["stopped_by"] == "boltring kill" for e in exits), exits
    said = [e["text"] for e in evs if e["event"] == "log" and "from another terminal" in e["text"]]
    assert said == ["stopped by you (boltring kill) from another terminal: the ranks are ending"], said
    secrets = list((no_leftovers / ".boltring").rglob("secret"))
    assert not secrets, secrets  # the job's secret files are gone with the job


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_launch_exits_130_within_5_s_and_kills_what_started(no_leftovers, sig, tmp_path):
    cfg = write_config(tmp_path, ranks=24, job="steps: 1000000", global_batch=240)
    proc = start_cli("--config", str(cfg), "--run", "--json", "--skip-checks")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the record exists and ranks are being started
            if json.loads(line).get("state") == "launching":
                break
        time.sleep(0.3)
        out, err, took = exit_after(proc, lambda: proc.send_signal(sig), timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert took < 5, f"Ctrl-C during launch took {took:.1f} s"
    (rec,) = [json.loads(p.read_text()) for p in (no_leftovers / ".boltring" / "jobs").glob("*.json")]
    assert rec["stopped_by"] == ("Ctrl-C" if sig == signal.SIGINT else "SIGTERM"), rec  # not both Ctrl-C
    print(f"\nMEASURED {sig.name} during a 24-rank launch: exit 130 after {took:.1f} s")


def test_bad_example_arguments_are_one_line_before_launch(no_leftovers):
    t0 = time.monotonic()
    res = cli("--run", "--skip-checks", "--example", "mlp", "--steps", "5", "--", "--no-such-flag", "3")
    assert res.returncode == 2  # nothing started, because of what was given
    lines = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and "--no-such-flag" in lines[0], lines
    assert not (no_leftovers / ".boltring" / "runs").exists()  # no rank was started
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("repeat", ["0", "-1"])
def test_bench_with_no_repeats_is_one_line(repeat, home):
    res = cli("bench", "--repeat", repeat, timeout=60)
    assert res.returncode == 2
    lines = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and "--repeat" in lines[0] and "Traceback" not in lines[0], lines


def test_status_and_kill_find_the_job_after_another_config_launched(no_leftovers, tmp_path):
    """Any launch used to move one global "current job" pointer: once another config had
    launched (even one that failed at once), `status` said no job was running and `kill` could
    not stop it. Each config's running job is found from the records instead."""
    proc = start_cli(
        "--run", "--json", "--skip-checks", "--ranks", "2", "--example", "mlp", "--steps", "1000000"
    )
    try:
        wait_for_step(proc)
        other = tmp_path / "other.yaml"
        other.write_text(
            "name: other\ndefaults: {python: /nonexistent/python3}\n"
            "nodes:\n  - {name: here, local: true, ranks: 2}\n"
        )
        failed = cli("--config", str(other), "--run", "--skip-checks", timeout=120)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        status = cli("status", "--json", timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout.strip().splitlines()[-1])["total_steps"] == 1000000
        killed = cli("kill", timeout=60)
        assert killed.returncode == 0, killed.stdout + killed.stderr
        out, err = read_to_exit(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]


@pytest.mark.parametrize("how", ["finished", "killed"])
def test_status_with_nothing_running_exits_as_the_last_job_did(no_leftovers, tmp_path, how):
    """`status --follow` started just after a job ended reads its result: 0 for a finished job
    (it said 1, "failed", before), 130 for one a user stopped; 1 when there is no job at all."""
    cfg = write_config(tmp_path, ranks=2, job="steps: 3" if how == "finished" else "steps: 1000000")
    none = cli("--config", str(cfg), "status", "--follow", timeout=60)
    assert none.returncode == 1 and "boltring: no job is running for this config" in none.stderr, none
    if how == "finished":
        assert cli("--config", str(cfg), "--run", "--skip-checks", timeout=180).returncode == 0
    else:
        proc = start_cli("--config", str(cfg), "--run", "--json", "--skip-checks")
        try:
            wait_for_step(proc)
            assert cli("--config", str(cfg), "kill", timeout=60).returncode == 0
            read_to_exit(proc, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    for args in (["status"], ["status", "--follow"]):
        res = cli("--config", str(cfg), *args, timeout=60)
        assert res.returncode == (0 if how == "finished" else 130), res.stdout + res.stderr
        assert res.stdout.splitlines()[-1].startswith("last: job "), res.stdout


def test_a_job_that_ended_unwatched_is_closed_by_the_next_status(no_leftovers, tmp_path):
    """The app can quit leaving a job running, and `--run` can be SIGKILLed: its ranks go on
    and end with nobody watching. Its record said "running" forever (`runs`, the history,
    `status`); the next controller to look reads it to its end and writes how it ended."""
    cfg = write_config(tmp_path, ranks=2, job="steps: 40")
    proc = start_cli("--config", str(cfg), "--run", "--json", "--skip-checks")
    try:
        wait_for_step(proc, step=2)
        proc.kill()  # the controller dies; the detached ranks go on
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (rec,) = [json.loads(p.read_text()) for p in (no_leftovers / ".boltring" / "jobs").glob("*.json")]
    exits = [Path(r["run_dir"]).expanduser() / "exit.json" for r in rec["ranks"]]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in exits):  # the ranks finish their 40 steps unwatched
        assert time.monotonic() < deadline, "the ranks never finished"
        time.sleep(0.2)
    before = json.loads(cli("--config", str(cfg), "runs", "--json").stdout.splitlines()[0])
    # nobody has read how it ended yet; its ranks' exit records are here: "ended", not "running"
    assert before["state"] == "ended", before
    status = cli("--config", str(cfg), "status", timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[-1].startswith(f"last: job {rec['job_id']} finished: 40/40 steps")
    after = json.loads(cli("--config", str(cfg), "runs", "--json").stdout.splitlines()[0])
    assert (after["state"], after["steps"], after["total_steps"]) == ("finished", 40, 40), after
    ended = max(json.loads(p.read_text())["ended"] for p in exits)
    assert after["wall_s"] == pytest.approx(ended - rec["started"], abs=0.01)  # not until `status` ran
