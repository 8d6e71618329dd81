"""`boltring setup` of this machine as a remote node (commands through a shell from the node
user's home, as over SSH), with real venvs, real pip and wheels built here offline from a small
stand-in for boltring's source tree (`CODE = "v1"`, then edited to "v2"):

- a wheelhouse filled before the tree was edited holds a boltring wheel of the same version but
  old code: setup passes it over and the node runs the edited code (it used to install the old
  wheel and record the new digest); `--download-wheelhouse` run again replaces it;
- `workdir: boltring` (relative: the node's home's) gets the edited code too (its wheel path once
  passed for a requirement name, and pip kept the old code of the same version);
- `python: <venv>/bin/python3.N` with no Python 3.N on the node fails at step python with one
  line saying so (it used to make the venv with another Python, then "pip install failed: exit
  127"); with a Python 3.N there, the venv is made with it;
- a venv whose base Python is gone is made anew when boltring setup made it, and named, with what
  to do, and left alone when someone else did.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from rich.console import Console

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.nodes import wheels
from boltring.cluster.nodes.setup import NodeSetup, outcome
from boltring.cluster.nodes.setup_all import setup_nodes
from boltring.cluster.nodes.transport import CommandResult, LocalTransport
from boltring.cluster.nodes.wheels import Wanted

VERSION = "0.1.0"


class NodeShell(LocalTransport):
    """This machine as a remote node: each command goes through `sh`, as over SSH, so a program
    that is not there is exit 127 (not an exception), from the node user's home (the test's
    HOME, also the current folder: where an SSH command starts)."""

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        argv = await self.expand_argv(argv)
        return await super().run(["sh", "-c", 'exec "$@"', "sh", *argv], input=input, timeout=timeout)

    async def run_lines(self, argv, on_line, *, timeout=30.0) -> CommandResult:
        argv = await self.expand_argv(argv)
        return await super().run_lines(["sh", "-c", 'exec "$@"', "sh", *argv], on_line, timeout=timeout)


def source_tree(root: Path, code: str) -> Path:
    """A buildable stand-in for boltring's source tree: boltring.cluster with `CODE = code`."""
    (root / "cluster").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f"""[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "boltring"
version = "{VERSION}"

[tool.setuptools]
packages = ["boltring.cluster"]
package-dir = {{"boltring.cluster" = "cluster"}}
""")
    (root / "cluster" / "__init__.py").write_text(f'CODE = "{code}"\n')
    return root


def make_wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A boltring wheel made by hand (name and version from `name`), with these files."""
    dist = "boltring-" + VERSION + ".dist-info"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: boltring\nVersion: {VERSION}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return out


def wheel_code(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read("boltring/cluster/__init__.py").decode()


@pytest.fixture
def tree(tmp_path, home, monkeypatch) -> Path:
    """boltring runs from this source tree (CODE "v1"); the node user's home is the test's."""
    root = source_tree(tmp_path / "src", "v1")
    monkeypatch.setattr(wheels, "source_tree", lambda: root)
    monkeypatch.chdir(home)
    return root


def want() -> Wanted:
    root = wheels.source_tree()
    assert root is not None
    return Wanted(boltring=VERSION, mlx=None, extras=(), extra_dists=(), source=wheels._tree_digest(root))


def node(python: str = "~/venv/bin/python", **kw) -> Node:
    return Node(name="n1", ring_ip="127.0.0.1", ssh="me@127.0.0.1", python=python, **kw)


async def setup(n: Node, wheelhouse: Path | None = None) -> NodeSetup:
    (r,) = await setup_nodes(Config(name="t", nodes=(n,)), NodeShell, want(), wheelhouse=wheelhouse)
    return r


def code_on(python: Path) -> str:
    """The CODE of the boltring this interpreter imports (-I: not a folder of the cwd's)."""
    res = subprocess.run(
        [str(python), "-I", "-c", "import boltring.cluster as c; print(c.CODE)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.stdout.strip() or res.stderr.strip()


# -- 1: a wheelhouse's boltring wheel of other code ----------------------------------------------


def test_a_wheelhouse_wheel_is_used_only_when_built_from_this_tree(tree, tmp_path):
    house = tmp_path / "house"
    digest = wheels._tree_digest(tree)
    make_wheel(
        house, f"boltring-{VERSION}-py3-none-any.whl", {"boltring/cluster/__init__.py": "CODE = 'old'\n"}
    )
    assert isinstance(wheels.find_wheel(VERSION, house), wheels.WheelBuild)  # no digest: another tree's
    source = f'SOURCE = "{digest}"\n'
    mine = make_wheel(
        house,
        f"boltring-{VERSION}-1-py3-none-any.whl",
        {"boltring/cluster/__init__.py": "", "boltring/cluster/_source.py": source},
    )
    assert wheels.find_wheel(VERSION, house) == mine


async def test_a_stale_wheelhouse_wheel_is_passed_over_and_the_node_runs_the_edited_code(
    tree, home, tmp_path
):
    house = tmp_path / "house"
    house.mkdir()
    v1 = await wheels.boltring_wheel(VERSION, None)  # the wheel --download-wheelhouse puts there
    assert v1 is not None
    shutil.copy2(v1, house / v1.name)
    r = await setup(node(), house)
    assert r.status == "installed", outcome(r)
    assert code_on(home / "venv/bin/python") == "v1"

    (tree / "cluster" / "__init__.py").write_text('CODE = "v2"\n')  # the user edits boltring
    r = await setup(node(), house)
    assert r.status == "installed", outcome(r)
    assert code_on(home / "venv/bin/python") == "v2", outcome(r)
    assert "rebuilt from source" in outcome(r)
    assert (await setup(node(), house)).status == "up to date"


async def test_download_wheelhouse_again_replaces_a_stale_boltring_wheel(tree, home, tmp_path, monkeypatch):
    from boltring.tui import setup_view

    house = tmp_path / "house"
    house.mkdir()
    v1 = await wheels.boltring_wheel(VERSION, None)
    assert v1 is not None
    shutil.copy2(v1, house / v1.name)
    (tree / "cluster" / "__init__.py").write_text('CODE = "v2"\n')
    monkeypatch.setattr(setup_view, "wanted", lambda extras: want())
    # the node is asked for its platform: this machine's python, as a node's
    n = node(python=sys.executable)
    out = io.StringIO()
    rc = await setup_view.run_download_wheelhouse(
        Config(name="t", nodes=(n,)), NodeShell, house, nodes=[n], console=Console(file=out, width=200)
    )
    assert rc == 0, out.getvalue()
    (wheel,) = house.glob("boltring-*.whl")
    assert wheel_code(wheel) == 'CODE = "v2"\n', out.getvalue()


# -- 2: a relative workdir -------------------------------------------------------------------------


async def test_a_relative_workdir_is_the_nodes_homes_and_the_node_gets_the_edited_code(tree, home):
    n = node(workdir="boltring")
    r = await setup(n)
    assert r.status == "installed", outcome(r)
    assert code_on(home / "venv/bin/python") == "v1"
    assert list((home / "boltring" / "setup").glob("boltring-*.whl"))  # under the home, as launch's

    (tree / "cluster" / "__init__.py").write_text('CODE = "v2"\n')
    r = await setup(n)
    assert r.status == "installed", outcome(r)
    assert code_on(home / "venv/bin/python") == "v2", outcome(r)


# -- 3: the venv's python ----------------------------------------------------------------------------


def runs(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", ""], capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


@pytest.fixture
def path_python(tmp_path, monkeypatch) -> Path:
    """The node's `python3` on PATH is this test's base Python; nothing else of pyenv's is on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    base = Path(getattr(sys, "_base_executable", sys.executable))
    (bin_dir / "python3").symlink_to(base)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir / "python3"


def absent_minor() -> int:
    """A minor version of Python 3 newer than this one that is nowhere the node looks."""
    for minor in range(sys.version_info.minor + 1, 40):
        name = f"python3.{minor}"
        if not any(
            runs(p) for p in (name, *(f"{d}/{name}" for d in ("/opt/homebrew/bin", "/usr/local/bin")))
        ):
            if not Path(f"/usr/bin/{name}").exists():
                return minor
    raise AssertionError("every Python 3 version is here")


async def test_a_python_named_for_a_version_the_node_lacks_is_one_clear_line_every_time(
    tree, home, path_python
):
    minor = absent_minor()
    n = node(python=f"~/venv/bin/python3.{minor}")
    for _ in range(2):  # the same line again, not another failure the second time
        r = await setup(n)
        assert (r.status, r.step) == ("failed", "python"), outcome(r)
        assert f"has no Python 3.{minor} (it has 3.{sys.version_info.minor}" in (r.error or ""), outcome(r)
        assert "set python: ~/venv/bin/python3" in (r.hint or "")
        assert not (home / "venv").exists()  # nothing half done to trip over next time


def doomed_python(tmp_path: Path) -> Path:
    """A base Python that can go away, as a Homebrew upgrade removes the previous version's
    folder: a venv made with it keeps pointing there."""
    old = tmp_path / "old-python" / "bin"
    old.mkdir(parents=True)
    (old / "python3").symlink_to(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
    return old / "python3"


async def test_a_venv_boltring_made_whose_base_python_is_gone_is_made_anew(
    tree, home, tmp_path, path_python, monkeypatch
):
    doomed = doomed_python(tmp_path)
    monkeypatch.setenv("PATH", f"{doomed.parent}:/usr/bin:/bin")
    r = await setup(node())
    assert r.status == "installed", outcome(r)
    assert str(doomed.parent) in (home / "venv" / "pyvenv.cfg").read_text()
    shutil.rmtree(doomed.parent.parent)  # the upgrade; python3 on PATH is another one now
    monkeypatch.setenv("PATH", f"{path_python.parent}:/usr/bin:/bin")
    assert not runs(str(home / "venv" / "bin" / "python"))
    r = await setup(node())
    assert r.status == "installed", outcome(r)
    assert any("made anew" in c and "which is gone" in c for c in r.changes), r.changes
    assert code_on(home / "venv/bin/python") == "v1"


async def test_a_venv_someone_else_made_whose_base_python_is_gone_is_named_and_left_alone(
    tree, home, tmp_path, path_python
):
    doomed = doomed_python(tmp_path)
    subprocess.run([str(doomed), "-m", "venv", str(home / "venv")], check=True, timeout=300)
    (home / "venv" / "theirs.txt").write_text("the user's\n")
    shutil.rmtree(doomed.parent.parent)
    r = await setup(node())
    assert (r.status, r.step) == ("failed", "venv"), outcome(r)
    assert "was made with the Python in" in (r.error or "") and "which is gone" in (r.error or ""), outcome(r)
    assert "rm -rf ~/venv" in (r.hint or "") and str(path_python) in (r.hint or ""), outcome(r)
    assert (home / "venv" / "theirs.txt").exists()
