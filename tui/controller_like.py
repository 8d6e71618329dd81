"""What the app needs of a controller (a Protocol that `JobController` and the tests' scripted
FeedController both satisfy), and the dialog texts built from a plan and from failed checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from textual.content import Content

from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.events import CheckResult, Event, JobSummary
from boltring.cluster.states import CheckStatus, JobState

from .view_state import ClusterView


class PlannedRankLike(Protocol):
    rank: int
    node: str
    where: str
    command: str


class ControllerLike(Protocol):
    """What the app uses of `boltring.cluster.jobs.controller.JobController` (and of the test
    double tests/tui/feed.py); mypy checks both against it."""

    config: Config
    state: JobState
    job_id: str | None

    def add_listener(self, fn: Callable[[Event], None]) -> None: ...
    def remove_listener(self, fn: Callable[[Event], None]) -> None: ...
    def plan(self, resume: bool = False) -> Sequence[PlannedRankLike]: ...
    async def run_checks(self) -> Sequence[CheckResult]: ...
    async def setup(self, names: list[str] | None = None) -> Sequence[Any]: ...
    async def resume_point(self) -> str | None: ...
    async def launch(self, resume: bool = False) -> str: ...
    async def kill(self) -> None: ...
    async def wait(self) -> JobSummary: ...
    async def attach(self) -> bool: ...
    async def close(self, kill_running: bool = False) -> None: ...


def failing_checks(view: ClusterView) -> list[CheckResult]:
    """Every failed check of the last run, nodes first (as the launch dialog lists them)."""
    out = [c for nv in view.nodes.values() for c in nv.sorted_checks() if c.status == CheckStatus.FAIL]
    return out + [c for c in view.ring_checks.values() if c.status == CheckStatus.FAIL]


def checks_details(failed: Sequence[CheckResult]) -> Content:
    lines = [Content.styled(f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed:", "bold $error")]
    for c in failed[:12]:
        value = f" ({c.value})" if c.value else ""
        hint = f" — {c.hint}" if c.hint else ""
        lines.append(
            Content.assemble(
                ("✗ ", "bold $error"), (f"{c.node} {c.name}", "bold"), value, (hint, "$text-muted")
            )
        )
    if len(failed) > 12:
        lines.append(Content.styled(f"… and {len(failed) - 12} more (c re-runs the checks)", "$text-muted"))
    return Content("\n").join(lines)


def plan_details(plan: Iterable[PlannedRankLike]) -> Content:
    """The confirm dialog's body: what runs where, one rank per entry."""
    rows = list(plan)
    if not rows:
        return Content.styled("the plan is empty", "italic $text-muted")
    node_w = max(len(r.node) for r in rows)
    where_w = max(len(r.where) for r in rows)
    lines: list[Content] = []
    for r in rows:
        lines.append(
            Content.assemble(
                (f"rank {r.rank:<3}", "bold"),
                " ",
                (r.node.ljust(node_w), "bold $accent"),
                "  ",
                (r.where.ljust(where_w), ""),
            )
        )
        lines.append(Content.styled(f"   $ {r.command}", "$text-muted"))
    return Content("\n").join(lines)
