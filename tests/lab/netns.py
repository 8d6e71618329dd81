"""Test hosts on one Linux machine: network namespaces, two bridges and one real sshd per host.

Layout of a `Lab(n)` with id "bltXXXX" (short, random, so parallel and stale runs never clash):

    root namespace                                   namespace bltXXXXh<i> ("h<i>")
    bridge bltXXXXbc  198.18.0.254/24  <- veth bltXXXXc<i> == eth0  198.18.0.<i>/24   sshd on :22
    bridge bltXXXXbr  (no address)     <- veth bltXXXXr<i> == tb0   198.18.1.<i>/24   ("ring")

Addresses above are for slot 0, which the first lab on a machine gets; a lab started while
another runs takes the next free pair of /24s in 198.18.0.0/15 (`lab.control_net`,
`lab.ring_net`), reserved by a `$TMPDIR/boltring-lab-slot<k>` file. Use `host.control_ip` and
`host.ring_ip` rather than literal addresses.

The control bridge stands for the LAN/Wi-Fi the laptop reaches the Macs over; the ring bridge
stands for the Thunderbolt Bridge. The root namespace has no address on the ring bridge (and IPv6
is off on it), so ring traffic can only go host to host over tb0; an `unreachable` route for the
ring /24 in the root namespace keeps this machine's own attempts from leaving by its default route.

Each host runs `ip netns exec NS /usr/sbin/sshd -D -e -f CFG` with its own throwaway ed25519 host
key, key-only root login and a per-host home directory: `ip netns exec` bind-mounts the files in
/etc/netns/NS/ over /etc, and we put a passwd there whose root home is `<lab>/h<i>/home`, so "~"
differs per host (SFTP and $HOME alike) and nothing is ever written to the real /root.
Hosts share this machine's filesystem otherwise, so sys.executable works "on" every host.

Everything a lab creates carries its id: namespaces, links, the temp dir
`$TMPDIR/boltring-lab-<id>/` (sshd configs, keys, logs, homes, `ssh_config`, `known_hosts`) and
/etc/netns/<id>h<i>/. `close()` removes all of it, and `cleanup_stale()` (run when a lab starts)
removes what a crashed run left behind: a lab is stale when the process recorded in its
`owner` file is gone. /run/sshd (sshd's privilege-separation dir, normally made by the
openssh-server service) is created when missing and left in place.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PREFIX = "blt"
DIR_PREFIX = "boltring-lab-"
SLOT_PREFIX = "boltring-lab-slot"  # $TMPDIR/boltring-lab-slot<k> holds the id of the lab using slot k
SLOTS = 256  # slot k: control 198.18.0.0/15's /24 number 2k, ring /24 number 2k+1
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS = Path("/etc/netns")
_LAB_ID = re.compile(r"^blt[0-9a-f]{4}$")
# Every name a lab (or lab_available's probe) gives a namespace or link.
_OWNED_NAME = re.compile(r"^(blt[0-9a-f]{4})(?:h\d+|bc|br|c\d+|r\d+|p)$")
_SSHD_EXES = {"sshd", "sshd-session", "sshd-auth"}
_CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    """The lab could not be built or changed; the message has the failing command's stderr."""


def _run(
    argv: list[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check=check)


# --- availability ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def lab_available() -> str | None:
    """None when labs can be built here; otherwise the reason (for skip/fail messages)."""
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces, bridges, sshd)"
    missing = [tool for tool in ("ip", "tc", "ssh", "ssh-keygen", "ping") if not shutil.which(tool)]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        return (
            "missing "
            + ", ".join(missing)
            + " (apt-get install -y iproute2 openssh-server openssh-client iputils-ping)"
        )
    probe = f"{PREFIX}{secrets.token_hex(2)}p"
    proc = _ip("netns", "add", probe, check=False)
    if proc.returncode != 0:
        return f"`ip netns add` does not work here: {proc.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


# --- process and namespace helpers -----------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of a live process, None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def _kill_and_wait(pids: set[int] | list[int], sig: int = signal.SIGKILL, wait_s: float = 5.0) -> None:
    pids = {p for p in pids if p != os.getpid()}
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pids = {p for p in pids if _proc_stat(p) is not None}
        if not pids:
            return
        time.sleep(0.01)


def _netns_list() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _netns_inode(ns: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / ns).st_ino
    except OSError:
        return None


def _pids_in_netns(inodes: set[int]) -> set[int]:
    """Processes living in one of these network namespaces (mounted under /var/run/netns or not)."""
    wanted = {f"net:[{i}]" for i in inodes}
    found = set()
    for p in _all_pids():
        try:
            if os.readlink(f"/proc/{p}/ns/net") in wanted:
                found.add(p)
        except OSError:
            pass
    return found


def _link_names() -> list[str]:
    proc = _ip("-o", "link", "show", check=False)
    names = []
    for line in proc.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _pids_with_arg(fragment: str) -> set[int]:
    """Processes whose command line mentions `fragment` (e.g. a lab's directory)."""
    found = set()
    needle = fragment.encode()
    for p in _all_pids():
        try:
            if needle in Path(f"/proc/{p}/cmdline").read_bytes():
                found.add(p)
        except OSError:
            pass
    return found


def lab_dir_for(lab_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"{DIR_PREFIX}{lab_id}"


def slot_nets(k: int) -> tuple[str, str]:
    """("198.18.0", "198.18.1") for slot 0: the control and ring /24 of a lab in slot k."""
    a, b = 2 * k, 2 * k + 1
    return f"198.{18 + a // 256}.{a % 256}", f"198.{18 + b // 256}.{b % 256}"


def _slot_file(k: int) -> Path:
    return Path(tempfile.gettempdir()) / f"{SLOT_PREFIX}{k}"


def _slots() -> dict[int, str]:
    """slot -> lab id, from the reservation files."""
    out = {}
    for e in os.listdir(tempfile.gettempdir()):
        if e.startswith(SLOT_PREFIX) and e[len(SLOT_PREFIX) :].isdigit():
            try:
                out[int(e[len(SLOT_PREFIX) :])] = (Path(tempfile.gettempdir()) / e).read_text().strip()
            except OSError:
                pass
    return out


def _owner_alive(lab_id: str) -> bool:
    d = lab_dir_for(lab_id)
    try:
        pid, start = (int(x) for x in (d / "owner").read_text().split())
    except FileNotFoundError:
        try:  # a lab being created writes its owner file right after making the dir
            return time.time() - d.stat().st_mtime < 30
        except FileNotFoundError:
            return False
    except ValueError:
        return False
    st = _proc_stat(pid)
    return st is not None and st[1] == start


def lab_ids_in_use() -> set[str]:
    """Ids that have a namespace, a link, a temp dir or an /etc/netns dir on this machine."""
    ids = set()
    for name in [*_netns_list(), *_link_names()]:
        m = _OWNED_NAME.match(name)
        if m:
            ids.add(m.group(1))
    for base, prefix in ((Path(tempfile.gettempdir()), DIR_PREFIX), (ETC_NETNS, "")):
        try:
            entries = os.listdir(base)
        except FileNotFoundError:
            continue
        for e in entries:
            rest = e[len(prefix) :] if e.startswith(prefix) else ""
            if _LAB_ID.match(rest):  # temp dir "boltring-lab-<id>"
                ids.add(rest)
            elif m := _OWNED_NAME.match(rest):  # /etc/netns/<id>h<i>
                ids.add(m.group(1))
    ids |= {i for i in _slots().values() if _LAB_ID.match(i)}
    return ids


# A closed socket whose FIN the peer has not acknowledged yet.
_UNACKED_FIN_STATES = ["state", "fin-wait-1", "state", "closing", "state", "last-ack"]


def _wait_fins_delivered(namespaces: list[str], wait_s: float = 2.0) -> None:
    """Wait until the killed processes' connections have told their peers.

    Deleting a link drops the packets still queued for it, a FIN among them: an ssh client on
    this machine connected to a lab host then never learns its sshd died, and hangs. Once the
    peer has acknowledged the FIN, no socket of the namespace is in these states."""
    deadline = time.monotonic() + wait_s
    pending = list(namespaces)
    while pending and time.monotonic() < deadline:
        pending = [
            ns
            for ns in pending
            if _run(["ss", "-N", ns, "-Htn", *_UNACKED_FIN_STATES], check=False).stdout.strip()
        ]
        if pending:
            time.sleep(0.02)


def teardown(lab_id: str) -> list[str]:
    """Remove every process, namespace, link and file of one lab id; returns what went wrong."""
    problems: list[str] = []
    namespaces = [ns for ns in _netns_list() if (m := _OWNED_NAME.match(ns)) and m.group(1) == lab_id]
    d = lab_dir_for(lab_id)
    inodes = {i for ns in namespaces if (i := _netns_inode(ns))}
    try:  # recorded at build time: finds processes even in namespaces no longer mounted
        inodes |= {int(x) for x in (d / "netns-inodes").read_text().split()}
    except (OSError, ValueError):
        pass
    pids = _pids_in_netns(inodes)
    # a listener started by a lab whose files were half removed: its command line names the dir
    pids |= {p for p in _pids_with_arg(f"{d}/") if _exe_name(p) in _SSHD_EXES}
    _kill_and_wait(pids)
    _wait_fins_delivered(namespaces)
    links = [name for name in _link_names() if (m := _OWNED_NAME.match(name)) and m.group(1) == lab_id]
    # veths first (deleting one end deletes its peer in the namespace right away), then bridges
    for name in sorted(links, key=lambda n: n.endswith(("bc", "br"))):
        proc = _ip("link", "del", name, check=False)
        if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
            problems.append(f"ip link del {name}: {proc.stderr.strip()}")
    for ns in namespaces:
        proc = _ip("netns", "del", ns, check=False)
        if proc.returncode != 0:
            problems.append(f"ip netns del {ns}: {proc.stderr.strip()}")
    try:
        for e in os.listdir(ETC_NETNS):
            if (m := _OWNED_NAME.match(e)) and m.group(1) == lab_id:
                shutil.rmtree(ETC_NETNS / e, ignore_errors=True)
        if not os.listdir(ETC_NETNS):
            ETC_NETNS.rmdir()
    except OSError:
        pass
    shutil.rmtree(d, ignore_errors=True)
    for k, owner in _slots().items():
        if owner == lab_id:
            _ip("route", "del", "unreachable", f"{slot_nets(k)[1]}.0/24", check=False)
            _slot_file(k).unlink(missing_ok=True)
    deadline = time.monotonic() + 3
    while True:
        left = [n for n in _link_names() if (m := _OWNED_NAME.match(n)) and m.group(1) == lab_id]
        left += [n for n in _netns_list() if (m := _OWNED_NAME.match(n)) and m.group(1) == lab_id]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if left:
        problems.append(f"still present after teardown: {', '.join(left)}")
    if d.exists():
        problems.append(f"could not remove {d}")
    return problems


def cleanup_stale() -> list[str]:
    """Tear down labs whose owner process is gone (crashed or killed runs). Returns their ids."""
    stale = sorted(i for i in lab_ids_in_use() if not _owner_alive(i))
    for lab_id in stale:
        teardown(lab_id)
    for k, owner in _slots().items():  # unreadable or foreign reservation files
        if not _LAB_ID.match(owner) and time.time() - _mtime(_slot_file(k)) > 30:
            _slot_file(k).unlink(missing_ok=True)
    return stale


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _root_addresses() -> str:
    return (
        _ip("-o", "-4", "addr", "show", check=False).stdout + _ip("-4", "route", "show", check=False).stdout
    )


def _in_netns(ns: str, fn):
    """Run fn() on a fresh thread that has joined network namespace `ns`; return its result."""
    result: dict = {}

    def target():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=target, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


# --- the lab ---------------------------------------------------------------------------------


@dataclass
class Host:
    name: str  # "h1" ... also the ssh_config alias
    index: int
    ns: str  # network namespace
    control_ip: str  # eth0, where sshd listens
    ring_ip: str  # tb0, current address (set_ring_ip changes it)
    base_ring_ip: str
    dir: Path  # <lab>/h<i>: sshd config, host key, log, pid file
    home: Path  # root's home on this host ("~")
    workdir: Path  # home/.boltring, the Node default "~/.boltring"
    host_key: Path
    sshd_config: Path
    sshd_log: Path
    control_veth: str  # root-side end of eth0
    ring_veth: str  # root-side end of tb0
    sshd: subprocess.Popen | None = None
    routes: set[str] = field(default_factory=set)
    shaped: bool = False
    link_down: bool = False
    # Set by sshd (SetEnv) in every SSH session opened since: see Lab.set_session_env.
    session_env: dict[str, str] = field(default_factory=dict)


class Lab:
    """n test hosts with sshd, a control network and a ring network. Use as a context manager.

    Fault and shape helpers (host = "h1", 1 or a Host):
      stop_sshd / start_sshd           refused connections ("Remote Login off")
      kill_ssh_sessions                drop established SSH connections (listener stays)
      forget_host_key / change_host_key / trust_host_key   unknown / changed host key
      set_link(host, up)               tb0 down/up
      set_ring_ip(host, ip)            another (wrong) ring address
      route_via_control(host, peer)    /32 route to a peer's ring address over eth0 ("Wi-Fi")
      shape(host, mbit)                tbf on the host's ring link, both directions
      set_session_env(host, env)       variables sshd sets in the host's new SSH sessions
      skew_clock(host, seconds)        the host's wall clock off by `seconds` (for its Pythons, via the above)
      reset()                          undo all of the above (what the `lab` fixture does)
    and exec / popen / socket to act inside a host.
    """

    def __init__(self, n: int = 3, *, python: str = sys.executable):
        if not 1 <= n <= 200:
            raise ValueError("a lab has 1..200 hosts")
        self.n = n
        self.python = python
        self.id: str = ""
        self.dir = Path()
        self.slot = -1
        self.control_net = ""  # "198.18.0" for slot 0: hosts .1..n, this machine .254
        self.ring_net = ""  # "198.18.1" for slot 0: hosts .1..n, nothing else
        self.gateway = ""  # this machine's address on the control bridge
        self.hosts: list[Host] = []
        self.ssh_config = Path()
        self.known_hosts = Path()
        self.client_key = Path()
        self._popens: list[subprocess.Popen] = []
        self._closed = True

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        reason = lab_available()
        if reason:
            raise LabError(reason)
        cleanup_stale()
        self._closed = False
        atexit.register(self.close)
        try:
            self._allocate()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        problems = self.close()
        if problems and exc_type is None:
            raise LabError("lab teardown: " + "; ".join(problems))

    def _allocate(self) -> None:
        for _ in range(50):
            lab_id = f"{PREFIX}{secrets.token_hex(2)}"
            if lab_id in lab_ids_in_use():
                continue
            d = lab_dir_for(lab_id)
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue
            st = _proc_stat(os.getpid())
            assert st is not None
            (d / "owner").write_text(f"{os.getpid()} {st[1]}\n")
            self.id, self.dir = lab_id, d
            self._reserve_slot()
            return
        raise LabError("could not find a free lab id")

    def _reserve_slot(self) -> None:
        """Claim the first free pair of /24s (parallel labs must not share addresses)."""
        used = _root_addresses()
        for k in range(SLOTS):
            control, ring = slot_nets(k)
            if any(re.search(rf"(^|[\s/]){re.escape(net)}\.", used, re.M) for net in (control, ring)):
                continue  # this machine already has an address or a route there
            try:
                fd = os.open(_slot_file(k), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.id)
            self.slot, self.control_net, self.ring_net = k, control, ring
            self.gateway = f"{control}.254"
            return
        raise LabError("no free 198.18.0.0/15 slot for another lab")

    def _build(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        d, p = self.dir, self.id
        self.client_key = d / "id_ed25519"
        self.ssh_config = d / "ssh_config"
        self.known_hosts = d / "known_hosts"
        _keygen(self.client_key, f"boltring-lab-{p}")
        (d / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        passwd = Path("/etc/passwd").read_text().splitlines()

        for br in (f"{p}bc", f"{p}br"):
            _ip(
                "link",
                "add",
                br,
                "type",
                "bridge",
                "nf_call_iptables",
                "0",
                "nf_call_ip6tables",
                "0",
                "nf_call_arptables",
                "0",
            )
            _no_ipv6(br)
        _ip("addr", "add", f"{self.gateway}/24", "dev", f"{p}bc")
        # This machine has no address on the ring: make the ring subnet fail here, instead of
        # leaving through the default route.
        _ip("route", "add", "unreachable", f"{self.ring_net}.0/24")
        for br in (f"{p}bc", f"{p}br"):
            _ip("link", "set", br, "up")

        for i in range(1, self.n + 1):
            hd = d / f"h{i}"
            home = hd / "home"
            (home / ".boltring").mkdir(parents=True)
            h = Host(
                name=f"h{i}",
                index=i,
                ns=f"{p}h{i}",
                control_ip=f"{self.control_net}.{i}",
                ring_ip=f"{self.ring_net}.{i}",
                base_ring_ip=f"{self.ring_net}.{i}",
                dir=hd,
                home=home,
                workdir=home / ".boltring",
                host_key=hd / "ssh_host_ed25519_key",
                sshd_config=hd / "sshd_config",
                sshd_log=hd / "sshd.log",
                control_veth=f"{p}c{i}",
                ring_veth=f"{p}r{i}",
            )
            self.hosts.append(h)
            # per-host /etc/passwd: root's home is this host's home (see module doc)
            etc = ETC_NETNS / h.ns
            etc.mkdir(parents=True)
            (etc / "passwd").write_text(
                "".join(
                    (_with_home(line, home) if line.startswith("root:") else line) + "\n" for line in passwd
                )
            )
            _ip("netns", "add", h.ns)
            with open(d / "netns-inodes", "a") as f:
                f.write(f"{_netns_inode(h.ns)}\n")
            _ip("link", "add", h.control_veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
            _ip("link", "add", h.ring_veth, "type", "veth", "peer", "name", "tb0", "netns", h.ns)
            for veth, br in ((h.control_veth, f"{p}bc"), (h.ring_veth, f"{p}br")):
                _no_ipv6(veth)
                _ip("link", "set", veth, "master", br, "up")
            _ip("-n", h.ns, "link", "set", "lo", "up")
            _ip("-n", h.ns, "addr", "add", f"{h.control_ip}/24", "dev", "eth0")
            _ip("-n", h.ns, "link", "set", "eth0", "up")
            _ip("-n", h.ns, "addr", "add", f"{h.ring_ip}/24", "dev", "tb0")
            _ip("-n", h.ns, "link", "set", "tb0", "up")
            _keygen(h.host_key, f"{h.name}-host")
            h.sshd_config.write_text(_sshd_config(self, h))
        self._write_ssh_config()
        self.write_known_hosts()
        for h in self.hosts:
            self.start_sshd(h)

    def close(self) -> list[str]:
        """Kill everything, delete namespaces, links and files. Safe to call twice."""
        if self._closed:
            return []
        self._closed = True
        atexit.unregister(self.close)
        if not self.id:
            return []
        for pop in [*(h.sshd for h in self.hosts if h.sshd), *self._popens]:
            if pop.poll() is None:
                pop.kill()
        problems = teardown(self.id)
        for pop in [*(h.sshd for h in self.hosts if h.sshd), *self._popens]:
            try:
                pop.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append(f"pid {pop.pid} did not exit")
        return problems

    # -- lookup and helpers for tests ----------------------------------------------------------

    def host(self, host: str | int | Host) -> Host:
        if isinstance(host, Host):
            return host
        if isinstance(host, int):
            return self.hosts[host - 1]
        for h in self.hosts:
            if host in (h.name, h.ns, h.control_ip):
                return h
        raise KeyError(f"no lab host {host!r}")

    def exec(
        self, host, argv: list[str], *, input: str | None = None, timeout: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess:
        """Run argv inside the host's namespace (text mode); returns the CompletedProcess."""
        h = self.host(host)
        return _run(["ip", "netns", "exec", h.ns, *argv], check=check, timeout=timeout, input=input)

    def popen(self, host, argv: list[str], **kw) -> subprocess.Popen:
        """Start argv inside the host's namespace; killed at close() at the latest."""
        h = self.host(host)
        pop = subprocess.Popen(["ip", "netns", "exec", h.ns, *argv], **kw)
        self._popens.append(pop)
        return pop

    def socket(self, host, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket of this process created inside the host's network namespace."""
        h = self.host(host)
        return _in_netns(h.ns, lambda: socket.socket(family, type))

    def new_client_key(self, name: str) -> Path:
        """Another client key in the lab dir (not authorized anywhere): for auth-failure tests."""
        path = self.dir / f"{name}_ed25519"
        _keygen(path, f"boltring-lab-{name}")
        return path

    def node(self, host, **overrides):
        """A boltring Node for this host, reached through the lab ssh_config alias."""
        from boltring.cluster.config.schema import Node

        h = self.host(host)
        kw = dict(name=h.name, ring_ip=h.ring_ip, ssh=h.name, python=self.python, ring_iface="tb0")
        kw.update(overrides)
        return Node(**kw)

    def ssh_options(self, **overrides):
        """SshOptions that use the lab's ssh_config and known_hosts (short timeouts)."""
        from boltring.cluster.config.schema import SshOptions

        kw = dict(
            config_file=str(self.ssh_config),
            known_hosts=str(self.known_hosts),
            connect_timeout_s=5.0,
            keepalive_interval_s=2.0,
            keepalive_count_max=3,
        )
        kw.update(overrides)
        return SshOptions(**kw)

    # -- sshd ----------------------------------------------------------------------------------

    def start_sshd(self, host) -> None:
        h = self.host(host)
        if h.sshd and h.sshd.poll() is None:
            return
        log = open(h.sshd_log, "ab")
        try:
            h.sshd = subprocess.Popen(
                ["ip", "netns", "exec", h.ns, SSHD, "-D", "-e", "-f", str(h.sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while not _listening(h.sshd.pid, 22):
            if h.sshd.poll() is not None or time.monotonic() > deadline:
                tail = h.sshd_log.read_text(errors="replace")[-2000:]
                raise LabError(f"sshd on {h.name} did not start listening: {tail}")
            time.sleep(0.01)

    def stop_sshd(self, host, *, kill_sessions: bool = False) -> None:
        """Stop the listener (new connections are refused). Established sessions keep running
        unless kill_sessions, like turning off Remote Login leaves open terminals alone."""
        h = self.host(host)
        if kill_sessions:
            self.kill_ssh_sessions(h)
        if h.sshd and h.sshd.poll() is None:
            h.sshd.terminate()
            try:
                h.sshd.wait(5)
            except subprocess.TimeoutExpired:
                h.sshd.kill()
                h.sshd.wait(5)

    def sshd_running(self, host) -> bool:
        h = self.host(host)
        return bool(h.sshd and h.sshd.poll() is None)

    def ssh_session_pids(self, host) -> list[int]:
        """Per-connection sshd processes of the host: every sshd in its namespace but the
        listener (sessions of a stopped or restarted listener included)."""
        h = self.host(host)
        listener = h.sshd.pid if self.sshd_running(h) else None
        inode = _netns_inode(h.ns)
        return sorted(
            p
            for p in _pids_in_netns({inode} if inode else set())
            if p != listener and _exe_name(p) in _SSHD_EXES
        )

    def kill_ssh_sessions(self, host) -> int:
        """SIGKILL the per-connection sshd processes (not the listener, not the commands they
        started): every client connection to the host drops at once. Returns how many died."""
        pids = self.ssh_session_pids(host)
        _kill_and_wait(pids)
        return len(pids)

    # -- host keys -----------------------------------------------------------------------------

    def host_public_key(self, host) -> str:
        """'ssh-ed25519 AAAA...' of the host's current key."""
        fields = self.host(host).host_key.with_suffix(".pub").read_text().split()
        return f"{fields[0]} {fields[1]}"

    def write_known_hosts(self, hosts=None) -> None:
        """known_hosts trusting the current key of `hosts` (all by default), as OpenSSH writes
        them for port 22: `198.18.0.<i> ssh-ed25519 AAAA...` (HostName, not the alias, is what
        both OpenSSH and asyncssh look up)."""
        hs = self.hosts if hosts is None else [self.host(x) for x in hosts]
        self.known_hosts.write_text("".join(f"{h.control_ip} {self.host_public_key(h)}\n" for h in hs))

    def _write_ssh_config(self) -> None:
        self.ssh_config.write_text(_ssh_config_text(self))

    def _known_lines(self) -> list[str]:
        return self.known_hosts.read_text().splitlines() if self.known_hosts.exists() else []

    def forget_host_key(self, host) -> None:
        """Drop the host from known_hosts: its key becomes unknown."""
        h = self.host(host)
        keep = [ln for ln in self._known_lines() if h.control_ip not in ln.split()[0].split(",")]
        self.known_hosts.write_text("".join(ln + "\n" for ln in keep))

    def trust_host_key(self, host) -> None:
        """(Re)add the host's current key to known_hosts."""
        h = self.host(host)
        self.forget_host_key(h)
        with open(self.known_hosts, "a") as f:
            f.write(f"{h.control_ip} {self.host_public_key(h)}\n")

    def change_host_key(self, host) -> None:
        """Give the host a new host key and restart its sshd; known_hosts keeps the old one."""
        h = self.host(host)
        running = self.sshd_running(h)
        self.stop_sshd(h)
        h.host_key.unlink()
        h.host_key.with_suffix(".pub").unlink()
        _keygen(h.host_key, f"{h.name}-host")
        if running:
            self.start_sshd(h)

    # -- network shapes and faults ---------------------------------------------------------------

    def set_link(self, host, up: bool = False) -> None:
        """tb0 (the host's ring link) down or up."""
        h = self.host(host)
        _ip("-n", h.ns, "link", "set", "tb0", "up" if up else "down")
        h.link_down = not up

    def set_ring_ip(self, host, ip: str) -> None:
        """Replace tb0's address ("198.18.1.9" or with a prefix, default /24)."""
        h = self.host(host)
        addr = ip if "/" in ip else f"{ip}/24"
        _ip("-n", h.ns, "addr", "flush", "dev", "tb0")
        _ip("-n", h.ns, "addr", "add", addr, "dev", "tb0")
        h.ring_ip = addr.split("/")[0]

    def route_via_control(self, host, peer_ring_ip: str) -> None:
        """A /32 route on `host` sending traffic for a peer's ring address out of eth0: the
        "ring traffic goes over Wi-Fi" fault. It still works (the peer answers ARP for any of its
        addresses on any link), just over the wrong network."""
        h = self.host(host)
        _ip("-n", h.ns, "route", "replace", f"{peer_ring_ip}/32", "dev", "eth0")
        h.routes.add(peer_ring_ip)

    def clear_route(self, host, peer_ring_ip: str) -> None:
        h = self.host(host)
        _ip("-n", h.ns, "route", "del", f"{peer_ring_ip}/32", check=False)
        h.routes.discard(peer_ring_ip)

    def shape(self, host, mbit: float | None) -> None:
        """Bound the host's ring link to `mbit` Mbit/s in each direction (None/0 removes it).

        A token bucket (tbf) on tb0's egress inside the namespace bounds host -> ring, and one on
        the bridge-side veth's egress bounds ring -> host. Only the ring link is shaped; the
        control network (SSH) is not."""
        h = self.host(host)
        if not mbit:
            _run(["tc", "-n", h.ns, "qdisc", "del", "dev", "tb0", "root"], check=False)
            _run(["tc", "qdisc", "del", "dev", h.ring_veth, "root"], check=False)
            h.shaped = False
            return
        rate_bytes = mbit * 1e6 / 8
        burst = max(32 * 1024, int(rate_bytes * 0.004))
        tbf = ["root", "tbf", "rate", f"{mbit}mbit", "burst", str(burst), "latency", "50ms"]
        _run(["tc", "-n", h.ns, "qdisc", "replace", "dev", "tb0", *tbf])
        _run(["tc", "qdisc", "replace", "dev", h.ring_veth, *tbf])
        h.shaped = True

    def set_session_env(self, host, env: dict[str, str] | None) -> None:
        """Variables sshd sets in every SSH session of the host opened from now on (SetEnv in
        its sshd_config; the listener is restarted to read it). Sessions already open keep the
        environment they started with; None or {} removes them again."""
        h = self.host(host)
        env = dict(env or {})
        for name, value in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or re.search(r'["\\\s]', value):
                raise LabError(f"cannot pass {name}={value!r} through sshd's SetEnv")
        if env == h.session_env:
            return
        h.session_env = env
        h.sshd_config.write_text(_sshd_config(self, h))
        running = self.sshd_running(h)
        self.stop_sshd(h)
        if running:
            self.start_sshd(h)

    def skew_clock(self, host, seconds: float) -> None:
        """The host's wall clock `seconds` ahead (negative: behind) of this machine's, for every
        Python started over an SSH session opened from now on (clockskew/sitecustomize.py, put
        on PYTHONPATH there through the above), while monotonic clocks run true, as on a Mac
        whose clock drifted without network time. 0 undoes it."""
        if not seconds:
            self.set_session_env(host, None)
            return
        env = {"PYTHONPATH": str(CLOCKSKEW_DIR), "BOLTRING_LAB_CLOCK_SKEW_S": f"{seconds:g}"}
        self.set_session_env(host, env)

    def reset(self) -> None:
        """Back to the state right after start: sshd up on every host, every current host key
        trusted, tb0 up with its first address, no extra routes, no shaping, no session
        environment (the sessions opened with one are dropped: what they start would carry it)."""
        for h in self.hosts:
            if h.session_env:
                self.set_session_env(h, None)
                self.kill_ssh_sessions(h)
            self.start_sshd(h)
            if h.link_down:
                self.set_link(h, up=True)
            if h.ring_ip != h.base_ring_ip:
                self.set_ring_ip(h, h.base_ring_ip)
            for r in list(h.routes):
                self.clear_route(h, r)
            if h.shaped:
                self.shape(h, None)
        self.write_known_hosts()


CLOCKSKEW_DIR = Path(__file__).parent / "clockskew"  # its sitecustomize sets a host's clock off


def _keygen(path: Path, comment: str) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _with_home(passwd_line: str, home: Path) -> str:
    f = passwd_line.split(":")
    f[5] = str(home)
    return ":".join(f)


def _no_ipv6(ifname: str) -> None:
    p = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if p.exists():
        p.write_text("1")


def _listening(pid: int, port: int) -> bool:
    """Whether the process's network namespace has a TCP listener on `port`."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    want = f":{port:04X}"
    return any(ln.split()[1].endswith(want) and ln.split()[3] == "0A" for ln in lines)


def _sshd_config(lab: Lab, h: Host) -> str:
    setenv = " ".join(f'"{k}={v}"' for k, v in h.session_env.items())
    return f"""\
# boltring test lab {lab.id}, host {h.name}
ListenAddress {h.control_ip}:22
HostKey {h.host_key}
PidFile {h.dir}/sshd.pid
AuthorizedKeysFile {lab.dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
AcceptEnv none
MaxStartups 50:30:100
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel INFO
""" + (f"SetEnv {setenv}\n" if setenv else "")


def _ssh_config_text(lab: Lab) -> str:
    hosts = "".join(f"Host {h.name}\n    HostName {h.control_ip}\n\n" for h in lab.hosts)
    return f"""\
# boltring test lab {lab.id}: control {lab.control_net}.0/24, ring {lab.ring_net}.0/24
{hosts}Host *
    User root
    Port 22
    IdentityFile {lab.client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {lab.known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    CheckHostIP no
    BatchMode yes
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    ConnectTimeout 5
    LogLevel ERROR
"""
