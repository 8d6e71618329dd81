"""`boltring setup` in the terminal: one live row per node (its step, or pip's latest line), then
a table: which Python, which venv, what was installed or upgraded, how long it took; for a node
that failed, the step and pip's last lines. Without a terminal, plain lines instead of the live
rows. Also `--download-wheelhouse`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.nodes.setup import NodeSetup, node_platforms, setup_nodes
from boltring.cluster.nodes.wheels import (
    SetupError,
    boltring_wheel,
    config_wheelhouse,
    download_argv,
    setup_extras,
    wanted,
)

from .console import cli_console

REDRAW_S = 0.25
PLAIN_EVERY_S = 5.0  # without a terminal, a node's pip line at most this often


class SetupView:
    def __init__(self, nodes: list[Node], console: Console):
        self.console = console
        self.live = console.is_terminal
        self.lines = {n.name: "waiting" for n in nodes}
        self.started = time.monotonic()
        self._plain_at: dict[str, float] = {}

    def report(self, node: str, kind: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self.lines[node] = text if kind == "step" else f"pip: {text}"
        if not self.live:
            now = time.monotonic()
            if kind == "step" or now - self._plain_at.get(node, 0) >= PLAIN_EVERY_S:
                self._plain_at[node] = now
                self.console.print(f"{node}: {self.lines[node]}", highlight=False, soft_wrap=True)

    def render(self) -> Table:
        t = Table.grid(padding=(0, 2))
        elapsed = time.monotonic() - self.started
        for name, line in self.lines.items():
            t.add_row(Text(name, style="bold"), Text(f"{elapsed:5.1f}s", style="dim"), Text(line[:100]))
        return t


def summary_table(results: list[NodeSetup]) -> Table:
    t = Table(title="boltring setup", show_lines=False)
    for col in ("node", "result", "python", "venv", "installed or upgraded", "time"):
        t.add_column(col)
    colours = {"up to date": "green", "installed": "cyan", "failed": "red", "local": "dim"}
    for r in results:
        t.add_row(
            r.node,
            Text(
                r.status + (f" ({r.step})" if r.status == "failed" and r.step else ""),
                colours.get(r.status, ""),
            ),
            r.python or "–",
            r.venv,
            ", ".join(r.changes) or "–",
            f"{r.seconds:.1f} s",
        )
    return t


async def run_setup(
    config: Config,
    transport_of,
    *,
    wheelhouse: Path | None,
    nodes: list[Node],
    console: Console | None = None,
) -> int:
    console = console or cli_console()
    try:
        want = wanted(setup_extras(config))
    except SetupError as e:
        console.print(f"[red]boltring setup:[/] {e}")
        return 2
    where = f"from the wheelhouse {wheelhouse} (--no-index)" if wheelhouse else "from the package index"
    console.print(
        f"boltring setup: boltring {want.boltring}, mlx {want.mlx or '(not installed here: any)'}"
        + (f", extras {','.join(want.extras)}" if want.extras else "")
        + f", on {', '.join(n.name for n in nodes)}; what a node lacks comes {where}"
    )
    view = SetupView(nodes, console)
    try:
        if view.live:
            with Live(
                view.render(), console=console, refresh_per_second=1 / REDRAW_S, transient=True
            ) as live:
                task = asyncio.ensure_future(
                    setup_nodes(
                        config, transport_of, want, wheelhouse=wheelhouse, nodes=nodes, report=view.report
                    )
                )
                while not task.done():
                    live.update(view.render())
                    await asyncio.wait({task}, timeout=REDRAW_S)
                results = task.result()
        else:
            results = await setup_nodes(
                config, transport_of, want, wheelhouse=wheelhouse, nodes=nodes, report=view.report
            )
    except SetupError as e:
        console.print(f"[red]boltring setup:[/] {e}" + (f" ({e.hint})" if e.hint else ""))
        return 2
    console.print(summary_table(results))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        console.print(f"[red]{r.node}[/] failed at step [bold]{r.step}[/]: {r.error}", soft_wrap=True)
        for line in r.tail:
            console.print(f"  [dim]{r.node} |[/] {line}", highlight=False, soft_wrap=True)
    if not failed:
        console.print("every node has the same boltring and mlx as this machine: `boltring check` to confirm")
    return 1 if failed else 0


async def run_download_wheelhouse(
    config: Config, transport_of, dest: Path, *, nodes: list[Node], console: Console | None = None
) -> int:
    """Fill `dest` with every wheel the nodes need, for their platform (asked from the nodes)."""
    console = console or cli_console()
    try:
        want = wanted(setup_extras(config))
        platforms, problems = await node_platforms(config, transport_of, nodes)
        for p in problems:
            console.print(f"[yellow]warn[/] {p}")
        if not platforms:
            raise SetupError(
                "no node could be asked for its platform",
                hint="make at least one node reachable (boltring check), then run this again",
            )
        dest.mkdir(parents=True, exist_ok=True)
        wheel = await asyncio.to_thread(boltring_wheel, want.boltring, dest)
    except SetupError as e:
        console.print(f"[red]boltring setup:[/] {e}" + (f" ({e.hint})" if e.hint else ""))
        return 2
    for info in platforms:
        argv = download_argv(dest, info, want, wheel)
        what = f"{info['platform']} {info['machine']} Python {'.'.join(map(str, info['version'][:2]))}"
        console.print(f"downloading wheels for {what} into {dest}")
        res = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-8:]
            console.print(f"[red]pip download failed for {what}[/]:")
            for line in tail:
                console.print(f"  {line}", highlight=False, soft_wrap=True)
            return 1
    wheels = sorted(dest.glob("*.whl"))
    console.print(
        f"{dest}: {len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 1e6:.1f} MB. "
        f"Use it with `boltring setup --wheelhouse {dest}` or `setup: {{wheelhouse: {dest}}}`."
    )
    return 0


def setup_main(config: Config, names: list[str] | None, wheelhouse: str | None, download: str | None) -> int:
    by_name = {n.name: n for n in config.nodes}
    unknown = [n for n in names or [] if n not in by_name]
    if unknown:
        print(
            f"boltring setup: no node {', '.join(unknown)} in {config.source} (nodes: {', '.join(by_name)})",
            file=sys.stderr,
        )
        return 2
    nodes = [by_name[n] for n in names] if names else list(config.nodes)

    async def go() -> int:
        from boltring.cluster.jobs.controller import JobController

        controller = JobController(config)  # only for its transports: the same SSH as a job's
        of = controller.transport
        try:
            if download:
                return await run_download_wheelhouse(config, of, Path(download).expanduser(), nodes=nodes)
            return await run_setup(config, of, wheelhouse=config_wheelhouse(config, wheelhouse), nodes=nodes)
        finally:
            await controller.close()

    return asyncio.run(go())
