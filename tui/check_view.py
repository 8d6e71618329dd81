"""`boltring check`: the node checks as tables (or JSON lines), and an exit code.

While the checks run, a terminal shows one spinner per node (connecting…, checking…, done) and
one for the ring links. Then:
- a node SSH could not reach takes ONE line: the cause, how many of its checks were skipped, and
  what to do (a command that runs);
- the table lists the checks that ran; skipped ones fold into "+N skipped" (one row per node,
  with the reason), and the last line counts everything with `count_checks`.
With `--json`, one object per check instead: every check of every node, the skipped ones too
(an unreachable node's with "no SSH connection (…)" as their value).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import CheckResult, Event, NodeState
from boltring.cluster.nodes.checks.hints import ssh_command
from boltring.cluster.nodes.checks.results import count_checks, exit_code
from boltring.cluster.states import CheckStatus, SshState

from .console import cli_console

MARKS = {
    CheckStatus.OK: "[green]✔ ok[/]",
    CheckStatus.WARN: "[yellow]! warn[/]",
    CheckStatus.FAIL: "[red]✘ fail[/]",
    CheckStatus.SKIPPED: "[dim]- skipped[/]",
}
RING = "ring"


class CheckProgress:
    """One spinner per node and one for the ring, fed by the controller's events. A node that is
    connecting counts the seconds against its connect timeout ("connecting… 4/10 s")."""

    def __init__(self, config: Config, bandwidth: bool) -> None:
        self.names = [n.name for n in config.nodes]
        self.connect_timeout_s = config.ssh.connect_timeout_s
        self.spinners = {name: Spinner("dots", text=f"{name}: waiting") for name in self.names}
        self.connecting_since: dict[str, float] = {}
        self.done: dict[str, list[CheckResult]] = {}
        self.ring_label = "ring links: reachability" + (" and bandwidth" if bandwidth else "")
        self.ring = Spinner("dots", text=f"{self.ring_label}: waiting for the nodes")

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, NodeState) and ev.node in self.spinners and ev.node not in self.done:
            state = SshState(ev.state)
            self.connecting_since.pop(ev.node, None)
            if state.busy:  # connecting, reconnecting: the countdown is drawn in __rich__
                self.connecting_since[ev.node] = time.monotonic()
                return
            word = "checking…" if state.usable else f"{state}"
            self.spinners[ev.node].update(text=f"{ev.node}: {word}")
        elif isinstance(ev, CheckResult) and ev.node in self.spinners:
            self.done.setdefault(ev.node, []).append(ev)
            self.connecting_since.pop(ev.node, None)
            if len(self.done) == len(self.names):
                self.ring.update(text=f"{self.ring_label}: measuring…")

    def __rich__(self) -> Group:
        rows: list[Spinner | Text] = []
        now = time.monotonic()
        for name in self.names:
            if name in self.done:
                counts = count_checks(self.done[name])
                mark = "[red]✘[/]" if counts.failed else "[green]✔[/]"
                rows.append(Text.from_markup(f"{mark} {escape(name)}: {counts}"))
                continue
            if name in self.connecting_since:
                waited = min(now - self.connecting_since[name], self.connect_timeout_s)
                self.spinners[name].update(
                    text=f"{name}: connecting… {waited:.0f}/{self.connect_timeout_s:g} s"
                )
            rows.append(self.spinners[name])
        rows.append(self.ring)
        return Group(*rows)


async def run_check(
    controller: JobController,
    *,
    json_out: bool = False,
    bandwidth: bool = True,
    console: Console | None = None,
) -> int:
    console = console or cli_console()
    config = controller.config
    progress = CheckProgress(config, bandwidth)
    if not json_out:
        controller.add_listener(progress.on_event)
    try:
        if json_out:
            results = await controller.run_checks(bandwidth=bandwidth)
        else:
            with Live(progress, console=console, transient=True, refresh_per_second=12.5):
                results = await controller.run_checks(bandwidth=bandwidth)
    finally:
        controller.remove_listener(progress.on_event)
        await controller.close()
    if json_out:
        for r in results:
            print(json.dumps(r.to_dict()))
        return exit_code(results)
    print_nodes(console, config, results)
    print_results(console, results)
    return exit_code(results)


def print_nodes(console: Console, config: Config, results: list[CheckResult]) -> None:
    nodes = Table(title=f"cluster {config.name} ({config.source})", title_justify="left")
    # The ssh target is a command to copy: it never wraps; a long chip name wraps instead.
    for col in ("node", "ssh", "ring address", "ranks"):
        nodes.add_column(col, no_wrap=True)
    for col in ("chip", "memory"):
        nodes.add_column(col)
    total_mem = 0.0
    facts = {(r.node, r.name): r for r in results if r.status != CheckStatus.SKIPPED}  # measured only
    for n in config.nodes:
        mem = facts.get((n.name, "memory"))
        chip = facts.get((n.name, "chip"))
        if n.memory_gb:
            total_mem += n.memory_gb
        nodes.add_row(
            n.name,
            SshState.LOCAL if n.local else ssh_command(n).removeprefix("ssh "),  # as OpenSSH takes it
            n.ring_ip,
            str(n.ranks),
            n.chip or (chip.value if chip else "") or "",
            f"{n.memory_gb:g} GB" if n.memory_gb else (mem.value if mem else "") or "",
        )
    console.print(nodes)
    if total_mem:
        console.print(f"total memory (configured): {total_mem:g} GB over {len(config.nodes)} nodes")


def _unreached(results: Iterable[CheckResult]) -> set[str]:
    """The nodes SSH could not reach (their ssh check failed)."""
    return {r.node for r in results if r.name == "ssh" and r.status == CheckStatus.FAIL}


def unreachable_lines(results: Iterable[CheckResult]) -> list[str]:
    """One line per node SSH could not reach: its cause, how many of its checks that kept from
    running ("+13 skipped": `--json` lists each), then what to do."""
    results = list(results)
    lines = []
    for r in results:
        if not (r.name == "ssh" and r.status == CheckStatus.FAIL):
            continue
        skipped = sum(1 for x in results if x.node == r.node and x.status == CheckStatus.SKIPPED)
        lines.append(
            f"[red]✘ {escape(r.node)}[/] ssh: {escape(r.value or 'not connected')}"
            + (f" [dim](+{skipped} skipped)[/]" if skipped else "")
            + (f" [dim]→[/] {escape(r.hint)}" if r.hint else "")
        )
    return lines


def _table_rows(results: list[CheckResult]) -> list[tuple[str, ...]]:
    """The table's rows: the checks that ran, node by node, and one "+N skipped" row per node
    with the first reason. A node SSH could not reach has none: its one line says it all."""
    unreached = _unreached(results)
    order: list[str] = []
    skipped: dict[str, list[CheckResult]] = {}
    for r in results:
        if r.node in unreached:
            continue
        if r.node not in order:
            order.append(r.node)
        if r.status == CheckStatus.SKIPPED:
            skipped.setdefault(r.node, []).append(r)
    rows: list[tuple[str, ...]] = []
    for node in order:
        for r in results:
            if r.node != node or r.status == CheckStatus.SKIPPED:
                continue
            rows.append(
                (escape(r.node), escape(r.name), MARKS[CheckStatus(r.status)], escape(r.value or ""),
                 escape(r.hint or ""))
            )  # fmt: skip
        if node in skipped:
            first = skipped[node][0]
            rows.append(
                (escape(node), f"+{len(skipped[node])} skipped", "[dim]-[/]", escape(first.value or ""), "")
            )
    return rows


def results_table(results: list[CheckResult]) -> Table:
    """The checks that ran (an unreachable node's ssh line is printed apart, with its skipped
    count); each node's skipped checks fold into one "+N skipped" row with the first reason."""
    table = Table(title="checks", title_justify="left")
    for col in ("node", "check", "status", "value", "what to do"):
        table.add_column(col, overflow="fold")
    for row in _table_rows(results):
        table.add_row(*row)
    return table


def print_results(console: Console, results: list[CheckResult]) -> None:
    """The unreachable nodes' lines, the table, and the count of every check (skipped ones
    included, as `--json` lists them)."""
    for line in unreachable_lines(results):
        console.print(line, soft_wrap=True)
    if _table_rows(results):
        console.print(results_table(results))
    console.print(f"{len(results)} checks: {count_checks(results)}")
