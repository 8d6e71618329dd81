"""Thunderbolt cabling across macOS nodes (pure): which node is cabled to which (from the domain
UUIDs `system_profiler SPThunderboltDataType` reports), an order of the nodes that follows the
cables, loops through Thunderbolt Bridge (a broadcast storm), and the ring_order check."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

from boltring.cluster.agent.facts import NodeFacts, TbPort
from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks.hints import TB_LOOP_HINT
from boltring.cluster.nodes.checks.results import result
from boltring.cluster.states import CheckStatus


def _tb_ports(facts: NodeFacts) -> list[TbPort]:
    return ((facts.get("macos") or {}).get("thunderbolt") or {}).get("ports") or []


def cable_edges(reports: Mapping[str, NodeFacts], *, bridged_only: bool = False) -> list[tuple[str, str]]:
    """Thunderbolt cables between nodes, from each macOS node's facts: one (node, node) pair per
    cable (two cables between the same two nodes give two pairs). A cable joins two ports whose
    domain UUIDs name each other. With `bridged_only`, a cable counts only when its port is a
    Thunderbolt Bridge member on the sides we know."""
    owner: dict[str, tuple[str, TbPort]] = {}
    for name, facts in reports.items():
        for p in _tb_ports(facts):
            if p.get("domain_uuid"):
                owner[p["domain_uuid"]] = (name, p)

    def bridged(name: str, port: TbPort) -> bool:
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


def tb_loops(reports: Mapping[str, NodeFacts]) -> dict[str, str]:
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


def all_report_tb_ports(names: list[str], facts: Mapping[str, NodeFacts]) -> bool:
    """Every named node reported its Thunderbolt ports (macOS facts), so its cables are known."""
    return all("ports" in (((facts.get(n) or {}).get("macos") or {}).get("thunderbolt") or {}) for n in names)


def launch_order(config: Config, facts: Mapping[str, NodeFacts]) -> list[str] | None:
    """The order of the nodes a launch takes after checks that gathered `facts`: with
    ring.order: cabling, the order the Thunderbolt cables allow; None when it keeps the config's
    (ring.order: config, one node, a node that reported no Thunderbolt ports, cables that allow
    no order, or a config already in that order). The one rule the launch (JobController
    run_checks) and --dry-run (planned_order) follow."""
    names = [n.name for n in config.nodes]
    if config.ring.order != "cabling" or len(names) < 2 or not all_report_tb_ports(names, facts):
        return None
    order = cabling_order(names, cable_edges({n: facts[n] for n in names}))
    return None if order is None or order == names else order


def planned_order(
    config: Config,
    facts: Mapping[str, NodeFacts] | None,
    here: str = sys.platform,
    *,
    skip_checks: bool = False,
) -> tuple[list[str] | None, str]:
    """The node order (so the rank order) a launch of `config` takes, for a plan that runs no
    checks (--dry-run): (order, how), `how` the words after "ring order: ". `order` is None while
    the launch decides it from the cables its checks find. `facts`: what the last checks in this
    controller gathered, None when none ran; after them `config` is already in the order they
    chose (the controller reorders its config), so it is said, not recomputed. `here`: this
    machine's platform, which a local node's probe reports. `skip_checks`: the launch runs no
    checks, so nothing reorders the nodes."""
    names = [n.name for n in config.nodes]
    listed = ", ".join(names)
    if config.ring.order != "cabling":
        return names, f"{listed} (the config's order)"
    if len(names) < 2:
        return names, f"{listed} (one node: no cables to follow)"
    if skip_checks:
        return (
            names,
            f"{listed} (ring.order: cabling, but --skip-checks: no checks read the cables, the "
            "config's order is kept)",
        )
    local = next((n.name for n in config.nodes if n.local), None)
    if facts is None and local and here != "darwin":  # its probe will report no Thunderbolt ports
        return names, (
            f"{listed} (ring.order: cabling, but {local} is this machine, which is not a Mac: no "
            "Thunderbolt ports to follow, the config's order is kept)"
        )
    if facts is None:
        return None, (
            f"decided at launch (ring.order: cabling): the checks before it put the nodes in the "
            f"order the Thunderbolt cables allow, from {names[0]} when they can, and number the "
            f"ranks in that order; the ranks below are in the config's order ({listed}), which the "
            "launch keeps with --skip-checks, on nodes that report no Thunderbolt ports (not "
            "macOS) or when the cables allow no order. `boltring check` shows the cables' order "
            "(ring_order)"
        )
    unreported = [n for n in names if not all_report_tb_ports([n], facts)]
    if unreported:
        return names, (
            f"{listed} (ring.order: cabling, but the last checks got no Thunderbolt ports from "
            f"{', '.join(unreported)}: the config's order is kept)"
        )
    if cabling_order(names, cable_edges({n: facts[n] for n in names})) is None:
        return names, (
            f"{listed} (ring.order: cabling, but the cables the last checks found allow no order: "
            "the config's order is kept)"
        )
    return names, f"{listed} (ring.order: cabling: the Thunderbolt cables the last checks found)"


def ring_order_result(config: Config, facts: Mapping[str, NodeFacts]) -> CheckResult | None:
    """Does the ring (config order) follow the Thunderbolt cables? None unless every node
    reported its Thunderbolt ports (macOS) and there are 2+ nodes."""
    names = [n.name for n in config.nodes]
    if len(names) < 2 or not all_report_tb_ports(names, facts):
        return None
    edges = cable_edges({n: facts[n] for n in names})
    missing = uncabled_pairs(names, edges)
    if not missing:
        return result("ring", "ring_order", CheckStatus.OK, "follows the cables")
    order = cabling_order(names, edges)
    if order is not None and config.ring.order == "cabling":
        return result(
            "ring", "ring_order", CheckStatus.OK, f"follows the cables (order: cabling): {', '.join(order)}"
        )
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
    return result("ring", "ring_order", CheckStatus.WARN, value, hint)


def tb_loop_results(facts: Mapping[str, NodeFacts]) -> list[CheckResult]:
    """tb_loop for every macOS node that reported its Thunderbolt ports."""
    mac = {
        name: f
        for name, f in facts.items()
        if f.get("platform") == "darwin" and "ports" in ((f.get("macos") or {}).get("thunderbolt") or {})
    }
    if not mac:
        return []
    loops = tb_loops(mac)
    return [
        result(name, "tb_loop", CheckStatus.WARN, loops[name], TB_LOOP_HINT)
        if name in loops
        else result(name, "tb_loop", CheckStatus.OK, "no loop")
        for name in mac
    ]
