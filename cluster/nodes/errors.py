"""What can go wrong reaching a node, as classes. Each class knows the SSH state a node panel shows
for it (`state`) and a dialog title; each instance carries a one-line `message` (node: cause) and
a `hint` that says what to do, written by the transport that knows the target (so it can name a
command that runs as is, e.g. `ssh -p 2299 you@127.0.0.1`). Callers branch on the class, never on
the message text.
"""

from __future__ import annotations

from typing import ClassVar

from boltring.cluster.errors import BoltringError
from boltring.cluster.states import SshState


class TransportError(BoltringError):
    """A node could not be reached or a command could not be run there; the message says why."""

    title = "node unreachable"
    state: ClassVar[SshState | None] = None  # the badge this failure puts on the node, if any

    @property
    def cause(self) -> str:
        """The message without its "node: " prefix (for a table that already names the node)."""
        head, sep, rest = self.message.partition(": ")
        return rest if sep and " " not in head else self.message


class Unreachable(TransportError):
    """No SSH server answered: refused, timed out, no route, unknown host name, bad ssh config."""

    title = "node unreachable"
    state = SshState.UNREACHABLE


class AuthFailed(TransportError):
    """The SSH server refused every key we offered (or a key could not be loaded)."""

    title = "SSH key refused"
    state = SshState.AUTH_FAILED


class HostKeyUnknown(TransportError):
    """known_hosts has no key for the node: a person must check and accept it once."""

    title = "host key unknown"
    state = SshState.HOST_KEY_UNKNOWN


class HostKeyChanged(TransportError):
    """The node offered a key other than the one known_hosts trusts: reinstalled, or intercepted."""

    title = "host key changed"
    state = SshState.HOST_KEY_CHANGED


class ConnectionLost(TransportError):
    """An established connection dropped (during a command, or it did not come back in time)."""

    title = "connection lost"
    state = SshState.LOST


class TransportClosed(TransportError):
    """The transport was closed (the app is quitting); nothing more will run on it."""

    title = "connection closed"
    state = SshState.CLOSED


class CommandNotFound(TransportError):
    """The program could not be started at all (no such file, not executable)."""

    title = "command not found"


class CommandTimeout(TransportError):
    """The command ran longer than allowed and was stopped."""

    title = "command timed out"


# States after which retrying on our own is pointless: only a person can fix them (and hammering a
# node with failing logins can get the address blocked).
NEEDS_A_PERSON: tuple[type[TransportError], ...] = (AuthFailed, HostKeyUnknown, HostKeyChanged)
