"""The MLX hostfile: what `mlx.distributed_config` writes and `mlx.launch --hostfile` reads.

A JSON list of hosts by rank (`[{"ssh": "mini1", "ips": ["10.0.0.1"]}, ...]`) or an object
with `backend`, `envs` and `hosts`. The writer is here too: `boltring hostfile`.
"""

from __future__ import annotations

import json
from typing import Any

from boltring.cluster.config.formats.draft import Draft, ImportReport, is_ip, need, put_mlx_backend, text
from boltring.cluster.config.located import Where, line_of
from boltring.cluster.config.schema import Config
from boltring.cluster.config.ssh_target import LOCAL_HOSTS, parse_ssh_target
from boltring.cluster.config.values import describe

NAME = "mlx-hostfile"


def sniff(data: Any) -> bool:
    """A JSON list (of hosts with ssh/ips), or an object with "hosts" (and no boltring "nodes").

    Any list: no other format is one, so read() says what is wrong with it as a host list (an
    empty one has no hosts) rather than boltring's reader calling it "not a mapping"."""
    if isinstance(data, list):
        return True
    return isinstance(data, dict) and "hosts" in data and "nodes" not in data


_MLX_TOP_IGNORED = {
    "envs": "set environment variables in the node's shell profile or in your script",
}


def read(data: Any, source: str) -> tuple[Config, ImportReport]:
    """`mlx.launch --hostfile` JSON: a list of hosts by rank, or {"backend", "envs", "hosts"}."""
    d = Draft("MLX hostfile", source, data)
    top = Where(source, "", line_of(data))
    shape = 'an MLX hostfile: [{"ssh": "mini1", "ips": ["10.0.0.1"]}, ...] or {"hosts": [...]}'
    if isinstance(data, dict):
        hosts, hosts_at = need(data, "hosts", top, shape)
        for key in data:
            if key == "backend":
                put_mlx_backend(d, data[key], top.child(data, key))
            elif key != "hosts":
                d.ignore(str(key), _MLX_TOP_IGNORED.get(key, "not an MLX hostfile key"))
    elif isinstance(data, list):
        hosts, hosts_at = data, top
    else:
        top.fail(describe(data), shape)
    if hosts == [] and hosts is data:  # `[]`: the list form, with nothing in it
        top.fail(
            "the MLX hostfile lists no hosts",
            'at least one host: [{"ssh": "mini1", "ips": ["10.0.0.1"]}, ...]',
        )
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


def _mlx_host(d: Draft, host: Any, at: Where) -> tuple[str, str, Where, Where]:
    if not isinstance(host, dict):
        at.fail(describe(host), 'a host such as {"ssh": "mini1", "ips": ["10.0.0.1"]}')
    value, ssh_at = need(host, "ssh", at, '"ssh": the host name or ssh alias, such as "mini1"')
    ssh = text(value, ssh_at, 'the host name or ssh alias, such as "mini1"')
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
    elif is_ip(hostname):  # mlx.launch also talks to a host given by address on that address
        ip, ip_at = hostname, ssh_at
    elif hostname == "localhost":
        ip, ip_at = "127.0.0.1", ssh_at
    else:
        at.fail(
            f"host {ssh!r} has no ips", 'ips: [the address other hosts reach it on], such as ["10.0.0.1"]'
        )
    for key in host:
        if key == "rdma":
            # The device matrix is not a config key (schema.RingSpec.rdma_devices): plan.py
            # reads it from this very file.
            d.ignore(at.child(host, key).path, "the jaccl backend reads it with --rdma-devices THIS_FILE")
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
