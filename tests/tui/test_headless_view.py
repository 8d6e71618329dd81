"""The --run view: a rich progress bar with elapsed time and ETA on a terminal, plain lines
with the same figures otherwise, and a kill told as who stopped the job."""

from __future__ import annotations

import io
import re

from rich.console import Console

from boltring.cluster.jobs.events import (
    JobStarted,
    JobStateChanged,
    JobSummary,
    RankExited,
    RankStalled,
    StepProgress,
)
from boltring.cluster.states import JobState, StoppedBy
from boltring.tui.headless import HeadlessView
from tests.tui import feed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view(terminal: bool) -> tuple[HeadlessView, io.StringIO, Clock]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=140, color_system=None)
    clock = Clock()
    v = HeadlessView(feed.idle(), json_out=False, console=console, clock=clock)
    v(JobStateChanged(JobState.RUNNING, job_id=feed.JOB_ID))  # as launch() and attach() say
    return v, out, clock


def steps(v: HeadlessView, clock: Clock, upto: int, total: int = 100, every_s: float = 1.0) -> None:
    for step in range(1, upto + 1):
        v(
            StepProgress(
                step, total, loss=1.0 / step, ranks={0: {"samples_per_s": 64.0, "allreduce_gbps": 2.5}}
            )
        )
        clock.now += every_s


def test_terminal_progress_bar_has_elapsed_and_eta():
    v, out, clock = view(terminal=True)
    steps(v, clock, 20)
    assert v._bar is not None
    v._bar.refresh()
    running = [line for line in out.getvalue().splitlines() if "20/100" in line and "elapsed" in line][-1]
    assert re.search(r"elapsed\s+00:00:(19|20)", running), running
    assert re.search(r"ETA\s+00:01:[12]\d", running), running  # 80 steps at 1 step/s
    assert "━" in running  # rich's bar, not a hand-made line
    assert "loss 0.0500" in running and "r0 64/s 2.50GB/s" in running
    v(JobStateChanged(JobState.FAILED, job_id=feed.JOB_ID, reason="rank 1 on mini1 was killed"))
    v.finish(JobSummary(feed.JOB_ID, JobState.FAILED, 20, 100, 1.0, 0.05, 20.0, run_dir="~/.boltring/runs/x"))
    final = [line for line in out.getvalue().splitlines() if "20/100" in line and "elapsed" in line][-1]
    assert "ETA" not in final and "loss 0.0500" in final, final  # a failed job has no ETA


def test_plain_progress_lines_have_elapsed_and_eta():
    v, out, clock = view(terminal=False)
    steps(v, clock, 11, every_s=1.0)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("step")]
    assert lines[0].startswith("step 1/100 | elapsed 00:00:00")
    assert "step 6/100 | elapsed 00:00:05 | ETA 00:01:34" in lines[1]


def test_killed_job_says_who_stopped_it_never_a_signal():
    v, out, clock = view(terminal=False)
    steps(v, clock, 3)
    v(JobStateChanged(JobState.KILLED, job_id=feed.JOB_ID, by=StoppedBy.USER_KILL))
    v(RankExited(0, "mini1", returncode=-15, reason="SIGTERM"))
    v.finish(JobSummary(feed.JOB_ID, JobState.KILLED, 3, 100, 1.0, 0.3, 3.0, stopped_by=StoppedBy.USER_KILL))
    text = out.getvalue()
    assert "stopped by you (boltring kill) at step 3" in text
    assert "SIGTERM" not in text and "-15" not in text and "code" not in text


def test_stalled_rank_is_announced():
    v, out, clock = view(terminal=False)
    v(RankStalled(1, "mini1", silent_s=31.0))
    assert "stalled: r1 on mini1 silent 31 s" in out.getvalue()


def test_language_model_jobs_show_the_cluster_tokens_per_second():
    v, out, clock = view(terminal=False)
    ranks = {r: {"samples_per_s": 8.0, "allreduce_gbps": 0.5, "tokens_per_s": 1500.0} for r in (0, 1)}
    v(StepProgress(1, 10, loss=2.0, ranks=ranks))
    assert "3000 tok/s" in out.getvalue()
    v2, out2, _ = view(terminal=False)
    v2(StepProgress(1, 10, loss=2.0, ranks={0: {"samples_per_s": 8.0, "allreduce_gbps": 0.5}}))
    assert "tok/s" not in out2.getvalue()  # not for jobs without tokens


def test_piped_output_keeps_each_event_on_one_line():
    """Piped to a file, rich would wrap at 80 columns and split a line a script greps for."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=40, color_system=None)
    v = HeadlessView(feed.idle(), json_out=False, console=console, clock=Clock())
    v(JobStarted("local-20261201-034054-9be4", None, 2, 300, ["local"], "example charlm"))
    v.finish(JobSummary(feed.JOB_ID, JobState.FAILED, 3, 300, 4.1, 4.0, 2.0, reason="r1 " + "x" * 90))
    lines = out.getvalue().splitlines()
    assert "started job local-20261201-034054-9be4: example charlm, 2 ranks on local, 300 steps" in lines
    assert any(line.endswith("x" * 90) and "r1" in line for line in lines), lines
