"""`boltring setup`: every node gets a venv with exactly the laptop's boltring and mlx.

Per node, over the node's transport (SSH with host keys checked, or local), nodes in parallel:
1. "check":   the configured `python` (which must be `<venv>/bin/python…`) is asked, by the
               stdlib-only agent/pyenv.py sent as `python -c`, for its version and installed packages.
               Same boltring, same mlx, the extras' packages present: "up to date", done (one
               command, well under a second or two on a LAN).
2. "python":   a Python 3.11+ to build the venv with: the venv's own base interpreter, then
               `python3`, `/opt/homebrew/bin/python3`, `/usr/bin/python3`.
3. "venv":     `python -m venv <venv>` when it is missing.
4. "upload":   boltring's wheel and, with a wheelhouse, every wheel of it, to `<workdir>/setup/`
               over SFTP (only the files the node does not already have; see nodes/sync.py).
5. "pip":      `<venv>/bin/python -m pip install <wheel>[extras] mlx==<version>` (with a
               wheelhouse: `--no-index --find-links`), each output line reported as it comes.
6. "verify":   the venv's versions asked again; they must now be the laptop's.
A failure stops that node only, and says which node, which step, and pip's last lines.
Every remote command is an argv (quoted with shlex.join by the SSH transport).
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from boltring.cluster.agent.pyenv import SETUP_RECORD
from boltring.cluster.config.schema import Config, Node
from boltring.cluster.nodes import sync
from boltring.cluster.nodes.transport import CommandResult, Transport, TransportError
from boltring.cluster.nodes.wheels import SetupError, Wanted, boltring_wheel, in_wheelhouse

PYENV_SOURCE = Path(__file__).resolve().parent.parent / "agent" / "pyenv.py"
FALLBACK_PYTHONS = ("python3", "/opt/homebrew/bin/python3", "/usr/bin/python3")
MIN_PYTHON = (3, 11)
PIP_TIMEOUT_S = 1800.0
TAIL_LINES = 12

_NO_NETWORK = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|Network is unreachable"
)
Report = Callable[[str, str, str], None]  # (node, kind: "step" | "pip", text)


@dataclass
class NodeSetup:
    node: str
    venv: str
    status: str = "pending"  # "up to date" | "installed" | "failed"
    python: str | None = None  # the interpreter the venv was made from (or the venv's own)
    changes: list[str] = field(default_factory=list)  # "boltring 0.1.0 (was 0.0.9)", "mlx 0.32.4 (new)"
    seconds: float = 0.0
    step: str | None = None  # the step that failed
    error: str | None = None
    tail: list[str] = field(default_factory=list)  # pip's last lines, on failure


def outcome(r: NodeSetup) -> str:
    """One line for a node's result (the app's log, plain output)."""
    if r.status == "failed":
        return f"setup failed at step {r.step}: {r.error}"
    what = ", ".join(r.changes) if r.changes else "nothing to install"
    return f"setup {r.status} in {r.seconds:.1f} s: {what} (venv {r.venv}, python {r.python})"


def venv_of(node: Node) -> str | None:
    """`~/x/.venv` for python `~/x/.venv/bin/python3`; None when python is not a venv's."""
    head, name = posixpath.split(node.python)
    root, bindir = posixpath.split(head)
    if bindir != "bin" or not name.startswith("python") or not root:
        return None
    return root


def setup_dir(node: Node) -> str:
    return f"{node.workdir.rstrip('/')}/setup"


async def describe(t: Transport, python: str, dists: list[str]) -> dict | None:
    """agent/pyenv.py's answer for this interpreter, or None when it cannot run."""
    # The program goes as the -c argument, not on stdin: a python that does not exist makes the
    # remote shell exit at once, and stdin sent to a closed channel fails the whole command.
    res = await t.run([python, "-c", PYENV_SOURCE.read_text(), *dists], timeout=60)
    info = res.last_json() if res.ok else None
    return info if info and "version" in info else None


def _up_to_date(info: dict, want: Wanted) -> bool:
    d = info.get("dists") or {}
    return (
        tuple(info["version"][:2]) >= MIN_PYTHON
        and d.get("boltring") == want.boltring
        and (want.mlx is None or d.get("mlx") == want.mlx)
        and all(d.get(x) for x in want.extra_dists)
        and (want.source is None or (info.get("setup") or {}).get("source") == want.source)
    )


def missing_package(lines: list[str]) -> str | None:
    """The requirement pip could not find ("No matching distribution found for msgpack>=1.2.1")."""
    for line in reversed(lines):
        m = re.search(r"No matching distribution found for (\S+)", line) or re.search(
            r"Could not find a version that satisfies the requirement (\S+)", line
        )
        if m:
            return m.group(1)
    return None


class NodeSetupRun:
    """Sets up one node; `run()` never raises: the outcome is in `result`."""

    def __init__(
        self,
        t: Transport,
        node: Node,
        want: Wanted,
        wheel: Callable[[], asyncio.Future],
        wheelhouse: Path | None,
        report: Report,
    ):
        self.t, self.node, self.want, self.wheel, self.wheelhouse = t, node, want, wheel, wheelhouse
        self.report = report
        self.result = NodeSetup(node=node.name, venv=venv_of(node) or "?")

    def _step(self, step: str, text: str) -> None:
        self.result.step = step
        self.report(self.node.name, "step", text)

    async def run(self) -> NodeSetup:
        started = time.monotonic()
        try:
            await self._run()
        except SetupError as e:
            self.result.status = "failed"
            self.result.error = str(e) + (f" ({e.hint})" if e.hint else "")
        except TransportError as e:
            self.result.status = "failed"
            self.result.error = str(e)
        self.result.seconds = time.monotonic() - started
        return self.result

    async def _run(self) -> None:
        node, want, r = self.node, self.want, self.result
        if node.local:
            r.status, r.python, r.step = "local", node.python, None
            return
        venv = venv_of(node)
        if venv is None:
            self.result.step = "config"
            raise SetupError(
                f"{node.name}: python is {node.python}, not a venv's interpreter",
                hint="set python: to the venv boltring should create, e.g. ~/boltring/.venv/bin/python",
            )
        self._step("connect", f"connecting ({node.ssh or node.name})")
        await self.t.connect()
        self._step("check", f"checking {node.python}")
        before = await describe(self.t, node.python, want.dists())
        if before is not None and _up_to_date(before, want):
            r.status, r.python, r.step = "up to date", before["executable"], None
            return
        if before is None:
            base = await self._find_python()
        elif tuple(before["version"][:2]) >= MIN_PYTHON:
            base = str(before["executable"])  # the venv is fine, only its packages differ
        else:
            self.result.step = "python"
            raise SetupError(
                f"{node.name}: the venv {venv} has Python {'.'.join(map(str, before['version']))}",
                hint=f"remove it (rm -rf {venv}) and run boltring setup again: it is made anew with 3.11+",
            )
        r.python = base
        if before is None:
            self._step("venv", f"creating {venv} with {base}")
            res = await self.t.run([base, "-m", "venv", venv], timeout=300)
            if not res.ok:
                self._fail_with(res, "venv", f"{node.name}: `{base} -m venv {venv}` failed")
            r.changes.append(f"venv {venv} (new)")
        self._step("upload", "uploading wheels")
        spec = await self._upload(base)
        self._step("pip", "pip install")
        pip = [node.python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        pip += ["--progress-bar", "off"]
        argv = list(pip)
        if self.wheelhouse is not None:
            argv += ["--no-index", "--find-links", f"{setup_dir(node)}/wheelhouse"]
        argv.append(spec)
        if want.mlx:
            argv.append(f"mlx=={want.mlx}")
        res = await self.t.run_lines(
            argv, lambda line: self.report(node.name, "pip", line), timeout=PIP_TIMEOUT_S
        )
        if not res.ok:
            lines = (res.stdout + res.stderr).strip().splitlines()
            pkg = missing_package(lines)
            where = f"the wheelhouse {self.wheelhouse}" if self.wheelhouse else "the package index"
            what = f"no wheel for {pkg} in {where}" if pkg else f"exit {res.returncode}"
            offline = self.wheelhouse is None and any(_NO_NETWORK.search(line) for line in lines)
            if offline:
                what = f"the node cannot reach the package index (needed {pkg or 'packages'})"
            self._fail_with(
                res,
                "pip",
                f"{node.name}: pip install failed: {what}",
                "for nodes without internet access: boltring setup --download-wheelhouse DIR, "
                "then boltring setup --wheelhouse DIR"
                if offline or self.wheelhouse
                else None,
            )
        had = ((before or {}).get("dists") or {}).get("boltring")
        if want.source is not None and had == want.boltring and spec.startswith(("~", "/")):
            # pip keeps an installed boltring of the same version, but this is other code (from a
            # source tree): replace boltring's own files, and only those
            res = await self.t.run_lines(
                [*pip, "--no-index", "--no-deps", "--force-reinstall", spec.split("[")[0]],
                lambda line: self.report(node.name, "pip", line),
                timeout=PIP_TIMEOUT_S,
            )
            if not res.ok:
                self._fail_with(res, "pip", f"{node.name}: reinstalling boltring's wheel failed")
        record = {"boltring": want.boltring, "source": want.source}
        await self.t.write_file(f"{venv}/{SETUP_RECORD}", json.dumps(record).encode(), mode=0o644)
        self._step("verify", "verifying")
        after = await describe(self.t, node.python, want.dists())
        if after is None or not _up_to_date(after, want):
            got = (after or {}).get("dists")
            raise SetupError(f"{node.name}: after pip install the venv has {got}, not what was asked")
        r.changes += _changes((before or {}).get("dists") or {}, after["dists"])
        old_source = ((before or {}).get("setup") or {}).get("source")
        if (
            want.source
            and not any(c.startswith("boltring ") for c in r.changes)
            and old_source != want.source
        ):
            r.changes.append(f"boltring {want.boltring} (rebuilt from source {want.source[:8]})")
        r.status, r.step = "installed", None

    def _fail_with(self, res: CommandResult, step: str, message: str, hint: str | None = None):
        self.result.step = step
        self.result.tail = (res.stdout + res.stderr).strip().splitlines()[-TAIL_LINES:]
        raise SetupError(message, hint=hint)

    async def _find_python(self) -> str:
        self._step("python", "looking for Python 3.11+")
        tried = []
        for py in await self._candidates():
            info = await describe(self.t, py, [])
            if info is None:
                tried.append(f"{py}: not found")
            elif tuple(info["version"][:2]) < MIN_PYTHON:
                tried.append(f"{py}: {'.'.join(map(str, info['version']))}")
            else:
                return str(info["executable"])
        self.result.step = "python"
        raise SetupError(
            f"{self.node.name}: no Python 3.11+ ({'; '.join(tried)})",
            hint="install one (brew install python@3.12, or from python.org), then run boltring setup again",
        )

    async def _candidates(self) -> list[str]:
        """The interpreter the configured venv was made from (its pyvenv.cfg `home`), when a
        broken venv is there, then the usual places."""
        venv = venv_of(self.node) or ""
        cfg = (await self.t.read_from(f"{venv}/pyvenv.cfg", 0, 8192)).decode(errors="replace")
        out = []
        for line in cfg.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                out.append(posixpath.join(value.strip(), "python3"))
        return out + [p for p in FALLBACK_PYTHONS if p not in out]

    async def _upload(self, python: str) -> str:
        """Send the wheels the node lacks; returns the pip requirement for boltring itself."""
        node, want = self.node, self.want
        wheel: Path | None = await self.wheel()
        roots = []
        if self.wheelhouse is not None:
            roots.append(sync.SyncRoot(local=self.wheelhouse.resolve(), name="wheelhouse", why="wheelhouse"))
        inside = (
            wheel is not None and self.wheelhouse is not None and wheel.parent == self.wheelhouse.resolve()
        )
        if wheel is not None and not inside:
            roots.append(sync.SyncRoot(local=wheel, name=wheel.name, why="boltring wheel"))
        if roots:
            local = await asyncio.to_thread(sync.local_manifest, roots, sync._HASH_CACHE)
            sent = await sync.sync_node(
                self.t, node, local, [r.name for r in roots], dest=setup_dir(node), python=python, prune=True
            )
            if sent.files_sent:
                self.report(
                    node.name, "step", f"uploaded {len(sent.files_sent)} files ({sent.bytes_sent:,} bytes)"
                )
        extras = f"[{','.join(want.extras)}]" if want.extras else ""
        if wheel is None:
            return f"boltring{extras}=={want.boltring}"
        where = f"{setup_dir(node)}/{'wheelhouse/' if inside else ''}{wheel.name}"
        return f"{where}{extras}"


def _changes(before: dict, after: dict) -> list[str]:
    out = []
    for name, new in after.items():
        old = before.get(name)
        if new and old != new:
            out.append(f"{name} {new} ({'was ' + old if old else 'new'})")
    return out


async def setup_nodes(
    config: Config,
    transport_of: Callable[[Node], Transport],
    want: Wanted,
    *,
    wheelhouse: Path | None = None,
    nodes: list[Node] | None = None,
    report: Report | None = None,
) -> list[NodeSetup]:
    """Set up the nodes in parallel; one NodeSetup each, in config order (failures included).
    Local nodes (`local: true`) run this machine's own python: nothing to set up there."""
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise SetupError(
            f"the wheelhouse {wheelhouse} is not a folder", hint="create it with --download-wheelhouse"
        )
    wheel_task: asyncio.Future | None = None

    def wheel() -> asyncio.Future:  # built at most once, and only when some node needs it
        nonlocal wheel_task
        if wheel_task is None:
            wheel_task = asyncio.ensure_future(asyncio.to_thread(boltring_wheel, want.boltring, wheelhouse))
        return wheel_task

    if wheelhouse is not None and in_wheelhouse(wheelhouse, want.boltring) is None:
        wheel()  # start building now: every node will need it
    runs = [
        NodeSetupRun(transport_of(n), n, want, wheel, wheelhouse, report or (lambda *a: None))
        for n in (nodes or list(config.nodes))
    ]
    return list(await asyncio.gather(*(r.run() for r in runs)))


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
                run = NodeSetupRun(
                    t, node, want, lambda: asyncio.get_running_loop().create_future(), None, lambda *a: None
                )
                info = await describe(t, await run._find_python(), [])
        except (SetupError, TransportError) as e:
            problems.append(str(e))
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

    await asyncio.gather(*(one(n) for n in (nodes or list(config.nodes))))
    return list(found.values()), problems
