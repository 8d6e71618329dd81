"""A Mac in a ring of Thunderbolt cables with a route per neighbour, the Thunderbolt Bridge
unused: the layout `ring.directions: auto` turns into 2. The node probe runs on the macOS samples
written for it (tests/samples/macos/*ports_ring*, route_get_en1_neighbour.txt,
route_get_en2_*.txt, networksetup_getinfo_dhcp_no_address.txt):

    mini1  en1 (Thunderbolt 1) 10.0.0.1/24, cabled to mini2: its ring address
           en2 (Thunderbolt 2) 10.0.13.1/24, cabled to mini3, and
           `sudo route -n add -host 10.0.0.3 -interface en2`
           bridge0 (Thunderbolt Bridge) without members, DHCP, no address

Every address here is parsed from sample text, never contacted.
"""

from __future__ import annotations

import dataclasses

import pytest

from boltring.cluster.agent import probes_macos as pm
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.nodes.checks.ring import ring_neighbours
from boltring.cluster.nodes.checks.verdicts import node_results
from tests.macos_samples import sample
from tests.unit.test_probes_macos import CONFIG, NODES, VERSIONS, mac_facts

CABLE_RING = dict(
    ifconfig="ifconfig_ports_ring.txt",
    netstat="netstat_rn_ports_ring.txt",
    getinfo="networksetup_getinfo_dhcp_no_address.txt",
    route2="route_get_en1_neighbour.txt",  # mini2 down en1's cable, in en1's subnet
    route3="route_get_en2_host_route.txt",  # mini3 down en2's cable, by its own host route
)


def checks(monkeypatch, config: Config = CONFIG, **over) -> dict:
    node = config.nodes[0]
    facts = mac_facts(monkeypatch, node, config=config, **{**CABLE_RING, **over})
    return {
        r.name: r for r in node_results(config, node, facts, VERSIONS, ring_neighbours(config)[node.name])
    }


def test_the_cable_ring_samples_parse():
    ifs = pm.parse_ifconfig(sample("ifconfig_ports_ring.txt"))
    assert pm.find_iface_with_ip(ifs, "10.0.0.1") == "en1"  # sample
    assert pm.find_iface_with_ip(ifs, "10.0.13.1") == "en2"  # sample
    assert ifs["bridge0"]["members"] == [] and not pm.iface_is_up(ifs["bridge0"])
    host = pm.parse_route_get(sample("route_get_en2_host_route.txt"))
    assert (host["iface"], host.get("gateway"), host["flags"]) == (
        "en2",
        None,
        ["UP", "HOST", "DONE", "STATIC"],
    )
    via = pm.parse_route_get(sample("route_get_en2_gateway.txt"))
    assert (via["iface"], via["gateway"]) == ("en2", "10.0.13.3")  # sample
    assert pm.parse_route_get(sample("route_get_en1_neighbour.txt"))["iface"] == "en1"
    routes = pm.parse_netstat_rn(sample("netstat_rn_ports_ring.txt"))
    assert {"destination": "10.0.0.3", "gateway": "link#10", "flags": "UHS", "iface": "en2"} in routes
    assert [d["iface"] for d in pm.default_routes(routes)] == ["en0"]
    assert pm.parse_networksetup_getinfo(sample("networksetup_getinfo_dhcp_no_address.txt")) == {
        "config": "dhcp"
    }
    names = pm.port_names(pm.parse_hardware_ports(sample("networksetup_listallhardwareports.txt")))
    assert [d for d, port in names.items() if pm.is_thunderbolt_port(port)] == [
        "bridge0",
        "en1",
        "en2",
        "en3",
    ]


def test_a_neighbour_down_another_thunderbolt_cable_passes_the_route_check(monkeypatch):
    res = checks(monkeypatch)
    assert (res["ring_iface"].status, res["ring_iface"].value) == ("ok", "en1 up")
    assert (res["route:mini2"].status, res["route:mini2"].value) == ("ok", "via en1")
    assert (res["route:mini3"].status, res["route:mini3"].value) == ("ok", "via en2 (Thunderbolt 2)")
    # every other check too (boltring and mlx are this machine's, probed live)
    bad = {k: (r.status, r.value) for k, r in res.items() if r.status in ("fail", "warn")}
    assert {k: v for k, v in bad.items() if k not in ("boltring", "mlx")} == {}


def test_a_neighbour_through_a_gateway_on_another_port_warns_as_on_the_ring_interface(monkeypatch):
    r = checks(monkeypatch, route3="route_get_en2_gateway.txt")["route:mini3"]
    assert (r.status, r.value) == ("warn", "via en2 through gateway 10.0.13.3")  # sample


def test_a_neighbour_over_ethernet_names_every_thunderbolt_port_that_is_up(monkeypatch):
    r = checks(monkeypatch, route2="route_get_en0.txt")["route:mini2"]
    assert (r.status, r.value) == ("fail", "traffic to mini2 would go over en0 (Ethernet), not en1")
    # en1's cable may not be the one that reaches mini2: both ports with a cable are named, en3
    # (no cable) is not
    assert r.hint == (
        "route mini2 over the Thunderbolt port whose cable reaches it: "
        "`sudo route -n add -host 10.0.0.2 -interface en1` or "
        "`sudo route -n add -host 10.0.0.2 -interface en2`"
    )


@pytest.mark.parametrize("ring_ip,port", [("10.0.0.1", "en1"), ("10.0.13.1", "en2")])  # samples
def test_an_unused_dhcp_bridge_is_no_warning_when_the_ring_is_on_a_port(monkeypatch, ring_ip, port):
    config = dataclasses.replace(CONFIG, nodes=(Node(name="mini1", ring_ip=ring_ip, ssh="mini1"), *NODES[1:]))
    r = checks(monkeypatch, config)["bridge_dhcp"]
    assert (r.status, r.value) == ("ok", f"bridge0 not used by the ring (it is on {port})")
    assert r.hint is None  # nothing that would put the ring address on the bridge as well
