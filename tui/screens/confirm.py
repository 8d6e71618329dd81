"""ConfirmModal: the one yes/no dialog (launch, resume, kill)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding
from textual.content import Content

from .dialog import DialogScreen


class ConfirmModal(DialogScreen[bool]):
    """Dismisses with True (confirm button, `y`) or False (cancel button, `n`, escape).

    `anyway=True` (launching although checks failed): `y` does nothing; the confirm button, or
    `a`, must be chosen on purpose, and the cancel button has the focus."""

    BINDINGS: ClassVar = [
        Binding("y", "yes", "Yes", show=False, id="confirm.yes", tooltip="confirm: launch, resume or kill"),
        Binding("n", "cancel", "No", show=False, id="confirm.no", tooltip="cancel (so does esc)"),
        Binding(
            "a", "anyway", "Anyway", show=False, id="confirm.anyway", tooltip="launch although checks failed"
        ),
    ]
    RESULTS: ClassVar[dict[str, object]] = {"confirm": True, "cancel": False}
    CANCEL_RESULT = False

    def __init__(
        self,
        title: str,
        message: str | Content = "",
        details: Content | str | None = None,
        *,
        confirm_label: str = "OK",
        cancel_label: str = "Cancel",
        danger: bool = False,
        anyway: bool = False,
    ) -> None:
        super().__init__(title, message, details, classes="-danger" if danger or anyway else None)
        self.confirm_label = confirm_label
        self.cancel_label = cancel_label
        self.danger = danger
        self.anyway = anyway

    def on_mount(self) -> None:
        # launching anyway is never the default: the cancel button has the focus
        self.query_one("#cancel" if self.anyway else "#confirm").focus()

    def buttons(self) -> Sequence[tuple[str, str, str]]:
        variant = "error" if self.danger or self.anyway else "primary"
        return [("cancel", self.cancel_label, "default"), ("confirm", self.confirm_label, variant)]

    def key_hints(self) -> str:
        if self.anyway:
            return f"a: {self.confirm_label.lower()}   n / esc: {self.cancel_label.lower()}"
        return f"y: {self.confirm_label.lower()}   n / esc: {self.cancel_label.lower()}"

    def action_yes(self) -> None:
        if self.anyway:
            self.app.bell()
            return
        self.dismiss(True)

    def action_anyway(self) -> None:
        if self.anyway:
            self.dismiss(True)
