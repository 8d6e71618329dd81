"""How a job fails: every surviving rank must stop with a clear, typed error naming a rank,
within the timeout, instead of hanging. Real rank processes over loopback; the autouse
fixture fails any test that leaves a child process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import numpy as np
import pytest

from boltring.netio import FrameError, Group, JobEnv, JobEnvError
from boltring.netio.framing import Channel
from boltring.netio.handshake import client_handshake, server_handshake
from boltring.netio.ring import Ring

from .ranks import RankJob, free_ports, no_leftover_processes, write_secret  # noqa: F401

NAMES_A_RANK = re.compile(r"\brank [0-9]+ \(127\.0\.0\.1:[0-9]+\)")


def _error(outcome) -> dict:
    res = outcome.result
    assert res is not None and res["ok"] is False, outcome.describe()
    assert outcome.returncode == 3, outcome.describe()
    return res


def _loop_until_all_looping(job: RankJob, ranks) -> None:
    for r in ranks:
        job.wait_event(r, "looping", timeout=30)


def test_killed_rank_gives_every_survivor_a_clear_error(tmp_path):
    timeout = 5.0
    with RankJob(tmp_path, 3, timeout=timeout, chunk_mb=0.0625) as job:
        # 512 KiB per all_sum: both ring directions and several chunks are in flight
        job.start({"loop": {"elems": 1 << 17, "max_seconds": 40}, "max_seconds": 45})
        _loop_until_all_looping(job, range(3))
        t_kill = time.time()
        job.signal(1, signal.SIGKILL)
        out = job.wait([0, 2], timeout=timeout + 10)
        for r in (0, 2):
            err = _error(out[r])
            assert err["error_type"] in ("PeerClosed", "PeerTimeout"), err
            assert NAMES_A_RANK.search(err["message"]), err["message"]
            assert err["t_error"] - t_kill < timeout, (r, err["t_error"] - t_kill)
            assert out[r].t_exit - t_kill < timeout + 3, "the rank errored but did not exit"
        # the dead rank's two neighbours know which rank it was
        assert "rank 1 (" in out[0].result["message"] or "rank 1 (" in out[2].result["message"]
        assert (
            out[2].result["error_type"] == "PeerClosed"
            and "rank 1 (" in out[2].result["message"]
            or out[0].result["error_type"] == "PeerClosed"
            and "rank 1 (" in out[0].result["message"]
        )


def test_hung_rank_gives_peer_timeout_within_the_timeout(tmp_path):
    timeout = 3.0
    with RankJob(tmp_path, 3, timeout=timeout) as job:
        # 64 KiB per all_sum: one ring direction, so rank 2 waits on rank 1 and rank 0 on rank 2
        job.start({"loop": {"elems": 1 << 14, "max_seconds": 40}, "max_seconds": 45})
        _loop_until_all_looping(job, range(3))
        t_stop = time.time()
        job.signal(1, signal.SIGSTOP)
        try:
            out = job.wait([0, 2], timeout=timeout + 10)
        finally:
            job.signal(1, signal.SIGCONT)
            job.signal(1, signal.SIGKILL)
    errors = {r: _error(out[r]) for r in (0, 2)}
    for r, err in errors.items():
        assert err["error_type"] in ("PeerTimeout", "PeerClosed"), err
        assert NAMES_A_RANK.search(err["message"]), err["message"]
        assert err["t_error"] - t_stop < timeout + 2.0, (r, err["t_error"] - t_stop)
    # The rank fed by the stopped one times out first, naming it. (Rank 0, waiting on rank 2,
    # then sees rank 2 hang up, or times out too and names rank 2: a per-link timeout cannot
    # tell a stalled neighbour from one stalled behind another.)
    err = errors[2]
    assert err["error_type"] == "PeerTimeout", errors
    assert err["message"].startswith(f"no data from rank 1 ({job.ring[1]}) for {timeout:g} s"), err
    assert err["t_error"] - t_stop > timeout - 1.5, err["t_error"] - t_stop


def test_neighbour_that_never_starts_gives_connect_timeout(tmp_path):
    connect_timeout = 2.0
    with RankJob(tmp_path, 3, connect_timeout=connect_timeout) as job:
        job.start({"max_seconds": 20}, ranks=[0, 1])  # rank 2 never starts
        out = job.wait([0, 1], timeout=connect_timeout + 15)
    for r in (0, 1):
        err = _error(out[r])
        assert err["error_type"] == "ConnectTimeout", err
        assert f"rank 2 ({job.ring[2]})" in err["message"] and err["peer"] == f"rank 2 ({job.ring[2]})"
        # it kept waiting for the full connect timeout, and not much longer
        assert connect_timeout - 0.2 <= err["elapsed"] <= connect_timeout + 2.0, err["elapsed"]
    assert "left neighbour rank 2" in out[0].result["message"]
    assert "right neighbour rank 2" in out[1].result["message"]


@pytest.mark.parametrize("same_host", ["tcp", "unix"])
def test_rank_with_another_secret_never_joins(tmp_path, same_host):
    connect_timeout = 2.5
    with RankJob(tmp_path, 2, connect_timeout=connect_timeout, same_host=same_host) as job:
        other = write_secret(tmp_path / "other.secret")
        job.start({"max_seconds": 20}, env_overrides={1: {"BOLTRING_SECRET_FILE": str(other)}})
        out = job.wait(timeout=connect_timeout + 15)
    for r in (0, 1):
        err = _error(out[r])
        assert err["error_type"] == "ConnectTimeout", err
    logs = out[0].stderr + out[1].stderr
    assert "could not prove the job secret" in logs, logs
    # the listeners logged whom they dropped
    assert ("dropped 127.0.0.1:" if same_host == "tcp" else "dropped a local process") in logs, logs


def test_mismatched_shapes_name_the_contract(tmp_path):
    with RankJob(tmp_path, 2, timeout=10) as job:
        job.start({"mismatch": {"shapes": [[7], [8]]}, "max_seconds": 20})
        out = job.wait(timeout=30)
    errs = {r: _error(out[r]) for r in (0, 1)}
    # Whoever reads the other's first chunk header says what went wrong; a rank whose
    # neighbour hung up first (it detected the mismatch before sending) is told to look there.
    assert any(
        e["error_type"] == "FrameError"
        and "every rank must call the same collectives with the same shapes" in e["message"]
        for e in errs.values()
    ), errs
    for r, e in errs.items():
        assert e["error_type"] in ("FrameError", "PeerClosed"), errs
        assert f"rank {1 - r} ({job.ring[1 - r]})" in e["message"], errs


def test_larger_chunk_from_a_neighbour_names_the_contract():
    """Deterministic version of the above for the side that receives the larger chunk: a
    genuine Ring (rank 0 of 2, summing 7 floats) against a scripted rank 1 that authenticates
    properly and then sends its first chunk of an 8-float sum."""
    secret, job = os.urandom(32), "job-x"
    ports = free_ports(2)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    ring = Ring(0, 2, addrs, secret, job, timeout=5, connect_timeout=10, same_host="tcp")
    listener = socket.create_server(("127.0.0.1", ports[1]))
    listener.settimeout(10)
    result: dict = {}

    def rank0():
        try:
            ring.connect()
            ring.allreduce_(np.ones(7, dtype=np.float32), "float32")
            result["error"] = None
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=rank0)
    t.start()
    chans = []
    try:
        sock, _ = listener.accept()  # rank 0 connects to its right neighbour: us
        chans.append(Channel(sock, "rank 0", timeout=5))
        server_handshake(chans[-1], secret, job, 1, 2, 0)
        deadline = time.monotonic() + 10
        while True:  # then we connect to rank 0 as its left neighbour
            try:
                sock = socket.create_connection(("127.0.0.1", ports[0]), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.02)  # retry interval while rank 0's listener comes up
        chans.append(Channel(sock, "rank 0", timeout=5))
        client_handshake(chans[-1], secret, job, 1, 2, 0)
        # rank 0 expects float32[7] at offset 4 (12 bytes) in step 0; we send float32[8] (16)
        chans[-1].send_frame(
            "data", np.ones(4, dtype=np.float32), op=1, step=0, off=4, len=8, dtype="float32"
        )
        t.join(10)
    finally:
        listener.close()
        for c in chans:
            c.close()
        t.join(10)
        ring.close()
    err = result["error"]
    assert isinstance(err, FrameError), err
    assert str(err).startswith(f"rank 1 ({addrs[1]}) sent float32[8] chunk at offset 4"), err
    assert "expected float32[7] at offset 4" in str(err)
    assert "every rank must call the same collectives with the same shapes" in str(err)


def test_mismatched_dtypes_name_the_contract(tmp_path):
    with RankJob(tmp_path, 2, timeout=10) as job:
        job.start({"mismatch": {"shapes": [[6], [6]], "dtypes": {"1": "int32"}}, "max_seconds": 20})
        out = job.wait(timeout=30)
    errs = [_error(out[r]) for r in (0, 1)]
    assert any(e["error_type"] == "FrameError" and "same shapes and dtypes" in e["message"] for e in errs), (
        errs
    )
    for e in errs:
        assert NAMES_A_RANK.search(e["message"]), e


def test_secret_file_readable_by_others_is_refused(tmp_path):
    secret = write_secret(tmp_path / "job.secret", mode=0o644)
    env = JobEnv(
        rank=0, size=2, job_id="j", ring=("127.0.0.1:1", "127.0.0.1:2"), secret_file=str(secret)
    ).to_environ()
    job = JobEnv.from_environ(env)
    with pytest.raises(JobEnvError, match=r"has mode 644; it must be 0600"):
        job.read_secret()
    with pytest.raises(JobEnvError, match=r"mode 644"):
        Group(job)  # refused before anything listens or connects


def test_secret_file_0644_stops_a_real_rank(tmp_path):
    with RankJob(tmp_path, 2, secret_mode=0o644) as job:
        job.start({"max_seconds": 20}, ranks=[0])
        out = job.wait(timeout=20)
    err = _error(out[0])
    assert err["error_type"] == "JobEnvError" and "must be 0600" in err["message"], err
    assert err["elapsed"] < 5  # refused at once, not after a connect timeout


def test_overlap_travels_in_the_job_environment_and_bad_values_are_refused():
    env = JobEnv(rank=0, size=1, overlap=True).to_environ()
    assert env["BOLTRING_OVERLAP"] == "1" and JobEnv.from_environ(env).overlap is True
    assert JobEnv.from_environ(JobEnv(rank=0, size=1).to_environ()).overlap is False
    with pytest.raises(JobEnvError, match=r"BOLTRING_OVERLAP='yes' is not 0 or 1"):
        JobEnv.from_environ({**env, "BOLTRING_OVERLAP": "yes"})


def test_wire_dtype_travels_in_the_job_environment_and_bad_values_are_refused():
    env = JobEnv(rank=0, size=1, wire_dtype="bfloat16").to_environ()
    assert JobEnv.from_environ(env).wire_dtype == "bfloat16"
    assert JobEnv.from_environ(JobEnv(rank=0, size=1).to_environ()).wire_dtype == "float32"
    with pytest.raises(JobEnvError, match=r"BOLTRING_WIRE_DTYPE='int8'; use float32, bfloat16 or float16"):
        JobEnv.from_environ({**env, "BOLTRING_WIRE_DTYPE": "int8"})


def test_a_signal_while_connecting_does_not_wait_for_the_left_neighbour(monkeypatch):
    """The runner turns SIGTERM into SystemExit in the main thread; during connect() that
    thread then waited for the acceptor thread, which waited for the left neighbour until the
    connect timeout: the rank ignored SIGTERM until spawn's SIGKILL 5 s later."""
    (p0, p1) = free_ports(2)
    ring = Ring(
        0, 2, [f"127.0.0.1:{p0}", f"127.0.0.1:{p1}"], b"s" * 32, "j", connect_timeout=20, same_host="tcp"
    )

    def stopped(*args):
        time.sleep(0.3)  # the acceptor is waiting by now
        raise SystemExit(143)

    monkeypatch.setattr(ring, "_connect_right", stopped)
    t0 = time.monotonic()
    with pytest.raises(SystemExit):
        ring.connect()
    assert time.monotonic() - t0 < 2.0  # the acceptor saw the stop within its 0.2 s poll
