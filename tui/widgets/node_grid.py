"""NodeGrid: the node panels in a grid whose column count follows the terminal width."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import VerticalScroll

from ..node_state import NodeView
from .node_panel import NodePanel

PANEL_MIN_WIDTH = 38  # a panel narrower than this wraps its rank lines


class NodeGrid(VerticalScroll, can_focus=False):
    """As many columns as fit PANEL_MIN_WIDTH (at most one per node); scrolls vertically."""

    DEFAULT_CSS = """
    NodeGrid {
        layout: grid;
        grid-size: 1;
        grid-rows: auto;
        grid-gutter: 0 1;
        height: auto;
        padding: 0 0;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, nodes: list[NodeView], *, connect_timeout_s: float = 0, id: str | None = None) -> None:
        super().__init__(id=id)
        self._node_views = nodes
        self.connect_timeout_s = connect_timeout_s

    def compose(self) -> ComposeResult:
        for i, nv in enumerate(self._node_views):
            yield NodePanel(nv, connect_timeout_s=self.connect_timeout_s, id=f"node-{i}")

    def columns_for(self, width: int) -> int:
        gutter = 1
        width -= 1  # room for the vertical scrollbar when the panels overflow
        fit = max(1, (width + gutter) // (PANEL_MIN_WIDTH + gutter))
        return max(1, min(fit, len(self._node_views) or 1))

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width)

    def on_mount(self) -> None:
        self._fit(self.size.width)

    def _fit(self, width: int) -> None:
        if width <= 0:
            return
        columns = self.columns_for(width)
        if self.styles.grid_size_columns != columns:
            self.styles.grid_size_columns = columns

    def panel(self, node: str) -> NodePanel | None:
        for panel in self.query(NodePanel):
            if panel.node_name == node:
                return panel
        return None
