"""--dry-run says what ring.directions comes to at launch, never only "auto" when the launch
passes 1 or 2 (the controller decides auto from the routes its checks see, and the ranks decide
what is left with netio/ring.py ring_directions).

Each case is checked against the launch itself: the plan the controller makes after checks (or
without them, --skip-checks), and what ring_directions makes of the environment it passes."""

from __future__ import annotations

import json
import sys

import pytest

from boltring.cluster.config.load import load_config_text
from boltring.cluster.config.schema import Config, Node, RingOptions
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.nodes.checks.ring import ring_neighbours
from boltring.netio.jobenv import DIRECTIONS, RING, parse_directions
from boltring.netio.ring import ring_directions
from boltring.tui.dry_run import print_plan

PY = sys.executable
AUTO_AT_LAUNCH = (
    "auto (decided at launch from the routes the checks see: 1 on a shared network, 2 on separate cables"
)


def config(text: str) -> Config:
    return load_config_text("name: t\n" + text + "job: {example: mlp, steps: 2, global_batch: 12}\n")


def nodes(n: int, ranks: int = 1, host=lambda i: f"198.18.0.{i}") -> str:
    lines = "".join(
        f"  - {{name: h{i}, ssh: h{i}, ring_ip: {host(i)}, ranks: {ranks}}}\n" for i in range(1, n + 1)
    )
    return "nodes:\n" + lines


def routes(cfg: Config, shared: bool) -> dict[str, dict]:
    """nodeprobe facts as the checks see them: each node's route to each ring neighbour over one
    bridge (shared) or a cable of its own (tb0, tb1)."""
    out = {}
    for node in cfg.nodes:
        nbs = ring_neighbours(cfg)[node.name]
        out[node.name] = {
            "neighbours": [
                {
                    "name": nb.name,
                    "ring_ip": nb.ring_ip,
                    "route": {"iface": "bridge0" if shared else f"tb{k}"},
                }
                for k, nb in enumerate(nbs)
            ]
        }
    return out


def launched_ways(controller: JobController) -> set[int]:
    """The ways every rank of the launch takes round the ring: what ring_directions gives for
    the environment the launch's plan passes (the one `launch` runs)."""
    out = set()
    for p in controller.plan(job_id="job-1"):
        addrs = json.loads(p.env[RING])
        out.add(ring_directions(parse_directions(p.env[DIRECTIONS]), len(addrs), addrs))
    return out


def dry_run(controller: JobController, capsys) -> tuple[str, dict]:
    capsys.readouterr()
    assert print_plan(controller) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("# ring.directions: ")]
    assert print_plan(controller, json_out=True) == 0
    head = json.loads(capsys.readouterr().out.splitlines()[0])
    assert head["event"] == "plan"
    assert line == f"# ring.directions: {head['directions_how']}"  # text and --json say the same
    return line.removeprefix("# ring.directions: "), head


def every_launch(cfg: Config) -> set[int]:
    """The ways of every launch this config can have: checks that saw a shared network, separate
    cables, or nothing they could decide from, and no checks at all (--skip-checks)."""
    seen = set()
    for facts in (routes(cfg, shared=True), routes(cfg, shared=False), {}, None):
        c = JobController(cfg)
        if facts is not None:
            c._auto_directions(facts)  # what run_checks does with the facts it gathered
        seen |= launched_ways(c)
    return seen


@pytest.mark.parametrize(
    "text, ways, said",
    [
        # the default: two local ranks; the launch passes "auto" and the ranks take 1
        ("nodes: [{name: a, local: true, ring_ip: 127.0.0.1, ranks: 2}]\n", 1, "1 (auto: 2 ranks always"),
        (nodes(2), 1, "1 (auto: 2 ranks always go one way round the ring)"),
        (nodes(2) + "ring: {directions: 2}\n", 1, "1 (ring.directions 2 applies from 3 ranks"),
        (
            "nodes: [{name: a, local: true, ring_ip: 127.0.0.1, ranks: 3}]\n",
            1,
            "1 (auto: every rank is on one host)",
        ),
        (nodes(2, ranks=2), 2, "2 (auto: ranks on 2 hosts; the checks decide it only for 3 nodes"),
        (nodes(3) + "ring: {directions: 2}\n", 2, "2 (set in the config)"),
        (nodes(3) + "ring: {directions: 1}\n", 1, "1 (set in the config)"),
    ],
)
def test_a_number_shown_is_what_every_launch_takes(text, ways, said, capsys):
    cfg = config(text)
    how, head = dry_run(JobController(cfg), capsys)
    assert how.startswith(said), how
    assert head["directions"] == ways
    assert every_launch(cfg) == {ways}  # whatever the checks see, or without them


def test_auto_on_three_nodes_says_it_is_decided_at_launch_and_how(capsys):
    cfg = config(nodes(3))
    how, head = dry_run(JobController(cfg), capsys)
    assert how.startswith(AUTO_AT_LAUNCH), how
    assert "with --skip-checks, or a route the checks did not see, it stays auto and the ranks take 2" in how
    assert head["directions"] is None
    # and that is what the launch does: each way, as the line says
    shared, cables, unseen = (JobController(cfg) for _ in range(3))
    shared._auto_directions(routes(cfg, shared=True))
    cables._auto_directions(routes(cfg, shared=False))
    unseen._auto_directions({})
    assert launched_ways(shared) == {1} and launched_ways(cables) == {2} and launched_ways(unseen) == {2}
    assert launched_ways(JobController(cfg)) == {2}  # --skip-checks


@pytest.mark.parametrize("shared, ways", [(True, 1), (False, 2)])
def test_after_checks_the_dry_run_shows_their_decision(shared, ways, capsys):
    cfg = config(nodes(3))
    controller = JobController(cfg)
    controller._auto_directions(routes(cfg, shared=shared))
    how, head = dry_run(controller, capsys)
    assert how == f"{ways} (auto, decided from the routes the last checks saw)"
    assert head["directions"] == ways and launched_ways(controller) == {ways}


def test_an_mlx_backend_does_not_use_it(capsys):
    how, head = dry_run(JobController(config(nodes(3) + "ring: {backend: mlx-ring}\n")), capsys)
    assert how == "not used (the mlx-ring backend runs the collectives)" and head["directions"] is None


async def test_real_checks_on_one_shared_network_then_the_dry_run_says_1(home, capsys):
    """Three local nodes on loopback: one network. Before checks the dry run says how it will be
    decided; the real checks decide 1, and the dry run then shows 1 in its line and in every
    rank's environment, as the launch passes it."""
    cfg = Config(
        name="t",
        nodes=tuple(
            Node(name=f"n{i}", ring_ip=f"127.0.0.{i}", local=True, ring_iface="lo", python=PY)
            for i in (1, 2, 3)
        ),
        ring=RingOptions(port=28650),
    )
    controller = JobController(cfg)
    before, _ = dry_run(controller, capsys)
    assert before.startswith(AUTO_AT_LAUNCH)
    await controller.run_checks(bandwidth=False)
    after, head = dry_run(controller, capsys)
    assert after == "1 (auto, decided from the routes the last checks saw)" and head["directions"] == 1
    assert {p.env[DIRECTIONS] for p in controller.plan()} == {"1"}
    assert launched_ways(controller) == {1}
