"""The states boltring reports, defined once: a job's life, a node's SSH connection, a check's
verdict, and who stopped a job. They are `StrEnum`s, so they print and serialise (`--json`) as
their plain value and compare equal to it, while code names them as types.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    IDLE = "idle"
    CHECKING = "checking"
    LAUNCHING = "launching"
    RUNNING = "running"
    STALLED = "stalled"  # running, but a rank's heartbeat went silent (the job has not failed yet)
    RESTARTING = "restarting"  # failed, stopped, and being relaunched by --restarts
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"

    @property
    def final(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.KILLED)

    @property
    def active(self) -> bool:
        """Ranks may be alive: a kill has something to stop."""
        return self in (JobState.LAUNCHING, JobState.RUNNING, JobState.STALLED, JobState.RESTARTING)


FINAL_STATES = frozenset(s for s in JobState if s.final)
ACTIVE_STATES = frozenset(s for s in JobState if s.active)


class SshState(StrEnum):
    """What a node panel shows as its connection badge. Local nodes are always LOCAL."""

    LOCAL = "local"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    AUTH_FAILED = "auth failed"
    HOST_KEY_UNKNOWN = "host key unknown"
    HOST_KEY_CHANGED = "host key changed"
    UNREACHABLE = "unreachable"
    LOST = "lost"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"

    @property
    def usable(self) -> bool:
        return self in (SshState.LOCAL, SshState.CONNECTED)

    @property
    def busy(self) -> bool:
        return self in (SshState.CONNECTING, SshState.RECONNECTING)

    @property
    def bad(self) -> bool:
        return self in (
            SshState.AUTH_FAILED,
            SshState.HOST_KEY_UNKNOWN,
            SshState.HOST_KEY_CHANGED,
            SshState.UNREACHABLE,
            SshState.LOST,
        )


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"


class LogLevel(StrEnum):
    """How a log line is shown: controller lines and ranks' output (LogLine.level)."""

    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class StoppedBy(StrEnum):
    """Who ended a job that did not finish on its own; the UI says it in words, never as a code."""

    USER_KILL = "boltring kill"  # `boltring kill` from any terminal
    APP = "the app"  # `k` in the app, or quit → kill
    CTRL_C = "Ctrl-C"  # --run interrupted
    SIGTERM = "SIGTERM"  # --run (or `status --follow`) terminated: `kill`, a service manager, CI
    OUTPUT_CLOSED = "output closed"  # --run's reader went away (`| head`): as SIGPIPE stops a tool
    BOLTRING = "boltring"  # the controller stopped the other ranks after one failed


# A person stopped the job (any terminal, the app, Ctrl-C, SIGTERM, closing --run's output), as
# opposed to boltring stopping the rest of a job after a failure: ranks that end of a user stop
# are never reported as failures, and the job is never restarted.
USER_STOPS = (
    StoppedBy.USER_KILL,
    StoppedBy.APP,
    StoppedBy.CTRL_C,
    StoppedBy.SIGTERM,
    StoppedBy.OUTPUT_CLOSED,
)
