"""--dry-run never shows a rank order the launch would not use. With ring.order: cabling the
checks before a launch reorder the nodes (so renumber the ranks) to follow the Thunderbolt
cables they find, and the dry run probes no node: it says the order is decided at launch, or,
after checks in the same controller, shows the order they chose, with every rank's node,
command and ring addresses as the launch sends them.

The cables are those of the macOS samples (tests/samples/macos): a line mini1-mini3-mini2, so
the config's order mini1, mini2, mini3 becomes mini1, mini3, mini2 at launch. The launch is a
real one (JobController.launch) whose transports are the sample Macs of test_cabling.py,
recording each `spawn start` and its stdin (the ranks' specs) instead of starting anything."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys

import pytest

from boltring.cluster.config.load import load_config_text
from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.nodes.checks.cabling import planned_order
from boltring.cluster.nodes.transport import CommandResult
from boltring.netio.jobenv import RING
from boltring.tui.dry_run import print_plan
from tests.unit.test_cabling import LINE, SampleMac, all_facts

CONFIG_ORDER = ["mini1", "mini2", "mini3"]
CABLE_ORDER = ["mini1", "mini3", "mini2"]  # the LINE samples: mini1-mini3, mini3-mini2
RING_IP = {"mini1": "198.18.0.1", "mini2": "198.18.0.2", "mini3": "198.18.0.3"}
DECIDED_AT_LAUNCH = "decided at launch (ring.order: cabling): the checks before it put the nodes in the order"


def config(order: str = "cabling", nodes: list[str] = CONFIG_ORDER) -> Config:
    listed = "".join(f"  - {{name: {n}, ssh: {n}, ring_ip: {RING_IP[n]}}}\n" for n in nodes)
    return load_config_text(
        f"name: minis\nring: {{order: {order}}}\nnodes:\n{listed}job: {{example: mlp, steps: 2, global_batch: 12}}\n"
    )


class RecordingMac(SampleMac):
    """A sample Mac that records what a launch sends to start its ranks and starts nothing
    (the launch then fails, and stops what it 'started': nothing)."""

    def __init__(self, node, facts, started: dict[str, list[dict]], on_state=None):
        super().__init__(node, facts, on_state)
        self.started = started

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        if "boltring.cluster.agent.spawn" in argv and "start" in argv:
            spec = json.loads(input)
            ranks = spec.get("ranks", [spec])
            for one in ranks:  # the command that started it, as the transport runs it
                one["command"] = self.command_line(argv)
            self.started[self.node.name] = ranks
            return CommandResult(1, "", "recorded, not started")
        return await super().run(argv, input=input, timeout=timeout)


class Unreachable(SampleMac):
    async def connect(self) -> None:
        raise AssertionError(f"the dry run connected to {self.node.name}")


def controller_for(cfg: Config, monkeypatch, started: dict[str, list[dict]] | None = None) -> JobController:
    facts = all_facts(monkeypatch, cfg, LINE)
    if started is None:
        return JobController(
            cfg, transport_factory=lambda node, c, emit: Unreachable(node, facts[node.name], emit)
        )
    return JobController(
        cfg, transport_factory=lambda node, c, emit: RecordingMac(node, facts[node.name], started, emit)
    )


def dry_run(controller: JobController, capsys) -> tuple[str, list[str], dict, list[dict]]:
    """(the "ring order: " line's words, the rank headings, the plan event, the rank_plan events)."""
    capsys.readouterr()
    assert print_plan(controller) == 0
    text = capsys.readouterr().out.splitlines()
    (order_line,) = [ln for ln in text if ln.startswith("# ring order: ")]
    headings = [ln for ln in text if ln.startswith("# rank ")]
    assert print_plan(controller, json_out=True) == 0
    head, *ranks = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert head["event"] == "plan" and {r["event"] for r in ranks} == {"rank_plan"}
    assert order_line == f"# ring order: {head['ring_order_how']}"  # text and --json say the same
    return order_line.removeprefix("# ring order: "), headings, head, ranks


def launched(controller: JobController, started: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """Launch for real, with checks first as `--run` does (or none: `skip_checks`), and return
    what was sent to start each rank: [(node, spec)] by rank."""

    async def go() -> None:
        with pytest.raises(ControllerError, match="recorded, not started"):
            await controller.launch()
        await controller.close()

    asyncio.run(go())
    sent = [(node, spec) for node, specs in started.items() for spec in specs]
    return sorted(sent, key=lambda ns: int(ns[1]["env"]["BOLTRING_RANK"]))


def same_job(spec: dict, job_id: str) -> dict:
    """A rank's spec with the dry run's placeholder job id, to compare with the dry run's."""
    return json.loads(json.dumps(spec).replace(job_id, "<job-id>"))


def assert_ranks_are_the_launchs(ranks: list[dict], sent: list[tuple[str, dict]], job_id: str) -> None:
    """Every rank of the dry run is the launch's: same node, program, environment (ring
    addresses, rank number), and the dry run's command and by-hand line start it there."""
    assert [r["node"] for r in ranks] == [node for node, _ in sent]
    for r, (node, spec) in zip(ranks, sent, strict=True):
        spec = same_job(spec, job_id)
        assert r["argv"] == spec["argv"] and r["env"] == spec["env"], (r["rank"], node)
        assert r["command"] == spec["command"], (r["rank"], node)
        by_hand = dict(w.split("=", 1) for w in shlex.split(r["by_hand"]) if w.startswith("BOLTRING_"))
        assert by_hand["BOLTRING_RANK"] == str(r["rank"]) and by_hand[RING] == spec["env"][RING]
        ring = json.loads(r["env"][RING])
        assert ring[r["rank"]].split(":")[0] == RING_IP[node]  # its own address, in the ring's place


def test_cabling_without_checks_says_the_order_is_decided_at_launch(monkeypatch, capsys, home):
    """What `boltring --dry-run` prints: no checks ran, and it connects to no node (so whether
    they answer changes nothing). It says the order is decided at launch; the ranks it lists,
    in the config's order, are marked as such, and are exactly what a launch with
    --skip-checks starts. A launch after checks starts them in the cables' order."""
    how, headings, head, ranks = dry_run(controller_for(config(), monkeypatch), capsys)
    assert how.startswith(DECIDED_AT_LAUNCH), how
    assert "the ranks below are in the config's order (mini1, mini2, mini3)" in how
    assert "keeps with --skip-checks" in how and "`boltring check` shows the cables' order" in how
    assert head["ring_order"] is None
    assert all(
        h.endswith(
            "if the config's order is kept (ring order: decided at launch); run dir " + h.split("run dir ")[1]
        )
        for h in headings
    )
    assert len(headings) == 3

    started: dict[str, list[dict]] = {}
    skip_checks = controller_for(config(), monkeypatch, started)
    sent = launched(skip_checks, started)
    assert [node for node, _ in sent] == CONFIG_ORDER
    assert_ranks_are_the_launchs(ranks, sent, skip_checks.job_id or "")

    started = {}
    checked = controller_for(config(), monkeypatch, started)
    asyncio.run(checked.run_checks(bandwidth=False))
    assert [node for node, _ in launched(checked, started)] == CABLE_ORDER  # what the line warns of


def test_after_checks_the_dry_run_shows_the_cable_order_the_launch_starts(monkeypatch, capsys, home):
    """Checks ran in this controller (as in the app): the dry run shows the order they chose,
    which is not the config's, and every rank as the launch then starts it."""
    started: dict[str, list[dict]] = {}
    controller = controller_for(config(), monkeypatch, started)
    asyncio.run(controller.run_checks(bandwidth=False))
    how, headings, head, ranks = dry_run(controller, capsys)
    assert how == "mini1, mini3, mini2 (ring.order: cabling: the Thunderbolt cables the last checks found)"
    assert head["ring_order"] == CABLE_ORDER
    assert [h.split(" (")[0] for h in headings] == [
        "# rank 0 on mini1",
        "# rank 1 on mini3",
        "# rank 2 on mini2",
    ]
    assert not any("decided at launch" in h for h in headings)
    assert json.loads(ranks[1]["env"][RING])[1] == "198.18.0.3:25250"  # rank 1 is mini3's address

    sent = launched(controller, started)
    assert [node for node, _ in sent] == CABLE_ORDER
    assert_ranks_are_the_launchs(ranks, sent, controller.job_id or "")


def test_the_order_is_said_when_the_dry_run_knows_it(capsys, monkeypatch):
    """ring.order: config, one node, or a local node on a machine that is not a Mac (its probe
    reports no Thunderbolt ports, so the launch keeps the config's order): the order shown is
    the one the launch takes, and said as such."""
    how, headings, head, _ = dry_run(controller_for(config("config"), monkeypatch), capsys)
    assert how == "mini1, mini2, mini3 (the config's order)" and head["ring_order"] == CONFIG_ORDER
    assert not any("decided at launch" in h for h in headings)
    one = config(nodes=["mini2"])
    assert planned_order(one, None) == (["mini2"], "mini2 (one node: no cables to follow)")
    local = load_config_text(
        "name: t\nring: {order: cabling}\nnodes:\n  - {name: a, local: true, ring_ip: 198.18.0.1}\n"
        "  - {name: b, ssh: b, ring_ip: 198.18.0.2}\njob: {example: mlp, global_batch: 4}\n"
    )
    order, words = planned_order(local, None, here="linux")
    assert order == ["a", "b"] and "a is this machine, which is not a Mac" in words
    assert planned_order(local, None, here="darwin")[0] is None


def test_with_skip_checks_the_dry_run_shows_the_config_order_the_launch_keeps(monkeypatch, capsys):
    """`--dry-run --skip-checks`: no checks will reorder the nodes, so the config's order is the
    launch's, said as such (it said "decided at launch")."""
    ctl = controller_for(config(), monkeypatch)
    assert print_plan(ctl, json_out=True, skip_checks=True) == 0
    head = next(e for e in map(json.loads, capsys.readouterr().out.splitlines()) if e["event"] == "plan")
    assert head["ring_order"] == CONFIG_ORDER
    assert "--skip-checks: no checks read the cables" in head["ring_order_how"]


@pytest.mark.skipif(
    sys.platform == "darwin", reason="this machine's probe reports Thunderbolt ports on a Mac"
)
async def test_real_checks_on_nodes_without_thunderbolt_keep_the_config_order(home, capsys):
    """Three local nodes on loopback, checked for real: their probe reports no Thunderbolt
    ports, so the launch keeps the config's order, and the dry run says why."""
    from boltring.cluster.config.schema import Node, RingOptions

    nodes = tuple(
        Node(name=f"n{i}", ring_ip=f"127.0.0.{i}", local=True, ring_iface="lo", python=sys.executable)
        for i in (2, 1, 3)
    )
    controller = JobController(Config(name="t", nodes=nodes, ring=RingOptions(port=28670, order="cabling")))
    await controller.run_checks(bandwidth=False)
    assert [n.name for n in controller.config.nodes] == ["n2", "n1", "n3"]  # the launch's order
    how, _, head, ranks = dry_run(controller, capsys)
    assert (
        how
        == "n2, n1, n3 (ring.order: cabling, but the last checks got no Thunderbolt ports from n2, n1, n3: the config's order is kept)"
    )
    assert head["ring_order"] == ["n2", "n1", "n3"] and [r["node"] for r in ranks] == ["n2", "n1", "n3"]
