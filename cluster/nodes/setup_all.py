"""`boltring setup` for every node at once: one NodeSetupRun per node (setup.py) in parallel,
the one boltring wheel they share built at most once and only when a node needs it, and
node_platforms for `--download-wheelhouse`. A node's failure stops only that node; an
interruption cancels and awaits every node's run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.errors import BoltringError
from boltring.cluster.nodes.setup import MIN_PYTHON, NodeSetup, NodeSetupRun, Report, describe
from boltring.cluster.nodes.transport import Transport
from boltring.cluster.nodes.wheels import SetupError, Wanted, boltring_wheel

T = TypeVar("T")


class _WheelOnce:
    """boltring's wheel, looked for (and built) at most once, when the first node needs it: an
    up-to-date run builds nothing (it used to build it at the start, and the process then waited
    for that thread to end). Every node waiting while it is built is told so."""

    def __init__(self, version: str, wheelhouse: Path | None):
        self.version, self.wheelhouse = version, wheelhouse
        self._task: asyncio.Future | None = None
        self._building = False
        self._waiting: list[Callable[[], None]] = []

    async def __call__(self, on_build: Callable[[], None]) -> Path | None:
        if self._building:
            on_build()
        self._waiting.append(on_build)
        if self._task is None:
            self._task = asyncio.ensure_future(boltring_wheel(self.version, self.wheelhouse, self._started))
        try:
            # shielded: one node's setup cancelled must not cancel the others' wheel
            return await asyncio.shield(self._task)
        finally:
            self._waiting.remove(on_build)

    def _started(self) -> None:
        self._building = True
        for tell in list(self._waiting):
            tell()

    async def close(self) -> None:
        """Stop a build nobody waits for any more (the setup was interrupted)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def setup_nodes(
    config: Config,
    transport_of: Callable[[Node], Transport],
    want: Wanted,
    *,
    wheelhouse: Path | None = None,
    nodes: list[Node] | None = None,
    report: Report | None = None,
    done: Callable[[NodeSetup], None] | None = None,
) -> list[NodeSetup]:
    """Set up the nodes in parallel; one NodeSetup each, in config order (failures included),
    each node once however often it was named. `done` hears of each node as it ends. Local
    nodes (`local: true`) run this machine's own python: nothing to set up there. Cancelled,
    every node's setup is cancelled and awaited (a remote command's end is the transport's)."""
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise SetupError(
            f"the wheelhouse {wheelhouse} is not a folder", hint="create it with --download-wheelhouse"
        )
    wheel = _WheelOnce(want.boltring, wheelhouse)
    unique = list({n.name: n for n in (nodes or list(config.nodes))}.values())
    runs = [
        NodeSetupRun(transport_of(n), n, want, wheel, wheelhouse, report or (lambda *a: None)) for n in unique
    ]

    async def one(run: NodeSetupRun) -> NodeSetup:
        result = await run.run()
        if done is not None:
            done(result)
        return result

    try:
        return await _all(one(r) for r in runs)
    finally:
        await wheel.close()


async def _all(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """asyncio.gather, but cancelled (Ctrl-C), every task is cancelled and awaited, and its
    exception retrieved: no "_GatheringFuture exception was never retrieved" at exit."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _no_wheel(on_build: Callable[[], None]) -> Path | None:
    return None  # asking a node for its platform needs no wheel


async def node_platforms(
    config: Config, transport_of: Callable[[Node], Transport], nodes: list[Node] | None = None
) -> tuple[list[dict], list[str]]:
    """For --download-wheelhouse: the distinct (platform, Python) of the nodes, from their own
    interpreters (the venv's, else the first Python 3.11+ found), and one line per node that
    could not be asked."""
    want = Wanted(boltring="", mlx=None, extras=(), extra_dists=())
    found: dict[tuple, dict] = {}
    problems: list[str] = []

    async def one(node: Node) -> None:
        t = transport_of(node)
        try:
            await t.connect()
            info = await describe(t, node.python, [])
            if info is None or tuple(info["version"][:2]) < MIN_PYTHON:
                run = NodeSetupRun(t, node, want, _no_wheel, None, lambda *a: None)
                info = await describe(t, await run._find_python(), [])
        except BoltringError as e:
            problems.append(str(e) + (f" → {e.hint}" if e.hint else ""))
            return
        if info is None:
            problems.append(f"{node.name}: no Python 3.11+ to ask")
            return
        key = (
            info["platform"],
            info["machine"],
            info.get("macos"),
            info.get("glibc"),
            tuple(info["version"][:2]),
        )
        found.setdefault(key, info)

    await _all(one(n) for n in {n.name: n for n in (nodes or list(config.nodes))}.values())
    return list(found.values()), problems
