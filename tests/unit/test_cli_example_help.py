"""`boltring … --example NAME -- --help` prints the example's options on the terminal and exits 0
without starting a rank (it ran the ranks, which printed the help into rank0/rank.log, and the
job "finished" at step 0; `--example lm -- --help` was refused for lacking --model and --data)."""

from __future__ import annotations

import pytest

from tests.procs import cli_in


@pytest.mark.parametrize("mode", ["--run", "--dry-run"])
@pytest.mark.parametrize("example, word", [("mlp", "--hidden"), ("lm", "--fine-tune-type")])
def test_help_after_an_example_prints_its_options_and_starts_nothing(tmp_path, mode, example, word):
    res = cli_in(tmp_path, mode, "--example", example, "--", "--help")
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert res.stdout.startswith(f"usage: --example {example} --") and word in res.stdout, res.stdout
    started = [x for x in res.stdout.splitlines() if x.startswith(("job ", "started job"))]
    assert not started and "steps 0/" not in res.stdout and res.stderr == "", res.stdout
    assert not (tmp_path / ".boltring" / "runs").exists()
    short = cli_in(tmp_path, mode, "--example", example, "--", "-h")
    assert short.returncode == 0 and short.stdout == res.stdout


def test_lm_help_says_which_mlx_lm_flag_boltring_refuses():
    """--grad-accumulation-steps was listed as a usable flag, then refused when given."""
    pytest.importorskip("mlx_lm")
    from boltring.cluster.train.lm_setup import extra_parser

    text = " ".join(extra_parser().format_help().split())
    assert "--grad-accumulation-steps other than 1 is refused" in text
    assert "refused by boltring's lm loop unless 1" in text
