"""`boltring setup` of this machine as a remote node (commands through a shell from the node
user's home, as over SSH), with real venvs, real pip and wheels built here offline from a small
stand-in for boltring's source tree (`CODE = "v1"`, then edited to "v2"): `workdir: boltring`
(relative: the node's home's) gets the edited code (its wheel path once passed for a requirement
name, and pip kept the old code of the same version).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
