"""--dry-run tells the truth: a plan the launch would refuse is refused the same way, before any
plan line; a local rank's line, pasted into a shell, uses the run directory the launch uses; and
with --json the plan is JSON events, one per line, like `--run --json`."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from boltring.cluster.config.load import load_config_text
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.plan import PlanError, plan_job
from boltring.cluster.nodes.sync import SyncError, sync_roots
from boltring.tui.dry_run import print_plan
from tests.procs import cli_in

LOCAL = (
    "name: t\nnodes: [{name: a, local: true, ring_ip: 127.0.0.1, ranks: 2}]\njob: {example: mlp, steps: 2}\n"
)
REMOTE = (
    "name: t\nnodes:\n  - {name: h1, ssh: h1, ring_ip: 198.18.0.1}\n  - {name: h2, ssh: h2, ring_ip: 198.18.0.2}\n"
    "job: {example: mlp, global_batch: 4}\n"
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


# --- 1. what the launch refuses, the plan refuses ---------------------------------------------------


@pytest.mark.parametrize("text", [LOCAL, REMOTE])
def test_a_missing_job_sync_path_is_the_launchs_error(tmp_path, text):
    config = load_config_text(
        text.replace("job: {", "job: {sync: [./nonexist], "), str(_write(tmp_path, text))
    )
    with pytest.raises(SyncError) as launch:  # what the launch's sync step raises
        sync_roots(config)
    with pytest.raises(PlanError) as plan:
        plan_job(config, "job-1")
    assert str(plan.value) == str(launch.value) and plan.value.hint == launch.value.hint
    assert "job.sync names ./nonexist" in str(plan.value)


def test_a_remote_script_in_the_home_folder_is_refused_as_the_launch_refuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x.py").write_text("print(1)\n")
    config = load_config_text(REMOTE.replace("example: mlp", f"script: {tmp_path / 'x.py'}"), "<text>")
    with pytest.raises(PlanError, match="syncing all of it to every node is surely not meant"):
        plan_job(config, "job-1")  # it planned workspace/<home's name>/x.py before


def test_cli_dry_run_fails_like_the_launch_before_any_plan_line(tmp_path):
    cfg = _write(tmp_path, LOCAL.replace("job: {", "job: {sync: [./nonexist], "))
    dry = cli_in(tmp_path, "--config", str(cfg), "--dry-run")
    run = cli_in(tmp_path, "--config", str(cfg), "--run", "--skip-checks")
    assert dry.returncode == run.returncode == 2, (dry.stderr, run.stderr)  # nothing started
    assert dry.stdout == "" and "# rank" not in dry.stdout
    (line,) = dry.stderr.strip().splitlines()
    # the file and line of the item, as every config error names them
    assert line.startswith(f"boltring: {cfg}:"), line
    assert ": job.sync names ./nonexist, which does not exist here" in line, line
    assert line in run.stderr


# --- 2. a local line does, pasted, what the launch does ------------------------------------------------


def test_a_local_spawn_line_names_the_run_dir_the_launch_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config_text(LOCAL)
    for p in JobController(config).plan():
        assert p.run_dir.startswith("~/")  # the plan's data is unchanged; only the line expands it
        words = shlex.split(p.command)  # what a shell makes of the pasted line
        assert words[-1] == f"{tmp_path}/{p.run_dir[2:]}", p.command
        assert "'~" not in p.command


def test_a_remote_spawn_line_still_leaves_home_to_the_nodes_shell():
    (p, *_) = JobController(load_config_text(REMOTE)).plan()
    assert " start ~/" in p.command and str(Path.home()) not in p.command


# --- 3. --json: the plan as events -------------------------------------------------------------------------


def test_json_plan_is_one_event_per_line(capsys):
    controller = JobController(load_config_text(LOCAL))
    assert print_plan(controller, json_out=True) == 0
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(x) for x in lines]
    assert [e["event"] for e in events] == ["plan", "rank_plan", "rank_plan"]
    head = events[0]
    assert (head["world_size"], head["job"], head["steps"], head["backend"]) == (
        2,
        "example mlp",
        2,
        "boltring",
    )
    plans = controller.plan()
    for e, p in zip(events[1:], plans, strict=True):
        assert (e["rank"], e["node"], e["where"], e["command"], e["argv"]) == (
            p.rank,
            p.node,
            p.where,
            p.command,
            p.argv,
        )
        assert e["env"]["BOLTRING_RANK"] == str(p.rank) and "t" in e
        # no secret in it: no such field, and no value of one (32 bytes, hex); the rank's own
        # command only names the file the secret is read from
        assert "secret" not in e and not re.search(r"[0-9a-f]{64}", json.dumps(e)), e


def test_text_plan_is_unchanged_without_json(capsys):
    controller = JobController(load_config_text(LOCAL))
    assert print_plan(controller) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "# boltring dry run: config <text>, 2 ranks, example mlp, 2 steps, backend boltring."
    )
    assert out.count(
        "#   boltring runs (the launch spec and the secret go on its stdin):"
    ) == 2 and not out.lstrip().startswith("{")


def test_json_plan_the_launch_would_refuse_is_an_error_event(tmp_path, capsys):
    text = LOCAL.replace("job: {", "job: {sync: [./nonexist], ")
    cfg = _write(tmp_path, text)
    controller = JobController(load_config_text(text, str(cfg)))
    assert print_plan(controller, json_out=True) == 2
    out, err = capsys.readouterr()
    (event,) = [json.loads(x) for x in out.splitlines()]
    said = f"{cfg}:{text.splitlines().index(next(x for x in text.splitlines() if 'sync' in x)) + 1}: "
    assert event["event"] == "error" and event["text"].startswith(f"{said}job.sync names ./nonexist")
    assert err.startswith(f"boltring: {said}job.sync names ./nonexist")
