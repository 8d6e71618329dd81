"""jupiter's config/cluster.yaml: nodes with host, ssh_user, ssh_port, chip, can_train, ..."""

from __future__ import annotations

from typing import Any

from boltring.cluster.config.formats.draft import Draft, ImportReport, is_ip, need, put_mlx_backend, text
from boltring.cluster.config.located import Where, line_of
from boltring.cluster.config.schema import Config
from boltring.cluster.config.ssh_target import LOCAL_HOSTS, format_ssh_target, parse_ssh_target
from boltring.cluster.config.values import describe

NAME = "jupiter"
_JUPITER_KEYS = {
    "use_thunderbolt_bridge",
    "sync_every_n_steps",
    "gradient_compression",
    "checkpoint_on_failure",
    "auto_restart_failed_nodes",
    "network_interface",
}
_NODE_KEYS = {"host", "device_type", "connection_type", "ssh_user", "ssh_port", "can_generate", "can_train"}
_BOLTRING_NODE_KEYS = {"ssh", "local", "ring_iface", "python", "workdir", "ranks"}


def sniff(data: Any) -> bool:
    """jupiter's own top-level keys, or nodes written with jupiter's keys and none of boltring's."""
    if not isinstance(data, dict):
        return False
    if set(data) & _JUPITER_KEYS:
        return True
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        return False
    node_keys = {k for n in nodes if isinstance(n, dict) for k in n}
    return bool(node_keys & _NODE_KEYS) and not node_keys & _BOLTRING_NODE_KEYS


_JUPITER_IGNORED = {
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


def read(mapping: Any, source: str) -> tuple[Config, ImportReport]:
    """jupiter's config/cluster.yaml: nodes with host, ssh_user, ssh_port, chip, ..."""
    d = Draft("jupiter", source, mapping)
    top = Where(source, "", line_of(mapping))
    if not isinstance(mapping, dict):
        top.fail(describe(mapping), "a jupiter cluster.yaml with a nodes list")
    nodes, nodes_at = need(mapping, "nodes", top, "nodes: a list of nodes with host, name, ...")
    if not isinstance(nodes, list) or not nodes:
        nodes_at.fail("the list is empty" if nodes in (None, []) else describe(nodes), "a list of nodes")
    for key in mapping:
        where = top.child(mapping, key)
        if key == "network_interface" and mapping[key] is not None:
            d.put("defaults", "ring_iface", mapping[key], where)
        elif key == "backend":  # jupiter launches with mlx.launch: the names are MLX's
            put_mlx_backend(d, mapping[key], where)
        elif key not in ("nodes", "network_interface"):
            d.ignore(where.path, _JUPITER_IGNORED.get(key, "not a jupiter key boltring knows"))
    for i, node in enumerate(nodes):
        _jupiter_node(d, node, nodes_at.child(nodes, i))
    if not d.nodes:
        nodes_at.fail("every node has can_train: false", "at least one node that trains")
    return d.finish()


def _jupiter_node(d: Draft, node: Any, at: Where) -> None:
    if not isinstance(node, dict):
        at.fail(describe(node), "a node mapping with host, name, ...")
    host, host_at = node.get("host", "localhost"), at.child(node, "host")  # jupiter's default
    host = text(host, host_at, "a hostname or IP address")
    if "@" in host:  # else read as a hostname, or sent to ssh as "user@user@host"
        host_at.fail(
            f"{host!r} includes a user name",
            f"a hostname or IP address only, such as {host.rpartition('@')[2]!r}, with the user in ssh_user",
        )
    label = node.get("name") or host
    if "can_train" in node:
        if not isinstance(node["can_train"], bool):
            at.child(node, "can_train").fail(describe(node["can_train"]), "true or false")
        if not node["can_train"]:
            d.ignore(f"{at.path} ({label})", "skipped: can_train is false")
            return
    k = d.add_node(at)
    name_at = at.child(node, "name") if "name" in node else host_at
    d.put(k, "name", d.unique_name(text(label, name_at, "a node name"), f"node{k}"), name_at)
    local = host in LOCAL_HOSTS
    if local:
        d.put(k, "local", True, host_at, " (this machine: ranks run without SSH)")
    else:
        d.put(k, "ssh", _jupiter_ssh(node, host, at), host_at)
    if "ring_ip" in node:  # not jupiter's: what a user adds so that a hostname node can import
        d.put(k, "ring_ip", node["ring_ip"], at.child(node, "ring_ip"))
    elif local:
        d.put(k, "ring_ip", host if is_ip(host) else "127.0.0.1", host_at, " (loopback: this machine)")
    elif is_ip(host):
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
        user = text(user, at.child(node, "ssh_user"), "a user name on the node")
    port = node.get("ssh_port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        at.child(node, "ssh_port").fail(describe(port), "an SSH port from 1 to 65535, such as 22")
    target = format_ssh_target(user, host, None if port == 22 else port)
    try:
        parse_ssh_target(target)
    except ValueError as e:
        at.child(node, "host").fail(str(e), "a hostname or IP address")
    return target
