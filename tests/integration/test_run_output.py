"""`boltring --run` end to end on local ranks: a reader that closes its output (`| head`) stops
the job as SIGPIPE stops a Unix tool, and a script's own output is shown, `rank N: …`."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.faults.helpers import CLI, cli, write_config

STEPS = "steps: 1000000"


def _run(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _close_after(proc: subprocess.Popen, until) -> tuple[float, str]:
    """Read stdout until `until(line)`, then close it as `head` does: (when, what was read)."""
    assert proc.stdout is not None
    read = ""
    for line in proc.stdout:
        read += line
        if until(line):
            break
    proc.stdout.close()
    return time.monotonic(), read


def _wait(proc: subprocess.Popen, timeout: float) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # our own process; its ranks are then found by no_leftovers
        raise AssertionError("--run did not end once its output was closed") from None
    return err


def _last_run(cfg) -> dict:
    return json.loads(cli("--config", str(cfg), "runs", "--json").stdout.splitlines()[0])


def test_run_json_into_a_reader_that_leaves_stops_every_rank_and_exits_141(tmp_path, no_leftovers):
    """`--run --json | head -n 25` hung forever once head had gone: the job ran on unwatched,
    and SIGTERM did not end it either."""
    cfg = write_config(tmp_path, ranks=2, job=STEPS)
    proc = _run("--json", "--skip-checks", "--config", str(cfg))
    closed, read = _close_after(proc, lambda line: json.loads(line).get("event") == "step")
    err = _wait(proc, timeout=60)
    took = time.monotonic() - closed
    assert proc.returncode == 141, err[-2000:]
    assert err == "", err[-2000:]  # quiet, as a tool ended by SIGPIPE
    assert took < 20, took
    run = _last_run(cfg)
    assert (run["state"], run["stopped_by"]) == ("killed", "output closed"), run
    assert run["reason"].startswith("stopped by you (output closed) at step "), run


def test_plain_run_into_a_reader_that_leaves_after_one_line_leaves_no_rank_running(tmp_path, no_leftovers):
    """`--run | head -n 1` exited 1 at once and left the ranks running (rich's SystemExit from
    inside a print, out of the controller's task)."""
    cfg = write_config(tmp_path, ranks=2, job=STEPS)
    proc = _run("--skip-checks", "--config", str(cfg))
    _close_after(proc, lambda line: line.startswith("started job "))
    err = _wait(proc, timeout=60)
    assert proc.returncode == 141, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert _last_run(cfg)["stopped_by"] == "output closed"


SCRIPT = """\
import os, sys
rank = int(os.environ["BOLTRING_RANK"])
for epoch in (1, 2):
    print(f"epoch {epoch} of rank {rank}", flush=True)
if rank == 1 and "--fail" in sys.argv:
    raise ValueError("no learning rate")
"""


def test_plain_run_of_a_script_shows_its_output_and_says_it_reported_no_metrics(tmp_path, no_leftovers):
    cfg = write_config(tmp_path, ranks=2, job="steps: 300")
    script = tmp_path / "prints.py"
    script.write_text(SCRIPT)
    res = cli("--run", "--skip-checks", "--config", str(cfg), "--script", str(script), timeout=120)
    out = res.stdout
    assert res.returncode == 0, (out + res.stderr)[-3000:]
    for rank in (0, 1):
        assert (
            f"rank {rank}: epoch 1 of rank {rank}\n" in out
            and f"rank {rank}: epoch 2 of rank {rank}\n" in out
        )
    assert "steps 0/300" not in out and "loss – → –" not in out, out
    assert "no steps reported  wall " in out, out
    assert "the script reported no metrics: call group.report(step=i, loss=loss) each step" in out, out
    assert "/rank1/rank.log" in out, out


def test_a_failing_script_is_one_failure_line_and_its_traceback_stays_in_its_log(tmp_path, no_leftovers):
    cfg = write_config(tmp_path, ranks=2, job="steps: 300")
    script = tmp_path / "fails.py"
    script.write_text(SCRIPT)
    res = cli(
        "--run", "--skip-checks", "--config", str(cfg), "--script", str(script), "--", "--fail", timeout=120
    )
    out = res.stdout
    assert res.returncode == 1, (out + res.stderr)[-3000:]
    assert "rank 1: epoch 2 of rank 1" in out, out
    assert "Traceback" not in out and 'File "' not in out, out
    failure = [line for line in out.splitlines() if "ValueError" in line]
    assert len(failure) == 1 and "rank 1 on local" in failure[0], out  # the one failure line
    assert "(rank 1: the traceback is there)" in out, out
    log = next(line for line in out.splitlines() if line.startswith("output of each rank: "))
    path = log.removeprefix("output of each rank: ").split(" ")[0].replace("rank*", "rank1")
    home = no_leftovers
    assert "Traceback (most recent call last):" in (home / path.removeprefix("~/")).read_text()


def test_sigterm_after_the_reader_left_is_still_a_stop(tmp_path, no_leftovers):
    """SIGTERM to a `--run` whose reader had gone was ignored until SIGKILL (exit 137)."""
    cfg = write_config(tmp_path, ranks=2, job=STEPS)
    proc = _run("--json", "--skip-checks", "--config", str(cfg))
    _close_after(proc, lambda line: json.loads(line).get("event") == "start")
    proc.send_signal(signal.SIGTERM)
    err = _wait(proc, timeout=60)
    assert proc.returncode in (130, 141), err[-2000:]  # whichever came first names the stop
    assert _last_run(cfg)["state"] == "killed"
