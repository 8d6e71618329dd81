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
