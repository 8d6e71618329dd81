"""The job secret must be at least 32 bytes: an empty or short one made the handshake a formality."""

from __future__ import annotations

import pytest

from boltring.netio.jobenv import JobEnv, JobEnvError

from .ranks import write_secret


@pytest.mark.parametrize("secret", [b"", b"\x01", b"s" * 31])
def test_a_short_secret_is_refused_naming_the_file(tmp_path, secret):
    path = write_secret(tmp_path / "job.secret", secret)
    job = JobEnv(rank=0, size=2, ring=("127.0.0.1:1", "127.0.0.1:2"), secret_file=str(path))
    with pytest.raises(JobEnvError, match=rf"secret file {path} holds {len(secret)} bytes.*at least 32"):
        job.read_secret()


def test_a_secret_that_is_not_hex_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "job.secret"
    write_secret(path)
    path.write_text("not hex at all")
    job = JobEnv(rank=0, size=2, ring=("127.0.0.1:1", "127.0.0.1:2"), secret_file=str(path))
    with pytest.raises(JobEnvError, match=rf"secret file {path}"):
        job.read_secret()


def test_the_controllers_32_bytes_are_read(tmp_path):
    path = write_secret(tmp_path / "job.secret", bytes(range(32)))
    job = JobEnv(rank=0, size=2, ring=("127.0.0.1:1", "127.0.0.1:2"), secret_file=str(path))
    assert job.read_secret() == bytes(range(32))
