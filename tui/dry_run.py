"""`boltring --dry-run`: the launch plan, printed, and nothing started.

As text: a comment block per rank, then two command lines. The first is the one boltring runs
(through the node's transport): the spawn agent, which reads the launch spec, the secret
included, on stdin, so pasted alone it waits for that spec. The second is the rank's own
command with its environment (the run directory made, the backend's files written, then
`VAR=value … python -m boltring.cluster.train.runner …`, quoted with shlex): pasted into a shell
on its node it runs that rank by hand. Ranks of the boltring backend prove a shared secret read
from a 0600 file; the plan's head prints the line that makes it (the secret is made by Python
into the file, never on a command line). With `--json`: the same facts as events, one JSON
object per line on stdout in the wire form of `--run --json` (`Event.to_dict`,
`"event": kind`): one `plan` line, then one `rank_plan` per rank.
A plan the launch would refuse (plan_job's PlanError, or arguments after `--` the runner's
check refuses) prints no plan, only the reason, as the launch says it (exit 2). `-- --help`
after an example prints its options and no plan.

ring.directions `auto` is decided at launch (from the routes the checks see, or by the ranks),
so the environment says "auto" where the launch may pass 1 or 2: the plan says in a line (and
`directions`, `directions_how` in the `plan` event) what it comes to, or how it will be decided.

ring.order `cabling` is decided at launch too: the checks before it reorder the nodes (so the
ranks) to follow the Thunderbolt cables they find, and the dry run probes no node. The plan
says the order in a line ("ring order: ", and `ring_order`, `ring_order_how` in the `plan`
event); while it is undecided (`ring_order` null) it says so, and every rank's heading says it
is that rank only if the config's order is kept.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import ClassVar

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import Event
from boltring.cluster.jobs.job_args import JobArgsRefused, check_job_args_now, example_help
from boltring.cluster.jobs.plan import PlanError, PlannedRank, describe_cwd, job_dir, local_words
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
    # The shell line that makes the secret file the ranks' own commands (`by_hand`) read, on
    # the first rank's node (`secret_node`); None when the ranks prove no secret (one rank, or
    # an MLX backend)
    secret_command: str | None = None
    secret_node: str | None = None
    secret_copies: dict[str, str] | None = None  # the other nodes: where the same file goes there
    # The nodes in ring order, as the ranks below are numbered and the launch will number them;
    # None while the launch decides it from the cables its checks find (ring.order: cabling).
    # In words, as the text plan prints it after "ring order: "
    ring_order: list[str] | None = None
    ring_order_how: str = ""


@dataclass
class RankPlanned(Event):
    """One rank of the plan: where it runs and exactly what starts it (the secret is not here:
    it goes on the spawn command's stdin)."""

    kind: ClassVar[str] = "rank_plan"
    rank: int
    node: str
    where: str  # "local" or the ssh target
    run_dir: str
    command: str  # the line the transport runs, as a shell would take it (spawn; spec on stdin)
    argv: list[str]  # the rank's own program ("~/" words: spawn expands them on the node)
    env: dict[str, str]
    files: dict[str, str]  # written in the run dir; the variable named by the key holds its path
    by_hand: str = ""  # the rank's own command with its environment, for a shell on its node
    cwd: list[str] = field(default_factory=list)  # the rank runs in the first that exists (rank_cwd)


def plan_events(controller: JobController, resume: bool = False, skip_checks: bool = False) -> list[Event]:
    """The plan as --json events; PlanError when the launch would refuse it."""
    plans = controller.plan(resume=resume)
    config = controller.config
    ways, how = _directions(controller)
    order, order_how = controller.planned_ring_order(skip_checks)
    nodes = {n.name: n for n in config.nodes}
    secrets = _secret_files(config, plans)
    first = nodes[plans[0].node] if plans else None
    head = PlanShown(
        config=config.source,
        world_size=config.world_size,
        job=controller.job_label(),
        steps=config.job.steps,
        backend=config.ring.backend,
        resume=resume,
        directions=ways,
        directions_how=how,
        secret_command=_secret_command(first, secrets[first.name]) if first and secrets else None,
        secret_node=first.name if first and secrets else None,
        secret_copies={n: path for n, path in secrets.items() if first and n != first.name} or None,
        ring_order=order,
        ring_order_how=order_how,
    )
    return [head, *(_rank_event(p, nodes[p.node], secrets.get(p.node)) for p in plans)]


def _directions(controller: JobController) -> tuple[int | None, str]:
    """ring.directions as the launch will pass it: the environment below shows "auto" where the
    ranks or the launch's checks decide, so say which, and what it comes to when it is known.
    When checks already ran in this controller, the plan holds their decision (launch_config)."""
    asked = controller.config.ring.directions
    launched = controller.launch_config().ring.directions
    return planned_directions(controller.config, checked=launched if launched != asked else None)


def _rank_event(p: PlannedRank, node: Node, secret_file: str | None) -> RankPlanned:
    return RankPlanned(
        rank=p.rank,
        node=p.node,
        where=p.where,
        run_dir=p.run_dir,
        command=p.command,
        argv=list(p.argv),
        env=dict(p.env),
        files=dict(p.files),
        by_hand=rank_command(p, node, secret_file),
        cwd=list(p.cwd),
    )


# --- the rank's own command, to run it by hand --------------------------------------------------


def _word(node: Node, word: str) -> str:
    """One word of a command for a shell on `node`. A local rank's "~/…" is this machine's home,
    written out (quoted, a "~" would stay a "~"); on a remote node "~/" stays unquoted for the
    node's shell to expand, as spawn expands it there for the real launch."""
    if node.local:
        return shlex.quote(local_words([word])[0])
    if word == "~" or word.startswith("~/"):
        return word[:2] + (shlex.quote(word[2:]) if word[2:] else "")
    return shlex.quote(word)


def _secret_files(config: Config, plans: list[PlannedRank]) -> dict[str, str]:
    """Per node, the secret file its ranks' own commands read: one per job, in the job's
    directory (spawn writes a copy into every run directory; by hand one file serves all the
    node's ranks). Empty when the ranks prove no secret: one rank, or an MLX backend, which
    reads its peers from MLX_* variables (netio.jobenv)."""
    if config.ring.backend != "boltring" or len(plans) < 2:
        return {}
    return {n.name: f"{job_dir(n, plans[0].env.get('BOLTRING_JOB_ID', ''))}/secret" for n in config.nodes}


def _secret_command(node: Node, path: str) -> str:
    """Makes the job's secret in `path`, mode 0600, on `node`: generated by its Python and
    written straight into the file, so it is on no command line."""
    folder = path.rsplit("/", 1)[0]
    make = "import secrets; print(secrets.token_hex(32))"
    return (
        f"(umask 077 && mkdir -p {_word(node, folder)} && {_word(node, node.python)} -c "
        f"{shlex.quote(make)} > {_word(node, path)})"
    )


def rank_command(p: PlannedRank, node: Node, secret_file: str | None) -> str:
    """What the spawn agent does for this rank, as one shell line: make the run directory,
    write the backend's files into it, and start the rank's program in its working directory
    with the environment the launch gives it (BOLTRING_RUN_DIR and the secret file's path, as
    spawn adds them). Run in a shell on the rank's node; the secret file must exist first."""
    steps = [f"mkdir -p {_word(node, p.run_dir)}"]
    env = dict(p.env)
    for var, content in p.files.items():  # where spawn writes them: RUN_DIR/<var>.json
        path = f"{p.run_dir}/{var.lower()}.json"
        steps.append(f"printf '%s' {shlex.quote(content)} > {_word(node, path)}")
        env[var] = path
    env["BOLTRING_RUN_DIR"] = p.run_dir
    if secret_file:
        env["BOLTRING_SECRET_FILE"] = secret_file
    steps.append(_enter(node, p.cwd or (p.run_dir,)))
    assignments = [f"{k}={_word(node, v)}" for k, v in env.items()]
    steps.append(" ".join([*assignments, *(_word(node, a) for a in p.argv)]))
    return " && ".join(steps)


def _enter(node: Node, cwd: str | tuple[str, ...] | list[str]) -> str:
    """`cd` to the rank's working folder as spawn chooses it (spawn.working_dir): the first
    candidate that is a folder on the node, else the last one, made."""
    *tried, last = [cwd] if isinstance(cwd, str) else list(cwd)
    made = f"{{ mkdir -p {_word(node, last)} && cd {_word(node, last)}; }}"
    if not tried:
        return made
    return "{ " + " || ".join([*(f"cd {_word(node, c)} 2>/dev/null" for c in tried), made]) + "; }"


# --- printing -----------------------------------------------------------------------------------


def print_plan(
    controller: JobController, resume: bool = False, *, json_out: bool = False, skip_checks: bool = False
) -> int:
    """Print the plan (text, or JSON lines with json_out) and return 0; when the launch would
    refuse it, its one-line reason instead, as `--run` says it (exit 2: nothing started, as for
    a bad config; and an error event with json_out). `-- --help` after an example: its options,
    and no plan."""
    try:
        shown = example_help(controller.config)
        if shown is not None:
            print(shown, end="" if shown.endswith("\n") else "\n")
            return 0
        events = plan_events(
            controller, resume, skip_checks
        )  # built whole first: an error prints no half plan
        check_job_args_now(controller.config)  # the launch's own check of the arguments after `--`
    except PlanError as e:
        say_error(str(e) + (f" ({e.hint})" if e.hint else ""), json_event=json_out)
        return 2
    except JobArgsRefused as e:
        say_error(str(e), json_event=json_out)  # the line `--run` prints
        return 2
    order_known = True
    for ev in events:
        if json_out:
            print(json.dumps(ev.to_dict(), default=str), flush=True)
        elif isinstance(ev, PlanShown):
            _print_head(ev)
            order_known = ev.ring_order is not None
        elif isinstance(ev, RankPlanned):
            _print_rank(ev, order_known)
    return 0


def _print_head(ev: PlanShown) -> None:
    print(
        f"# boltring dry run: config {ev.config}, {ev.world_size} ranks, {ev.job}, "
        f"{ev.steps} steps, backend {ev.backend}. Nothing is started."
    )
    print(f"# ring.directions: {ev.directions_how}")
    print(f"# ring order: {ev.ring_order_how}")
    print("# Per rank: the line boltring runs (spawn: it reads the launch spec, with the secret, on")
    print("# stdin, so pasted alone it waits for it), then the rank's own command, which pasted into")
    print("# a shell on its node runs that rank by hand.")
    if ev.secret_command:
        print(f"# The ranks prove a shared secret, read from a file: make it first, on {ev.secret_node}:")
        print(ev.secret_command)
        if ev.secret_copies:
            where = ", ".join(f"{node} ({path})" for node, path in ev.secret_copies.items())
            print(f"# then copy that file, mode 0600, to {where}: every rank proves the same secret")


def _print_rank(ev: RankPlanned, order_known: bool = True) -> None:
    # an order the launch decides: this rank is on this node only if the config's order is kept
    kept = "" if order_known else " if the config's order is kept (ring order: decided at launch)"
    print(f"\n# rank {ev.rank} on {ev.node} ({ev.where}){kept}; run dir {ev.run_dir}")
    print(f"#   runs in {describe_cwd(ev.cwd, ev.node)}")
    print("#   boltring runs (the launch spec and the secret go on its stdin):")
    print(ev.command)
    print(f"#   the rank's own command, to run it by hand in a shell on {ev.node}:")
    print(ev.by_hand)
    # all of it: "exactly what would start" (it holds no secret; the secret's file is named)
    print(f"#   environment: {json.dumps(ev.env)}")
    for var, content in ev.files.items():
        print(f"#   file {var} (written in the run dir): {content}")
