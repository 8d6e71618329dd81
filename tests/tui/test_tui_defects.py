"""Issue 11's defects, as the app shows them: each test fails on the app before the fix.

Driven by the scripted FeedController (tests/tui/feed.py), which emits the events of the
controller's contract: killed with `by`, RankStalled, JobRestarted, unreachable nodes.
"""

from __future__ import annotations

import re

import pytest
from textual.widgets import Input, RichLog

from boltring.cluster.jobs.events import JobStarted, LogLine, RankMetrics
from boltring.cluster.states import JobState, StoppedBy
from boltring.tui.fmt import spark
from boltring.tui.node_state import RankStatus, RankView
from boltring.tui.screens.confirm import ConfirmModal
from boltring.tui.screens.help import HelpScreen
from boltring.tui.screens.node_details import NodeDetailsScreen
from boltring.tui.screens.quit_modal import QuitModal
from boltring.tui.widgets.check_list import CheckList
from boltring.tui.widgets.log_pane import LogPane
from boltring.tui.widgets.node_panel import NodePanel
from boltring.tui.widgets.rank_row import RankRow
from boltring.tui.widgets.ring_strip import RingStrip
from boltring.tui.widgets.ssh_badge import SshBadge
from boltring.tui.widgets.status_header import StatusHeader
from tests.tui import feed
from tests.tui.harness import settle

RAW_EXIT = re.compile(r"code -?\d+|exited with -?\d+|SIG[A-Z]+|\(-?\d+\)")


def header(app) -> str:
    return app.query_one(StatusHeader)._last.plain


def log_text(app, pane_id: str = "#log") -> list[str]:
    log = app.screen.query_one(pane_id, LogPane).query_one(RichLog)
    return [strip.text for strip in log.lines]


def everything(app) -> str:
    rows = [row.text() for row in app.query(RankRow)]
    return "\n".join([header(app), *rows, *log_text(app)])


# -- 1. launch ignores failed checks ------------------------------------------------------------


async def test_launch_dialog_lists_failed_checks_and_needs_launch_anyway(open_app):
    ctrl = feed.unreachable()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        details = app.screen.query_one("#details").content.plain
        for node in ("mini1", "mini2", "mini3"):
            assert f"✗ {node} ssh" in details
        assert "3 checks failed" in details
        await pilot.press("y")  # not enough any more
        await pilot.press("enter")  # the cancel button has the focus
        await settle(pilot)
        assert not any(c[0] == "launch" for c in ctrl.calls)
        await pilot.press("l")
        await pilot.pause()
        assert "Launch anyway" in str(app.screen.query_one("#confirm").label)
        await pilot.press("a")
        await settle(pilot)
        assert ("launch", False) in ctrl.calls


async def test_failed_launch_names_every_node_once(open_app):
    ctrl = feed.unreachable()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("a")
        await settle(pilot)
        line = header(app).splitlines()[1]
        assert line.count("mini1") == 1 and "mini2" in line and "mini3" in line
        errors = [n.message for n in app._notifications if "launching" in n.message]
        assert len(errors) == 1 and all(f"mini{i}" in errors[0] for i in (1, 2, 3))
        assert sum("launching failed" in line for line in log_text(app)) == 1


# -- 3. a kill from another terminal is "killed", by whom, never a raw code ---------------------


async def test_kill_from_another_terminal_reads_as_stopped_by_you(open_app):
    async with open_app(feed.killed(StoppedBy.USER_KILL)) as (app, pilot):
        assert app.view.state == JobState.KILLED
        assert "● killed" in header(app)
        assert "stopped by you (boltring kill) at step 110" in header(app)
        assert not RAW_EXIT.search(everything(app)), everything(app)
        assert all("stopped at step 110" in row.text() for row in app.query(RankRow))
        assert any("stopped by you (boltring kill)" in line for line in log_text(app))


async def test_kill_with_k_says_stopped_by_you(open_app):
    async with open_app(feed.running()) as (app, pilot):
        await pilot.press("k")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert "stopped by you at step 120" in header(app)
        assert not RAW_EXIT.search(everything(app))


# -- 4. a hung rank: "stalled: r1 silent 30 s" ----------------------------------------------------


async def test_stalled_rank_shows_in_header_and_row(open_app):
    async with open_app(feed.stalled()) as (app, pilot):
        assert "stalled: r1 silent 30 s" in header(app)  # 28 s at the event, 2 s before "now"
        assert "stalled, silent 30 s" in app.query_one("#rank-1", RankRow).text()
        assert "stalled" not in app.query_one("#rank-0", RankRow).text()
        # the rank's next metrics line clears it
        app.controller.emit(RankMetrics(1, "mini1", 121, loss=0.05, t=feed.CLOCK))
        await settle(pilot)
        assert "stalled: r1" not in header(app)


async def test_restart_is_shown_in_header_and_log(open_app):
    async with open_app(feed.restarted()) as (app, pilot):
        assert "restart 1/3: rank 2 on mini2 failed" in header(app)
        assert any("restart 1/3 from step 50 (step-000050.safetensors)" in e.text for e in app.view.log)


# -- 5. the log filter box shows its text ---------------------------------------------------------


async def test_log_filter_box_shows_typed_text(open_app):
    async with open_app(feed.running()) as (app, pilot):
        await pilot.press("slash", *"slow")
        await settle(pilot)
        box = app.query_one("#log", LogPane).query_one(Input)
        assert box.has_focus and box.region.height == 1
        assert box.content_region.height == 1  # no border eating the only line
        assert "slow" in app.export_screenshot()


# -- 6. unreachable nodes: one line, "+N skipped", a connect countdown ----------------------------


async def test_unreachable_node_is_one_line_with_skipped_folded(open_app):
    async with open_app(feed.unreachable()) as (app, pilot):
        panel = app.query_one("#node-1", NodePanel)
        lines = [c.plain for c in panel.query_one(CheckList)._lines(40)]
        assert lines[0].startswith("✗ ssh connection refused")
        assert "+10 skipped" in " ".join(lines)
        assert not any("no SSH connection" in line for line in log_text(app))
        assert sum("mini2 check" in line for line in log_text(app)) == 1


async def test_connecting_shows_a_countdown(open_app):
    async with open_app(feed.connecting()) as (app, pilot):
        badge = app.query_one("#node-1", NodePanel).query_one(SshBadge)
        assert str(badge.render()) == "connecting… 4/10 s"


# -- 7. resume says what it resumes from ----------------------------------------------------------


async def test_resume_dialog_and_log_say_the_checkpoint(open_app):
    ctrl = feed.launchable()
    ctrl.resume_from = "step 200 (step-000200.safetensors)"
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        assert "resume from step 200 (step-000200.safetensors)" in app.screen.title_text
        assert not any(e.text.startswith("resume from") for e in app.view.log)  # logged once confirmed


async def test_resume_without_checkpoint_says_step_0(open_app):
    async with open_app(feed.launchable()) as (app, pilot):
        await pilot.press("r")
        await settle(pilot)
        assert "no checkpoint for this job: starts from step 0" in app.screen.title_text


# -- 8. small defects -----------------------------------------------------------------------------


async def test_a_panel_has_focus_at_start_and_enter_opens_it(open_app):
    async with open_app(feed.idle()) as (app, pilot):
        assert isinstance(app.focused, NodePanel)
        assert app.query_one("#log", LogPane).node_filter is None  # the log stays whole
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, NodeDetailsScreen)


async def test_dialogs_hint_their_keys_and_hide_the_panel_keys(open_app):
    async with open_app(feed.running(), size=(80, 24)) as (app, pilot):
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)
        assert "n / esc: cancel" in str(app.screen.query_one("#keys").render())
        assert "Details" not in app.export_screenshot()
        await pilot.press("escape")
        await pilot.press("k")
        await pilot.pause()
        assert "y: kill" in str(app.screen.query_one("#keys").render())


def test_sparkline_one_sample_is_not_full_height_and_never_stretched():
    assert spark([3.0], 40) == "▄"
    assert len(spark([1.0, 2.0, 3.0], 120)) == 3  # one cell per sample at any width
    assert spark([2.0], 10, ref=4.0) == "▅"


async def test_log_rewraps_after_resize(open_app):
    async with open_app(feed.running(), size=(200, 40)) as (app, pilot):
        long = "x" * 60
        app.controller.emit(LogLine("rank 0@mini1", long, node="mini1", rank=0, t=feed.CLOCK))
        await settle(pilot)
        assert any(long in line for line in log_text(app))
        await pilot.resize_terminal(100, 40)
        await settle(pilot)
        await settle(pilot)
        assert not any(long in line for line in log_text(app))
        assert any(line.rstrip().endswith("x" * 10) for line in log_text(app))  # wrapped, not cut


async def test_jobs_are_separated_in_the_log(open_app):
    async with open_app(feed.killed()) as (app, pilot):
        app.controller.emit(
            JobStarted(
                "job-2", "configs/lab.yaml", 4, 200, ["mini1", "mini2", "mini3"], "example mlp", t=feed.CLOCK
            )
        )
        await settle(pilot)
        assert any("──── job job-2 ────" in line for line in log_text(app))


# -- features -----------------------------------------------------------------------------------


async def test_header_has_progress_elapsed_eta_and_throughput(open_app):
    async with open_app(feed.running(), size=(200, 60)) as (app, pilot):
        text = header(app)
        assert "elapsed 00:02:00" in text and "120/200 60%" in text and "━" in text
        assert re.search(r"ETA \dm\d\ds", text)
        assert "smp/s" in text


async def test_header_fits_80_columns(open_app):
    async with open_app(feed.running(), size=(80, 24)) as (app, pilot):
        first = header(app).splitlines()[0]
        assert len(first) <= 78 and "120/200" in first and "ETA" in first and "…" not in first


async def test_ring_strip_shows_links_live_and_measured(open_app):
    async with open_app(feed.running()) as (app, pilot):
        text = app.query_one(RingStrip)._last.plain
        assert "mini1 ⇄" in text and "mini3 ⇄" in text and "↺" in text
        assert "/3.98" in text  # 31.8 Gb/s measured by the check, in GB/s


async def test_rank_rows_are_compact_table_rows(open_app):
    async with open_app(feed.running(), size=(200, 60)) as (app, pilot):
        row = app.query_one("#rank-0", RankRow).text()
        assert row.startswith("r0") and " 120 " in row and "0.0595" in row
        assert "↑" in row and "↓" in row and "G" in row  # net rates and the memory figure


async def test_help_lists_every_app_key(open_app):
    async with open_app(feed.idle()) as (app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table").content.plain
        for key in ("l ", "r ", "k ", "c ", "/ ", "h ", "p ", "? ", "q ", "⏎ "):
            assert "  " + key in table, key
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_wide_screen_gives_the_plot_half_the_width(open_app):
    async with open_app(feed.running(), size=(200, 60)) as (app, pilot):
        plot = app.query_one("#loss")
        assert plot.size.width >= 90


async def test_a_failed_rank_is_told_in_words(open_app):
    from boltring.cluster.jobs.events import JobStateChanged, RankExited

    async with open_app(feed.running()) as (app, pilot):
        app.controller.emit(
            RankExited(
                2, "mini2", returncode=1, reason="exited with code 1: ValueError: loss is nan", t=feed.CLOCK
            ),
            RankExited(3, "mini3", returncode=-9, reason="was stopped by SIGKILL", t=feed.CLOCK),
            JobStateChanged(
                JobState.FAILED, job_id=feed.JOB_ID, reason="rank 2 on mini2 exited with code 1", t=feed.CLOCK
            ),
        )
        await settle(pilot)
        assert "failed: rank 2 on mini2 failed" in header(app)
        assert app.query_one("#rank-2", RankRow).text().startswith("r2   failed at step 120: Value")
        assert app.view.ranks[2].reason == "ValueError: loss is nan"
        assert not RAW_EXIT.search(everything(app)), everything(app)


async def test_a_rank_stopped_from_another_terminal_is_stopped_not_failed(open_app):
    """`boltring kill` in another terminal: this app did not ask, and the job is still running
    when the first ranks' ends arrive. They were stopped by you, not failures."""
    from boltring.cluster.jobs.events import RankExited

    async with open_app(feed.running()) as (app, pilot):
        app.controller.emit(
            RankExited(
                2,
                "mini2",
                returncode=-15,
                reason="was stopped by you (boltring kill)",
                stopped_by=StoppedBy.USER_KILL,
                t=feed.CLOCK,
            ),
        )
        await settle(pilot)
        assert app.view.ranks[2].status == RankStatus.KILLED
        assert app.query_one("#rank-2", RankRow).text().startswith("r2   stopped"), everything(app)
        assert "failed" not in everything(app)


async def test_log_keeps_following_when_the_panels_grow(open_app):
    async with open_app(feed.launchable(), size=(80, 24)) as (app, pilot):
        log = app.query_one("#log", LogPane).query_one(RichLog)
        app.controller.emit(*[LogLine("controller", f"line {i}", t=feed.CLOCK) for i in range(40)])
        await settle(pilot)
        assert log.is_vertical_scroll_end
        app.query_one("#log", LogPane).styles.height = 5  # the pane gets shorter, as when ranks start
        await settle(pilot)
        app.controller.emit(LogLine("controller", "the newest line", t=feed.CLOCK))
        await settle(pilot)
        assert log.is_vertical_scroll_end and "the newest line" in log.lines[-1].text


def test_app_log_shows_a_large_sync_going_by_quarters():
    """A large file synced before launch shows in the node's log as it moves (issue: setup and
    sync), one line per quarter, not one per chunk."""
    from boltring.cluster.jobs.events import SyncProgress
    from boltring.tui.view_state import ClusterView

    view = ClusterView(feed.lab_config())
    total = 200_000_000
    for sent in range(0, total + 1, 8_000_000):
        view.apply(SyncProgress(node="mini2", path="data/big.bin", sent=sent, total=total))
    lines = [e.text for e in view.nodes["mini2"].log if "sync" in e.text]
    assert lines == [
        "sync data/big.bin ░░░░ 0/200 MB",
        "sync data/big.bin █░░░ 56/200 MB",
        "sync data/big.bin ██░░ 104/200 MB",
        "sync data/big.bin ███░ 152/200 MB",
        "sync data/big.bin ████ 200/200 MB",
    ]


@pytest.mark.parametrize(
    ("loss", "shown"),
    [
        (2.005e-07, "2.0e-07"),
        (1.6295, "1.6295"),
        (123.4567, "123.457"),
        (123456.7, "1.2e+05"),
        (-2.005e-07, "-2e-07"),
    ],
)
def test_the_rank_rows_loss_is_rounded_to_its_column_never_cut(loss, shown):
    """The loss column is 7 wide: 2.005e-07 was cut to "2.005e-", which reads as 2.005."""
    from boltring.tui.fmt import fmt_loss
    from boltring.tui.widgets.rank_row import COLUMNS

    assert fmt_loss(loss, 7) == shown
    column = next(c for c in COLUMNS if c.key == "loss")
    view = RankView(rank=0, node="n")
    view.loss = loss
    assert str(column.cell(view, 0.0, None)).strip() == shown
