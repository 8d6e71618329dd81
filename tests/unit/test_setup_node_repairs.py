"""`boltring setup` of one node, against a simulated node (FakeNode answers the commands setup
sends as a node with that venv would): a venv without pip is repaired, a half-made venv is
removed, a broken mlx (metadata there, code gone) is reinstalled, transport hints survive,
pip's failure hints point the right way, the wheel is built only when a node needs it (and
said), duplicate nodes run once, each node's end is reported as it ends, and a cancelled setup
leaves no task behind."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from pathlib import Path

import pytest

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.nodes import setup as node_setup
from boltring.cluster.nodes import setup_all
from boltring.cluster.nodes.errors import Unreachable
from boltring.cluster.nodes.setup import NodeSetup, outcome
from boltring.cluster.nodes.setup_all import setup_nodes
from boltring.cluster.nodes.transport import CommandResult, Transport
from boltring.cluster.nodes.wheels import Wanted

PYENV = node_setup.PYENV_SOURCE.read_text()
WANT = Wanted(boltring="0.1.0", mlx="0.32.4", extras=(), extra_dists=())
VENV_PY = "~/venv/bin/python"
_VALUED = {"--progress-bar", "--find-links"}


def ok(out: str = "") -> CommandResult:
    return CommandResult(0, out, "")


class FakeNode(Transport):
    """A node with (or without) a venv at ~/venv, some packages, and /usr/bin/python3 3.12."""

    def __init__(
        self,
        node: Node,
        *,
        venv: bool = True,
        pip: bool = True,
        dists: dict[str, str] | None = None,
        broken: tuple[str, ...] = (),
        venv_fails: bool = False,
        pip_says: str | None = None,
        connect_error: Exception | None = None,
        hang: bool = False,
        system: bool = False,
    ):
        super().__init__(node)
        self.venv, self.pip, self.dists, self.broken = venv, pip, dict(dists or {}), set(broken)
        self.venv_fails, self.pip_says, self.connect_error, self.hang = (
            venv_fails,
            pip_says,
            connect_error,
            hang,
        )
        self.system = system  # node.python is a system interpreter, not a venv's
        self.commands: list[list[str]] = []
        self.files: dict[str, bytes] = {}
        self.removed = False

    async def connect(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.connect_error is not None:
            raise self.connect_error

    def _describe(self, python: str, dists: list[str]) -> dict:
        broken = {
            d: {
                "error": f"ModuleNotFoundError: No module named '{d}'",
                "reinstall": {d: self.dists[d], **({"mlx-cpu": self.dists[d]} if d == "mlx" else {})},
            }
            for d in sorted(self.broken)
            if d in dists
        }
        return {
            "executable": python,
            "in_venv": python == self.node.python and not self.system,
            "prefix": "/root/venv" if python == self.node.python and not self.system else "/usr",
            "version": [3, 12, 1],
            "platform": "linux",
            "machine": "x86_64",
            "glibc": "2.36",
            "pip": "24.0" if self.pip else None,
            "dists": {d: self.dists.get(d) for d in dists},
            "broken": broken,
            "setup": None,
        }

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        self.commands.append(list(argv))
        py, rest = argv[0], argv[1:]
        if rest[:1] == ["-c"] and rest[1] == PYENV:
            if py == self.node.python:
                return (
                    ok(json.dumps(self._describe(py, rest[2:]))) if self.venv else CommandResult(127, "", "")
                )
            if py in ("python3", "/usr/bin/python3"):
                return ok(json.dumps(self._describe("/usr/bin/python3", [])))
            return CommandResult(127, "", f"{py}: not found")
        if rest[:1] == ["-c"] and "lexists" in rest[1]:
            return CommandResult(0 if self.venv else 1, "", "")
        if rest[:1] == ["-c"] and "rmtree" in rest[1]:
            self.venv, self.removed = False, True
            return ok()
        if rest[:2] == ["-m", "venv"]:
            self.venv = True
            if self.venv_fails:  # made, then ensurepip ran out of disk space
                self.pip = False
                return CommandResult(1, "", "OSError: [Errno 28] No space left on device")
            self.pip = True
            return ok()
        if rest[:2] == ["-m", "ensurepip"]:
            self.pip = True
            return ok("Successfully installed pip-24.0")
        if rest[:3] == ["-m", "pip", "install"]:
            if self.pip_says is not None:
                return CommandResult(1, "", self.pip_says)
            if not self.pip:
                return CommandResult(1, "", f"{py}: No module named pip")
            force, words, skip = "--force-reinstall" in rest, [], False
            for w in rest[3:]:
                if skip:
                    skip = False
                elif w in _VALUED:
                    skip = True
                elif not w.startswith("-"):
                    words.append(w)
            for w in words:
                name, _, version = w.partition("==")
                if force or name not in self.dists or self.dists[name] != version:
                    self.dists[name] = version
                    self.broken.discard(name)
            return ok("Successfully installed " + " ".join(words))
        raise AssertionError(f"unexpected command {argv}")

    async def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        return b""

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        self.files[path] = data


def node(name: str = "n1") -> Node:
    return Node(name=name, ring_ip="198.18.1.1", ssh=f"root@{name}", python=VENV_PY)


def config(*nodes: Node) -> Config:
    return Config(name="t", nodes=tuple(nodes) or (node(),))


@pytest.fixture
def wheels(monkeypatch):
    """boltring's wheel, faked: how often it was asked for; none exists (online nodes)."""
    calls: list[str] = []

    def fake(version, wheelhouse, on_build=None):  # counted when called, not when awaited
        calls.append(version)
        return _no_wheel()

    monkeypatch.setattr(setup_all, "boltring_wheel", fake)
    monkeypatch.setattr(node_setup.sync, "sync_node", fake_sync)
    return calls


async def _no_wheel() -> None:
    return None


async def fake_sync(t, node, local, names, **kw):
    """The wheelhouse upload, as far as these tests care: nothing to send."""
    return node_setup.sync.NodeSync(node=node.name, workspace=kw.get("dest") or "")


async def one(t: FakeNode, *, wheelhouse: Path | None = None, **kw) -> tuple[NodeSetup, list]:
    seen: list = []
    (r,) = await setup_nodes(
        config(t.node),
        lambda n: t,
        WANT,
        wheelhouse=wheelhouse,
        report=lambda *a: seen.append(a),
        **kw,
    )
    return r, seen


async def test_a_venv_without_pip_gets_it_back_with_ensurepip(wheels):
    t = FakeNode(node(), pip=False)
    r, _ = await one(t)
    assert r.status == "installed", outcome(r)
    assert [VENV_PY, "-m", "ensurepip", "--upgrade"] in t.commands
    assert "pip (restored with ensurepip)" in r.changes


async def test_a_venv_that_could_not_be_made_is_removed_and_the_next_run_starts_afresh(wheels):
    t = FakeNode(node(), venv=False, venv_fails=True)
    r, _ = await one(t)
    assert (r.status, r.step) == ("failed", "venv"), outcome(r)
    assert t.removed and not t.venv
    assert "half-made ~/venv was removed" in (r.hint or "")
    assert any("No space left" in line for line in r.tail)
    t.venv_fails = False
    r, _ = await one(t)
    assert r.status == "installed", outcome(r)


async def test_a_venv_someone_else_made_is_never_removed(wheels):
    t = FakeNode(node(), venv=False, venv_fails=True)
    t.venv = False

    async def exists(argv, **kw):  # the folder is there (a broken venv): not ours to remove
        return CommandResult(0, "", "")

    real = t.run

    async def run(argv, **kw):
        if argv[1:2] == ["-c"] and "lexists" in argv[2]:
            return await exists(argv)
        return await real(argv, **kw)

    t.run = run  # type: ignore[method-assign]
    r, _ = await one(t)
    assert (r.status, r.step) == ("failed", "venv") and not t.removed
    assert "rm -rf ~/venv" in (r.hint or "")


async def test_a_broken_mlx_is_not_up_to_date_and_is_reinstalled_with_what_shares_its_folder(wheels):
    t = FakeNode(node(), dists={"boltring": "0.1.0", "mlx": "0.32.4"}, broken=("mlx",))
    r, _ = await one(t)
    assert r.status == "installed", outcome(r)
    forced = [c for c in t.commands if "--force-reinstall" in c]
    assert len(forced) == 1 and "--no-deps" in forced[0]
    assert {"mlx==0.32.4", "mlx-cpu==0.32.4"} <= set(forced[0])
    assert not any("boltring" in w for w in forced[0][1:])  # boltring was fine: left alone
    assert any(c.startswith("mlx 0.32.4 (reinstalled: ModuleNotFoundError") for c in r.changes), r.changes


async def test_a_system_python_that_looks_like_a_venvs_is_refused_not_installed_into(wheels):
    t = FakeNode(Node(name="n1", ring_ip="198.18.1.1", ssh="root@n1", python="/usr/bin/python3"), system=True)
    r, _ = await one(t)
    assert (r.status, r.step) == ("failed", "config"), outcome(r)
    assert "not a venv's interpreter" in (r.error or "") and "of /usr" in (r.error or "")
    assert not any(c[1:3] in (["-m", "pip"], ["-m", "venv"]) for c in t.commands)


async def test_an_unreachable_node_keeps_the_hint_check_gives(wheels):
    hint = "nothing accepts SSH there: enable Remote Login, then try ssh n1"
    t = FakeNode(node(), connect_error=Unreachable("n1: 198.18.0.3:22 refused the connection", hint=hint))
    r, _ = await one(t)
    assert (r.status, r.step, r.hint) == ("failed", "connect", hint)
    assert r.error == "198.18.0.3:22 refused the connection"  # the node is named once, by the view
    assert outcome(r).endswith(f"→ {hint}")


async def test_pip_without_pip_module_hints_to_remove_the_venv_not_the_wheelhouse(wheels, tmp_path):
    t = FakeNode(node(), pip_says="/root/venv/bin/python: No module named pip")
    r, _ = await one(t, wheelhouse=tmp_path)
    assert (r.status, r.step) == ("failed", "pip")
    assert "has no pip" in (r.error or "") and "rm -rf ~/venv" in (r.hint or "")
    assert "download-wheelhouse" not in (r.hint or "")


async def test_pip_failure_hints(wheels, tmp_path):
    offline = "Failed to establish a new connection: [Errno 101] Network is unreachable\nERROR: No matching distribution found for msgpack>=1.2.1"
    r, _ = await one(FakeNode(node(), pip_says=offline))
    assert "cannot reach the package index" in (r.error or "") and "--download-wheelhouse" in (r.hint or "")
    r, _ = await one(
        FakeNode(node(), pip_says="ERROR: No matching distribution found for msgpack>=1.2.1"),
        wheelhouse=tmp_path,
    )
    assert f"no wheel for msgpack>=1.2.1 in the wheelhouse {tmp_path}" in (r.error or "")
    assert r.hint == f"fill it for the nodes: boltring setup --download-wheelhouse {tmp_path}"
    r, _ = await one(FakeNode(node(), pip_says="ERROR: some other trouble"), wheelhouse=tmp_path)
    assert (r.error or "").endswith("exit 1") and r.hint is None  # nothing about being offline


async def test_an_up_to_date_run_never_looks_for_boltrings_wheel(wheels, tmp_path):
    nodes = [node("n1"), node("n2")]
    fakes = {n.name: FakeNode(n, dists={"boltring": "0.1.0", "mlx": "0.32.4"}) for n in nodes}
    results = await setup_nodes(config(*nodes), lambda n: fakes[n.name], WANT, wheelhouse=tmp_path)
    assert [r.status for r in results] == ["up to date", "up to date"]
    assert wheels == []  # not even looked for: an empty wheelhouse used to start a build at once


async def test_the_wheel_is_built_once_and_every_waiting_node_says_so(monkeypatch):
    builds: list[str] = []
    release = asyncio.Event()

    async def slow(version, wheelhouse, on_build=None):
        builds.append(version)
        assert on_build is not None
        on_build()
        await release.wait()
        return None

    monkeypatch.setattr(setup_all, "boltring_wheel", slow)
    nodes = [node("n1"), node("n2")]
    fakes = {n.name: FakeNode(n, venv=True) for n in nodes}
    seen: list[tuple[str, str, str]] = []
    work = asyncio.ensure_future(
        setup_nodes(config(*nodes), lambda n: fakes[n.name], WANT, report=lambda *a: seen.append(a))
    )
    for _ in range(100):
        if sum(text == "building boltring's wheel" for _, _, text in seen) == 2:
            break
        await asyncio.sleep(0.01)
    release.set()
    results = await work
    assert builds == ["0.1.0"]
    assert {n for n, _, text in seen if text == "building boltring's wheel"} == {"n1", "n2"}
    assert [r.status for r in results] == ["installed", "installed"]


async def test_a_node_named_twice_is_set_up_once_and_each_end_is_heard_as_it_ends(wheels):
    fast = FakeNode(node("n1"), dists={"boltring": "0.1.0", "mlx": "0.32.4"})
    slow = FakeNode(node("n2"), pip=False)
    ended: list[str] = []
    results = await setup_nodes(
        config(fast.node, slow.node),
        lambda n: {"n1": fast, "n2": slow}[n.name],
        WANT,
        nodes=[fast.node, fast.node, slow.node],
        done=lambda r: ended.append(f"{r.node} {r.status}"),
    )
    assert [r.node for r in results] == ["n1", "n2"]
    assert sorted(ended) == ["n1 up to date", "n2 installed"]
    assert sum(c[1:3] == ["-c", PYENV] for c in fast.commands) == 1  # one check, not two at once


async def test_a_cancelled_setup_cancels_every_node_and_leaves_no_exception_unretrieved(wheels, caplog):
    nodes = [node("n1"), node("n2")]
    fakes = {n.name: FakeNode(n, hang=True) for n in nodes}
    work = asyncio.ensure_future(setup_nodes(config(*nodes), lambda n: fakes[n.name], WANT))
    await asyncio.sleep(0.05)
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert len(before) >= 3  # the setup and one task per node
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work
    assert all(t.done() for t in before)
    gc.collect()
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_only_the_wheelhouses_own_wheels_are_uploaded():
    from boltring.cluster.nodes.setup import wheels_only

    files = {
        "wheelhouse/.complete": 1,
        "wheelhouse/README": 2,
        "wheelhouse/mlx-0.32.4-cp311-linux_x86_64.whl": 3,
        "wheelhouse/old/numpy-1.0-cp311-linux_x86_64.whl": 4,
        "boltring-0.1.0-py3-none-any.whl": 5,
    }
    assert wheels_only(files) == {  # type: ignore[arg-type]
        "wheelhouse/mlx-0.32.4-cp311-linux_x86_64.whl": 3,
        "boltring-0.1.0-py3-none-any.whl": 5,
    }
