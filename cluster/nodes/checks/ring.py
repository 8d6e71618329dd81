"""The ring across nodes: who neighbours whom in ring order, which directed links carry the ring,
and the reachability matrix over every neighbour direction (plus MTU agreement)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from boltring.cluster.agent.facts import NeighbourFacts
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks.results import NodeReport, result
from boltring.cluster.states import CheckStatus


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


def directions_from_routes(config: Config, facts: Mapping[str, Mapping]) -> tuple[int, str] | None:
    """ring.directions `auto`, decided from how the checks saw each node route to its two ring
    neighbours (nodeprobe's facts): (ways, why), or None when it cannot tell (fewer than three
    nodes, or a route the probe did not see; the ranks then decide, ring.py).

    A node that reaches both neighbours over one interface sits on a shared network (a
    Thunderbolt Bridge chain, a hub, a switch): one direction round the ring already loads both
    ways of every cable, and a second only costs CPU, so 1. When every node reaches its two
    neighbours over separate interfaces (a ring of cables, a route per neighbour), each
    direction has cables of its own, so 2."""
    if len(config.nodes) < 3:
        return None
    neighbours = ring_neighbours(config)
    shared: list[tuple[str, str]] = []
    for node in config.nodes:
        seen = {
            nb.get("name"): (nb.get("route") or {}).get("iface")
            for nb in facts.get(node.name, {}).get("neighbours") or []
        }
        ifaces = [seen.get(other.name) for other in neighbours[node.name]]
        if len(ifaces) != 2 or not all(ifaces):
            return None
        if ifaces[0] == ifaces[1]:
            shared.append((node.name, str(ifaces[0])))
    if shared:
        name, iface = shared[0]
        return 1, f"{name} reaches both ring neighbours over {iface}, one shared network"
    return 2, "every node reaches its two ring neighbours over separate interfaces"


def planned_directions(config: Config, checked: int | None = None) -> tuple[int | None, str]:
    """What ring.directions comes to when this config launches, for a plan that runs no checks
    (--dry-run): (ways, how), `how` the words after "ring.directions: " ("1 (auto: every rank
    is on one host)"). `ways` is None when the launch decides it from the routes its checks see
    (or when the backend has no use for it). `checked`: the ways the last checks decided for auto
    (the controller's launch_config), when they did.

    It follows the launch step by step: with auto and three nodes or more, the controller
    decides 1 or 2 from the routes (directions_from_routes, cluster/jobs/launch.py) and passes
    it; otherwise the ranks get "auto" and netio/ring.py ring_directions decides, which gives 1
    to fewer than three ranks whatever was asked, and to ranks all on one host."""
    from boltring.netio.ring import ring_directions  # numpy: only for a plan, not for the checks

    ring = config.ring
    if ring.backend != "boltring":
        return None, f"not used (the {ring.backend} backend runs the collectives)"
    addrs = [slot.ring_addr for slot in config.rank_layout()]
    size = len(addrs)
    requested = ring.directions or checked or 0
    ways = ring_directions(requested, size, addrs)
    if size < 2:
        return ways, "1 (one rank: no ring to go round)"
    if size < 3:
        said = "auto: " if not requested else f"ring.directions {requested} applies from 3 ranks: "
        return ways, f"{ways} ({said}{size} ranks always go one way round the ring)"
    if ring.directions:
        return ways, f"{ways} (set in the config)"
    if checked:
        return ways, f"{ways} (auto, decided from the routes the last checks saw)"
    if ways == 1:
        return ways, "1 (auto: every rank is on one host)"
    if len(config.nodes) < 3:  # directions_from_routes cannot tell: the ranks decide, ring_directions
        hosts = len(config.nodes)
        return ways, f"{ways} (auto: ranks on {hosts} hosts; the checks decide it only for 3 nodes or more)"
    return None, (
        "auto (decided at launch from the routes the checks see: 1 on a shared network, 2 on "
        "separate cables, passed as BOLTRING_RING_DIRECTIONS; with --skip-checks, or a route the "
        "checks did not see, it stays auto and the ranks take 2)"
    )


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


Verdict = Literal["up", "down", "unknown"]


def _pair_state(
    rep: NodeReport, b: Node, bw: dict[tuple[str, str], CheckResult]
) -> tuple[Verdict, str, str | None]:
    """(verdict, reason, hint) for the direction rep.node -> b: "down" is no route, or TCP
    failed; "unknown" is not probed, or no ping reply and no TCP test (a Mac in stealth mode
    drops pings)."""
    a = rep.node.name
    if rep.facts is None:
        return "unknown", "not probed", None
    empty: NeighbourFacts = {}
    info = next((x for x in rep.facts.get("neighbours") or [] if x.get("ring_ip") == b.ring_ip), empty)
    route = info.get("route") or {}
    if route.get("error"):
        hint = next((r.hint for r in rep.results if r.name == f"route:{b.name}"), None)
        return "down", "no route", hint
    # A TCP transfer either way proves IP works both ways (its ACKs flow back).
    tried = [
        r
        for r in (bw.get((a, b.name)), bw.get((b.name, a)))
        if r is not None and r.status != CheckStatus.SKIPPED
    ]
    if any(r.status in (CheckStatus.OK, CheckStatus.WARN) or (r.value or "").endswith("Gb/s") for r in tried):
        return "up", "", None
    ping = info.get("ping") or {}
    if ping.get("received"):
        return "up", "", None
    if tried:
        return "down", "no TCP", tried[0].hint
    if "received" in ping:
        return "unknown", "no reply", None
    return "unknown", "untested", None


def reachability_results(
    config: Config, reports: dict[str, NodeReport], bw: dict[tuple[str, str], CheckResult]
) -> list[CheckResult]:
    """The "ring" reachability matrix over every neighbour direction, and MTU agreement.

    Directions from a node SSH could not reach are left out (its ssh check already says why, in
    one line): they are named once as "not checked". When no node with neighbours could be
    reached, the ring check is skipped, naming them (a one-node config has no ring check)."""
    neighbours = ring_neighbours(config)
    unreached = [n.name for n in config.nodes if reports[n.name].transport is None]
    pairs = [(a, b) for a in config.nodes if a.name not in unreached for b in neighbours[a.name]]
    if not pairs:
        if any(neighbours[name] for name in unreached):
            why = f"not checked from {', '.join(unreached)}: no SSH connection"
            return [result("ring", "ring", CheckStatus.SKIPPED, why)]
        return []
    groups: dict[str, list[str]] = {}
    bad = 0
    first_hint = None
    for a, b in pairs:
        verdict, reason, hint = _pair_state(reports[a.name], b, bw)
        if verdict == "up":
            continue
        groups.setdefault(reason, []).append(f"{a.name}->{b.name}")
        if verdict == "down":
            bad += 1
            first_hint = first_hint or hint
    ok_count = len(pairs) - sum(len(v) for v in groups.values())
    order = ("no route", "no TCP", "no reply", "not probed", "untested")
    value = "; ".join(
        [f"{ok_count}/{len(pairs)} reachable"]
        + [f"{reason}: {', '.join(groups[reason])}" for reason in order if reason in groups]
        + ([f"not checked from {', '.join(unreached)}"] if unreached else [])
    )
    out = []
    if bad:
        out.append(
            result(
                "ring",
                "ring",
                CheckStatus.FAIL,
                value,
                first_hint or "check the cables and ring addresses of those nodes",
            )
        )
    elif groups:
        out.append(
            result(
                "ring",
                "ring",
                CheckStatus.WARN,
                value,
                "fix the failing node checks, then check again (no reply can also be a "
                "firewall in stealth mode)",
            )
        )
    else:
        out.append(result("ring", "ring", CheckStatus.OK, value))
    mtus: dict[str, int] = {}
    for name, rep in reports.items():
        mtu = ((rep.facts or {}).get("interfaces") or {}).get("mtu")
        if mtu:
            mtus[name] = mtu
    mismatch = [
        (a.name, b.name)
        for a, b in pairs
        if a.name in mtus and b.name in mtus and mtus[a.name] != mtus[b.name]
    ]
    if mismatch:
        a, b = mismatch[0]
        out.append(
            result(
                "ring",
                "mtu",
                CheckStatus.WARN,
                ", ".join(f"{k} {v}" for k, v in mtus.items()),
                f"use one MTU on every ring interface ({a} has {mtus[a]}, {b} has {mtus[b]})",
            )
        )
    return out
