"""StatusHeader: cluster, config file, job state, elapsed time, global step and loss."""

from __future__ import annotations

from pathlib import PurePath

from textual import events
from textual.content import Content
from textual.widgets import Static

from ..view_state import ClusterView, fmt_elapsed, fmt_loss
from .check_list import check_item

STATE_STYLE = {
    "idle": "$text-muted",
    "checking": "bold $warning",
    "launching": "bold $warning",
    "running": "bold $success",
    "finished": "bold $primary",
    "failed": "bold $error",
    "killed": "bold $warning",
}


def short_path(path: str | None, limit: int = 28) -> str:
    if not path:
        return "no config file"
    if len(path) <= limit:
        return path
    parts = PurePath(path).parts
    if len(parts) >= 2:
        tail = "…/" + str(PurePath(*parts[-2:]))
        if len(tail) <= limit:
            return tail
    if len(parts[-1]) <= limit:
        return parts[-1]
    return "…" + path[-(limit - 1) :]


class StatusHeader(Static):
    """One line, shortened to fit narrow terminals; a second line appears for an error, a
    failed or killed job's reason, or a ring check that is not ok."""

    DEFAULT_CSS = """
    StatusHeader {
        dock: top;
        height: 1;
        width: 1fr;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._last: Content | None = None
        self._args: tuple[ClusterView, float] | None = None

    def _line(self, view: ClusterView, now: float, compact: int) -> Content:
        sep = (" │ " if compact else "  │  ", "$text-muted")
        elapsed = view.elapsed(now)
        if view.started_t is not None:
            step = f"step {view.step}/{view.total_steps}"
        else:
            step = f"{view.total_steps} steps"
        clock = fmt_elapsed(elapsed) if elapsed is not None else "--:--:--"
        parts: list[str | tuple[str, str]] = []
        if compact < 2:
            parts.append(("boltring ", "bold $accent"))
        parts += [
            (view.config.name, "bold"),
            sep,
            (short_path(view.config.source, 28 if compact < 2 else 18), "$text-muted"),
            sep,
            ("● " + view.state, STATE_STYLE.get(view.state, "bold")),
            sep,
        ]
        if not compact:
            parts.append(("elapsed ", "$text-muted"))
        parts += [(clock, ""), sep, (step, ""), sep, ("loss ", "$text-muted"), (fmt_loss(view.loss), "bold")]
        return Content.assemble(*parts)

    def update_from(self, view: ClusterView, now: float) -> None:
        self._args = (view, now)
        width = self.content_region.width or self.app.size.width - 2
        for compact in (0, 1, 2):
            line = self._line(view, now, compact)
            if line.cell_length <= width:
                break
        extra: list[Content] = []
        if view.error:
            extra.append(Content.styled(f"⚠ {view.error}", "bold $error"))
        if view.reason and view.state in ("failed", "killed"):
            reason = view.reason if view.reason.startswith(view.state) else f"{view.state}: {view.reason}"
            extra.append(Content.styled(reason, STATE_STYLE[view.state]))
        bad_ring = [c for c in view.ring_checks.values() if c.status in ("warn", "fail")]
        if bad_ring:
            items = Content("  ").join(check_item(c) for c in bad_ring)
            extra.append(Content.styled("ring ", "bold") + items)
        if extra:
            second = Content("   ").join(extra).truncate(max(width, 10), ellipsis=True)
            content = Content("\n").join([line, second])
        else:
            content = line
        if content != self._last:
            self._last = content
            self.update(content)
            # A docked auto-height widget is not re-measured on update: size it ourselves.
            self.styles.height = 2 if extra else 1

    def on_resize(self, event: events.Resize) -> None:
        if self._args is not None:
            self.update_from(*self._args)
