"""SshBadge: a node's connection state as a coloured badge."""

from __future__ import annotations

from textual.widgets import Static

from ..view_state import SSH_BAD, SSH_BUSY, SSH_GOOD

_GROUPS = {**{s: "-good" for s in SSH_GOOD}, **{s: "-busy" for s in SSH_BUSY}, **{s: "-bad" for s in SSH_BAD}}


class SshBadge(Static):
    """Shows one of SshState (or "?" before the first NodeState event)."""

    DEFAULT_CSS = """
    SshBadge {
        width: auto;
        height: 1;
        padding: 0 1;
        text-style: bold;
        background: $panel-lighten-2;
        color: $text-muted;
    }
    SshBadge.-good { background: $success-darken-2; color: $text; }
    SshBadge.-busy { background: $warning-darken-2; color: $text; }
    SshBadge.-bad { background: $error-darken-1; color: $text; }
    """

    def __init__(
        self, state: str | None = None, *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__("", id=id, classes=classes, markup=False)
        self._state: str | None = "<unset>"
        self.set_state(state)

    @property
    def state(self) -> str | None:
        return self._state

    def set_state(self, state: str | None) -> None:
        if state == self._state:
            return
        self._state = state
        self.remove_class("-good", "-busy", "-bad")
        group = _GROUPS.get(state or "")
        if group:
            self.add_class(group)
        self.update(state or "?")
