"""A script's own report() fields (val_loss=, accuracy=, ...) reach its rank's row in the app."""

from __future__ import annotations

from boltring.cluster.jobs.events import RankMetrics
from boltring.tui.widgets.rank_row import RankRow
from tests.tui import feed


def _with_extras() -> feed.FeedController:
    evs = feed.running_events()
    t = feed.CLOCK - 0.5
    evs.append(
        RankMetrics(0, "mini1", 121, loss=0.1, wall=t, t=t, extra={"val_loss": 0.1234, "accuracy": 0.5})
    )
    evs.append(RankMetrics(0, "mini1", 122, loss=0.1, wall=t, t=t, extra={"accuracy": 0.75}))
    return feed.FeedController(
        feed.lab_config(),
        attached=True,
        attach_events=evs,
        check_events=feed.check_events(t=feed.CLOCK - 0.5),
    )


async def test_extra_fields_show_under_their_ranks_row(open_app):
    async with open_app(_with_extras(), size=(160, 50)) as (app, pilot):
        row0 = app.query_one("#rank-0", RankRow)
        first, second = row0.text().splitlines()
        assert first.startswith("r0") and " 122 " in first
        assert second.split() == ["val_loss", "0.1234", "accuracy", "0.75"]  # the latest of each
        assert row0.size.height == 2
        row1 = app.query_one("#rank-1", RankRow)
        assert "\n" not in row1.text() and row1.size.height == 1  # no extras: one line, as before
