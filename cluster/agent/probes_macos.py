"""Parsers for the macOS commands the node probe runs: text in, plain dicts out.

Pure functions only (no subprocesses, no platform checks), so every one is tested on sample
outputs under tests/samples/macos/ on any machine. Stdlib only: this module is imported by
`nodeprobe` on user nodes that have nothing but Python and boltring.

Over ~400 lines on purpose: one small parser per command, in ONE file, because the controller
ships this file as source to a node where boltring is not installed (nodeprobe.BOOTSTRAP).

Commands and the formats parsed here:
  sysctl -n machdep.cpu.brand_string hw.memsize         two lines: chip name, bytes
  system_profiler SPHardwareDataType -json               chip_type, physical_memory, machine_name
  system_profiler SPThunderboltDataType -json            one bus per port, peers in _items
  networksetup -listallhardwareports                     "Hardware Port:" / "Device:" blocks
  networksetup -getinfo "Thunderbolt Bridge"             "DHCP Configuration" / "Manual Configuration"
  ifconfig                                               one block per interface
  route -n get IP                                        "interface:", "gateway:"
  netstat -rn                                            routing table, "Internet:" section
  vm_stat                                                page counts
  ping -c N IP                                           "round-trip min/avg/max/stddev = …"
  rdma_ctl status                                        "enabled" / "disabled" (macOS 26.2+)
  ibv_devices                                            RDMA devices: "rdma_en2  <node GUID>"
  ibv_devinfo                                            "hca_id: rdma_en2" … "state: PORT_ACTIVE (4)"
"""

from __future__ import annotations

import json
import re

THUNDERBOLT_BRIDGE_PORT = "Thunderbolt Bridge"
SELF_ASSIGNED_PREFIX = "169.254."

# Chips whose Thunderbolt ports are Thunderbolt 5 (80 Gb/s, 120 Gb/s with Bandwidth Boost).
TB5_CHIPS = ("M4 Pro", "M4 Max", "M3 Ultra", "M5 Pro", "M5 Max", "M5 Ultra")


# -- hardware ----------------------------------------------------------------------------------


def parse_sysctl_chip_memory(text: str) -> dict:
    """`sysctl -n machdep.cpu.brand_string hw.memsize` → {"chip", "memory_bytes"}."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out: dict = {}
    for ln in lines:
        if ln.isdigit():
            out["memory_bytes"] = int(ln)
        elif "chip" not in out:
            out["chip"] = ln
    return out


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.I)


def parse_size(text: str) -> int | None:
    """ "64 GB", "16MB", "1GiB", "16M" or "4096" → bytes, None when unreadable.

    Binary units with decimal names, as system_profiler, MLX's and nccl-tests' tables use them.
    The one size parser: `boltring bench` uses it too (this module is standard library only,
    so the laptop may import it)."""
    m = _SIZE_RE.match(text or "")
    if not m:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_sp_hardware(text: str) -> dict:
    """`system_profiler SPHardwareDataType -json` → {"chip", "memory_bytes", "model", "model_id"}."""
    data = json.loads(text)
    items = data.get("SPHardwareDataType") or []
    if not items:
        raise ValueError("SPHardwareDataType is empty")
    hw = items[0]
    out: dict = {}
    chip = hw.get("chip_type") or hw.get("cpu_type")
    if chip:
        out["chip"] = chip
    mem = parse_size(hw.get("physical_memory", ""))
    if mem:
        out["memory_bytes"] = mem
    if hw.get("machine_name"):
        out["model"] = hw["machine_name"]
    if hw.get("machine_model"):
        out["model_id"] = hw["machine_model"]
    if hw.get("number_processors"):
        out["cores"] = hw["number_processors"]
    return out


def parse_vm_stat(text: str) -> dict:
    """`vm_stat` → {"page_size", "free_bytes", "available_bytes"}.

    Available = free + inactive + speculative + purgeable pages: what macOS can hand to a new
    process without swapping (Activity Monitor's "memory used" is the complement)."""
    m = re.search(r"page size of (\d+) bytes", text)
    page = int(m.group(1)) if m else 4096
    pages: dict[str, int] = {}
    for ln in text.splitlines():
        mm = re.match(r'\s*"?([A-Za-z][A-Za-z \-"]*?)"?:\s+(\d+)\.?\s*$', ln)
        if mm:
            pages[mm.group(1).strip().lower()] = int(mm.group(2))
    if "pages free" not in pages:
        raise ValueError("vm_stat output has no 'Pages free' line")
    free = pages.get("pages free", 0)
    avail = (
        free
        + pages.get("pages inactive", 0)
        + pages.get("pages speculative", 0)
        + pages.get("pages purgeable", 0)
    )
    return {"page_size": page, "free_bytes": free * page, "available_bytes": avail * page}


# -- network configuration ---------------------------------------------------------------------


def parse_hardware_ports(text: str) -> list[dict]:
    """`networksetup -listallhardwareports` → [{"port": "Thunderbolt Bridge", "device": "bridge0",
    "mac": "…"}], in listed order (the VLAN section at the end is ignored)."""
    ports: list[dict] = []
    cur: dict | None = None
    for ln in text.splitlines():
        s = ln.strip()
        if s.startswith("Hardware Port:"):
            cur = {"port": s.split(":", 1)[1].strip()}
            ports.append(cur)
        elif cur is not None and s.startswith("Device:"):
            cur["device"] = s.split(":", 1)[1].strip()
        elif cur is not None and s.startswith("Ethernet Address:"):
            cur["mac"] = s.split(":", 1)[1].strip()
        elif s.startswith("VLAN Configurations"):
            break
    return [p for p in ports if p.get("device")]


def thunderbolt_bridge_device(ports: list[dict]) -> str | None:
    for p in ports:
        if p["port"] == THUNDERBOLT_BRIDGE_PORT:
            return p["device"]
    return None


def thunderbolt_port_devices(ports: list[dict]) -> dict[int, str]:
    """{1: "en1", 2: "en2", …} from the "Thunderbolt N" hardware ports."""
    out: dict[int, str] = {}
    for p in ports:
        m = re.fullmatch(r"Thunderbolt (\d+)", p["port"])
        if m:
            out[int(m.group(1))] = p["device"]
    return out


def is_thunderbolt_port(port: str | None) -> bool:
    """ "Thunderbolt 1", "Thunderbolt 2", … or "Thunderbolt Bridge": a hardware port (as
    `port_names` gives them) whose traffic goes over Thunderbolt cables."""
    return port == THUNDERBOLT_BRIDGE_PORT or re.fullmatch(r"Thunderbolt \d+", port or "") is not None


def port_names(ports: list[dict]) -> dict[str, str]:
    """{"en0": "Ethernet", "en1": "Wi-Fi", "bridge0": "Thunderbolt Bridge", …}."""
    return {p["device"]: p["port"] for p in ports}


def parse_networksetup_getinfo(text: str) -> dict:
    """`networksetup -getinfo SERVICE` → {"config": "dhcp"|"manual"|"bootp"|"off"|…, "ip",
    "subnet_mask", "router"}. "(null)" and "none" become None."""
    out: dict = {}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("networksetup -getinfo printed nothing")
    if "is not a recognized network service" in text:
        raise ValueError(lines[0])
    first = lines[0].lower()
    if first.startswith("dhcp configuration"):
        out["config"] = "dhcp"
    elif first.startswith("manual configuration"):
        out["config"] = "manual"
    elif first.startswith("bootp configuration"):
        out["config"] = "bootp"
    elif "ipv4 is off" in first or first.startswith("ipv4 off"):
        out["config"] = "off"
    else:
        out["config"] = first
    keys = {"ip address": "ip", "subnet mask": "subnet_mask", "router": "router"}
    for ln in lines[1:]:
        if ":" not in ln:
            continue
        k, v = ln.split(":", 1)
        k, v = k.strip().lower(), v.strip()
        if k in keys:
            out[keys[k]] = None if v in ("", "(null)", "none") else v
    return out


def _hex_netmask(mask: str) -> int | None:
    if mask.startswith("0x"):
        try:
            return bin(int(mask, 16)).count("1")
        except ValueError:
            return None
    parts = mask.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return sum(bin(int(p)).count("1") for p in parts)
    return None


def parse_ifconfig(text: str) -> dict[str, dict]:
    """`ifconfig` (all interfaces, or one) → {name: {"flags": [...], "up": bool, "running": bool,
    "mtu": int, "inet": [{"addr", "prefixlen", "broadcast"}], "inet6": [...], "ether",
    "members": [names], "status": "active"|"inactive"|None, "media"}}."""
    ifaces: dict[str, dict] = {}
    cur: dict | None = None
    for ln in text.splitlines():
        if not ln.strip():
            continue
        m = re.match(r"^([A-Za-z][\w.\-]*): flags=[0-9a-fA-F]+<([^>]*)>(?:\s+mtu\s+(\d+))?", ln)
        if m:
            flags = [f for f in m.group(2).split(",") if f]
            cur = {
                "flags": flags,
                "up": "UP" in flags,
                "running": "RUNNING" in flags,
                "mtu": int(m.group(3)) if m.group(3) else None,
                "inet": [],
                "inet6": [],
                "members": [],
                "status": None,
            }
            ifaces[m.group(1)] = cur
            continue
        if cur is None:
            continue
        s = ln.strip()
        words = s.split()
        if words[0] == "inet" and len(words) >= 2:
            entry: dict = {"addr": words[1]}
            if "netmask" in words:
                entry["prefixlen"] = _hex_netmask(words[words.index("netmask") + 1])
            if "broadcast" in words:
                entry["broadcast"] = words[words.index("broadcast") + 1]
            cur["inet"].append(entry)
        elif words[0] == "inet6" and len(words) >= 2:
            cur["inet6"].append(words[1])
        elif words[0] == "ether" and len(words) >= 2:
            cur["ether"] = words[1]
        elif words[0] == "member:" and len(words) >= 2:
            cur["members"].append(words[1])
        elif words[0] == "status:":
            cur["status"] = " ".join(words[1:])
        elif words[0] == "media:":
            cur["media"] = " ".join(words[1:])
    return ifaces


def iface_is_up(info: dict) -> bool:
    """UP flag set, and the link is not reported inactive (bridge0 with no cable says inactive)."""
    return bool(info.get("up")) and info.get("status") in (None, "active")


def find_iface_with_ip(ifaces: dict[str, dict], ip: str) -> str | None:
    for name, info in ifaces.items():
        if any(a["addr"] == ip for a in info.get("inet", [])):
            return name
    return None


def is_self_assigned(ip: str) -> bool:
    return ip.startswith(SELF_ASSIGNED_PREFIX)


# -- routing -----------------------------------------------------------------------------------


def parse_route_get(text: str) -> dict:
    """`route -n get IP` → {"destination", "gateway", "iface", "flags": [...]}.

    Raises ValueError with route's own message when there is no route ("not in table")."""
    out: dict = {}
    for ln in text.splitlines():
        if ":" not in ln:
            continue
        k, v = ln.split(":", 1)
        k, v = k.strip(), v.strip()
        if k == "interface":
            out["iface"] = v
        elif k == "gateway":
            out["gateway"] = v
        elif k == "destination":
            out["destination"] = v
        elif k == "route to":
            out["route_to"] = v
        elif k == "flags":
            out["flags"] = [f for f in v.strip("<>").split(",") if f]
        elif k == "route" and "not in table" in v:
            raise ValueError("no route: " + v)
    if "iface" not in out:
        msg = text.strip().splitlines()[-1] if text.strip() else "route printed nothing"
        raise ValueError(f"no interface in route output: {msg}")
    return out


def parse_netstat_rn(text: str) -> list[dict]:
    """`netstat -rn` → the IPv4 routes: [{"destination", "gateway", "flags", "iface"}].

    Columns are found from the header line (older macOS has Refs/Use columns, newer does not);
    the table is whitespace separated and no field contains spaces."""
    routes: list[dict] = []
    in_v4 = False
    cols: list[str] | None = None
    for ln in text.splitlines():
        s = ln.strip()
        if s == "Internet:":
            in_v4, cols = True, None
            continue
        if s.startswith("Internet6:"):
            in_v4 = False
            continue
        if not in_v4 or not s:
            continue
        words = s.split()
        if words[0] == "Destination":
            cols = [w.lower() for w in words]
            continue
        if cols is None:
            continue
        row = dict(zip(cols, words, strict=False))
        iface = row.get("netif") or row.get("interface")
        if iface is None or len(words) < 4:
            continue
        routes.append(
            {
                "destination": row.get("destination"),
                "gateway": row.get("gateway"),
                "flags": row.get("flags", ""),
                "iface": iface,
            }
        )
    return routes


def default_routes(routes: list[dict]) -> list[dict]:
    """Default routes, each with "scoped": True when interface-scoped (flag I), which macOS keeps
    per service and never uses for unscoped traffic."""
    out = []
    for r in routes:
        if r["destination"] in ("default", "0/0"):  # how BSD netstat -rn names it
            out.append({**r, "scoped": "I" in (r.get("flags") or "")})
    return out


# -- Thunderbolt -------------------------------------------------------------------------------


def parse_speed_gbps(text: str | None) -> float | None:
    if not text:
        return None
    m = re.search(r"([\d.]+)\s*Gb/s", text)
    return float(m.group(1)) if m else None


def parse_sp_thunderbolt(text: str) -> list[dict]:
    """`system_profiler SPThunderboltDataType -json` → one dict per port (bus):

        {"bus": "thunderboltusb4_bus_0", "port": 1, "domain_uuid": "…",
         "speed": "Up to 40 Gb/s", "speed_gbps": 40.0, "up_to": True,
         "connected": True, "link_status": "0x2",
         "peers": [{"name": "Mac mini", "domain_uuid": "…", "model_id": "Mac16,11",
                    "vendor": "Apple Inc."}]}

    `speed` is the receptacle's "current_speed_key": "Up to N Gb/s" is the port's capability
    (what an idle port shows), a bare "N Gb/s" the negotiated link. `peers` are the devices
    plugged in; a peer Mac has its own port's domain UUID, which is how cables are matched."""
    data = json.loads(text)
    buses = data.get("SPThunderboltDataType")
    if buses is None:
        raise ValueError("no SPThunderboltDataType in system_profiler output")
    ports: list[dict] = []
    for bus in buses:
        tag = None
        for k, v in bus.items():
            if re.fullmatch(r"receptacle_\d+_tag", k) and isinstance(v, dict):
                tag = v
                break
        tag = tag or {}
        speed = tag.get("current_speed_key")
        try:
            port_no = int(str(tag.get("receptacle_id_key")))
        except (TypeError, ValueError):
            port_no = None
        peers = []
        for item in bus.get("_items") or []:
            peers.append(
                {
                    "name": item.get("_name"),
                    "domain_uuid": item.get("domain_uuid_key"),
                    "model_id": item.get("device_name_key"),
                    "vendor": item.get("vendor_name_key"),
                    "speed": (item.get("receptacle_upstream_ambiguous_tag") or {}).get("current_speed_key"),
                    "ip_service": any(
                        s.get("_name") == "service_ip"
                        for s in item.get("services_title") or []
                        if isinstance(s, dict)
                    ),
                }
            )
        status = tag.get("receptacle_status_key")
        ports.append(
            {
                "bus": bus.get("_name"),
                "port": port_no,
                "domain_uuid": bus.get("domain_uuid_key"),
                "speed": speed,
                "speed_gbps": parse_speed_gbps(speed),
                "up_to": bool(speed and speed.strip().lower().startswith("up to")),
                "link_status": tag.get("link_status_key"),
                "connected": status == "receptacle_connected" or (status is None and bool(peers)),
                "peers": peers,
            }
        )
    return ports


def port_capability_gbps(ports: list[dict], chip: str | None = None) -> float | None:
    """The fastest link this Mac's ports can do: the largest "Up to N Gb/s" (an idle port shows
    its capability), else the largest speed seen, raised to 80 for chips known to be TB5."""
    cap = max((p["speed_gbps"] for p in ports if p.get("up_to") and p.get("speed_gbps")), default=None)
    if cap is None:
        cap = max((p["speed_gbps"] for p in ports if p.get("speed_gbps")), default=None)
    if chip and any(c in chip for c in TB5_CHIPS):
        cap = max(cap or 0.0, 80.0)
    return cap


def tb_generation(gbps: float | None) -> str:
    if gbps is None:
        return "unknown"
    if gbps >= 80:
        return "Thunderbolt 5"
    if gbps >= 40:
        return "Thunderbolt 4"
    if gbps >= 20:
        return "Thunderbolt 3 / USB4 20G"
    return "USB"


# -- RDMA over Thunderbolt (MLX's jaccl backend) ------------------------------------------------
# RDMA is switched on once per Mac from macOS Recovery (`rdma_ctl enable`); then every Thunderbolt
# port gets an RDMA device named after its network device (en2 -> rdma_en2). MLX's own
# `mlx.distributed_config` decides "RDMA enabled" the same way: some `ibv_devices` word starts
# with "rdma_". A device's port is PORT_ACTIVE once the Mac at the other end of its cable has RDMA
# enabled too.


def parse_rdma_ctl_status(text: str) -> str:
    """`rdma_ctl status` → "enabled", "disabled", or its own words (lower case) otherwise."""
    words = " ".join(text.split()).lower()
    if not words:
        raise ValueError("rdma_ctl status printed nothing")
    return words


def parse_ibv_devices(text: str) -> list[str]:
    """`ibv_devices` → the RDMA device names ("rdma_en2", …), in listed order. The table has a
    "device / node GUID" header and a dashed rule; without RDMA it is only those two lines."""
    out: list[str] = []
    for ln in text.splitlines():
        words = ln.split()
        if words and words[0].startswith("rdma_"):
            out.append(words[0])
    return out


def parse_ibv_devinfo(text: str) -> dict[str, str]:
    """`ibv_devinfo` → {device: port state} ("PORT_ACTIVE", "PORT_DOWN", …): the first "state:"
    line after each "hca_id:" line (a device has one port)."""
    out: dict[str, str] = {}
    current: str | None = None
    for ln in text.splitlines():
        s = ln.strip()
        if s.startswith("hca_id:"):
            current = s.split(":", 1)[1].strip()
        elif current is not None and s.startswith("state:") and current not in out:
            out[current] = s.split(":", 1)[1].split()[0]
    return out
