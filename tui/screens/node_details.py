"""NodeDetailsScreen: one node's checks (with hints), its ranks and its full log."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Static

from boltring.cluster.states import CheckStatus

from ..check_items import CHECK_MARKS
from ..fmt import node_address
from ..node_state import NodeView
from ..view_state import ClusterView
from ..widgets.check_list import STATUS_STYLE
from ..widgets.log_pane import LogPane
from ..widgets.rank_row import RankHeader, RankRow
from ..widgets.ssh_badge import SshBadge


def checks_table(view: NodeView) -> Content:
    checks = view.sorted_checks()
    if not checks:
        return Content.styled("no check results yet (c runs the checks)", "italic $text-muted")
    name_w = max(len(c.name) for c in checks)
    value_w = max((len(c.value or "") for c in checks), default=0)
    lines = []
    for c in checks:
        style = STATUS_STYLE.get(c.status, "")
        parts: list[str | tuple[str, str]] = [
            (CHECK_MARKS.get(c.status, "?"), f"bold {style}"),
            " ",
            (c.status.ljust(7), style),
            " ",
            (c.name.ljust(name_w), "bold"),
            "  ",
            ((c.value or "").ljust(value_w), ""),
        ]
        if c.hint:
            parts += ["  ", (c.hint, "$text-muted" if c.status == CheckStatus.OK else style)]
        lines.append(Content.assemble(*parts))
    return Content("\n").join(lines)


class NodeDetailsScreen(Screen):
    """Pushed by enter on a node panel; escape goes back. Refreshed by the app's timer."""

    BINDINGS = [
        Binding("escape", "close", "Back", id="details.close"),
    ]

    DEFAULT_CSS = """
    NodeDetailsScreen { layout: vertical; }
    NodeDetailsScreen > #details-head {
        height: 1;
        background: $panel;
        padding: 0 1;
    }
    NodeDetailsScreen #details-name { width: auto; text-style: bold; padding: 0 1 0 0; }
    NodeDetailsScreen #details-address { width: 1fr; color: $text-muted; }
    NodeDetailsScreen > #details-top { height: auto; max-height: 50%; }
    NodeDetailsScreen #details-checks-box {
        height: auto;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    NodeDetailsScreen #details-ranks {
        height: auto;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    NodeDetailsScreen > LogPane { height: 1fr; }
    """

    def __init__(self, view: ClusterView, node: str, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.view = view
        self.node = node
        self.node_view = view.nodes[node]
        self._cursor_blink = cursor_blink
        self._checks_shown: tuple = ()
        self._rank_ids: tuple[int, ...] = ()
        self._address_shown = ""

    def compose(self) -> ComposeResult:
        nv = self.node_view
        with Horizontal(id="details-head"):
            yield Static(nv.name, id="details-name", markup=False)
            self._address_shown = self._address()
            yield Static(self._address_shown, id="details-address", markup=False)
            yield SshBadge(nv.ssh_state)
        with Vertical(id="details-top"):
            with Vertical(id="details-checks-box") as box:
                box.border_title = "checks"
                yield Static(checks_table(nv), id="details-checks", markup=False)
            with Vertical(id="details-ranks") as ranks:
                ranks.border_title = "ranks"
                self._rank_ids = tuple(sorted(nv.ranks))
                yield RankHeader()
                for rank in self._rank_ids:
                    yield RankRow(rank)
        yield LogPane(node=nv.name, lock_node=True, cursor_blink=self._cursor_blink, id="details-log")
        yield Footer()

    def _address(self) -> str:
        node = self.node_view.node
        extra = [f"{node.ranks} rank{'s' if node.ranks != 1 else ''}"]
        if node.chip:
            extra.append(node.chip)
        if node.memory_gb:
            extra.append(f"{node.memory_gb:g} GB")
        if node.ring_iface:
            extra.append(node.ring_iface)
        if self.node_view.ssh_detail:
            extra.append(self.node_view.ssh_detail)
        return f"{node_address(node)} · " + " · ".join(extra)

    def on_mount(self) -> None:
        self.refresh_from(self.app_clock())

    def app_clock(self) -> float:
        return self.view.clock()

    def refresh_from(self, now: float) -> None:
        nv = self.node_view
        self.query_one(SshBadge).set_state(nv.ssh_state)
        # its SSH detail changes while the screen is open ("no SSH answer" until it reconnects)
        address = self._address()
        if address != self._address_shown:
            self._address_shown = address
            self.query_one("#details-address", Static).update(address)
        checks = tuple(nv.sorted_checks())
        if checks != self._checks_shown:
            self._checks_shown = checks
            self.query_one("#details-checks", Static).update(checks_table(nv))
        self._refresh_ranks(now)
        self.query_one(LogPane).sync(self.view)

    def _refresh_ranks(self, now: float) -> None:
        nv = self.node_view
        box = self.query_one("#details-ranks", Vertical)
        ranks = tuple(sorted(nv.ranks))
        if ranks != self._rank_ids:  # a rank moved to or from this node: new rows, drawn next tick
            self._rank_ids = ranks
            box.remove_children()
            box.mount_all([RankHeader(), *(RankRow(r) for r in ranks)])
            return
        # the tok/s column, as the node's panel shows it, when its ranks train a language model
        tokens = any(rv.tokens_per_s is not None for rv in nv.ranks.values())
        header = box.query_one(RankHeader)
        if header.tokens != tokens:
            header.tokens = tokens
            header.refresh()
        for row in box.query(RankRow):
            rv = nv.ranks.get(row.rank)
            if rv is not None:
                row.tokens = tokens
                row.update_from(rv, now, nv.memory_mb)

    def action_close(self) -> None:
        self.dismiss()
