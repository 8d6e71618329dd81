"""A node's clock offset from one command's answer, and the `clock` check's words (pure: numbers
in, numbers and lines out; the lab tests in tests/integration/test_clock_skew.py run the
same code against a host whose clock really is off)."""

from __future__ import annotations

import pytest

from boltring.cluster.agent.facts import ClockOffset, clock_offset
from boltring.cluster.config.schema import Node
from boltring.cluster.jobs import record
from boltring.cluster.nodes.checks.clock import CLOCK_WARN_S, clock_result
from boltring.cluster.states import CheckStatus

NODE = Node(name="mini2", ring_ip="10.0.0.2", ssh="mini2")


def test_the_offset_is_taken_at_the_middle_of_the_window_the_clock_was_read_in():
    # sent at 100.0, answered at 101.0; the node read 190.4 and worked 0.2 s after reading:
    # it read its clock between 100.0 and 100.8 by ours
    reading = clock_offset({"time": 190.4, "elapsed_s": 0.2}, 100.0, 101.0)
    assert reading == pytest.approx(ClockOffset(90.0, 0.4))
    assert reading is not None and reading.to_laptop(190.4) == pytest.approx(100.4)


def test_a_node_that_worked_the_whole_round_trip_leaves_no_window():
    reading = clock_offset({"time": 40.0, "elapsed_s": 5.0}, 100.0, 101.0)  # its clock runs fast
    assert reading == pytest.approx(ClockOffset(-60.0, 0.0))


@pytest.mark.parametrize("clock", [None, {}, {"time": "soon"}, {"time": 1.0, "elapsed_s": None}, [1, 2]])
def test_an_answer_without_a_clock_gives_no_offset(clock):
    assert clock_offset(clock, 100.0, 101.0) is None


def test_an_offset_within_its_own_error_is_applied_as_none():
    """Clocks that cannot be told apart (network time, the laptop itself) keep exact figures."""
    assert ClockOffset(0.02, 0.05).applied_s == 0.0
    assert ClockOffset(-0.05, 0.05).applied_s == 0.0
    assert ClockOffset(-90.0, 0.05).applied_s == -90.0


def test_the_record_keeps_each_nodes_offset_for_a_re_attach():
    rec: dict = {"job_id": "x", "clocks": {}}
    record.note_clock(rec, "h2", ClockOffset(90.0, 0.03))
    record.note_clock(rec, "h1", ClockOffset(0.01, 0.03))
    rec["clocks"]["bad"] = {"offset_s": "?"}
    assert record.clock_offsets(rec) == {"h2": 90.0, "h1": 0.0}
    assert record.clock_offsets({"job_id": "old"}) == {}  # written before clocks were measured


def test_a_clock_within_a_second_passes_saying_its_offset():
    r = clock_result(NODE, ClockOffset(0.31, 0.04), darwin=True)
    assert (r.status, r.value, r.hint) == (CheckStatus.OK, "0.31 s ahead of this computer's (±0.04 s)", None)
    assert clock_result(NODE, ClockOffset(-CLOCK_WARN_S, 0.04), darwin=True).status == CheckStatus.OK


def test_an_offset_inside_its_error_is_neither_ahead_nor_behind():
    """`boltring check` on the embedded default said the laptop's clock was "0.01 s ahead of
    this computer's (±0.03 s)": of itself, and more than the measurement could tell."""
    r = clock_result(NODE, ClockOffset(0.01, 0.03), darwin=True)
    assert (r.status, r.value) == (CheckStatus.OK, "within ±0.03 s of this computer's")
    assert (
        clock_result(NODE, ClockOffset(-0.03, 0.03), darwin=False).value
        == "within ±0.03 s of this computer's"
    )
    assert (
        clock_result(NODE, ClockOffset(0.04, 0.03), darwin=False).value
        == "0.04 s ahead of this computer's (±0.03 s)"
    )


def test_a_local_node_is_this_computers_own_clock():
    local = Node(name="local", ring_ip="127.0.0.1", local=True)
    r = clock_result(local, ClockOffset(0.01, 0.03), darwin=False)
    assert (r.status, r.value, r.hint) == (CheckStatus.OK, "this computer's own clock", None)


def test_a_mac_clock_ahead_warns_with_a_command_that_needs_no_internet():
    r = clock_result(NODE, ClockOffset(90.2, 0.03), darwin=True)
    assert r.status == CheckStatus.WARN and r.value == "90.2 s ahead of this computer's (±0.03 s)"
    assert r.hint is not None and "\n" not in r.hint
    assert r.hint.startswith("mini2's clock is 90.2 s ahead of this computer's")
    # macOS's date: -v computes the time 90 s back, the operand format mmddHHMMccyy.ss sets it;
    # sudo -v first so that the time is read after the password, not before
    assert "`sudo -v && sudo date -u $(date -u -v-90S +%m%d%H%M%Y.%S)`" in r.hint, r.hint
    assert '"Set time and date automatically"' in r.hint


def test_a_clock_behind_moves_forward():
    mac = clock_result(NODE, ClockOffset(-61.6, 0.03), darwin=True)
    assert mac.status == CheckStatus.WARN and "61.6 s behind this computer's" in str(mac.value)
    assert "-v+62S" in str(mac.hint)
    linux = clock_result(NODE, ClockOffset(-61.6, 0.03), darwin=False)
    assert "`sudo date -s '+62 seconds'`" in str(linux.hint) and "timedatectl set-ntp true" in str(linux.hint)


def test_an_older_node_that_does_not_say_its_clock_is_skipped():
    r = clock_result(NODE, None, darwin=True)
    assert r.status == CheckStatus.SKIPPED and "does not report its clock" in str(r.value)
