"""Building, formatting and counting check results, and the per-node report the checks share.

`count_checks` is the one way to count results (ok / warn / fail / skipped): every view that
says "12 ok, 1 warning, 2 failed, +30 skipped" should get it from here (`boltring check` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from boltring.cluster.agent.facts import NodeFacts
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.transport import CommandResult, Transport, TransportError
from boltring.cluster.states import CheckStatus

GIB = 1 << 30


def result(
    node: str, name: str, status: CheckStatus, value: str | None = None, hint: str | None = None
) -> CheckResult:
    return CheckResult(node=node, name=name, status=status, value=value, hint=hint)


def short(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters (for values quoted from a node's output)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def gb(nbytes: int | float | None) -> str:
    if not nbytes:
        return "?"
    size = nbytes / GIB
    return f"{size:.0f} GB" if size >= 10 else f"{size:.1f} GB"


def format_gbps(gbps: float) -> str:
    return f"{gbps:.2f} Gb/s" if gbps < 1 else f"{gbps:.1f} Gb/s"


def format_ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms >= 0.01 else "<0.01 ms"


async def run_or_error(transport: Transport, argv: list[str], **kw) -> CommandResult | TransportError:
    """The command's result, or the TransportError that kept it from running (checks report
    failures; they never raise them)."""
    try:
        return await transport.run(argv, **kw)
    except TransportError as e:
        return e


@dataclass
class NodeReport:
    """What checking one node produced, and what the cross-node checks need from it."""

    node: Node
    results: list[CheckResult] = field(default_factory=list)
    facts: NodeFacts | None = None
    transport: Transport | None = None
    python: str | None = None  # argv[0] that worked
    boltring_ok: bool = False  # `-m boltring…` runs there (bandwidth probes possible)
    ring_ok: bool = False  # ring interface up and holding ring_ip

    def status(self, name: str) -> CheckStatus | None:
        for r in self.results:
            if r.name == name:
                return r.status
        return None


@dataclass(frozen=True)
class CheckCounts:
    ok: int = 0
    warn: int = 0
    fail: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.warn + self.fail + self.skipped

    @property
    def failed(self) -> bool:
        return self.fail > 0

    def __str__(self) -> str:
        """ "12 ok, 1 warning, 2 failed, +30 skipped" (parts that are 0 left out)."""
        parts = [f"{self.ok} ok"]
        if self.warn:
            parts.append(f"{self.warn} warning" + ("s" if self.warn != 1 else ""))
        if self.fail:
            parts.append(f"{self.fail} failed")
        if self.skipped:
            parts.append(f"+{self.skipped} skipped")
        return ", ".join(parts)


def count_checks(results: Iterable[CheckResult]) -> CheckCounts:
    """How many results have each status; skipped ones are counted apart (they are neither good
    nor bad: something before them failed, or they do not apply)."""
    n = dict.fromkeys(CheckStatus, 0)
    for r in results:
        n[CheckStatus(r.status)] += 1
    return CheckCounts(
        ok=n[CheckStatus.OK],
        warn=n[CheckStatus.WARN],
        fail=n[CheckStatus.FAIL],
        skipped=n[CheckStatus.SKIPPED],
    )


def exit_code(results: Iterable[CheckResult]) -> int:
    """1 if any check failed, else 0 (warnings do not fail `boltring check`)."""
    return 1 if count_checks(results).failed else 0


def skipped_node_checks(
    config: Config, node: Node, neighbours: list[Node], why: str, *, python: bool = False
) -> list[CheckResult]:
    """The per-node checks that could not run on a node, as skipped with `why`, in the order a
    probed node lists them (verdicts.node_results); `python` too when even that was not run (no
    SSH connection), then the clock check run.probe_node adds after them. The views fold these
    into "+N skipped"."""
    names = ["python"] if python else []
    names += ["boltring", "mlx", "chip", "memory", "ring_iface", "ring_ip", "mtu", "ports"]
    for n in neighbours:
        names += [f"route:{n.name}", f"rtt:{n.name}"]
    names.append("default_route")
    if config.ring.backend == "jaccl":
        names.append("rdma")
    names.append("clock")
    return [result(node.name, name, CheckStatus.SKIPPED, why) for name in names]
