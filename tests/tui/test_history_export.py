"""Run history and export on a real finished job: `boltring runs`, `boltring export` (CSV,
TensorBoard, SVG), `boltring status` with nothing running, and the app's history screen.

One real local job (2 ranks on loopback, 24 steps) runs once for the module, in its own home.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from boltring.cluster.config.ports import free_port_block
from boltring.cluster.config.schema import Config, JobSpec, Node
from boltring.cluster.jobs.controller import JobController
from boltring.cluster.jobs.export import loss_svg
from boltring.cluster.jobs.history import HistoryError, find_run, list_runs, loss_curve
from boltring.cluster.jobs.plan import checkpoint_dir
from boltring.cluster.jobs.resume_point import ResumeRefused
from boltring.tui.screens.history import HistoryScreen
from tests.tui import feed
from tests.tui.harness import make_app, settle

CLI = [sys.executable, "-m", "boltring.tui.cli"]
STEPS = 24


def cli(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "BOLTRING_HOME": str(home / ".boltring"), "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def two_free_ports() -> int:
    """A port p with p and p+1 free on loopback (rank k listens on p+k): other test runs on
    this machine may hold the default ring port."""
    return free_port_block(2)


@pytest.fixture(scope="module")
def job_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    config = home / "boltring.yaml"
    config.write_text(
        "name: hist\nnodes:\n  - {name: local, local: true, ring_ip: 127.0.0.1, ranks: 2}\n"
        f"ring:\n  port: {two_free_ports()}\njob:\n  example: mlp\n  steps: {STEPS}\n"
    )
    res = cli(home, "--run", "--skip-checks", "--config", str(config))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return home


@pytest.fixture
def in_home(job_home, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(job_home))
    monkeypatch.setenv("BOLTRING_HOME", str(job_home / ".boltring"))
    return job_home


def test_history_reads_the_finished_job(in_home):
    runs = list_runs()
    assert len(runs) == 1
    run = runs[0]
    assert run.state == "finished" and run.steps == STEPS and run.total_steps == STEPS
    assert run.first_loss is not None and run.last_loss is not None and run.last_loss < run.first_loss
    assert run.wall_s is not None and 0 < run.wall_s < 300
    curve = loss_curve(run)
    assert [s for s, _ in curve] == list(range(1, STEPS + 1))
    assert find_run("last").job_id == run.job_id == find_run(run.job_id[:-3]).job_id
    with pytest.raises(HistoryError, match="no job 'nope'"):
        find_run("nope")


def test_runs_command_lists_the_job(job_home):
    res = cli(job_home, "runs")
    assert res.returncode == 0, res.stderr
    run = list_runs(job_home / ".boltring")[0]
    assert run.job_id in res.stdout and "finished" in res.stdout and f"{STEPS}/{STEPS}" in res.stdout
    rows = [json.loads(line) for line in cli(job_home, "runs", "--json").stdout.splitlines()]
    assert rows[0]["job_id"] == run.job_id and rows[0]["steps"] == STEPS


def test_status_with_nothing_running_shows_the_last_job(job_home):
    res = cli(job_home, "status", "--config", str(job_home / "boltring.yaml"))
    assert res.returncode == 0  # as `--run` exited for that finished job (README: exit codes)
    assert "no job is running" in res.stdout
    assert "last: job" in res.stdout and f"finished: {STEPS}/{STEPS} steps" in res.stdout
    # with --json: the last job as an event, and no error event for a command that succeeded
    js = cli(job_home, "status", "--json", "--config", str(job_home / "boltring.yaml"))
    events = [json.loads(line)["event"] for line in js.stdout.splitlines()]
    assert js.returncode == 0 and events == ["last_run"], js.stdout


def _tfrecords(path: Path) -> list[bytes]:
    """The records of a TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        out.append(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
    return out


def test_export_csv_tensorboard_and_svg(in_home, tmp_path):
    job_home = in_home
    run = list_runs()[0]
    out_csv, tb, svg = tmp_path / "m.csv", tmp_path / "tb", tmp_path / "loss.svg"
    res = cli(
        job_home, "export", run.job_id, "--csv", str(out_csv), "--tensorboard", str(tb), "--svg", str(svg)
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * STEPS and {r["rank"] for r in rows} == {"0", "1"}
    assert rows[0]["step"] == "1" and float(rows[-1]["loss"]) == pytest.approx(run.last_loss)

    from tensorboardX.proto.event_pb2 import Event

    (events_file,) = (tb / run.job_id).glob("events.out.tfevents.*")
    tags: dict[str, list[tuple[int, float]]] = {}
    for record in _tfrecords(events_file):
        ev = Event.FromString(record)
        for v in ev.summary.value:
            tags.setdefault(v.tag, []).append((ev.step, v.simple_value))
    assert [s for s, _ in tags["loss"]] == list(range(1, STEPS + 1))
    assert tags["loss"][-1][1] == pytest.approx(run.last_loss, rel=1e-5)
    assert "rank1/samples_per_s" in tags and "rank0/allreduce_gbps" in tags
    # per rank, as the app and `--run` show it: the line's global samples/s over the 2 ranks
    lines = [json.loads(x) for x in (Path(run.ranks[1]["run_dir"]).expanduser() / "metrics.jsonl").open()]
    written = [x["samples_per_s"] / 2 for x in lines if x.get("kind") == "step"]
    assert [v for _, v in tags["rank1/samples_per_s"]] == pytest.approx(written, rel=1e-5)
    assert [float(r["samples_per_s"]) for r in rows if r["rank"] == "1"] == pytest.approx(written)
    assert svg.read_text().startswith("<svg") and "<polyline" in svg.read_text()


def test_export_of_an_unknown_run_is_one_line(job_home, tmp_path):
    res = cli(job_home, "export", "nope", "--csv", str(tmp_path / "x.csv"))
    assert res.returncode == 2  # bad input: nothing written (README, exit codes)
    assert res.stderr.strip().count("\n") == 0 and "no job 'nope'" in res.stderr


def test_loss_svg_draws_every_point():
    svg = loss_svg([(1, 2.0), (2, 1.0), (3, 0.5)], "loss · x")
    assert svg.count(",") >= 3 and "loss · x" in svg


async def test_history_screen_lists_jobs_and_shows_the_curve(in_home):
    app = make_app(feed.idle())
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("h")
        for _ in range(50):
            await pilot.pause(0.05)
            if isinstance(app.screen, HistoryScreen) and app.screen.runs:
                break
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        assert screen.query_one("#history-table").row_count == 1
        await settle(pilot)
        plot = screen.query_one("#history-loss")
        assert f"step {STEPS}" in plot.border_title
        await pilot.press("escape")
        assert not isinstance(app.screen, HistoryScreen)


async def test_save_plot_writes_an_svg(open_app, tmp_path):
    async with open_app(feed.running()) as (app, pilot):
        app.export_dir = tmp_path
        await pilot.press("p")
        await settle(pilot)
        (svg,) = tmp_path.glob("loss-*.svg")
        assert svg.read_text().count("<polyline") == 1


async def test_resume_point_reads_the_checkpoint_dir_through_the_transport(tmp_path):
    node = Node("local", ring_ip="127.0.0.1", local=True, workdir=str(tmp_path), python=sys.executable)
    config = Config(name="rp", source=None, nodes=(node,), job=JobSpec(example="mlp", steps=300))
    ctrl = JobController(config)
    try:
        assert await ctrl.resume_point() is None
        ckpt = tmp_path / "checkpoints" / "rp" / "mlp"
        ckpt.mkdir(parents=True)
        (ckpt / "latest").write_text("step-000200.safetensors\n")
        assert await ctrl.resume_point() is None  # names a file that is not there
        (ckpt / "step-000200.safetensors").write_bytes(b"x" * 16)
        with pytest.raises(ResumeRefused, match=r"no checkpoint in .* verifies"):
            await ctrl.resume_point()  # the ranks would refuse it: it is not announced
        _real_checkpoint(ckpt, "mlp")
        assert await ctrl.resume_point() == "step 200 (step-000200.safetensors)"
    finally:
        await ctrl.close()


def _real_checkpoint(directory: Path, example: str, step: int = 200) -> None:
    """A checkpoint the example's ranks accept (seed 0, its default options) at `step`."""
    import importlib

    from boltring.cluster.train import checkpoint, loop

    cfg = loop.TrainConfig(steps=step, seed=0, global_batch=8)
    task = importlib.import_module(f"boltring.cluster.train.{example}").make_task(cfg)
    task.optimizer.init(task.model.trainable_parameters())
    checkpoint.save(directory, task, step=step, samples_seen=step * 8, seed=0, global_batch=8)


def _charlm_left_step_200(node: Node) -> None:
    """The charlm example of config "rp" wrote step 200, wherever the launch plan puts it."""
    charlm = Config(name="rp", source=None, nodes=(node,), job=JobSpec(example="charlm", steps=10))
    _real_checkpoint(Path(checkpoint_dir(node, charlm)), "charlm")


async def test_resume_point_is_only_the_jobs_own_checkpoint(tmp_path):
    """Other jobs of the config (another example, a script, a module) have their own checkpoint
    directories: the `r` dialog of a script job never offers the charlm example's step 200."""
    node = Node("local", ring_ip="127.0.0.1", local=True, workdir=str(tmp_path), python=sys.executable)
    _charlm_left_step_200(node)
    (tmp_path / "train.py").write_text("")
    for job, expected in (
        (JobSpec(example="charlm", steps=300), "step 200 (step-000200.safetensors)"),
        (JobSpec(example="mlp", steps=10), None),
        (JobSpec(script=str(tmp_path / "train.py"), steps=10), None),
        (JobSpec(module="mypkg.train", steps=10), None),
    ):
        ctrl = JobController(Config(name="rp", source=None, nodes=(node,), job=job))
        try:
            assert await ctrl.resume_point() == expected, job
        finally:
            await ctrl.close()


def test_the_job_record_holds_the_summary_so_remote_runs_list_without_their_files(in_home):
    """The record of a finished job carries its summary: a run whose metrics files are on other
    machines (or gone) still lists its steps, losses and wall time."""
    run = list_runs()[0]
    data = json.loads(run.path.read_text())
    assert data["summary"]["status"] == "finished" and data["summary"]["steps"] == STEPS
    for rank_dir in (in_home / ".boltring" / "runs" / run.job_id).glob("rank*"):
        (rank_dir / "metrics.jsonl").rename(rank_dir / "metrics.moved")
    try:
        again = [r for r in list_runs() if r.job_id == run.job_id][0]
        assert (again.steps, again.first_loss, again.last_loss) == (STEPS, run.first_loss, run.last_loss)
        assert again.wall_s == run.wall_s
    finally:
        for rank_dir in (in_home / ".boltring" / "runs" / run.job_id).glob("rank*"):
            (rank_dir / "metrics.moved").rename(rank_dir / "metrics.jsonl")


async def test_resume_dialog_of_a_script_job_does_not_offer_the_examples_checkpoint(tmp_path, home):
    """`r` on a script job of a config whose charlm example left step 200: the dialog says the
    script starts from step 0 (it never wrote or read that checkpoint)."""
    from boltring.tui.screens.confirm import ConfirmModal

    node = Node("local", ring_ip="127.0.0.1", local=True, workdir=str(tmp_path), python=sys.executable)
    _charlm_left_step_200(node)
    script = tmp_path / "train.py"
    script.write_text("")
    job = JobSpec(script=str(script), steps=10, global_batch=8, checkpoint_every=5)
    ctrl = JobController(Config(name="rp", source=None, nodes=(node,), job=job))
    app = make_app(ctrl)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await app.run_action("resume")
        for _ in range(50):
            await settle(pilot)
            if isinstance(app.screen, ConfirmModal):
                break
        assert isinstance(app.screen, ConfirmModal)
        title = app.screen.title_text
        assert f"Resume script {script}: no checkpoint for this job: starts from step 0" in title, title
        assert "step 200" not in title
        await pilot.press("escape")
    await ctrl.close()


async def test_checkpoints_of_the_old_per_config_layout_are_pointed_out(tmp_path):
    """Checkpoints were kept per config only (<config>/latest); now per job. Old ones are not
    read, and the controller says where they are and where to move them, not nothing."""
    node = Node("local", ring_ip="127.0.0.1", local=True, workdir=str(tmp_path), python=sys.executable)
    old = tmp_path / "checkpoints" / "rp"
    old.mkdir(parents=True)
    (old / "step-000020.safetensors").write_bytes(b"x")
    (old / "latest").write_text("step-000020.safetensors")
    ctrl = JobController(Config(name="rp", source=None, nodes=(node,), job=JobSpec(example="mlp", steps=10)))
    said: list = []
    ctrl.add_listener(said.append)
    try:
        assert await ctrl.resume_point() is None
    finally:
        await ctrl.close()
    (line,) = [e.text for e in said if getattr(e, "text", "").startswith("checkpoints of this config")]
    assert f"are in {old} (latest step-000020.safetensors)" in line and f"move them into {old}/mlp" in line
