"""Ring neighbours on one host talk over a Unix socket instead of TCP (ring.same_host: unix).

Two ranks whose ring addresses have the same IP run on one machine (the embedded default's
local ranks, or a node with several ranks). Between them TCP only adds a protocol stack to the
two copies every byte costs; a Unix stream socket makes the same copies with less work around
them. Measured with tests/bench/profile_ring.py on the 2-core VM, three alternating rounds
(wall ms per call): 2 ranks x 16 MiB 6.7-8.5 against 9.7-11.1 over loopback TCP; 3 ranks x
64 MiB 58-62 against 73-80. Frames, the handshake and the job secret are exactly as over TCP.

Its name is a hash of the job id and the listening rank's ring address, so both neighbours
derive it without talking first. Where it lives:
- Linux: in the abstract namespace. There is no file, so a rank killed before its neighbour
  came leaves nothing behind. Local processes can reach it as they could the loopback port it
  replaces, and like any peer they must prove the job secret before data moves.
- Elsewhere (macOS): a file in a directory only this user can enter (/tmp/boltring-UID, 0700,
  checked on every use), unlinked as soon as the neighbour is in. Files a killed rank left
  there are swept once they are a day old.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import sys
import time
from pathlib import Path

from .errors import NetioError

SAME_HOST_CHOICES = ("unix", "tcp")
ABSTRACT = sys.platform == "linux"  # names in Linux's abstract namespace: no file (see above)
SOCKET_ROOT = "/tmp"  # one fixed place both neighbours agree on, whatever their environment says
STALE_AFTER_S = 86400.0  # a socket file this old belongs to no rank still waiting for a neighbour
# Linux's default (208 KiB) wakes the reader far more often: in the same rounds, 3 ranks x 64 MiB
# took 70-77 ms with it against 58-62 with 4 MiB (the most SO_SNDBUF takes without root here).
SOCKET_BUFFER_BYTES = 4 << 20


def socket_dir() -> Path:
    """This user's private directory for ring sockets, made 0700 if it is missing."""
    path = Path(SOCKET_ROOT) / f"boltring-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise NetioError(f"cannot make {path} for ring sockets: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise NetioError(
            f"{path} must be a directory owned by you with mode 0700 (it holds the sockets of "
            f"ranks on one host); remove it, or set ring.same_host: tcp"
        )
    _sweep(path)
    return path


def _sweep(path: Path) -> None:
    """Remove socket files that ranks killed before their neighbour came left behind."""
    now = time.time()
    for entry in path.glob("*.sock"):
        try:
            st = entry.lstat()
            if stat.S_ISSOCK(st.st_mode) and now - st.st_mtime > STALE_AFTER_S:
                entry.unlink()
        except OSError:  # gone already, or another rank swept it first
            pass


def socket_path(job_id: str, addr: str) -> str:
    """Where the rank whose ring address is `addr` listens for its same-host left neighbour
    (an abstract name starts with a NUL byte)."""
    digest = hashlib.sha256(f"{job_id}\0{addr}".encode()).hexdigest()[:24]
    if ABSTRACT:
        return f"\0boltring-{os.getuid()}-{digest}"
    return str(socket_dir() / f"{digest}.sock")


def describe(path: str) -> str:
    """A socket name for messages: abstract names as `ss` shows them (@name)."""
    return "@" + path[1:] if path.startswith("\0") else path


def listen(path: str) -> socket.socket:
    """A Unix listener on `path`, replacing a stale socket of an earlier run of the same job."""
    if not path.startswith("\0"):
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(8)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def unlink_quietly(path: str) -> None:
    if path.startswith("\0"):
        return  # an abstract name goes with its socket
    try:
        os.unlink(path)
    except OSError:
        pass


def tune(sock: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
        except OSError:  # a system with a lower limit keeps its own size: slower, still correct
            pass
