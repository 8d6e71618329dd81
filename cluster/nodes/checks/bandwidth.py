"""Bandwidth of every ring link: a probe server on the receiver (bound to its ring address) and a
sender on the other node, both proving a fresh secret passed on stdin (`boltring.netio.probe`),
one ~1 s burst per link, all links at once (in ring order each node sends once and receives once,
so no cable direction carries two probes). Then the verdicts: too slow, or far slower than the
other links."""

from __future__ import annotations

import asyncio
import secrets
import statistics

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks.results import (
    NodeReport,
    format_gbps,
    last_line,
    result,
    run_or_error,
    short,
)
from boltring.cluster.nodes.checks.ring import ring_links
from boltring.cluster.nodes.transport import Transport, TransportError
from boltring.cluster.states import CheckStatus

BW_SECONDS = 1.0
BW_BYTES_LIMIT = 4 << 30
BW_CONNECT_TIMEOUT_S = 4.0
MIN_GBPS = 1.0  # below this a "Thunderbolt" link is really Wi-Fi/Ethernet or broken


async def measure_bandwidth(
    a_transport: Transport,
    a: Node,
    a_python: str,
    b_transport: Transport,
    b: Node,
    b_python: str,
    port: int,
    *,
    seconds: float = BW_SECONDS,
    bytes_limit: int = BW_BYTES_LIMIT,
) -> dict:
    """Run a probe server on b (bound to b's ring address) and a sender on a; both prove a fresh
    secret passed on stdin. Returns the sender's JSON ({"gbps", ...} or {"error"})."""
    secret = secrets.token_hex(32)
    job = f"bw-{secrets.token_hex(4)}"
    accept_timeout = BW_CONNECT_TIMEOUT_S + 2.0
    serve_argv = [
        b_python,
        "-m",
        "boltring.netio.probe",
        "serve",
        "--bind",
        b.ring_ip,
        "--port",
        str(port),
        "--seconds",
        f"{seconds:g}",
        "--accept-timeout",
        f"{accept_timeout:g}",
        "--job",
        job,
    ]
    send_argv = [
        a_python,
        "-m",
        "boltring.netio.probe",
        "send",
        "--to",
        f"{b.ring_ip}:{port}",
        "--seconds",
        f"{seconds:g}",
        "--bytes-limit",
        str(bytes_limit),
        "--connect-timeout",
        f"{BW_CONNECT_TIMEOUT_S:g}",
        "--job",
        job,
    ]
    limit = accept_timeout + seconds * 3 + 15
    server = asyncio.create_task(
        run_or_error(b_transport, serve_argv, input=(secret + "\n").encode(), timeout=limit)
    )
    await asyncio.sleep(0.05)
    sender = await run_or_error(a_transport, send_argv, input=(secret + "\n").encode(), timeout=limit)
    srv = await server
    answer = None if isinstance(sender, TransportError) else sender.last_json()
    srv_json = None if isinstance(srv, TransportError) else srv.last_json()
    if answer and "gbps" in answer:
        return answer
    # prefer the server's reason when it never got going (e.g. could not bind)
    if srv_json and srv_json.get("error") and (srv_json.get("code") == 2 or not answer):
        return {"error": f"{b.name}: {srv_json['error']}"}
    if answer and answer.get("error"):
        return {"error": answer["error"]}
    if isinstance(sender, TransportError):
        return {"error": str(sender)}
    return {"error": last_line(sender.stderr) or f"probe exited {sender.returncode}"}


def bw_result(a: Node, b: Node, res: dict, min_gbps: float) -> CheckResult:
    name = f"bw:{a.name}->{b.name}"
    if "gbps" not in res:
        return result(
            "ring",
            name,
            CheckStatus.FAIL,
            short(res.get("error", "failed"), 100),
            f"{a.name} cannot send to {b.name} at {b.ring_ip}: check route:{b.name} on "
            f"{a.name} and any firewall on {b.name}",
        )
    gbps = float(res["gbps"])
    if gbps < min_gbps:
        return result(
            "ring",
            name,
            CheckStatus.FAIL,
            format_gbps(gbps),
            f"{a.name}->{b.name} moves only {format_gbps(gbps)} (Thunderbolt gives 10-40+): "
            f"check the cable and that the route goes over the ring interface",
        )
    return result("ring", name, CheckStatus.OK, format_gbps(gbps))


def link_gbps(results) -> dict[str, float]:
    """{"bw:a->b": Gbit/s} of every ring link a bandwidth check measured (ok, or only warned
    about as slower than the others), read back from the value bw_result wrote."""
    return {
        r.name: float(r.value.split()[0])
        for r in results
        if r.name.startswith("bw:")
        and r.status in (CheckStatus.OK, CheckStatus.WARN)
        and r.value
        and r.value.split()[1:2] == ["Gb/s"]
    }


def _relative_bw(results: list[CheckResult], gbps: dict[str, float]) -> list[CheckResult]:
    """Warn about a link far slower than the others (once absolute checks passed)."""
    if len(gbps) < 3:
        return results
    out = []
    for r in results:
        if r.status == CheckStatus.OK and r.name in gbps:
            others = [v for k, v in gbps.items() if k != r.name]
            med = statistics.median(others)
            if gbps[r.name] < 0.5 * med:
                r = result(
                    r.node,
                    r.name,
                    CheckStatus.WARN,
                    f"{r.value} (others ~{format_gbps(med)})",
                    "this link is much slower than the others: check its cable and route",
                )
        out.append(r)
    return out


def _not_measurable(rep: NodeReport) -> str | None:
    if rep.transport is None or rep.python is None:
        return f"no python on {rep.node.name}"
    if not rep.boltring_ok:
        return f"boltring missing on {rep.node.name}"
    if not rep.ring_ok:
        return f"{rep.node.name} ring interface not ready"
    return None


async def measure_links(
    config: Config,
    reports: dict[str, NodeReport],
    *,
    seconds: float = BW_SECONDS,
    min_gbps: float = MIN_GBPS,
) -> dict[tuple[str, str], CheckResult]:
    """One bw:<a>-><b> result per ring link, all measured at once; a link whose ends are not
    ready is skipped, saying which end and why. A link to or from a node SSH could not reach
    gets no result at all: that node's one ssh line already says why."""
    links = [
        (a, b)
        for a, b in ring_links(config)
        if reports[a.name].transport is not None and reports[b.name].transport is not None
    ]

    async def one(i: int, a: Node, b: Node) -> CheckResult:
        ra, rb = reports[a.name], reports[b.name]
        why = _not_measurable(ra) or _not_measurable(rb)
        if why or ra.transport is None or rb.transport is None or ra.python is None or rb.python is None:
            return result("ring", f"bw:{a.name}->{b.name}", CheckStatus.SKIPPED, why)
        port = config.ring.port - 1 - (i % 64)
        res = await measure_bandwidth(
            ra.transport, a, ra.python, rb.transport, b, rb.python, port, seconds=seconds
        )
        return bw_result(a, b, res, min_gbps)

    done = await asyncio.gather(*(one(i, a, b) for i, (a, b) in enumerate(links)))
    adjusted = _relative_bw(list(done), link_gbps(done))
    return {(a.name, b.name): r for (a, b), r in zip(links, adjusted, strict=True)}
