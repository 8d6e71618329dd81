"""QuitModal: quitting while a job runs: leave it running, kill it, or stay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding

from .dialog import DialogScreen

LEAVE = "leave"
KILL = "kill"


class QuitModal(DialogScreen[str | None]):
    """Dismisses with LEAVE (`l`), KILL (`k`), or None (cancel, `n`, escape)."""

    BINDINGS: ClassVar = [
        Binding(
            "l",
            "choose('leave')",
            "Leave",
            show=False,
            id="quit.leave",
            tooltip="quit, leave the job running",
        ),
        Binding("k", "choose('kill')", "Kill", show=False, id="quit.kill", tooltip="quit and kill the job"),
        Binding("n", "cancel", "Cancel", show=False, id="quit.cancel", tooltip="stay (so does esc)"),
    ]
    RESULTS: ClassVar[dict[str, object]] = {"leave": LEAVE, "kill": KILL, "cancel": None}
    AUTO_FOCUS = "#leave"

    def __init__(self, job_id: str | None) -> None:
        job = f"Job {job_id}" if job_id else "A job"
        super().__init__(
            "Quit boltring?",
            f"{job} is still running on the cluster.\n\n"
            "Leave it running: it goes on (next boltring re-attaches to it).\n"
            "Kill it: every rank on every node is stopped.",
            classes="-warning",
        )
        self.job_id = job_id

    def buttons(self) -> Sequence[tuple[str, str, str]]:
        return [
            ("leave", "Leave it running", "primary"),
            ("kill", "Kill it", "error"),
            ("cancel", "Cancel", "default"),
        ]

    def key_hints(self) -> str:
        return "l: leave it running   k: kill it   n / esc: cancel"
