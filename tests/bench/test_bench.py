"""Benchmarks (`pytest -m bench`): excluded from the default run; they print measured figures.

These are the measurements behind the README's performance section, run as commands: the
assertions are the issue's bars, checked against figures measured in this same run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.bench


def test_bench_boltring_vs_mlx_ring_two_ranks():
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "boltring.tui.cli",
            "bench",
            "--ranks",
            "2",
            "--sizes",
            "16MB,64MB",
            "--backend",
            "both",
            "--repeat",
            "10",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    ratios = {r["bytes"]: r["ratio_boltring_over_mlx"] for r in rows if "ratio_boltring_over_mlx" in r}
    for r in rows:
        print(json.dumps(r))
    assert set(ratios) == {16 << 20, 64 << 20}
    for size, ratio in ratios.items():
        assert ratio >= 1.5, f"{size} bytes: boltring/mlx busbw ratio {ratio:.2f} < 1.5"
