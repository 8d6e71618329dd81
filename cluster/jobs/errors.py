"""The job controller's error: one line a user can act on (launch, kill, attach, a job record)."""

from __future__ import annotations

from typing import ClassVar

from boltring.cluster.errors import BoltringError


class ControllerError(BoltringError):
    """A one-line reason a job could not be launched, killed or attached."""

    title = "job error"
    # True when the refusal came before any rank or job record existed: views exit 2 ("nothing
    # started because of what was given") instead of 1 (a job that failed)
    nothing_started: ClassVar[bool] = False
