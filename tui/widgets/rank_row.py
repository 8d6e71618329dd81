"""RankRow: one rank's throughput, all-reduce history and freshness, in two lines."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Sparkline, Static

from ..view_state import RankView, fmt_age, fmt_mem, fmt_num

_STATUS_STYLE = {
    "planned": "$text-muted",
    "started": "$warning",
    "done": "$success",
    "failed": "bold $error",
    "lost": "bold $error",
    "killed": "$warning",
}


class RankRow(Vertical):
    """Line 1: rank, steps/s, samples/s, memory (or its state when not running).
    Line 2: all-reduce GB/s, a sparkline of its recent history, time since its last metrics
    line (warning colour once stale)."""

    DEFAULT_CSS = """
    RankRow {
        height: auto;
        width: 1fr;
    }
    RankRow.-planned > Horizontal { display: none; }
    RankRow > .rank-stats { height: 1; width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    RankRow > Horizontal { height: 1; width: 1fr; }
    RankRow .rank-gbps { width: auto; min-width: 11; color: $text; }
    RankRow Sparkline { width: 1fr; height: 1; margin: 0 1 0 0; }
    RankRow .rank-age { width: auto; min-width: 4; color: $text-muted; text-align: right; }
    RankRow.-stale .rank-age { color: $warning; text-style: bold; }
    RankRow.-stale Sparkline > .sparkline--max-color { color: $warning; }
    RankRow.-stale Sparkline > .sparkline--min-color { color: $warning 40%; }
    RankRow.-gone .rank-age { color: $error; }
    RankRow.-gone Sparkline > .sparkline--max-color { color: $error 70%; }
    RankRow.-gone Sparkline > .sparkline--min-color { color: $error 30%; }
    """

    def __init__(self, rank: int, *, classes: str | None = None) -> None:
        super().__init__(id=f"rank-{rank}", classes=classes)
        self.rank = rank
        self._stats = ""
        self._history_version = -1
        self._cache: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield Static("", classes="rank-stats", markup=False)
        with Horizontal():
            yield Static("", classes="rank-gbps", markup=False)
            yield Sparkline([], summary_function=max)
            yield Static("", classes="rank-age", markup=False)

    def _set(self, selector: str, content: Content | str) -> None:
        if self._cache.get(selector) != content:
            self.query_one(selector, Static).update(content)  # NoMatches before compose
            self._cache[selector] = content

    def update_from(self, rv: RankView, now: float) -> None:
        head = (f"r{rv.rank}", "bold")
        if rv.status == "running":
            stats = Content.assemble(
                head,
                " ",
                (fmt_num(rv.steps_per_s), "bold"),
                " step/s  ",
                (fmt_num(rv.samples_per_s), "bold"),
                " smp/s  ",
                (fmt_mem(rv.mem_mb), ""),
            )
        else:
            label = {
                "planned": "not running",
                "started": "started, waiting for metrics",
                "done": f"done at step {rv.step}",
                "failed": f"exited with {rv.returncode}",
                "lost": "lost",
                "killed": f"stopped at step {rv.step}",
            }.get(rv.status, rv.status)
            if rv.reason and rv.status in ("failed", "lost", "killed"):
                label += f": {rv.reason}"
            stats = Content.assemble(head, " ", (label, _STATUS_STYLE.get(rv.status, "")))
        self._set(".rank-stats", stats)
        self._set(".rank-gbps", f"{fmt_num(rv.allreduce_gbps)} GB/s")
        age = rv.age(now) if rv.active or rv.status == "lost" else None
        self._set(".rank-age", "" if age is None else fmt_age(age))
        self.set_class(rv.status == "planned" and not rv.gbps_history, "-planned")
        self.set_class(rv.stale(now), "-stale")
        self.set_class(rv.status in ("failed", "lost"), "-gone")
        if rv.history_version != self._history_version:
            self._history_version = rv.history_version
            self.query_one(Sparkline).data = list(rv.gbps_history)
