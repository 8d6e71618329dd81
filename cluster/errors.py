"""One error hierarchy for the control plane. Every error a user can see is a `BoltringError`:
a one-line `message`, a short `title` for dialogs and banners, and an optional `hint` that says
what to do. Views print `str(err)` (the message) and, when present, the hint; nobody parses the
message text to find out what happened: the class says it.

The data plane (`boltring.netio`) keeps its own `NetioError` family, because ranks must not
import the control plane.
"""

from __future__ import annotations

from typing import ClassVar


class BoltringError(Exception):
    title: ClassVar[str] = "boltring error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


def raise_per_node(results: list, kind: type[BoltringError] = BoltringError) -> None:
    """Raise what a gather over nodes (return_exceptions=True) collected, naming every node.

    Anything not of `kind` is raised as it is (a bug or an interruption: its traceback says
    what happened); one error of `kind` as it is; several as one error of the first one's class
    and hint, their messages joined (each starts with its node's name). Gathered without
    collecting, a second node's error was never retrieved and only the first node was named."""
    errors = [r for r in results if isinstance(r, BaseException)]
    other = [e for e in errors if not isinstance(e, kind)]
    if other:
        raise other[0]
    said: list[BoltringError] = [e for e in errors if isinstance(e, kind)]
    if len(said) == 1:
        raise said[0]
    if said:
        raise type(said[0])("; ".join(map(str, said)), hint=said[0].hint)
