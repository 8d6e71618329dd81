"""The `clock` check: how far a node's wall clock is from this computer's.

Macs cabled only by Thunderbolt often have no internet, hence no network time, and their clocks
drift seconds to minutes. boltring allows for it (each node's offset is measured when its ranks
start and its times are put on the controller's clock: follow.py), so a skew never fails a job;
but the times in the ranks' own output and logs on that node are off, and scripts that compare
times across nodes are misled. So it is a warning beyond CLOCK_WARN_S, with how to set the clock.

The offset comes from the node probe's answer: the node reads its clock first thing and says how
long before its answer that was (facts.ClockFacts); the check compares it with the middle of the
window in which, by this computer's clock, it can have been read (facts.clock_offset).
"""

from __future__ import annotations

from boltring.cluster.agent.facts import ClockOffset
from boltring.cluster.config.schema import Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.checks.results import result
from boltring.cluster.states import CheckStatus

NAME = "clock"
CLOCK_WARN_S = 1.0  # beyond this a node's times in logs and prints visibly disagree with ours


def offset_words(reading: ClockOffset) -> str:
    """ "90.0 s ahead of this computer's (±0.05 s)"; "behind" for a clock that is slow; and
    "within ±0.03 s of this computer's" when the offset is inside its own error, where it can
    be told neither ahead nor behind (and boltring applies none: ClockOffset.applied_s)."""
    if reading.applied_s == 0.0:
        return f"within ±{reading.error_s:.2f} s of this computer's"
    offset = reading.offset_s
    size = f"{abs(offset):.2f}" if abs(offset) < 1 else f"{abs(offset):.1f}"
    way = "ahead of" if offset >= 0 else "behind"
    return f"{size} s {way} this computer's (±{reading.error_s:.2f} s)"


def set_clock_hint(node: Node, reading: ClockOffset, darwin: bool) -> str:
    """One line: the skew, why it matters, and a command run on the node that moves its clock by
    the measured offset (no internet needed; whole seconds, so `boltring check` may then show a
    fraction of a second left). macOS's date cannot set a relative time: `-v` computes it, and
    `sudo -v` first, so the time is read after the password is typed, not before."""
    shift = -round(reading.offset_s)
    if darwin:
        command = f"sudo -v && sudo date -u $(date -u -v{shift:+d}S +%m%d%H%M%Y.%S)"
        online = (
            'or, once it has internet, turn on "Set time and date automatically" '
            "(System Settings › General › Date & Time)"
        )
    else:
        command = f"sudo date -s '{shift:+d} seconds'"
        online = "or, once it has internet, `sudo timedatectl set-ntp true`"
    return (
        f"{node.name}'s clock is {offset_words(reading)}: boltring allows for it, but times that "
        f"scripts print or log there are off; set it on {node.name} with `{command}`, {online}"
    )


def clock_result(node: Node, reading: ClockOffset | None, darwin: bool) -> CheckResult:
    """ok within CLOCK_WARN_S (saying the offset), warn beyond it with the hint; skipped when the
    node's probe did not report its clock (an older boltring installed there)."""
    if node.local:  # the same clock: a reading would only show the probe's own timing
        return result(node.name, NAME, CheckStatus.OK, "this computer's own clock")
    if reading is None:
        return result(node.name, NAME, CheckStatus.SKIPPED, "the node's boltring does not report its clock")
    if abs(reading.offset_s) <= CLOCK_WARN_S:
        return result(node.name, NAME, CheckStatus.OK, offset_words(reading))
    return result(
        node.name, NAME, CheckStatus.WARN, offset_words(reading), set_clock_hint(node, reading, darwin)
    )


def skew_warning(node_name: str, reading: ClockOffset) -> str | None:
    """What a launch says, once, of a node whose clock is off beyond CLOCK_WARN_S (never fatal:
    boltring allows for it, but the ranks' own output on that node carries its times)."""
    if abs(reading.offset_s) <= CLOCK_WARN_S:
        return None
    return (
        f"{node_name}'s clock is {offset_words(reading)}: the job's times allow for it, but "
        f"times its ranks print or log are off by as much (`boltring check` says how to set it)"
    )
