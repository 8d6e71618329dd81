"""ConfirmModal: the one yes/no dialog (launch, resume, kill)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmModal(ModalScreen[bool]):
    """Dismisses with True (confirm button, `y`) or False (cancel button, `n`, escape)."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="confirm.cancel"),
        Binding("n", "cancel", "No", show=False, id="confirm.no"),
        Binding("y", "confirm", "Yes", show=False, id="confirm.yes"),
    ]

    DEFAULT_CSS = """
    ConfirmModal {
        align: center middle;
        background: $background 60%;
    }
    ConfirmModal > #dialog {
        width: 90%;
        max-width: 110;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    ConfirmModal.-danger > #dialog { border: thick $error; }
    ConfirmModal #title { text-style: bold; width: 1fr; padding: 0 0 1 0; }
    ConfirmModal #message { width: 1fr; }
    ConfirmModal #details-box { height: auto; max-height: 16; margin: 1 0 0 0; }
    ConfirmModal #details { width: 1fr; }
    ConfirmModal #buttons { height: auto; width: 1fr; align-horizontal: right; margin: 1 0 0 0; }
    ConfirmModal Button { margin: 0 0 0 1; }
    """

    AUTO_FOCUS = "#confirm"

    def __init__(
        self,
        title: str,
        message: str = "",
        details: Content | str | None = None,
        *,
        confirm_label: str = "OK",
        cancel_label: str = "Cancel",
        danger: bool = False,
    ) -> None:
        super().__init__(classes="-danger" if danger else None)
        self.title_text = title
        self.message = message
        self.details = details
        self.confirm_label = confirm_label
        self.cancel_label = cancel_label
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="title", markup=False)
            if self.message:
                yield Static(self.message, id="message", markup=False)
            if self.details is not None:
                with VerticalScroll(id="details-box"):
                    yield Static(self.details, id="details", markup=False)
            with Horizontal(id="buttons"):
                yield Button(self.cancel_label, id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="error" if self.danger else "primary")

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)
