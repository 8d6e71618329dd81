"""LogPane: controller events and worker output, filterable by node and by text."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual import events, on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, RichLog

from ..fmt import fmt_clock
from ..node_state import Level, LogEntry
from ..view_state import ClusterView

LEVEL_STYLE: dict[str, str] = {Level.WARN: "yellow", Level.ERROR: "bold red"}
MAX_LINES = 2_000


def format_entry(entry: LogEntry) -> Text:
    text = Text(no_wrap=False)
    text.append(fmt_clock(entry.t), "dim")
    text.append(" ")
    source = entry.source if entry.source else "-"
    text.append(source, "cyan" if source.startswith("rank") else "magenta")
    text.append(" ")
    text.append(entry.text, LEVEL_STYLE.get(entry.level, ""))
    return text


class LogPane(Vertical):
    """A RichLog of at most MAX_LINES lines, fed from the ClusterView by the refresh timer.

    `node_filter` narrows it to one node's log; `/` opens an input whose text narrows it
    further (case-insensitive substring of source and text). Changing a filter rewrites the
    pane from the kept history; otherwise only entries newer than the last written are added.
    """

    BINDINGS = [
        Binding("escape", "clear_text_filter", "Clear filter", show=False, id="log.clear_filter"),
    ]

    DEFAULT_CSS = """
    LogPane {
        height: 1fr;
        width: 1fr;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
    }
    LogPane:focus-within { border: round $accent; }
    LogPane > Input, LogPane > Input:focus {
        display: none;
        height: 1;
        border: none;
        padding: 0 1;
        background: $boost;
    }
    LogPane.-filtering > Input { display: block; }
    LogPane > RichLog {
        height: 1fr;
        background: $surface;
        scrollbar-size-vertical: 1;
        padding: 0 0 0 1;
    }
    """

    def __init__(
        self,
        *,
        node: str | None = None,
        lock_node: bool = False,
        cursor_blink: bool = True,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.node_filter = node
        self.lock_node = lock_node  # a details screen's pane always shows its own node
        self.text_filter = ""
        self._cursor_blink = cursor_blink
        self._last_seq = 0
        self._dirty = True
        self._width = 0
        self._left_at_y: int | None = None  # the scroll position sync left a following log at

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter the log (enter: keep, esc: clear)", id="log-filter")
        yield RichLog(
            max_lines=MAX_LINES,
            min_width=20,
            wrap=True,
            markup=False,
            highlight=False,
            auto_scroll=True,
            id="log-lines",
        )

    def on_mount(self) -> None:
        self.query_one(Input).cursor_blink = self._cursor_blink
        self._update_title()

    def on_resize(self, event: events.Resize) -> None:
        # RichLog wraps a line when it is written: rewrite the kept history at the new width.
        if event.size.width != self._width:
            self._width = event.size.width
            self._dirty = True
        elif self._left_at_y is not None:  # shorter or taller: a following log stays at its end
            self.call_after_refresh(self._keep_at_end)

    # -- filters --------------------------------------------------------------------------

    def set_node_filter(self, node: str | None) -> None:
        if self.lock_node or node == self.node_filter:
            return
        self.node_filter = node
        self._dirty = True
        self._update_title()

    def set_text_filter(self, text: str) -> None:
        if text == self.text_filter:
            return
        self.text_filter = text
        self._dirty = True
        self._update_title()

    def open_filter(self) -> None:
        self.add_class("-filtering")
        box = self.query_one(Input)
        box.value = self.text_filter
        box.focus()

    def close_filter(self, clear: bool) -> None:
        if clear:
            self.query_one(Input).value = ""
            self.set_text_filter("")
        self.remove_class("-filtering")

    def action_clear_text_filter(self) -> None:
        if not (self.has_class("-filtering") or self.text_filter):
            raise SkipAction()  # nothing of ours to clear: let the screen or app have escape
        had_focus = self.query_one(Input).has_focus
        self.close_filter(clear=True)
        if had_focus:
            self.query_one(RichLog).focus()

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.set_text_filter(event.value)

    @on(Input.Submitted, "#log-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_text_filter(event.value)
        self.close_filter(clear=False)
        self.query_one(RichLog).focus()

    def _update_title(self) -> None:
        parts = ["log"]
        parts.append(self.node_filter if self.node_filter else "all nodes")
        if self.text_filter:
            parts.append(f"/{self.text_filter}/")
        self.border_title = " · ".join(parts)
        if not self.lock_node and (self.node_filter or self.text_filter):
            self.border_subtitle = "esc: all"
        else:
            self.border_subtitle = ""

    # -- content --------------------------------------------------------------------------

    def _matches(self, entry: LogEntry) -> bool:
        if not self.text_filter:
            return True
        needle = self.text_filter.lower()
        return needle in entry.text.lower() or needle in entry.source.lower()

    def _source(self, view: ClusterView) -> deque[LogEntry]:
        if self.node_filter:
            nv = view.nodes.get(self.node_filter)
            return nv.log if nv is not None else deque()
        return view.log

    def sync(self, view: ClusterView) -> None:
        """Write what is new since the last call (or everything, after a filter change)."""
        entries = self._source(view)
        log = self.query_one(RichLog)
        # Follow new lines only while the user is at the bottom: reading older lines is not
        # interrupted by a busy job.
        follow = self._dirty or self._following(log)
        if self._dirty:
            self._dirty = False
            log.clear()
            fresh: Iterable[LogEntry] = entries
        else:
            fresh = self._newer(entries)
        matching = [e for e in fresh if self._matches(e)]
        log.auto_scroll = follow
        for entry in matching[-MAX_LINES:]:
            log.write(format_entry(entry))
        if follow and matching:
            # now rather than after the next refresh, so what is shown never lags the state
            log.scroll_end(animate=False, immediate=True, x_axis=False)
            # and again once the layout settled: lines the log had to wait for its size to
            # render, or a pane made shorter meanwhile, move the bottom after this (a busy
            # machine left the log two lines above its newest until the next line came)
            self.call_after_refresh(self._keep_at_end)
        if follow:
            self._left_at_y = log.scroll_offset.y
        if entries:
            self._last_seq = max(self._last_seq, entries[-1].seq)

    def _keep_at_end(self) -> None:
        log = self.query_one(RichLog)
        if self._following(log):  # unless the user scrolled up meanwhile
            log.scroll_end(animate=False, immediate=True, x_axis=False)
            self._left_at_y = log.scroll_offset.y

    def _following(self, log: RichLog) -> bool:
        """At the bottom, or where we last left it: the pane getting shorter (node panels
        grow when ranks start) or lines re-wrapping moves the bottom away without the user
        scrolling, and must not stop the log from following. Only scrolling up does."""
        if log.is_vertical_scroll_end:
            return True
        return self._left_at_y is not None and log.scroll_offset.y >= self._left_at_y

    def _newer(self, entries: deque[LogEntry]) -> list[LogEntry]:
        out: list[LogEntry] = []
        for entry in reversed(entries):
            if entry.seq <= self._last_seq:
                break
            out.append(entry)
        out.reverse()
        return out
