"""Optional Weights & Biases logging from rank 0 (`job.wandb: <project>` in the config).

The controller passes the project in BOLTRING_WANDB (plan.py). Only rank 0 logs, so a run is
one W&B run whatever the world size; every metrics line it reports (loss, throughput,
all-reduce figures, memory) goes to W&B at its step. When wandb is not installed the job runs
as usual and says once why nothing is logged; W&B's own settings (WANDB_MODE=offline, the API
key in its netrc) apply as for any wandb user.

W&B's local files (its ``wandb/`` folder) go into rank 0's run directory (BOLTRING_RUN_DIR,
beside its rank.log and metrics.jsonl), not into the launch folder the rank runs in; a
WANDB_DIR the user set still wins, and a rank started by hand keeps wandb's own ./wandb.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
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

    def finish(self) -> None:
        self.run.finish()
        import wandb

        wandb.teardown()  # its wandb-core service process ends with the run, not with the rank
