"""Benchmarks measure the machine, so `pytest -m bench` refuses parallel workers (tests/conftest.py):
two benchmarks at once would measure each other. The ordinary tests take `-n` as usual."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collect(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_benchmarks_with_workers_stop_with_one_line():
    res = collect("-m", "bench", "-n", "2", "tests/bench/test_bench.py")
    assert res.returncode == 4, res.stdout + res.stderr  # pytest's usage error
    assert "benchmarks must run alone; drop -n (or pass -n 0)" in res.stderr


def test_benchmarks_alone_and_tests_with_workers_are_fine():
    alone = collect("-m", "bench", "-n", "0", "tests/bench/test_bench.py")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    workers = collect("-n", "2", "tests/unit/test_clock_offset.py")
    assert workers.returncode == 0, workers.stdout + workers.stderr
