"""Workspace sync on the SSH test hosts (tests/lab): a script folder reaches all three hosts (its
.boltringignore respected), a changed file is the only one sent again (bytes counted), a second
launch with nothing changed sends nothing and says so, a 200 MB file goes with byte progress, and
an upload killed midway leaves nothing under the final name (the next sync cleans up and sends it).
The pre-launch check fails with a hint for a model folder only the laptop has, unless job.sync
names it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.jobs.controller import ControllerError, JobController
from boltring.cluster.jobs.events import SyncDone, SyncProgress
from boltring.cluster.nodes import sync
from boltring.cluster.nodes.ssh import SshTransport
from tests.integration.test_local_run import USER_SCRIPT
from tests.integration.test_ssh_run import lab_yaml, run_cli

pytestmark = pytest.mark.netns


def project(tmp_path: Path, name: str) -> Path:
    """A script folder of several files, and things .boltringignore keeps out. The lab hosts'
    homes live for the whole session, so each test names its folder differently."""
    p = tmp_path / name
    (p / "lib").mkdir(parents=True)
    (p / "train.py").write_text(USER_SCRIPT)
    (p / "lib" / "util.py").write_text("X = 1\n" * 1000)
    (p / "vocab.txt").write_text("abc\n" * 5000)
    (p / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (p / "run.sh").chmod(0o755)
    (p / "outputs").mkdir()
    (p / "outputs" / "old.ckpt").write_bytes(b"x" * 100_000)
    (p / "notes.log").write_text("ignored\n")
    (p / "lib" / "__pycache__").mkdir()
    (p / "lib" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"pyc")
    (p / ".boltringignore").write_text("# gitignore syntax\noutputs/\n*.log\n")
    return p


async def run_sync(config, nodes=None, progress=None):
    ts = {n.name: SshTransport(n, options=config.ssh) for n in config.nodes}
    try:
        return await sync.sync_workspace(config, lambda n: ts[n.name], progress, nodes)
    finally:
        await asyncio.gather(*(t.close() for t in ts.values()))


def test_script_folder_reaches_every_host_and_a_changed_file_alone_goes_again(lab, tmp_path, home):
    proj = project(tmp_path, "proj")
    cfg = load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=5))
    cfg = with_overrides(cfg, script=str(proj / "train.py"))
    first = asyncio.run(run_sync(cfg))
    expected = {"proj/train.py", "proj/lib/util.py", "proj/vocab.txt", "proj/run.sh"}
    assert {r.node for r in first} == {"h1", "h2", "h3"}
    for r in first:
        assert set(r.files_sent) == expected, r.files_sent
    for h in lab.hosts:
        ws = h.workdir / "workspace" / "proj"
        got = {str(p.relative_to(ws.parent)) for p in ws.rglob("*") if p.is_file()}
        assert got == expected
        assert (ws / "vocab.txt").read_bytes() == (proj / "vocab.txt").read_bytes()
        assert (ws / "run.sh").stat().st_mode & 0o777 == 0o755  # the final mode, as on the laptop
        assert (ws / "train.py").stat().st_mode & 0o777 == (proj / "train.py").stat().st_mode & 0o777

    (proj / "lib" / "util.py").write_text("X = 2\n" * 1000)  # same size, other content
    (proj / "outputs" / "new.ckpt").write_bytes(b"y" * 50_000)  # ignored: never sent
    second = asyncio.run(run_sync(cfg))
    for r in second:
        assert r.files_sent == ["proj/lib/util.py"] and r.bytes_sent == 6000, (r.files_sent, r.bytes_sent)
        assert r.files_unchanged == 3
    for h in lab.hosts:
        assert (h.workdir / "workspace" / "proj" / "lib" / "util.py").read_text().startswith("X = 2")

    third = asyncio.run(run_sync(cfg))
    assert all(r.files_sent == [] and r.bytes_sent == 0 for r in third)


def test_second_launch_with_nothing_changed_sends_nothing_and_says_so(lab, tmp_path, home):
    proj = project(tmp_path, "proj2")
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=5)
    args = ["--run", "--json", "--skip-checks", "--config", str(cfg), "--script", str(proj / "train.py")]
    runs = []
    for _ in range(2):
        res = run_cli(*args, "--", "--steps", "5")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        runs.append([json.loads(line) for line in res.stdout.splitlines()])
    first = [e for e in runs[0] if e["event"] == "sync"]
    second = [e for e in runs[1] if e["event"] == "sync"]
    assert sorted(e["node"] for e in first) == ["h1", "h2", "h3"] and all(e["files_sent"] == 4 for e in first)
    assert sorted(e["node"] for e in second) == ["h1", "h2", "h3"]
    assert all(e["files_sent"] == 0 and e["bytes_sent"] == 0 and e["files_unchanged"] == 4 for e in second)
    said = [e["text"] for e in runs[1] if e["event"] == "log" and "workspace" in e["text"]]
    assert len(said) == 3 and all("nothing changed, nothing sent" in t for t in said), said
    # the job ran the synced copy, the same relative layout on every host
    for h in lab.hosts:  # (the hosts outlive one test: other jobs' run dirs may be there too)
        specs = [json.loads(p.read_text()) for p in (h.workdir / "runs").glob("*/rank*/spec.json")]
        scripts = {s["argv"][s["argv"].index("--script") + 1] for s in specs if "--script" in s["argv"]}
        assert "~/.boltring/workspace/proj2/train.py" in scripts, scripts


def test_200mb_file_goes_with_byte_progress(lab, tmp_path, home):
    data = tmp_path / "big"
    data.mkdir()
    blob = data / "shard.bin"
    with open(blob, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    cfg = load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=5))
    cfg = with_overrides(cfg, example="mlp")
    import dataclasses

    cfg = dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, sync=(str(data),)))

    async def scenario():
        c = JobController(cfg)
        seen = []
        c.add_listener(seen.append)
        t0 = time.monotonic()
        await c._sync_workspace()
        elapsed = time.monotonic() - t0
        await c.close()
        return seen, elapsed

    seen, elapsed = asyncio.run(scenario())
    done = {e.node: e for e in seen if isinstance(e, SyncDone)}
    assert set(done) == {"h1", "h2", "h3"} and all(d.bytes_sent == 200 << 20 for d in done.values())
    print(f"200 MB to 3 hosts in parallel: {elapsed:.1f} s ({3 * 200 / elapsed:.0f} MB/s together)")
    for h in lab.hosts:
        prog = [e for e in seen if isinstance(e, SyncProgress) and e.node == h.name]
        assert len(prog) >= 3, prog  # several updates while it went, not just the end
        assert [p.sent for p in prog] == sorted(p.sent for p in prog) and prog[-1].sent == prog[-1].total
        assert (h.workdir / "workspace" / "big" / "shard.bin").stat().st_size == 200 << 20


KILLED_SYNC = """
import asyncio, sys
from boltring.cluster.config.load import load_config
from boltring.cluster.nodes import sync
from boltring.cluster.nodes.ssh import SshTransport
import dataclasses
cfg = load_config(sys.argv[1])
cfg = dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, sync=(sys.argv[2],)))
node = cfg.nodes[0]
t = SshTransport(node, options=cfg.ssh)
def progress(node, path, sent, total):
    print(sent, flush=True)
asyncio.run(sync.sync_workspace(cfg, lambda n: t, progress, [node]))
"""


def test_upload_killed_midway_leaves_no_partial_file_under_the_final_name(lab, tmp_path, home):
    data = tmp_path / "big2"
    data.mkdir()
    blob = data / "shard.bin"
    with open(blob, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    cfg_path = lab_yaml(lab, tmp_path / "lab.yaml", steps=5)
    h1 = lab.host("h1")
    final = h1.workdir / "workspace" / "big2" / "shard.bin"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, str(cfg_path), str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stdout:  # progress lines: kill once 40 MB are out
            if int(line) >= 40 << 20:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    time.sleep(0.5)
    assert not final.exists()  # never a partial file under the final name
    temps = list(final.parent.glob(".shard.bin.boltring-*"))
    assert len(temps) == 1 and temps[0].stat().st_size < 200 << 20  # the killed upload's temp file
    # the next sync removes the leftover and sends the whole file
    cfg = load_config(cfg_path)
    import dataclasses

    cfg = dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, sync=(str(data),)))
    (r,) = asyncio.run(run_sync(cfg, nodes=[cfg.nodes[0]]))
    assert r.files_sent == ["big2/shard.bin"] and r.stale_removed == 1
    assert final.stat().st_size == 200 << 20 and not list(final.parent.glob(".shard.bin.boltring-*"))


def test_model_folder_only_on_the_laptop_fails_the_prelaunch_check_unless_synced(
    lab, tmp_path, home, monkeypatch
):
    # The lab hosts share this machine's filesystem, but each has its own home: the model is
    # given under "~", which on a node is that node's home. (A relative path would be found:
    # ranks run in the launch folder, which the hosts see too: see test_rank_cwd_lab.py.)
    model = home / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    import dataclasses

    base = load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=5))
    job = dataclasses.replace(base.job, example="mlp", args=("--model", "~/tiny-model"))
    cfg = dataclasses.replace(base, job=job)

    async def prelaunch(config):
        c = JobController(config)
        try:
            await c._sync_workspace()
        finally:
            await c.close()

    with pytest.raises(ControllerError) as err:
        asyncio.run(prelaunch(cfg))
    assert "h1, h2, h3: ~/tiny-model is on this machine but not on the nodes; add it to job.sync" in str(
        err.value
    )
    assert "job.sync" in (err.value.hint or "")

    synced = dataclasses.replace(cfg, job=dataclasses.replace(job, sync=("~/tiny-model",)))
    asyncio.run(prelaunch(synced))
    for h in lab.hosts:
        assert (h.workdir / "workspace" / "tiny-model" / "config.json").read_text() == "{}"
    from boltring.cluster.jobs.plan import runner_argv

    argv = runner_argv(synced, synced.nodes[1], "j", resume=False)
    assert argv[argv.index("--model") + 1] == "~/.boltring/workspace/tiny-model"
