"""Shared fixtures: an isolated home per test, and a guard that no process outlives a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.procs import boltring_processes

pytest_plugins = ["tests.lab.fixtures"] if (Path(__file__).parent / "lab" / "fixtures.py").exists() else []


def pytest_configure(config: pytest.Config) -> None:
    """Benchmarks measure the machine: run in parallel (`-n`), they would measure each other."""
    workers = getattr(config.option, "numprocesses", None)
    marks = config.option.markexpr or ""
    if workers not in (None, 0) and "bench" in marks and "not bench" not in marks:
        raise pytest.UsageError(
            f"-m {marks!r} with -n {workers}: benchmarks must run alone; drop -n (or pass -n 0)"
        )


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_after_session(tmp_path_factory):
    """After the whole session: no process that any test started is still alive. Every test's
    HOME, run directory and lab lives under this session's base temp directory, so a process
    that mentions it in its command line or environment is one of ours (other pytest sessions
    on the machine have their own)."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    left = boltring_processes(base, settle_s=5.0)
    described = [_describe(p) for p in left]
    for p in left:
        try:
            p.kill()
        except Exception:
            pass
    assert not left, f"{len(left)} processes outlived the test session: {described[:10]}"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """HOME and BOLTRING_HOME inside tmp_path: runs, checkpoints and job records land there."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("BOLTRING_HOME", str(h / ".boltring"))
    return h


@pytest.fixture
def no_leftovers(home):
    """Fails the test if any process started under this test's home is still alive after it."""
    yield home
    left = boltring_processes(str(home))
    described = [_describe(p) for p in left]
    for p in left:
        try:
            p.kill()
        except Exception:
            pass
    assert not left, f"processes left behind: {described}"


def _describe(p) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())}"
    except Exception:
        return f"{p.pid} (gone)"
