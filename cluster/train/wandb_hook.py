"""Optional Weights & Biases logging from rank 0 (`job.wandb: <project>` in the config).

The controller passes the project in BOLTRING_WANDB (plan.py). Only rank 0 logs, so a run is
one W&B run whatever the world size; every metrics line it reports (loss, throughput,
all-reduce figures, memory) goes to W&B at its step. When wandb is not installed the job runs
as usual and says once why nothing is logged; W&B's own settings (WANDB_MODE=offline,
WANDB_DIR, the API key in its netrc) apply as for any wandb user.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV = "BOLTRING_WANDB"
SKIP = ("kind", "rank", "wall", "step")  # bookkeeping, not metrics


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
        run = wandb.init(project=project, name=job_id, id=job_id, config=config, resume="allow")
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
