"""`boltring bench` (and the job) refuse an option that would change nothing, in one line and exit 2, before
any rank starts: taken silently, it looked in effect (`--backend mlx --directions 2` ran MLX's
ring as ever; `--dtype int32 --wire-dtype bfloat16` printed "int32 sent as bfloat16")."""

from __future__ import annotations

import pytest

from tests.procs import cli_in


@pytest.mark.parametrize(
    "args, said",
    [
        (["--backend", "mlx", "--directions", "2"], "--directions: set boltring's ring"),
        (["--backend", "mlx", "--same-host", "tcp"], "--same-host: set boltring's ring"),
        (["--backend", "boltring", "--dtype", "int32", "--wire-dtype", "bfloat16"], "drop --dtype int32"),
        (["--skip-checks"], "--skip-checks skips the checks of --cluster"),
    ],
)
def test_an_option_that_changes_nothing_is_refused(tmp_path, args, said):
    res = cli_in(tmp_path, "bench", *args, "--sizes", "4KB", "--repeat", "1")
    assert res.returncode == 2 and res.stdout == "", (res.stdout, res.stderr)
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("boltring bench: ") and said in line, line
    assert not (tmp_path / ".boltring" / "jobs").exists()  # nothing ran


def test_steps_per_eval_is_refused_for_an_example_without_validation(tmp_path):
    """charlm and mlp have no validation loss: the flag was passed to the ranks and ignored."""
    res = cli_in(tmp_path, "--dry-run", "--example", "charlm", "--steps-per-eval", "5")
    assert res.returncode == 2 and res.stdout == "", (res.stdout, res.stderr)
    assert "the charlm example has no validation loss: drop --steps-per-eval" in res.stderr, res.stderr


def test_two_configs_are_refused_not_the_last_taken(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nnodes:\n  - {name: here, local: true}\n")
    res = cli_in(tmp_path, "-c", "a.yaml", "check", "-c", "b.yaml")
    assert res.returncode == 2 and "--config is given twice (a.yaml, b.yaml): give one" in res.stderr, (
        res.stderr
    )
    same = cli_in(tmp_path, "-c", "a.yaml", "check", "--config=a.yaml", "--json")
    assert same.returncode == 0, same.stderr  # the same file twice is one config
