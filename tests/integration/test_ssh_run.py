"""`boltring --run` over SSH: real sshd test hosts, ranks on the ring network (tb0), the
controller on the control network. Same loss as a local run; survives a dropped SSH session;
`boltring kill` leaves nothing; --dry-run runs nothing; the secret never on a command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from boltring.cluster.config.load import load_config, with_overrides
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import NodeState, RankMetrics
from tests.procs import boltring_processes

pytestmark = pytest.mark.netns
CLI = [sys.executable, "-m", "boltring.tui.cli"]


def lab_yaml(lab, path: Path, *, steps: int, example: str = "mlp", seed: int = 7, port: int = 52620) -> Path:
    nodes = "\n".join(
        f"  - {{name: {h.name}, ssh: {h.name}, ring_ip: {h.ring_ip}, ring_iface: tb0}}" for h in lab.hosts
    )
    path.write_text(f"""name: lab
ssh:
  config_file: {lab.ssh_config}
  known_hosts: {lab.known_hosts}
  connect_timeout: 5
  keepalive_interval: 2
  keepalive_count_max: 3
ring: {{port: {port}, timeout: 20, connect_timeout: 20}}
defaults: {{python: {sys.executable}}}
nodes:
{nodes}
job: {{example: {example}, steps: {steps}, seed: {seed}, global_batch: 240}}
""")
    return path


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def lab_processes(lab) -> list[psutil.Process]:
    """Rank processes on any test host (their run dirs are under the hosts' homes)."""
    return [p for p in boltring_processes(str(lab.dir), settle_s=5.0) if "sshd" not in " ".join(p.cmdline())]


async def _collect(controller: JobController, until) -> list:
    seen = []
    controller.add_listener(seen.append)
    while not until(seen):
        await asyncio.sleep(0.05)
    return seen


async def launched_and_stepping(config, poll_s: float) -> tuple[JobController, list]:
    """A launched job every rank of which has reported a step, and the events seen so far."""
    c = JobController(config, poll_s=poll_s)
    seen: list = []
    c.add_listener(seen.append)
    await c.launch()
    n = len(config.nodes)
    while not all(any(isinstance(e, RankMetrics) and e.rank == r for e in seen) for r in range(n)):
        await asyncio.sleep(0.05)
    return c, seen


def rank_losses(events, rank=0) -> list[float]:
    return [
        m.loss
        for m in sorted(
            (e for e in events if isinstance(e, RankMetrics) and e.rank == rank), key=lambda m: m.step
        )
    ]


def test_check_and_run_over_ssh_match_the_local_loss_curve(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=25)
    res = run_cli("--run", "--json", "--config", str(cfg))  # checks run first, then the job
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    checks = [e for e in events if e["event"] == "check"]
    assert checks and not [c for c in checks if c["status"] == "fail"], checks
    assert {e["node"] for e in events if e["event"] == "rank_start"} == {"h1", "h2", "h3"}
    ssh_curve = [e["loss"] for e in events if e["event"] == "step"]
    assert events[-1]["event"] == "summary" and events[-1]["status"] == "finished"

    local = with_overrides(load_config(None), ranks=3, example="mlp", steps=25, seed=7)

    async def run_local():
        c = JobController(local, poll_s=0.1)
        seen = []
        c.add_listener(seen.append)
        await c.launch()
        await asyncio.wait_for(c.wait(), 120)
        await c.close()
        return seen

    local_curve = rank_losses(asyncio.run(run_local()))
    assert len(ssh_curve) == len(local_curve) == 25
    for a, b in zip(ssh_curve, local_curve, strict=False):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (ssh_curve, local_curve)
    # the ring really used the ring network: rank 1 listened on h2's tb0 address
    spec = json.loads((lab.host("h2").workdir / "runs").glob("*/rank1/spec.json").__next__().read_text())
    assert json.loads(spec["env"]["BOLTRING_RING"])[1].startswith(lab.host("h2").ring_ip + ":")


def test_dry_run_over_ssh_prints_ssh_commands_and_runs_nothing(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=10)
    before = {h.name: sorted((h.workdir / "runs").glob("*")) for h in lab.hosts}
    res = run_cli("--run", "--dry-run", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("ssh ")]
    assert len(lines) == 3 and all(f" h{i} -- " in lines[i - 1] for i in (1, 2, 3)), lines
    assert "boltring.cluster.agent.spawn start" in lines[0] and "UserKnownHostsFile=" in lines[0]
    assert before == {h.name: sorted((h.workdir / "runs").glob("*")) for h in lab.hosts}


def test_dropped_ssh_session_mid_run_loses_nothing_and_kill_leaves_nothing(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=100000)
    config = load_config(cfg)

    async def scenario():
        c = JobController(config, poll_s=0.1)
        seen = []
        c.add_listener(seen.append)
        await c.launch()
        secret = next((lab.host("h1").workdir / "runs").glob("*/rank0/secret")).read_text()
        assert all(secret not in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))

        def metrics(rank):
            return [e for e in seen if isinstance(e, RankMetrics) and e.rank == rank]

        while len(metrics(1)) < 5:
            await asyncio.sleep(0.05)
        mark = len(seen)
        assert lab.kill_ssh_sessions("h2") >= 1  # drop the controller's connection to h2
        before = len(metrics(1))

        def reconnected():
            return any(
                isinstance(e, NodeState) and e.node == "h2" and e.state == "connected" for e in seen[mark:]
            )

        while not reconnected():
            await asyncio.sleep(0.05)
        while len(metrics(1)) < before + 50:  # training went on, and following resumed
            await asyncio.sleep(0.05)
        states = [e.state for e in seen if isinstance(e, NodeState) and e.node == "h2"]
        await c.close(kill_running=False)  # quit the controller, leave the job running
        return c.job_id, metrics(1), states

    job_id, rank1, states = asyncio.run(scenario())
    assert "lost" in states and states[-1] in ("connected", "closed"), states
    steps = [m.step for m in rank1]
    assert steps == list(range(1, len(steps) + 1))  # no metrics line lost or repeated
    assert lab_processes(lab), "the job should still be running after the controller quit"
    res = run_cli("kill", "--config", str(cfg))
    assert res.returncode == 0 and job_id in res.stdout, res.stdout + res.stderr
    assert lab_processes(lab) == []


def test_run_refuses_to_start_when_a_check_fails(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=10)
    lab.set_link("h2", up=False)  # h2's Thunderbolt link is down
    res = run_cli("--run", "--config", str(cfg))
    assert res.returncode == 2, res.stdout + res.stderr
    # the reason is an error: on stderr, as every command's
    assert "boltring: " in res.stderr and "not starting" in res.stderr and "h2 ring_iface" in res.stderr
    assert "--skip-checks" in res.stderr
    assert lab_processes(lab) == []


def test_status_follows_a_job_left_running_and_hostfile_round_trips(lab, tmp_path, home):
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=100000)

    async def start():
        c = JobController(load_config(cfg), poll_s=0.1)
        job = await c.launch()
        await c.close(kill_running=False)
        return job

    job = asyncio.run(start())
    try:
        res = run_cli("status", "--config", str(cfg), "--json")
        assert res.returncode == 0, res.stderr
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        assert summary["event"] == "summary" and summary["job_id"] == job and summary["status"] == "running"
    finally:
        assert run_cli("kill", "--config", str(cfg)).returncode == 0
    assert lab_processes(lab) == []
    assert "no job is running" in run_cli("status", "--config", str(cfg)).stdout

    hostfile = tmp_path / "hosts.json"
    assert run_cli("hostfile", "--config", str(cfg), "-o", str(hostfile)).returncode == 0
    hosts = json.loads(hostfile.read_text())
    assert [h["ips"] for h in hosts] == [[h.ring_ip] for h in lab.hosts]
    back = load_config(hostfile)  # an MLX hostfile reads back as a boltring config
    assert [n.ring_ip for n in back.nodes] == [h.ring_ip for h in lab.hosts]


def test_user_script_reaches_every_host_by_sftp_and_runs(lab, tmp_path, home):
    from tests.integration.test_local_run import USER_SCRIPT

    script = tmp_path / "userproj" / "train.py"  # its own folder: the lab hosts outlive one test
    script.parent.mkdir()
    script.write_text(USER_SCRIPT)
    cfg = lab_yaml(lab, tmp_path / "lab.yaml", steps=15)
    res = run_cli(
        "--run",
        "--json",
        "--skip-checks",
        "--config",
        str(cfg),
        "--script",
        str(script),
        "--",
        "--steps",
        "15",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 16))
    for h in lab.hosts:  # each host got its own copy, in its synced workspace (test_sync.py)
        copy = h.workdir / "workspace" / "userproj" / "train.py"
        assert copy.read_text() == USER_SCRIPT


def test_kill_from_the_app_says_every_rank_was_stopped_by_you(lab, tmp_path, home):
    """Stopping a 3-host job: each host's kill arrives at its own moment, and a rank whose
    neighbour on another host went first may end of the lost connection before its own stop
    record exists. It still reads as stopped by you, never as a ring failure."""
    from boltring.cluster.jobs.events import RankExited
    from boltring.cluster.states import JobState, StoppedBy

    config = load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=100000))

    async def scenario():
        c, seen = await launched_and_stepping(config, poll_s=0.1)
        # h3's stop arrives 0.5 s after the others' (its SSH session is held still meanwhile):
        # its rank loses its neighbours first
        held = lab.ssh_session_pids("h3")
        for pid in held:
            os.kill(pid, signal.SIGSTOP)
        asyncio.get_running_loop().call_later(0.5, lambda: [os.kill(pid, signal.SIGCONT) for pid in held])
        try:
            await c.kill(StoppedBy.APP)
        finally:
            for pid in held:
                os.kill(pid, signal.SIGCONT)
        summary = await c.wait()
        await c.close()
        return summary, [e for e in seen if isinstance(e, RankExited)]

    summary, exits = asyncio.run(scenario())
    assert summary.status == JobState.KILLED and summary.stopped_by == StoppedBy.APP, summary
    assert sorted(e.rank for e in exits) == [0, 1, 2], exits
    assert all(e.reason == f"was stopped by you ({StoppedBy.APP})" for e in exits), exits
    assert lab_processes(lab) == []


def test_kill_from_another_terminal_read_out_of_order_is_never_a_failure(lab, tmp_path, home):
    """`boltring kill` from another terminal stops each host's ranks at its own moment, and the
    controller watching the job reads the hosts one by one. Here it reads h3's rank, which
    lost its neighbours when you stopped theirs, before it can read their stop records (its
    sessions to h1 and h2 are held still meanwhile, and h3's own stop has not come). It must
    still say every rank was stopped by you, and never blame one."""
    from boltring.cluster.jobs.events import LogLine, RankExited
    from boltring.cluster.jobs.plan import spawn_many_argv
    from boltring.cluster.states import JobState, StoppedBy

    config = load_config(lab_yaml(lab, tmp_path / "lab.yaml", steps=100000))

    def on_host(host: str, remote: str) -> Path:
        return Path(remote.replace("~", str(lab.host(host).home), 1))

    def stop_as_boltring_kill(c: JobController, host: str) -> None:
        """What `boltring kill` runs on one node: the agent's kill, who-stopped-it recorded."""
        mine = [rs for rs in c._ranks.values() if rs.node.name == host]
        dirs = [str(on_host(host, rs.plan.run_dir)) for rs in mine]
        argv = [*spawn_many_argv(mine[0].node, "kill", dirs), "--by", str(StoppedBy.USER_KILL)]
        assert lab.exec(host, argv, timeout=60).returncode == 0

    def hold(pids: list[int], sig: int) -> None:
        for pid in pids:
            os.kill(pid, sig)

    async def scenario():
        # Long polls: the watcher is between reads nearly all the time, so a read of h3 that
        # was already under way when its sessions were held (it would find the rank alive and
        # wait for h1 and h2 with the rest of its round) is rare; such a try is run again.
        c, seen = await launched_and_stepping(config, poll_s=1.0)
        h3_rank = next(rs for rs in c._ranks.values() if rs.node.name == "h3")
        held = {h: lab.ssh_session_pids(h) for h in ("h1", "h2", "h3")}  # the watcher's sessions
        hold([p for pids in held.values() for p in pids], signal.SIGSTOP)
        try:
            for host in ("h1", "h2"):
                await asyncio.to_thread(stop_as_boltring_kill, c, host)
            while not (on_host("h3", h3_rank.plan.run_dir) / "exit.json").exists():
                await asyncio.sleep(0.05)  # h3's rank ends of its lost neighbours
            hold(held["h3"], signal.SIGCONT)  # the watcher reads h3 first
            deadline = asyncio.get_running_loop().time() + 5
            while not h3_rank.exited and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            read_first = h3_rank.exited
            await asyncio.sleep(0.3)
        finally:
            hold([p for pids in held.values() for p in pids], signal.SIGCONT)
        await asyncio.to_thread(stop_as_boltring_kill, c, "h3")  # its stop comes last: nothing left
        summary = await asyncio.wait_for(c.wait(), 60)
        await c.close()
        return read_first, summary, seen

    for _ in range(3):
        read_first, summary, seen = asyncio.run(scenario())
        if read_first:
            break
    assert read_first, "the watcher never read h3's rank before the others in 3 tries"
    exits = [e for e in seen if isinstance(e, RankExited)]
    errors = [e.text for e in seen if isinstance(e, LogLine) and e.level == "error"]
    said = [e.text for e in seen if isinstance(e, LogLine) and "from another terminal" in e.text]
    assert said == ["stopped by you (boltring kill) from another terminal: the ranks are ending"], said
    assert summary.status == JobState.KILLED and summary.stopped_by == StoppedBy.USER_KILL, summary
    assert sorted(e.rank for e in exits) == [0, 1, 2], exits
    assert all(e.reason == "was stopped by you (boltring kill)" for e in exits), exits
    assert all(e.stopped_by == StoppedBy.USER_KILL for e in exits), exits
    assert errors == [], errors
    assert lab_processes(lab) == []
