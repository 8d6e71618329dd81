"""HelpScreen (`?`): every key of the app, its panels, the log and the dialogs, read from their
BINDINGS so the list cannot drift from what the keys do."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

KEY_NAMES = {"slash": "/", "escape": "esc", "enter": "⏎", "question_mark": "?", "ctrl+p": "ctrl+p"}


def key_label(key: str) -> str:
    return ", ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))


def bindings_table(sections: Iterable[tuple[str, Iterable[BindingType]]]) -> Content:
    lines: list[Content] = []
    for title, bindings in sections:
        lines.append(Content.styled(title, "bold $accent"))
        for b in bindings:
            if not isinstance(b, Binding):
                continue
            lines.append(
                Content.assemble(
                    ("  " + key_label(b.key)).ljust(12), (b.tooltip or b.description or b.action, "")
                )
            )
        lines.append(Content(""))
    return Content("\n").join(lines[:-1])


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar = [
        Binding("escape,question_mark,q", "close", "Close", id="help.close"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > #help {
        width: auto; min-width: 50; max-width: 90%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen #help-title { text-style: bold; padding: 0 0 1 0; }
    HelpScreen VerticalScroll { height: auto; max-height: 40; }
    HelpScreen #help-keys-hint { color: $text-muted; padding: 1 0 0 0; }
    """

    def __init__(self, sections: list[tuple[str, Iterable[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("boltring keys", id="help-title")
            with VerticalScroll():
                yield Static(bindings_table(self.sections), id="help-table", markup=False)
            yield Static("esc / ? / q: close", id="help-keys-hint", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
