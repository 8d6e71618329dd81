"""Workspace sync without nodes: .boltringignore (gitignore syntax), what is synced, where a
local path lands on a node, and LocalTransport.upload's atomic copy."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.nodes import sync
from boltring.cluster.nodes.ignore import IgnoreRules
from boltring.cluster.nodes.setup import missing_package, venv_of
from boltring.cluster.nodes.transport import LocalTransport
from boltring.cluster.nodes.wheels import platform_tags


@pytest.mark.parametrize(
    "rules, path, is_dir, ignored",
    [
        (["*.log"], "a/b/x.log", False, True),
        (["*.log", "!keep.log"], "keep.log", False, False),
        (["outputs/"], "outputs", True, True),
        (["outputs/"], "outputs", False, False),  # dir-only pattern, a file of that name stays
        (["/top.txt"], "top.txt", False, True),
        (["/top.txt"], "sub/top.txt", False, False),  # anchored to the folder
        (["docs/*.md"], "docs/a.md", False, True),
        (["docs/*.md"], "docs/x/a.md", False, False),  # * does not cross a /
        (["**/cache"], "a/b/cache", True, True),
        (["data/**"], "data/x/y.bin", False, True),
        (["a/**/z"], "a/z", False, True),
        (["a/**/z"], "a/b/c/z", False, True),
        (["x[0-9].txt"], "x7.txt", False, True),
        (["x[!0-9].txt"], "x7.txt", False, False),
        (["# comment", ""], "# comment", False, False),
        (["\\!bang"], "!bang", False, True),
    ],
)
def test_ignore_rules_follow_gitignore(rules, path, is_dir, ignored):
    assert IgnoreRules(rules).ignored(path, is_dir) is ignored


def _config(tmp_path: Path, **job) -> Config:
    node = Node(name="m1", ring_ip="10.0.0.1", ssh="m1", workdir="~/.boltring")
    cfg_file = tmp_path / "boltring.yaml"
    cfg_file.write_text("")
    return Config(name="c", nodes=(node,), job=JobSpec(**job), source=str(cfg_file))


def test_roots_mapping_and_manifest(tmp_path):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "train.py").write_text("print(1)\n")
    (proj / "data" / "d.txt").write_text("d")
    (proj / "notes.log").write_text("x")
    (proj / ".boltringignore").write_text("*.log\n")
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "w.bin").write_bytes(b"\0" * 10)
    cfg = _config(
        tmp_path,
        example=None,
        script=str(proj / "train.py"),
        data=str(proj / "data" / "d.txt"),  # inside the script folder: travels with it
        sync=("models/tiny",),  # relative to the config file's folder
        args=("--model", str(model), f"--data={proj / 'data'}", "--steps", "3"),
    )
    roots = sync.sync_roots(cfg)
    assert [(r.name, r.why) for r in roots] == [("proj", "script folder"), ("tiny", "job.sync")]
    node = cfg.nodes[0]
    assert (
        sync.remote_path(node, str(proj / "data" / "d.txt"), roots) == "~/.boltring/workspace/proj/data/d.txt"
    )
    assert sync.map_args(node, cfg.job.args, roots) == [
        "--model",
        "~/.boltring/workspace/tiny",
        "--data",
        "~/.boltring/workspace/proj/data",
        "--steps",
        "3",
    ]
    files = sync.local_manifest(roots)
    assert sorted(files) == ["proj/data/d.txt", "proj/train.py", "tiny/w.bin"]

    from boltring.cluster.jobs.plan import runner_argv

    argv = runner_argv(cfg, node, "job1", resume=False)
    assert argv[argv.index("--script") + 1] == "~/.boltring/workspace/proj/train.py"
    assert argv[argv.index("--data") + 1] == "~/.boltring/workspace/proj/data/d.txt"
    here = dataclasses.replace(node, local=True)  # a local node runs the laptop's own files
    local = runner_argv(dataclasses.replace(cfg, nodes=(here,)), here, "j", resume=False)
    assert local[local.index("--script") + 1] == str(proj / "train.py")


def test_roots_that_clash_or_are_missing_are_one_clear_error(tmp_path):
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data").mkdir(parents=True)
    with pytest.raises(sync.SyncError, match="would both be workspace/data"):
        sync.sync_roots(_config(tmp_path, sync=("a/data", "b/data")))
    with pytest.raises(sync.SyncError, match="job.sync names nope"):
        sync.sync_roots(_config(tmp_path, sync=("nope",)))


def test_local_upload_is_atomic_with_the_final_mode(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * (3 << 20))
    t = LocalTransport(Node(name="here", ring_ip="127.0.0.1", local=True))
    seen: list[int] = []
    dst = tmp_path / "out" / "dst.bin"
    asyncio.run(t.upload(src, str(dst), mode=0o640, progress=seen.append))
    assert dst.read_bytes() == src.read_bytes() and dst.stat().st_mode & 0o777 == 0o640
    assert seen == [1 << 20, 2 << 20, 3 << 20]

    def boom(sent: int) -> None:
        raise KeyboardInterrupt

    src.write_bytes(b"y" * (3 << 20))
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(t.upload(src, str(dst), mode=0o640, progress=boom))
    assert dst.read_bytes() == b"x" * (3 << 20)  # the old file, whole; no temp left beside it
    assert [p.name for p in dst.parent.iterdir()] == ["dst.bin"]


def test_setup_helpers():
    assert (
        venv_of(Node(name="m", ring_ip="1.2.3.4", python="~/boltring/.venv/bin/python3"))
        == "~/boltring/.venv"
    )
    assert venv_of(Node(name="m", ring_ip="1.2.3.4", python="python3")) is None
    lines = [
        "ERROR: Could not find a version that satisfies the requirement msgpack>=1.2.1 (from boltring) (from versions: none)",
        "ERROR: No matching distribution found for msgpack>=1.2.1",
    ]
    assert missing_package(lines) == "msgpack>=1.2.1"
    mac = {"platform": "darwin", "machine": "arm64", "macos": "15.3.1", "version": [3, 12, 8]}
    assert platform_tags(mac) == ["macosx_15_0_arm64"]
    linux = platform_tags({"platform": "linux", "machine": "x86_64", "glibc": "2.36", "version": [3, 11, 2]})
    assert (
        linux[0] == "manylinux_2_36_x86_64"
        and "manylinux2014_x86_64" in linux
        and linux[-1] == "linux_x86_64"
    )
