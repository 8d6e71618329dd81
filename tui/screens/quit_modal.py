"""QuitModal: quitting while a job runs: leave it running, kill it, or stay."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

LEAVE = "leave"
KILL = "kill"


class QuitModal(ModalScreen[str | None]):
    """Dismisses with LEAVE, KILL, or None (cancel)."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="quit.cancel"),
    ]

    DEFAULT_CSS = """
    QuitModal {
        align: center middle;
        background: $background 60%;
    }
    QuitModal > #dialog {
        width: auto;
        max-width: 90%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 0 1;
    }
    QuitModal #title { text-style: bold; padding: 0 0 1 0; width: auto; }
    QuitModal #message { width: auto; max-width: 76; }
    QuitModal #buttons { height: auto; width: auto; margin: 1 0 0 0; }
    QuitModal Button { margin: 0 1 0 0; }
    """

    AUTO_FOCUS = "#leave"

    def __init__(self, job_id: str | None) -> None:
        super().__init__()
        self.job_id = job_id

    def compose(self) -> ComposeResult:
        job = f"Job {self.job_id}" if self.job_id else "A job"
        with Vertical(id="dialog"):
            yield Static("Quit boltring?", id="title", markup=False)
            yield Static(
                f"{job} is still running on the cluster.\n\n"
                "Leave it running: it goes on (next boltring re-attaches to it).\n"
                "Kill it: every rank on every node is stopped.",
                id="message",
                markup=False,
            )
            with Horizontal(id="buttons"):
                yield Button("Leave it running", id="leave", variant="primary")
                yield Button("Kill it", id="kill", variant="error")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed, "#leave")
    def _leave(self) -> None:
        self.dismiss(LEAVE)

    @on(Button.Pressed, "#kill")
    def _kill(self) -> None:
        self.dismiss(KILL)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
