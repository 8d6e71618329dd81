"""CheckList: a node's check results as status marks and values, packed into lines."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import RenderResult
from textual.content import Content
from textual.geometry import Size
from textual.widget import Widget

from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.states import CheckStatus

from ..check_items import CHECK_MARKS, check_label

STATUS_STYLE = {
    CheckStatus.OK: "$success",
    CheckStatus.WARN: "$warning",
    CheckStatus.FAIL: "$error",
    CheckStatus.SKIPPED: "$text-muted",
}


def check_item(check: CheckResult) -> Content:
    mark = CHECK_MARKS.get(check.status, "?")
    parts: list[str | tuple[str, str]] = [
        (mark, f"bold {STATUS_STYLE.get(check.status, '')}".strip()),
        " ",
        (check_label(check.name), "$text-muted"),
    ]
    if check.value:
        fail = check.status == CheckStatus.FAIL
        parts += [" ", (check.value, STATUS_STYLE[CheckStatus.FAIL] if fail else "")]
    return Content.assemble(*parts)


_State = tuple[tuple[CheckResult, ...], int, str, int]


class CheckList(Widget):
    """Packs "✓ label value" items greedily into as many lines as the width needs.

    Under the items, the hint of the first failing check (one line, cut to the width) says
    what to do; the details screen shows every hint in full.
    """

    DEFAULT_CSS = """
    CheckList {
        height: auto;
        width: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._state: _State = ((), 0, "checks not run", 0)

    def set_checks(
        self, checks: Sequence[CheckResult], more_ok: int, placeholder: str, skipped: int = 0
    ) -> None:
        """`more_ok`: ok checks left out of the list, shown as one "✓ N more ok" item;
        `skipped`: checks that could not run (no connection), folded into "+N skipped"."""
        state = (tuple(checks), more_ok, placeholder, skipped)
        if state == self._state:
            return
        width = self.size.width
        resize = len(self._lines(width)) != len(self._lines(width, state))
        self._state = state
        self.refresh(layout=resize)

    def _lines(self, width: int, state: _State | None = None) -> list[Content]:
        checks, more_ok, placeholder, skipped = self._state if state is None else state
        width = max(width, 10)
        if not checks and not more_ok and not skipped:
            return [Content.styled(placeholder, "italic $text-muted")]
        items = [check_item(c) for c in checks]
        if more_ok:
            what = f"{more_ok} more ok" if checks else f"all {more_ok} checks ok"
            ok = STATUS_STYLE[CheckStatus.OK]
            items.append(Content.assemble(("✓", f"bold {ok}"), " ", (what, "$text-muted")))
        if skipped:
            items.append(Content.styled(f"+{skipped} skipped", "$text-muted"))
        lines: list[Content] = []
        line = Content("")
        for item in items:
            item = item.truncate(width, ellipsis=True)
            if line.cell_length and line.cell_length + 2 + item.cell_length > width:
                lines.append(line)
                line = Content("")
            line = line + "  " + item if line.cell_length else item
        lines.append(line)
        hint = next((c.hint for c in checks if c.status == CheckStatus.FAIL and c.hint), None)
        if hint:
            lines.append(Content.styled(f"↳ {hint}", "$error").truncate(width, ellipsis=True))
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines(width))

    def render(self) -> RenderResult:
        return Content("\n").join(self._lines(self.size.width))
