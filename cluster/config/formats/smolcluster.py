"""smolcluster's cluster_config.yaml: `host_ip`, `port`, `server`, `workers`, or a topology list."""

from __future__ import annotations

from typing import Any

from boltring.cluster.config.formats.draft import Draft, ImportReport, need, text
from boltring.cluster.config.located import LineMap, Where, line_of
from boltring.cluster.config.schema import Config
from boltring.cluster.config.values import describe

NAME = "smolcluster"


def sniff(data: Any) -> bool:
    """host_ip (maybe one level down), a topology list, or server + workers; no boltring "nodes"."""
    if not isinstance(data, dict) or "nodes" in data:
        return False
    keys = set(data)
    nested_host_ip = any(isinstance(v, dict) and "host_ip" in v for v in data.values())
    return bool(keys & {"host_ip", *_TOPOLOGIES}) or {"server", "workers"} <= keys or nested_host_ip


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


def read(mapping: Any, source: str) -> tuple[Config, ImportReport]:
    """smolcluster's cluster_config.yaml: server + workers with host_ip, or a topology list."""
    d = Draft("smolcluster", source, mapping)
    top = Where(source, "", line_of(mapping))
    if not isinstance(mapping, dict):
        top.fail(describe(mapping), "a smolcluster cluster_config.yaml (host_ip, server, workers)")
    _, _, wrapper = _find_host_ip(mapping, top)
    if wrapper:  # its server, workers and port belong with its host_ip
        mapping = _unwrap(d, mapping, wrapper)
    host_ip, host_ip_at, _ = _find_host_ip(mapping, top)
    topology = next((t for t in _TOPOLOGIES if t in mapping), None)
    if topology:
        hosts = _topology_hosts(d, mapping, topology, top, host_ip, host_ip_at)
        workers_listed = len(hosts)
    else:
        hosts, workers_listed = _server_and_workers(d, mapping, top, host_ip, host_ip_at)
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
        if key in ("host_ip", "port", "server", "workers", topology):
            if key in ("server", "workers") and topology:
                d.ignore(where.path, f"the {topology} list gives the nodes")
        elif key == "seed":
            d.put("job", "seed", mapping[key], where)
        elif key == "num_workers" and mapping[key] != workers_listed:
            d.ignore(
                where.path,
                f"it says {mapping[key]!r} but {workers_listed} workers are listed; boltring uses the list",
            )
        else:
            d.ignore(where.path, _SMOL_IGNORED.get(key, "not a smolcluster key boltring knows"))
    return d.finish()


def _unwrap(d: Draft, mapping: dict, wrapper: str) -> LineMap:
    """The file with `wrapper:`'s keys (host_ip, server, workers, port, ...) lifted to the top,
    still named as the user wrote them ("syncPS.server"); the wrapper's own keys win."""
    inner = mapping[wrapper]
    merged = LineMap(line_of(mapping))
    for key in mapping:
        if key == wrapper:
            continue
        if key in inner:
            d.ignore(str(key), f"{wrapper}.{key} is used instead")
            continue
        merged.put(key, mapping[key], line_of(mapping, key), getattr(mapping, "labels", {}).get(key))
    for key in inner:
        merged.put(key, inner[key], line_of(inner, key) or line_of(mapping, wrapper), f"{wrapper}.{key}")
    return merged


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
    return text(host_ip[hostname], where, "an IP address such as 10.10.0.2"), where


def _server_and_workers(
    d: Draft, mapping: dict, top: Where, host_ip: dict, host_ip_at: Where
) -> tuple[list, int]:
    """The hosts (server first, each machine once) and how many workers the file lists."""
    expected = "server: mini1 and workers: [mini2, mini3] (or allToAllTopology.workers.regular)"
    server, server_at = need(mapping, "server", top, expected)
    workers, workers_at = need(mapping, "workers", top, expected)
    if not isinstance(workers, list):
        workers_at.fail(describe(workers), "a list of worker hostnames such as [mini2, mini3]")
    listed = [(server, server_at)] + [(w, workers_at.child(workers, j)) for j, w in enumerate(workers)]
    hosts: list = []
    seen: dict[str, str] = {}
    for value, at in listed:
        hostname = text(value, at, "a hostname (an ssh alias) such as mini2")
        if hostname in seen:  # the server also listed as a worker: one machine, one node
            d.ignore(
                f"{at.path} ({hostname})",
                f"{hostname} is already {seen[hostname]}; boltring has no parameter server, "
                "so every node, the server's included, trains",
            )
            continue
        seen[hostname] = f"nodes[{len(hosts)}] ({at.path})"
        hosts.append((hostname, at, *_address(host_ip, host_ip_at, hostname, at)))
    return hosts, len(workers)


def _topology_hosts(
    d: Draft, mapping: dict, topology: str, top: Where, host_ip: dict, host_ip_at: Where
) -> list:
    shape = f"{topology}: {{workers: {{regular: [{{hostname, rank, ip, port}}, ...]}}}}"
    workers, workers_at = need(mapping[topology], "workers", top.child(mapping, topology), shape)
    regular, regular_at = need(workers, "regular", workers_at, shape)
    if not isinstance(regular, list) or not regular:
        regular_at.fail("the list is empty" if regular == [] else describe(regular), shape)
    for key in mapping[topology]:
        if key != "workers":
            d.ignore(f"{topology}.{key}", "boltring reads only workers.regular")
    for key in workers:
        if key != "regular":
            d.ignore(f"{workers_at.path}.{key}", "boltring reads only workers.regular")
    entries: list[tuple[Any, int, tuple[str, Where, str, Where]]] = []
    for j, item in enumerate(regular):
        at = regular_at.child(regular, j)
        value, name_at = need(item, "hostname", at, "hostname: the worker's ssh alias, such as mini2")
        hostname = text(value, name_at, "the worker's ssh alias, such as mini2")
        if "ip" in item:
            ip_at = at.child(item, "ip")
            ip = text(item["ip"], ip_at, "an IP address such as 10.10.0.2")
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
    ranked = [j for r, j, _ in entries if r is not None]
    if ranked and len(ranked) < len(entries):  # file order would contradict the ranks given
        j = next(j for r, j, _ in entries if r is None)
        regular_at.child(regular, j).fail(
            f"has no rank, while {regular_at.child(regular, ranked[0]).path} has one",
            "a rank on every worker (boltring orders the ring by rank), or on none (file order)",
        )
    if ranked:
        entries.sort()  # boltring numbers ranks in node order
        d.report.mapped.append(f"{regular_at.path} → nodes, in rank order")
    return [host for _, _, host in entries]


def _smol_port(d: Draft, mapping: dict, top: Where, hosts: list, topology: str | None) -> None:
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
