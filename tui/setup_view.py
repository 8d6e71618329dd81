"""`boltring setup` in the terminal: one live row per node (its step, or pip's latest line, then
how it ended, with the node's own time), then a table: which Python, which venv, what was
installed or upgraded, how long it took; for a node that failed, the step, what to do, and pip's
last lines. Without a terminal, plain lines instead of the live rows, one of them when a node
ends. Also `--download-wheelhouse`.

A `python:` that is not a venv's is refused before anything starts (exit 2, naming the config's
line); Ctrl-C and SIGTERM stop every node's setup and end with one line and exit 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from boltring.cluster.config.located import ConfigError, ConfigErrors, line_of, parse_yaml
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.nodes.setup import NodeSetup, venv_of
from boltring.cluster.nodes.setup_all import node_platforms, setup_nodes
from boltring.cluster.nodes.wheels import (
    SetupError,
    boltring_wheel,
    config_wheelhouse,
    download_argv,
    into_wheelhouse,
    run_killable,
    setup_extras,
    wanted,
)

from .console import cli_console

REDRAW_S = 0.25
PLAIN_EVERY_S = 5.0  # without a terminal, a node's pip line at most this often
DOWNLOAD_TIMEOUT_S = 3600.0


def ended_text(r: NodeSetup) -> str:
    """A node's end, for its live row and its plain line."""
    if r.status == "failed":
        return f"failed at step {r.step}: {r.error}" + (f" → {r.hint}" if r.hint else "")
    if r.status == "local":
        return "local: runs this machine's own python, nothing to set up"
    if r.status == "installed":
        return f"installed: {', '.join(r.changes) or 'nothing new'}"
    return r.status


class SetupView:
    """Each node's latest step (or pip line) and its own time, frozen when the node ends; without
    a terminal, plain lines: each step, pip's lines now and then, and one line when a node ends."""

    def __init__(self, nodes: list[Node], console: Console):
        self.console = console
        self.live = console.is_terminal
        self.lines = {n.name: "waiting" for n in nodes}
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}  # a node's time, once it ended
        self._plain_at: dict[str, float] = {}

    def report(self, node: str, kind: str, text: str) -> None:
        text = text.strip()
        if not text or node in self.seconds:
            return
        self.lines[node] = text if kind == "step" else f"pip: {text}"
        if not self.live:
            now = time.monotonic()
            if kind == "step" or now - self._plain_at.get(node, 0) >= PLAIN_EVERY_S:
                self._plain_at[node] = now
                self.say(f"{node}: {self.lines[node]}")

    def done(self, r: NodeSetup) -> None:
        self.seconds[r.node] = r.seconds
        self.lines[r.node] = ended_text(r)
        if not self.live:
            self.say(f"{r.node}: {self.lines[r.node]} ({r.seconds:.1f} s)")

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True, markup=False)

    def render(self) -> Table:
        t = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for name, line in self.lines.items():
            seconds = self.seconds.get(name, now - self.started)
            t.add_row(Text(name, style="bold"), Text(f"{seconds:5.1f}s", style="dim"), Text(line[:100]))
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
    work = setup_nodes(
        config, transport_of, want, wheelhouse=wheelhouse, nodes=nodes, report=view.report, done=view.done
    )
    try:
        if view.live:
            with Live(
                view.render(), console=console, refresh_per_second=1 / REDRAW_S, transient=True
            ) as live:
                task = asyncio.ensure_future(work)
                try:
                    while not task.done():
                        live.update(view.render())
                        await asyncio.wait({task}, timeout=REDRAW_S)
                finally:
                    if not task.done():  # interrupted: stop every node's setup, and wait for it
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                results = task.result()
        else:
            results = await work
    except SetupError as e:
        console.print(f"[red]boltring setup:[/] {e}" + (f" ({e.hint})" if e.hint else ""))
        return 2
    console.print(summary_table(results))
    failed = [r for r in results if r.status == "failed"]
    by_name = {n.name: n for n in nodes}
    for r in failed:
        hint = r.hint
        if r.step == "config" and r.node in by_name:  # which line of the config to change
            line, key = _python_line(config, by_name[r.node])
            place = f"{config.source}:{line}" if line else f"{config.source}"
            hint = f"{hint or 'fix it'} ({place}: {key})"
        console.print(
            f"[red]{r.node}[/] failed at step [bold]{r.step}[/]: {escape(r.error or '')}"
            + (f" [dim]→[/] {escape(hint)}" if hint else ""),
            soft_wrap=True,
        )
        for line in r.tail:
            console.print(f"  [dim]{r.node} |[/] {escape(line)}", highlight=False, soft_wrap=True)
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
    except SetupError as e:
        console.print(f"[red]boltring setup:[/] {e}")
        return 2
    try:
        platforms, problems = await node_platforms(config, transport_of, nodes)
        for p in problems:
            console.print(f"[yellow]warn[/] {p}")
        if not platforms:  # unreachable nodes are a failure, not bad input: exit 1, as setup's
            console.print(
                "[red]boltring setup:[/] no node could be asked for its platform (make at least one "
                "node reachable: boltring check, then run this again)"
            )
            return 1
        dest.mkdir(parents=True, exist_ok=True)
        wheel = await boltring_wheel(want.boltring, dest)  # a stale one in dest is passed over
        if wheel is not None:
            wheel = await asyncio.to_thread(into_wheelhouse, wheel, dest)
    except SetupError as e:  # boltring's wheel could not be built
        console.print(f"[red]boltring setup:[/] {e}" + (f" ({e.hint})" if e.hint else ""))
        return 1
    for info in platforms:
        argv = download_argv(dest, info, want, wheel)
        what = f"{info['platform']} {info['machine']} Python {'.'.join(map(str, info['version'][:2]))}"
        console.print(f"downloading wheels for {what} into {dest}")
        try:
            rc, output = await run_killable(argv, DOWNLOAD_TIMEOUT_S)
        except TimeoutError:
            rc, output = 1, f"pip download took over {DOWNLOAD_TIMEOUT_S:g} s"
        if rc != 0:
            tail = output.strip().splitlines()[-8:]
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


def python_not_a_venv(config: Config, nodes: list[Node]) -> ConfigError | None:
    """The config's lines whose `python:` is not a venv's interpreter (setup creates and fills
    that venv, so it must know which): bad input, refused before anything starts."""
    bad = [n for n in nodes if not n.local and venv_of(n) is None]
    if not bad:
        return None
    source = config.source or "the config"
    errors = []
    for n in bad:
        line, key = _python_line(config, n)
        errors.append(
            ConfigError(
                source,
                line,
                key,
                f"{n.python} is not a venv's interpreter (node {n.name}): setup creates and fills "
                "the venv it belongs to",
                "set it to <venv>/bin/python, e.g. ~/boltring/.venv/bin/python",
            )
        )
    return ConfigErrors.of(errors)


def _python_line(config: Config, node: Node) -> tuple[int | None, str]:
    """Where the config file sets this node's python (its own key, else defaults'), as
    (line, key path); (None, a key path) when the file cannot be read again or sets none."""
    guess = f"nodes.{node.name}.python"
    src = config.source
    if not src or src.startswith("<"):
        return None, guess
    try:
        doc = parse_yaml(Path(src).read_text(), src)
    except (OSError, UnicodeDecodeError, ConfigError):
        return None, guess
    if not isinstance(doc, dict):
        return None, guess  # an imported format (an MLX hostfile): no python key to point at
    items = doc.get("nodes")
    index = None
    if isinstance(items, list):
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("name") == node.name:
                index = i
                if "python" in item:
                    return line_of(item, "python"), f"nodes[{i}].python"
    defaults = doc.get("defaults")
    if isinstance(defaults, dict) and "python" in defaults:
        return line_of(defaults, "python"), "defaults.python"
    if index is not None:
        return line_of(items, index), f"nodes[{index}] (python: not set, so {node.python})"
    return None, guess


def setup_main(config: Config, names: list[str] | None, wheelhouse: str | None, download: str | None) -> int:
    by_name = {n.name: n for n in config.nodes}
    names = list(dict.fromkeys(names or []))  # --node h1 --node h1: one setup of h1, not two at once
    unknown = [n for n in names if n not in by_name]
    if unknown:
        print(
            f"boltring setup: no node {', '.join(unknown)} in {config.source} (nodes: {', '.join(by_name)})",
            file=sys.stderr,
        )
        return 2
    nodes = [by_name[n] for n in names] if names else list(config.nodes)
    if not download:
        bad = python_not_a_venv(config, nodes)
        if bad is not None:
            for line in str(bad).splitlines():
                print(f"boltring setup: {line}", file=sys.stderr)
            return 2

    async def go() -> int:
        from boltring.cluster.jobs.controller import JobController

        controller = JobController(config)  # only for its transports: the same SSH as a job's
        of = controller.transport
        with _interruptible() as stopped:
            try:
                if download:
                    return await run_download_wheelhouse(config, of, Path(download).expanduser(), nodes=nodes)
                return await run_setup(
                    config, of, wheelhouse=config_wheelhouse(config, wheelhouse), nodes=nodes
                )
            except asyncio.CancelledError:
                if not stopped:
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]  # handled: 130
            finally:
                await controller.close()
        what = "filling the wheelhouse" if download else "every node's setup"
        print(
            f"boltring setup: interrupted ({stopped[0]}): {what} was stopped; run it again to finish",
            file=sys.stderr,
        )
        return 130

    # SIGTERM before the loop's own handler is in place: the same stop as Ctrl-C (entry.py's
    # one line and 130), not a silent 143
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return asyncio.run(go())
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interruptible() -> Iterator[list[str]]:
    """Ctrl-C and SIGTERM cancel the current task (the setup under way: its nodes' commands are
    cancelled and awaited); the list says which signal it was, empty when none came."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped: list[str] = []

    def stop(by: str) -> None:
        stopped.append(by)
        if len(stopped) == 1:  # a second signal does not cut the cleanup short
            task.cancel()

    handled = []
    for sig, by in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
        try:
            loop.add_signal_handler(sig, stop, by)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        yield stopped
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
