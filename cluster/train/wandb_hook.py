"""Optional Weights & Biases logging from rank 0 (`job.wandb: <project>` in the config).

The controller passes the project in BOLTRING_WANDB (plan.py). Only rank 0 logs, so a run is
one W&B run whatever the world size; every metrics line it reports (loss, throughput,
all-reduce figures, memory) goes to W&B at its step. When wandb is not installed the job runs
as usual and says once why nothing is logged; W&B's own settings (WANDB_MODE=offline, the API
key in its netrc) apply as for any wandb user.

W&B's local files (its ``wandb/`` folder) go into rank 0's run directory (BOLTRING_RUN_DIR,
beside its rank.log and metrics.jsonl), not into the launch folder the rank runs in; a
WANDB_DIR the user set still wins, and a rank started by hand keeps wandb's own ./wandb.

Every built-in loop (loop.train for mlp and charlm, lm.train_lm) logs through
:func:`logging_to_wandb`, so they name, fill and finish their runs alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from boltring.netio.jobenv import RUN_DIR

ENV = "BOLTRING_WANDB"
SKIP = ("kind", "rank", "wall", "step")  # bookkeeping, not metrics


def wandb_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """wandb.init's ``dir``: the rank's run directory, so that ./wandb is not left in the user's
    launch folder (the ranks' working folder). None where wandb should choose: the user's
    WANDB_DIR (an explicit dir= would override it), or no run directory (a rank run by hand)."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_DIR"):
        return None
    return environ.get(RUN_DIR) or None


class WandbHook:
    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def start(
        cls, rank: int, job_id: str | None, config: dict[str, Any], log: Callable[[str], None]
    ) -> WandbHook | None:
        """The hook for this rank: None unless BOLTRING_WANDB is set, this is rank 0, and wandb
        can be imported."""
        project = os.environ.get(ENV)
        if not project or rank != 0:
            return None
        try:
            import wandb
        except ImportError:
            log(f"[rank 0] job.wandb is {project!r} but wandb is not installed here: not logging to W&B")
            return None
        run = wandb.init(
            project=project, name=job_id, id=job_id, config=config, resume="allow", dir=wandb_dir()
        )
        log(f"[rank 0] logging to W&B project {project} as run {job_id}")
        return cls(run)

    def log(self, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if k not in SKIP and isinstance(v, (int, float))}
        if values:
            self.run.log(values, step=int(record.get("step", 0)))

    def finish(self, exit_code: int | None = None) -> None:
        """End the run: W&B marks it failed when exit_code is not 0."""
        self.run.finish(exit_code=exit_code)
        import wandb

        wandb.teardown()  # its wandb-core service process ends with the run, not with the rank


def _not_logging(record: dict[str, Any]) -> None:
    pass


def exit_code_of(error: BaseException) -> int:
    """The exit status the rank will have: a signal's 128+N (runner.Terminated is a SystemExit
    carrying it), else 1 as for any error."""
    if isinstance(error, SystemExit) and isinstance(error.code, int):
        return error.code
    return 1


@contextmanager
def logging_to_wandb(
    group: Any, config: dict[str, Any], log: Callable[[str], None]
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Around a training loop: yields the function that sends one metrics record (what
    group.report returned) to W&B, a no-op unless this is rank 0 of a job.wandb job, and
    finishes the run however the loop ends, with the rank's exit status. Finishing it here,
    not in wandb's atexit hook, also ends the run of a loop that does not end its process."""
    job_id = getattr(getattr(group, "job", None), "job_id", None)
    hook = WandbHook.start(group.rank, job_id, {**config, "world_size": group.size}, log)
    if hook is None:
        yield _not_logging
        return
    try:
        yield hook.log
    except BaseException as error:
        try:
            hook.finish(exit_code=exit_code_of(error))
        except Exception as finish_error:  # the loop's own error is the one the runner reports
            log(f"[rank 0] could not finish the W&B run: {type(finish_error).__name__}: {finish_error}")
        raise
    hook.finish()
