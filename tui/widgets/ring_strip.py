"""RingStrip: the nodes in ring order, each link's effective all-reduce GB/s next to what the
bandwidth check measured for it.

No colour says a link is slow: the live figure is bytes sent over the time inside collectives,
waiting for a slower rank included (netio Group.report), so a rank that computes longer than its
neighbour makes the link look slow when the cable is fine. Blaming the link there would be
false; `boltring bench --cluster` measures what the links carry."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from ..fmt import fmt_num
from ..view_state import ClusterView


def ring_content(view: ClusterView, width: int = 0) -> Content:
    """The strip; the legend is left out when it would not fit on one line."""
    links = view.ring_links()
    if not links:
        return Content.styled("ring  one node: no links", "$text-muted")
    parts: list[Content] = [Content.styled("ring ", "bold")]
    known = any(live is not None or measured is not None for _, _, live, measured in links)
    for name, _nxt, live, measured in links:
        parts.append(Content.styled(name, "bold $accent"))
        if not known:
            parts.append(Content(" ⇄ "))
            continue
        figure = Content.assemble(
            (fmt_num(live) if live is not None else "–", ""),
            ("/" + (fmt_num(measured) if measured is not None else "?"), "$text-muted"),
        )
        parts.append(Content.assemble(" ⇄", figure, "⇄ "))
    parts.append(Content.styled("↺", "bold $accent"))
    strip = Content("").join(parts)
    if not known:
        # after the ring was reordered the checks' figures are of links the ring no longer has
        said = "these links not measured yet" if view.measured_links() else "no bandwidth measured yet"
        return strip + Content.styled(f"  {said}", "$text-muted")
    legend = Content.styled("  GB/s effective/checked", "$text-muted")
    if width and strip.cell_length + legend.cell_length > width:
        legend = Content.styled(" GB/s", "$text-muted")
    return strip + legend


def _lines(content: Content, width: int) -> int:
    return -(-content.cell_length // max(width, 1))


class RingStrip(Static):
    DEFAULT_CSS = """
    RingStrip { height: auto; width: 1fr; padding: 0 1; background: $surface; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._last: Content | None = None

    def update_from(self, view: ClusterView) -> None:
        width = self.content_region.width
        content = ring_content(view, width)
        if content != self._last:
            # new figures on the same number of lines: repaint, no layout of the screen
            fits = self._last is not None and width > 0
            same = fits and self._last is not None and _lines(self._last, width) == _lines(content, width)
            self._last = content
            self.update(content, layout=not same)
