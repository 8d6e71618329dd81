"""Per-node network verdicts (pure): the ring interface and its address and MTU, the route and
round trip to each ring neighbour, the default route, and on macOS the Thunderbolt Bridge's DHCP and
the Thunderbolt link speed. Facts in (`NodeFacts` parts), `CheckResult`s out; tested on
hand-written facts and on facts assembled from the macOS samples."""

from __future__ import annotations

from boltring.cluster.agent import probes_macos
from boltring.cluster.agent.facts import InterfaceFacts, MacosFacts, NodeFacts, PingFacts, RouteFacts
from boltring.cluster.config.schema import Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks.results import format_gbps, format_ms, result, short
from boltring.cluster.states import CheckStatus

SLOW_RTT_MS = 2.0  # Thunderbolt round trips are 0.1–0.5 ms; Wi-Fi is several ms


def iface_results(node: Node, ifs: InterfaceFacts, darwin: bool) -> list[CheckResult]:
    n, ip = node.name, node.ring_ip
    if ifs.get("error"):
        return [
            result(
                n,
                "ring_iface",
                CheckStatus.FAIL,
                short(ifs["error"]),
                "the node's interfaces could not be read; run `ifconfig`/`ip addr` there",
            ),
            result(n, "ring_ip", CheckStatus.SKIPPED, "interfaces unknown"),
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
            result(n, "ring_iface", CheckStatus.FAIL, f"no interface holds {ip}", hint),
            result(n, "ring_ip", CheckStatus.FAIL, f"{ip} is on no interface", hint),
        ]
    if not ifs.get("exists"):
        choices = ", ".join(sorted(others)) or "none with an address"
        out.append(
            result(
                n,
                "ring_iface",
                CheckStatus.FAIL,
                f"{name} does not exist",
                f"set ring_iface: for {n} to a real interface ({choices})"
                if ifs.get("resolved_by") == "config"
                else "turn on Thunderbolt Bridge in System Settings > Network",
            )
        )
        out.append(result(n, "ring_ip", CheckStatus.SKIPPED, f"{name} missing"))
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
            result(
                n,
                "ring_iface",
                CheckStatus.FAIL,
                f"{name} is down" + (f" ({state})" if state != "down" else ""),
                hint,
            )
        )
    else:
        extra = f" ({', '.join(active)})" if active else ""
        out.append(result(n, "ring_iface", CheckStatus.OK, f"{name} up{extra}"))
    addrs = ifs.get("addresses") or []
    if holder == name:
        out.append(result(n, "ring_ip", CheckStatus.OK, f"{ip} on {name}"))
    elif holder:
        out.append(
            result(
                n,
                "ring_ip",
                CheckStatus.FAIL,
                f"{ip} is on {holder}, not {name}",
                f"set ring_iface: {holder} for {n}, or move {ip} to {name}",
            )
        )
    else:
        held = ", ".join(addrs) if addrs else "no IPv4 address"
        if darwin:
            # networksetup names the service, not the device: en1's is "Thunderbolt 1", and the
            # bridge's "Thunderbolt Bridge" (setting the bridge's would not put ip on en1)
            service = (ifs.get("names") or {}).get(name) or "Thunderbolt Bridge"
            hint = f'set it: sudo networksetup -setmanual "{service}" {ip} 255.255.255.0' + (
                f" (or set ring_ip: {addrs[0]} in the config)" if addrs else ""
            )
        else:
            hint = f"set it: sudo ip addr add {ip}/24 dev {name}" + (
                f" (or set ring_ip: {addrs[0]} in the config)" if addrs else ""
            )
        out.append(result(n, "ring_ip", CheckStatus.FAIL, f"{name} holds {held}, not {ip}", hint))
    mtu = ifs.get("mtu")
    if mtu and mtu < 1500:
        fix = f"sudo ifconfig {name} mtu 1500" if darwin else f"sudo ip link set {name} mtu 1500"
        out.append(result(n, "mtu", CheckStatus.WARN, str(mtu), f"raise the MTU to at least 1500: {fix}"))
    elif mtu:
        out.append(result(n, "mtu", CheckStatus.OK, str(mtu)))
    return out


def _describe_iface(iface: str | None, names: dict[str, str]) -> str:
    kind = names.get(iface or "")
    return f"{iface} ({kind})" if kind else str(iface)


def _through_gateway(route: RouteFacts) -> bool:
    """The route goes to a router, not straight down the link ("link#N" is the link itself)."""
    return bool(route.get("gateway")) and not str(route["gateway"]).startswith("link#")


def _other_thunderbolt(iface: str | None, names: dict[str, str]) -> bool:
    """The route leaves over a Thunderbolt interface (macOS) other than the ring interface: a ring
    of cables with a route per neighbour, the layout ring.directions auto turns into 2
    (directions_from_routes: separate interfaces to the two neighbours). The node holds its ring
    address on one port and reaches this neighbour down another port's cable; the address is the
    node's whichever port a packet comes in on."""
    return probes_macos.is_thunderbolt_port(names.get(iface or ""))


def _pin_hint(peer: Node, ring_iface: str, ifs: InterfaceFacts, darwin: bool) -> str:
    """How to send the traffic to `peer` over the ring interface. With the ring address on one
    Thunderbolt port (not the bridge), each cable reaches one Mac and this node alone cannot
    tell which port's cable reaches `peer`: every port that is up is named, the ring's too."""
    pin = "give the ring interfaces a subnet no other interface uses, or pin the route: "
    if not darwin:
        return pin + f"sudo ip route replace {peer.ring_ip}/32 dev {ring_iface}"
    up = {name for name, info in (ifs.get("all") or {}).items() if info.get("up")}
    ports = [d for d in (ifs.get("thunderbolt_devices") or {}).values() if d in up]
    if ring_iface not in ports:
        return pin + f"sudo route change {peer.ring_ip} -interface {ring_iface}"
    pins = " or ".join(f"`sudo route -n add -host {peer.ring_ip} -interface {d}`" for d in ports)
    return f"route {peer.name} over the Thunderbolt port whose cable reaches it: {pins}"


def route_result(node: Node, peer: Node, route: RouteFacts, ifs: InterfaceFacts, darwin: bool) -> CheckResult:
    n, name = node.name, f"route:{peer.name}"
    ring_iface = ifs.get("ring_iface")
    names = ifs.get("names") or {}
    if route.get("error"):
        if ifs.get("exists") and not ifs.get("up") and ring_iface:
            hint = f"{ring_iface} is down on {n}: bring it up first (see the ring_iface check)"
        else:
            hint = (
                f"put {n} and {peer.name} ring addresses in one subnet on the ring interface "
                f"and check the cable"
            )
        return result(n, name, CheckStatus.FAIL, f"no route to {peer.name} ({peer.ring_ip})", hint)
    iface = route.get("iface")
    loopback = iface in ("lo", "lo0")
    if loopback and ring_iface not in ("lo", "lo0") and not (node.local and peer.local):
        return result(
            n,
            name,
            CheckStatus.FAIL,
            f"{peer.ring_ip} ({peer.name}) is an address of {n} itself",
            f"every node needs its own ring_ip: fix {peer.name}'s or {n}'s ring_ip in the config",
        )
    local_pair = loopback and node.local and peer.local
    if ring_iface and iface != ring_iface and not local_pair and not _other_thunderbolt(iface, names):
        return result(
            n,
            name,
            CheckStatus.FAIL,
            f"traffic to {peer.name} would go over {_describe_iface(iface, names)}, not {ring_iface}",
            _pin_hint(peer, ring_iface, ifs, darwin),
        )
    if _through_gateway(route):
        return result(
            n,
            name,
            CheckStatus.WARN,
            f"via {iface} through gateway {route['gateway']}",
            f"{n} and {peer.name} are not in one subnet: give ring addresses one subnet (e.g. 10.10.0.x/24)",
        )
    via = iface if iface == ring_iface else _describe_iface(iface, names)  # another port: say which
    return result(n, name, CheckStatus.OK, f"via {via}")


def rtt_result(node: Node, peer: Node, ping: PingFacts) -> CheckResult:
    n, name = node.name, f"rtt:{peer.name}"
    if ping.get("missing"):
        return result(
            n,
            name,
            CheckStatus.SKIPPED,
            "ping not found",
            "install ping (iputils-ping) on the node to measure round trips",
        )
    if ping.get("error"):
        return result(
            n,
            name,
            CheckStatus.WARN,
            short(ping["error"], 80),
            f"could not ping {peer.name} at {peer.ring_ip}: check its cable and address",
        )
    if not ping.get("received"):
        return result(
            n,
            name,
            CheckStatus.WARN,
            "no reply",
            f"{peer.name} does not answer ping at {peer.ring_ip}: check the cable and address "
            f"(a firewall in stealth mode also drops pings)",
        )
    avg = ping.get("avg_ms")
    value = format_ms(avg) if avg is not None else "?"
    if ping.get("loss_pct"):
        return result(
            n,
            name,
            CheckStatus.WARN,
            f"{value}, {ping['loss_pct']:g}% lost",
            f"packets to {peer.name} are lost: reseat or replace the cable",
        )
    if avg is not None and avg > SLOW_RTT_MS:
        return result(
            n,
            name,
            CheckStatus.WARN,
            value,
            "Thunderbolt round trips take 0.1-0.5 ms: this link looks like Wi-Fi/Ethernet "
            "or a congested path",
        )
    return result(n, name, CheckStatus.OK, value)


def default_route_result(node: Node, facts: NodeFacts, ring_iface: str | None, darwin: bool) -> CheckResult:
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
            return result(
                n, "default_route", CheckStatus.WARN, f"default route goes over {primary['iface']}", hint
            )
        unscoped = [d for d in defaults if not d["scoped"] and d["iface"] in suspects]
        if unscoped:
            return result(
                n, "default_route", CheckStatus.WARN, f"{unscoped[0]['iface']} holds a default route", hint
            )
        if primary.get("iface"):
            return result(n, "default_route", CheckStatus.OK, f"via {primary['iface']}")
        return result(n, "default_route", CheckStatus.OK, "none")
    routes = ((facts.get("linux") or {}).get("default_routes") or {}).get("routes") or []
    bad = [r for r in routes if ring_iface and r.get("iface") == ring_iface and ring_iface != "lo"]
    if bad:
        return result(
            n,
            "default_route",
            CheckStatus.WARN,
            f"default route goes over {ring_iface}",
            f"remove it: sudo ip route del default dev {ring_iface}",
        )
    return result(n, "default_route", CheckStatus.OK, f"via {routes[0]['iface']}" if routes else "none")


def bridge_dhcp_result(node: Node, ifs: InterfaceFacts, mac: MacosFacts) -> CheckResult:
    n, ip = node.name, node.ring_ip
    bridge = ifs.get("bridge_device")
    if not bridge:
        return result(n, "bridge_dhcp", CheckStatus.SKIPPED, "no Thunderbolt Bridge")
    ring_iface = ifs.get("ring_iface")
    if ring_iface and ring_iface != bridge:
        # the ring is on a port of its own: how the bridge gets an address does not matter, and
        # giving it the ring address too would put one address on two interfaces
        return result(
            n, "bridge_dhcp", CheckStatus.OK, f"{bridge} not used by the ring (it is on {ring_iface})"
        )
    info = mac.get("bridge_service") or {}
    hint = f'give it a fixed address: sudo networksetup -setmanual "Thunderbolt Bridge" {ip} 255.255.255.0'
    addrs = (ifs.get("all") or {}).get(bridge, {}).get("addresses") or []
    self_assigned = [a for a in addrs if probes_macos.is_self_assigned(a)]
    if self_assigned:
        return result(
            n, "bridge_dhcp", CheckStatus.WARN, f"{bridge} has self-assigned {self_assigned[0]}", hint
        )
    if info.get("error"):
        return result(n, "bridge_dhcp", CheckStatus.SKIPPED, short(info["error"], 80))
    config = info.get("config")
    if config in ("dhcp", "bootp"):
        return result(
            n,
            "bridge_dhcp",
            CheckStatus.WARN,
            f"Thunderbolt Bridge uses {config.upper()}",
            hint + " (DHCP addresses change after reboots)",
        )
    return result(n, "bridge_dhcp", CheckStatus.OK, config or "unknown")


def tb_speed_result(node: Node, mac: MacosFacts, chip: str | None, ifs: InterfaceFacts) -> CheckResult:
    n = node.name
    tb = mac.get("thunderbolt") or {}
    if tb.get("error"):
        return result(n, "tb_speed", CheckStatus.SKIPPED, short(tb["error"], 80))
    ports = tb.get("ports") or []
    linked = [p for p in ports if p.get("connected") and p.get("peers")]
    if not linked:
        ring_iface = ifs.get("ring_iface") or ""
        tb_devs = set((ifs.get("thunderbolt_devices") or {}).values()) | {ifs.get("bridge_device")}
        if ring_iface in tb_devs:
            return result(
                n,
                "tb_speed",
                CheckStatus.WARN,
                "no Thunderbolt cable connected",
                "connect this Mac to its ring neighbours with Thunderbolt cables",
            )
        return result(n, "tb_speed", CheckStatus.SKIPPED, "no Thunderbolt peers")
    cap = probes_macos.port_capability_gbps(ports, chip)
    speeds = [p.get("speed_gbps") for p in linked]
    value = ", ".join(
        f"port {p.get('port')}: {format_gbps(p['speed_gbps']) if p.get('speed_gbps') else '?'}"
        for p in linked
    )
    slow = [p for p in linked if p.get("speed_gbps") and p["speed_gbps"] < 40]
    if slow:
        return result(
            n,
            "tb_speed",
            CheckStatus.WARN,
            value,
            f"port {slow[0].get('port')} links at {format_gbps(slow[0]['speed_gbps'])}: use a "
            f"Thunderbolt 4/5 cable (USB-C charge cables link at USB speeds)",
        )
    if cap and cap >= 80:
        tb4 = [p for p in linked if p.get("speed_gbps") and p["speed_gbps"] < 80]
        if tb4:
            return result(
                n,
                "tb_speed",
                CheckStatus.WARN,
                value + " (Thunderbolt 4 on a Thunderbolt 5 Mac)",
                f"port {tb4[0].get('port')} runs at Thunderbolt 4 speed: use a Thunderbolt 5 "
                f"cable, and a Thunderbolt 5 Mac at the other end, for 80 Gb/s",
            )
    gen = probes_macos.tb_generation(max((s for s in speeds if s), default=None))
    return result(n, "tb_speed", CheckStatus.OK, f"{value} ({gen})")
