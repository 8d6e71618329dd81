"""`boltring --dry-run`: the launch plan, printed, and nothing started.

As text: a comment block per rank around the command its transport runs, ready to paste. With
`--json`: the same facts as events, one JSON object per line on stdout in the wire form of
`--run --json` (`Event.to_dict`, `"event": kind`): one `plan` line, then one `rank_plan` per rank.
A plan the launch would refuse (plan_job's PlanError) prints no plan, only the reason.

ring.directions `auto` is decided at launch (from the routes the checks see, or by the ranks),
so the environment says "auto" where the launch may pass 1 or 2: the plan says in a line (and
`directions`, `directions_how` in the `plan` event) what it comes to, or how it will be decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import Event
from boltring.cluster.jobs.plan import PlanError, PlannedRank
from boltring.cluster.nodes.checks.ring import planned_directions

from .console import say_error


@dataclass
class PlanShown(Event):
    """The job a launch would start; nothing is started."""

    kind: ClassVar[str] = "plan"
    config: str | None
    world_size: int
    job: str  # "example mlp" or "script train.py"
    steps: int
    backend: str
    resume: bool = False
    # ring.directions as the launch will have it: 1 or 2, or None while the launch still has to
    # decide it from the routes its checks see (or when the backend does not use it); and in
    # words, as the text plan prints it after "ring.directions: "
    directions: int | None = None
    directions_how: str = ""


@dataclass
class RankPlanned(Event):
    """One rank of the plan: where it runs and exactly what starts it (the secret is not here:
    it goes on the spawn command's stdin)."""

    kind: ClassVar[str] = "rank_plan"
    rank: int
    node: str
    where: str  # "local" or the ssh target
    run_dir: str
    command: str  # the line the transport runs, as a shell would take it
    argv: list[str]  # the rank's own program
    env: dict[str, str]
    files: dict[str, str]  # written in the run dir; the variable named by the key holds its path


def plan_events(controller: JobController, resume: bool = False) -> list[Event]:
    """The plan as --json events; PlanError when the launch would refuse it."""
    plans = controller.plan(resume=resume)
    config = controller.config
    ways, how = _directions(controller)
    head = PlanShown(
        config=config.source,
        world_size=config.world_size,
        job=controller.job_label(),
        steps=config.job.steps,
        backend=config.ring.backend,
        resume=resume,
        directions=ways,
        directions_how=how,
    )
    return [head, *(_rank_event(p) for p in plans)]


def _directions(controller: JobController) -> tuple[int | None, str]:
    """ring.directions as the launch will pass it: the environment below shows "auto" where the
    ranks or the launch's checks decide, so say which, and what it comes to when it is known.
    When checks already ran in this controller, the plan holds their decision (launch_config)."""
    asked = controller.config.ring.directions
    launched = controller.launch_config().ring.directions
    return planned_directions(controller.config, checked=launched if launched != asked else None)


def _rank_event(p: PlannedRank) -> RankPlanned:
    return RankPlanned(
        rank=p.rank,
        node=p.node,
        where=p.where,
        run_dir=p.run_dir,
        command=p.command,
        argv=list(p.argv),
        env=dict(p.env),
        files=dict(p.files),
    )


def print_plan(controller: JobController, resume: bool = False, *, json_out: bool = False) -> int:
    """Print the plan (text, or JSON lines with json_out) and return 0; when the launch would
    refuse it, its one-line reason instead, as `--run` says it (exit 2: nothing started, as for
    a bad config; and an error event with json_out)."""
    try:
        events = plan_events(controller, resume)  # built whole first: an error prints no half plan
    except PlanError as e:
        text = str(e) + (f" ({e.hint})" if e.hint else "")
        say_error(text, json_event=json_out)
        return 2
    for ev in events:
        if json_out:
            print(json.dumps(ev.to_dict(), default=str), flush=True)
        elif isinstance(ev, PlanShown):
            print(
                f"# boltring dry run: config {ev.config}, {ev.world_size} ranks, {ev.job}, "
                f"{ev.steps} steps, backend {ev.backend}. Nothing is started."
            )
            print(f"# ring.directions: {ev.directions_how}")
        elif isinstance(ev, RankPlanned):
            _print_rank(ev)
    return 0


def _print_rank(ev: RankPlanned) -> None:
    print(f"\n# rank {ev.rank} on {ev.node} ({ev.where}); run dir {ev.run_dir}")
    # not pastable as it is: spawn reads the whole launch spec (argv, environment, files and
    # the secret) from stdin, and the secret must never be on a command line
    print("#   spawn reads the launch spec (the argv, environment and files below, and the secret)")
    print("#   on stdin: the secret is never on a command line")
    print(ev.command)
    print(f"#   which starts: {' '.join(ev.argv)}")
    # all of it: "exactly what would start" (it holds no secret; the secret's file is named)
    print(f"#   environment: {json.dumps(ev.env)}")
    for var, content in ev.files.items():
        print(f"#   file {var} (written in the run dir): {content}")
