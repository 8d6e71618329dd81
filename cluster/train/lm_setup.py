"""What ``mlx_lm.lora`` does before it trains, for the ``lm`` example (lm.py runs the loop).

mlx-lm's own argument parser, YAML config and defaults with boltring's options on top, the
model preparation (freeze, LoRA/DoRA layers or unfrozen layers) and the optimizer, reusing
mlx-lm's functions. Kept apart from lm.py so that the loop stays readable.
"""

from __future__ import annotations

import json
import types
from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from .loop import TrainConfig

INSTALL_HINT = "pip install 'boltring[lm]' (or pip install mlx-lm) in every node's environment"


# mlx-lm flags that boltring's loop does not act on, and what does their job here.
IGNORED_LM_FLAGS = {
    "save_every": "boltring's --checkpoint-every sets the checkpoint period",
    "test": "run mlx_lm.lora --test with the adapters after training",
    "report_to": "the panels, --json and metrics.jsonl report the run",
    "steps_per_report": "boltring's --log-every sets the report period",
}


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
    parser.description = (
        "mlx-lm's fine-tuning flags (as `mlx_lm.lora`). boltring sets --iters from --steps, "
        "--batch-size from --global-batch, --seed from --seed."
    )
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
    # No silent fallback to mlx-lm's default model and dataset (downloads): ask for them.
    if not args.get("model"):
        raise ValueError("--example lm needs -- --model PATH_OR_REPO (a model mlx-lm can load)")
    if not args.get("data") and not args.get("hf_dataset"):
        raise ValueError("--example lm needs -- --data DIR (train.jsonl and valid.jsonl)")
    explicit_adapter_path = args.get("adapter_path") is not None
    for k, v in lora.CONFIG_DEFAULTS.items():
        if args.get(k) is None:
            args[k] = json.loads(json.dumps(v))  # a copy: defaults hold dicts
    for key, value, flag in (
        ("iters", cfg.steps, "--steps"),
        ("batch_size", cfg.global_batch, "--global-batch"),
        ("seed", cfg.seed, "--seed"),
    ):
        given = getattr(ns, key, None)
        if given is not None and given != value:
            log(f"[lm] --{key.replace('_', '-')} {given} is replaced by boltring's {flag} {value}")
        args[key] = value
    if cfg.lr is not None:
        args["learning_rate"] = cfg.lr
    if cfg.steps_per_eval:
        args["steps_per_eval"] = cfg.steps_per_eval
    if (args.get("grad_accumulation_steps") or 1) != 1:
        raise ValueError(
            "--grad-accumulation-steps is not supported by boltring's lm loop; raise --global-batch "
            "instead (it is summed over ranks)"
        )
    for key, instead in IGNORED_LM_FLAGS.items():
        if getattr(ns, key, None) not in (None, False, 0):
            log(f"[lm] --{key.replace('_', '-')} is ignored under boltring: {instead}")
    args["train"] = True
    if not explicit_adapter_path:
        args["adapter_path"] = None  # train_lm puts them next to the checkpoints
    return types.SimpleNamespace(**args)


def prepare_model(args: types.SimpleNamespace, model: nn.Module) -> None:
    """Freeze, then add LoRA/DoRA layers or unfreeze the last layers, as mlx_lm.lora does."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    mx.random.seed(args.seed)  # same adapter initialisation on every rank
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
