"""What `boltring` exits with when nothing starts, and options in the wrong place."""

from __future__ import annotations

import json

import pytest

from boltring.tui import cli


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--dry-run", "kill"],
            "--dry-run is an option of a job (`boltring --run …`), not of `boltring kill`",
        ),
        (["--json", "check"], "--json goes after the subcommand: `boltring check --json`"),  # check has it
        (["--json", "--run", "status"], "--json, --run are options of a job"),
        (["-n", "4", "--run", "hostfile"], "-n, --run are options of a job"),
    ],
)
def test_job_options_before_a_subcommand_are_refused_not_ignored(capsys, argv, said):
    """They were taken and then ignored: `--dry-run kill` really killed, `--json check`
    printed a table and `--ranks 4 hostfile` wrote 2 hosts."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert said in capsys.readouterr().err


def test_config_before_a_subcommand_still_applies(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("nodes:\n  - {name: a, local: true, ranks: 3}\n")
    assert cli.main(["-c", str(config), "hostfile"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3  # one entry per rank, as mlx.launch reads it


def test_a_bad_config_under_run_json_is_an_error_event_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert cli.main(["--config", str(missing), "--run", "--json"]) == 2
    out, err = capsys.readouterr()
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["event"] == "error" and event["text"].startswith(f"{missing}: no such file"), event
    assert err.startswith(f"boltring: {missing}: no such file")


def test_dry_run_json_is_the_plan_as_events(capsys):
    assert cli.main(["--dry-run", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["plan", "rank_plan", "rank_plan"]
    assert events[1]["env"]["BOLTRING_RANK"] == "0" and "BOLTRING_WIRE_DTYPE" in events[1]["env"]


def test_rdma_devices_without_jaccl_is_refused_not_ignored(tmp_path, capsys):
    devices = tmp_path / "devices.json"
    devices.write_text('[[null, "rdma_en2"], ["rdma_en2", null]]')
    assert cli.main(["--dry-run", "--rdma-devices", str(devices)]) == 2
    assert (
        "--rdma-devices is read by the jaccl backend only, and this job runs boltring"
        in capsys.readouterr().err
    )


def test_ctrl_c_while_starting_up_is_exit_130_without_a_traceback(monkeypatch, capsys):
    """The console script's own module catches it: Ctrl-C while the CLI is still importing
    printed a KeyboardInterrupt traceback from inside an import and exited -2."""
    import tomllib
    from pathlib import Path

    from boltring.tui import entry

    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    assert entry.main() == 130
    assert capsys.readouterr().err == "boltring: interrupted\n"
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["boltring"] == "boltring.tui.entry:main"


def test_an_unknown_option_with_a_value_is_named(capsys):
    """argparse took the value for a subcommand and said only "invalid choice: 'x'"."""
    with pytest.raises(SystemExit) as info:
        cli.main(["--dry-run", "--data", "x"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("boltring: unrecognized option --data (with 'x')")
    with pytest.raises(SystemExit):
        cli.main(["chek"])  # a mistyped subcommand keeps argparse's list of the right ones
    assert "boltring: unknown subcommand 'chek' (choose from 'check'," in capsys.readouterr().err


def test_usage_shows_the_subcommand_as_optional(capsys):
    """`boltring` alone opens the app: the usage line must not say a subcommand is required."""
    from boltring.tui.cli_parser import main_parser

    usage = main_parser().format_usage()
    assert "[SUBCOMMAND] ..." in usage and " SUBCOMMAND ..." not in usage.replace("[SUBCOMMAND]", ""), usage
