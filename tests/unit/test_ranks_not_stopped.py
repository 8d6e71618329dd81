"""A stop that cannot reach a node is a typed event, `RanksNotStopped`, not a log line the views
split ("could not stop the ranks on b: …"): README's Architecture says views match on event
classes. The controller, `--run` (its stop's wait, and its plain and --json output),
`boltring kill` and the app's rows all take the node, its ranks and the cause from the event.

Nodes are played by a transport in this file: a, c stop their ranks as `spawn kill` answers;
b answers nothing, as a node whose link is down (the lab version, with real sshd hosts:
tests/integration/test_ranks_not_stopped_lab.py)."""

from __future__ import annotations

import asyncio
import io
import json
import time

from rich.console import Console

from boltring.cluster.jobs import record
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import Event, LogLine, RankExited, RanksNotStopped
from boltring.cluster.nodes.transport import CommandResult
from boltring.cluster.states import JobState, StoppedBy
from boltring.tui.headless import HeadlessView
from boltring.tui.node_state import RankStatus
from boltring.tui.stop_ranks import stop_within
from boltring.tui.view_state import ClusterView
from tests.unit.test_unreached_nodes import JOB, NODES, FakeNode, _config, _metrics, _run_dir

CAUSE = "no SSH answer from b:22 within 3 s"


class StoppingNode(FakeNode):
    """FakeNode whose `spawn kill` stops the ranks, answering with their exit records."""

    async def run(self, argv, *, input=None, timeout=30.0) -> CommandResult:
        if "kill" not in argv:
            return await super().run(argv, input=input, timeout=timeout)
        await self.connect()
        by = argv[argv.index("--by") + 1]
        dirs = argv[argv.index("kill") + 1 : argv.index("--grace")]
        ended = {
            "returncode": None,
            "signal": "SIGTERM",
            "killed": True,
            "stopped_by": by,
            "ended": time.time(),
        }
        return CommandResult(0, json.dumps({"ranks": [{"alive": False, "exit": ended} for _ in dirs]}), "")


def _running_job(home, down: set[str]) -> JobController:
    """A job running on a, b and c (rank r on NODES[r]) and a controller for its config."""
    config = _config()
    started = time.time() - 100
    ranks = [{"rank": r, "node": n, "run_dir": _run_dir(r)} for r, n in enumerate(NODES)]
    rec = record.new_record(config, JOB, ranks, resume=False)
    rec.update(state=JobState.RUNNING, started=started)
    record.write(rec)
    files = {f"{_run_dir(r)}/metrics.jsonl": _metrics(50, started) for r in range(len(NODES))}
    return JobController(
        config,
        poll_s=0.05,
        transport_factory=lambda node, cfg, emit: StoppingNode(node, emit, files, down, set()),
    )


def _stop(c: JobController, *listeners) -> str | None:
    """Attach, then stop the job as Ctrl-C on `--run` does (stop_within): the clause it gives
    about the ranks that may still run."""

    async def scenario() -> str | None:
        assert await c.attach()
        for fn in listeners:
            c.add_listener(fn)
        try:
            return await asyncio.wait_for(stop_within(c, StoppedBy.CTRL_C, 10), 20)
        finally:
            await c.close(kill_running=False)

    return asyncio.run(scenario())


def test_the_controller_says_which_node_it_could_not_stop_in_a_typed_event(home):
    seen: list[Event] = []
    clause = _stop(_running_job(home, down={"b"}), seen.append)
    not_stopped = [e for e in seen if isinstance(e, RanksNotStopped)]
    assert [(e.node, e.ranks, e.cause) for e in not_stopped] == [("b", [1], CAUSE)], not_stopped
    assert not any(isinstance(e, LogLine) and "could not stop" in e.text for e in seen), seen
    # --run's stop stops waiting at once (only b's rank is left, and nothing reaches it), and
    # names it with the event's cause
    assert clause is not None and f"rank 1 on b ({CAUSE})" in clause, clause
    assert "`boltring kill` stops it once b answers" in clause, clause


def test_run_json_prints_the_event_once_and_no_error_line_repeating_it(home, capsys):
    c = _running_job(home, down={"b"})
    _stop(c, HeadlessView(c, json_out=True, console=Console(file=io.StringIO())))
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    said = [e for e in events if e["event"] == "ranks_not_stopped"]
    assert [(e["node"], e["ranks"], e["cause"]) for e in said] == [("b", [1], CAUSE)], events
    assert not [e for e in events if "could not stop" in e.get("text", "")], events


def test_run_plain_output_says_it_in_one_controller_line(home):
    out = io.StringIO()
    c = _running_job(home, down={"b"})
    _stop(c, HeadlessView(c, json_out=False, console=Console(file=out, width=200)))
    lines = [line for line in out.getvalue().splitlines() if "could not stop" in line]
    assert lines == [f"controller: could not stop the ranks on b: {CAUSE}"], out.getvalue()


def test_the_app_rows_say_the_ranks_may_still_be_running_until_their_end_is_read():
    view = ClusterView(_config())
    for r, node in enumerate(NODES):
        view._rank(r, node).status = RankStatus.RUNNING
    view.kill_requested = True
    view.apply(RanksNotStopped(node="b", ranks=[1], cause=CAUSE, t=5.0))
    row = view.ranks[1]
    assert (row.status, row.reason) == (RankStatus.LOST, f"not stopped, may still be running ({CAUSE})")
    assert view.ranks[0].status == RankStatus.RUNNING and view.ranks[2].status == RankStatus.RUNNING
    said = [e for e in view.nodes["b"].log if "could not stop" in e.text]
    assert [(e.text, e.level, e.source) for e in said] == [
        (f"could not stop the ranks on b: {CAUSE}", "error", "controller")
    ]
    # once b answers and its rank's end is read, the row says it was stopped
    view.apply(RankExited(rank=1, node="b", returncode=None, stopped_by=StoppedBy.CTRL_C, t=9.0))
    assert view.ranks[1].status == RankStatus.KILLED and view.ranks[1].reason is None


def test_a_rank_whose_end_was_read_is_never_said_to_be_running():
    view = ClusterView(_config())
    view._rank(1, "b").status = RankStatus.DONE
    view.apply(RanksNotStopped(node="b", ranks=[1], cause=CAUSE))
    assert view.ranks[1].status == RankStatus.DONE
