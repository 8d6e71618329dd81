"""`boltring check`: is every node ready, and does the ring network really go over Thunderbolt?

Orchestration only; the verdicts live beside it:
  verdicts.py / network.py   facts of one node -> its checks (pure)
  ring.py                    ring neighbours and links, reachability across nodes
  cabling.py                 Thunderbolt cables: ring order, loops through the bridge (pure)
  bandwidth.py               one authenticated burst per ring link
  hints.py                   what to tell the user to do
  results.py                 building and counting results (`count_checks`, skipped_node_checks)

For each node, one round trip runs `nodeprobe` on the node (all its probes in parallel there)
while a tiny `python -c 'print(sys.version)'` runs beside it on the same connection; nodes are
checked concurrently. Then, across nodes, every ring neighbour pair measures its bandwidth.

Every result is a `CheckResult(node, name, status, value, hint)`; `hint` is one line telling the
user what to do. Check names:

  per node   ssh, python, boltring, mlx, chip, memory, ring_iface, ring_ip, mtu, ports,
             route:<peer>, rtt:<peer>, default_route,
             macOS only: bridge_dhcp, tb_speed, tb_loop; with ring.backend: jaccl: rdma;
             clock (its wall clock against this computer's, from the probe's answer: clock.py)
  "ring"     ring (reachability of every neighbour direction), mtu (only when they differ),
             ring_order (macOS only: consecutive nodes directly cabled), bw:<a>-><b>

Every check appears for every node, whatever happened: a node SSH cannot reach gets its failed
ssh check (cause and hint) and every other per-node check as skipped with the reason ("no SSH
connection (unreachable)"), as do the bandwidth checks of its ring links; a node without python,
or whose probe failed, gets its checks that could not run as skipped the same way. So `--json`
lists every check of every node; the table folds the skipped ones into "+N skipped" (for an
unreachable node, on its one ssh line). macOS-only checks (bridge_dhcp, tb_speed, tb_loop) are
listed only for nodes whose probe says they run macOS: a node never probed is not known to.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol, TypeAlias, cast

from boltring.cluster.agent import nodeprobe, probes_linux, probes_macos
from boltring.cluster.agent.facts import ClockOffset, NodeFacts, ProbeRequest, clock_offset
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks.bandwidth import BW_SECONDS, MIN_GBPS, measure_links
from boltring.cluster.nodes.checks.cabling import ring_order_result, tb_loop_results
from boltring.cluster.nodes.checks.clock import clock_result
from boltring.cluster.nodes.checks.hints import PYTHON_HINT, ssh_hint
from boltring.cluster.nodes.checks.job_paths import NAME as JOB_PATHS
from boltring.cluster.nodes.checks.job_paths import job_paths_result, named_paths
from boltring.cluster.nodes.checks.results import (
    NodeReport,
    last_line,
    result,
    run_or_error,
    short,
    skipped_node_checks,
)
from boltring.cluster.nodes.checks.ring import reachability_results, ring_links, ring_neighbours
from boltring.cluster.nodes.checks.verdicts import Versions, node_results
from boltring.cluster.nodes.transport import (
    CommandNotFound,
    CommandResult,
    LocalTransport,
    Transport,
    TransportError,
)
from boltring.cluster.states import CheckStatus, SshState

__all__ = [
    "MIN_PYTHON",
    "NodeReport",
    "check_cluster",
    "check_node",
    "controller_versions",
    "probe_node",
    "probe_request",
]

PROBE_TIMEOUT_S = 12.0
PYTHON_TIMEOUT_S = 8.0
MIN_PYTHON = (3, 11)

# What stands for a node's connection: a Transport, the error that kept it from connecting
# (or its text), or None when nothing was given for a remote node.
NodeLink: TypeAlias = Transport | TransportError | str | None


class Connector(Protocol):
    """What the JobController offers: a connected transport for a node, or a TransportError."""

    async def connect(self, node: Node) -> Transport: ...


def _version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def controller_versions() -> Versions:
    """boltring and mlx versions installed here (None when absent), to compare nodes against."""
    return {"boltring": _version_of("boltring"), "mlx": _version_of("mlx")}


def probe_request(config: Config, node: Node, neighbours: Iterable[Node]) -> ProbeRequest:
    return {
        "ring_ip": node.ring_ip,
        "ring_iface": node.ring_iface,
        "ring_port": config.ring.port,
        "ranks": node.ranks,
        "neighbours": [{"name": n.name, "ring_ip": n.ring_ip, "port": config.ring.port} for n in neighbours],
        "rdma": config.ring.backend == "jaccl",
    }


def _bootstrap_input(request: ProbeRequest) -> bytes:
    sources = {
        name: Path(str(mod.__file__)).read_text(encoding="utf-8")
        for name, mod in (
            ("probes_linux", probes_linux),
            ("probes_macos", probes_macos),
            ("nodeprobe", nodeprobe),
        )
    }
    return json.dumps({"sources": sources, "request": request}).encode()


async def _python_argv0(transport: Transport, node: Node) -> str:
    """node.python as a word to exec: a "~/…" path is expanded here, since commands run without
    a shell (locally) or with every word quoted (over SSH, where the transport resolves it)."""
    py = node.python
    if not (py == "~" or py.startswith("~/")):
        return py
    if isinstance(transport, LocalTransport):
        return os.path.expanduser(py)
    try:
        return await transport.resolve(py)
    except (TransportError, NotImplementedError):
        return py


def _missing_interpreter(res: CommandResult | TransportError) -> bool:
    if isinstance(res, TransportError):
        return isinstance(res, CommandNotFound)
    return res.returncode in (126, 127)


def _failure_text(res: CommandResult | TransportError, fallback: str) -> str:
    if isinstance(res, TransportError):
        return res.cause
    return last_line(res.stderr) or f"{fallback} exited {res.returncode}"


async def _connect(link: NodeLink, node: Node) -> tuple[Transport | None, CheckResult]:
    """The ssh check: one line with the cause, and a hint from the failure's class."""
    if link is None:
        return None, result(node.name, "ssh", CheckStatus.FAIL, "not connected", ssh_hint(node, None))
    if isinstance(link, (str, TransportError)):
        cause = link.cause if isinstance(link, TransportError) else link
        return None, result(node.name, "ssh", CheckStatus.FAIL, cause, ssh_hint(node, link))
    if isinstance(link, LocalTransport) or link.state == SshState.LOCAL:
        if link.state != SshState.LOCAL:
            await link.connect()
        return link, result(node.name, "ssh", CheckStatus.OK, SshState.LOCAL)
    if link.state != SshState.CONNECTED:
        try:
            await link.connect()
        except TransportError as e:
            return None, result(node.name, "ssh", CheckStatus.FAIL, e.cause, ssh_hint(node, e))
    return link, result(node.name, "ssh", CheckStatus.OK, SshState.CONNECTED)


def _no_ssh(link: NodeLink) -> str:
    """Why an unreachable node's checks were skipped: "no SSH connection (unreachable)"."""
    state = None if link is None or isinstance(link, str) else link.state  # an error's, or the transport's
    return f"no SSH connection ({state})" if state and SshState(state).bad else "no SSH connection"


def _python_result(node: Node, res: CommandResult) -> CheckResult:
    pyver = res.stdout.strip().split()[0] if res.stdout.strip() else "?"
    try:
        major, minor = (int(x) for x in pyver.split(".")[:2])
        too_old = (major, minor) < MIN_PYTHON
    except ValueError:
        too_old = False
    if too_old:
        return result(node.name, "python", CheckStatus.FAIL, f"{pyver} (needs 3.11+)", PYTHON_HINT)
    return result(node.name, "python", CheckStatus.OK, pyver)


Timed: TypeAlias = tuple[CommandResult | TransportError, float, float]  # result, sent, received


async def _timed(transport: Transport, argv: list[str], **kw) -> Timed:
    """run_or_error, with this computer's time.time() when it was sent and answered: the window
    in which the node read its clock (facts.clock_offset)."""
    sent = time.time()
    res = await run_or_error(transport, argv, **kw)
    return res, sent, time.time()


async def _run_probe(
    transport: Transport, py: str, request: ProbeRequest, first: Timed
) -> tuple[NodeFacts | None, str, ClockOffset | None]:
    """The facts from `-m boltring.cluster.agent.nodeprobe`, and its clock's offset from this
    computer's (None: not reported); when boltring is not installed there, the probe is shipped
    as source and run again. (facts, why not, clock offset)."""
    res = first[0]
    if isinstance(res, TransportError):
        return None, res.cause, None
    facts = res.last_json() if res.ok else None
    if facts is not None:
        return cast(NodeFacts, facts), "", clock_offset(facts.get("clock"), first[1], first[2])
    err = _failure_text(res, "nodeprobe")
    if "No module named" in res.stderr and "boltring" in res.stderr:
        again = await _timed(
            transport,
            [py, "-c", nodeprobe.BOOTSTRAP],
            input=_bootstrap_input(request),
            timeout=PROBE_TIMEOUT_S,
        )
        res = again[0]
        if not isinstance(res, TransportError) and res.ok and (facts := res.last_json()):
            return cast(NodeFacts, facts), "", clock_offset(facts.get("clock"), again[1], again[2])
        err = _failure_text(res, "nodeprobe") if isinstance(res, TransportError) or not res.ok else err
    return None, err, None


async def probe_node(
    link: NodeLink,
    config: Config,
    node: Node,
    neighbours: list[Node] | None = None,
    versions: Versions | None = None,
) -> NodeReport:
    """The ssh check, then one nodeprobe round trip and the verdicts on its facts."""
    if neighbours is None:
        neighbours = ring_neighbours(config)[node.name]
    versions = versions if versions is not None else controller_versions()
    report = NodeReport(node=node)
    transport, ssh = await _connect(link, node)
    report.results.append(ssh)
    report.transport = transport
    if transport is None:  # the ssh check says why and what to do; the rest could not run
        report.results += skipped_node_checks(config, node, neighbours, _no_ssh(link), python=True)
        return report

    py = await _python_argv0(transport, node)
    request = probe_request(config, node, neighbours)
    version_res, probe_res = await asyncio.gather(
        run_or_error(transport, [py, "-c", "import sys; print(sys.version)"], timeout=PYTHON_TIMEOUT_S),
        _timed(
            transport,
            [py, "-m", "boltring.cluster.agent.nodeprobe"],
            input=json.dumps(request).encode(),
            timeout=PROBE_TIMEOUT_S,
        ),
    )
    if isinstance(version_res, TransportError) or not version_res.ok:
        text = _failure_text(version_res, "python")
        if _missing_interpreter(version_res):
            text = f"{node.python} not found: {text}"
        report.results.append(result(node.name, "python", CheckStatus.FAIL, short(text), PYTHON_HINT))
        report.results += skipped_node_checks(config, node, neighbours, "no python")
        return report
    report.python = py
    report.results.append(_python_result(node, version_res))

    facts, probe_err, clock = await _run_probe(transport, py, request, probe_res)
    if facts is None:
        report.results.append(
            result(
                node.name,
                "probe",
                CheckStatus.FAIL,
                probe_err,
                f"run `{node.python} -m boltring.cluster.agent.nodeprobe </dev/null` on "
                f"{node.name} to see the error",
            )
        )
        report.results += skipped_node_checks(config, node, neighbours, "node probe failed")
        return report
    report.facts = facts
    report.results += node_results(config, node, facts, versions, neighbours)
    report.results.append(clock_result(node, clock, darwin=facts.get("platform") == "darwin"))
    report.boltring_ok = bool((facts.get("boltring") or {}).get("installed"))
    report.ring_ok = CheckStatus.FAIL not in (report.status("ring_iface"), report.status("ring_ip"))
    return report


def _skip_reason(rep: NodeReport) -> str:
    """The reason an unreachable node's checks give (its first skipped one's)."""
    whys = (r.value for r in rep.results if r.status == CheckStatus.SKIPPED and r.value)
    return next(whys, "no SSH connection")


def _with_unreached_links(
    config: Config, reports: Mapping[str, NodeReport], measured: dict[tuple[str, str], CheckResult]
) -> dict[tuple[str, str], CheckResult]:
    """Every ring link's bw:<a>-><b>, in ring order: the measured ones, and a link to or from a
    node SSH could not reach as skipped, naming that node (measure_links leaves those out)."""
    out: dict[tuple[str, str], CheckResult] = {}
    for a, b in ring_links(config):
        key = (a.name, b.name)
        if key in measured:
            out[key] = measured[key]
            continue
        far = next((n.name for n in (a, b) if reports[n.name].transport is None), None)
        if far is not None:
            why = f"no SSH connection to {far}"
            out[key] = result("ring", f"bw:{a.name}->{b.name}", CheckStatus.SKIPPED, why)
    return out


async def check_node(link: NodeLink, config: Config, node: Node) -> list[CheckResult]:
    """All per-node checks of one node (no bandwidth, no cross-node checks)."""
    report = await probe_node(link, config, node)
    return report.results


async def check_cluster(
    config: Config,
    transports: Mapping[str, NodeLink] | Connector,
    *,
    bandwidth: bool = True,
    bandwidth_seconds: float = BW_SECONDS,
    min_gbps: float = MIN_GBPS,
    check_ports: bool = True,
    on_result: Callable[[CheckResult], None] | None = None,
    emit: Callable[[CheckResult], None] | None = None,
    facts_out: dict[str, NodeFacts] | None = None,
) -> list[CheckResult]:
    """Every check on every node (concurrently), then across nodes: Thunderbolt loops, ring
    reachability, MTU agreement and (with `bandwidth`) one bandwidth burst per ring link.

    `transports` maps node name to a Transport (connected, or connected here) or to the error
    that kept it from connecting; an object with `async connect(node) -> Transport` (the
    JobController) works too. `on_result` (alias `emit`) sees each result as soon as it exists,
    node by node, for live panels. While a job runs, pass bandwidth=False (the probe would
    compete with the ring) and check_ports=False (the ranks hold the ring ports). `facts_out`,
    when given, is filled with {node: facts} for every node that was probed."""
    emit_fn = on_result or emit or (lambda r: None)
    versions = controller_versions()
    neighbours = ring_neighbours(config)

    async def link_for(node: Node) -> NodeLink:
        if isinstance(transports, Mapping):
            tr = transports.get(node.name)
            return LocalTransport(node) if tr is None and node.local else tr
        try:
            return await transports.connect(node)
        except TransportError as e:
            return e

    async def one(node: Node) -> NodeReport:
        rep = await probe_node(await link_for(node), config, node, neighbours[node.name], versions)
        if not check_ports:
            rep.results = [r for r in rep.results if r.name != "ports"]
        if rep.transport is not None:
            paths = await job_paths_result(config, node, rep.transport)
            if paths is not None:
                rep.results.append(paths)
        elif named_paths(config):  # the node would have been asked for the job's folders
            rep.results.append(result(node.name, JOB_PATHS, CheckStatus.SKIPPED, _skip_reason(rep)))
        for r in rep.results:
            emit_fn(r)
        return rep

    reps = await asyncio.gather(*(one(n) for n in config.nodes))
    reports = {r.node.name: r for r in reps}
    facts = {name: rep.facts for name, rep in reports.items() if rep.facts}
    if facts_out is not None:
        facts_out.update(facts)

    for r in tb_loop_results(facts):
        reports[r.node].results.append(r)
        emit_fn(r)

    bw_results: dict[tuple[str, str], CheckResult] = {}
    if bandwidth:
        measured = await measure_links(config, reports, seconds=bandwidth_seconds, min_gbps=min_gbps)
        bw_results = _with_unreached_links(config, reports, measured)

    ring = reachability_results(config, reports, bw_results)
    order = ring_order_result(config, facts)
    if order is not None:
        ring.append(order)
    for r in [*ring, *bw_results.values()]:
        emit_fn(r)
    results: list[CheckResult] = []
    for node in config.nodes:
        results += reports[node.name].results
    return results + ring + list(bw_results.values())
