"""`--restarts N` (like torchrun's --max-restarts): the policy, and what a restart is told.

When a job fails and restarts remain, the controller stops every rank (they are all gone once the
job is failed), re-runs the failing node's checks, waits `job.restart_delay`, and relaunches every
rank with --resume, so the runner picks the newest checkpoint that verifies. A job a user stopped
(`boltring kill`, `k` in the app, Ctrl-C) is never restarted, and a failing check stops the
restarts with that check as the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from boltring.cluster.states import USER_STOPS, JobState, StoppedBy

_STEP_RE = re.compile(r"step-0*(\d+)\.safetensors")


@dataclass
class RestartPolicy:
    max_restarts: int = 0
    delay_s: float = 5.0
    history: list[dict[str, Any]] = field(default_factory=list)  # JobRestarted.to_dict() of each

    @property
    def used(self) -> int:
        return len(self.history)

    def allows(self, state: JobState, by: StoppedBy | None) -> bool:
        """Restart a job that failed on its own, while restarts remain; never one a user stopped."""
        if state != JobState.FAILED or by in USER_STOPS:
            return False
        return self.used < self.max_restarts


def resume_label(latest_name: str | None) -> str | None:
    """'step 40 (step-000040.safetensors)' for a checkpoint file name, None for none."""
    if not latest_name:
        return None
    m = _STEP_RE.search(latest_name)
    return f"step {int(m[1])} ({latest_name})" if m else latest_name
