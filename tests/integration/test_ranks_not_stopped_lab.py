"""`--run --json` stopped (SIGINT) while h2 cannot be reached over SSH (tests/lab: real sshd test
hosts in network namespaces): the stop cannot reach h2's rank, and a script learns it from a
typed event, `ranks_not_stopped`, naming the node, its ranks and why, not from an `error`
event whose words it would have to split ("could not stop the ranks on h2: …"). The same fact
is said once on the stream, not again as a log line.

h2 is cut as tests/faults/test_status_unreachable.py cuts it: its control link (eth0, where
sshd listens) down in its namespace, while its rank trains on over the ring link (tb0)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.faults.helpers import CLI, cli
from tests.faults.test_status_unreachable import (
    CONNECT_TIMEOUT_S,
    _wait,
    control_link_down,
    lab_processes,
    lab_yaml,
)
from tests.procs import PipeReader

pytestmark = pytest.mark.netns


def test_run_json_names_the_node_whose_ranks_could_not_be_stopped_in_a_typed_event(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=1_000_000, port=52860)
    proc = subprocess.Popen(
        [*CLI, "--config", str(cfg), "--run", "--json", "--skip-checks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pipes = PipeReader(proc)
    out = pipes.out
    try:
        _wait(lambda: sum('"event": "step"' in line for line in out) >= 5, 120, "5 steps")
        with control_link_down(lab, "h2"):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError("--run did not end after SIGINT with h2 unreachable") from None
            err = pipes.join()
    finally:
        if proc.poll() is None:
            proc.kill()
        killed = cli("--config", str(cfg), "kill", timeout=120)  # h2 answers again: stop its rank
    events = [json.loads(line) for line in out if line.startswith("{")]
    assert proc.returncode == 130, err[-3000:]
    not_stopped = [e for e in events if e["event"] == "ranks_not_stopped"]
    assert len(not_stopped) == 1, events[-10:]
    ev = not_stopped[0]
    assert (ev["node"], ev["ranks"]) == ("h2", [1]), ev  # rank r runs on host r+1
    assert f"within {CONNECT_TIMEOUT_S} s" in ev["cause"] and not ev["cause"].startswith("h2:"), ev
    # said once: no log or error event repeats it in words for a script to split
    worded = [e for e in events if "could not stop the ranks" in e.get("text", "")]
    assert worded == [], worded
    # the run's last word (stderr for people, an `error` event for scripts) still names h2
    assert "rank 1 on h2 (" in err and "`boltring kill` stops it once h2 answers" in err, err[-3000:]
    assert killed.returncode in (0, 1), killed.stdout + killed.stderr
    deadline = time.monotonic() + 30
    while lab_processes(lab) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lab_processes(lab) == []
