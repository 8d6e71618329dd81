"""spawn.write_atomic, the one atomic writer of run records, secrets and exports."""

from __future__ import annotations

import pytest

from boltring.cluster.agent.spawn import write_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out"
    target.mkdir()  # replacing a folder with a file fails after the temp is written
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_mode_asked_for_is_the_mode_written_whatever_was_left_before(tmp_path):
    # A dead process's temp of the old naming (same pid) was reopened with O_TRUNC and kept its
    # own mode: a secret could land world-readable. The temp is now always a fresh file.
    import os

    left = tmp_path / f".secret.tmp{os.getpid()}"
    left.write_text("old")
    left.chmod(0o644)
    write_atomic(tmp_path / "secret", "ab" * 32, mode=0o600)
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secret").read_text() == "ab" * 32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".secret.") and p != left]
