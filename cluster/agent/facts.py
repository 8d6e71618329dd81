"""The shape of what `nodeprobe` reports about a node, shared by the node (which builds it) and the
laptop's checks (which read it). It travels as JSON, so these are `TypedDict`s over plain dicts:
no conversion on either side, and mypy checks every key that either side reads or writes.

Every dict is `total=False`: a probe that failed leaves {"error": "..."} in its place, and facts
from an older node simply lack newer keys; readers use `.get` and say "unknown".

Standard library only (a test enforces it): this file runs on nodes with nothing but Python.
"""

from __future__ import annotations

from typing import TypedDict


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
    error: str
