"""Ring links on the SSH test hosts (tests/lab: real sshd in network namespaces, veths on a
bridge): a cut ring link is blamed on the node whose link is down, using that node's link facts,
within ring.timeout + 5 s; a link down and back up 10 s later is survived with --restarts 1.

Link faults: `ip link set tb0 down` in the host's namespace (the lab's `set_link`)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import JobRestarted, JobStateChanged, RankMetrics
from boltring.cluster.states import JobState

from .helpers import loss_curve, run_job

pytestmark = pytest.mark.netns
RING_TIMEOUT_S = 6.0


def lab_yaml(lab, path: Path, *, job: str, port: int) -> Path:
    nodes = "\n".join(
        f"  - {{name: {h.name}, ssh: {h.name}, ring_ip: {h.ring_ip}, ring_iface: tb0}}" for h in lab.hosts
    )
    path.write_text(f"""name: lablinks
ssh:
  config_file: {lab.ssh_config}
  known_hosts: {lab.known_hosts}
  connect_timeout: 5
  keepalive_interval: 2
  keepalive_count_max: 3
ring: {{port: {port}, timeout: {RING_TIMEOUT_S}, connect_timeout: 20}}
defaults: {{python: {sys.executable}}}
nodes:
{nodes}
job: {{example: mlp, seed: 3, global_batch: 240, {job}}}
""")
    return path


async def _until(seen, pred, timeout=120):
    t0 = time.monotonic()
    while not pred(seen):
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def test_cut_ring_link_names_the_node_and_its_link(lab, tmp_path, home):
    cfg = load_config(lab_yaml(lab, tmp_path / "lab.yaml", job="steps: 1000000", port=52720))

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        await c.launch()
        await _until(seen, lambda s: sum(isinstance(e, RankMetrics) and e.rank == 1 for e in s) >= 10)
        lab.set_link("h2", up=False)
        t0 = time.time()
        summary = await asyncio.wait_for(c.wait(), RING_TIMEOUT_S + 90)
        await c.close()
        failed = next(e for e in seen if isinstance(e, JobStateChanged) and e.state == JobState.FAILED)
        from boltring.cluster.jobs.events import CheckResult, RankExited, RankStalled

        for e in seen:
            if isinstance(e, RankStalled) or (isinstance(e, CheckResult) and e.status == "fail"):
                print(f"{e.t - t0:.1f} s: {e}"[:200])
            if isinstance(e, RankExited):
                print(f"rank {e.rank} exit seen at {e.t - t0:.1f} s: {e.reason}")
        return summary, failed.t - t0

    try:
        summary, took = asyncio.run(scenario())
    finally:
        lab.set_link("h2", up=True)
    reason = summary.reason or ""
    assert summary.status == JobState.FAILED
    assert reason.startswith("ring link of h2 is down: h2 ring_iface: tb0 is down"), reason
    assert "h1" not in reason.split(";")[0] and "h3" not in reason.split(";")[0], reason
    assert took <= RING_TIMEOUT_S + 5, f"detected after {took:.1f} s"
    print(f"\nMEASURED cut ring link detection {took:.1f} s (ring.timeout {RING_TIMEOUT_S:g} s): {reason}")


def test_link_down_and_up_10_s_later_is_survived_with_one_restart(lab, tmp_path, home):
    job = "steps: 400, checkpoint_every: 20, restarts: 1, restart_delay: 1"
    cfg = load_config(lab_yaml(lab, tmp_path / "lab.yaml", job=job, port=52740))

    async def scenario():
        c = JobController(cfg, poll_s=0.1)
        seen: list = []
        c.add_listener(seen.append)
        await c.launch()
        await _until(seen, lambda s: sum(isinstance(e, RankMetrics) and e.rank == 1 for e in s) >= 30)
        lab.set_link("h2", up=False)
        t0 = time.time()
        await asyncio.sleep(10)
        lab.set_link("h2", up=True)
        summary = await asyncio.wait_for(c.wait(), 400)
        await c.close()
        for e in seen:
            if isinstance(e, (JobRestarted, JobStateChanged)) and e.t >= t0:
                print(f"{e.t - t0:5.1f} s after the link went down: {e}"[:220])
        return summary, seen

    try:
        summary, seen = asyncio.run(scenario())
    finally:
        lab.set_link("h2", up=True)
    restarts = [e for e in seen if isinstance(e, JobRestarted)]
    assert summary.status == JobState.FINISHED, summary.reason
    assert len(restarts) == 1 and "h2" in restarts[0].cause, restarts
    assert summary.steps == 400 and len(summary.restarts) == 1


def _nft(ns: str, *script: str) -> None:
    import subprocess

    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input="\n".join(script), text=True, check=True
    )


def test_two_percent_loss_on_a_ring_link_changes_nothing_and_blames_nobody(lab, tmp_path, home):
    """Loss is emulated with nft (this kernel has no netem): 2% of the packets in and out of
    h2's tb0 are dropped by `numgen random mod 100 < 2`."""
    job = "steps: 60"
    clean = load_config(lab_yaml(lab, tmp_path / "clean.yaml", job=job, port=52760))
    lossy = load_config(lab_yaml(lab, tmp_path / "lossy.yaml", job=job, port=52780))

    base, base_seen = asyncio.run(run_job(clean))
    ns = lab.host("h2").ns
    _nft(
        ns,
        "table inet boltring_loss {",
        '  chain in { type filter hook input priority 0; iifname "tb0" numgen random mod 100 < 2 counter drop; }',
        '  chain out { type filter hook output priority 0; oifname "tb0" numgen random mod 100 < 2 counter drop; }',
        "}",
    )
    try:
        summary, seen = asyncio.run(run_job(lossy))
        import re
        import subprocess

        listing = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "boltring_loss"],
            capture_output=True,
            text=True,
        ).stdout
        dropped = sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))
    finally:
        _nft(ns, "delete table inet boltring_loss")
    assert dropped > 0, listing  # packets really were lost
    print(f"\nMEASURED nft dropped {dropped} packets on h2's tb0; the job finished with the same loss")
    assert base.status == summary.status == JobState.FINISHED, summary.reason
    assert len(loss_curve(base_seen)) >= 6  # rank 0 and the others, every logged step
    assert loss_curve(seen) == loss_curve(base_seen)  # the same curve, bit for bit
    from boltring.cluster.jobs.events import RankStalled

    assert not [e for e in seen if isinstance(e, RankStalled)]  # retransmits are not a stall


def test_a_slow_delaying_link_is_not_a_stall(lab, tmp_path, home):
    """Delay without netem: tc tbf on h2's tb0 (and the bridge side) at 5 Mbit/s with a 50 ms
    queue; the ring's bulk transfers wait in that queue, so every packet of a step is delayed.
    The job slows down, and that is not a stall: its usual step time is the slow one."""
    job = "steps: 40"
    clean = load_config(lab_yaml(lab, tmp_path / "clean.yaml", job=job, port=52800))
    slow = load_config(lab_yaml(lab, tmp_path / "slow.yaml", job=job, port=52820))

    base, base_seen = asyncio.run(run_job(clean))
    lab.shape("h2", 5)
    try:
        summary, seen = asyncio.run(run_job(slow))
    finally:
        lab.shape("h2", None)
    from boltring.cluster.jobs.events import RankStalled

    assert base.status == summary.status == JobState.FINISHED, summary.reason
    assert loss_curve(seen) == loss_curve(base_seen)  # a slow link changes no bit either
    assert not [e for e in seen if isinstance(e, RankStalled)]
    fast = base.ranks[0]["steps_per_s"] or 0
    slowed = summary.ranks[0]["steps_per_s"] or 0
    print(f"\nMEASURED tbf 5 Mbit/s on h2's ring link: {fast:.1f} → {slowed:.1f} steps/s, no stall")
    assert slowed < fast
