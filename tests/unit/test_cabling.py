"""Ring order and Thunderbolt cabling: the order search on hand-made cables, the ring_order check
on facts the node probe assembles from macOS samples (tests/samples/macos/), ring.order in the
config, and the controller reordering the ring after checks with ring.order: cabling.

Cablings in the samples:
  loop  sp_thunderbolt_tb4_mini{1,2,3}.json                mini1-mini2, mini2-mini3, mini3-mini1
  line  sp_thunderbolt_tb4_line_mini{1,2}.json + mini3     mini1-mini3, mini3-mini2 (no mini1-mini2)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from boltring.cluster.agent import nodeprobe
from boltring.cluster.agent import probes_linux as pl
from boltring.cluster.config.load import ConfigError, load_config_text
from boltring.cluster.config.schema import Config, Node, RingOptions
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import LogLine
from boltring.cluster.nodes.checks.cabling import cable_edges, cabling_order, ring_order_result
from boltring.cluster.nodes.checks.ring import directions_from_routes, ring_neighbours
from boltring.cluster.nodes.checks.run import probe_request
from boltring.cluster.nodes.transport import CommandResult, Transport
from tests.macos_samples import mac_commands, sample

LOOP = {
    "mini1": "sp_thunderbolt_tb4_mini1.json",
    "mini2": "sp_thunderbolt_tb4_mini2.json",
    "mini3": "sp_thunderbolt_tb4_mini3.json",
}
LINE = {
    "mini1": "sp_thunderbolt_tb4_line_mini1.json",
    "mini2": "sp_thunderbolt_tb4_line_mini2.json",
    "mini3": "sp_thunderbolt_tb4_mini3.json",
}
NODES = tuple(Node(name=f"mini{i}", ring_ip=f"10.0.0.{i}", ssh=f"mini{i}") for i in (1, 2, 3))


# -- cabling_order on hand-made cables ---------------------------------------------------------


def test_a_line_is_walked_end_to_end():
    edges = [("a", "b"), ("b", "c"), ("c", "d")]
    assert cabling_order(["a", "b", "c", "d"], edges) == ["a", "b", "c", "d"]
    # the first node sits in the middle of the line: start from an end instead
    assert cabling_order(["b", "a", "c", "d"], edges) == ["a", "b", "c", "d"]
    assert cabling_order(["a", "c", "b"], [("a", "b"), ("b", "c")]) == ["a", "b", "c"]


def test_a_ring_starts_at_the_first_node_and_closes():
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]
    assert cabling_order(["a", "c", "b", "d"], edges) == ["a", "b", "c", "d"]
    assert cabling_order(["c", "a", "b", "d"], edges) == ["c", "b", "a", "d"]
    # with a chord, a path that cannot close (a, b, d, c) loses to the cycle a, b, c, d
    chord = edges + [("b", "d")]
    order = cabling_order(["a", "b", "d", "c"], chord)
    assert order[0] == "a" and order[-1] in ("b", "d")  # last cabled back to a
    assert all(frozenset(p) in {frozenset(e) for e in chord} for p in zip(order, order[1:], strict=False))


def test_missing_cables_give_no_order():
    assert cabling_order(["a", "b", "c"], [("a", "b")]) is None  # c has no cable
    # a star: the hub cannot sit between three leaves
    assert cabling_order(["hub", "x", "y", "z"], [("hub", "x"), ("hub", "y"), ("hub", "z")]) is None
    assert cabling_order(["a", "b"], []) is None
    # a cable to a node not in the cluster does not help
    assert cabling_order(["a", "b"], [("a", "elsewhere")]) is None


def test_two_nodes_and_one():
    assert cabling_order(["b", "a"], [("a", "b")]) == ["b", "a"]
    assert cabling_order(["b", "a"], [("a", "b"), ("b", "a")]) == ["b", "a"]  # two cables
    assert cabling_order(["solo"], []) == ["solo"]


# -- facts from the macOS samples --------------------------------------------------------------


def mac_facts(monkeypatch, config: Config, node: Node, tb: str) -> dict:
    """What nodeprobe on a Mac reports, its commands answered from the samples."""
    table = mac_commands(tb=tb)

    def run(argv, timeout=None, ok_codes=(0,), with_stderr=False):
        key = tuple(argv)
        if key[:3] == ("route", "-n", "get") and key not in table:
            return sample("route_get_bridge0.txt")
        if key not in table:
            raise nodeprobe.CommandMissing(f"{argv[0]} not found")
        return sample(table[key])

    monkeypatch.setattr(nodeprobe, "run", run)
    monkeypatch.setattr(nodeprobe, "probe_ping", lambda ip, darwin: pl.parse_ping(sample("ping_ok.txt")))
    monkeypatch.setattr(nodeprobe, "probe_ports", lambda ip, port, ranks: {str(port): "free"})
    req = probe_request(config, node, ring_neighbours(config)[node.name])
    return json.loads(json.dumps(nodeprobe.collect(req, platform_name="darwin")))


def cluster(order=("mini1", "mini2", "mini3"), ring_order="config") -> Config:
    by_name = {n.name: n for n in NODES}
    return Config(name="minis", nodes=tuple(by_name[n] for n in order), ring=RingOptions(order=ring_order))


def all_facts(monkeypatch, config: Config, cabling: dict[str, str]) -> dict[str, dict]:
    return {n.name: mac_facts(monkeypatch, config, n, cabling[n.name]) for n in config.nodes}


def test_cable_edges_from_the_samples(monkeypatch):
    config = cluster()
    loop = cable_edges(all_facts(monkeypatch, config, LOOP))
    assert {frozenset(e) for e in loop} == {
        frozenset(("mini1", "mini2")),
        frozenset(("mini2", "mini3")),
        frozenset(("mini1", "mini3")),
    }
    assert len(loop) == 3
    line = cable_edges(all_facts(monkeypatch, config, LINE))
    assert {frozenset(e) for e in line} == {frozenset(("mini1", "mini3")), frozenset(("mini2", "mini3"))}


def test_ring_order_ok_when_the_config_follows_the_cables(monkeypatch):
    config = cluster()
    r = ring_order_result(config, all_facts(monkeypatch, config, LOOP))
    assert (r.node, r.name, r.status, r.value) == ("ring", "ring_order", "ok", "follows the cables")
    config = cluster(("mini1", "mini3", "mini2"))
    r = ring_order_result(config, all_facts(monkeypatch, config, LINE))
    assert r.status == "ok" and r.value == "follows the cables"


def test_ring_order_warns_with_the_cable_order(monkeypatch):
    config = cluster()
    facts = all_facts(monkeypatch, config, LINE)
    r = ring_order_result(config, facts)
    assert r.status == "warn"
    assert r.value == "mini1→mini2 has no direct cable"
    assert r.hint == (
        "put the nodes in cable order in the config: mini1, mini3, mini2 (or set ring: {order: cabling})"
    )
    # with ring.order: cabling the controller follows the cables, so nothing to fix
    r = ring_order_result(dataclasses.replace(config, ring=RingOptions(order="cabling")), facts)
    assert r.status == "ok" and r.value.endswith("mini1, mini3, mini2")


def test_ring_order_needs_every_nodes_ports(monkeypatch):
    config = cluster()
    facts = all_facts(monkeypatch, config, LINE)
    del facts["mini2"]["macos"]["thunderbolt"]["ports"]
    assert ring_order_result(config, facts) is None
    facts.pop("mini2")
    assert ring_order_result(config, facts) is None
    # Linux facts have no "macos" section at all
    assert ring_order_result(config, {n: {"platform": "linux"} for n in ("mini1", "mini2", "mini3")}) is None


def test_unplugged_node_warns_without_an_order(monkeypatch):
    config = cluster()
    facts = all_facts(monkeypatch, config, LINE)
    for port in facts["mini3"]["macos"]["thunderbolt"]["ports"]:
        port["peers"] = []
    for name in ("mini1", "mini2"):  # their cables went to mini3
        for port in facts[name]["macos"]["thunderbolt"]["ports"]:
            port["peers"] = []
    r = ring_order_result(config, facts)
    assert r.status == "warn" and "(+1 more)" in r.value
    assert "no order of the nodes" in r.hint


# -- config ------------------------------------------------------------------------------------

NODES_YAML = "nodes: [{name: a, local: true}]\n"


def test_config_ring_order():
    assert load_config_text(NODES_YAML).ring.order == "config"
    assert load_config_text("ring: {order: cabling}\n" + NODES_YAML).ring.order == "cabling"
    assert load_config_text("ring: {order: config}\n" + NODES_YAML).ring.order == "config"
    with pytest.raises(ConfigError) as info:
        load_config_text("ring: {order: cables}\n" + NODES_YAML)
    assert "ring.order" in str(info.value) and "did you mean 'cabling'?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config_text("ring: {ordr: cabling}\n" + NODES_YAML)
    assert "did you mean 'order'?" in str(info.value)


# -- the controller follows the cables ---------------------------------------------------------


class SampleMac(Transport):
    """A Mac whose python answers the version question and runs nodeprobe from sample facts."""

    def __init__(self, node: Node, facts: dict, on_state=None):
        super().__init__(node, on_state)
        self.facts = facts

    async def connect(self) -> None:
        self._set_state("connected")

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        if argv[1:] == ["-m", "boltring.cluster.agent.nodeprobe"]:
            return CommandResult(0, json.dumps(self.facts) + "\n", "")
        if argv[1] == "-c":
            return CommandResult(0, "3.12.4 (main) [Clang 15.0.0]\n", "")
        return CommandResult(127, "", f"{argv[0]}: not found")

    async def read_from(self, path, offset, limit=1 << 20) -> bytes:
        return b""

    async def write_file(self, path, data, mode=0o600) -> None:
        raise AssertionError("checks write no files")


def run_checks(monkeypatch, config: Config, cabling: dict[str, str]):
    facts = all_facts(monkeypatch, config, cabling)
    ctl = JobController(
        config, transport_factory=lambda node, cfg, emit: SampleMac(node, facts[node.name], emit)
    )
    events = []
    ctl.add_listener(events.append)
    results = asyncio.run(ctl.run_checks(bandwidth=False))
    return ctl, results, [e.text for e in events if isinstance(e, LogLine)]


def test_controller_reorders_the_ring_to_follow_the_cables(monkeypatch):
    config = cluster(ring_order="cabling")
    ctl, results, logs = run_checks(monkeypatch, config, LINE)
    assert [n.name for n in ctl.config.nodes] == ["mini1", "mini3", "mini2"]
    assert [s.node.name for s in ctl.config.rank_layout()] == ["mini1", "mini3", "mini2"]
    assert "ring order follows the cables: mini1, mini3, mini2" in logs
    order = next(r for r in results if r.name == "ring_order")
    assert order.status == "ok"
    # checking again: already in cable order, nothing to say
    ctl2, _, logs = run_checks(monkeypatch, ctl.config, LINE)
    assert [n.name for n in ctl2.config.nodes] == ["mini1", "mini3", "mini2"]
    assert not any("ring order" in t for t in logs)


def test_controller_keeps_the_config_order_unless_asked(monkeypatch):
    ctl, results, logs = run_checks(monkeypatch, cluster(), LINE)
    assert [n.name for n in ctl.config.nodes] == ["mini1", "mini2", "mini3"]
    assert next(r for r in results if r.name == "ring_order").status == "warn"
    assert not any("ring order" in t for t in logs)
    # a loop allows the config's own order: kept, even with ring.order: cabling
    ctl, _, logs = run_checks(monkeypatch, cluster(("mini2", "mini1", "mini3"), "cabling"), LOOP)
    assert [n.name for n in ctl.config.nodes] == ["mini2", "mini1", "mini3"]


def _routes(per_node: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Facts holding only the route each node took to each neighbour: {node: {neighbour: iface}}."""
    return {
        node: {"neighbours": [{"name": nb, "route": {"iface": iface}} for nb, iface in routes.items()]}
        for node, routes in per_node.items()
    }


def test_directions_auto_follows_the_routes_to_the_neighbours():
    config = cluster()
    bridge = _routes(
        {
            n: {m: "bridge0" for m in ("mini1", "mini2", "mini3") if m != n}
            for n in ("mini1", "mini2", "mini3")
        }
    )
    assert directions_from_routes(config, bridge) == (
        1,
        "mini1 reaches both ring neighbours over bridge0, one shared network",
    )
    # a ring of cables with a route per neighbour: each direction has cables of its own
    ring_of_cables = {
        "mini1": {"mini2": "en1", "mini3": "en2"},
        "mini2": {"mini1": "en2", "mini3": "en1"},
        "mini3": {"mini2": "en2", "mini1": "en1"},
    }
    assert directions_from_routes(config, _routes(ring_of_cables)) == (
        2,
        "every node reaches its two ring neighbours over separate interfaces",
    )
    # one node on a shared interface is enough for one direction
    mixed = {**ring_of_cables, "mini1": {"mini2": "en1", "mini3": "en1"}}
    assert directions_from_routes(config, _routes(mixed)) == (
        1,
        "mini1 reaches both ring neighbours over en1, one shared network",
    )
    # a route the probe did not see, or a ring of two nodes: the ranks decide
    assert directions_from_routes(config, _routes({"mini1": {"mini2": "bridge0"}})) is None
    two = dataclasses.replace(config, nodes=config.nodes[:2])
    assert directions_from_routes(two, bridge) is None


def test_controller_plans_the_directions_the_checks_decided(monkeypatch):
    ctl, _, logs = run_checks(monkeypatch, cluster(), LOOP)
    decided = [t for t in logs if t.startswith("ring.directions auto: ")]
    assert decided == [
        "ring.directions auto: 1 (mini1 reaches both ring neighbours over bridge0, one shared network)"
    ]
    assert {p.env["BOLTRING_RING_DIRECTIONS"] for p in ctl.plan()} == {"1"}
    assert ctl.config.ring.directions == 0  # the config still says auto; the next checks decide again
    # a config that sets directions is left as it is
    fixed = dataclasses.replace(cluster(), ring=RingOptions(directions=2))
    ctl, _, logs = run_checks(monkeypatch, fixed, LOOP)
    assert not any(t.startswith("ring.directions") for t in logs)
    assert {p.env["BOLTRING_RING_DIRECTIONS"] for p in ctl.plan()} == {"2"}
