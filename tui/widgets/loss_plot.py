"""LossPlot: the job's loss over global steps (a textual-plotext plot, redrawn on demand)."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    """Keeps no data of its own: `show` is given the (step, loss) history and draws it.

    The app calls `show` from its refresh timer, at most once a second and only when the
    history changed; plotext's build is far too costly to run on every metrics line.
    """

    DEFAULT_CSS = """
    LossPlot {
        width: 1fr;
        height: 1fr;
        min-width: 24;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
    }
    """

    MAX_POINTS = 400

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.border_title = "loss"
        self.shown_version = -1
        self._draw([])

    def show(self, points: Sequence[tuple[int, float]], version: int) -> None:
        if version == self.shown_version:
            return
        self.shown_version = version
        self._draw(points)
        self.refresh()

    def _draw(self, points: Sequence[tuple[int, float]]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if len(points) > self.MAX_POINTS:  # keep the last point, thin the rest evenly
            stride = len(points) / self.MAX_POINTS
            points = [points[int(i * stride)] for i in range(self.MAX_POINTS - 1)] + [points[-1]]
        if points:
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            plt.plot(xs, ys, marker="hd", color="cyan")
            lo, hi = xs[0], xs[-1]
            ticks: list[float] = sorted({round(lo + (hi - lo) * i / 3) for i in range(4)})
            plt.xticks(ticks, [f"{t:.0f}" for t in ticks])
            self.border_title = f"loss · step {xs[-1]} · {ys[-1]:.4g}"
        else:
            self.border_title = "loss"
            plt.title("no steps yet")
            plt.xticks([])
            plt.yticks([])
        plt.yfrequency(4)
