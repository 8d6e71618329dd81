"""Translate the cluster files our users already have into a boltring Config.

Each importer writes the boltring key/value shape (LineMaps that keep the line and the
user's own name of every value) and hands it to `config.config_from_data`, so an imported
cluster passes exactly the checks a boltring.yaml does, and a bad value is still reported as
"cluster_config.yaml:4: host_ip.mini2: ...". The ImportReport says, line by line, what was
carried over and what was left behind and why, for the CLI to print.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from boltring.cluster.config.load import (
    LOCAL_HOSTS,
    ConfigError,
    LineList,
    LineMap,
    Where,
    config_from_data,
    describe,
    line_of,
    parse_ssh_target,
)
from boltring.cluster.config.schema import Config

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")  # what config.py accepts as a node name
DEFAULT_GLOBAL_BATCH = 256  # JobSpec's default, replaced when the world size does not divide it


@dataclass
class ImportReport:
    source_format: str
    mapped: list[str] = field(default_factory=list)  # "host_ip.mini2 → nodes[1].ring_ip 10.10.0.2"
    ignored: list[str] = field(default_factory=list)  # "timeout: ignored (...why...)"

    def summary(self) -> str:
        lines = [f"Imported from {self.source_format}:"]
        lines += [f"  {m}" for m in self.mapped] + [f"  {i}" for i in self.ignored]
        return "\n".join(lines)


class _Draft:
    """The boltring document an importer is writing, and the report of how it got there."""

    def __init__(self, source_format: str, source: str, data: Any):
        self.source = source
        self.report = ImportReport(source_format)
        self.doc = LineMap(line_of(data))  # plain data (not read from a file) has no lines
        self.nodes = self.doc.put("nodes", LineList(line_of(data)))
        self.names: set[str] = set()

    def add_node(self, where: Where) -> int:
        self.nodes.add(LineMap(where.line), where.line, where.path)
        return len(self.nodes) - 1

    def put(self, target: int | str, key: str, value: Any, where: Where, note: str = "") -> None:
        """Set nodes[target].key (or section.key) and report where the value came from."""
        if isinstance(target, int):
            mapping, path = self.nodes[target], f"nodes[{target}].{key}"
        else:
            if target not in self.doc:
                self.doc.put(target, LineMap(where.line))
            mapping, path = self.doc[target], f"{target}.{key}"
        mapping.put(key, value, where.line, where.path)
        self.report.mapped.append(f"{where.path} → {path} {_show(value)}{note}")

    def ignore(self, label: str, why: str) -> None:
        self.report.ignored.append(f"{label}: ignored ({why})")

    def unique_name(self, text: str, fallback: str) -> str:
        base = text if _NAME_RE.fullmatch(text) else re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
        base = base or fallback
        name, n = base, 2
        while name in self.names:
            name, n = f"{base}-{n}", n + 1
        self.names.add(name)
        return name

    def finish(self) -> tuple[Config, ImportReport]:
        world = sum(node.get("ranks", 1) for node in self.nodes)
        if world and DEFAULT_GLOBAL_BATCH % world:  # the default must divide evenly over the ranks
            batch = max(world, DEFAULT_GLOBAL_BATCH // world * world)
            self.put(
                "job",
                "global_batch",
                batch,
                Where(self.source, "(default)", None),
                f" (a multiple of the world size {world}, near the default {DEFAULT_GLOBAL_BATCH})",
            )
        if any(not node.get("local") for node in self.nodes):
            self.report.mapped.append(
                "(default) → nodes[*].python python3 (set python: to the "
                "interpreter on each node that can import mlx)"
            )
        return config_from_data(self.doc, self.source), self.report


def _show(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _need(container: Any, key: str, at: Where, expected: str) -> tuple[Any, Where]:
    if not isinstance(container, dict) or key not in container:
        at.fail(f"there is no {key!r}", expected)
    return container[key], at.child(container, key)


def _text(value: Any, at: Where, expected: str) -> str:
    if not isinstance(value, str) or not value.strip():
        at.fail(describe(value), expected)
    return value.strip()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _ssh_target(user: str | None, host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host  # IPv6 in brackets, as parse_ssh_target reads it
    return (f"{user}@" if user else "") + host + (f":{port}" if port else "")


# --- MLX hostfile ---------------------------------------------------------------------------

_MLX_TOP_IGNORED = {
    "backend": "boltring always uses its own authenticated ring over TCP",
    "envs": "set environment variables in the node's shell profile or in your script",
}


def import_mlx_hostfile(data: Any, source: str) -> tuple[Config, ImportReport]:
    """`mlx.launch --hostfile` JSON: a list of hosts by rank, or {"backend", "envs", "hosts"}."""
    d = _Draft("MLX hostfile", source, data)
    top = Where(source, "", line_of(data))
    shape = 'an MLX hostfile: [{"ssh": "mini1", "ips": ["10.0.0.1"]}, ...] or {"hosts": [...]}'
    if isinstance(data, dict):
        hosts, hosts_at = _need(data, "hosts", top, shape)
        for key in data:
            if key != "hosts":
                d.ignore(str(key), _MLX_TOP_IGNORED.get(key, "not an MLX hostfile key"))
    elif isinstance(data, list):
        hosts, hosts_at = data, top
    else:
        top.fail(describe(data), shape)
    if not isinstance(hosts, list) or not hosts:
        hosts_at.fail("the list is empty" if hosts == [] else describe(hosts), shape)
    previous: tuple[str, str] | None = None
    for i, host in enumerate(hosts):
        at = hosts_at.child(hosts, i)
        ssh, ip, ssh_at, ip_at = _mlx_host(d, host, at)
        if previous == (ssh, ip):  # MLX lists a host once per rank: consecutive repeats are ranks
            node = d.nodes[-1]
            node.put("ranks", node.get("ranks", 1) + 1, at.line, at.path)
            d.report.mapped.append(
                f"{at.path} → nodes[{len(d.nodes) - 1}].ranks {node['ranks']} "
                "(the same host again: one more rank there)"
            )
            continue
        previous = (ssh, ip)
        _, hostname, _ = parse_ssh_target(ssh)
        k = d.add_node(at)
        d.put(k, "name", d.unique_name(hostname, f"node{k}"), ssh_at)
        if hostname in LOCAL_HOSTS:
            d.put(k, "local", True, ssh_at, " (this machine: ranks run without SSH)")
        else:
            d.put(k, "ssh", ssh, ssh_at)
        d.put(k, "ring_ip", ip, ip_at)
    return d.finish()


def _mlx_host(d: _Draft, host: Any, at: Where) -> tuple[str, str, Where, Where]:
    if not isinstance(host, dict):
        at.fail(describe(host), 'a host such as {"ssh": "mini1", "ips": ["10.0.0.1"]}')
    value, ssh_at = _need(host, "ssh", at, '"ssh": the host name or ssh alias, such as "mini1"')
    ssh = _text(value, ssh_at, 'the host name or ssh alias, such as "mini1"')
    if ssh.startswith("ssh://"):  # how write_mlx_hostfile keeps a port that ssh(1) accepts
        ssh = ssh[len("ssh://") :].rstrip("/")
    try:
        _, hostname, _ = parse_ssh_target(ssh)
    except ValueError as e:
        ssh_at.fail(str(e), "an ssh alias such as mini1, or user@host[:port]")
    ips, ips_at = host.get("ips", []), at.child(host, "ips")
    if not isinstance(ips, list):
        ips_at.fail(describe(ips), 'a list of addresses such as ["10.0.0.1"]')
    if ips:
        ip, ip_at = ips[0], ips_at.child(ips, 0)
        for j in range(1, len(ips)):
            d.ignore(f"{ips_at.path}[{j}]", "boltring uses one ring address per node: the first")
    elif _is_ip(hostname):  # mlx.launch also talks to a host given by address on that address
        ip, ip_at = hostname, ssh_at
    elif hostname == "localhost":
        ip, ip_at = "127.0.0.1", ssh_at
    else:
        at.fail(
            f"host {ssh!r} has no ips", 'ips: [the address other hosts reach it on], such as ["10.0.0.1"]'
        )
    for key in host:
        if key == "rdma":
            d.ignore(at.child(host, key).path, "boltring's ring runs over TCP; RDMA (JACCL) is not used")
        elif key not in ("ssh", "ips"):
            d.ignore(at.child(host, key).path, "not an MLX hostfile key")
    return ssh, ip, ssh_at, ip_at


def write_mlx_hostfile(config: Config) -> str:
    """The config as an MLX hostfile (JSON list, one entry per rank in rank order).

    A node with several ranks appears once per rank, as `mlx.launch` expects; importing the
    file merges those repeats back into one node. A port is written as an ssh:// URI, the form
    in which ssh(1) accepts one.
    """
    hosts = []
    for slot in config.rank_layout():
        node = slot.node
        ssh = "localhost" if node.local else (node.ssh or node.name)
        if not node.local and parse_ssh_target(ssh)[2] is not None:
            ssh = "ssh://" + ssh
        hosts.append({"ssh": ssh, "ips": [node.ring_ip]})
    return json.dumps(hosts, indent=2) + "\n"


# --- smolcluster cluster_config.yaml -------------------------------------------------------

_SMOL_IGNORED = {
    "num_workers": "boltring counts the nodes it is given",
    "timeout": "smolcluster's wait for gradients; boltring's is ring.timeout, default 60 s",
    "buffer_size": "boltring's transfer sizes are ring.chunk_mb and ring.bucket_mb",
    "track_network_metrics": "no boltring equivalent",
    "metrics_log_interval": "no boltring equivalent; job.log_every sets how often metrics are logged",
    "worker_update_interval": "boltring has no parameter server: every rank averages gradients each step",
    "use_quantization": "boltring sends gradients unquantized",
    "track_gradients": "no boltring equivalent",
    "num_nodes": "boltring counts the nodes it is given",
    "num_layers": "a setting of smolcluster's own model",
    "model_name": "a setting of smolcluster's own model",
}
_TOPOLOGIES = ("allToAllTopology", "ringTopology")


def import_smolcluster(mapping: Any, source: str) -> tuple[Config, ImportReport]:
    """smolcluster's cluster_config.yaml: server + workers with host_ip, or a topology list."""
    d = _Draft("smolcluster", source, mapping)
    top = Where(source, "", line_of(mapping))
    if not isinstance(mapping, dict):
        top.fail(describe(mapping), "a smolcluster cluster_config.yaml (host_ip, server, workers)")
    host_ip, host_ip_at, wrapper = _find_host_ip(mapping, top)
    topology = next((t for t in _TOPOLOGIES if t in mapping), None)
    if topology:
        hosts = _topology_hosts(d, mapping, topology, top, host_ip, host_ip_at)
    else:
        hosts = _server_and_workers(mapping, top, host_ip, host_ip_at)
    seen: dict[str, Where] = {}
    for hostname, host_at, ip, ip_at in hosts:
        if ip in seen:
            ip_at.fail(
                f"{ip} is also the address of {seen[ip].path} (smolcluster files often give every "
                "host the server's address)",
                "each node's own Thunderbolt Bridge address, which its ring neighbours connect to",
            )
        seen[ip] = ip_at
        k = d.add_node(host_at)
        d.put(k, "name", d.unique_name(hostname, f"node{k}"), host_at)
        d.put(k, "ssh", hostname, host_at, " (an alias from ~/.ssh/config)")
        d.put(k, "ring_ip", ip, ip_at)
    if hosts and topology is None:
        d.report.mapped.append(
            f"server {hosts[0][0]} → nodes[0] (boltring has no parameter server: "
            "every node trains and averages gradients)"
        )
    used = {h[0] for h in hosts}
    for name in host_ip:
        if name not in used:
            d.ignore(f"{host_ip_at.path}.{name}", "not the server or a worker")
    _smol_port(d, mapping, top, hosts, topology)
    for key in mapping:
        where = top.child(mapping, key)
        if key in ("host_ip", "port", "server", "workers", topology, wrapper):
            if key in ("server", "workers") and topology:
                d.ignore(where.path, f"the {topology} list gives the nodes")
        elif key == "seed":
            d.put("job", "seed", mapping[key], where)
        elif key == "num_workers" and mapping[key] != len(hosts) - (topology is None):
            d.ignore(
                where.path,
                f"it says {mapping[key]!r} but {len(hosts) - (topology is None)} workers "
                "are listed; boltring uses the list",
            )
        else:
            d.ignore(where.path, _SMOL_IGNORED.get(key, "not a smolcluster key boltring knows"))
    if wrapper:
        for key in mapping[wrapper]:
            if key != "host_ip":
                d.ignore(f"{wrapper}.{key}", "not a smolcluster key boltring knows")
    return d.finish()


def _find_host_ip(mapping: dict, top: Where) -> tuple[dict, Where, str | None]:
    """host_ip at the top, or one level down (some files nest it, e.g. under syncPS:)."""
    wrapper = None
    if "host_ip" in mapping:
        value, at = mapping["host_ip"], top.child(mapping, "host_ip")
    else:
        wrapper = next((k for k, v in mapping.items() if isinstance(v, dict) and "host_ip" in v), None)
        if wrapper is None:
            return {}, top.child(mapping, "host_ip"), None
        parent = top.child(mapping, wrapper)
        value, at = mapping[wrapper]["host_ip"], parent.child(mapping[wrapper], "host_ip")
    if not isinstance(value, dict):
        at.fail(describe(value), "a mapping of hostname to address, such as {mini1: 10.10.0.1}")
    return value, at, wrapper


def _address(host_ip: dict, host_ip_at: Where, hostname: str, host_at: Where) -> tuple[str, Where]:
    if hostname not in host_ip:
        host_at.fail(
            f"{hostname!r} has no entry in {host_ip_at.path}",
            f"{host_ip_at.path}: {{{hostname}: its Thunderbolt Bridge address}}",
        )
    where = host_ip_at.child(host_ip, hostname)
    return _text(host_ip[hostname], where, "an IP address such as 10.10.0.2"), where


def _server_and_workers(mapping: dict, top: Where, host_ip: dict, host_ip_at: Where) -> list:
    expected = "server: mini1 and workers: [mini2, mini3] (or allToAllTopology.workers.regular)"
    server, server_at = _need(mapping, "server", top, expected)
    workers, workers_at = _need(mapping, "workers", top, expected)
    if not isinstance(workers, list):
        workers_at.fail(describe(workers), "a list of worker hostnames such as [mini2, mini3]")
    listed = [(server, server_at)] + [(w, workers_at.child(workers, j)) for j, w in enumerate(workers)]
    hosts = []
    for value, at in listed:
        hostname = _text(value, at, "a hostname (an ssh alias) such as mini2")
        hosts.append((hostname, at, *_address(host_ip, host_ip_at, hostname, at)))
    return hosts


def _topology_hosts(
    d: _Draft, mapping: dict, topology: str, top: Where, host_ip: dict, host_ip_at: Where
) -> list:
    shape = f"{topology}: {{workers: {{regular: [{{hostname, rank, ip, port}}, ...]}}}}"
    workers, workers_at = _need(mapping[topology], "workers", top.child(mapping, topology), shape)
    regular, regular_at = _need(workers, "regular", workers_at, shape)
    if not isinstance(regular, list) or not regular:
        regular_at.fail("the list is empty" if regular == [] else describe(regular), shape)
    for key in mapping[topology]:
        if key != "workers":
            d.ignore(f"{topology}.{key}", "boltring reads only workers.regular")
    for key in workers:
        if key != "regular":
            d.ignore(f"{workers_at.path}.{key}", "boltring reads only workers.regular")
    entries = []
    for j, item in enumerate(regular):
        at = regular_at.child(regular, j)
        value, name_at = _need(item, "hostname", at, "hostname: the worker's ssh alias, such as mini2")
        hostname = _text(value, name_at, "the worker's ssh alias, such as mini2")
        if "ip" in item:
            ip_at = at.child(item, "ip")
            ip = _text(item["ip"], ip_at, "an IP address such as 10.10.0.2")
        else:
            ip, ip_at = _address(host_ip, host_ip_at, hostname, name_at)
        rank = item.get("rank")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            at.child(item, "rank").fail(describe(rank), "a rank number, 0 or more")
        if rank is not None and rank in [r for r, _, _ in entries]:
            at.child(item, "rank").fail(
                f"rank {rank} is given to more than one worker", "a different rank per worker"
            )
        for key in item:
            if key not in ("hostname", "ip", "rank", "port"):
                d.ignore(at.child(item, key).path, "not a worker key boltring knows")
        entries.append((rank, j, (hostname, name_at, ip, ip_at)))
    if all(r is not None for r, _, _ in entries):
        entries.sort()  # boltring numbers ranks in node order
        d.report.mapped.append(f"{regular_at.path} → nodes, in rank order")
    return [host for _, _, host in entries]


def _smol_port(d: _Draft, mapping: dict, top: Where, hosts: list, topology: str | None) -> None:
    """boltring has one ring.port (rank k on a node uses port + k); smolcluster may have several."""
    port = mapping.get("port")
    at = top.child(mapping, "port")
    if isinstance(port, dict):
        for key in port:
            if key != "default":
                d.ignore(f"port.{key}", "boltring uses one ring.port for every node")
        if "default" in port:
            d.put("ring", "port", port["default"], at.child(port, "default"))
    elif port is not None:
        d.put("ring", "port", port, at)
    if topology:
        regular = mapping[topology]["workers"]["regular"]
        regular_at = top.child(mapping, topology).child(mapping[topology], "workers")
        regular_at = regular_at.child(mapping[topology]["workers"], "regular")
        for j, item in enumerate(regular):
            if isinstance(item, dict) and "port" in item:
                where = regular_at.child(regular, j).child(item, "port")
                if "ring" not in d.doc:  # no top-level port: the first worker's becomes ring.port
                    d.put("ring", "port", item["port"], where)
                else:
                    d.ignore(where.path, "boltring uses one ring.port for every node")


# --- jupiter config/cluster.yaml -------------------------------------------------------------

_JUPITER_IGNORED = {
    "backend": "boltring always uses its own authenticated ring over TCP, not mpi, ring or jaccl",
    "use_thunderbolt_bridge": "ring traffic goes to each node's ring_ip: make that its Thunderbolt "
    "Bridge address",
    "sync_every_n_steps": "boltring averages gradients on every step",
    "gradient_compression": "boltring sends gradients uncompressed",
    "checkpoint_on_failure": "set job.checkpoint_every to checkpoint regularly",
    "auto_restart_failed_nodes": "no boltring equivalent",
}
_JUPITER_NODE_IGNORED = {
    "device_type": "informational only in boltring",
    "connection_type": "the ring uses whatever network reaches each node's ring_ip",
    "can_generate": "boltring only trains",
}


def import_jupiter(mapping: Any, source: str) -> tuple[Config, ImportReport]:
    """jupiter's config/cluster.yaml: nodes with host, ssh_user, ssh_port, chip, ..."""
    d = _Draft("jupiter", source, mapping)
    top = Where(source, "", line_of(mapping))
    if not isinstance(mapping, dict):
        top.fail(describe(mapping), "a jupiter cluster.yaml with a nodes list")
    nodes, nodes_at = _need(mapping, "nodes", top, "nodes: a list of nodes with host, name, ...")
    if not isinstance(nodes, list) or not nodes:
        nodes_at.fail("the list is empty" if nodes in (None, []) else describe(nodes), "a list of nodes")
    for key in mapping:
        where = top.child(mapping, key)
        if key == "network_interface" and mapping[key] is not None:
            d.put("defaults", "ring_iface", mapping[key], where)
        elif key not in ("nodes", "network_interface"):
            d.ignore(where.path, _JUPITER_IGNORED.get(key, "not a jupiter key boltring knows"))
    for i, node in enumerate(nodes):
        _jupiter_node(d, node, nodes_at.child(nodes, i))
    if not d.nodes:
        nodes_at.fail("every node has can_train: false", "at least one node that trains")
    return d.finish()


def _jupiter_node(d: _Draft, node: Any, at: Where) -> None:
    if not isinstance(node, dict):
        at.fail(describe(node), "a node mapping with host, name, ...")
    host, host_at = node.get("host", "localhost"), at.child(node, "host")  # jupiter's default
    host = _text(host, host_at, "a hostname or IP address")
    label = node.get("name") or host
    if "can_train" in node:
        if not isinstance(node["can_train"], bool):
            at.child(node, "can_train").fail(describe(node["can_train"]), "true or false")
        if not node["can_train"]:
            d.ignore(f"{at.path} ({label})", "skipped: can_train is false")
            return
    k = d.add_node(at)
    name_at = at.child(node, "name") if "name" in node else host_at
    d.put(k, "name", d.unique_name(_text(label, name_at, "a node name"), f"node{k}"), name_at)
    local = host in LOCAL_HOSTS
    if local:
        d.put(k, "local", True, host_at, " (this machine: ranks run without SSH)")
    else:
        d.put(k, "ssh", _jupiter_ssh(node, host, at), host_at)
    if "ring_ip" in node:  # not jupiter's: what a user adds so that a hostname node can import
        d.put(k, "ring_ip", node["ring_ip"], at.child(node, "ring_ip"))
    elif local:
        d.put(k, "ring_ip", host if _is_ip(host) else "127.0.0.1", host_at, " (loopback: this machine)")
    elif _is_ip(host):
        d.put(
            k,
            "ring_ip",
            host,
            host_at,
            " (jupiter has one address per node, so ring traffic follows "
            "it; set ring_ip to the node's Thunderbolt Bridge address if this is not it)",
        )
    else:
        host_at.fail(
            f"{host!r} is a hostname, and boltring needs the node's ring IP address, which "
            "jupiter does not record",
            "an IP address here, or add ring_ip: <its Thunderbolt "
            "Bridge address> to this node (jupiter ignores keys it does not know)",
        )
    for key in ("chip", "memory_gb", "role"):
        if key in node:
            d.put(k, key, node[key], at.child(node, key))
    for key in node:
        where = at.child(node, key)
        if key in ("ssh_user", "ssh_port") and local:
            d.ignore(where.path, "a local node needs no SSH")
        elif key not in (
            "host",
            "name",
            "ring_ip",
            "chip",
            "memory_gb",
            "role",
            "can_train",
            "ssh_user",
            "ssh_port",
        ):
            d.ignore(where.path, _JUPITER_NODE_IGNORED.get(key, "not a jupiter node key boltring knows"))


def _jupiter_ssh(node: dict, host: str, at: Where) -> str:
    user = node.get("ssh_user")
    if user is not None:
        user = _text(user, at.child(node, "ssh_user"), "a user name on the node")
    port = node.get("ssh_port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        at.child(node, "ssh_port").fail(describe(port), "an SSH port from 1 to 65535, such as 22")
    target = _ssh_target(user, host, None if port == 22 else port)
    try:
        parse_ssh_target(target)
    except ValueError as e:
        at.child(node, "host").fail(str(e), "a hostname or IP address")
    return target


IMPORTERS: dict[str, Callable[[Any, str], tuple[Config, ImportReport]]] = {
    "mlx-hostfile": import_mlx_hostfile,
    "smolcluster": import_smolcluster,
    "jupiter": import_jupiter,
}

__all__ = [
    "ImportReport",
    "import_mlx_hostfile",
    "write_mlx_hostfile",
    "import_smolcluster",
    "import_jupiter",
    "IMPORTERS",
    "ConfigError",
]
