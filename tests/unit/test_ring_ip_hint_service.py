"""On macOS, the ring_ip hint names the network service of the ring interface: `networksetup
-setmanual` takes a service, and "Thunderbolt Bridge" put the address on the bridge when the
ring runs on en1 ("Thunderbolt 1"), a second copy of it that the ring never uses."""

from __future__ import annotations

from boltring.cluster.agent.facts import InterfaceFacts
from boltring.cluster.config.schema import Node
from boltring.cluster.nodes.checks.network import iface_results

NODE = Node(name="mini1", ring_ip="198.18.1.1", ssh="mini1", ring_iface="en1")


def facts(device: str, names: dict[str, str]) -> InterfaceFacts:
    return InterfaceFacts(
        names=names, ring_iface=device, holder=None, exists=True, up=True, mtu=1500, addresses=[], all={}
    )


def ring_ip_hint(ifs: InterfaceFacts) -> str:
    (r,) = [r for r in iface_results(NODE, ifs, darwin=True) if r.name == "ring_ip"]
    return r.hint or ""


def test_a_thunderbolt_port_gets_its_own_service_named():
    hint = ring_ip_hint(facts("en1", {"en1": "Thunderbolt 1", "bridge0": "Thunderbolt Bridge"}))
    assert 'networksetup -setmanual "Thunderbolt 1" 198.18.1.1 255.255.255.0' in hint, hint


def test_the_bridge_is_still_the_thunderbolt_bridge():
    hint = ring_ip_hint(facts("bridge0", {"bridge0": "Thunderbolt Bridge"}))
    assert 'networksetup -setmanual "Thunderbolt Bridge" 198.18.1.1' in hint, hint
