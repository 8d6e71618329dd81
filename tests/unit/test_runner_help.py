"""The rank runner's --help tells both defaults of --checkpoint-every: 0 for a rank started by
hand, and job.checkpoint_every (100 unless set) for every rank boltring launches (plan.py)."""

from __future__ import annotations

import subprocess
import sys

from boltring.cluster.config.schema import DEFAULT_CHECKPOINT_EVERY
from boltring.cluster.jobs.plan import RUNNER_MODULE


def _option_help(text: str, option: str) -> str:
    """The option's help as one line: from its name to the next option's line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("--"))
    return " ".join(" ".join(lines[start:end]).split())


def test_checkpoint_every_help_names_both_defaults():
    res = subprocess.run(
        [sys.executable, "-m", RUNNER_MODULE, "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    said = _option_help(res.stdout, "--checkpoint-every")
    assert "default 0 when started by hand" in said, said
    assert "job.checkpoint_every" in said and f"{DEFAULT_CHECKPOINT_EVERY} unless set" in said, said
