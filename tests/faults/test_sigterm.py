"""SIGTERM to `boltring --run` stops the job like Ctrl-C (exit 130, every rank stopped, never a
failure), and is named as what it was: SIGTERM, never Ctrl-C, in the log, the end, the record."""

from __future__ import annotations

import json
import signal
import subprocess

from boltring.cluster.states import USER_STOPS, StoppedBy
from boltring.tui.fmt import stopped_text
from tests.procs import exit_after

from .helpers import CLI, cli, events, write_config


def test_sigterm_is_a_stop_by_you_named_sigterm():
    assert StoppedBy.SIGTERM in USER_STOPS  # its ranks' ends are no failures; never restarted
    assert stopped_text(StoppedBy.SIGTERM, 50) == "stopped by you (SIGTERM) at step 50"


def test_sigterm_to_run_is_reported_as_sigterm(tmp_path, no_leftovers):
    cfg = write_config(tmp_path, ranks=2, job="steps: 1000000")
    proc = subprocess.Popen(
        [*CLI, "--config", str(cfg), "--run", "--json", "--skip-checks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        early = ""
        for line in proc.stdout:
            early += line
            if json.loads(line).get("step", 0) >= 5:
                break
        out, err, _ = exit_after(proc, lambda: proc.send_signal(signal.SIGTERM), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Ctrl-C" not in early + out + err, (out + err)[-3000:]
    assert "interrupted (SIGTERM): stopping every rank" in err, err[-2000:]
    evs = events(early + out)
    final = [e for e in evs if e["event"] == "state"][-1]
    assert final["state"] == "killed" and final["by"] == "SIGTERM", final
    assert final["reason"].startswith("stopped by you (SIGTERM) at step "), final
    assert evs[-1]["event"] == "summary" and evs[-1]["stopped_by"] == "SIGTERM", evs[-1]
    stopping = [e["text"] for e in evs if e["event"] == "log" and "stopping every rank" in e["text"]]
    assert stopping and stopping[0].endswith("(SIGTERM)"), stopping
    run = json.loads(cli("--config", str(cfg), "runs", "--json").stdout.splitlines()[0])
    assert (run["state"], run["stopped_by"]) == ("killed", "SIGTERM"), run
    last = cli("--config", str(cfg), "status", timeout=60)
    assert "(stopped by you (SIGTERM) at step " in last.stdout, last.stdout
