"""`--example lm` on a rank: mlx-lm's flags that boltring's options stand for, the flags it
ignores, and the --data folder read line by line (every bad line named by file and line)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

pytest.importorskip("mlx_lm")

from boltring.cluster.train.lm_setup import DataError, parse_lm_args, read_data
from boltring.cluster.train.loop import TrainConfig

BASE = ["--model", "m", "--data", "d"]


def test_test_flag_is_really_ignored():
    said: list[str] = []
    args = parse_lm_args(TrainConfig(), [*BASE, "--test"], said.append)
    assert args.test is False  # mlx-lm's loader refuses a folder without test.jsonl when it is True
    assert any("--test is ignored under boltring" in s and "mlx_lm.lora" in s for s in said), said


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    # ours None: boltring's not set; an explicit 0 is "none" and wins over mlx-lm's flag
    [(None, None, 0), (None, "7", 7), (5, "7", 5), (5, None, 5), (None, "0", 0), (0, "7", 0), (0, None, 0)],
)
def test_steps_per_eval_zero_means_no_validation(ours, theirs, expected):
    extra = [*BASE, *(["--steps-per-eval", theirs] if theirs else [])]
    args = parse_lm_args(TrainConfig(steps_per_eval=ours), extra, print)
    assert args.steps_per_eval == expected  # not mlx-lm's default of 200


def test_run_by_hand_without_global_batch_takes_the_users_batch_size():
    said: list[str] = []
    args = parse_lm_args(TrainConfig(global_batch=None), [*BASE, "--batch-size", "6"], said.append)
    assert args.batch_size == 6 and not said
    assert parse_lm_args(TrainConfig(global_batch=None), BASE, print).batch_size is None  # the default


def test_equal_values_say_nothing_and_a_yaml_value_that_differs_is_named(tmp_path):
    said: list[str] = []
    parse_lm_args(
        TrainConfig(steps=3, global_batch=4), [*BASE, "--iters", "3", "--batch-size", "4"], said.append
    )
    assert said == []
    y = tmp_path / "lora.yaml"
    y.write_text("iters: 50\n")
    parse_lm_args(TrainConfig(steps=3), [*BASE, "-c", str(y)], said.append)
    assert said == ["[lm] --iters 50 is replaced by boltring's --steps 3"]


def test_abbreviated_flags_are_refused():
    # The controller sizes the job from --iters and --batch-size; "--batch 4" would be read by
    # mlx-lm's parser as --batch-size behind its back.
    with pytest.raises(ValueError, match="unknown mlx-lm argument.*--batch"):
        parse_lm_args(TrainConfig(), [*BASE, "--batch", "4"], print)


def _args(data: Path | str, **more) -> types.SimpleNamespace:
    return types.SimpleNamespace(data=str(data), hf_dataset=None, **more)


def _folder(tmp_path: Path, train: str, valid: str | None = None) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.jsonl").write_text(train)
    if valid is not None:
        (d / "valid.jsonl").write_text(valid)
    return d


def test_a_good_folder_is_read_with_line_numbers(tmp_path):
    d = _folder(tmp_path, '{"text": "a"}\n\n{"text": "b"}\n', '{"text": "c"}\n')
    data = read_data(_args(d))
    assert data is not None
    assert data["train"] == (d / "train.jsonl", [(1, {"text": "a"}), (3, {"text": "b"})])
    assert data["valid"][1] == [(1, {"text": "c"})]


def test_a_broken_line_is_named_by_file_and_line(tmp_path):
    d = _folder(tmp_path, '{"text": "fine"}\n{"text": "fine too"}\n{"text": "broken line\n')
    with pytest.raises(DataError) as e:
        read_data(_args(d))
    message = str(e.value)
    assert message.startswith(f"{d / 'train.jsonl'}:3: not valid JSON"), message
    assert "\n" not in message


def test_a_line_that_is_not_an_object_or_lacks_the_key(tmp_path):
    d = _folder(tmp_path, '{"text": "a"}\n["a"]\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: a JSON list, not an object"):
        read_data(_args(d))
    (d / "train.jsonl").write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: no 'text' \(line 1 has it"):
        read_data(_args(d))
    (d / "train.jsonl").write_text('{"body": "a"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:1: an example needs .*'text'.*this one has 'body'"):
        read_data(_args(d))
    (d / "train.jsonl").write_text('{"text": "a"}\n')
    (d / "valid.jsonl").write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"valid\.jsonl:1: not UTF-8 text"):
        read_data(_args(d))


def test_data_that_is_a_file_an_empty_folder_or_missing_is_named(tmp_path):
    d = _folder(tmp_path, "", '{"text": "a"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl has no examples"):
        read_data(_args(d))
    with pytest.raises(DataError) as e:
        read_data(_args(d / "train.jsonl"))
    assert "is a file, not a folder (expected a folder with train.jsonl and valid.jsonl)" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataError, match=r"--data .*empty: no train.jsonl in this folder \(it holds nothing\)"
    ):
        read_data(_args(empty))
    (empty / "train.json").write_text("{}")
    with pytest.raises(
        DataError, match=r"it holds train.json\); expected a folder with train.jsonl and valid.jsonl"
    ):
        read_data(_args(empty))
    with pytest.raises(DataError, match=r"--data /nowhere/data: no such folder"):
        read_data(_args("/nowhere/data"))
    assert read_data(_args("mlx-community/WikiSQL")) is None  # a Hugging Face id: mlx-lm's to load


def test_a_data_folder_runs_a_rank_or_stops_it_in_one_line(tmp_path):
    """The rank's own error line, end to end (one rank, no ring)."""
    import subprocess
    import sys

    from tests.lmkit import write_model

    model = write_model(tmp_path / "tiny")
    d = _folder(tmp_path, json.dumps({"text": "the cat sees a dog."}) + "\n" + '{"text": "broken line\n')
    res = subprocess.run(
        [sys.executable, "-m", "boltring.cluster.train.runner", "--example", "lm", "--steps", "1"]
        + ["--global-batch", "1", "--", "--model", str(model), "--data", str(d), "--num-layers", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"boltring-train: error: DataError: {d / 'train.jsonl'}:2: not valid JSON"), last


def test_a_control_character_is_said_once_with_its_column(tmp_path):
    """json's own message for it ends in "at"; the line read "… at at column 12"."""
    d = _folder(tmp_path, '{"text": "a"}\n{"text": "b"}\n{"text": "tab\there"}\n')
    with pytest.raises(DataError) as e:
        read_data(_args(d))
    assert "(Invalid control character at column 14)" in str(e.value), str(e.value)
