"""ring.same_host: neighbours on one host talk over a Unix socket; others, and `tcp`, over TCP.

Genuine Rings in threads of this process. Ring addresses on 127.0.0.1 are one host; a rank on
127.0.0.2 stands for another node (a different IP is a different machine to the ring).
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from boltring.netio import unixsock
from boltring.netio.errors import NetioError
from boltring.netio.jobenv import JobEnv, JobEnvError
from boltring.netio.ring import Ring

from .ranks import free_ports
from .ring_threads import reduce_in_threads
from .sockets import unix_bound

ELEMS = (1 << 20) + 5  # 4 MiB of float32, not divisible by the ring sizes below


def _addrs(hosts: list[str]) -> list[str]:
    return [f"{h}:{p}" for h, p in zip(hosts, free_ports(len(hosts), host="127.0.0.1"), strict=True)]


def _reduce(addrs: list[str], same_host: str) -> tuple[list[str], list[np.ndarray]]:
    """Each rank's transport (checked against its sockets' families) and the outputs."""
    views, outputs = reduce_in_threads(addrs, ELEMS, job="same-host", same_host=same_host)
    families = {
        "unix": {socket.AF_UNIX},
        "tcp": {socket.AF_INET},
        "tcp+unix": {socket.AF_UNIX, socket.AF_INET},
    }
    for v in views:
        assert v.families == families[v.transport], v
    return [v.transport for v in views], outputs


@pytest.mark.parametrize("n", [2, 3])
def test_ranks_on_one_host_talk_over_unix_sockets_and_leave_nothing_bound(n):
    addrs = _addrs(["127.0.0.1"] * n)
    transports, outputs = _reduce(addrs, "unix")
    assert transports == ["unix"] * n
    for addr in addrs:
        path = unixsock.socket_path("same-host", addr)
        assert path.startswith("\0boltring-")  # Linux: an abstract name, never a file
        assert not unix_bound(path)
    # The same bits as over TCP: the transport carries bytes, the sums are the ring's
    transports, tcp_outputs = _reduce(_addrs(["127.0.0.1"] * n), "tcp")
    assert transports == ["tcp"] * n
    assert tcp_outputs[0].tobytes() == outputs[0].tobytes()


def test_a_ring_across_hosts_uses_unix_only_between_same_host_neighbours():
    # ranks 0 and 1 share a host; rank 2 is another node: 0->1 is Unix, 1->2 and 2->0 are TCP
    transports, _ = _reduce(_addrs(["127.0.0.1", "127.0.0.1", "127.0.0.2"]), "unix")
    assert transports == ["tcp+unix", "tcp+unix", "tcp"]


def test_job_env_carries_same_host_and_refuses_other_values():
    env = JobEnv(rank=0, size=2, ring=("127.0.0.1:1", "127.0.0.1:2"), secret_file="/s", same_host="tcp")
    assert JobEnv.from_environ(env.to_environ()).same_host == "tcp"
    with pytest.raises(JobEnvError, match="BOLTRING_RING_SAME_HOST='shm'; use unix or tcp"):
        JobEnv.from_environ({**env.to_environ(), "BOLTRING_RING_SAME_HOST": "shm"})
    with pytest.raises(ValueError, match="use unix or tcp"):
        Ring(0, 2, ["127.0.0.1:1", "127.0.0.1:2"], b"", "j", same_host="udp")


def test_a_listener_that_cannot_bind_says_where_and_what_to_do(monkeypatch):
    addrs = _addrs(["127.0.0.1"] * 2)
    path = unixsock.socket_path("j", addrs[0])
    squatter = unixsock.listen(path)  # e.g. a rank of the same job still alive
    assert unix_bound(path)
    try:
        with pytest.raises(NetioError) as e:
            Ring(0, 2, addrs, b"s", "j", connect_timeout=30).connect()
    finally:
        squatter.close()
    assert not unix_bound(path)
    msg = str(e.value)
    assert msg.startswith(f"rank 0 cannot listen on @boltring-{os.getuid()}-"), msg
    assert "Address already in use" in msg and msg.endswith(
        f"set ring.same_host: tcp to use {addrs[0]} instead)"
    )


@pytest.fixture
def socket_root(monkeypatch):
    """Socket files, as on macOS, under a fresh stand-in for /tmp (short, as sun_path must be)."""
    root = Path(tempfile.mkdtemp(prefix="br", dir="/tmp"))
    monkeypatch.setattr(unixsock, "ABSTRACT", False)
    monkeypatch.setattr(unixsock, "SOCKET_ROOT", str(root))
    yield root
    for p in sorted(root.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() or p.is_symlink() else p.rmdir()
    root.rmdir()


def test_the_socket_directory_is_made_private(socket_root):
    path = unixsock.socket_dir()
    assert path == socket_root / f"boltring-{os.getuid()}"
    st = os.lstat(path)
    assert stat.S_ISDIR(st.st_mode) and st.st_mode & 0o777 == 0o700


@pytest.mark.parametrize("kind", ["open mode", "symlink"])
def test_a_socket_directory_others_could_enter_is_refused_in_one_line(socket_root, kind):
    path = socket_root / f"boltring-{os.getuid()}"
    if kind == "open mode":
        path.mkdir()
        path.chmod(0o755)  # another user could connect to, or replace, the sockets in it
    else:
        (socket_root / "elsewhere").mkdir(mode=0o700)
        path.symlink_to(socket_root / "elsewhere")
    with pytest.raises(NetioError) as e:
        unixsock.socket_dir()
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert msg.endswith("remove it, or set ring.same_host: tcp")
    # a Ring on one host says so at once, instead of waiting out its connect timeout
    with pytest.raises(NetioError, match="ring.same_host: tcp"):
        Ring(0, 2, _addrs(["127.0.0.1"] * 2), b"s", "j", connect_timeout=30).connect()


def test_socket_files_go_once_the_neighbour_is_in_and_a_stale_one_is_replaced(socket_root):
    addrs = _addrs(["127.0.0.1"] * 2)
    stale = unixsock.listen(unixsock.socket_path("same-host", addrs[0]))
    stale.close()  # a killed run of the same job left its socket file behind
    assert os.path.exists(unixsock.socket_path("same-host", addrs[0]))
    transports, _ = _reduce(addrs, "unix")
    assert transports == ["unix", "unix"]
    assert list((socket_root / f"boltring-{os.getuid()}").iterdir()) == []


def test_socket_files_a_day_old_are_swept(socket_root):
    folder = unixsock.socket_dir()
    old, fresh = (unixsock.listen(str(folder / f"{name}.sock")) for name in ("old", "fresh"))
    old.close()
    fresh.close()
    day_ago = time.time() - unixsock.STALE_AFTER_S - 60
    os.utime(folder / "old.sock", (day_ago, day_ago))
    (folder / "notes.txt").write_text("not ours to remove")
    unixsock.socket_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["fresh.sock", "notes.txt"]
