"""`boltring status` and `runs` say of a killed job what its record says (the same words as
`runs --json` and `status --json`), not a step count it never reached."""

from __future__ import annotations

from boltring.cluster.jobs.history import RunRecord
from boltring.cluster.states import JobState
from boltring.tui.runs_view import run_result


def killed(**kw) -> RunRecord:
    return RunRecord(job_id="j", config=None, state=JobState.KILLED, started=None, total_steps=200, **kw)


def test_a_job_stopped_during_launch_says_so_not_at_step_0():
    line = run_result(killed(steps=0, stopped_by="Ctrl-C", reason="stopped by you (Ctrl-C) during launch"))
    assert line == "job j killed: 0/200 steps (stopped by you (Ctrl-C) during launch)", line


def test_without_recorded_words_it_says_who_stopped_it_and_where():
    assert run_result(killed(steps=110, stopped_by="the app")).endswith("(stopped by you at step 110)")


def test_a_job_that_never_reported_a_step_is_not_shown_as_0_of_its_steps():
    """A bench cell or a script that prints its progress: `runs` said "finished 0/200"."""
    from boltring.tui.screens.history import run_row

    done = RunRecord(
        job_id="j",
        config=None,
        state=JobState.FINISHED,
        started=1.0,
        total_steps=200,
        steps=0,
        metrics_reported=False,
    )
    assert run_row(done)[3] == "no steps reported"
    assert run_result(done).startswith("job j finished: no steps reported"), run_result(done)
    stopped = killed(steps=0, stopped_by="the app", metrics_reported=False)
    assert run_result(stopped).endswith("(stopped by you)"), run_result(stopped)
