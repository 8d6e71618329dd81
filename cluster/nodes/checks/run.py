"""`boltring check`: is every node ready, and does the ring network really go over Thunderbolt?

Controller side. For each node, one round trip runs `nodeprobe` on the node (all its probes in
parallel there) while a tiny `python -c 'print(sys.version)'` runs beside it on the same
connection; nodes are checked concurrently. Then, across nodes, every ring neighbour pair
measures its bandwidth with `boltring.netio.probe` (one ~1 s burst, all pairs at once: in ring
order each node sends once and receives once, so no cable direction carries two probes).

Every result is a `CheckResult(node, name, status, value, hint)`; `hint` is one line telling
the user what to do. Check names:

  per node   ssh, python, boltring, mlx, chip, memory, ring_iface, ring_ip, mtu, ports,
             route:<peer>, rtt:<peer>, default_route,
             macOS only: bridge_dhcp, tb_speed, tb_loop
  "ring"     ring (reachability of every neighbour direction), mtu (only when they differ),
             ring_order (macOS only: consecutive nodes directly cabled), bw:<a>-><b>
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import secrets
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from boltring.cluster.agent import nodeprobe, probes_linux, probes_macos
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.transport import LocalTransport, Transport, TransportError

PROBE_TIMEOUT_S = 12.0
PYTHON_TIMEOUT_S = 8.0
BW_SECONDS = 1.0
BW_BYTES_LIMIT = 4 << 30
BW_CONNECT_TIMEOUT_S = 4.0
MIN_GBPS = 1.0  # below this a "Thunderbolt" link is really Wi-Fi/Ethernet or broken
SLOW_RTT_MS = 2.0  # Thunderbolt round trips are 0.1–0.5 ms; Wi-Fi is several ms
MIN_PYTHON = (3, 11)
GIB = 1 << 30

PYTHON_HINT = (
    "set python: in the config to an interpreter that has boltring installed "
    "(e.g. ~/boltring/.venv/bin/python)"
)
MLX_HINT = "pip install mlx in that python"


# -- small helpers -----------------------------------------------------------------------------


def _r(node: str, name: str, status: str, value: str | None = None, hint: str | None = None):
    return CheckResult(node=node, name=name, status=status, value=value, hint=hint)


def _version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def controller_versions() -> dict[str, str | None]:
    """boltring and mlx versions installed here (None when absent), to compare nodes against."""
    return {"boltring": _version_of("boltring"), "mlx": _version_of("mlx")}


def _gb(nbytes: int | float | None) -> str:
    if not nbytes:
        return "?"
    gb = nbytes / GIB
    return f"{gb:.0f} GB" if gb >= 10 else f"{gb:.1f} GB"


def format_gbps(gbps: float) -> str:
    return f"{gbps:.2f} Gb/s" if gbps < 1 else f"{gbps:.1f} Gb/s"


def format_ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms >= 0.01 else "<0.01 ms"


def ring_neighbours(config: Config) -> dict[str, list[Node]]:
    """For each node, the other nodes holding the ranks just before/after its ranks in ring
    order (wrapping around); a node is never its own neighbour."""
    slots = config.rank_layout()
    out: dict[str, list[Node]] = {n.name: [] for n in config.nodes}
    count = len(slots)
    for i, slot in enumerate(slots):
        for j in (i - 1, i + 1):
            other = slots[j % count].node
            mine = out[slot.node.name]
            if other.name != slot.node.name and all(o.name != other.name for o in mine):
                mine.append(other)
    return out


def ring_links(config: Config) -> list[tuple[Node, Node]]:
    """Directed node pairs (sender, receiver) the ring sends over, in ring order, deduplicated."""
    slots = config.rank_layout()
    out: list[tuple[Node, Node]] = []
    seen: set[tuple[str, str]] = set()
    for i, slot in enumerate(slots):
        nxt = slots[(i + 1) % len(slots)].node
        key = (slot.node.name, nxt.name)
        if nxt.name != slot.node.name and key not in seen:
            seen.add(key)
            out.append((slot.node, nxt))
    return out


async def _python_argv0(transport: Transport, node: Node) -> str:
    """node.python as a word to exec: a "~/…" path is expanded here, since commands run without
    a shell (locally) or with every word quoted (over SSH, where the transport resolves it)."""
    py = node.python
    if not (py == "~" or py.startswith("~/")):
        return py
    if isinstance(transport, LocalTransport):
        return os.path.expanduser(py)
    resolve = getattr(transport, "resolve", None)
    if resolve is not None:
        try:
            return await resolve(py)
        except (TransportError, NotImplementedError):
            return py
    return py


def _missing_interpreter(res_or_err) -> bool:
    if isinstance(res_or_err, TransportError):
        msg = str(res_or_err).lower()
        return "cannot run" in msg or "no such file" in msg or "not found" in msg
    return res_or_err.returncode in (126, 127)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _ssh_hint(node: Node, text: str, state: str | None = None) -> str:
    target = node.ssh or node.name
    t = (text or "").lower()
    state = state or ""
    if "changed" in t or state == "host key changed":
        return (
            f"{target}'s host key changed: if it was reinstalled, remove the old key with "
            f"`ssh-keygen -R <host>` and reconnect; otherwise stop, the connection may be intercepted"
        )
    if "host key" in t or state == "host key unknown":
        return f"run `ssh {target}` once to check and save its host key, then check again"
    if "auth" in t or "permission denied" in t or "publickey" in t or state == "auth failed":
        return f"copy your key to the node (ssh-copy-id {target}) or set identity files in the config"
    if "refused" in t:
        return (
            f"nothing accepts SSH on {target}: turn on Remote Login (System Settings > General > "
            f"Sharing) or start sshd"
        )
    if any(
        w in t
        for w in ("timed out", "timeout", "unreachable", "no route", "resolve", "name or service", "nodename")
    ):
        return f"check that {target} is on and reachable from here, then try `ssh {target}`"
    return f"try `ssh {target}` by hand to see why it fails"


# -- per node ----------------------------------------------------------------------------------


@dataclass
class NodeReport:
    node: Node
    results: list[CheckResult] = field(default_factory=list)
    facts: dict | None = None
    transport: Transport | None = None
    python: str | None = None  # argv[0] that worked
    boltring_ok: bool = False  # `-m boltring…` runs there (bandwidth probes possible)
    ring_ok: bool = False  # ring interface up and holding ring_ip

    def status(self, name: str) -> str | None:
        for r in self.results:
            if r.name == name:
                return r.status
        return None


def probe_request(config: Config, node: Node, neighbours: Iterable[Node]) -> dict:
    return {
        "ring_ip": node.ring_ip,
        "ring_iface": node.ring_iface,
        "ring_port": config.ring.port,
        "ranks": node.ranks,
        "neighbours": [{"name": n.name, "ring_ip": n.ring_ip, "port": config.ring.port} for n in neighbours],
    }


def _bootstrap_input(request: dict) -> bytes:
    sources = {
        name: Path(mod.__file__).read_text(encoding="utf-8")
        for name, mod in (
            ("probes_linux", probes_linux),
            ("probes_macos", probes_macos),
            ("nodeprobe", nodeprobe),
        )
    }
    return json.dumps({"sources": sources, "request": request}).encode()


async def _run_or_error(transport: Transport, argv: list[str], **kw):
    try:
        return await transport.run(argv, **kw)
    except TransportError as e:
        return e


async def _connect(transport, node: Node) -> tuple[Transport | None, CheckResult]:
    if transport is None:
        return None, _r(node.name, "ssh", "fail", "not connected", _ssh_hint(node, ""))
    if isinstance(transport, (str, BaseException)):
        text = str(transport)
        return None, _r(node.name, "ssh", "fail", text, _ssh_hint(node, text))
    if isinstance(transport, LocalTransport) or transport.state == "local":
        if transport.state != "local":
            await transport.connect()
        return transport, _r(node.name, "ssh", "ok", "local")
    if transport.state != "connected":
        try:
            await transport.connect()
        except TransportError as e:
            return None, _r(node.name, "ssh", "fail", str(e), _ssh_hint(node, str(e), transport.state))
    return transport, _r(node.name, "ssh", "ok", "connected")


async def probe_node(
    transport,
    config: Config,
    node: Node,
    neighbours: list[Node] | None = None,
    versions: dict[str, str | None] | None = None,
) -> NodeReport:
    """Connect check, then one nodeprobe round trip; `transport` may also be the text of the
    error that prevented connecting."""
    if neighbours is None:
        neighbours = ring_neighbours(config)[node.name]
    versions = versions if versions is not None else controller_versions()
    report = NodeReport(node=node)
    transport, ssh = await _connect(transport, node)
    report.results.append(ssh)
    report.transport = transport
    if transport is None:
        report.results += _skipped(node, neighbours, "no SSH connection")
        return report

    py = await _python_argv0(transport, node)
    request = probe_request(config, node, neighbours)
    version_res, probe_res = await asyncio.gather(
        _run_or_error(transport, [py, "-c", "import sys; print(sys.version)"], timeout=PYTHON_TIMEOUT_S),
        _run_or_error(
            transport,
            [py, "-m", "boltring.cluster.agent.nodeprobe"],
            input=json.dumps(request).encode(),
            timeout=PROBE_TIMEOUT_S,
        ),
    )

    # python
    if _missing_interpreter(version_res):
        detail = (
            str(version_res)
            if isinstance(version_res, TransportError)
            else (_last_line(version_res.stderr) or f"exit {version_res.returncode}")
        )
        report.results.append(
            _r(node.name, "python", "fail", _short(f"{node.python} not found: {detail}"), PYTHON_HINT)
        )
        report.results += _skipped(node, neighbours, "no python", include_python=False)
        return report
    if isinstance(version_res, TransportError) or not version_res.ok:
        text = (
            str(version_res)
            if isinstance(version_res, TransportError)
            else _last_line(version_res.stderr) or f"exit {version_res.returncode}"
        )
        report.results.append(_r(node.name, "python", "fail", _short(text), PYTHON_HINT))
        report.results += _skipped(node, neighbours, "no python", include_python=False)
        return report
    report.python = py
    pyver = version_res.stdout.strip().split()[0] if version_res.stdout.strip() else "?"
    try:
        major, minor = (int(x) for x in pyver.split(".")[:2])
        too_old = (major, minor) < MIN_PYTHON
    except ValueError:
        too_old = False
    if too_old:
        report.results.append(_r(node.name, "python", "fail", f"{pyver} (needs 3.11+)", PYTHON_HINT))
    else:
        report.results.append(_r(node.name, "python", "ok", pyver))

    # the probe itself (shipped as source if boltring is not installed there)
    facts = None
    if isinstance(probe_res, TransportError):
        probe_err = str(probe_res)
    else:
        facts = probe_res.last_json() if probe_res.ok else None
        probe_err = (
            None if facts else (_last_line(probe_res.stderr) or f"nodeprobe exited {probe_res.returncode}")
        )
        if (
            facts is None
            and "boltring" in (probe_res.stderr or "")
            and "No module named" in (probe_res.stderr or "")
        ):
            res2 = await _run_or_error(
                transport,
                [py, "-c", nodeprobe.BOOTSTRAP],
                input=_bootstrap_input(request),
                timeout=PROBE_TIMEOUT_S,
            )
            if not isinstance(res2, TransportError) and res2.ok:
                facts = res2.last_json()
            if facts is None:
                probe_err = (
                    str(res2) if isinstance(res2, TransportError) else (_last_line(res2.stderr) or probe_err)
                )
    if facts is None:
        report.results.append(
            _r(
                node.name,
                "probe",
                "fail",
                probe_err,
                f"run `{node.python} -m boltring.cluster.agent.nodeprobe </dev/null` on "
                f"{node.name} to see the error",
            )
        )
        report.results += _skipped(node, neighbours, "node probe failed", include_python=False)
        return report
    report.facts = facts
    report.results += node_results(config, node, facts, versions, neighbours)
    report.boltring_ok = bool((facts.get("boltring") or {}).get("installed"))
    report.ring_ok = report.status("ring_iface") != "fail" and report.status("ring_ip") != "fail"
    return report


def _skipped(
    node: Node, neighbours: list[Node], why: str, *, include_python: bool = True
) -> list[CheckResult]:
    """What could not be checked on a node, so its panel still lists every check."""
    names = (["python"] if include_python else []) + ["boltring", "mlx", "ring_iface", "ring_ip"]
    names += [f"route:{n.name}" for n in neighbours] + [f"rtt:{n.name}" for n in neighbours]
    return [_r(node.name, name, "skipped", why) for name in names]


async def check_node(transport, config: Config, node: Node) -> list[CheckResult]:
    """All per-node checks of one node (no bandwidth, no cross-node checks)."""
    report = await probe_node(transport, config, node)
    return report.results


# -- turning facts into results (pure) ---------------------------------------------------------


def node_results(
    config: Config, node: Node, facts: dict, versions: dict[str, str | None], neighbours: list[Node]
) -> list[CheckResult]:
    """Every per-node check from a nodeprobe report. Pure: tested on hand-written facts."""
    n = node.name
    darwin = facts.get("platform") == "darwin"
    out: list[CheckResult] = []

    # boltring
    bt = facts.get("boltring") or {}
    mine = versions.get("boltring")
    if not bt.get("installed"):
        out.append(
            _r(
                n,
                "boltring",
                "fail",
                "not installed",
                f"install boltring into that python ({node.python} -m pip install boltring) "
                f"or {PYTHON_HINT[0].lower() + PYTHON_HINT[1:]}",
            )
        )
    elif mine and bt.get("version") not in (mine, "unknown"):
        out.append(
            _r(
                n,
                "boltring",
                "warn",
                f"{bt.get('version')} (controller {mine})",
                f"install the same boltring on every node: {node.python} -m pip install boltring=={mine}",
            )
        )
    else:
        out.append(_r(n, "boltring", "ok", bt.get("version")))

    # mlx
    mx = facts.get("mlx") or {}
    if mx.get("error"):
        out.append(
            _r(
                n,
                "mlx",
                "fail",
                _short(mx["error"]),
                f"{MLX_HINT} ({node.python} -m pip install {'mlx' if darwin else 'mlx[cpu]'})",
            )
        )
    else:
        ver = mx.get("version") or "unknown"
        mine = versions.get("mlx")
        if mine and ver not in (mine, "unknown"):
            out.append(
                _r(
                    n,
                    "mlx",
                    "warn",
                    f"{ver} (controller {mine})",
                    f"use the same mlx everywhere: {node.python} -m pip install mlx=={mine}",
                )
            )
        elif darwin and mx.get("metal") is False:
            out.append(
                _r(
                    n,
                    "mlx",
                    "warn",
                    f"{ver}, no Metal GPU",
                    "mlx cannot see the GPU: run on Apple Silicon with a native (arm64) python",
                )
            )
        else:
            out.append(_r(n, "mlx", "ok", ver))

    # chip & memory
    hw = facts.get("hardware") or {}
    chip = hw.get("chip")
    if hw.get("error") and not chip:
        out.append(_r(n, "chip", "warn", _short(hw["error"]), None))
    elif node.chip and chip and node.chip.lower() not in chip.lower():
        out.append(
            _r(
                n,
                "chip",
                "warn",
                f"{chip} (config says {node.chip})",
                f"set chip: {chip!r} for {n} in the config",
            )
        )
    else:
        out.append(_r(n, "chip", "ok", chip or "unknown"))
    mem = facts.get("memory") or {}
    total, avail = mem.get("total_bytes"), mem.get("available_bytes")
    if not total:
        out.append(_r(n, "memory", "warn", _short(mem.get("error") or "unknown")))
    else:
        value = f"{_gb(total)} ({_gb(avail)} free)" if avail is not None else _gb(total)
        if node.memory_gb and abs(total / GIB - node.memory_gb) > 0.1 * node.memory_gb + 1:
            out.append(
                _r(
                    n,
                    "memory",
                    "warn",
                    f"{value}, config says {node.memory_gb:g} GB",
                    f"set memory_gb: {round(total / GIB)} for {n} in the config",
                )
            )
        elif avail is not None and (avail < 2 * GIB or avail < 0.1 * total):
            out.append(
                _r(
                    n,
                    "memory",
                    "warn",
                    value,
                    f"little memory is free on {n}: close other programs, or training will swap",
                )
            )
        else:
            out.append(_r(n, "memory", "ok", value))

    # ring interface, address, MTU
    ifs = facts.get("interfaces") or {}
    out += _iface_results(node, ifs, darwin)
    ring_iface = ifs.get("ring_iface")

    # ports the ranks will listen on
    ports = facts.get("ports") or {}
    busy = [p for p, state in ports.items() if state != "free"]
    if ports and ifs.get("holder"):
        if busy:
            out.append(
                _r(
                    n,
                    "ports",
                    "warn",
                    f"{', '.join(busy)} in use ({ports[busy[0]]})",
                    "a previous run may still be alive: `boltring kill`, or change ring: port:",
                )
            )
        else:
            out.append(_r(n, "ports", "ok", ", ".join(ports)))

    # routes and round trips to each ring neighbour
    names = ifs.get("names") or {}
    by_ip = {x["ring_ip"]: x for x in facts.get("neighbours") or []}
    for peer in neighbours:
        info = by_ip.get(peer.ring_ip) or {}
        route = info.get("route") or {"error": "not probed"}
        out.append(
            _route_result(
                node,
                peer,
                route,
                ring_iface,
                names,
                darwin,
                iface_down=bool(ifs.get("exists")) and not ifs.get("up"),
            )
        )
        if route.get("error"):
            out.append(_r(n, f"rtt:{peer.name}", "skipped", "no route"))
        else:
            out.append(_rtt_result(node, peer, info.get("ping") or {"error": "not probed"}))

    # default route (mostly a macOS pitfall: Thunderbolt Bridge taking it)
    out.append(_default_route_result(node, facts, ring_iface, darwin))

    if darwin:
        mac = facts.get("macos") or {}
        out.append(_bridge_dhcp_result(node, ifs, mac))
        out.append(_tb_speed_result(node, mac, chip, ifs))
    return out


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iface_results(node: Node, ifs: dict, darwin: bool) -> list[CheckResult]:
    n, ip = node.name, node.ring_ip
    if ifs.get("error"):
        return [
            _r(
                n,
                "ring_iface",
                "fail",
                _short(ifs["error"]),
                "the node's interfaces could not be read; run `ifconfig`/`ip addr` there",
            ),
            _r(n, "ring_ip", "skipped", "interfaces unknown"),
        ]
    name = ifs.get("ring_iface")
    holder = ifs.get("holder")
    others = {k: v for k, v in (ifs.get("all") or {}).items() if v.get("addresses")}
    out: list[CheckResult] = []
    if name is None:
        hint = (
            f"give the Thunderbolt Bridge the ring address: sudo networksetup -setmanual "
            f'"Thunderbolt Bridge" {ip} 255.255.255.0'
            if darwin
            else f"assign {ip} to the ring interface (sudo ip addr add {ip}/24 dev IFACE) "
            f"or set ring_iface: in the config"
        )
        return [
            _r(n, "ring_iface", "fail", f"no interface holds {ip}", hint),
            _r(n, "ring_ip", "fail", f"{ip} is on no interface", hint),
        ]
    if not ifs.get("exists"):
        choices = ", ".join(sorted(others)) or "none with an address"
        out.append(
            _r(
                n,
                "ring_iface",
                "fail",
                f"{name} does not exist",
                f"set ring_iface: for {n} to a real interface ({choices})"
                if ifs.get("resolved_by") == "config"
                else "turn on Thunderbolt Bridge in System Settings > Network",
            )
        )
        out.append(_r(n, "ring_ip", "skipped", f"{name} missing"))
        return out
    members = ifs.get("members") or []
    active = [m for m in members if (ifs.get("member_status") or {}).get(m) in ("active", None)]
    if not ifs.get("up"):
        state = ifs.get("status") or ("down" if not ifs.get("admin_up") else "no carrier")
        if darwin:
            hint = (
                f"plug in the Thunderbolt cable(s) and bring it up: sudo ifconfig {name} up"
                if members or name.startswith("bridge")
                else f"sudo ifconfig {name} up, and check the cable"
            )
        else:
            hint = f"bring it up: sudo ip link set {name} up (and check the cable or peer)"
        state = str(state).lower()
        out.append(
            _r(n, "ring_iface", "fail", f"{name} is down" + (f" ({state})" if state != "down" else ""), hint)
        )
    else:
        extra = f" ({', '.join(active)})" if active else ""
        out.append(_r(n, "ring_iface", "ok", f"{name} up{extra}"))
    addrs = ifs.get("addresses") or []
    if holder == name:
        out.append(_r(n, "ring_ip", "ok", f"{ip} on {name}"))
    elif holder:
        out.append(
            _r(
                n,
                "ring_ip",
                "fail",
                f"{ip} is on {holder}, not {name}",
                f"set ring_iface: {holder} for {n}, or move {ip} to {name}",
            )
        )
    else:
        held = ", ".join(addrs) if addrs else "no IPv4 address"
        if darwin:
            hint = f'set it: sudo networksetup -setmanual "Thunderbolt Bridge" {ip} 255.255.255.0' + (
                f" (or set ring_ip: {addrs[0]} in the config)" if addrs else ""
            )
        else:
            hint = f"set it: sudo ip addr add {ip}/24 dev {name}" + (
                f" (or set ring_ip: {addrs[0]} in the config)" if addrs else ""
            )
        out.append(_r(n, "ring_ip", "fail", f"{name} holds {held}, not {ip}", hint))
    mtu = ifs.get("mtu")
    if mtu and mtu < 1500:
        fix = f"sudo ifconfig {name} mtu 1500" if darwin else f"sudo ip link set {name} mtu 1500"
        out.append(_r(n, "mtu", "warn", str(mtu), f"raise the MTU to at least 1500: {fix}"))
    elif mtu:
        out.append(_r(n, "mtu", "ok", str(mtu)))
    return out


def _describe_iface(iface: str, names: dict) -> str:
    kind = names.get(iface)
    return f"{iface} ({kind})" if kind else iface


def _route_result(
    node: Node,
    peer: Node,
    route: dict,
    ring_iface: str | None,
    names: dict,
    darwin: bool,
    iface_down: bool = False,
) -> CheckResult:
    n, name = node.name, f"route:{peer.name}"
    if route.get("error"):
        if iface_down and ring_iface:
            hint = f"{ring_iface} is down on {n}: bring it up first (see the ring_iface check)"
        else:
            hint = (
                f"put {n} and {peer.name} ring addresses in one subnet on the ring interface "
                f"and check the cable"
            )
        return _r(n, name, "fail", f"no route to {peer.name} ({peer.ring_ip})", hint)
    iface = route.get("iface")
    loopback = iface in ("lo", "lo0")
    if loopback and ring_iface not in ("lo", "lo0") and not (node.local and peer.local):
        return _r(
            n,
            name,
            "fail",
            f"{peer.ring_ip} ({peer.name}) is an address of {n} itself",
            f"every node needs its own ring_ip: fix {peer.name}'s or {n}'s ring_ip in the config",
        )
    if ring_iface and iface != ring_iface and not (loopback and node.local and peer.local):
        pin = (
            f"sudo route change {peer.ring_ip} -interface {ring_iface}"
            if darwin
            else f"sudo ip route replace {peer.ring_ip}/32 dev {ring_iface}"
        )
        return _r(
            n,
            name,
            "fail",
            f"traffic to {peer.name} would go over {_describe_iface(iface, names)}, not {ring_iface}",
            f"give the ring interfaces a subnet no other interface uses, or pin the route: {pin}",
        )
    if route.get("gateway") and not str(route["gateway"]).startswith("link#"):
        return _r(
            n,
            name,
            "warn",
            f"via {iface} through gateway {route['gateway']}",
            f"{n} and {peer.name} are not in one subnet: give ring addresses one subnet (e.g. 10.10.0.x/24)",
        )
    return _r(n, name, "ok", f"via {iface}")


def _rtt_result(node: Node, peer: Node, ping: dict) -> CheckResult:
    n, name = node.name, f"rtt:{peer.name}"
    if ping.get("missing"):
        return _r(
            n,
            name,
            "skipped",
            "ping not found",
            "install ping (iputils-ping) on the node to measure round trips",
        )
    if ping.get("error"):
        return _r(
            n,
            name,
            "warn",
            _short(ping["error"], 80),
            f"could not ping {peer.name} at {peer.ring_ip}: check its cable and address",
        )
    if not ping.get("received"):
        return _r(
            n,
            name,
            "warn",
            "no reply",
            f"{peer.name} does not answer ping at {peer.ring_ip}: check the cable and address "
            f"(a firewall in stealth mode also drops pings)",
        )
    avg = ping.get("avg_ms")
    value = format_ms(avg) if avg is not None else "?"
    if ping.get("loss_pct"):
        return _r(
            n,
            name,
            "warn",
            f"{value}, {ping['loss_pct']:g}% lost",
            f"packets to {peer.name} are lost: reseat or replace the cable",
        )
    if avg is not None and avg > SLOW_RTT_MS:
        return _r(
            n,
            name,
            "warn",
            value,
            "Thunderbolt round trips take 0.1-0.5 ms: this link looks like Wi-Fi/Ethernet "
            "or a congested path",
        )
    return _r(n, name, "ok", value)


def _default_route_result(node: Node, facts: dict, ring_iface: str | None, darwin: bool) -> CheckResult:
    n = node.name
    if darwin:
        mac = facts.get("macos") or {}
        bridge = (facts.get("interfaces") or {}).get("bridge_device")
        suspects = {x for x in (ring_iface, bridge) if x}
        primary = mac.get("default_route") or {}
        routes = (mac.get("routes") or {}).get("routes") or []
        defaults = probes_macos.default_routes(routes)
        hint = (
            'remove the Router from "Thunderbolt Bridge" (sudo networksetup -setmanual '
            '"Thunderbolt Bridge" IP MASK with no router) and keep Wi-Fi/Ethernet first in the '
            "service order"
        )
        if primary.get("iface") in suspects:
            return _r(n, "default_route", "warn", f"default route goes over {primary['iface']}", hint)
        unscoped = [d for d in defaults if not d["scoped"] and d["iface"] in suspects]
        if unscoped:
            return _r(n, "default_route", "warn", f"{unscoped[0]['iface']} holds a default route", hint)
        if primary.get("iface"):
            return _r(n, "default_route", "ok", f"via {primary['iface']}")
        return _r(n, "default_route", "ok", "none")
    routes = ((facts.get("linux") or {}).get("default_routes") or {}).get("routes") or []
    bad = [r for r in routes if ring_iface and r.get("iface") == ring_iface and ring_iface != "lo"]
    if bad:
        return _r(
            n,
            "default_route",
            "warn",
            f"default route goes over {ring_iface}",
            f"remove it: sudo ip route del default dev {ring_iface}",
        )
    return _r(n, "default_route", "ok", f"via {routes[0]['iface']}" if routes else "none")


def _bridge_dhcp_result(node: Node, ifs: dict, mac: dict) -> CheckResult:
    n, ip = node.name, node.ring_ip
    bridge = ifs.get("bridge_device")
    if not bridge:
        return _r(n, "bridge_dhcp", "skipped", "no Thunderbolt Bridge")
    info = mac.get("bridge_service") or {}
    hint = f'give it a fixed address: sudo networksetup -setmanual "Thunderbolt Bridge" {ip} 255.255.255.0'
    addrs = (ifs.get("all") or {}).get(bridge, {}).get("addresses") or []
    self_assigned = [a for a in addrs if probes_macos.is_self_assigned(a)]
    if self_assigned:
        return _r(n, "bridge_dhcp", "warn", f"{bridge} has self-assigned {self_assigned[0]}", hint)
    if info.get("error"):
        return _r(n, "bridge_dhcp", "skipped", _short(info["error"], 80))
    config = info.get("config")
    if config in ("dhcp", "bootp"):
        return _r(
            n,
            "bridge_dhcp",
            "warn",
            f"Thunderbolt Bridge uses {config.upper()}",
            hint + " (DHCP addresses change after reboots)",
        )
    return _r(n, "bridge_dhcp", "ok", config or "unknown")


def _tb_speed_result(node: Node, mac: dict, chip: str | None, ifs: dict) -> CheckResult:
    n = node.name
    tb = mac.get("thunderbolt") or {}
    if tb.get("error"):
        return _r(n, "tb_speed", "skipped", _short(tb["error"], 80))
    ports = tb.get("ports") or []
    linked = [p for p in ports if p.get("connected") and p.get("peers")]
    if not linked:
        ring_iface = ifs.get("ring_iface") or ""
        tb_devs = set((ifs.get("thunderbolt_devices") or {}).values()) | {ifs.get("bridge_device")}
        if ring_iface in tb_devs:
            return _r(
                n,
                "tb_speed",
                "warn",
                "no Thunderbolt cable connected",
                "connect this Mac to its ring neighbours with Thunderbolt cables",
            )
        return _r(n, "tb_speed", "skipped", "no Thunderbolt peers")
    cap = probes_macos.port_capability_gbps(ports, chip)
    speeds = [p.get("speed_gbps") for p in linked]
    value = ", ".join(
        f"port {p.get('port')}: {format_gbps(p['speed_gbps']) if p.get('speed_gbps') else '?'}"
        for p in linked
    )
    slow = [p for p in linked if p.get("speed_gbps") and p["speed_gbps"] < 40]
    if slow:
        return _r(
            n,
            "tb_speed",
            "warn",
            value,
            f"port {slow[0].get('port')} links at {format_gbps(slow[0]['speed_gbps'])}: use a "
            f"Thunderbolt 4/5 cable (USB-C charge cables link at USB speeds)",
        )
    if cap and cap >= 80:
        tb4 = [p for p in linked if p.get("speed_gbps") and p["speed_gbps"] < 80]
        if tb4:
            return _r(
                n,
                "tb_speed",
                "warn",
                value + " (Thunderbolt 4 on a Thunderbolt 5 Mac)",
                f"port {tb4[0].get('port')} runs at Thunderbolt 4 speed: use a Thunderbolt 5 "
                f"cable, and a Thunderbolt 5 Mac at the other end, for 80 Gb/s",
            )
    gen = probes_macos.tb_generation(max((s for s in speeds if s), default=None))
    return _r(n, "tb_speed", "ok", f"{value} ({gen})")


# -- across nodes ------------------------------------------------------------------------------


def _tb_ports(facts: dict) -> list[dict]:
    return ((facts.get("macos") or {}).get("thunderbolt") or {}).get("ports") or []


def cable_edges(reports: dict[str, dict], *, bridged_only: bool = False) -> list[tuple[str, str]]:
    """Thunderbolt cables between nodes, from each macOS node's facts: one (node, node) pair per
    cable (two cables between the same two nodes give two pairs). A cable joins two ports whose
    domain UUIDs name each other. With `bridged_only`, a cable counts only when its port is a
    Thunderbolt Bridge member on the sides we know."""
    owner: dict[str, tuple[str, dict]] = {}
    for name, facts in reports.items():
        for p in _tb_ports(facts):
            if p.get("domain_uuid"):
                owner[p["domain_uuid"]] = (name, p)

    def bridged(name: str, port: dict) -> bool:
        ifs = reports[name].get("interfaces") or {}
        dev = (ifs.get("thunderbolt_devices") or {}).get(str(port.get("port")))
        members = ifs.get("bridge_members")
        if not dev or members is None:
            return True  # unknown: assume the macOS default, every Thunderbolt port in the bridge
        return dev in members

    cables: set[frozenset[str]] = set()
    edges: list[tuple[str, str]] = []
    for name, facts in reports.items():
        for p in _tb_ports(facts):
            for peer in p.get("peers") or []:
                uuid = peer.get("domain_uuid")
                if not uuid or uuid not in owner or not p.get("domain_uuid"):
                    continue
                key = frozenset((p["domain_uuid"], uuid))
                if key in cables:
                    continue
                cables.add(key)
                other, other_port = owner[uuid]
                if other == name:
                    continue
                if bridged_only and not (bridged(name, p) and bridged(other, other_port)):
                    continue
                edges.append((name, other))
    return edges


def cabling_order(nodes: list[str], edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """An order of all `nodes` in which each consecutive pair is joined by a cable: a cycle
    (the last node cabled back to the first) when there is one among 3+ nodes, else a path.
    Starts from the first node when it can (stable for a config already in cable order),
    tries neighbours in `nodes` order. None when the cables allow no such order (including a
    node with no cable at all). Plain search: clusters have 2-8 nodes."""
    nodes = list(nodes)
    if len(nodes) <= 1:
        return nodes
    index = {n: i for i, n in enumerate(nodes)}
    adj: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        if a in adj and b in adj and a != b:
            adj[a].add(b)
            adj[b].add(a)
    if any(not adj[n] for n in nodes):
        return None

    def search(path: list[str], seen: set[str], cycle: bool) -> list[str] | None:
        if len(path) == len(nodes):
            return path if not cycle or path[0] in adj[path[-1]] else None
        for nxt in sorted(adj[path[-1]] - seen, key=index.__getitem__):
            seen.add(nxt)
            found = search(path + [nxt], seen, cycle)
            if found:
                return found
            seen.discard(nxt)
        return None

    if len(nodes) >= 3:
        found = search([nodes[0]], {nodes[0]}, cycle=True)
        if found:
            return found
    for start in nodes:
        found = search([start], {start}, cycle=False)
        if found:
            return found
    return None


def uncabled_pairs(nodes: list[str], edges: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive pairs of `nodes` (no wrap-around) with no cable between them."""
    cabled = {frozenset(e) for e in edges}
    return [(a, b) for a, b in zip(nodes, nodes[1:], strict=False) if frozenset((a, b)) not in cabled]


def tb_loops(reports: dict[str, dict]) -> dict[str, str]:
    """Nodes whose Thunderbolt cables form a loop through Thunderbolt Bridge, from each macOS
    node's facts: {node: description}. Cables count when their ports are bridge members on the
    sides we know (`cable_edges`). In the multigraph of counted cables, a connected part with as
    many cables as nodes has a loop."""
    edges = cable_edges(reports, bridged_only=True)

    parent = {name: name for name in reports}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    comp_nodes: dict[str, list[str]] = {}
    comp_edges: dict[str, int] = {}
    for name in reports:
        comp_nodes.setdefault(find(name), []).append(name)
    for a, _ in edges:
        comp_edges[find(a)] = comp_edges.get(find(a), 0) + 1
    out: dict[str, str] = {}
    for root, members in comp_nodes.items():
        if comp_edges.get(root, 0) >= len(members) and len(members) >= 2:
            desc = f"cables between {', '.join(sorted(members))} form a loop through Thunderbolt Bridge"
            for m in members:
                out[m] = desc
    return out


TB_LOOP_HINT = (
    "a cable loop with Thunderbolt Bridge on floods the network: remove one cable, or take "
    "the Thunderbolt ports out of the bridge and give each cable its own subnet "
    "(mlx.distributed_config --over thunderbolt --auto-setup)"
)


def all_report_tb_ports(names: list[str], facts: dict[str, dict]) -> bool:
    """Every named node reported its Thunderbolt ports (macOS facts), so its cables are known."""
    return all("ports" in (((facts.get(n) or {}).get("macos") or {}).get("thunderbolt") or {}) for n in names)


def ring_order_result(config: Config, facts: dict[str, dict]) -> CheckResult | None:
    """Does the ring (config order) follow the Thunderbolt cables? None unless every node
    reported its Thunderbolt ports (macOS) and there are 2+ nodes."""
    names = [n.name for n in config.nodes]
    if len(names) < 2 or not all_report_tb_ports(names, facts):
        return None
    edges = cable_edges({n: facts[n] for n in names})
    missing = uncabled_pairs(names, edges)
    if not missing:
        return _r("ring", "ring_order", "ok", "follows the cables")
    order = cabling_order(names, edges)
    if order is not None and config.ring.order == "cabling":
        return _r("ring", "ring_order", "ok", f"follows the cables (order: cabling): {', '.join(order)}")
    a, b = missing[0]
    value = f"{a}→{b} has no direct cable" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
    if order is None:
        hint = (
            "no order of the nodes has a cable between each neighbour: cable them in a line "
            "or a loop (tb_loop warns when a loop goes through Thunderbolt Bridge)"
        )
    else:
        hint = (
            f"put the nodes in cable order in the config: {', '.join(order)} "
            f"(or set ring: {{order: cabling}})"
        )
    return _r("ring", "ring_order", "warn", value, hint)


def _pair_state(
    rep: NodeReport, b: Node, bw: dict[tuple[str, str], CheckResult]
) -> tuple[str, str, str | None]:
    """(verdict, reason, hint) for the direction rep.node -> b; verdict is "ok", "bad" (no
    route, or TCP failed) or "unknown" (not probed, or no ping reply and no TCP test: a Mac in
    stealth mode drops pings)."""
    a = rep.node.name
    if rep.facts is None:
        return "unknown", "not probed", None
    info = next((x for x in rep.facts.get("neighbours") or [] if x.get("ring_ip") == b.ring_ip), {})
    route = info.get("route") or {}
    if route.get("error"):
        hint = next((r.hint for r in rep.results if r.name == f"route:{b.name}"), None)
        return "bad", "no route", hint
    # A TCP transfer either way proves IP works both ways (its ACKs flow back).
    tried = [r for r in (bw.get((a, b.name)), bw.get((b.name, a))) if r is not None and r.status != "skipped"]
    if any(r.status in ("ok", "warn") or (r.value or "").endswith("Gb/s") for r in tried):
        return "ok", "", None
    ping = info.get("ping") or {}
    if ping.get("received"):
        return "ok", "", None
    if tried:
        return "bad", "no TCP", tried[0].hint
    if "received" in ping:
        return "unknown", "no reply", None
    return "unknown", "untested", None


def _ring_results(
    config: Config, reports: dict[str, NodeReport], bw: dict[tuple[str, str], CheckResult]
) -> list[CheckResult]:
    """The "ring" reachability matrix over every neighbour direction, and MTU agreement."""
    neighbours = ring_neighbours(config)
    pairs = [(a, b) for a in config.nodes for b in neighbours[a.name]]
    if not pairs:
        return []
    groups: dict[str, list[str]] = {}
    bad = 0
    first_hint = None
    for a, b in pairs:
        verdict, reason, hint = _pair_state(reports[a.name], b, bw)
        if verdict == "ok":
            continue
        groups.setdefault(reason, []).append(f"{a.name}->{b.name}")
        if verdict == "bad":
            bad += 1
            first_hint = first_hint or hint
    ok_count = len(pairs) - sum(len(v) for v in groups.values())
    order = ("no route", "no TCP", "no reply", "not probed", "untested")
    value = "; ".join(
        [f"{ok_count}/{len(pairs)} reachable"]
        + [f"{reason}: {', '.join(groups[reason])}" for reason in order if reason in groups]
    )
    out = []
    if bad:
        out.append(
            _r(
                "ring",
                "ring",
                "fail",
                value,
                first_hint or "check the cables and ring addresses of those nodes",
            )
        )
    elif groups:
        out.append(
            _r(
                "ring",
                "ring",
                "warn",
                value,
                "fix the failing node checks, then check again (no reply can also be a "
                "firewall in stealth mode)",
            )
        )
    else:
        out.append(_r("ring", "ring", "ok", value))
    mtus = {
        name: rep.facts["interfaces"]["mtu"]
        for name, rep in reports.items()
        if rep.facts and (rep.facts.get("interfaces") or {}).get("mtu")
    }
    mismatch = [
        (a.name, b.name)
        for a, b in pairs
        if a.name in mtus and b.name in mtus and mtus[a.name] != mtus[b.name]
    ]
    if mismatch:
        a, b = mismatch[0]
        out.append(
            _r(
                "ring",
                "mtu",
                "warn",
                ", ".join(f"{k} {v}" for k, v in mtus.items()),
                f"use one MTU on every ring interface ({a} has {mtus[a]}, {b} has {mtus[b]})",
            )
        )
    return out


async def measure_bandwidth(
    a_transport: Transport,
    a: Node,
    a_python: str,
    b_transport: Transport,
    b: Node,
    b_python: str,
    port: int,
    *,
    seconds: float = BW_SECONDS,
    bytes_limit: int = BW_BYTES_LIMIT,
) -> dict:
    """Run a probe server on b (bound to b's ring address) and a sender on a; both prove a fresh
    secret passed on stdin. Returns the sender's JSON ({"gbps", ...} or {"error"})."""
    secret = secrets.token_hex(32)
    job = f"bw-{secrets.token_hex(4)}"
    accept_timeout = BW_CONNECT_TIMEOUT_S + 2.0
    serve_argv = [
        b_python,
        "-m",
        "boltring.netio.probe",
        "serve",
        "--bind",
        b.ring_ip,
        "--port",
        str(port),
        "--seconds",
        f"{seconds:g}",
        "--accept-timeout",
        f"{accept_timeout:g}",
        "--job",
        job,
    ]
    send_argv = [
        a_python,
        "-m",
        "boltring.netio.probe",
        "send",
        "--to",
        f"{b.ring_ip}:{port}",
        "--seconds",
        f"{seconds:g}",
        "--bytes-limit",
        str(bytes_limit),
        "--connect-timeout",
        f"{BW_CONNECT_TIMEOUT_S:g}",
        "--job",
        job,
    ]
    limit = accept_timeout + seconds * 3 + 15
    server = asyncio.create_task(
        _run_or_error(b_transport, serve_argv, input=(secret + "\n").encode(), timeout=limit)
    )
    await asyncio.sleep(0.05)
    sender = await _run_or_error(a_transport, send_argv, input=(secret + "\n").encode(), timeout=limit)
    srv = await server
    result = None if isinstance(sender, TransportError) else sender.last_json()
    srv_json = None if isinstance(srv, TransportError) else srv.last_json()
    if result and "gbps" in result:
        return result
    # prefer the server's reason when it never got going (e.g. could not bind)
    if srv_json and srv_json.get("error") and (srv_json.get("code") == 2 or not result):
        return {"error": f"{b.name}: {srv_json['error']}"}
    if result and result.get("error"):
        return {"error": result["error"]}
    if isinstance(sender, TransportError):
        return {"error": str(sender)}
    return {"error": _last_line(sender.stderr) or f"probe exited {sender.returncode}"}


def _bw_result(a: Node, b: Node, res: dict, min_gbps: float) -> CheckResult:
    name = f"bw:{a.name}->{b.name}"
    if "gbps" not in res:
        return _r(
            "ring",
            name,
            "fail",
            _short(res.get("error", "failed"), 100),
            f"{a.name} cannot send to {b.name} at {b.ring_ip}: check route:{b.name} on "
            f"{a.name} and any firewall on {b.name}",
        )
    gbps = float(res["gbps"])
    if gbps < min_gbps:
        return _r(
            "ring",
            name,
            "fail",
            format_gbps(gbps),
            f"{a.name}->{b.name} moves only {format_gbps(gbps)} (Thunderbolt gives 10-40+): "
            f"check the cable and that the route goes over the ring interface",
        )
    return _r("ring", name, "ok", format_gbps(gbps))


def _relative_bw(results: list[CheckResult], gbps: dict[str, float]) -> list[CheckResult]:
    """Warn about a link far slower than the others (once absolute checks passed)."""
    if len(gbps) < 3:
        return results
    out = []
    for r in results:
        if r.status == "ok" and r.name in gbps:
            others = [v for k, v in gbps.items() if k != r.name]
            med = statistics.median(others)
            if gbps[r.name] < 0.5 * med:
                r = _r(
                    r.node,
                    r.name,
                    "warn",
                    f"{r.value} (others ~{format_gbps(med)})",
                    "this link is much slower than the others: check its cable and route",
                )
        out.append(r)
    return out


async def check_cluster(
    config: Config,
    transports,
    *,
    bandwidth: bool = True,
    bandwidth_seconds: float = BW_SECONDS,
    min_gbps: float = MIN_GBPS,
    check_ports: bool = True,
    on_result: Callable[[CheckResult], None] | None = None,
    emit: Callable[[CheckResult], None] | None = None,
    facts_out: dict[str, dict] | None = None,
) -> list[CheckResult]:
    """Every check on every node (concurrently), then across nodes: Thunderbolt loops, ring
    reachability, MTU agreement and (with `bandwidth`) one bandwidth burst per ring link.

    `transports` maps node name to a Transport (connected, or connected here) or to the text of
    the error that kept it from connecting; an object with `async connect(node) -> Transport`
    (the JobController) works too. `on_result` (alias `emit`) sees each result as soon as it
    exists, node by node, for live panels. While a job runs, pass bandwidth=False (the probe
    would compete with the ring) and check_ports=False (the ranks hold the ring ports).
    `facts_out`, when given, is filled with {node: facts} for every node that was probed."""
    emit_fn = on_result or emit or (lambda r: None)
    versions = controller_versions()
    neighbours = ring_neighbours(config)

    async def transport_for(node: Node):
        if isinstance(transports, Mapping):
            tr = transports.get(node.name)
            return LocalTransport(node) if tr is None and node.local else tr
        try:
            return await transports.connect(node)
        except TransportError as e:
            return str(e)

    async def one(node: Node) -> NodeReport:
        rep = await probe_node(await transport_for(node), config, node, neighbours[node.name], versions)
        if not check_ports:
            rep.results = [r for r in rep.results if r.name != "ports"]
        for r in rep.results:
            emit_fn(r)
        return rep

    reps = await asyncio.gather(*(one(n) for n in config.nodes))
    reports = {r.node.name: r for r in reps}
    if facts_out is not None:
        facts_out.update({name: rep.facts for name, rep in reports.items() if rep.facts})

    # Thunderbolt loops (macOS nodes that reported their ports)
    mac_facts = {
        name: rep.facts
        for name, rep in reports.items()
        if rep.facts
        and rep.facts.get("platform") == "darwin"
        and "ports" in ((rep.facts.get("macos") or {}).get("thunderbolt") or {})
    }
    if mac_facts:
        loops = tb_loops(mac_facts)
        for name in mac_facts:
            r = (
                _r(name, "tb_loop", "warn", loops[name], TB_LOOP_HINT)
                if name in loops
                else _r(name, "tb_loop", "ok", "no loop")
            )
            reports[name].results.append(r)
            emit_fn(r)

    bw_results: dict[tuple[str, str], CheckResult] = {}
    if bandwidth:
        links = ring_links(config)

        async def bw(i: int, a: Node, b: Node) -> tuple[tuple[str, str], CheckResult]:
            ra, rb = reports[a.name], reports[b.name]
            why = None
            for rep in (ra, rb):
                if rep.transport is None or rep.python is None:
                    why = f"{rep.node.name} not reachable"
                elif not rep.boltring_ok:
                    why = f"boltring missing on {rep.node.name}"
                elif not rep.ring_ok:
                    why = f"{rep.node.name} ring interface not ready"
                if why:
                    break
            if why:
                return (a.name, b.name), _r("ring", f"bw:{a.name}->{b.name}", "skipped", why)
            port = config.ring.port - 1 - (i % 64)
            res = await measure_bandwidth(
                ra.transport, a, ra.python, rb.transport, b, rb.python, port, seconds=bandwidth_seconds
            )
            return (a.name, b.name), _bw_result(a, b, res, min_gbps)

        done = await asyncio.gather(*(bw(i, a, b) for i, (a, b) in enumerate(links)))
        measured = {
            r.name: float(r.value.split()[0])
            for _, r in done
            if r.status == "ok" and r.value and r.value.endswith("Gb/s")
        }
        adjusted = _relative_bw([r for _, r in done], measured)
        bw_results = {key: r for (key, _), r in zip(done, adjusted, strict=False)}

    ring = _ring_results(config, reports, bw_results)
    order = ring_order_result(config, {name: rep.facts for name, rep in reports.items() if rep.facts})
    if order is not None:
        ring.append(order)
    for r in ring:
        emit_fn(r)
    for r in bw_results.values():
        emit_fn(r)
    results: list[CheckResult] = []
    for node in config.nodes:
        results += reports[node.name].results
    return results + ring + list(bw_results.values())


def summarize(results: Iterable[CheckResult]) -> tuple[int, int, int]:
    """(ok, warn, fail) counts; skipped results are not counted."""
    ok = warn = fail = 0
    for r in results:
        if r.status == "ok":
            ok += 1
        elif r.status == "warn":
            warn += 1
        elif r.status == "fail":
            fail += 1
    return ok, warn, fail


def exit_code(results: Iterable[CheckResult]) -> int:
    """1 if any check failed, else 0 (warnings do not fail `boltring check`)."""
    return 1 if any(r.status == "fail" for r in results) else 0
