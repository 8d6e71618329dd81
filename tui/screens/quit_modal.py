"""QuitModal: quitting while a job runs: leave it running, kill it, or stay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding

from .dialog import DialogScreen

LEAVE = "leave"
KILL = "kill"


class QuitModal(DialogScreen[str | None]):
    """Dismisses with LEAVE (`l`), KILL (`k`), or None (cancel, `n`, escape).

    `can_leave=False` (the job is restarting, between attempts): the relaunch is this
    boltring's to do, so quitting would stop it and leave nothing running. The dialog then
    says why in one line and offers only Kill and Cancel; `l` rings the bell."""

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

    def __init__(self, job_id: str | None, *, can_leave: bool = True) -> None:
        job = f"Job {job_id}" if job_id else "A job"
        if can_leave:
            message = (
                f"{job} is still running on the cluster.\n\n"
                "Leave it running: it goes on (next boltring re-attaches to it).\n"
                "Kill it: every rank on every node is stopped."
            )
        else:
            message = (
                f"{job} is restarting: this boltring relaunches it, so quitting now would "
                "leave nothing running.\n\n"
                "Kill it: it ends here and is not relaunched.\n"
                "Cancel: stay; once it runs again, q can leave it running."
            )
        super().__init__("Quit boltring?", message, classes="-warning")
        self.job_id = job_id
        self.can_leave = can_leave

    def on_mount(self) -> None:
        # the default button is the one that changes least: leave, else stay
        self.query_one("#leave" if self.can_leave else "#cancel").focus()

    def buttons(self) -> Sequence[tuple[str, str, str]]:
        leave = [("leave", "Leave it running", "primary")] if self.can_leave else []
        return [*leave, ("kill", "Kill it", "error"), ("cancel", "Cancel", "default")]

    def key_hints(self) -> str:
        leave = "l: leave it running   " if self.can_leave else ""
        return f"{leave}k: kill it   n / esc: cancel"

    def action_choose(self, button_id: str) -> None:
        if button_id == LEAVE and not self.can_leave:
            self.app.bell()
            return
        super().action_choose(button_id)
