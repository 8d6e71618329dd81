"""The dry run's command lines can be pasted: the secret line, then each rank's own command, run
by a shell as printed, make a 2-rank job that trains to the end, with the arguments after `--`
quoted as given (`'a b'` stays one word) and no "~" left for a shell not to expand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from boltring.cluster.config.ports import free_port_block

SCRIPT = """
import json, sys
from pathlib import Path
import mlx.core as mx
from boltring.netio import init

with init() as group:
    total = group.all_sum(mx.array([group.rank + 1.0]))
    mx.eval(total)
    out = Path(__file__).parent / f"rank{group.rank}.json"
    out.write_text(json.dumps({"argv": sys.argv[1:], "sum": total.item(), "size": group.size}))
"""


def test_the_printed_lines_run_the_job_by_hand(tmp_path, no_leftovers):
    (tmp_path / "job.py").write_text(SCRIPT)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: byhand\nnodes: [{name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}]\n"
        f"ring: {{port: {free_port_block(2)}, timeout: 20}}\njob: {{steps: 3}}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "boltring.tui.cli", "--config", str(cfg), "--dry-run"]
        + ["--script", str(tmp_path / "job.py"), "--", "--foo", "a b"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stdout.splitlines() if x.strip() and not x.startswith("#")]
    secret, spawn0, rank0, spawn1, rank1 = lines
    assert "boltring.cluster.agent.spawn start" in spawn0 and "boltring.cluster.agent.spawn start" in spawn1
    assert "the launch spec and the secret go on its stdin" in res.stdout
    for line in (secret, rank0, rank1):
        assert "~" not in line and str(no_leftovers) in line, line  # HOME, written out
    assert rank0.endswith("-- --foo 'a b'"), rank0

    subprocess.run(secret, shell=True, check=True, timeout=30)
    ranks = [subprocess.Popen(line, shell=True, start_new_session=True) for line in (rank0, rank1)]
    try:
        assert [p.wait(timeout=120) for p in ranks] == [0, 0]
    finally:
        for p in ranks:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {"argv": ["--foo", "a b"], "sum": 3.0, "size": 2}, got
