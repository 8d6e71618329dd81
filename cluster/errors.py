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
