"""Per-node verdicts (pure): a nodeprobe report (`NodeFacts`) in, `CheckResult`s out. Software
(boltring, mlx and their versions against the laptop's), hardware (chip, memory), the ring ports,
RDMA for the jaccl backend, and the network verdicts of network.py. No I/O: tested on
hand-written facts and on facts assembled from the macOS samples."""

from __future__ import annotations

from boltring.cluster.agent.facts import NodeFacts, RdmaFacts
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks import hints
from boltring.cluster.nodes.checks.network import (
    bridge_dhcp_result,
    default_route_result,
    iface_results,
    route_result,
    rtt_result,
    tb_speed_result,
)
from boltring.cluster.nodes.checks.results import GIB, gb, result, short
from boltring.cluster.states import CheckStatus

Versions = dict[str, str | None]  # "boltring" / "mlx" -> the laptop's version (None: not installed)


def node_results(
    config: Config, node: Node, facts: NodeFacts, versions: Versions, neighbours: list[Node]
) -> list[CheckResult]:
    """Every per-node check from a nodeprobe report."""
    darwin = facts.get("platform") == "darwin"
    out = [boltring_result(node, facts, versions), mlx_result(node, facts, versions, darwin)]
    out += hardware_results(node, facts)

    ifs = facts.get("interfaces") or {}
    out += iface_results(node, ifs, darwin)
    ring_iface = ifs.get("ring_iface")
    ports = ports_result(node, facts)
    if ports is not None:
        out.append(ports)

    # routes and round trips to each ring neighbour
    by_ip = {x.get("ring_ip"): x for x in facts.get("neighbours") or []}
    for peer in neighbours:
        info = by_ip.get(peer.ring_ip) or {}
        route = info.get("route") or {"error": "not probed"}
        out.append(route_result(node, peer, route, ifs, darwin))
        if route.get("error"):
            out.append(result(node.name, f"rtt:{peer.name}", CheckStatus.SKIPPED, "no route"))
        else:
            out.append(rtt_result(node, peer, info.get("ping") or {"error": "not probed"}))

    out.append(default_route_result(node, facts, ring_iface, darwin))
    if darwin:
        mac = facts.get("macos") or {}
        out.append(bridge_dhcp_result(node, ifs, mac))
        out.append(tb_speed_result(node, mac, (facts.get("hardware") or {}).get("chip"), ifs))
    if config.ring.backend == "jaccl":
        out.append(rdma_result(node, facts))
    return out


def boltring_result(node: Node, facts: NodeFacts, versions: Versions) -> CheckResult:
    n = node.name
    bt = facts.get("boltring") or {}
    mine = versions.get("boltring")
    if not bt.get("installed"):
        return result(n, "boltring", CheckStatus.FAIL, "not installed", hints.install_boltring_hint(node))
    if bt.get("version") in (None, "unknown"):
        # code without package metadata (a checkout on PYTHONPATH): it may be any version, and
        # the ranks speak the laptop's protocol only if it is the laptop's
        return result(
            n,
            "boltring",
            CheckStatus.WARN,
            "version unknown (no package metadata)",
            hints.install_boltring_hint(node),
        )
    if mine and bt.get("version") != mine:
        return result(
            n,
            "boltring",
            CheckStatus.WARN,
            f"{bt.get('version')} (laptop {mine})",
            hints.versions_differ_hint("boltring", mine),
        )
    return result(n, "boltring", CheckStatus.OK, bt.get("version"))


def mlx_result(node: Node, facts: NodeFacts, versions: Versions, darwin: bool) -> CheckResult:
    n = node.name
    mx = facts.get("mlx") or {}
    if mx.get("error"):
        return result(
            n,
            "mlx",
            CheckStatus.FAIL,
            short(mx.get("error", "")),
            f"{hints.MLX_HINT} ({node.python} -m pip install {'mlx' if darwin else 'mlx[cpu]'}), "
            f"or run {hints.SETUP}",
        )
    ver = mx.get("version") or "unknown"
    mine = versions.get("mlx")
    if mine and ver not in (mine, "unknown"):
        return result(
            n, "mlx", CheckStatus.WARN, f"{ver} (laptop {mine})", hints.versions_differ_hint("mlx", mine)
        )
    if darwin and mx.get("metal") is False:
        return result(
            n,
            "mlx",
            CheckStatus.WARN,
            f"{ver}, no Metal GPU",
            "mlx cannot see the GPU: run on Apple Silicon with a native (arm64) python",
        )
    return result(n, "mlx", CheckStatus.OK, ver)


def hardware_results(node: Node, facts: NodeFacts) -> list[CheckResult]:
    """chip and memory, against what the config says when it says something."""
    n = node.name
    out: list[CheckResult] = []
    hw = facts.get("hardware") or {}
    chip = hw.get("chip")
    if hw.get("error") and not chip:
        out.append(result(n, "chip", CheckStatus.WARN, short(hw.get("error") or ""), None))
    elif node.chip and chip and node.chip.lower() not in chip.lower():
        out.append(
            result(
                n,
                "chip",
                CheckStatus.WARN,
                f"{chip} (config says {node.chip})",
                f"set chip: {chip!r} for {n} in the config",
            )
        )
    else:
        out.append(result(n, "chip", CheckStatus.OK, chip or "unknown"))
    mem = facts.get("memory") or {}
    total, avail = mem.get("total_bytes"), mem.get("available_bytes")
    if not total:
        out.append(result(n, "memory", CheckStatus.WARN, short(mem.get("error") or "unknown")))
        return out
    value = f"{gb(total)} ({gb(avail)} free)" if avail is not None else gb(total)
    if node.memory_gb and abs(total / GIB - node.memory_gb) > 0.1 * node.memory_gb + 1:
        out.append(
            result(
                n,
                "memory",
                CheckStatus.WARN,
                f"{value}, config says {node.memory_gb:g} GB",
                f"set memory_gb: {round(total / GIB)} for {n} in the config",
            )
        )
    elif avail is not None and (avail < 2 * GIB or avail < 0.1 * total):
        out.append(
            result(
                n,
                "memory",
                CheckStatus.WARN,
                value,
                f"little memory is free on {n}: close other programs, or training will swap",
            )
        )
    else:
        out.append(result(n, "memory", CheckStatus.OK, value))
    return out


def ports_result(node: Node, facts: NodeFacts) -> CheckResult | None:
    """Can the ranks listen on their ring ports? None while the ring address is missing (nothing
    to bind: ring_ip says so)."""
    ports = facts.get("ports") or {}
    if not ports or not (facts.get("interfaces") or {}).get("holder"):
        return None
    busy = [p for p, state in ports.items() if state != "free"]
    if busy:
        return result(
            node.name,
            "ports",
            CheckStatus.WARN,
            f"{', '.join(busy)} in use ({ports[busy[0]]})",
            "a previous run may still be alive: `boltring kill`, or change ring: port:",
        )
    return result(node.name, "ports", CheckStatus.OK, ", ".join(ports))


def rdma_result(node: Node, facts: NodeFacts) -> CheckResult:
    """RDMA over Thunderbolt, which ring.backend: jaccl needs: enabled (`rdma_ctl status`), rdma_*
    devices present (`ibv_devices`, as mlx.distributed_config decides), and some port active."""
    n, name = node.name, "rdma"
    if facts.get("platform") != "darwin":
        return result(
            n,
            name,
            CheckStatus.FAIL,
            f"not macOS ({facts.get('platform', 'unknown')})",
            "jaccl runs only between Macs (macOS 26.2+, Thunderbolt 5): "
            "use ring.backend: boltring or mlx-ring",
        )
    rdma: RdmaFacts = (facts.get("macos") or {}).get("rdma") or {"error": "not probed"}
    devices = [d.get("name", "?") for d in rdma.get("devices") or []]
    active = [d.get("name", "?") for d in rdma.get("devices") or [] if d.get("port_state") == "PORT_ACTIVE"]
    if rdma.get("enabled") is None and not devices:
        err = rdma.get("error") or rdma.get("status") or "unknown"
        if rdma.get("missing"):
            return result(n, name, CheckStatus.FAIL, "no rdma_ctl on this Mac", hints.RDMA_NO_RDMA_CTL_HINT)
        return result(
            n, name, CheckStatus.FAIL, short(f"RDMA state unknown: {err}", 100), hints.RDMA_DISABLED_HINT
        )
    if rdma.get("enabled") is False:
        return result(n, name, CheckStatus.FAIL, "RDMA disabled (rdma_ctl status)", hints.RDMA_DISABLED_HINT)
    if not devices:
        return result(
            n, name, CheckStatus.FAIL, "RDMA enabled, no rdma_* devices", hints.RDMA_NO_DEVICES_HINT
        )
    listed = ", ".join(devices)
    if not active:
        return result(n, name, CheckStatus.WARN, f"enabled; {listed}; none active", hints.RDMA_INACTIVE_HINT)
    return result(n, name, CheckStatus.OK, f"enabled; active: {', '.join(active)} (of {len(devices)})")
