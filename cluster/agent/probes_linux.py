"""Parsers for the Linux sources the node probe reads: text in, plain dicts out.

Pure functions (no subprocesses), stdlib only, imported by `nodeprobe` on the node.
  /proc/cpuinfo, /proc/meminfo
  ip -j addr show                  interfaces, flags, MTU, IPv4 addresses
  ip -j route get IP               the device (and gateway) traffic to IP leaves through
  ip -j route show default         default routes
  ping -c N IP                     iputils "rtt min/avg/max/mdev = …" (busybox "round-trip …")
"""

from __future__ import annotations

import ipaddress
import json
import re


def parse_cpuinfo(text: str) -> dict:
    """/proc/cpuinfo → {"chip", "cores"}. x86 has "model name"; ARM boards may only have
    "Hardware"/"Model" lines or nothing human readable."""
    chip = None
    cores = 0
    fallback = None
    for ln in text.splitlines():
        if ":" not in ln:
            continue
        k, v = (s.strip() for s in ln.split(":", 1))
        k = k.lower()
        if k == "processor":
            cores += 1
        elif k == "model name" and chip is None and v:
            chip = v
        elif k in ("hardware", "model", "cpu model") and fallback is None and v and not v.isdigit():
            fallback = v
    out: dict = {}
    if chip or fallback:
        out["chip"] = chip or fallback
    if cores:
        out["cores"] = cores
    return out


def parse_meminfo(text: str) -> dict:
    """/proc/meminfo → {"memory_bytes", "available_bytes", "free_bytes"} (kB lines ×1024)."""
    vals: dict[str, int] = {}
    for ln in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", ln)
        if m:
            vals[m.group(1)] = int(m.group(2)) * 1024
    if "MemTotal" not in vals:
        raise ValueError("no MemTotal in /proc/meminfo")
    out = {"memory_bytes": vals["MemTotal"]}
    if "MemAvailable" in vals:
        out["available_bytes"] = vals["MemAvailable"]
    elif "MemFree" in vals:  # kernels before 3.14
        out["available_bytes"] = vals["MemFree"] + vals.get("Cached", 0)
    if "MemFree" in vals:
        out["free_bytes"] = vals["MemFree"]
    return out


def parse_ip_addr(text: str) -> dict[str, dict]:
    """`ip -j addr show` → {name: {"flags", "up", "lower_up", "operstate", "mtu", "inet": [{"addr",
    "prefixlen"}], "link_type", "master"}}.

    "up" means administratively up with carrier: UP and LOWER_UP flags, and an operstate of
    UP or UNKNOWN (loopback and some virtual links report UNKNOWN)."""
    data = json.loads(text or "[]")
    out: dict[str, dict] = {}
    for link in data:
        name = link.get("ifname")
        if not name:
            continue
        flags = link.get("flags") or []
        oper = link.get("operstate")
        inet = [
            {"addr": a.get("local"), "prefixlen": a.get("prefixlen")}
            for a in link.get("addr_info") or []
            if a.get("family") == "inet"
        ]
        out[name] = {
            "flags": flags,
            "up": "UP" in flags and "LOWER_UP" in flags and oper in ("UP", "UNKNOWN", None),
            "admin_up": "UP" in flags,
            "lower_up": "LOWER_UP" in flags,
            "operstate": oper,
            "mtu": link.get("mtu"),
            "inet": inet,
            "link_type": link.get("link_type"),
            "master": link.get("master"),
        }
    return out


def find_iface_with_ip(ifaces: dict[str, dict], ip: str) -> str | None:
    """The interface holding ip. Linux answers for a whole loopback prefix (127.0.0.2 is local
    when lo has 127.0.0.1/8), so a loopback address inside lo's prefix counts as held by lo."""
    for name, info in ifaces.items():
        if any(a["addr"] == ip for a in info.get("inet", [])):
            return name
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if not addr.is_loopback:
        return None
    for name, info in ifaces.items():
        if info.get("link_type") != "loopback":
            continue
        for a in info.get("inet", []):
            try:
                if addr in ipaddress.ip_network(f"{a['addr']}/{a.get('prefixlen') or 32}", strict=False):
                    return name
            except ValueError:
                continue
    return None


def parse_ip_route_get(text: str) -> dict:
    """`ip -j route get IP` → {"iface", "gateway", "src", "type"}."""
    data = json.loads(text or "[]")
    if not data:
        raise ValueError("ip route get returned no route")
    r = data[0]
    if not r.get("dev"):
        raise ValueError(f"route without a device: {r.get('type', 'unknown')} route")
    return {
        "iface": r["dev"],
        "gateway": r.get("gateway"),
        "src": r.get("prefsrc"),
        "type": r.get("type", "unicast"),
    }


def parse_ip_route_default(text: str) -> list[dict]:
    """`ip -j route show default` → [{"iface", "gateway", "metric"}]."""
    data = json.loads(text or "[]")
    return [{"iface": r.get("dev"), "gateway": r.get("gateway"), "metric": r.get("metric", 0)} for r in data]


def parse_ping(text: str) -> dict:
    """Ping summary → {"sent", "received", "loss_pct", "min_ms", "avg_ms", "max_ms"}; reads
    iputils and busybox (Linux) and BSD (macOS) output alike:

        3 packets transmitted, 3 received, 0% packet loss, time 408ms
        rtt min/avg/max/mdev = 0.018/0.024/0.033/0.006 ms
        3 packets transmitted, 3 packets received, 0.0% packet loss
        round-trip min/avg/max/stddev = 0.183/0.211/0.244/0.025 ms"""
    out: dict = {}
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received.*?([\d.]+)% packet loss", text)
    if m:
        out.update(sent=int(m.group(1)), received=int(m.group(2)), loss_pct=float(m.group(3)))
    m = re.search(r"(?:rtt|round-trip) min/avg/max(?:/\w+)? = ([\d.]+)/([\d.]+)/([\d.]+)", text)
    if m:
        out.update(min_ms=float(m.group(1)), avg_ms=float(m.group(2)), max_ms=float(m.group(3)))
    if "sent" not in out:
        raise ValueError("no ping statistics in output")
    return out
