"""Key flows of the app, driven with Pilot against the scripted FeedController."""

from __future__ import annotations

import pytest
from textual.widgets import Input, RichLog, Static

from boltring.cluster.jobs.events import JobStateChanged, LogLine, RankMetrics
from boltring.tui.app import BoltringApp
from boltring.tui.messages import EventsPending
from boltring.tui.screens.confirm import ConfirmModal
from boltring.tui.screens.node_details import NodeDetailsScreen
from boltring.tui.screens.quit_modal import QuitModal
from boltring.tui.widgets.log_pane import LogPane
from boltring.tui.widgets.node_panel import NodePanel
from boltring.tui.widgets.rank_row import RankRow
from boltring.tui.widgets.status_header import StatusHeader
from tests.tui import feed
from tests.tui.harness import settle, wait_exit

SIZE = (120, 36)


def log_text(app, pane_id: str = "#log") -> list[str]:
    log = app.screen.query_one(pane_id, LogPane).query_one(RichLog)
    return [strip.text for strip in log.lines]


async def test_startup_attaches_then_checks(open_app):
    ctrl = feed.idle()
    async with open_app(ctrl) as (app, pilot):
        assert ctrl.calls[:2] == [("attach",), ("run_checks",)]
        assert app.view.nodes["mini2"].ssh_state == "connected"
        assert "route:mini1" in app.view.nodes["mini3"].checks
        # the ring's "bw:a->b" shows on a's panel
        assert app.view.nodes["mini3"].checks["bw:mini1"].value == "31.8 Gb/s"


async def test_attached_job_is_followed_then_checked(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        assert ctrl.calls[0] == ("attach",)
        assert ("wait",) in ctrl.calls and ("run_checks",) in ctrl.calls
        assert app.view.state == "running"
        assert app.view.step == 120


async def test_launch_confirm_lists_plan_and_launches(open_app):
    ctrl = feed.launchable()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        details = app.screen.query_one("#details", Static).content.plain
        for row in ctrl.plan():
            assert f"rank {row.rank}" in details
            assert row.where in details
            assert row.command in details
        assert not any(c[0] == "launch" for c in ctrl.calls)
        await pilot.press("enter")  # the Launch button has the focus
        await settle(pilot)
        assert ("launch", False) in ctrl.calls
        assert not isinstance(app.screen, ConfirmModal)
        assert app.view.state == "running"
        assert app.view.step == 20


async def test_launch_cancel_does_nothing(open_app):
    ctrl = feed.launchable()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("escape")
        await settle(pilot)
        assert not any(c[0] == "launch" for c in ctrl.calls)
        assert app.view.state == "idle"


async def test_resume_uses_same_dialog_with_resume(open_app):
    ctrl = feed.launchable()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert "--resume" in app.screen.query_one("#details", Static).content.plain
        await pilot.press("y")
        await settle(pilot)
        assert ("plan", True) in ctrl.calls
        assert ("launch", True) in ctrl.calls


async def test_kill_confirm_calls_kill(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("enter")
        await settle(pilot)
        assert ("kill",) in ctrl.calls
        assert app.view.state == "killed"
        assert app.query_one(StatusHeader)._last.plain.count("killed") >= 1


async def test_kill_refused_when_idle(open_app):
    ctrl = feed.idle()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("k")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        assert ("kill",) not in ctrl.calls


async def test_launch_refused_while_running(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)


@pytest.mark.parametrize("button,kill", [("#leave", False), ("#kill", True)])
async def test_quit_with_running_job_asks(button, kill, open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)
        await pilot.click(button)
        await wait_exit(app)
    assert ("close", kill) in ctrl.calls
    assert app.return_code == 0


async def test_quit_cancel_keeps_running(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, QuitModal)
        assert app.is_running
        assert not any(c[0] == "close" for c in ctrl.calls)


async def test_quit_when_idle_closes_without_asking(open_app):
    ctrl = feed.idle()
    async with open_app(ctrl) as (app, pilot):
        app.simulate_key("q")  # pilot.press would wait on the app after it has closed
        await wait_exit(app)
    assert ("close", False) in ctrl.calls


async def test_filter_log_by_text(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        assert any("listening" in line for line in log_text(app))
        await pilot.press("slash")
        await pilot.pause()
        assert isinstance(app.focused, Input)
        await pilot.press(*"slow")
        await settle(pilot)
        lines = log_text(app)
        assert any("slow" in line for line in lines)
        assert not any("listening" in line for line in lines)
        assert "/slow/" in app.query_one("#log", LogPane).border_title
        # q typed into the filter is text, not quit
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, QuitModal)
        await pilot.press("escape")  # clears the text filter and closes the input
        await pilot.press("escape")  # (app) all nodes
        await settle(pilot)
        assert any("listening" in line for line in log_text(app))


async def test_selecting_node_panel_filters_log(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        await pilot.click("#node-1")  # mini2
        await settle(pilot)
        pane = app.query_one("#log", LogPane)
        assert pane.node_filter == "mini2"
        lines = log_text(app)
        assert any("mini2" in line for line in lines)
        assert not any("mini3" in line or "mini1" in line for line in lines)
        await pilot.press("escape")
        await settle(pilot)
        assert pane.node_filter is None
        assert any("mini3" in line for line in log_text(app))


async def test_enter_on_node_opens_details(open_app):
    ctrl = feed.checks_failure()
    async with open_app(ctrl) as (app, pilot):
        app.query_one("#node-2", NodePanel).focus()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, NodeDetailsScreen)
        assert app.screen.node == "mini3"
        checks = app.screen.query_one("#details-checks", Static).content.plain
        assert "route" in checks and "sudo route change" in checks
        assert any("check route:mini1: fail" in line for line in log_text(app, "#details-log"))
        # new events for the node reach the open details screen
        ctrl.emit(LogLine("rank 3@mini3", "hello from mini3", node="mini3", rank=3, t=feed.CLOCK))
        await settle(pilot)
        assert any("hello from mini3" in line for line in log_text(app, "#details-log"))
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, NodeDetailsScreen)


async def test_controller_error_becomes_panel_state_log_and_notice(open_app):
    ctrl = feed.launchable()
    ctrl.fail["launch"] = RuntimeError("mini3: ssh connection refused")
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running  # no traceback, the app goes on
        assert "connection refused" in app.query_one(StatusHeader)._last.plain
        assert any("launching failed" in line for line in log_text(app))
        assert any("connection refused" in n.message for n in app._notifications)
        assert app.check_action("launch", ()) is True  # can try again


async def test_failing_checks_are_reported_not_raised(open_app):
    ctrl = feed.idle()
    ctrl.fail["run_checks"] = OSError("no route to host")
    async with open_app(ctrl) as (app, pilot):
        assert app.is_running
        assert "no route to host" in (app.view.error or "")


async def test_event_bursts_collapse_into_few_messages(open_app):
    ctrl = feed.running()
    pending = []

    def hook(message):
        if isinstance(message, EventsPending):
            pending.append(message)

    async with open_app(ctrl, message_hook=hook) as (app, pilot):
        before = len(pending)
        ctrl.emit(*[RankMetrics(0, "mini1", 500 + i, allreduce_gbps=3.0, t=feed.CLOCK) for i in range(2000)])
        await settle(pilot)
        assert len(pending) - before <= 2
        assert app.view.ranks[0].step == 2499
        assert len(app.view.ranks[0].gbps_history) <= 120  # bounded


async def test_events_do_not_redraw_until_tick(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        app.refresh_timer.pause()
        header = app.query_one(StatusHeader)
        shown = header._last.plain
        ctrl.emit(JobStateChanged("failed", job_id=feed.JOB_ID, reason="rank 2 exited with 1", t=feed.CLOCK))
        await pilot.pause()
        assert app.view.state == "failed"
        assert header._last.plain == shown  # state changed, screen not yet redrawn
        app.refresh_now()
        assert "failed" in header._last.plain


async def test_bindings_have_ids_and_palette_commands(open_app):
    ids = {b.id: b.key for b in BoltringApp.BINDINGS}
    assert ids == {
        "launch": "l",
        "resume": "r",
        "kill": "k",
        "checks": "c",
        "setup": "s",
        "filter": "slash",
        "history": "h",
        "save_plot": "p",
        "help": "question_mark",
        "clear_filter": "escape",
        "quit": "q",
    }
    assert NodePanel.BINDINGS[0].id == "node.details"
    async with open_app(feed.idle()) as (app, pilot):
        titles = {c.title for c in app.get_system_commands(app.screen)}
    for title in (
        "Launch job",
        "Resume job",
        "Kill job",
        "Re-run checks",
        "Filter log",
        "Node details: mini2",
        "Set up node: mini2",
    ):
        assert title in titles


async def test_keymap_remaps_launch(open_app):
    ctrl = feed.launchable()
    async with open_app(ctrl, settle_first=False) as (app, pilot):
        app.set_keymap({"launch": "L"})
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        await pilot.press("L")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)


async def test_tui_never_imports_network_modules():
    import ast
    from pathlib import Path

    import boltring.tui as tui

    root = Path(tui.__file__).parent
    banned = {"asyncssh", "socket", "mlx", "boltring.netio", "netio"}
    for path in root.rglob("*.py"):
        if path.name in ("cli.py", "headless.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned and not name.startswith("boltring.netio"), (
                    f"{path.name} imports {name}"
                )


async def test_escape_in_details_filter_clears_filter_first(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        app.query_one("#node-0", NodePanel).focus()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, NodeDetailsScreen)
        await pilot.press("slash", *"listening")
        await settle(pilot)
        lines = log_text(app, "#details-log")
        assert lines and all("listening" in line for line in lines)
        await pilot.press("escape")  # clears the filter, stays on the details screen
        await settle(pilot)
        assert isinstance(app.screen, NodeDetailsScreen)
        assert any("started" in line for line in log_text(app, "#details-log"))
        await pilot.press("escape")  # now goes back
        await pilot.pause()
        assert not isinstance(app.screen, NodeDetailsScreen)


async def test_command_palette_launches(open_app):
    ctrl = feed.launchable()
    async with open_app(ctrl) as (app, pilot):
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Launch job")
        await pilot.pause(0.5)  # the palette searches in a worker
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await settle(pilot)
        assert ("launch", False) in ctrl.calls


def test_importing_the_app_loads_no_backend():
    import subprocess
    import sys

    code = (
        "import sys, boltring.tui.app; "
        "print([m for m in ('asyncssh', 'mlx', 'boltring.netio', 'boltring.cluster.jobs.controller')"
        " if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_log_follows_new_lines_only_at_the_bottom(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        log = app.query_one("#log", LogPane).query_one(RichLog)
        ctrl.emit(
            *[LogLine("rank 0@mini1", f"line {i}", node="mini1", rank=0, t=feed.CLOCK) for i in range(200)]
        )
        await settle(pilot)
        assert log.is_vertical_scroll_end and log.max_scroll_y > 0
        log.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        ctrl.emit(LogLine("rank 0@mini1", "one more", node="mini1", rank=0, t=feed.CLOCK))
        await settle(pilot)
        assert log.scroll_offset.y == 0  # reading the top: not yanked down
        log.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        ctrl.emit(LogLine("rank 0@mini1", "and another", node="mini1", rank=0, t=feed.CLOCK))
        await settle(pilot)
        assert log.is_vertical_scroll_end
        assert log.lines[-1].text.rstrip().endswith("and another")


async def test_redraw_while_details_screen_composes_does_not_crash(open_app):
    ctrl = feed.running()
    async with open_app(ctrl) as (app, pilot):
        app.show_details("mini1")
        app.refresh_now()  # the timer may fire before the new screen has its widgets
        await settle(pilot)
        assert isinstance(app.screen, NodeDetailsScreen)
        text = app.screen.query_one("#rank-0", RankRow).text()
        assert text.startswith("r0") and "120" in text
