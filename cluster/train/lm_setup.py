"""What ``mlx_lm.lora`` does before it trains, for the ``lm`` example (lm.py runs the loop).

mlx-lm's own argument parser, YAML config and defaults with boltring's options on top, the
model preparation (freeze, LoRA/DoRA layers or unfrozen layers) and the optimizer, reusing
mlx-lm's functions. Kept apart from lm.py so that the loop stays readable.
"""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .loop import TrainConfig

INSTALL_HINT = "pip install 'boltring[lm]' (or pip install mlx-lm) in every node's environment"


# mlx-lm flags that boltring's loop does not act on, and what does their job here.
IGNORED_LM_FLAGS = {
    "save_every": "boltring's job.checkpoint_every (--checkpoint-every) sets the checkpoint period, "
    "and each checkpoint also updates the adapters",
    "test": "after training run mlx_lm.lora --model MODEL --data DATA --adapter-path ADAPTERS --test",
    "report_to": "the panels, --json and metrics.jsonl report the run",
    "steps_per_report": "boltring's --log-every sets the report period",
}

# mlx-lm's flags that boltring's options stand for: (mlx-lm key, TrainConfig field, boltring's flag)
SHARED_FLAGS = (("iters", "steps", "--steps"), ("batch_size", "global_batch", "--global-batch"))


class MissingPackage(RuntimeError):
    pass


def _mlx_lm():
    try:
        import mlx_lm  # noqa: F401
        from mlx_lm import lora
    except ImportError as e:
        raise MissingPackage(f"the lm example needs the mlx-lm package ({e}); {INSTALL_HINT}") from None
    return lora


def extra_parser():
    parser = _mlx_lm().build_parser()
    parser.prog = "--example lm --"
    # An abbreviation (--batch 4) would reach mlx-lm as --batch-size while the controller, which
    # reads --iters and --batch-size to size the job, would not see it: whole flags only.
    parser.allow_abbrev = False
    parser.description = (
        "mlx-lm's fine-tuning flags (as `mlx_lm.lora`). --iters and --batch-size (the batch over "
        "all ranks) size the job when boltring's --steps and --global-batch (job.steps, "
        "job.global_batch) are not given; when both are given, boltring's win. --seed is "
        "boltring's --seed; --steps-per-eval applies only when boltring's --steps-per-eval "
        "(job.steps_per_eval) is not set, and boltring's 0 means no validation; --test, "
        "--save-every, --report-to and --steps-per-report are ignored; "
        "--grad-accumulation-steps other than 1 is refused (raise --global-batch instead)."
    )
    for action in parser._actions:  # the flag's own line says it too, where a reader looks
        if "--grad-accumulation-steps" in action.option_strings:
            action.help = "refused by boltring's lm loop unless 1: raise --global-batch instead"
    return parser


def parse_lm_args(cfg: TrainConfig, extra: Sequence[str], log=print) -> types.SimpleNamespace:
    """mlx-lm's arguments (flags, then -c YAML, then mlx-lm's defaults) with boltring's on top."""
    lora = _mlx_lm()
    parser = extra_parser()
    ns, unknown = parser.parse_known_args(list(extra))
    if unknown:
        raise ValueError(f"unknown mlx-lm argument(s): {' '.join(unknown)} (see `--example lm -- --help`)")
    args = dict(vars(ns))
    if args.get("config"):
        import yaml

        with open(args["config"]) as f:
            for k, v in (yaml.load(f, lora.yaml_loader) or {}).items():
                if args.get(k) is None:
                    args[k] = v
    given = {k: v for k, v in args.items() if v is not None}  # the user's, by flag or -c YAML
    # No silent fallback to mlx-lm's default model and dataset (downloads): ask for them.
    if not args.get("model"):
        raise ValueError("--example lm needs -- --model PATH_OR_REPO (a model mlx-lm can load)")
    if not args.get("data") and not args.get("hf_dataset"):
        raise ValueError("--example lm needs -- --data DIR (train.jsonl and valid.jsonl)")
    for k, v in lora.CONFIG_DEFAULTS.items():
        if args.get(k) is None:
            args[k] = json.loads(json.dumps(v))  # a copy: defaults hold dicts
    # The launch gives --steps and --global-batch, already taken from --iters and --batch-size
    # when boltring's own were not set (schema.Config), so they agree unless the user gave both.
    # Run by hand without --global-batch, the user's --batch-size is the global batch, and
    # without either train_lm takes the config's default (None here).
    for key, field, flag in SHARED_FLAGS:
        value = getattr(cfg, field)
        if value is None:
            args[key] = given.get(key)
            continue
        if given.get(key, value) != value:
            log(f"[lm] --{key.replace('_', '-')} {given[key]} is replaced by boltring's {flag} {value}")
        args[key] = value
    if given.get("seed", cfg.seed) != cfg.seed:
        log(f"[lm] --seed {given['seed']} is replaced by boltring's --seed {cfg.seed}")
    args["seed"] = cfg.seed
    if cfg.lr is not None:
        args["learning_rate"] = cfg.lr
        args["lr_schedule"] = _schedule_from(cfg.lr, args.get("lr_schedule"), log)
    args["steps_per_eval"] = _steps_per_eval(cfg, given, log)
    if (args.get("grad_accumulation_steps") or 1) != 1:
        raise ValueError(
            "--grad-accumulation-steps is not supported by boltring's lm loop; raise --global-batch "
            "instead (it is summed over ranks)"
        )
    for key, instead in IGNORED_LM_FLAGS.items():
        if given.get(key) not in (None, False):
            log(f"[lm] --{key.replace('_', '-')} is ignored under boltring: {instead}")
    args["train"], args["test"] = True, False  # mlx-lm's loader would want a test set for --test
    if "adapter_path" not in given:
        args["adapter_path"] = None  # train_lm puts them next to the checkpoints
    ns = types.SimpleNamespace(**args)
    # A rate the user gave (--lr, or mlx-lm's --learning-rate by flag or -c YAML) wins over the
    # checkpoint's on --resume, as in loop.train; none given keeps the checkpoint's (train_lm).
    # "_": not one of mlx-lm's arguments, so not written to adapter_config.json.
    ns._lr_given = cfg.lr is not None or "learning_rate" in given
    return ns


def _schedule_from(lr: float, schedule: dict[str, Any] | None, log) -> dict[str, Any] | None:
    """mlx-lm's lr_schedule (from -c YAML) with boltring's --lr as its initial rate. mlx-lm
    ignores --learning-rate when there is a schedule and takes the schedule's first argument as
    the initial rate (warmup's target too, mlx_lm.tuner.utils.build_schedule), so that first
    argument is what --lr replaces."""
    if not schedule or not schedule.get("arguments"):
        return schedule
    arguments = list(schedule["arguments"])
    if arguments[0] != lr:
        log(
            f"[lm] --lr {lr} replaces the initial learning rate {arguments[0]} of the -c "
            f"lr_schedule ({schedule.get('name')})"
        )
    return {**schedule, "arguments": [lr, *arguments[1:]]}


def _steps_per_eval(cfg: TrainConfig, given: dict[str, Any], log) -> int:
    """boltring's --steps-per-eval (job.steps_per_eval) whenever it is set, 0 ("none") included,
    else mlx-lm's own flag; neither means no validation (mlx-lm's default of 200 would be a
    surprise README does not promise)."""
    theirs = given.get("steps_per_eval")
    if cfg.steps_per_eval is None:
        return theirs or 0
    if theirs is not None and theirs != cfg.steps_per_eval:
        log(f"[lm] --steps-per-eval {theirs} is replaced by boltring's --steps-per-eval {cfg.steps_per_eval}")
    return cfg.steps_per_eval


def prepare_model(args: types.SimpleNamespace, model: nn.Module) -> None:
    """Freeze, then add LoRA/DoRA layers or unfreeze the last layers, as mlx_lm.lora does."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    # The same adapter initialisation on every rank; training steps then seed per rank (lm.step_seed).
    mx.random.seed(args.seed)
    model.freeze()
    if args.num_layers > len(model.layers):
        raise ValueError(
            f"--num-layers {args.num_layers} but the model has only {len(model.layers)} layers "
            "(mlx-lm's default is 16; -1 means all)"
        )
    if args.fine_tune_type == "full":
        for layer in model.layers[-max(args.num_layers, 0) :]:
            layer.unfreeze()
        args.lora_parameters = None
    elif args.fine_tune_type in ("lora", "dora"):
        linear_to_lora_layers(
            model, args.num_layers, args.lora_parameters, use_dora=args.fine_tune_type == "dora"
        )
    else:
        raise ValueError(f"unknown --fine-tune-type {args.fine_tune_type!r}: lora, dora or full")
    if args.resume_adapter_file is not None:
        model.load_weights(args.resume_adapter_file, strict=False)
    if args.grad_checkpoint:
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])


def make_optimizer(args: types.SimpleNamespace):
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import build_schedule

    lr = build_schedule(args.lr_schedule) if args.lr_schedule else args.learning_rate
    name = args.optimizer.lower()
    classes = {
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "muon": optim.Muon,
        "sgd": optim.SGD,
        "adafactor": optim.Adafactor,
    }
    if name not in classes:
        raise ValueError(f"unsupported --optimizer {args.optimizer!r}: {', '.join(classes)}")
    return classes[name](learning_rate=lr, **(args.optimizer_config or {}).get(name, {}))


# ---------------------------------------------------------------------------------------------
# The data: a local --data folder is read here, so that a bad line is named by file and line
# (mlx-lm's loader says "Invalid control character at: line 1 column 22" of no file, and
# "Training set not found or empty" of no folder); mlx-lm's create_dataset then builds the
# same datasets mlx_lm.lora would.

DATA_FILES = ("train.jsonl", "valid.jsonl")  # test.jsonl is mlx-lm's --test, ignored here
Rows = list[tuple[int, dict]]  # (line number, example)


class DataError(ValueError):
    """The --data folder or one of its lines cannot be used."""


def _looks_like_a_path(text: str) -> bool:
    """A --data that does not exist is a Hugging Face dataset id for mlx-lm ("org/name"), unless
    it cannot be one: absolute, relative to . or ~, or more than one '/'."""
    return text.startswith(("/", ".", "~")) or text.count("/") != 1


def data_folder(args: types.SimpleNamespace) -> Path | None:
    """The local folder --data names, checked; None for a Hugging Face dataset."""
    if getattr(args, "hf_dataset", None):  # a -c YAML's hf_dataset section: mlx-lm loads it
        return None
    folder = Path(args.data).expanduser()
    expected = f"a folder with {' and '.join(DATA_FILES)}"
    if not folder.exists():
        if _looks_like_a_path(args.data):
            raise DataError(f"--data {args.data}: no such folder (expected {expected})")
        return None
    if not folder.is_dir():
        raise DataError(f"--data {args.data} is a file, not a folder (expected {expected})")
    if not (folder / "train.jsonl").is_file():
        found = sorted(p.name for p in folder.iterdir())
        holds = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") if found else "nothing"
        raise DataError(
            f"--data {args.data}: no train.jsonl in this folder (it holds {holds}); "
            f"expected {expected} of one JSON object per line"
        )
    return folder


def read_jsonl(path: Path) -> Rows:
    """Every example of a JSONL file with its line number; blank lines are skipped."""
    rows: Rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte {e.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                said = e.msg.removesuffix(" at")  # "Invalid control character at": the column follows
                raise DataError(
                    f"{path}:{number}: not valid JSON ({said} at column {e.colno}); each line must be "
                    'one JSON object such as {"text": "..."}'
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    f'{path}:{number}: a JSON {type(row).__name__}, not an object such as {{"text": "..."}}'
                )
            rows.append((number, row))
    return rows


def _features(args: types.SimpleNamespace) -> tuple[tuple[str, ...], ...]:
    """The keys of each format, in the order mlx-lm's create_dataset tries them."""
    prompt = getattr(args, "prompt_feature", None) or "prompt"
    completion = getattr(args, "completion_feature", None) or "completion"
    chat = getattr(args, "chat_feature", None) or "messages"
    text = getattr(args, "text_feature", None) or "text"
    return ((prompt, completion), (chat,), (text,))


def check_rows(path: Path, rows: Rows, args: types.SimpleNamespace) -> None:
    """mlx-lm picks the format from the first example and reads the others lazily, so a line
    without its keys failed with a KeyError steps into training: check every line now."""
    if not rows:
        return
    first_line, first = rows[0]
    keys = next((ks for ks in _features(args) if all(k in first for k in ks)), None)
    if keys is None:
        wanted = " or ".join("+".join(repr(k) for k in ks) for ks in _features(args))
        raise DataError(
            f"{path}:{first_line}: an example needs {wanted} (this one has "
            f"{', '.join(map(repr, first)) or 'no keys'})"
        )
    for number, row in rows:
        missing = [k for k in keys if k not in row]
        if missing:
            raise DataError(
                f"{path}:{number}: no {missing[0]!r} (line {first_line} has it, and every line of a "
                "file must have the same keys)"
            )


def read_data(args: types.SimpleNamespace) -> dict[str, tuple[Path, Rows]] | None:
    """{"train": (file, rows), "valid": ...} of a local --data folder, every line checked; None
    for a Hugging Face dataset (mlx-lm loads it)."""
    folder = data_folder(args)
    if folder is None:
        return None
    out: dict[str, tuple[Path, Rows]] = {}
    for name in DATA_FILES:
        path = folder / name
        rows = read_jsonl(path) if path.is_file() else []
        check_rows(path, rows, args)
        out[name.removesuffix(".jsonl")] = (path, rows)
    if not out["train"][1]:
        raise DataError(f"{out['train'][0]} has no examples (expected one JSON object per line)")
    return out


def load_datasets(args: types.SimpleNamespace, tokenizer: Any, data: dict[str, tuple[Path, Rows]] | None):
    """(train, valid) as mlx-lm's datasets; ``data`` from read_data."""
    if data is None:
        from mlx_lm.tuner.datasets import load_dataset

        train, valid, _ = load_dataset(args, tokenizer)
        return train, valid
    from mlx_lm.tuner.datasets import create_dataset

    def build(part: str):
        rows = [row for _, row in data[part][1]]
        return create_dataset(rows, tokenizer, args) if rows else []

    return build("train"), build("valid")
