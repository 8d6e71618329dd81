"""RankRow: one rank as one compact row (step, loss, samples/s, tokens/s, all-reduce ms per step,
ring bytes out/in per second, a memory bar against the node's memory), under a RankHeader.

Which columns a row shows depends on its width: `rank_columns` picks them by priority, the same
for every row of a panel and for its header, so the rows line up like a table (grove, nvtop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.app import RenderResult
from textual.content import Content
from textual.widget import Widget

from ..fmt import fmt_age, fmt_bytes, fmt_loss, fmt_num, fmt_si, spark
from ..node_state import RankStatus, RankView

_STATUS_STYLE = {
    RankStatus.PLANNED: "$text-muted",
    RankStatus.STARTED: "$warning",
    RankStatus.DONE: "$success",
    RankStatus.FAILED: "bold $error",
    RankStatus.LOST: "bold $error",
    RankStatus.KILLED: "$warning",
    RankStatus.UNREAD: "bold $warning",
}
_BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"


def mem_bar(used_mb: float | None, total_mb: float | None, width: int) -> Content:
    """ "▕███▍  ▏12G": used memory against the node's, coloured when nearly full."""
    if used_mb is None:
        return Content("—".rjust(width))
    label = f"{used_mb / 1024:.1f}G" if used_mb < 100 * 1024 else f"{used_mb / 1024:.0f}G"
    cells = width - len(label) - 1
    if total_mb is None or total_mb <= 0 or cells < 2:
        return Content(label.rjust(width))
    frac = min(1.0, used_mb / total_mb)
    eighths = round(frac * cells * 8)
    bar = "█" * (eighths // 8) + (_BAR_EIGHTHS[eighths % 8] if eighths % 8 else "")
    style = "$error" if frac > 0.95 else "$warning" if frac > 0.8 else "$accent"
    return Content.assemble((bar.ljust(cells), f"{style} on $boost"), " ", label)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int
    priority: int  # lower is kept longer when the row is narrow
    cell: Callable[[RankView, float, float | None], Content | str]


def _r(text: str, width: int) -> str:
    return text[:width].rjust(width)


COLUMNS: tuple[Column, ...] = (
    Column("rank", "rk", 3, 0, lambda r, now, mem: Content.styled(f"r{r.rank}".ljust(3), "bold")),
    Column("step", "step", 6, 1, lambda r, now, mem: _r(str(r.step), 6)),
    Column("loss", "loss", 7, 5, lambda r, now, mem: _r(fmt_loss(r.loss, 7), 7)),
    Column("smp", "smp/s", 6, 2, lambda r, now, mem: _r(fmt_si(r.samples_per_s), 6)),
    Column("tok", "tok/s", 6, 4, lambda r, now, mem: _r(fmt_si(r.tokens_per_s), 6)),
    Column("ar", "ar ms", 5, 3, lambda r, now, mem: _r(fmt_num(r.allreduce_ms), 5)),
    Column("net", "net ↑ ↓/s", 10, 6, lambda r, now, mem: _r(_net(r), 10)),
    Column("mem", "memory", 10, 4, lambda r, now, mem: mem_bar(r.mem_mb, mem, 10)),
    Column("gbps", "GB/s", 5, 8, lambda r, now, mem: _r(fmt_num(r.allreduce_gbps), 5)),
    Column("age", "seen", 4, 7, lambda r, now, mem: _r(_age(r, now), 4)),
)
SPARK_MIN = 8  # the all-reduce sparkline takes what is left, when at least this much is


def _net(r: RankView) -> str:
    if r.sent_per_s is None and r.recv_per_s is None:
        return "—"
    return f"{fmt_bytes(r.sent_per_s)}↑{fmt_bytes(r.recv_per_s)}↓"


def _content(value: Content | str) -> Content:
    return value if isinstance(value, Content) else Content(value)


def _age(r: RankView, now: float) -> str:
    age = r.age(now) if r.active or r.status == RankStatus.LOST else None
    return "" if age is None else fmt_age(age)


def rank_columns(width: int, tokens: bool) -> tuple[list[Column], int]:
    """The columns that fit `width` (by priority, shown in table order) and the sparkline width."""
    chosen: set[str] = set()
    used = -1
    for col in sorted(COLUMNS, key=lambda c: c.priority):
        if col.key == "tok" and not tokens:
            continue
        if used + 1 + col.width <= width:
            chosen.add(col.key)
            used += 1 + col.width
    spark_w = width - used - 1 if width - used - 1 >= SPARK_MIN and "gbps" in chosen else 0
    return [c for c in COLUMNS if c.key in chosen], spark_w


class RankHeader(Widget):
    """The column names over a panel's rank rows."""

    DEFAULT_CSS = """
    RankHeader { height: 1; width: 1fr; color: $text-muted; text-style: bold; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.tokens = False

    def render(self) -> RenderResult:
        cols, spark_w = rank_columns(self.size.width, self.tokens)
        heads = [c.header.ljust(c.width) if c.key == "rank" else c.header.rjust(c.width) for c in cols]
        if spark_w:
            heads.append("all-reduce".ljust(spark_w))
        return Content(" ".join(heads))


class RankRow(Widget):
    """One line per rank; a rank that is not running says why in words (never an exit code)."""

    DEFAULT_CSS = """
    RankRow { height: 1; width: 1fr; }
    RankRow.-stale { color: $warning; }
    RankRow.-gone { color: $error; }
    """

    def __init__(self, rank: int, *, classes: str | None = None) -> None:
        super().__init__(id=f"rank-{rank}", classes=classes)
        self.rank = rank
        self.tokens = False
        self._args: tuple[RankView, float, float | None] | None = None
        self._key: object = None

    def update_from(self, rv: RankView, now: float, memory_mb: float | None = None) -> None:
        self._args = (rv, now, memory_mb)
        self.styles.height = 2 if rv.extras else 1  # a second line for the script's own fields
        key = (self._line(self.size.width), self.tokens)
        self.set_class(rv.stale(now), "-stale")
        self.set_class(rv.status in (RankStatus.FAILED, RankStatus.LOST), "-gone")
        if key != self._key:
            self._key = key
            self.refresh()

    def text(self) -> str:
        """The row as plain text, at its current width (for tests)."""
        return self._line(self.size.width or 120).plain

    def _status_text(self, rv: RankView, now: float) -> str | None:
        silent = rv.silent_for(now)
        if silent is not None:
            return f"stalled, silent {silent:.0f} s · step {rv.step}"
        label = {
            RankStatus.PLANNED: "not running",
            RankStatus.STARTED: "started, waiting for metrics",
            RankStatus.DONE: f"done at step {rv.step}",
            RankStatus.FAILED: f"failed at step {rv.step}",
            RankStatus.LOST: f"lost at step {rv.step}",
            RankStatus.KILLED: f"stopped at step {rv.step}",
            # its node cannot be read: the step it was last read at, when it was read at all
            RankStatus.UNREAD: "not read" + (f" since step {rv.step}" if rv.last_metrics_t else ""),
        }.get(rv.status)
        # a rank stopped by you has no reason; one boltring stopped says because of what
        if (
            label is not None
            and rv.reason
            and rv.status in (RankStatus.FAILED, RankStatus.LOST, RankStatus.KILLED, RankStatus.UNREAD)
        ):
            label += f": {rv.reason}"
        return label

    def _line(self, width: int) -> Content:
        if self._args is None:
            return Content("")
        rv, now, memory_mb = self._args
        extras = rv.extras
        row = self._row(rv, now, memory_mb, width)
        return row + "\n" + _extras_line(extras, width) if extras else row

    def _row(self, rv: RankView, now: float, memory_mb: float | None, width: int) -> Content:
        head = Content.styled(f"r{rv.rank}".ljust(4), "bold")
        status = self._status_text(rv, now)
        if status is not None:
            style = "bold $warning" if rv.stalled_s is not None else _STATUS_STYLE.get(rv.status, "")
            return (head + " " + Content.styled(status, style)).truncate(max(width, 1), ellipsis=True)
        cols, spark_w = rank_columns(width, self.tokens)
        cells = [_content(c.cell(rv, now, memory_mb)) for c in cols]
        line = Content(" ").join(cells)
        if spark_w:
            line += " " + Content.styled(spark(list(rv.gbps_history), spark_w), "$accent")
        return line

    def render(self) -> RenderResult:
        return self._line(self.size.width)


def _extras_line(extras: dict[str, float], width: int) -> Content:
    """The script's own report() fields under the row, `name value` pairs, cut to the width."""
    pairs = "  ".join(f"{name} {value:.4g}" for name, value in extras.items())
    return Content.styled(f"    {pairs}", "$text-muted").truncate(max(width, 1), ellipsis=True)
