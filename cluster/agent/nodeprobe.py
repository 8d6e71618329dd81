"""Facts about one node, gathered on the node itself: `PYTHON -m boltring.cluster.agent.nodeprobe`.

Reads one JSON request on stdin:

    {"ring_ip": "10.0.0.1", "ring_iface": "bridge0" | null, "ring_port": 25250, "ranks": 1,
     "neighbours": [{"name": "mini2", "ring_ip": "10.0.0.2", "port": 25250}, ...],
     "rdma": false}

and prints ONE JSON object of facts (see `collect`; its shape is `facts.NodeFacts`). Every
probe runs in its own thread with its own timeout, and a probe that fails leaves {"error": "..."}
in its place instead of crashing the whole report, so one broken command never hides the other
facts.

Stdlib only: this runs on user nodes that have nothing but Python (and usually boltring; the
controller can also ship this file and the two parser modules as source when boltring is
missing, see `BOOTSTRAP`). Parsing lives in probes_macos.py / probes_linux.py.

Over ~400 lines on purpose: it is shipped as one source file to nodes without boltring, so
the command table of each platform and the assembly of the report stay together.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # types only: the controller may ship this file alone, without facts.py
    from .facts import HardwareFacts, NeighbourFacts, NodeFacts, ProbeRequest, RdmaFacts

try:
    from . import probes_linux, probes_macos
except ImportError:  # run from source shipped by the controller (boltring not installed here)
    probes_linux = sys.modules["boltring_probes_linux"]
    probes_macos = sys.modules["boltring_probes_macos"]

PROBE_VERSION = 1
COMMAND_TIMEOUT_S = 6.0
PING_COUNT = 3

# Shipped by the controller as `python -c BOOTSTRAP` when `-m boltring.cluster.agent.nodeprobe` fails
# because boltring is not installed: stdin then carries {"sources": {...}, "request": {...}}.
BOOTSTRAP = """\
import json, sys, types
d = json.loads(sys.stdin.read())
for name in ("probes_linux", "probes_macos", "nodeprobe"):
    m = types.ModuleType("boltring_" + name)
    sys.modules["boltring_" + name] = m
    exec(compile(d["sources"][name], name + ".py", "exec"), m.__dict__)
sys.modules["boltring_nodeprobe"].main(d["request"])
"""

_SEARCH_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin")


class ProbeError(Exception):
    pass


class CommandMissing(ProbeError):
    """The program is not installed on this node (facts say {"missing": true}, not a failure)."""


def _which(cmd: str) -> str | None:
    found = shutil.which(cmd)
    if found:
        return found
    for d in _SEARCH_PATH:  # ssh's non-login PATH often lacks the sbin directories
        p = os.path.join(d, cmd)
        if os.access(p, os.X_OK):
            return p
    return None


def run(argv: list[str], timeout: float = COMMAND_TIMEOUT_S, ok_codes=(0,), with_stderr: bool = False) -> str:
    """stdout of argv (and stderr after it, with_stderr); ProbeError with a one-line reason when
    it is missing, hangs or exits with a code outside ok_codes."""
    exe = _which(argv[0])
    if exe is None:
        raise CommandMissing(f"{argv[0]} not found")
    try:
        proc = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{' '.join(argv)} took over {timeout:g} s") from None
    except OSError as e:
        raise ProbeError(f"cannot run {argv[0]}: {e.strerror}") from None
    if proc.returncode not in ok_codes:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ProbeError(f"{' '.join(argv)} exited {proc.returncode}: {msg[-1] if msg else 'no output'}")
    return proc.stdout + ("\n" + proc.stderr if with_stderr else "")


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _safe(fn, *args):
    try:
        return fn(*args)
    except CommandMissing as e:
        return {"error": str(e), "missing": True}
    except Exception as e:
        return {"error": f"{e}" if isinstance(e, ProbeError) else f"{type(e).__name__}: {e}"}


# -- probes common to every platform -----------------------------------------------------------


def probe_python() -> dict:
    return {
        "version": sys.version.split()[0],
        "full_version": sys.version,
        "executable": sys.executable,
        "implementation": platform.python_implementation(),
    }


def probe_boltring() -> dict:
    """Whether this python has boltring's code (boltring.cluster, what every agent command runs,
    as pyenv.py checks it), and its version from the package metadata ("unknown" without)."""
    import importlib.metadata
    import importlib.util

    try:
        version = importlib.metadata.version("boltring")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        # not find_spec("boltring"): any folder named boltring on sys.path is that namespace
        installed = importlib.util.find_spec("boltring.cluster") is not None
    except (ImportError, ValueError):
        installed = False
    return {"version": version, "installed": installed}


def probe_mlx() -> dict:
    try:
        import mlx.core as mx
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    out: dict = {"version": getattr(mx, "__version__", None)}
    if not out["version"]:
        try:
            import importlib.metadata

            out["version"] = importlib.metadata.version("mlx")
        except Exception:
            out["version"] = "unknown"
    try:
        out["metal"] = bool(mx.metal.is_available())
    except Exception:
        out["metal"] = False
    return out


def probe_ports(ring_ip: str | None, port: int | None, ranks: int) -> dict:
    """Can this node's ranks listen on ring_ip:port+k? A port in use means a stale rank (or
    another program) holds it."""
    if not ring_ip or not port:
        return {}
    out: dict = {}
    for k in range(max(ranks, 1)):
        p = port + k
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ring_ip, p))
            out[str(p)] = "free"
        except OSError as e:
            out[str(p)] = e.strerror or str(e)
        finally:
            s.close()
    return out


def _ping_argv(ip: str, darwin: bool, interval: bool) -> list[str]:
    argv = ["ping", "-c", str(PING_COUNT), "-n"]
    if interval:
        argv += ["-i", "0.2"]
    if darwin:  # BSD: -W is per-reply wait in ms, -t the overall timeout in s
        argv += ["-W", "1000", "-t", "3"]
    else:  # iputils: -W per-reply wait in s, -w overall deadline in s
        argv += ["-W", "1", "-w", "3"]
    return argv + [ip]


def probe_ping(ip: str, darwin: bool) -> dict:
    exe = _which("ping")
    if exe is None:
        return {"error": "ping not found", "missing": True}
    parse = probes_linux.parse_ping  # one parser reads the BSD and the Linux summaries
    for interval in (True, False):
        try:
            proc = subprocess.run(
                [exe, *_ping_argv(ip, darwin, interval)[1:]],
                capture_output=True,
                text=True,
                timeout=8,
                stdin=subprocess.DEVNULL,
                errors="replace",
            )
        except subprocess.TimeoutExpired:
            return {"error": "ping took over 8 s"}
        except OSError as e:
            return {"error": f"cannot run ping: {e.strerror}"}
        try:
            return parse(proc.stdout)
        except ValueError:
            err = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
            if interval and ("interval" in err.lower() or "super-user" in err.lower()):
                continue  # this ping refuses -i 0.2 for non-root users: retry at 1 s
            return {"error": re.sub(r"^\S*ping:\s*", "", err.splitlines()[-1])}
    return {"error": "ping failed"}


# -- platform probes ---------------------------------------------------------------------------


def _darwin_jobs(req: ProbeRequest) -> dict:
    pm = probes_macos
    jobs: dict[str, Callable[[], object]] = {
        "sysctl": lambda: pm.parse_sysctl_chip_memory(
            run(["sysctl", "-n", "machdep.cpu.brand_string", "hw.memsize"])
        ),
        "sp_hardware": lambda: pm.parse_sp_hardware(run(["system_profiler", "SPHardwareDataType", "-json"])),
        "vm_stat": lambda: pm.parse_vm_stat(run(["vm_stat"])),
        "hardware_ports": lambda: {
            "ports": pm.parse_hardware_ports(run(["networksetup", "-listallhardwareports"]))
        },
        "bridge_service": lambda: pm.parse_networksetup_getinfo(
            run(["networksetup", "-getinfo", pm.THUNDERBOLT_BRIDGE_PORT])
        ),
        "ifconfig": lambda: {"ifaces": pm.parse_ifconfig(run(["ifconfig"]))},
        "netstat": lambda: {"routes": pm.parse_netstat_rn(run(["netstat", "-rn", "-f", "inet"]))},
        "route_default": lambda: pm.parse_route_get(
            run(["route", "-n", "get", "default"], ok_codes=(0, 1), with_stderr=True)
        ),
        "thunderbolt": lambda: {
            "ports": pm.parse_sp_thunderbolt(run(["system_profiler", "SPThunderboltDataType", "-json"]))
        },
    }
    for n in req.get("neighbours") or []:
        ip = n["ring_ip"]
        jobs[f"route:{ip}"] = functools.partial(_route_get_darwin, ip)
    if req.get("rdma"):
        jobs["rdma_ctl"] = lambda: {"status": pm.parse_rdma_ctl_status(run(["rdma_ctl", "status"]))}
        jobs["ibv_devices"] = lambda: {"devices": pm.parse_ibv_devices(run(["ibv_devices"]))}
        jobs["ibv_devinfo"] = lambda: {"states": pm.parse_ibv_devinfo(run(["ibv_devinfo"]))}
    return jobs


def _route_get_darwin(ip: str) -> dict:
    return probes_macos.parse_route_get(run(["route", "-n", "get", ip], ok_codes=(0, 1), with_stderr=True))


def _route_get_linux(ip: str) -> dict:
    return probes_linux.parse_ip_route_get(run(["ip", "-j", "route", "get", ip]))


def _rdma_darwin(raw: dict) -> RdmaFacts:
    """RDMA over Thunderbolt from `rdma_ctl status`, `ibv_devices` and `ibv_devinfo`."""
    ctl, devs, info = raw["rdma_ctl"], raw["ibv_devices"], raw["ibv_devinfo"]
    out: RdmaFacts = {"status": ctl.get("status"), "enabled": None, "devices": []}
    if ctl.get("missing"):
        out["missing"] = True  # no rdma_ctl: macOS before 26.2
    words = str(ctl.get("status") or "").replace(".", " ").split()  # "enabled", or a sentence
    if "disabled" in words or "not" in words:
        out["enabled"] = False
    elif "enabled" in words:
        out["enabled"] = True
    states = info.get("states") or {}
    out["devices"] = [{"name": d, "port_state": states.get(d)} for d in devs.get("devices") or []]
    errors = [x["error"] for x in (ctl, devs) if x.get("error")]
    if errors:
        out["error"] = "; ".join(errors)
    return out


def _linux_jobs(req: ProbeRequest) -> dict:
    pl = probes_linux
    jobs: dict[str, Callable[[], object]] = {
        "cpuinfo": lambda: pl.parse_cpuinfo(_read("/proc/cpuinfo")),
        "meminfo": lambda: pl.parse_meminfo(_read("/proc/meminfo")),
        "ip_addr": lambda: {"ifaces": pl.parse_ip_addr(run(["ip", "-j", "addr", "show"]))},
        "route_default": lambda: {
            "routes": pl.parse_ip_route_default(run(["ip", "-j", "route", "show", "default"]))
        },
    }
    for n in req.get("neighbours") or []:
        ip = n["ring_ip"]
        jobs[f"route:{ip}"] = functools.partial(_route_get_linux, ip)
    return jobs


# -- assembling the report ---------------------------------------------------------------------


def _interfaces_darwin(req: dict, raw: dict) -> dict:
    pm = probes_macos
    ifaces = raw["ifconfig"].get("ifaces")
    ports = raw["hardware_ports"].get("ports") or []
    names = pm.port_names(ports)
    out: dict = {
        "names": names,
        "bridge_device": pm.thunderbolt_bridge_device(ports),
        "thunderbolt_devices": {str(k): v for k, v in pm.thunderbolt_port_devices(ports).items()},
    }
    if ifaces is None:
        out["error"] = raw["ifconfig"].get("error", "ifconfig failed")
        return out
    bridge = ifaces.get(out["bridge_device"] or "")
    out["bridge_members"] = bridge.get("members", []) if bridge else None
    return _resolve_ring_iface(
        req, ifaces, out, pm.find_iface_with_ip, pm.iface_is_up, default_iface=out["bridge_device"]
    )


def _interfaces_linux(req: dict, raw: dict) -> dict:
    pl = probes_linux
    ifaces = raw["ip_addr"].get("ifaces")
    out: dict = {"names": {}}
    if ifaces is None:
        out["error"] = raw["ip_addr"].get("error", "ip addr failed")
        return out
    return _resolve_ring_iface(
        req, ifaces, out, pl.find_iface_with_ip, lambda info: bool(info.get("up")), default_iface=None
    )


def _resolve_ring_iface(req, ifaces, out, find_ip, is_up, default_iface):
    ring_ip = req.get("ring_ip")
    holder = find_ip(ifaces, ring_ip) if ring_ip else None
    out["holder"] = holder
    if req.get("ring_iface"):
        name, how = req["ring_iface"], "config"
    elif holder:
        name, how = holder, "address"
    elif default_iface:
        name, how = default_iface, "thunderbolt_bridge"
    else:
        name, how = None, None
    out["ring_iface"], out["resolved_by"] = name, how
    info = ifaces.get(name) if name else None
    out["exists"] = info is not None
    if info is not None:
        out.update(
            up=is_up(info),
            admin_up=info.get("admin_up", info.get("up")),
            mtu=info.get("mtu"),
            addresses=[a["addr"] for a in info.get("inet", [])],
            status=info.get("status") or info.get("operstate"),
            members=info.get("members", []),
        )
        out["member_status"] = {m: (ifaces.get(m) or {}).get("status") for m in out["members"]}
    out["all"] = {
        n: {"up": is_up(i), "mtu": i.get("mtu"), "addresses": [a["addr"] for a in i.get("inet", [])]}
        for n, i in ifaces.items()
    }
    return out


def collect(req: ProbeRequest, platform_name: str | None = None) -> NodeFacts:
    """All facts for one request. `platform_name` overrides sys.platform (tests feed macOS
    samples through a fake `run` on Linux)."""
    t0 = time.monotonic()
    plat = platform_name or sys.platform
    darwin = plat == "darwin"
    jobs = _darwin_jobs(req) if darwin else _linux_jobs(req)
    jobs["python"] = probe_python
    jobs["boltring"] = probe_boltring
    jobs["mlx"] = probe_mlx
    jobs["ports"] = lambda: probe_ports(req.get("ring_ip"), req.get("ring_port"), int(req.get("ranks") or 1))
    for n in req.get("neighbours") or []:
        jobs[f"ping:{n['ring_ip']}"] = lambda ip=n["ring_ip"]: probe_ping(ip, darwin)
    # names resolved at call time, so tests can replace run/probe_ping/probe_ports

    raw: dict = {}
    with cf.ThreadPoolExecutor(max_workers=min(len(jobs), 24)) as pool:
        futs = {name: pool.submit(_safe, fn) for name, fn in jobs.items()}
        for name, fut in futs.items():
            raw[name] = fut.result()

    facts: NodeFacts = {
        "probe_version": PROBE_VERSION,
        "platform": plat,
        "hostname": socket.gethostname(),
        "python": raw["python"],
        "boltring": raw["boltring"],
        "mlx": raw["mlx"],
        "ports": raw["ports"],
    }
    if darwin:
        hw: dict = dict(raw["sysctl"]) if "error" not in raw["sysctl"] else {}
        sp = raw["sp_hardware"]
        if "error" not in sp:
            hw.update({k: v for k, v in sp.items() if k not in hw})
        if not hw:
            hw = {"error": raw["sysctl"].get("error") or sp.get("error")}
        vm = raw["vm_stat"]
        facts["hardware"] = cast("HardwareFacts", hw)
        facts["memory"] = (
            {"total_bytes": hw.get("memory_bytes"), "available_bytes": vm.get("available_bytes")}
            if "error" not in vm
            else {"total_bytes": hw.get("memory_bytes"), "error": vm["error"]}
        )
        facts["interfaces"] = _safe(_interfaces_darwin, req, raw)
        facts["macos"] = {
            "hardware_ports": raw["hardware_ports"],
            "bridge_service": raw["bridge_service"],
            "default_route": raw["route_default"],
            "routes": raw["netstat"],
            "thunderbolt": raw["thunderbolt"],
        }
        if req.get("rdma"):
            facts["macos"]["rdma"] = _rdma_darwin(raw)
    else:
        cpu, mem = raw["cpuinfo"], raw["meminfo"]
        facts["hardware"] = {**cpu, "memory_bytes": mem.get("memory_bytes")} if "error" not in cpu else cpu
        facts["memory"] = (
            {"total_bytes": mem["memory_bytes"], "available_bytes": mem.get("available_bytes")}
            if "error" not in mem
            else mem
        )
        facts["interfaces"] = _safe(_interfaces_linux, req, raw)
        facts["linux"] = {"default_routes": raw["route_default"]}
    neigh: list[NeighbourFacts] = []
    for n in req.get("neighbours") or []:
        ip = n["ring_ip"]
        neigh.append(
            {"name": n.get("name"), "ring_ip": ip, "route": raw[f"route:{ip}"], "ping": raw[f"ping:{ip}"]}
        )
    facts["neighbours"] = neigh
    facts["elapsed_s"] = round(time.monotonic() - t0, 3)
    return facts


def _drop_current_folder() -> None:
    """Run as `python -c BOOTSTRAP` ("") or `-m` (its path), the first path entry is the current
    folder, which over SSH is the node user's home: a ~/boltring workdir or ~/mlx checkout there
    must not pass for an installed package (pyenv.py drops it too)."""
    try:
        cwd = os.getcwd()
    except OSError:  # the folder was deleted: nothing can be found in it anyway
        cwd = None
    if sys.path and sys.path[0] in ("", cwd):
        del sys.path[0]


def main(request: ProbeRequest | None = None) -> int:
    # This node's wall clock, read first thing; the answer says how long ago (the laptop then
    # knows when, by its own clock, it was read: facts.clock_offset, the `clock` check).
    clock_read, clock_mono = time.time(), time.monotonic()
    _drop_current_folder()
    if request is None:
        text = sys.stdin.read()
        try:
            request = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            print(json.dumps({"error": f"bad request: {e}"}))
            return 2
    facts = collect(request)
    facts["clock"] = {"time": clock_read, "elapsed_s": time.monotonic() - clock_mono}
    sys.stdout.write(json.dumps(facts) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
