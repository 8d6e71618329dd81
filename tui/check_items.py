"""How check results are named, ordered, merged and marked on screen (no widget in here)."""

from __future__ import annotations

from dataclasses import replace

from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.states import CheckStatus

# Short labels for the check names the controller uses (cluster/nodes/checks); unknown names
# are shown as they are. Their order here is the order a panel lists them in.
CHECK_LABELS = {
    "ssh": "ssh",
    "probe": "probe",
    "ring_iface": "iface",
    "ring_ip": "ip",
    "link": "",  # a panel's merge of route:<peer> and rtt:<peer>
    "route": "route",
    "rtt": "rtt",
    "bw": "bw",
    "bandwidth": "bw",
    "python": "py",
    "mlx": "mlx",
    "memory": "mem",
    "boltring": "boltring",
    "chip": "chip",
    "mtu": "mtu",
    "ports": "ports",
    "default_route": "default route",
    "bridge_dhcp": "bridge dhcp",
    "tb_speed": "tb speed",
    "tb_loop": "tb loop",
}
CHECK_ORDER = tuple(CHECK_LABELS)
# What a panel always lists with its value; the rest only when not ok (the details screen
# lists everything).
PANEL_CHECKS = ("ring_iface", "link", "route", "rtt", "bw", "bandwidth", "python", "mlx", "memory")
SEVERITY = {CheckStatus.OK: 0, CheckStatus.SKIPPED: 1, CheckStatus.WARN: 2, CheckStatus.FAIL: 3}
CHECK_MARKS = {CheckStatus.OK: "✓", CheckStatus.WARN: "!", CheckStatus.FAIL: "✗", CheckStatus.SKIPPED: "–"}
NOT_OK = (CheckStatus.WARN, CheckStatus.FAIL)


def check_label(name: str) -> str:
    base, _, peer = name.partition(":")
    label = CHECK_LABELS.get(base, base)
    return f"{label}→{peer}" if peer else label


def merge_links(checks: list[CheckResult]) -> list[CheckResult]:
    """route:<peer> and rtt:<peer> as one "→peer via bridge0, 0.42 ms" item (worst status)."""
    by_name = {c.name: c for c in checks}
    out: list[CheckResult] = []
    for c in checks:
        base, _, peer = c.name.partition(":")
        if base == "rtt" and f"route:{peer}" in by_name:
            continue
        rtt = by_name.get(f"rtt:{peer}") if base == "route" else None
        if rtt is None:
            out.append(c)
            continue
        worst = max((c, rtt), key=lambda r: SEVERITY.get(r.status, 0))
        value = ", ".join(v for v in (c.value, rtt.value) if v) or None
        ok = CheckStatus.OK
        hint = c.hint if c.status != ok and c.hint else rtt.hint if rtt.status != ok else None
        out.append(replace(c, name=f"link:{peer}", status=worst.status, value=value, hint=hint))
    return out


def check_sort_key(name: str) -> tuple[int, str]:
    base = name.partition(":")[0]
    try:
        return (CHECK_ORDER.index(base), name)
    except ValueError:
        return (len(CHECK_ORDER), name)


def parse_gbits(value: str | None) -> float | None:
    """A bandwidth check's value ("31.8 Gb/s", "940 Mb/s", "3.9 GB/s") in GB/s (bytes), or None."""
    words = (value or "").split()
    try:
        number = float(words[0])
    except (ValueError, IndexError):
        return None
    unit = words[1] if len(words) > 1 else "Gb/s"
    scale = {"GB/s": 1.0, "MB/s": 1e-3, "Gb/s": 1 / 8, "Mb/s": 1 / 8000}.get(unit)
    return None if scale is None else number * scale
