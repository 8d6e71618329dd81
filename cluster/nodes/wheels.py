"""Laptop side of `boltring setup`: which versions the nodes must get, boltring's own wheel, and
`--download-wheelhouse` (wheels for the nodes' platform, for nodes without internet access).

The versions are the laptop's: nodes get exactly the boltring and mlx that run here, so a job
behaves the same everywhere and `boltring check` sees no skew.

boltring's wheel (nodes never need the source tree): a `boltring-<version>-*.whl` in the
wheelhouse when there is one; else, when boltring runs from a source tree (an editable install or
a checkout), a wheel built from a copy of that tree (`pip wheel --no-deps`, so no `build/` lands
in the user's checkout), cached in ~/.boltring/wheels/ by version and source digest; else none, and
online nodes install `boltring==<version>` from the index.

Running from a source tree, the version alone does not say which code a wheel or a node has (it
stays 0.1.0 while the tree changes). So a wheel built here carries the tree's digest inside
(boltring/cluster/_source.py, agent/pyenv.py's SOURCE_FILE), a wheelhouse's or the cache's wheel
is used only when its digest is this tree's (a wheelhouse filled before the last edit holds a
stale one), and setup verifies the digest the node's installed package reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boltring.cluster.agent.pyenv import SOURCE_FILE, source_digest
from boltring.cluster.config.schema import Config, boltring_home
from boltring.cluster.errors import BoltringError
from boltring.cluster.nodes.local_process import start_group, stop_group

_SOURCE_DIRS = ("netio", "cluster", "tui", "configs")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".venv", ".git")
BUILD_TIMEOUT_S = 600.0


class SetupError(BoltringError):
    title = "setup failed"


@dataclass(frozen=True)
class Wanted:
    """What every node must have: the laptop's versions, and the extras' packages."""

    boltring: str
    mlx: str | None
    extras: tuple[str, ...]
    extra_dists: tuple[str, ...]  # distributions the extras pull in (to see whether they are there)
    source: str | None = None  # digest of the source tree boltring runs from here (None: a release)

    def dists(self) -> list[str]:
        return ["boltring", "mlx", *self.extra_dists]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def extra_dists(extras: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the distributions boltring's metadata lists for these extras."""
    names: list[str] = []
    for req in importlib.metadata.requires("boltring") or []:
        _, _, marker = req.partition(";")
        for extra in extras:
            if re.search(rf"""extra\s*==\s*['"]{re.escape(extra)}['"]""", marker):
                m = _REQ_NAME.match(req)
                if m and m.group(1) not in names:
                    names.append(m.group(1))
    return tuple(names)


def wanted(extras: tuple[str, ...]) -> Wanted:
    version = _version("boltring")
    if version is None:
        raise SetupError("boltring is not installed on this machine (no package metadata)")
    root = source_tree()
    return Wanted(
        boltring=version,
        mlx=_version("mlx"),
        extras=extras,
        extra_dists=extra_dists(extras),
        source=_tree_digest(root) if root is not None else None,
    )


def source_tree() -> Path | None:
    """The folder with boltring's pyproject.toml when boltring runs from source, else None."""
    spec = importlib.util.find_spec("boltring.cluster")
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "boltring"' in pyproject.read_text():
        return root
    return None


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "README.md", *_SOURCE_DIRS):
        base = root / name
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for p in paths:
            if "__pycache__" in p.parts or p.suffix == ".pyc":
                continue
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _can_build_here() -> bool:
    """Whether this Python can build the wheel without fetching build tools: setuptools with its
    own bdist_wheel (70.1+), or setuptools and the `wheel` package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    parts = (_version("setuptools") or "0").split(".")
    nums = tuple(int(p) if p.isdigit() else 0 for p in parts[:2])
    return nums >= (70, 1)


def built_from(wheel: Path) -> str | None:
    """The source digest a boltring wheel carries (build_wheel writes it); None for a release
    wheel, one built before digests were written, or a file that is no wheel."""
    try:
        with zipfile.ZipFile(wheel) as z:
            text = z.read(f"boltring/cluster/{SOURCE_FILE}").decode()
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return source_digest(text)


def _wheels_of(folder: Path, version: str, source: str | None) -> list[Path]:
    """boltring's wheels of this version in `folder`; from a source tree (`source`: its digest),
    only those built from it."""
    found = sorted(folder.glob(f"boltring-{version}-*.whl"))
    return [w for w in found if source is None or built_from(w) == source]


def in_wheelhouse(wheelhouse: Path | None, version: str, source: str | None = None) -> Path | None:
    if wheelhouse is None:
        return None
    found = _wheels_of(wheelhouse, version, source)
    return found[0] if found else None


@dataclass(frozen=True)
class WheelBuild:
    """No wheel of this code exists yet: build one from `root` (whose digest is `source`) into
    `cache`."""

    root: Path
    version: str
    cache: Path
    source: str


def find_wheel(version: str, wheelhouse: Path | None) -> Path | WheelBuild | None:
    """boltring's wheel for the nodes when one of this code exists (the wheelhouse's, else the
    cache's), the build to make when boltring runs from a source tree without one, else None
    (only the index can provide it). Quick: hashes the source tree, builds nothing."""
    root = source_tree()
    source = _tree_digest(root) if root is not None else None
    found = in_wheelhouse(wheelhouse, version, source)
    if found is not None or root is None or source is None:
        return found
    cache = boltring_home() / "wheels" / f"{version}-{source}"
    cached = _wheels_of(cache, version, source)  # one cached before wheels carried digests: built again
    return cached[0] if cached else WheelBuild(root=root, version=version, cache=cache, source=source)


def _copy_tree(root: Path, copy: Path) -> None:
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (root / name).is_file():
            shutil.copy2(root / name, copy / name)
    for name in _SOURCE_DIRS:
        if (root / name).is_dir():
            shutil.copytree(root / name, copy / name, ignore=_SKIP)


async def build_wheel(b: WheelBuild) -> Path:
    """`pip wheel` of a copy of the source tree, cached. Cancelled (Ctrl-C, SIGTERM), pip and its
    build backend are killed at once: a thread running it would keep the process alive until
    the build finished."""
    with tempfile.TemporaryDirectory(prefix="boltring-wheel-") as tmp:
        copy, out = Path(tmp) / "src", Path(tmp) / "out"
        await asyncio.to_thread(_copy_tree, b.root, copy)
        # the digest goes into the wheel (only the copy gets this module, never the user's tree)
        doc = '"""The source tree this wheel was built from (written by boltring setup)."""'
        (copy / "cluster" / SOURCE_FILE).write_text(f'{doc}\n\nSOURCE = "{b.source}"\n')
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q"]
        if _can_build_here():
            argv.append("--no-build-isolation")  # no index needed to build (offline laptops)
        try:
            rc, output = await run_killable([*argv, "-w", str(out), str(copy)], BUILD_TIMEOUT_S)
        except TimeoutError:
            took = f"took over {BUILD_TIMEOUT_S:g} s"
            raise SetupError(f"building boltring's wheel from {b.root} {took}") from None
        wheels = sorted(out.glob("boltring-*.whl"))
        if rc == 0 and wheels and built_from(wheels[0]) != b.source:
            rc, output = 1, f"error: the wheel built from {b.root} does not carry its digest ({SOURCE_FILE})"
        if rc != 0 or not wheels:
            lines = output.strip().splitlines()
            errors = [ln.strip() for ln in lines if ln.strip().lower().startswith("error")]
            tail = " / ".join(errors[:3] or lines[-3:])
            raise SetupError(f"could not build boltring's wheel from {b.root}: {tail}")
        b.cache.mkdir(parents=True, exist_ok=True)
        final = b.cache / wheels[0].name
        part = b.cache / f".{wheels[0].name}.{os.getpid()}"
        shutil.copy2(wheels[0], part)
        os.replace(part, final)  # another setup finding the cache sees a whole wheel or none
        return final


async def run_killable(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run a local command (pip) in its own process group; its exit code and output (stdout
    and stderr). Cancelled (Ctrl-C, SIGTERM) or over `timeout` (TimeoutError), the whole group
    is killed at once: run in a thread instead, it kept the process alive until pip was done."""
    # its own group (local_process.py): the build backend pip starts dies with it
    pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    proc = await start_group(argv, stdin=devnull, stdout=pipe, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        await stop_group(proc, grace=None)
        raise
    return proc.returncode or 0, output.decode(errors="replace")


async def boltring_wheel(
    version: str, wheelhouse: Path | None, on_build: Callable[[], None] | None = None
) -> Path | None:
    """boltring's wheel for the nodes (see module doc); None when only the index can provide it.
    `on_build` is called when it has to be built (several seconds: worth saying)."""
    found = await asyncio.to_thread(find_wheel, version, wheelhouse)
    if not isinstance(found, WheelBuild):
        return found
    if on_build is not None:
        on_build()
    return await build_wheel(found)


def into_wheelhouse(wheel: Path, wheelhouse: Path) -> Path:
    """boltring's wheel copied into the wheelhouse (`--download-wheelhouse`), over a same-named
    one of other code: `pip download` would keep that one ("File was already downloaded")."""
    if wheel.parent.resolve() == wheelhouse.resolve():
        return wheel
    final = wheelhouse / wheel.name
    part = wheelhouse / f".{wheel.name}.{os.getpid()}"
    shutil.copy2(wheel, part)
    os.replace(part, final)  # a setup reading the wheelhouse meanwhile sees a whole wheel
    return final


def setup_extras(config: Config) -> tuple[str, ...]:
    """setup.extras, plus "lm" when the job is the lm example."""
    extras = list(config.setup.extras)
    if config.job.example == "lm" and "lm" not in extras:
        extras.append("lm")
    return tuple(extras)


def config_wheelhouse(config: Config, flag: str | None = None) -> Path | None:
    """--wheelhouse (from the current folder), else setup.wheelhouse (from the config's folder)."""
    if flag:
        return Path(flag).expanduser().resolve()
    if not config.setup.wheelhouse:
        return None
    path = Path(config.setup.wheelhouse).expanduser()
    src = config.source
    if not path.is_absolute() and src and not src.startswith("<"):
        path = Path(src).resolve().parent / path
    return path.resolve()


# -- --download-wheelhouse ---------------------------------------------------------------------------


def platform_tags(info: dict) -> list[str]:
    """pip `--platform` values for a node described by agent/pyenv.py."""
    machine = info.get("machine") or "arm64"
    if info.get("platform") == "darwin":
        major = (info.get("macos") or "14.0").split(".")[0]
        # pip expands a macosx tag to every older macOS version it is compatible with
        return [f"macosx_{major}_0_{machine}"]
    glibc = info.get("glibc")
    tags = []
    if glibc and re.fullmatch(r"2\.\d+", glibc):
        minor = int(glibc.split(".")[1])
        tags += [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
        tags += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return [*tags, f"linux_{machine}"]


def download_argv(dest: Path, info: dict, want: Wanted, wheel: Path | None) -> list[str]:
    """`pip download` of everything a node needs, for its platform and Python, binary only."""
    major, minor = info["version"][:2]
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:"]
    for tag in platform_tags(info):
        argv += ["--platform", tag]
    argv += ["--python-version", f"{major}.{minor}", "--implementation", "cp", "-d", str(dest)]
    extras = f"[{','.join(want.extras)}]" if want.extras else ""
    argv.append(f"{wheel}{extras}" if wheel is not None else f"boltring{extras}=={want.boltring}")
    if want.mlx:
        argv.append(f"mlx=={want.mlx}")
    return argv
