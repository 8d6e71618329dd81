"""Linux parsers, on canned text and live on this machine, and the node probe run for real
against loopback (ring_ip 127.0.0.1 on lo). Only loopback is ever contacted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.cluster.agent import nodeprobe
from boltring.cluster.agent import probes_linux as pl
from boltring.cluster.nodes.checks import run as checks

IP_ADDR = json.dumps(
    [
        {
            "ifindex": 1,
            "ifname": "lo",
            "flags": ["LOOPBACK", "UP", "LOWER_UP"],
            "mtu": 65536,
            "operstate": "UNKNOWN",
            "link_type": "loopback",
            "addr_info": [
                {"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                {"family": "inet6", "local": "::1", "prefixlen": 128},
            ],
        },
        {
            "ifindex": 2,
            "ifname": "eth0",
            "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
            "mtu": 1500,
            "operstate": "UP",
            "link_type": "ether",
            "addr_info": [{"family": "inet", "local": "198.18.0.1", "prefixlen": 24}],
        },
        {
            "ifindex": 3,
            "ifname": "tb0",
            "flags": ["BROADCAST", "MULTICAST"],
            "mtu": 9000,
            "operstate": "DOWN",
            "link_type": "ether",
            "addr_info": [{"family": "inet", "local": "198.18.1.1", "prefixlen": 24}],
        },
        {
            "ifindex": 4,
            "ifname": "tb1",
            "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"],
            "mtu": 1500,
            "operstate": "LOWERLAYERDOWN",
            "link_type": "ether",
            "addr_info": [],
        },
    ]
)


def test_ip_addr_flags_and_addresses():
    ifs = pl.parse_ip_addr(IP_ADDR)
    assert ifs["lo"]["up"] and ifs["eth0"]["up"]
    assert not ifs["tb0"]["up"] and not ifs["tb0"]["admin_up"]  # ip link set tb0 down
    assert not ifs["tb1"]["up"] and ifs["tb1"]["admin_up"]  # up, but no carrier
    assert ifs["tb0"]["mtu"] == 9000
    assert pl.find_iface_with_ip(ifs, "198.18.1.1") == "tb0"
    assert pl.find_iface_with_ip(ifs, "127.0.0.3") == "lo"  # all of 127/8 is local on Linux
    assert pl.find_iface_with_ip(ifs, "198.18.1.9") is None


def test_route_get_and_default():
    assert pl.parse_ip_route_get(
        '[{"dst":"198.18.1.2","dev":"tb0","prefsrc":"198.18.1.1","flags":[],"uid":0,"cache":[]}]'
    ) == {"iface": "tb0", "gateway": None, "src": "198.18.1.1", "type": "unicast"}
    via = pl.parse_ip_route_get('[{"dst":"198.18.1.2","gateway":"198.18.0.254","dev":"eth0"}]')
    assert via["iface"] == "eth0" and via["gateway"] == "198.18.0.254"
    assert pl.parse_ip_route_default('[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]}]') == [
        {"iface": "eth0", "gateway": "192.0.2.1", "metric": 0}
    ]
    with pytest.raises(ValueError):
        pl.parse_ip_route_get("[]")


def test_ping_iputils_and_busybox():
    iputils = (
        "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n\n--- 127.0.0.1 ping statistics ---\n"
        "3 packets transmitted, 3 received, 0% packet loss, time 408ms\n"
        "rtt min/avg/max/mdev = 0.018/0.024/0.033/0.006 ms\n"
    )
    assert pl.parse_ping(iputils) == {
        "sent": 3,
        "received": 3,
        "loss_pct": 0.0,
        "min_ms": 0.018,
        "avg_ms": 0.024,
        "max_ms": 0.033,
    }
    lost = (
        "--- 198.18.1.2 ping statistics ---\n"
        "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2040ms\n"
    )
    assert pl.parse_ping(lost)["received"] == 0
    busybox = (
        "--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 3 packets received, 0% packet loss\n"
        "round-trip min/avg/max = 0.101/0.150/0.202 ms\n"
    )
    assert pl.parse_ping(busybox)["avg_ms"] == 0.150


def test_cpuinfo_and_meminfo():
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
    assert pl.parse_cpuinfo(x86) == {"chip": "AMD EPYC 7B13", "cores": 2}
    arm = "processor\t: 0\nBogoMIPS\t: 48.00\nCPU part\t: 0xd0b\n\nHardware\t: BCM2835\nModel\t: Raspberry Pi 5\n"
    assert pl.parse_cpuinfo(arm)["chip"] == "BCM2835"
    mem = pl.parse_meminfo(
        "MemTotal:       24683656 kB\nMemFree:        23786256 kB\nMemAvailable:   24344432 kB\n"
    )
    assert mem == {
        "memory_bytes": 24683656 * 1024,
        "available_bytes": 24344432 * 1024,
        "free_bytes": 23786256 * 1024,
    }


def test_parsers_on_this_machine():
    ifs = pl.parse_ip_addr(
        subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    )
    assert ifs["lo"]["up"] and pl.find_iface_with_ip(ifs, "127.0.0.1") == "lo"
    route = pl.parse_ip_route_get(
        subprocess.run(
            ["ip", "-j", "route", "get", "127.0.0.2"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert route["iface"] == "lo"
    assert pl.parse_meminfo(Path("/proc/meminfo").read_text())["memory_bytes"] > 0
    assert "chip" in pl.parse_cpuinfo(Path("/proc/cpuinfo").read_text())


REQUEST = {
    "ring_ip": "127.0.0.1",
    "ring_iface": "lo",
    "ring_port": 52520,
    "ranks": 2,
    "neighbours": [{"name": "peer", "ring_ip": "127.0.0.2", "port": 52520}],
}


def run_probe(argv: list[str], stdin: str, cwd: str | None = None) -> dict:
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, cwd=cwd)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, "the probe prints exactly one JSON object"
    return json.loads(lines[0])


def test_nodeprobe_live_on_loopback():
    facts = run_probe([sys.executable, "-m", "boltring.cluster.agent.nodeprobe"], json.dumps(REQUEST))
    assert facts["platform"] == "linux"
    assert facts["python"]["executable"] == sys.executable
    assert facts["boltring"]["installed"] and facts["boltring"]["version"] != "unknown"
    assert "version" in facts["mlx"]
    assert facts["hardware"]["chip"] and facts["memory"]["total_bytes"] > 0
    assert facts["memory"]["available_bytes"] <= facts["memory"]["total_bytes"]
    ifs = facts["interfaces"]
    assert (ifs["ring_iface"], ifs["holder"], ifs["exists"], ifs["up"]) == ("lo", "lo", True, True)
    assert ifs["mtu"] >= 1500 and "127.0.0.1" in ifs["addresses"]
    assert set(facts["ports"]) == {"52520", "52521"}
    (peer,) = facts["neighbours"]
    assert peer["route"]["iface"] == "lo"
    if shutil.which("ping"):
        assert peer["ping"]["received"] == 3 and peer["ping"]["avg_ms"] < 5
    else:
        assert peer["ping"]["missing"]
    assert facts["elapsed_s"] < 5


def test_nodeprobe_finds_the_interface_from_the_address():
    facts = run_probe(
        [sys.executable, "-m", "boltring.cluster.agent.nodeprobe"],
        json.dumps({**REQUEST, "ring_iface": None, "neighbours": []}),
    )
    assert facts["interfaces"]["ring_iface"] == "lo"
    assert facts["interfaces"]["resolved_by"] == "address"


def test_nodeprobe_missing_iface_and_bad_request():
    facts = run_probe(
        [sys.executable, "-m", "boltring.cluster.agent.nodeprobe"],
        json.dumps({**REQUEST, "ring_iface": "tb9", "neighbours": []}),
    )
    assert facts["interfaces"]["exists"] is False
    p = subprocess.run(
        [sys.executable, "-m", "boltring.cluster.agent.nodeprobe"],
        input="{nope",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2 and "bad request" in json.loads(p.stdout)["error"]


def test_nodeprobe_is_stdlib_only_when_shipped_as_source(tmp_path):
    """`python -S` has no site-packages: no boltring, no mlx. The controller's fallback ships
    the three modules as source, and the probe still reports everything else. (Run outside the
    repository, whose boltring.egg-info would otherwise be found on sys.path[0].)"""
    stdin = checks._bootstrap_input(REQUEST).decode()
    facts = run_probe([sys.executable, "-S", "-c", nodeprobe.BOOTSTRAP], stdin, cwd=str(tmp_path))
    assert facts["boltring"] == {"version": "unknown", "installed": False}
    assert "No module named 'mlx'" in facts["mlx"]["error"]
    assert facts["interfaces"]["ring_iface"] == "lo" and facts["interfaces"]["up"]
    assert facts["neighbours"][0]["route"]["iface"] == "lo"


def test_a_failing_probe_is_an_error_field(monkeypatch):
    def broken(*a, **kw):
        raise nodeprobe.ProbeError("ip not found")

    monkeypatch.setattr(nodeprobe, "run", broken)
    facts = nodeprobe.collect(REQUEST, platform_name="linux")
    assert facts["interfaces"]["error"] == "ip not found"
    assert facts["neighbours"][0]["route"] == {"error": "ip not found"}
    assert facts["memory"]["total_bytes"] > 0  # /proc still read


def test_ping_missing(monkeypatch):
    monkeypatch.setattr(nodeprobe, "_which", lambda cmd: None)
    assert nodeprobe.probe_ping("127.0.0.1", darwin=False) == {"error": "ping not found", "missing": True}


def test_ping_arguments_per_platform():
    mac = nodeprobe._ping_argv("10.0.0.2", darwin=True, interval=True)
    assert mac[mac.index("-W") + 1] == "1000" and "-t" in mac  # BSD: -W in ms, -t overall
    lin = nodeprobe._ping_argv("10.0.0.2", darwin=False, interval=True)
    assert lin[lin.index("-W") + 1] == "1" and "-w" in lin  # iputils: -W in s, -w deadline
