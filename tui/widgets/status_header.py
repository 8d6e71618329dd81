"""StatusHeader: cluster, config file, job state, elapsed time, a progress bar with ETA, global
step, loss and the cluster's samples/s (tokens/s for language models); a second line when there
is something to say (an error, who stopped the job, a stalled rank, a restart, a bad ring check)."""

from __future__ import annotations

from pathlib import PurePath

from textual import events
from textual.content import Content
from textual.widgets import Static

from boltring.cluster.states import JobState

from ..check_items import NOT_OK
from ..fmt import fmt_age, fmt_elapsed, fmt_loss, fmt_si
from ..view_state import ClusterView
from .check_list import check_item

STATE_STYLE = {
    JobState.IDLE: "$text-muted",
    JobState.CHECKING: "bold $warning",
    JobState.LAUNCHING: "bold $warning",
    JobState.RUNNING: "bold $success",
    JobState.STALLED: "bold $warning",
    JobState.RESTARTING: "bold $warning",
    JobState.FINISHED: "bold $primary",
    JobState.FAILED: "bold $error",
    JobState.KILLED: "bold $warning",
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


def progress_bar(fraction: float, width: int) -> Content:
    done = round(max(0.0, min(1.0, fraction)) * width)
    return Content.assemble(("━" * done, "$accent"), ("━" * (width - done), "$panel-lighten-2"))


Part = str | tuple[str, str] | Content


class StatusHeader(Static):
    """One line, shortened step by step to fit narrow terminals (never cut off)."""

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
        started = view.started_t is not None
        parts: list[Part] = []
        if compact < 2:
            parts.append(("boltring ", "bold $accent"))
        parts.append((view.config.name, "bold"))
        if compact < 3:
            parts += [sep, (short_path(view.config.source, 28 if compact < 2 else 18), "$text-muted")]
        parts += [sep, ("● " + view.state, STATE_STYLE.get(view.state, "bold")), sep]
        if not compact:
            parts.append(("elapsed ", "$text-muted"))
        parts.append((fmt_elapsed(elapsed) if elapsed is not None else "--:--:--", ""))
        parts.append(sep)
        if started:
            bar = (20, 16, 10, 8, 0)[compact]
            if bar:
                parts += [progress_bar(view.progress(), bar), " "]
            parts.append((f"{view.step}/{view.total_steps}", "bold"))
            parts.append((f" {view.progress():.0%}", "$text-muted"))
            eta = view.eta()
            if view.state == JobState.STALLED:  # its last rate is not what it does now
                parts += [sep, ("ETA ", "$text-muted"), ("stalled", STATE_STYLE[JobState.STALLED])]
            elif eta is not None:
                parts += [sep, ("ETA ", "$text-muted"), (fmt_age(eta), "")]
        else:
            parts.append((f"{view.total_steps} steps", ""))
        parts += [sep, ("loss ", "$text-muted"), (fmt_loss(view.loss), "bold")]
        if started and view.state == JobState.RUNNING and compact < 3:
            samples = view.cluster_rate("samples_per_s")
            tokens = view.cluster_rate("tokens_per_s")
            if samples is not None:
                parts += [sep, (fmt_si(samples), "bold"), (" smp/s", "$text-muted")]
            if tokens is not None and compact < 2:
                parts += [" ", (fmt_si(tokens), "bold"), (" tok/s", "$text-muted")]
        return Content.assemble(*parts)

    def _second(self, view: ClusterView, now: float) -> list[Content]:
        extra: list[Content] = []
        if view.error:
            extra.append(Content.styled(f"⚠ {view.error}", "bold $error"))
        stalled = view.stalled_ranks()
        if stalled:
            who = ", ".join(f"r{r.rank} silent {r.silent_for(now) or 0:.0f} s" for r in stalled)
            extra.append(Content.styled(f"stalled: {who}", "bold $warning"))
        stopped = view.stopped_line()
        if stopped:
            extra.append(Content.styled(f"killed: {stopped}", STATE_STYLE[JobState.KILLED]))
        elif view.reason and view.state == JobState.FAILED:
            reason = view.reason if view.reason.startswith("failed") else f"failed: {view.reason}"
            extra.append(Content.styled(reason, STATE_STYLE[JobState.FAILED]))
        if view.restarts:
            last = view.restarts[-1]
            extra.append(
                Content.styled(f"restart {last.attempt}/{last.max_restarts}: {last.cause}", "$warning")
            )
        bad_ring = [c for c in view.ring_checks.values() if c.status in NOT_OK]
        if bad_ring:
            items = Content("  ").join(check_item(c) for c in bad_ring)
            extra.append(Content.styled("ring ", "bold") + items)
        return extra

    def update_from(self, view: ClusterView, now: float) -> None:
        self._args = (view, now)
        width = self.content_region.width or self.app.size.width - 2
        for compact in range(5):
            line = self._line(view, now, compact)
            if line.cell_length <= width:
                break
        line = line.truncate(max(width, 10), ellipsis=True)
        extra = self._second(view, now)
        if extra:
            second = Content("   ").join(extra).truncate(max(width, 10), ellipsis=True)
            content = Content("\n").join([line, second])
        else:
            content = line
        if content != self._last:
            # Its height is set here, not measured: a new elapsed time or ETA needs a repaint of
            # this line only, never a layout of the whole screen (4 times a second).
            lines = 2 if extra else 1
            same_height = (
                self._last is not None
                and self.styles.height is not None
                and (self.styles.height.value == lines)
            )
            self._last = content
            self.update(content, layout=not same_height)
            self.styles.height = lines

    def on_resize(self, event: events.Resize) -> None:
        if self._args is not None:
            self.update_from(*self._args)
