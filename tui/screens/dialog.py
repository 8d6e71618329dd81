"""DialogScreen: the base of the app's small modals (confirm, quit): a bordered box with a
title, a message, optional details, a row of buttons, and a line of key hints under them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

T = TypeVar("T")


class DialogScreen(ModalScreen[T], Generic[T]):
    """Subclasses give `buttons()` as (id, label, variant) and map button ids to results in
    `RESULTS`; escape always dismisses with `CANCEL_RESULT`."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    DEFAULT_CSS = """
    DialogScreen {
        align: center middle;
        background: $background 60%;
    }
    DialogScreen > #dialog {
        width: 90%;
        max-width: 110;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    DialogScreen.-danger > #dialog { border: thick $error; }
    DialogScreen.-warning > #dialog { border: thick $warning; }
    DialogScreen #title { text-style: bold; width: 1fr; padding: 0 0 1 0; }
    DialogScreen #message { width: 1fr; }
    DialogScreen #details-box { height: auto; max-height: 16; margin: 1 0 0 0; }
    DialogScreen #details { width: 1fr; }
    DialogScreen #buttons { height: auto; width: 1fr; align-horizontal: right; margin: 1 0 0 0; }
    DialogScreen Button { margin: 0 0 0 1; }
    DialogScreen #keys { width: 1fr; color: $text-muted; text-align: right; }
    """

    RESULTS: ClassVar[dict[str, object]] = {}
    CANCEL_RESULT: object = None

    def __init__(
        self,
        title: str,
        message: str | Content = "",
        details: Content | str | None = None,
        *,
        classes: str | None = None,
    ) -> None:
        super().__init__(classes=classes)
        self.title_text = title
        self.message = message
        self.details = details

    def buttons(self) -> Sequence[tuple[str, str, str]]:
        raise NotImplementedError

    def key_hints(self) -> str:
        return "esc: cancel"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="title", markup=False)
            if self.message:
                yield Static(self.message, id="message", markup=False)
            if self.details is not None:
                with VerticalScroll(id="details-box"):
                    yield Static(self.details, id="details", markup=False)
            with Horizontal(id="buttons"):
                for button_id, label, variant in self.buttons():
                    yield Button(label, id=button_id, variant=variant)  # type: ignore[arg-type]
            yield Static(self.key_hints(), id="keys", markup=False)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id in self.RESULTS:
            self.dismiss(self.RESULTS[event.button.id])  # type: ignore[arg-type]

    def action_cancel(self) -> None:
        self.dismiss(self.CANCEL_RESULT)  # type: ignore[arg-type]

    def action_choose(self, button_id: str) -> None:
        self.dismiss(self.RESULTS[button_id])  # type: ignore[arg-type]
