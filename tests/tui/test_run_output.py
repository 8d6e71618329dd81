"""Plain `--run`: the ranks' own output (a script's prints: shown; tracebacks: held back), a job
that reported no metrics, and a reader that closes the output."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from boltring.cluster.jobs.core import ControllerCore
from boltring.cluster.jobs.events import (
    JobStarted,
    JobStateChanged,
    JobSummary,
    LogLine,
    RankErrorLine,
    StepProgress,
)
from boltring.cluster.states import JobState
from boltring.tui.console import PipeConsole
from boltring.tui.headless import HeadlessView
from boltring.tui.rank_output import RankOutput
from boltring.tui.run_summary import rank_logs, summary_line
from tests.tui import feed

TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/w/train.py", line 9, in <module>',
    "    main()",
    "    ~~~~^^",
    "KeyError: 'lr'",
    "During handling of the above exception, another exception occurred:",
    "Traceback (most recent call last):",
    '  File "/w/train.py", line 11, in <module>',
    "ValueError: no learning rate",
]


def shown(job: str, lines: list[tuple[int, str]]) -> list[str]:
    out = RankOutput()
    out.start(job)
    return [f"{r}:{t}" for r, text in lines if (t := out.shown(r, text)) is not None]


def test_a_script_s_output_is_shown_for_every_rank_without_boltring_s_own_lines_or_tracebacks():
    lines = [(0, "epoch 1 loss 0.52"), (1, "epoch 1 loss 0.52"), (1, "boltring-train: stopped by SIGTERM")]
    lines += [(1, t) for t in TRACEBACK] + [(1, "boltring-train: error: ValueError: no learning rate")]
    lines += [(0, "boltring: cannot start …"), (0, "saved model.npz")]
    assert shown("script train.py", lines) == [
        "0:epoch 1 loss 0.52",
        "1:epoch 1 loss 0.52",
        "0:saved model.npz",
    ]
    assert shown("module mypkg.train", [(2, "hello")]) == ["2:hello"]


def test_after_a_traceback_a_rank_s_own_lines_show_again():
    out = RankOutput()
    out.start("script t.py")
    for text in TRACEBACK[:5]:
        assert out.shown(0, text) is None
    assert out.shown(0, "retrying with defaults") == "retrying with defaults"
    assert out.held == {0}


def test_an_example_shows_rank_0_s_notes_not_its_routine_lines():
    lines = [
        (0, "[rank 0/2] lm lora: tiny, 0.010M trainable parameters, steps 1..30, global batch 8"),
        (0, "[lm] --iters 100 is replaced by boltring's --steps 30"),
        (1, "[lm] --iters 100 is replaced by boltring's --steps 30"),
        (0, "[rank 0] step 10/30 loss 5.1234 1432 tok/s"),
        (0, "[rank 0] checkpoint /h/ckpt/step-000030.safetensors"),
        (0, "[rank 0] resume: no checkpoint in /h/ckpt; starting from step 0"),
        (0, "[rank 0] done: 30 steps in 0.2s, final loss 1.0615"),
        (0, "[rank 0] resume: skipped step-000030.safetensors: its hash does not match"),
        (
            0,
            "[rank 0] adapters at step 30: /h/ckpt/adapters (mlx_lm.generate --model tiny --adapter-path /h/ckpt/adapters)",
        ),
        (0, "[rank 0] job.wandb is 'p' but wandb is not installed here: not logging to W&B"),
        (1, "some rank 1 note"),
    ]
    assert shown("example lm", lines) == [
        "0:[lm] --iters 100 is replaced by boltring's --steps 30",
        "0:resume: skipped step-000030.safetensors: its hash does not match",
        "0:adapters at step 30: /h/ckpt/adapters (mlx_lm.generate --model tiny --adapter-path /h/ckpt/adapters)",
        "0:job.wandb is 'p' but wandb is not installed here: not logging to W&B",
    ]
    assert shown("example mlp", [(0, "[rank 0] train accuracy 0.602")]) == ["0:train accuracy 0.602"]


def view(json_out: bool = False) -> tuple[HeadlessView, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200, color_system=None)
    v = HeadlessView(feed.idle(), json_out=json_out, console=console, rank_output=True)
    v(JobStateChanged(JobState.RUNNING, job_id=feed.JOB_ID))
    return v, out


def started(job: str) -> JobStarted:
    return JobStarted(feed.JOB_ID, None, 2, 300, ["mini1"], job)


def no_metrics_summary(status: JobState = JobState.FINISHED, reason: str | None = None) -> JobSummary:
    run_dir = f"~/.boltring/runs/{feed.JOB_ID}"
    ranks = {r: {"node": "mini1", "steps_per_s": None, "log": f"{run_dir}/rank{r}/rank.log"} for r in (0, 1)}
    return JobSummary(
        feed.JOB_ID,
        status,
        0,
        300,
        None,
        None,
        4.0,
        ranks=ranks,
        run_dir=run_dir,
        reason=reason,
        metrics_reported=False,
    )


def test_plain_run_of_a_script_shows_its_prints_and_says_it_reported_no_metrics():
    """It printed `started …`, `finished`, a table of `–` and `steps 0/300 loss – → –`."""
    v, out = view()
    v(started("script train.py"))
    v(LogLine(source="rank 0@mini1", text="epoch 1/3 loss 0.52", node="mini1", rank=0))
    v(LogLine(source="rank 1@mini1", text="[bold]not markup[/]", node="mini1", rank=1))
    v(LogLine(source="controller", text="a controller note"))
    v.finish(no_metrics_summary())
    text = out.getvalue()
    assert "rank 0: epoch 1/3 loss 0.52\nrank 1: [bold]not markup[/]\n" in text, text
    assert "steps 0/300" not in text and "loss – → –" not in text, text
    assert f"no steps reported  wall 00:00:04  run dir ~/.boltring/runs/{feed.JOB_ID}" in text, text
    assert "the script reported no metrics: call group.report(step=i, loss=loss) each step" in text, text
    assert f"~/.boltring/runs/{feed.JOB_ID}/rank1/rank.log" in text, text  # the table's output column
    assert "steps/s" not in text, text


def test_a_failed_script_is_one_line_and_says_where_the_traceback_is():
    v, out = view()
    v(started("script train.py"))
    for text in ["epoch 1", *TRACEBACK]:
        v(LogLine(source="rank 1@mini1", text=text, node="mini1", rank=1))
    v(
        RankErrorLine(
            source="rank 1@mini1", text="boltring-train: error: ValueError: no learning rate", rank=1
        )
    )
    reason = "rank 1 on mini1 failed: ValueError: no learning rate"
    v(LogLine(source="controller", text=reason, level="error"))
    v(StepProgress(3, 300, loss=0.5))
    summary = no_metrics_summary(JobState.FAILED, reason)
    summary.metrics_reported, summary.steps = True, 3
    v.finish(summary)
    text = out.getvalue()
    assert "Traceback" not in text and "train.py" not in text.replace("script train.py", ""), text
    assert text.count("ValueError") == 1, text  # the controller's one line
    assert (
        f"output of each rank: ~/.boltring/runs/{feed.JOB_ID}/rank*/rank.log (rank 1: the traceback is there)"
        in text
    ), text


def test_an_example_s_summary_is_as_before():
    v, out = view()
    v(started("example mlp"))
    v(LogLine(source="rank 0@mini1", text="[rank 0] step 10/300 loss 1.0", node="mini1", rank=0))
    v.finish(JobSummary(feed.JOB_ID, JobState.FINISHED, 300, 300, 1.3, 0.2, 9.0, run_dir="~/r"))
    text = out.getvalue()
    assert "rank 0:" not in text and "output of each rank" not in text, text
    assert "steps 300/300  loss 1.3000 → 0.2000  wall 00:00:09" in text, text


def test_rank_logs_on_other_nodes_read_as_scp_takes_them():
    s = JobSummary("j", JobState.FINISHED, 1, 1, None, None, 1.0)
    s.ranks = {
        0: {"node": "h1", "log": "~/.boltring/runs/j/rank0/rank.log"},
        1: {"node": "h2", "log": "~/.boltring/runs/j/rank1/rank.log"},
        2: {"node": "h2", "log": "~/.boltring/runs/j/rank2/rank.log"},
    }
    assert rank_logs(s, {"h1"}) == "~/.boltring/runs/j/rank0/rank.log, h2:~/.boltring/runs/j/rank*/rank.log"
    s.steps = None
    assert summary_line(s).startswith("steps ?/1  loss")


# -- a reader that closes the output -------------------------------------------------------


class ClosedPipe(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("json_out", [False, True])
def test_a_closed_output_is_the_view_s_to_handle_never_an_error_of_the_caller(json_out, monkeypatch, capsys):
    """rich raised SystemExit(1) from inside print() (and print() a BrokenPipeError), out of the
    controller's follow task: the ranks ran on, unwatched, and a kill waited forever."""
    console = PipeConsole(file=ClosedPipe(), force_terminal=False, width=200)
    if json_out:
        monkeypatch.setattr(sys, "stdout", ClosedPipe())
    v = HeadlessView(feed.idle(), json_out=json_out, console=console, rank_output=True)
    closed: list[bool] = []
    v.on_output_closed = lambda: closed.append(True)
    v(started("example mlp"))
    for step in range(1, 4):
        v(StepProgress(step, 300, loss=0.5))
    v(LogLine(source="controller", text="stopping", level="warn"))
    v.say("interrupted: stopping every rank …", error=False)
    v.finish(JobSummary(feed.JOB_ID, JobState.KILLED, 3, 300, 1.0, 0.5, 1.0))
    assert v.output_closed and closed == [True]  # said once, whatever came after
    v.say("could not confirm that rank 1 on b stopped")
    assert (
        capsys.readouterr().err == "boltring: could not confirm that rank 1 on b stopped\n"
    )  # errors: stderr


def test_a_listener_that_raises_never_stops_the_events_of_the_others(capsys):
    core = ControllerCore(feed.lab_config())
    got: list = []

    def broken(ev) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    core.add_listener(broken)
    core.add_listener(got.append)
    for i in range(3):
        core.emit(LogLine(source="controller", text=f"line {i}"))
    assert [ev.text for ev in got] == ["line 0", "line 1", "line 2"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "failed on a `log` event (BrokenPipeError" in err[0], err


def test_a_failed_script_gets_no_advice_about_metrics():
    """A module that was never found reported no metrics either; advising group.report() there
    pointed away from the traceback."""
    v, out = view()
    v(started("module no_such_mod"))
    v.finish(no_metrics_summary(JobState.FAILED, "rank 0 failed: ModuleNotFoundError"))
    assert "reported no metrics" not in out.getvalue(), out.getvalue()
