"""`boltring bench` itself, on real local ranks of both backends, with sizes small enough for the
default run: which cells it measures, in what order, and what each JSON line holds. The
figures are the benchmarks' business (tests/bench); this checks the instrument."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.procs import exit_after


def boltring(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "boltring.tui.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_both_backends_back_to_back_per_cell_in_alternating_order(home):
    res = boltring(
        "bench", "--backend", "both", "--ranks", "2", "--sizes", "64KB,128KB,256KB", "--repeat", "3", "--json"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    # Progress goes to stderr with --json; the order is ABBA so that each ratio compares two
    # measurements taken seconds apart.
    order = re.findall(r"running (\w+), 2 local ranks, (\d+) KB", res.stderr)
    assert order == [
        ("boltring", "64"),
        ("mlx", "64"),
        ("mlx", "128"),
        ("boltring", "128"),
        ("boltring", "256"),
        ("mlx", "256"),
    ], res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    cells = [(r["bytes"] >> 10, r.get("backend", "ratio")) for r in rows]
    # The report keeps one order whatever the run order was: boltring, mlx, then the ratio.
    assert cells == [(k, b) for k in (64, 128, 256) for b in ("boltring", "mlx", "ratio")], cells
    for r in rows:
        if "backend" in r:
            assert r["repeats"] == 3
            assert r["busbw_gbps"] > 0 and r["machine"] and r["date"]
        else:
            mine, theirs = (x for x in rows if x["bytes"] == r["bytes"] and "backend" in x)
            assert abs(r["ratio_boltring_over_mlx"] - mine["busbw_gbps"] / theirs["busbw_gbps"]) < 1e-9
    # boltring's local ranks talk over Unix sockets by default, and each line says so
    assert [r["transport"] for r in rows if r.get("backend") == "boltring"] == ["unix"] * 3
    assert all("transport" not in r for r in rows if r.get("backend") == "mlx")


def test_same_host_tcp_times_boltring_on_loopback_tcp_as_mlx_runs(home):
    res = boltring(
        "bench",
        "--backend",
        "boltring",
        "--ranks",
        "2,3",
        "--sizes",
        "64KB",
        "--repeat",
        "3",
        "--same-host",
        "tcp",
        "--json",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["ranks"], r["transport"]) for r in rows] == [(2, "tcp"), (3, "tcp")], rows


def test_piped_table_keeps_every_cell_and_line_whole(home):
    """`boltring bench | tee bench.txt`: rich assumed 80 columns and printed "boltri…" for the
    ratio's header, "boltring" and "(unix)" on two lines, and the machine line split in two."""
    res = boltring("bench", "--backend", "both", "--ranks", "2", "--sizes", "4KB", "--repeat", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert any("boltring/mlx" in line for line in lines), res.stdout
    assert any(re.search(r"boltring \(unix\) │\s+[\d.]+ │", line) for line in lines), res.stdout
    assert any(re.fullmatch(r"machine: .*mlx [\w.]+; \d{4}-\d\d-\d\d \d\d:\d\d UTC", line) for line in lines)


def test_cluster_runs_each_cell_as_a_job_on_the_configs_nodes(home, no_leftovers, tmp_path):
    """--cluster: the config's nodes and ring, each cell a job (here one local node of 3 ranks:
    the same launch path as SSH nodes, tests/integration/test_bench_cluster.py runs those)."""
    config = tmp_path / "boltring.yaml"
    config.write_text("name: one\nnodes:\n  - {name: here, local: true, ranks: 3}\n")
    res = boltring(
        "bench",
        "--cluster",
        "--config",
        str(config),
        "--backend",
        "both",
        "--sizes",
        "64KB,128KB",
        "--repeat",
        "3",
        "--json",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    order = re.findall(r"running (\w+), 3 ranks on here, (\d+) KB", res.stderr)
    assert order == [("boltring", "64"), ("mlx", "64"), ("mlx", "128"), ("boltring", "128")], res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    cells = [(r["bytes"] >> 10, r.get("backend", "ratio"), r["ranks"]) for r in rows]
    assert cells == [(k, b, 3) for k in (64, 128) for b in ("boltring", "mlx", "ratio")], cells
    assert all(r["machine"].startswith("Linux") for r in rows)
    # each cell was a job: the job records say which module and backend ran
    runs = boltring("runs", "--json", timeout=60)
    jobs = [json.loads(line) for line in runs.stdout.splitlines()]
    assert len(jobs) == 4 and all(j["state"] == "finished" for j in jobs), jobs


def test_cluster_runs_only_our_authenticated_ring_unless_mlx_is_asked_for(home, no_leftovers, tmp_path):
    """MLX's ring takes any connection on the ring network: on nodes it runs only by name, and
    then the bench says so."""
    config = tmp_path / "boltring.yaml"
    config.write_text("name: one\nnodes:\n  - {name: here, local: true, ranks: 2}\n")
    res = boltring(
        "bench", "--cluster", "--config", str(config), "--sizes", "64KB", "--repeat", "2", "--json"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert [json.loads(line).get("backend") for line in res.stdout.splitlines()] == ["boltring"]
    assert "no authentication" not in res.stderr
    res = boltring(
        "bench", "--cluster", "--config", str(config), "--backend", "mlx", "--sizes", "64KB", "--repeat", "2"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "note: MLX's ring has no authentication" in res.stdout + res.stderr


def test_cluster_refuses_the_local_only_options_in_one_line(home, tmp_path):
    res = boltring("bench", "--cluster", "--ranks", "3", "--same-host", "tcp", timeout=60)
    assert res.returncode == 2 and not res.stdout  # nothing benchmarked: what was given
    assert res.stderr.strip() == (
        "boltring bench: --ranks, --same-host: with --cluster the ranks come from the config's nodes, "
        "and ring.directions and ring.same_host from its ring section; drop them, or drop --cluster"
    ), res.stderr


def test_cluster_cell_that_cannot_start_is_one_line_and_exit_1(home, tmp_path):
    """(The checks would stop this config first: --skip-checks goes on to the launch.)"""
    config = tmp_path / "boltring.yaml"
    config.write_text(
        "name: bad\ndefaults: {python: /nonexistent/python3}\nnodes:\n  - {name: here, local: true, ranks: 2}\n"
    )
    res = boltring(
        "bench",
        "--cluster",
        "--skip-checks",
        "--config",
        str(config),
        "--sizes",
        "64KB",
        "--repeat",
        "2",
        timeout=120,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "boltring bench: boltring on here: launch failed: here: cannot run /nonexistent/python3"
    )


def test_cluster_checks_first_and_a_failed_check_stops_the_bench(home, tmp_path):
    config = tmp_path / "boltring.yaml"
    config.write_text("name: away\nnodes:\n  - {name: here, local: true, ranks: 2, ring_ip: 198.18.99.99}\n")
    res = boltring(
        "bench", "--cluster", "--config", str(config), "--sizes", "64KB", "--repeat", "2", timeout=120
    )
    assert res.returncode == 2, res.stdout + res.stderr  # failed checks: nothing started, as --run
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "running the checks on here …"
    assert any(line.startswith("fail here ring_ip: ") for line in lines), lines
    (error,) = res.stderr.strip().splitlines()  # errors go to stderr, progress to stdout
    assert error.startswith("boltring bench: 2 check(s) failed; not benchmarking (fix them, or pass")
    assert error.endswith(": here ring_iface; here ring_ip")
    assert not any(line.startswith("running boltring") for line in lines)


def test_cluster_skip_checks_benchmarks_without_the_link_figure(home):
    res = boltring(
        "bench",
        "--cluster",
        "--skip-checks",
        "--backend",
        "boltring",
        "--sizes",
        "64KB",
        "--repeat",
        "2",
        "--json",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "running the checks" not in res.stderr
    (row,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert row["backend"] == "boltring" and "link_gbit_s" not in row


def test_cluster_of_one_rank_is_refused_before_anything_runs(home, tmp_path):
    config = tmp_path / "boltring.yaml"
    config.write_text("name: solo\nnodes:\n  - {name: here, local: true, ranks: 1}\n")
    res = boltring("bench", "--cluster", "--config", str(config), timeout=60)
    assert res.returncode == 2 and not res.stdout
    assert res.stderr.strip() == (
        f"boltring bench: {config} has 1 rank: an allreduce needs at least 2 (more nodes, or ranks: 2 on a node)"
    ), res.stderr


def test_wire_dtype_times_average_gradients_with_float32_as_the_baseline(home):
    """--wire-dtype float32 is average_gradients as a job runs it by default, the baseline a
    half-precision wire is compared with; the JSON line and the table's title say which."""
    rows = {}
    for wire in ("float32", "bfloat16"):
        res = boltring(
            "bench", "--backend", "boltring", "--ranks", "2", "--sizes", "64KB", "--repeat", "2",
            "--wire-dtype", wire, "--json",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        (row,) = [json.loads(line) for line in res.stdout.splitlines()]
        rows[wire] = row
    assert [r["wire_dtype"] for r in rows.values()] == ["float32", "bfloat16"]
    assert all(r["bytes"] == 64 << 10 and r["busbw_gbps"] > 0 for r in rows.values()), rows
    res = boltring(
        "bench",
        "--backend",
        "boltring",
        "--ranks",
        "2",
        "--sizes",
        "4KB",
        "--repeat",
        "2",
        "--wire-dtype",
        "bfloat16",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "average_gradients, float32 sent as bfloat16, median of 2" in res.stdout, res.stdout
    res = boltring("bench", "--backend", "both", "--sizes", "4KB", "--wire-dtype", "float32")
    assert res.returncode != 0 and "use --backend boltring" in res.stderr, res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_bench_stops_every_rank_and_exits_130(no_leftovers, sig):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "boltring.tui.cli",
            "bench",
            "--ranks",
            "3",
            "--sizes",
            "256MB",
            "--repeat",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("running boltring, 3 local ranks, 256 MB"), first
        time.sleep(2)  # the ranks are up and reducing
        out, err, took = exit_after(proc, lambda: proc.send_signal(sig), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "boltring bench: interrupted; every rank it started was stopped"
    assert took < 10, f"stopping the bench took {took:.1f} s"
