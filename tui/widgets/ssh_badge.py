"""SshBadge: a node's connection state as a coloured badge ("connecting… 4/10 s" while it waits)."""

from __future__ import annotations

from textual.widgets import Static

from boltring.cluster.states import SshState


def badge_group(state: SshState | None) -> str | None:
    if state is None:
        return None
    if state.usable:
        return "-good"
    if state.busy:
        return "-busy"
    return "-bad" if state.bad else None


class SshBadge(Static):
    """Shows one of SshState (or "?" before the first NodeState event). While connecting, the
    seconds waited so far against the connect timeout, so a slow node never looks frozen."""

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
        self, state: SshState | None = None, *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__("", id=id, classes=classes, markup=False)
        self._shown: tuple[SshState | None, str] | None = None
        self.set_state(state)

    @property
    def state(self) -> SshState | None:
        return self._shown[0] if self._shown else None

    def set_state(self, state: SshState | None, waited_s: float | None = None, timeout_s: float = 0) -> None:
        label = str(state) if state is not None else "?"
        if state is not None and state.busy and waited_s is not None and timeout_s:
            label = f"{state}… {min(int(waited_s), int(timeout_s))}/{timeout_s:g} s"
        if (state, label) == self._shown:
            return
        self._shown = (state, label)
        self.remove_class("-good", "-busy", "-bad")
        group = badge_group(state)
        if group:
            self.add_class(group)
        self.update(label)
