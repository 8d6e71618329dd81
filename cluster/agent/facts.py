"""The shape of what `nodeprobe` reports about a node, shared by the node (which builds it) and the
laptop's checks (which read it). It travels as JSON, so these are `TypedDict`s over plain dicts:
no conversion on either side, and mypy checks every key that either side reads or writes.

Every dict is `total=False`: a probe that failed leaves {"error": "..."} in its place, and facts
from an older node simply lack newer keys; readers use `.get` and say "unknown".

Standard library only (a test enforces it): this file runs on nodes with nothing but Python.
"""

from __future__ import annotations

from typing import NamedTuple, TypedDict


class NeighbourRequest(TypedDict, total=False):
    name: str
    ring_ip: str
    port: int


class ProbeRequest(TypedDict, total=False):
    """What the laptop asks nodeprobe for (JSON on its stdin)."""

    ring_ip: str | None
    ring_iface: str | None
    ring_port: int | None
    ranks: int
    neighbours: list[NeighbourRequest]
    rdma: bool  # also probe RDMA over Thunderbolt (macOS; asked when ring.backend is jaccl)


class PythonFacts(TypedDict, total=False):
    version: str
    full_version: str
    executable: str
    implementation: str
    error: str


class BoltringFacts(TypedDict, total=False):
    version: str  # "unknown" when installed without metadata
    installed: bool
    error: str


class MlxFacts(TypedDict, total=False):
    version: str | None
    metal: bool
    error: str


class HardwareFacts(TypedDict, total=False):
    chip: str
    memory_bytes: int | None
    cores: int
    model: str
    model_id: str
    error: str | None


class MemoryFacts(TypedDict, total=False):
    total_bytes: int | None
    available_bytes: int | None
    free_bytes: int
    error: str


class IfaceSummary(TypedDict, total=False):
    up: bool
    mtu: int | None
    addresses: list[str]


class InterfaceFacts(TypedDict, total=False):
    """The ring interface as resolved on the node, plus every interface in short."""

    names: dict[str, str]  # device -> hardware port name ("en0" -> "Ethernet"), macOS
    bridge_device: str | None  # Thunderbolt Bridge's device ("bridge0"), macOS
    thunderbolt_devices: dict[str, str]  # Thunderbolt port number -> device ("1" -> "en1"), macOS
    bridge_members: list[str] | None
    holder: str | None  # the interface that holds ring_ip
    ring_iface: str | None
    resolved_by: str | None  # "config", "address" or "thunderbolt_bridge"
    exists: bool
    up: bool
    admin_up: bool | None
    mtu: int | None
    addresses: list[str]
    status: str | None
    members: list[str]
    member_status: dict[str, str | None]
    all: dict[str, IfaceSummary]
    error: str


class RouteFacts(TypedDict, total=False):
    iface: str
    gateway: str | None
    src: str | None
    type: str
    destination: str
    route_to: str
    flags: list[str]
    error: str


class PingFacts(TypedDict, total=False):
    sent: int
    received: int
    loss_pct: float
    min_ms: float
    avg_ms: float
    max_ms: float
    error: str
    missing: bool  # no ping program on the node


class NeighbourFacts(TypedDict, total=False):
    name: str | None
    ring_ip: str
    route: RouteFacts
    ping: PingFacts


class TbPeer(TypedDict, total=False):
    name: str | None
    domain_uuid: str | None
    model_id: str | None
    vendor: str | None
    speed: str | None
    ip_service: bool


class TbPort(TypedDict, total=False):
    bus: str | None
    port: int | None
    domain_uuid: str | None
    speed: str | None
    speed_gbps: float | None
    up_to: bool
    link_status: str | None
    connected: bool
    peers: list[TbPeer]


class ThunderboltFacts(TypedDict, total=False):
    ports: list[TbPort]
    error: str


class RdmaDevice(TypedDict, total=False):
    name: str  # "rdma_en2"
    port_state: str | None  # "PORT_ACTIVE", "PORT_DOWN", … (ibv_devinfo); None when unknown


class RdmaFacts(TypedDict, total=False):
    """RDMA over Thunderbolt (what MLX's jaccl backend needs): `rdma_ctl status` and
    `ibv_devices` / `ibv_devinfo`."""

    status: str | None  # "enabled", "disabled", or rdma_ctl's own words
    enabled: bool | None  # None: rdma_ctl missing or unreadable
    devices: list[RdmaDevice]
    missing: bool  # no rdma_ctl at all (macOS before 26.2)
    error: str


class DefaultRoute(TypedDict, total=False):
    destination: str | None
    gateway: str | None
    flags: str
    iface: str | None
    metric: int


class RouteTable(TypedDict, total=False):
    routes: list[DefaultRoute]
    error: str


class BridgeService(TypedDict, total=False):
    config: str
    ip: str | None
    subnet_mask: str | None
    router: str | None
    error: str


class MacosFacts(TypedDict, total=False):
    hardware_ports: dict
    bridge_service: BridgeService
    default_route: RouteFacts
    routes: RouteTable
    thunderbolt: ThunderboltFacts
    rdma: RdmaFacts


class LinuxFacts(TypedDict, total=False):
    default_routes: RouteTable


class ClockFacts(TypedDict, total=False):
    """The node's clock as one agent command read it (nodeprobe's "clock", and the "clock" of
    every answer of spawn): `time` is its time.time() when the command began, `elapsed_s` the
    seconds from that reading to the answer by its monotonic clock, which a wrong wall clock
    leaves alone. Together with when the laptop sent the command and got the answer, they say
    how far the node's wall clock is from the laptop's (clock_offset)."""

    time: float
    elapsed_s: float


class ClockOffset(NamedTuple):
    """A node's wall clock against the laptop's: `offset_s` = node time - laptop time, off by
    at most `error_s` (see clock_offset)."""

    offset_s: float
    error_s: float

    @property
    def applied_s(self) -> float:
        """What to take from a node time to get the laptop's: the offset, or 0 when it is within
        its own error (the clocks cannot be told apart: a node with network time, or the laptop
        itself, whose figures then stay exact). Off by at most 2 × error_s either way."""
        return 0.0 if abs(self.offset_s) <= self.error_s else self.offset_s

    def to_laptop(self, node_time: float) -> float:
        """A time read on the node's clock, on the laptop's."""
        return node_time - self.applied_s


def clock_offset(clock: object, sent: float, received: float) -> ClockOffset | None:
    """The node's clock offset from an answer's ClockFacts, with `sent` and `received` the
    laptop's time.time() when it sent the command and had the answer; None when the answer
    carries no clock (an older boltring on the node).

    The node read its clock some time between `sent` and `received - elapsed_s` of the laptop's
    time (after the command left; elapsed_s before its answer arrived). Taking the middle of
    that window errs by at most half of it: half the round trip less the node's own time,
    which leaves SSH's latency and the interpreter's start (about 0.05-0.3 s), not how long the
    command worked (nodeprobe's pings, a rank's start)."""
    if not isinstance(clock, dict):
        return None
    node_time, elapsed = clock.get("time"), clock.get("elapsed_s", 0.0)
    if not isinstance(node_time, int | float) or not isinstance(elapsed, int | float):
        return None
    read_by = max(sent, received - max(float(elapsed), 0.0))  # a rate mismatch: the window's edge
    return ClockOffset(float(node_time) - (sent + read_by) / 2, (read_by - sent) / 2)


class NodeFacts(TypedDict, total=False):
    """One nodeprobe report (the JSON line it prints)."""

    probe_version: int
    platform: str  # sys.platform: "darwin", "linux"
    hostname: str
    python: PythonFacts
    boltring: BoltringFacts
    mlx: MlxFacts
    ports: dict[str, str]  # "25250" -> "free" or the bind error
    hardware: HardwareFacts
    memory: MemoryFacts
    interfaces: InterfaceFacts
    macos: MacosFacts
    linux: LinuxFacts
    neighbours: list[NeighbourFacts]
    elapsed_s: float
    clock: ClockFacts
    error: str
