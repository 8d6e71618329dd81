"""`boltring export` and `boltring runs` on job records built here (no job runs): every way an
output cannot be written is one line and exit 1, --config picks among that config's jobs,
--limit below 1 is refused, and a job that never started a rank says so."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from boltring.cluster.config import load_config_with_report
from boltring.cluster.jobs.history import find_run
from boltring.tui import cli

CONFIG = "name: {name}\nnodes:\n  - {{name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}}\n"


def config_file(home: Path, name: str) -> tuple[Path, str]:
    """A config file and its source, as job records name their config."""
    path = home / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name))
    return path, load_config_with_report(str(path))[0].source


def job_record(
    home: Path,
    job_id: str,
    *,
    config: str = "/somewhere/boltring.yaml",
    created: float = 1000.0,
    started: float | None = 1001.0,
    state: str = "finished",
    reason: str | None = None,
    steps: int = 3,
) -> None:
    """A job record of 2 ranks; when it started, each rank's metrics.jsonl in its run dir."""
    run_dir = home / "runs" / job_id
    ranks = [{"rank": r, "node": "local", "run_dir": str(run_dir / f"rank{r}")} for r in (0, 1)]
    if started is not None:
        for r in (0, 1):
            (run_dir / f"rank{r}").mkdir(parents=True)
            lines = [
                {"kind": "step", "step": s, "rank": r, "wall": started + s, "loss": 2.0 / s}
                for s in range(1, 4)
            ]
            (run_dir / f"rank{r}" / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    record = {
        "job_id": job_id,
        "state": state,
        "config": config,
        "created": created,
        "started": started,
        "steps": steps,
        "ranks": ranks,
        "reason": reason,
    }
    jobs = home / ".boltring" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{job_id}.json").write_text(json.dumps(record))


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of `boltring ARGV`, in this process."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("flag", ["--csv", "--svg"])
def test_export_to_a_folder_is_one_line(home, capsys, flag):
    job_record(home, "j-1")
    code, err = run_cli(capsys, "export", "last", flag, str(home))
    assert code == 1
    assert one_line(err) == (
        f"boltring: cannot write {home}: Is a directory "
        f"(give {flag} a file in an existing, writable directory)"
    )


@pytest.mark.parametrize("flag", ["--csv", "--svg"])
def test_export_into_a_missing_folder_is_refused_not_made(home, capsys, flag):
    job_record(home, "j-1")
    target = home / "missing" / "out.file"
    code, err = run_cli(capsys, "export", "last", flag, str(target))
    assert code == 1
    assert one_line(err).startswith(f"boltring: cannot write {target}: No such file or directory")
    assert not target.parent.exists()


def test_tensorboard_into_an_unwritable_place_is_one_line(home, capsys):
    pytest.importorskip("tensorboardX")
    job_record(home, "j-1")
    blocker = home / "a-file"
    blocker.write_text("")
    code, err = run_cli(capsys, "export", "last", "--tensorboard", str(blocker))
    assert code == 1
    line = one_line(err)
    assert line.startswith(f"boltring: cannot write {blocker}: ") and "(give --tensorboard a folder" in line


def test_tensorboard_without_tensorboardx_says_what_to_install(home, capsys, monkeypatch):
    job_record(home, "j-1")
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` now fails
    code, err = run_cli(capsys, "export", "last", "--tensorboard", str(home / "tb"))
    assert code == 1
    assert "tensorboardX" in one_line(err) and "pip install 'boltring[export]'" in err


def test_export_with_config_picks_among_that_configs_jobs(home, capsys):
    path_a, source_a = config_file(home, "a")
    _, source_b = config_file(home, "b")
    job_record(home, "a-old", config=source_a, created=100.0, started=101.0)
    job_record(home, "b-new", config=source_b, created=200.0, started=201.0)
    out = home / "m.csv"
    code, err = run_cli(capsys, "export", "last", "-c", str(path_a), "--csv", str(out))
    assert code == 0, err
    ranks = {line.split(",")[1] for line in out.read_text().splitlines()[1:]}
    assert "of job a-old" in err and ranks == {"0", "1"}
    code, err = run_cli(capsys, "export", "b-", "-c", str(path_a), "--csv", str(out))  # b's prefix
    assert code == 2 and one_line(err).startswith(f"boltring: no job 'b-' of {source_a}")


def test_export_with_a_missing_config_is_the_config_error(home, capsys):
    job_record(home, "j-1")
    missing = home / "nope.yaml"
    code, err = run_cli(capsys, "export", "last", "-c", str(missing), "--csv", str(home / "m.csv"))
    assert code == 2 and "nope.yaml: no such file" in one_line(err)  # nothing ran: a bad config
    assert not (home / "m.csv").exists()


def test_last_is_the_newest_job_even_when_its_launch_failed(home):
    job_record(home, "ran", created=100.0, started=101.0)
    job_record(home, "failed-launch", created=200.0, started=None, state="failed", reason="x")
    assert find_run("last").job_id == "failed-launch"


def test_export_of_a_job_that_never_started_says_so(home, capsys):
    why = "far: cannot reach far.example:22"
    job_record(home, "never", started=None, state="failed", reason=why)
    for flag, target in (("--csv", "m.csv"), ("--svg", "l.svg")):
        code, err = run_cli(capsys, "export", "never", flag, str(home / target))
        assert code == 1
        line = one_line(err)
        assert "ended before all its ranks were running" in line and why in line and "copy" not in line


def test_export_of_a_job_that_ran_elsewhere_says_copy_it(home, capsys):
    job_record(home, "elsewhere")
    shutil.rmtree(home / "runs" / "elsewhere")  # the rank folders are on the nodes, not here
    code, err = run_cli(capsys, "export", "elsewhere", "--csv", str(home / "m.csv"))
    assert code == 1 and "copy" in one_line(err) and "ended before" not in err


def test_export_of_a_job_whose_ranks_are_here_but_reported_no_step_says_that(home, capsys):
    """A local job stopped before its first step: its rank folders are on this machine, so
    "copy them from the node" was false advice."""
    job_record(home, "early")
    for rank in (0, 1):
        (home / "runs" / "early" / f"rank{rank}" / "metrics.jsonl").unlink()
    code, err = run_cli(capsys, "export", "early", "--csv", str(home / "m.csv"))
    line = one_line(err)
    assert code == 1 and "reported no step" in line and "copy" not in line, line


@pytest.mark.parametrize("limit", ["0", "-3", "-1", "two"])
def test_runs_limit_below_one_is_refused(home, capsys, limit):
    job_record(home, "j-1")
    code, err = run_cli(capsys, "runs", "--limit", limit)
    assert code == 2
    assert one_line(err).startswith("boltring runs: argument --limit: give ")


def test_runs_limit_one_shows_the_newest(home, capsys):
    job_record(home, "old", created=100.0, started=101.0)
    job_record(home, "new", created=200.0, started=201.0)
    assert cli.main(["runs", "--json", "--limit", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["job_id"] for r in rows] == ["new"]


def test_no_past_jobs_names_the_real_folder(home, capsys):
    assert cli.main(["runs"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"(job records live in {home / '.boltring' / 'jobs'})" in out and "~" not in out
