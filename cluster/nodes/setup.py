"""`boltring setup`: every node gets a venv with exactly the laptop's boltring and mlx.

Per node, over the node's transport (SSH with host keys checked, or local), nodes in parallel:
1. "check":   the configured `python` (which must be `<venv>/bin/python…`) is asked, by the
               stdlib-only agent/pyenv.py sent as `python -c`, for its version and installed packages.
               Same boltring, same mlx, both importable, the extras' packages present: "up to
               date", done (one command, well under a second or two on a LAN).
2. "python":   a Python 3.11+ to build the venv with: the venv's own base interpreter, then
               `python3`, `/opt/homebrew/bin/python3`, `/usr/bin/python3`. A `python:` named
               for a version (`<venv>/bin/python3.12`) needs that version: only a venv made with
               it has that name.
3. "venv":     `python -m venv <venv>` when it is missing. When that fails (a full disk), the
               half-made venv is removed, so the next run starts afresh. A venv that is there but
               whose python does not run (its base Python removed by an upgrade, or no python3.12
               in it) is made anew (`--clear`) when boltring setup made it (MADE_MARK), and else
               named, with what to do: a venv someone else made is never removed.
   "pip":      a venv without pip (made --without-pip, or whose ensurepip failed) gets it back
               with `python -m ensurepip`.
4. "wheel":    boltring's wheel, built here only when some node needs it and none exists.
5. "upload":   boltring's wheel and, with a wheelhouse, every wheel of it, to `<workdir>/setup/`
               over SFTP (only the files the node does not already have; see nodes/sync.py).
6. "pip":      `<venv>/bin/python -m pip install <wheel>[extras] mlx==<version>` (with a
               wheelhouse: `--no-index --find-links`), each output line reported as it comes.
               A package whose metadata is there but whose code does not import is reinstalled
               (`--force-reinstall --no-deps`): pip alone calls it "already satisfied".
7. "verify":   the venv's versions asked again; they must now be the laptop's, and import, and
               from a source tree the installed boltring must carry this tree's digest (see
               wheels.py): what is installed, not what setup meant to install. Then the venv's
               SETUP_RECORD says that a setup of this code finished there.
A failure stops that node only, and says which node, which step, pip's last lines, and what to do.
Every node at once, and the one wheel they share: setup_all.py.

(Over 400 lines: one node's steps share its state — the venv, what was there before, the
wheel, the failure to report — and each step's repair depends on the one before.)
Every remote command is an argv (quoted with shlex.join by the SSH transport). A relative path
(`workdir: boltring`) is the node's home's, as for the launch (a remote command starts there):
setup writes it `~/boltring`, so every command and file operation agrees on it.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

from boltring.cluster.agent.pyenv import SETUP_RECORD
from boltring.cluster.config.schema import Node
from boltring.cluster.errors import BoltringError
from boltring.cluster.nodes import sync
from boltring.cluster.nodes.transport import CommandResult, Transport
from boltring.cluster.nodes.wheels import SetupError, Wanted

PYENV_SOURCE = Path(__file__).resolve().parent.parent / "agent" / "pyenv.py"
FALLBACK_PYTHONS = ("python3", "/opt/homebrew/bin/python3", "/usr/bin/python3")
_PYTHON_DIRS = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin")  # Homebrew, python.org, the system
MIN_PYTHON = (3, 11)
PIP_TIMEOUT_S = 1800.0
TAIL_LINES = 12

_NO_NETWORK = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|Network is unreachable"
)
_NO_PIP = re.compile(r"No module named pip\b")
T = TypeVar("T")
Report = Callable[[str, str, str], None]  # (node, kind: "step" | "pip", text)
# boltring's wheel, for a node that needs it: called with what to do if it must be built first
WheelSource = Callable[[Callable[[], None]], Awaitable[Path | None]]
_EXISTS = "import os, sys; sys.exit(0 if os.path.lexists(sys.argv[1]) else 1)"
_PATH_STATE = (
    "import os, sys; p = sys.argv[1]; "
    "print('missing' if not os.path.lexists(p) else 'dangling' if not os.path.exists(p) else 'file')"
)
_REMOVE = "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)"
# Written into a venv boltring setup made: only such a venv may be made anew (--clear) when its
# python no longer runs. One that someone else made may hold their packages: it is left alone.
MADE_MARK = "boltring-made-this-venv"


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
    hint: str | None = None  # what to do about the error
    tail: list[str] = field(default_factory=list)  # pip's last lines, on failure


def outcome(r: NodeSetup) -> str:
    """One line for a node's result (the app's log, plain output)."""
    if r.status == "failed":
        return f"setup failed at step {r.step}: {r.error}" + (f" → {r.hint}" if r.hint else "")
    what = ", ".join(r.changes) if r.changes else "nothing to install"
    return f"setup {r.status} in {r.seconds:.1f} s: {what} (venv {r.venv}, python {r.python})"


def venv_of(node: Node) -> str | None:
    """`~/x/.venv` for python `~/x/.venv/bin/python3`; None when python is not a venv's."""
    head, name = posixpath.split(node.python)
    root, bindir = posixpath.split(head)
    if bindir != "bin" or not name.startswith("python") or not root:
        return None
    return root


def on_node(path: str) -> str:
    """A node path as setup uses it: a relative one is the node's home's, written `~/…` (a
    remote command starts in the home, as the launch's do; only `~/…` and `/…` are paths that
    every transport and command resolves the same)."""
    return path if path.startswith(("~", "/")) else f"~/{path}"


def setup_dir(node: Node) -> str:
    return f"{on_node(node.workdir).rstrip('/')}/setup"


def asked_version(node: Node) -> tuple[int, int] | None:
    """(3, 12) for python `<venv>/bin/python3.12`: a name only a venv made with 3.12 has."""
    m = re.fullmatch(r"python(\d+)\.(\d+)", posixpath.basename(node.python))
    return (int(m.group(1)), int(m.group(2))) if m else None


async def describe(t: Transport, python: str, dists: list[str]) -> dict | None:
    """agent/pyenv.py's answer for this interpreter, or None when it cannot run."""
    # The program goes as the -c argument, not on stdin: a python that does not exist makes the
    # remote shell exit at once, and stdin sent to a closed channel fails the whole command.
    res = await t.run([python, "-c", PYENV_SOURCE.read_text(), *dists], timeout=60)
    info = res.last_json() if res.ok else None
    return info if info and "version" in info else None


def _installed(info: dict, want: Wanted) -> bool:
    """Whether the venv has what is wanted, by its installed files (the verify step's test)."""
    d = info.get("dists") or {}
    return (
        tuple(info["version"][:2]) >= MIN_PYTHON
        and not info.get("broken")
        and d.get("boltring") == want.boltring
        and (want.mlx is None or d.get("mlx") == want.mlx)
        and all(d.get(x) for x in want.extra_dists)
        and (want.source is None or info.get("source") == want.source)
    )


def _up_to_date(info: dict, want: Wanted) -> bool:
    """Installed, and a setup of this code finished there (its record, written after verify)."""
    record = info.get("setup") or {}
    return _installed(info, want) and (want.source is None or record.get("source") == want.source)


def _pyvenv_cfg(data: bytes) -> dict[str, str]:
    """pyvenv.cfg's keys ("home", "version", …); {} when there is none (not a venv)."""
    out = {}
    for line in data.decode(errors="replace").splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip():
            out[key.strip()] = value.strip()
    return out


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
    """Sets up one node; `run()` never raises (but when cancelled): the outcome is in `result`."""

    def __init__(
        self,
        t: Transport,
        node: Node,
        want: Wanted,
        wheel: WheelSource,
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
        except BoltringError as e:  # SetupError, TransportError (with the hint check gives), SyncError
            self.result.status = "failed"
            # "h1: cause" → "cause": every line that shows it names the node already
            self.result.error = str(e).removeprefix(f"{self.node.name}: ")
            self.result.hint = e.hint
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
        if before is not None and not before.get("in_venv"):
            # /usr/bin/python3 looks like a venv's (<root>/bin/python3) but is the system's: pip
            # must not install there, and "rm -rf /usr" is no hint for an old one
            self.result.step = "config"
            raise SetupError(
                f"{node.name}: python is {node.python}, not a venv's interpreter "
                f"(it is Python {'.'.join(map(str, before['version']))} of {before.get('prefix')})",
                hint="set python: to the venv boltring should create, e.g. ~/boltring/.venv/bin/python",
            )
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
            await self._make_venv(base, venv)
        elif before.get("pip") is None:
            await self._restore_pip(venv)
        wheel = await self._boltring_wheel()
        self._step("upload", "uploading wheels")
        spec = await self._upload(base, wheel)
        self._step("pip", "pip install")
        argv = [*self._pip(), *self._index()]
        argv.append(spec)
        if want.mlx:
            argv.append(f"mlx=={want.mlx}")
        res = await self.t.run_lines(
            argv, lambda line: self.report(node.name, "pip", line), timeout=PIP_TIMEOUT_S
        )
        if not res.ok:
            self._pip_failed(res, venv)
        await self._reinstall(before, spec, wheel is not None)
        self._step("verify", "verifying")
        after = await describe(self.t, node.python, want.dists())
        if after is None or not _installed(after, want):
            self._not_installed(after, venv)
        # only now: the record says a setup of this code finished here
        record = {"boltring": want.boltring, "source": want.source}
        await self.t.write_file(f"{venv}/{SETUP_RECORD}", json.dumps(record).encode(), mode=0o644)
        r.changes += _changes((before or {}).get("dists") or {}, after["dists"])
        for dist, b in ((before or {}).get("broken") or {}).items():
            r.changes.append(f"{dist} {after['dists'].get(dist)} (reinstalled: {b['error']})")
        had = before or {}
        had_this_code = had.get("source") == want.source == (had.get("setup") or {}).get("source")
        if want.source and not any(c.startswith("boltring ") for c in r.changes) and not had_this_code:
            r.changes.append(f"boltring {want.boltring} (rebuilt from source {want.source[:8]})")
        r.status, r.step = "installed", None

    def _pip(self) -> list[str]:
        return [
            self.node.python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ]

    def _index(self) -> list[str]:
        if self.wheelhouse is None:
            return []
        return ["--no-index", "--find-links", f"{setup_dir(self.node)}/wheelhouse"]

    async def _make_venv(self, base: str, venv: str) -> None:
        """`python -m venv`; when it fails, a venv this run began is removed again: left half
        made (no pip: ensurepip ran out of disk space), every later run would reuse it."""
        node = self.node
        existed = (await self.t.run([base, "-c", _EXISTS, venv], timeout=60)).ok
        cfg = _pyvenv_cfg(await self.t.read_from(f"{venv}/pyvenv.cfg", 0, 8192)) if existed else {}
        why = await self._why_not_running(base, venv, cfg) if cfg else None
        if why is not None:
            # a venv is there, but its python does not run: `python -m venv` over it keeps its
            # dangling links (and pip then fails with "…/bin/python3: No such file")
            if not await self.t.read_from(f"{venv}/{MADE_MARK}", 0, 64):
                self.result.step = "venv"
                raise SetupError(f"{node.name}: {why}", hint=self._foreign_venv_hint(base, venv, why))
            self._step("venv", f"{why}: making it anew with {base}")
        else:
            self._step("venv", f"creating {venv} with {base}")
        res = await self.t.run([base, "-m", "venv", *(["--clear"] if why else []), venv], timeout=300)
        if res.ok:
            mark = f"made by boltring setup with {base}: it may make this venv anew\n"
            await self.t.write_file(f"{venv}/{MADE_MARK}", mark.encode(), mode=0o644)
            self.result.changes.append(f"venv {venv} ({f'made anew: {why}' if why else 'new'})")
            await self._check_runs(base, venv)
            return
        removed = not existed and (await self.t.run([base, "-c", _REMOVE, venv], timeout=120)).ok
        hint = (
            f"the half-made {venv} was removed; fix the cause above (disk space?) "
            "and run boltring setup again"
            if removed
            else f"remove it (rm -rf {venv}), fix the cause above and run boltring setup again"
        )
        self._fail_with(res, "venv", f"{node.name}: `{base} -m venv {venv}` failed", hint)

    async def _why_not_running(self, base: str, venv: str, cfg: dict[str, str]) -> str | None:
        """Why the venv's python did not answer, in words; None when it answers now."""
        py = self.node.python
        res = await self.t.run([base, "-c", _PATH_STATE, py], timeout=60)
        state = res.stdout.strip()
        made_with = f"Python {cfg['version']}" if cfg.get("version") else "another Python"
        if state == "missing":
            return f"the venv {venv} has no {posixpath.basename(py)}: it was made with {made_with}"
        if state == "dangling":
            home = cfg.get("home") or "?"
            return f"the venv {venv} was made with the Python in {home}, which is gone (upgraded or removed)"
        if state == "file" and await describe(self.t, py, []) is not None:
            return None  # it answers after all (a check that timed out?): nothing to make anew
        return f"{py} does not run (the venv {venv} was made with {made_with})"

    def _foreign_venv_hint(self, base: str, venv: str, why: str) -> str:
        anew = (
            f"remove it (rm -rf {venv}; boltring setup did not make it, so it leaves it alone) "
            f"and run boltring setup again: it is made anew with {base}"
        )
        if " has no python" in why:  # the venv itself works, under another name
            return f"set python: {venv}/bin/python3 to use it as it is, or {anew}"
        return anew

    async def _check_runs(self, base: str, venv: str) -> None:
        """The configured python must run in the venv just made: pip through it would only say
        "exit 127"."""
        if await describe(self.t, self.node.python, []) is not None:
            return
        self.result.step = "venv"
        name = posixpath.basename(self.node.python)
        raise SetupError(
            f"{self.node.name}: {venv} was made with {base}, but has no {name}",
            hint=f"set python: {venv}/bin/python3",
        )

    async def _restore_pip(self, venv: str) -> None:
        """A venv without pip (made --without-pip, or its ensurepip failed): pip comes back from
        the interpreter's own copy, offline."""
        self._step("pip", f"{venv} has no pip: python -m ensurepip")
        res = await self.t.run([self.node.python, "-m", "ensurepip", "--upgrade"], timeout=300)
        if not res.ok:
            self._fail_with(
                res,
                "pip",
                f"{self.node.name}: the venv {venv} has no pip, and ensurepip could not add it",
                f"remove the venv (rm -rf {venv}) and run boltring setup again: it is made anew",
            )
        self.result.changes.append("pip (restored with ensurepip)")

    async def _boltring_wheel(self) -> Path | None:
        self.result.step = "wheel"  # a build that fails, fails this step
        return await self.wheel(lambda: self._step("wheel", "building boltring's wheel"))

    def _pip_failed(self, res: CommandResult, venv: str) -> None:
        node = self.node
        lines = (res.stdout + res.stderr).strip().splitlines()
        pkg = missing_package(lines)
        where = f"the wheelhouse {self.wheelhouse}" if self.wheelhouse else "the package index"
        what = f"no wheel for {pkg} in {where}" if pkg else f"exit {res.returncode}"
        hint = None
        if any(_NO_PIP.search(line) for line in lines):
            what = f"the venv {venv} has no pip"
            hint = f"remove the venv (rm -rf {venv}) and run boltring setup again: it is made anew"
        elif self.wheelhouse is None and any(_NO_NETWORK.search(line) for line in lines):
            what = f"the node cannot reach the package index (needed {pkg or 'packages'})"
            hint = (
                "for nodes without internet access: boltring setup --download-wheelhouse DIR, "
                "then boltring setup --wheelhouse DIR"
            )
        elif self.wheelhouse is not None and pkg:
            hint = f"fill it for the nodes: boltring setup --download-wheelhouse {self.wheelhouse}"
        self._fail_with(res, "pip", f"{node.name}: pip install failed: {what}", hint)

    async def _reinstall(self, before: dict | None, spec: str, spec_is_file: bool) -> None:
        """pip keeps what it calls installed: a package whose code does not import (its folder
        moved away, its metadata left), or boltring of the same version but other code (from a
        source tree), is reinstalled here, with only its own files (--no-deps). `spec` is
        boltring's requirement: its wheel file on the node (`spec_is_file`), or name==version."""
        node, want = self.node, self.want
        wheel_file = spec.split("[")[0] if spec_is_file else None
        specs: list[str] = []
        broken = (before or {}).get("broken") or {}
        if broken:
            # asked again: the install above may have upgraded what was broken
            now = await describe(self.t, node.python, want.dists())
            for b in ((now or {}).get("broken") or {}).values():
                specs += [f"{name}=={v}" for name, v in b["reinstall"].items() if name.lower() != "boltring"]
        had = ((before or {}).get("dists") or {}).get("boltring")
        # (decided by what spec is, not by how its path looks: a relative workdir's wheel path
        # once passed for a name, and the node kept its old code)
        other_code = want.source is not None and had == want.boltring and wheel_file is not None
        if other_code or "boltring" in broken:
            specs.append(wheel_file or f"boltring=={want.boltring}")
        if not specs:
            return
        index = self._index()
        if not index and specs == [wheel_file]:
            index = ["--no-index"]  # its wheel file only: nothing to ask an index for
        res = await self.t.run_lines(
            [*self._pip(), *index, "--no-deps", "--force-reinstall", *dict.fromkeys(specs)],
            lambda line: self.report(node.name, "pip", line),
            timeout=PIP_TIMEOUT_S,
        )
        if not res.ok:
            self._fail_with(res, "pip", f"{node.name}: reinstalling {', '.join(specs)} failed")

    def _not_installed(self, after: dict | None, venv: str) -> NoReturn:
        """The verify step's failure: what the venv has, and what is wrong with it."""
        after = after or {}
        problems = [b["error"] for b in (after.get("broken") or {}).values()]
        source = self.want.source
        if source is not None and after.get("source") != source:
            problems.append(
                f"its boltring was built from source {after.get('source') or '(none recorded)'}, "
                f"not from this tree ({source})"
            )
        raise SetupError(
            f"{self.node.name}: after pip install the venv has {after.get('dists')}"
            + (f", and {'; '.join(problems)}" if problems else "")
            + ", not what was asked",
            hint=f"remove the venv (rm -rf {venv}) and run boltring setup again",
        )

    def _fail_with(self, res: CommandResult, step: str, message: str, hint: str | None = None):
        self.result.step = step
        self.result.tail = (res.stdout + res.stderr).strip().splitlines()[-TAIL_LINES:]
        raise SetupError(message, hint=hint)

    async def _find_python(self) -> str:
        """A Python 3.11+ to make the venv with; of the version `python: …/python3.12` names,
        when it names one (a venv made with 3.11 has no python3.12: pip would fail with exit 127)."""
        node, asked = self.node, asked_version(self.node)
        need = f"Python {asked[0]}.{asked[1]}" if asked else "Python 3.11+"
        if asked is not None and asked < MIN_PYTHON:
            self.result.step = "config"
            raise SetupError(
                f"{node.name}: python is {node.python}, {need}; boltring needs 3.11+",
                hint=f"set python: {venv_of(node)}/bin/python3",
            )
        self._step("python", f"looking for {need}")
        tried, found = [], []
        for py in await self._candidates(asked):
            info = await describe(self.t, py, [])
            if info is None:
                tried.append(f"{py}: not found")
                continue
            version = tuple(info["version"][:2])
            if version >= MIN_PYTHON and (asked is None or version == asked):
                return str(info["executable"])
            tried.append(f"{py}: {'.'.join(map(str, info['version']))}")
            found.append(f"{'.'.join(map(str, info['version']))} at {py}")
        self.result.step = "python"
        if asked is not None:
            raise SetupError(
                f"{node.name}: python is {node.python}, a name only a venv made with {need} has, "
                f"and this node has no {need} (it has {', '.join(found) or 'none at all'})",
                hint=f"set python: {venv_of(node)}/bin/python3 (a venv of any Python 3.11+ has it), "
                f"or install {need} (brew install python@{asked[0]}.{asked[1]}) and run boltring setup again",
            )
        raise SetupError(
            f"{node.name}: no Python 3.11+ ({'; '.join(tried)})",
            hint="install one (brew install python@3.12, or from python.org), then run boltring setup again",
        )

    async def _candidates(self, asked: tuple[int, int] | None) -> list[str]:
        """The interpreter the configured venv was made from (its pyvenv.cfg `home`), when a
        broken venv is there, then the usual places; the asked version's names first."""
        venv = venv_of(self.node) or ""
        cfg = _pyvenv_cfg(await self.t.read_from(f"{venv}/pyvenv.cfg", 0, 8192))
        out = [posixpath.join(cfg["home"], "python3")] if cfg.get("home") else []
        if asked is not None:
            name = f"python{asked[0]}.{asked[1]}"
            out = [name, *(posixpath.join(d, name) for d in _PYTHON_DIRS), *out]
        return out + [p for p in FALLBACK_PYTHONS if p not in out]

    async def _upload(self, python: str, wheel: Path | None) -> str:
        """Send the wheels the node lacks; returns the pip requirement for boltring itself."""
        node, want = self.node, self.want
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
                self.t,
                node,
                wheels_only(local),
                [r.name for r in roots],
                dest=setup_dir(node),
                python=python,
                prune=True,
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


def wheels_only(files: dict[str, sync.LocalFile]) -> dict[str, sync.LocalFile]:
    """The wheelhouse's wheels, and nothing else of it (no `.complete` marker, no README): pip's
    --find-links reads only the folder's own *.whl."""
    return {
        rel: f
        for rel, f in files.items()
        if not rel.startswith("wheelhouse/") or ("/" not in rel[11:] and rel.endswith(".whl"))
    }


def _changes(before: dict, after: dict) -> list[str]:
    out = []
    for name, new in after.items():
        old = before.get(name)
        if new and old != new:
            out.append(f"{name} {new} ({'was ' + old if old else 'new'})")
    return out
