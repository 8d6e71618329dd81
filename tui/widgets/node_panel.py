"""NodePanel: one node of the cluster, its connection, its checks and its ranks."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from ..fmt import node_address
from ..messages import NodeDetailsRequested, NodeSelected
from ..node_state import NodeView, RankStatus
from .check_list import CheckList
from .rank_row import RankHeader, RankRow
from .ssh_badge import SshBadge


class NodePanel(Vertical, can_focus=True):
    """Focus it (tab or click) to filter the log to this node; enter opens its details."""

    BINDINGS = [
        Binding("enter", "details", "Details", id="node.details"),
    ]

    DEFAULT_CSS = """
    NodePanel {
        height: auto;
        min-width: 36;
        border: round $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        background: $surface;
    }
    NodePanel:focus {
        border: round $accent;
        background-tint: $accent 6%;
    }
    NodePanel.-lost { border: round $error; }
    NodePanel.-lost:focus { border: double $error; }
    NodePanel.-stale { border: round $warning; }
    NodePanel > .node-head { height: 1; width: 1fr; }
    NodePanel .node-address { width: 1fr; color: $text-muted; }
    NodePanel > CheckList { margin: 0 0 0 0; }
    NodePanel > .node-ranks { height: auto; width: 1fr; }
    """

    def __init__(self, view: NodeView, *, connect_timeout_s: float = 0, id: str | None = None) -> None:
        super().__init__(id=id)
        self.connect_timeout_s = connect_timeout_s
        self.view = view
        self.node_name = view.name
        self.border_title = view.name
        self._rank_ids: tuple[int, ...] = ()

    def compose(self) -> ComposeResult:
        with Horizontal(classes="node-head"):
            yield Static(node_address(self.view.node), classes="node-address", markup=False)
            yield SshBadge(self.view.ssh_state)
        yield CheckList()
        self._rank_ids = tuple(sorted(self.view.ranks))
        with Vertical(classes="node-ranks"):
            yield RankHeader()
            for rank in self._rank_ids:
                yield RankRow(rank)

    def update_from(self, now: float, checking: bool, job_running: bool = False) -> None:
        """Render the panel from its NodeView (called by the app's refresh timer). While a
        job runs, only the checks that are not ok are listed, to leave room for the ranks."""
        view = self.view
        waited = now - view.ssh_since if view.ssh_since is not None else None
        self.query_one(SshBadge).set_state(view.ssh_state, waited, self.connect_timeout_s)
        placeholder = "checking…" if checking else "checks not run"
        shown, more_ok, skipped = view.panel_checks(compact=job_running)
        self.query_one(CheckList).set_checks(shown, more_ok, placeholder, skipped)
        ranks = tuple(sorted(view.ranks))
        box = self.query_one(".node-ranks", Vertical)
        if ranks != self._rank_ids:  # a rank moved (rare): rebuild the rows
            self._rank_ids = ranks
            box.remove_children()
            box.mount_all([RankHeader(), *(RankRow(r) for r in ranks)])
            return
        stale = False
        tokens = any(rv.tokens_per_s is not None for rv in view.ranks.values())
        header = box.query_one(RankHeader)
        if header.tokens != tokens:
            header.tokens = tokens
            header.refresh()
        header.display = any(rv.status != RankStatus.PLANNED for rv in view.ranks.values())
        memory = view.memory_mb
        for row in box.query(RankRow):
            rv = view.ranks[row.rank]
            row.tokens = tokens
            row.update_from(rv, now, memory)
            stale = stale or rv.stale(now)
        self.set_class(view.lost, "-lost")
        self.set_class(stale and not view.lost, "-stale")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # under a dialog the footer must show the dialog's keys, not this panel's
        return not isinstance(self.app.screen, ModalScreen)

    def on_focus(self) -> None:
        self.post_message(NodeSelected(self.node_name))

    def action_details(self) -> None:
        self.post_message(NodeDetailsRequested(self.node_name))
