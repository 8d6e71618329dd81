"""macOS parsers on sample outputs (tests/samples/macos/), and the node probe assembled from them.

No Mac here: the commands' outputs were written in the formats macOS prints, and the probe's
`run` is replaced by a table from argv to sample file.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from boltring.cluster.agent import nodeprobe
from boltring.cluster.agent import probes_linux as pl
from boltring.cluster.agent import probes_macos as pm
from boltring.cluster.config.schema import Config, Node, RingOptions
from boltring.cluster.nodes.checks.cabling import tb_loops
from boltring.cluster.nodes.checks.ring import ring_neighbours
from boltring.cluster.nodes.checks.run import probe_request
from boltring.cluster.nodes.checks.verdicts import node_results
from tests.macos_samples import mac_commands, sample

# -- parsers -----------------------------------------------------------------------------------


def test_hardware_ports_map_bridge_and_thunderbolt_ports():
    ports = pm.parse_hardware_ports(sample("networksetup_listallhardwareports.txt"))
    assert pm.thunderbolt_bridge_device(ports) == "bridge0"
    assert pm.thunderbolt_port_devices(ports) == {1: "en1", 2: "en2", 3: "en3"}
    names = pm.port_names(ports)
    assert names["en0"] == "Ethernet" and names["en4"] == "Wi-Fi"
    assert all(p["device"] for p in ports)  # the VLAN section is not a port


def test_ifconfig_bridge_members_status_and_address():
    ifs = pm.parse_ifconfig(sample("ifconfig_bridge0_active.txt"))
    br = ifs["bridge0"]
    assert br["members"] == ["en1", "en2", "en3"]
    assert br["status"] == "active" and br["up"] and pm.iface_is_up(br)
    assert br["mtu"] == 1500
    # addresses below are parsed from the sample output, never contacted
    assert br["inet"] == [{"addr": "10.0.0.1", "prefixlen": 24, "broadcast": "10.0.0.255"}]  # sample
    assert [ifs[m]["status"] for m in br["members"]] == ["active", "active", "inactive"]
    assert pm.find_iface_with_ip(ifs, "10.0.0.1") == "bridge0"  # sample
    assert pm.find_iface_with_ip(ifs, "192.168.1.31") == "en0"  # sample
    assert ifs["lo0"]["inet"][0]["prefixlen"] == 8
    assert ifs["stf0"]["flags"] == [] and not ifs["stf0"]["up"]


def test_ifconfig_self_assigned_address():
    ifs = pm.parse_ifconfig(sample("ifconfig_bridge0_selfassigned.txt"))
    addr = ifs["bridge0"]["inet"][0]
    assert addr["addr"] == "169.254.77.21" and addr["prefixlen"] == 16
    assert pm.is_self_assigned(addr["addr"])
    assert pm.find_iface_with_ip(ifs, "10.0.0.1") is None


def test_ifconfig_inactive_bridge_is_not_up():
    ifs = pm.parse_ifconfig(sample("ifconfig_bridge0_inactive.txt"))
    assert ifs["bridge0"]["up"]  # the UP flag alone …
    assert not pm.iface_is_up(ifs["bridge0"])  # … but no member has a cable


@pytest.mark.parametrize(
    "name,iface,gateway",
    [
        ("route_get_bridge0.txt", "bridge0", None),
        ("route_get_en0.txt", "en0", "192.168.1.1"),
        ("route_get_default.txt", "en0", "192.168.1.1"),
        ("route_get_default_bridge0.txt", "bridge0", "10.0.0.254"),
    ],
)
def test_route_get(name, iface, gateway):
    r = pm.parse_route_get(sample(name))
    assert r["iface"] == iface
    assert r.get("gateway") == gateway


def test_route_get_without_route_raises():
    with pytest.raises(ValueError, match="not in table"):
        pm.parse_route_get(sample("route_get_not_in_table.txt"))


def test_netstat_default_routes():
    normal = pm.default_routes(pm.parse_netstat_rn(sample("netstat_rn.txt")))
    assert [(d["iface"], d["scoped"]) for d in normal] == [("en0", False), ("bridge0", True)]
    bad = pm.default_routes(pm.parse_netstat_rn(sample("netstat_rn_default_bridge0.txt")))
    assert (bad[0]["iface"], bad[0]["scoped"], bad[0]["gateway"]) == ("bridge0", False, "10.0.0.254")
    routes = pm.parse_netstat_rn(sample("netstat_rn.txt"))
    assert {"destination": "10.0.0/24", "gateway": "link#20", "flags": "UCS", "iface": "bridge0"} in routes


def test_networksetup_getinfo():
    assert pm.parse_networksetup_getinfo(sample("networksetup_getinfo_manual.txt")) == {
        "config": "manual",
        "ip": "10.0.0.1",
        "subnet_mask": "255.255.255.0",
        "router": None,
    }
    dhcp = pm.parse_networksetup_getinfo(sample("networksetup_getinfo_dhcp.txt"))
    assert dhcp["config"] == "dhcp" and dhcp["ip"] == "169.254.77.21"
    with pytest.raises(ValueError):
        pm.parse_networksetup_getinfo(
            "** Error: The parameters were not valid.\n"
            "Thunderbolt Bridge is not a recognized network service.\n"
        )


def test_hardware_and_memory():
    assert pm.parse_sysctl_chip_memory(sample("sysctl_chip_memory.txt")) == {
        "chip": "Apple M4",
        "memory_bytes": 32 << 30,
    }
    hw = pm.parse_sp_hardware(sample("sp_hardware.json"))
    assert hw["chip"] == "Apple M4" and hw["memory_bytes"] == 32 << 30
    assert hw["model"] == "Mac mini" and hw["model_id"] == "Mac16,10"
    vm = pm.parse_vm_stat(sample("vm_stat.txt"))
    assert vm["page_size"] == 16384
    assert vm["free_bytes"] == 623761 * 16384
    assert vm["available_bytes"] == (623761 + 402133 + 41830 + 12406) * 16384


def test_ping_summary():
    ok = pl.parse_ping(sample("ping_ok.txt"))
    assert ok == {
        "sent": 3,
        "received": 3,
        "loss_pct": 0.0,
        "min_ms": 0.183,
        "avg_ms": 0.208,
        "max_ms": 0.244,
    }
    none = pl.parse_ping(sample("ping_noreply.txt"))
    assert none["received"] == 0 and none["loss_pct"] == 100.0 and "avg_ms" not in none
    with pytest.raises(ValueError):
        pl.parse_ping("ping: cannot resolve foo: Unknown host\n")


def test_thunderbolt_tb4_ports_and_peers():
    ports = pm.parse_sp_thunderbolt(sample("sp_thunderbolt_tb4_mini1.json"))
    assert [p["port"] for p in ports] == [1, 2, 3]
    assert [p["connected"] for p in ports] == [True, True, False]
    assert all(p["speed_gbps"] == 40.0 and p["up_to"] for p in ports)
    assert ports[0]["peers"][0]["domain_uuid"] == "9A2D7E41-5C38-4F1B-B6E0-3D9C8A2F1B11"
    assert ports[0]["peers"][0]["ip_service"]
    assert pm.port_capability_gbps(ports, "Apple M4") == 40.0
    assert pm.tb_generation(40.0) == "Thunderbolt 4"


def test_thunderbolt_tb5_capability_and_link():
    ports = pm.parse_sp_thunderbolt(sample("sp_thunderbolt_tb5.json"))
    linked = [p for p in ports if p["connected"]]
    assert [(p["port"], p["speed_gbps"], p["up_to"]) for p in linked] == [(1, 80.0, False)]
    assert pm.port_capability_gbps(ports) == 120.0
    slow = pm.parse_sp_thunderbolt(sample("sp_thunderbolt_tb5_tb4_cable.json"))
    assert [p["speed_gbps"] for p in slow if p["connected"]] == [40.0]
    assert pm.port_capability_gbps(slow) == 120.0


# -- the probe, assembled from samples ---------------------------------------------------------


def fake_run(table: dict[tuple[str, ...], str]):
    def run(argv, timeout=None, ok_codes=(0,), with_stderr=False):
        key = tuple(argv)
        if key not in table:
            raise nodeprobe.CommandMissing(f"{argv[0]} not found")
        return sample(table[key])

    return run


def mac_table(**over) -> dict[tuple[str, ...], str]:
    table = {
        **mac_commands(),
        ("route", "-n", "get", "10.0.0.2"): "route_get_bridge0.txt",
        ("route", "-n", "get", "10.0.0.3"): "route_get_bridge0.txt",
    }
    for k, v in over.items():
        key = {
            "ifconfig": ("ifconfig",),
            "getinfo": ("networksetup", "-getinfo", "Thunderbolt Bridge"),
            "netstat": ("netstat", "-rn", "-f", "inet"),
            "default": ("route", "-n", "get", "default"),
            "tb": ("system_profiler", "SPThunderboltDataType", "-json"),
            "route2": ("route", "-n", "get", "10.0.0.2"),
            "route3": ("route", "-n", "get", "10.0.0.3"),
            "rdma_ctl": ("rdma_ctl", "status"),
            "ibv_devices": ("ibv_devices",),
            "ibv_devinfo": ("ibv_devinfo",),
        }[k]
        if v is None:
            table.pop(key)
        else:
            table[key] = v
    return table


NODES = (
    Node(name="mini1", ring_ip="10.0.0.1", ssh="mini1"),
    Node(name="mini2", ring_ip="10.0.0.2", ssh="mini2"),
    Node(name="mini3", ring_ip="10.0.0.3", ssh="mini3"),
)
CONFIG = Config(name="minis", nodes=NODES)


def mac_facts(monkeypatch, node: Node = NODES[0], *, ping=None, config: Config = CONFIG, **over) -> dict:
    monkeypatch.setattr(nodeprobe, "run", fake_run(mac_table(**over)))
    monkeypatch.setattr(
        nodeprobe, "probe_ping", lambda ip, darwin: ping or pl.parse_ping(sample("ping_ok.txt"))
    )
    monkeypatch.setattr(nodeprobe, "probe_ports", lambda ip, port, ranks: {str(port): "free"})
    req = probe_request(config, node, ring_neighbours(config)[node.name])
    facts = nodeprobe.collect(req, platform_name="darwin")
    return json.loads(json.dumps(facts))  # what the controller gets: plain JSON


def by_name(results):
    return {r.name: r for r in results}


VERSIONS = {"boltring": None, "mlx": None}


def test_probe_on_a_healthy_mini(monkeypatch):
    facts = mac_facts(monkeypatch)
    assert facts["platform"] == "darwin"
    assert facts["hardware"]["chip"] == "Apple M4" and facts["hardware"]["model"] == "Mac mini"
    ifs = facts["interfaces"]
    assert (ifs["ring_iface"], ifs["resolved_by"], ifs["holder"]) == ("bridge0", "address", "bridge0")
    assert ifs["members"] == ["en1", "en2", "en3"] and ifs["up"] and ifs["mtu"] == 1500
    assert [n["route"]["iface"] for n in facts["neighbours"]] == ["bridge0", "bridge0"]
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    for name in (
        "chip",
        "memory",
        "ring_iface",
        "ring_ip",
        "mtu",
        "route:mini2",
        "route:mini3",
        "rtt:mini2",
        "rtt:mini3",
        "bridge_dhcp",
        "default_route",
        "tb_speed",
    ):
        assert res[name].status == "ok", (name, res[name])
    assert res["ring_iface"].value == "bridge0 up (en1, en2)"  # en3 has no cable
    assert res["rtt:mini2"].value == "0.21 ms"
    assert res["memory"].value == "32 GB (16 GB free)"
    assert "Thunderbolt 4" in res["tb_speed"].value


def test_one_failing_command_leaves_an_error_not_a_crash(monkeypatch):
    facts = mac_facts(monkeypatch, tb=None, getinfo=None)
    assert "not found" in facts["macos"]["thunderbolt"]["error"]
    assert facts["interfaces"]["ring_iface"] == "bridge0"
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["tb_speed"].status == "skipped"
    assert res["bridge_dhcp"].status == "skipped"
    assert res["ring_ip"].status == "ok"


def test_route_over_ethernet_fails_naming_the_interface(monkeypatch):
    facts = mac_facts(monkeypatch, route2="route_get_en0.txt")
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    r = res["route:mini2"]
    assert r.status == "fail"
    assert r.value == "traffic to mini2 would go over en0 (Ethernet), not bridge0"
    assert "route change 10.0.0.2 -interface bridge0" in r.hint
    assert res["route:mini3"].status == "ok"


def test_no_route_fails(monkeypatch):
    facts = mac_facts(monkeypatch, route3="route_get_not_in_table.txt")
    assert "not in table" in facts["neighbours"][0]["route"]["error"]  # mini3 comes first (rank before)
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["route:mini3"].status == "fail" and "no route" in res["route:mini3"].value


def test_self_assigned_bridge_address(monkeypatch):
    facts = mac_facts(
        monkeypatch, ifconfig="ifconfig_bridge0_selfassigned.txt", getinfo="networksetup_getinfo_dhcp.txt"
    )
    ifs = facts["interfaces"]
    assert ifs["holder"] is None and ifs["resolved_by"] == "thunderbolt_bridge"
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["bridge_dhcp"].status == "warn"
    assert res["bridge_dhcp"].value == "bridge0 has self-assigned 169.254.77.21"
    assert 'networksetup -setmanual "Thunderbolt Bridge" 10.0.0.1 255.255.255.0' in res["bridge_dhcp"].hint
    assert res["ring_ip"].status == "fail"
    assert res["ring_ip"].value == "bridge0 holds 169.254.77.21, not 10.0.0.1"


def test_dhcp_bridge_with_the_right_address_still_warns(monkeypatch):
    facts = mac_facts(monkeypatch, getinfo="networksetup_getinfo_dhcp.txt")
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["bridge_dhcp"].status == "warn" and "DHCP" in res["bridge_dhcp"].value
    assert res["ring_ip"].status == "ok"


def test_inactive_bridge_fails_ring_iface(monkeypatch):
    facts = mac_facts(monkeypatch, ifconfig="ifconfig_bridge0_inactive.txt")
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["ring_iface"].status == "fail"
    assert res["ring_iface"].value == "bridge0 is down (inactive)"
    assert "Thunderbolt cable" in res["ring_iface"].hint


def test_default_route_over_the_bridge_warns(monkeypatch):
    facts = mac_facts(
        monkeypatch, default="route_get_default_bridge0.txt", netstat="netstat_rn_default_bridge0.txt"
    )
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["default_route"].status == "warn"
    assert res["default_route"].value == "default route goes over bridge0"
    assert "Router" in res["default_route"].hint


def test_tb4_cable_on_a_tb5_mac_warns(monkeypatch):
    facts = mac_facts(monkeypatch, tb="sp_thunderbolt_tb5_tb4_cable.json")
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["tb_speed"].status == "warn"
    assert "Thunderbolt 4 on a Thunderbolt 5 Mac" in res["tb_speed"].value
    facts = mac_facts(monkeypatch, tb="sp_thunderbolt_tb5.json")
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, ring_neighbours(CONFIG)["mini1"]))
    assert res["tb_speed"].status == "ok" and "Thunderbolt 5" in res["tb_speed"].value


def test_three_minis_cabled_in_a_loop_through_the_bridge(monkeypatch):
    reports = {}
    for i, node in enumerate(NODES, 1):
        reports[node.name] = mac_facts(monkeypatch, node, tb=f"sp_thunderbolt_tb4_mini{i}.json")
    loops = tb_loops(reports)
    assert set(loops) == {"mini1", "mini2", "mini3"}
    assert "loop" in loops["mini1"]
    # take the ports out of the bridge on one Mac: no layer-2 loop any more
    reports["mini2"]["interfaces"]["bridge_members"] = []
    assert tb_loops(reports) == {}
    # a chain (mini3 unplugged from mini1) has no loop
    reports = {}
    for i, node in enumerate(NODES, 1):
        reports[node.name] = mac_facts(monkeypatch, node, tb=f"sp_thunderbolt_tb4_mini{i}.json")
    for port in reports["mini3"]["macos"]["thunderbolt"]["ports"]:
        if port["port"] == 2:
            port["peers"] = []
    for port in reports["mini1"]["macos"]["thunderbolt"]["ports"]:
        if port["port"] == 2:
            port["peers"] = []
    assert tb_loops(reports) == {}


# -- RDMA over Thunderbolt (ring.backend: jaccl) -------------------------------------------------

JACCL = dataclasses.replace(CONFIG, ring=RingOptions(backend="jaccl"))
RDMA_OK = dict(
    rdma_ctl="rdma_ctl_status_enabled.txt",
    ibv_devices="ibv_devices_m4pro.txt",
    ibv_devinfo="ibv_devinfo_m4pro.txt",
)


def test_rdma_parsers_on_samples():
    assert pm.parse_rdma_ctl_status(sample("rdma_ctl_status_enabled.txt")) == "enabled"
    assert pm.parse_rdma_ctl_status(sample("rdma_ctl_status_disabled.txt")) == "disabled"
    assert pm.parse_ibv_devices(sample("ibv_devices_m4pro.txt")) == ["rdma_en2", "rdma_en3", "rdma_en4"]
    assert pm.parse_ibv_devices(sample("ibv_devices_none.txt")) == []  # header and rule only
    assert pm.parse_ibv_devinfo(sample("ibv_devinfo_m4pro.txt")) == {
        "rdma_en2": "PORT_ACTIVE",
        "rdma_en3": "PORT_ACTIVE",
        "rdma_en4": "PORT_DOWN",
    }
    with pytest.raises(ValueError):
        pm.parse_rdma_ctl_status("\n")


def rdma_check(monkeypatch, config: Config = JACCL, **over):
    facts = mac_facts(monkeypatch, config=config, **over)
    res = by_name(node_results(config, NODES[0], facts, VERSIONS, ring_neighbours(config)["mini1"]))
    return facts, res.get("rdma")


def test_jaccl_rdma_enabled_with_devices(monkeypatch):
    facts, r = rdma_check(monkeypatch, **RDMA_OK)
    assert facts["macos"]["rdma"] == {
        "status": "enabled",
        "enabled": True,
        "devices": [
            {"name": "rdma_en2", "port_state": "PORT_ACTIVE"},
            {"name": "rdma_en3", "port_state": "PORT_ACTIVE"},
            {"name": "rdma_en4", "port_state": "PORT_DOWN"},
        ],
    }
    assert (r.status, r.value) == ("ok", "enabled; active: rdma_en2, rdma_en3 (of 3)")


def test_jaccl_rdma_disabled_names_recovery(monkeypatch):
    _, r = rdma_check(
        monkeypatch, rdma_ctl="rdma_ctl_status_disabled.txt", ibv_devices="ibv_devices_none.txt"
    )
    assert (r.status, r.value) == ("fail", "RDMA disabled (rdma_ctl status)")
    assert "Recovery" in r.hint and "`rdma_ctl enable`" in r.hint


def test_jaccl_rdma_enabled_without_devices_or_active_ports(monkeypatch):
    _, r = rdma_check(monkeypatch, rdma_ctl="rdma_ctl_status_enabled.txt", ibv_devices="ibv_devices_none.txt")
    assert (r.status, r.value) == ("fail", "RDMA enabled, no rdma_* devices")
    facts, _ = rdma_check(monkeypatch, **RDMA_OK)
    for d in facts["macos"]["rdma"]["devices"]:
        d["port_state"] = "PORT_DOWN"
    r = by_name(node_results(JACCL, NODES[0], facts, VERSIONS, ring_neighbours(JACCL)["mini1"]))["rdma"]
    assert r.status == "warn" and "none active" in r.value and "PORT_ACTIVE" in r.hint


def test_jaccl_on_a_mac_without_rdma_ctl(monkeypatch):
    _, r = rdma_check(monkeypatch)  # no rdma_ctl, no ibv_devices: macOS before 26.2
    assert (r.status, r.value) == ("fail", "no rdma_ctl on this Mac")
    assert "macOS 26.2" in r.hint


def test_no_rdma_check_unless_the_backend_is_jaccl(monkeypatch):
    asked: list[tuple[str, ...]] = []
    run = fake_run(mac_table(**RDMA_OK))
    monkeypatch.setattr(nodeprobe, "run", lambda argv, **kw: asked.append(tuple(argv)) or run(argv, **kw))
    monkeypatch.setattr(nodeprobe, "probe_ping", lambda ip, darwin: pl.parse_ping(sample("ping_ok.txt")))
    monkeypatch.setattr(nodeprobe, "probe_ports", lambda ip, port, ranks: {str(port): "free"})
    facts = nodeprobe.collect(probe_request(CONFIG, NODES[0], []), platform_name="darwin")
    assert "rdma" not in facts["macos"] and not any(a[0] in ("rdma_ctl", "ibv_devices") for a in asked)
    res = by_name(node_results(CONFIG, NODES[0], facts, VERSIONS, []))
    assert "rdma" not in res
    for backend in ("boltring", "mlx-ring"):
        cfg = dataclasses.replace(CONFIG, ring=RingOptions(backend=backend))
        assert "rdma" not in by_name(node_results(cfg, NODES[0], facts, VERSIONS, []))


def test_jaccl_on_linux_fails_clearly():
    cfg = JACCL
    facts = {"platform": "linux", "boltring": {"installed": True, "version": "x"}, "mlx": {"version": "x"}}
    r = by_name(node_results(cfg, NODES[0], facts, VERSIONS, []))["rdma"]
    assert r.status == "fail" and r.value == "not macOS (linux)" and "mlx-ring" in r.hint
