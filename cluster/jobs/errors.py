"""The job controller's error: one line a user can act on (launch, kill, attach, a job record)."""

from __future__ import annotations

from boltring.cluster.errors import BoltringError


class ControllerError(BoltringError):
    """A one-line reason a job could not be launched, killed or attached."""

    title = "job error"
