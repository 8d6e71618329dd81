"""Stopping every rank of a job within a time limit, for `--run` interrupted (Ctrl-C, SIGTERM, a
closed output): the controller's kill, waited for until every rank's end is read, the limit,
or until only ranks on nodes the stop could not reach are left; then one clause naming those
that may still run and what to do.

Apart from the --run view (headless.py) because it is about the controller's job, not its
display: it listens only for the stop's own failures and asks the controller which ranks' ends
were not read.
"""

from __future__ import annotations

import asyncio
import time

from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.events import Event, RanksNotStopped
from boltring.cluster.states import StoppedBy

from .run_summary import ranks_text


async def stop_within(controller: JobController, by: StoppedBy, wait_s: float) -> str | None:
    """Stop every rank and wait at most `wait_s` for their ends (a node that cannot be reached
    would hold the wait forever), or only until the ranks not known to have ended are all on
    nodes the stop could not reach: nothing stops those, and no end will be read. None when
    every end was confirmed; else one clause naming each node whose ranks may still run, and
    why, with what to do."""
    failures: dict[str, str] = {}  # node -> why its ranks could not be stopped

    def note(ev: Event) -> None:
        match ev:
            case RanksNotStopped():
                failures[ev.node] = ev.cause

    def hopeless() -> bool:
        left = controller.unconfirmed_ranks()
        return bool(left) and set(left) <= set(failures)

    controller.add_listener(note)
    kill = asyncio.ensure_future(controller.kill(by=by))
    deadline = time.monotonic() + wait_s
    try:
        while not kill.done() and not hopeless() and time.monotonic() < deadline:
            await asyncio.wait({kill}, timeout=min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        controller.remove_listener(note)
        if not kill.done():
            kill.cancel()  # the ranks whose end was not read are named below
            await asyncio.gather(kill, return_exceptions=True)
    left = controller.unconfirmed_ranks()
    if not left:
        return None
    who = "; ".join(
        f"{ranks_text(ranks)} on {node} ({failures.get(node) or f'no end read within {wait_s:g} s'})"
        for node, ranks in left.items()
    )
    one = sum(map(len, left.values())) == 1
    them, answer = ("it" if one else "them"), ("answers" if len(left) == 1 else "answer")
    return (
        f"could not confirm that {who} stopped: {'it' if one else 'they'} may still run; "
        f"`boltring kill` stops {them} once {' and '.join(left)} {answer}"
    )
