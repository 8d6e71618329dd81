"""Built-in example ``lm``: fine-tune any model mlx-lm can load, data-parallel on every backend.

    boltring --run --example lm --steps 200 --global-batch 8 -- \\
        --model mlx-community/Qwen3-0.6B-4bit --data ./data --fine-tune-type lora --num-layers 8

Arguments after ``--`` are mlx-lm's own ``lora`` flags (``--model``, ``--data``,
``--fine-tune-type lora|dora|full``, ``--num-layers``, ``--max-seq-length``,
``--learning-rate``, ``--optimizer``, ``--adapter-path``, ``-c config.yaml`` ...). Where they
overlap with boltring's options: ``--iters`` and ``--batch-size`` (summed over ranks) size the job
when ``--steps``/``--global-batch`` were not given (the controller maps them, schema.Config), and
boltring's win when both were; ``--seed`` is boltring's ``--seed``, ``--lr`` wins over
``--learning-rate`` (and sets the initial rate of a ``-c`` lr_schedule), and boltring's
``--steps-per-eval`` over mlx-lm's (neither: no validation). On ``--resume`` a rate given on the
command line wins over the checkpoint's, as in loop.train.

mlx-lm's pieces are reused, not rewritten: ``mlx_lm.utils.load``, ``create_dataset`` (a local
``--data`` folder is read by lm_setup.read_data, which names a bad file and line),
``linear_to_lora_layers``, ``iterate_batches`` (rank r of N takes every N-th example of each
global batch, the order depends only on the seed), its optimizers and LR schedules;
``default_loss`` is followed but summed (token_loss, below). The step differs from
``mlx_lm.tuner.trainer.train`` in one way: mlx-lm compiles
forward, backward, ``average_gradients`` and the update as one ``mx.compile`` function, and
boltring's ring runs outside MLX's graph. So the gradient computation and the optimizer update
are compiled separately and ``group.average_gradients`` runs between them, the same loop for
every backend (boltring, mlx-ring, jaccl).

Loss: the mean over the target tokens of the whole global batch, as one rank would compute it.
Each rank sums its per-token losses (default_loss's mask, token_loss) and scales the sum by
``N / global_tokens`` (one 4-byte all_sum of the token counts a step), so averaging the
gradients gives exactly the global token-mean gradient: 1 rank and N ranks follow the same loss
curve even when ranks get different token counts, and a shard with no target token (a prompt
past --max-seq-length with --mask-prompt) adds zero, where a local mean would be 0/0 = NaN.

Checkpoints (rank 0, every ``--checkpoint-every`` steps and at the last step, atomic,
checkpoint.py's format, the newest ``--keep-checkpoints`` kept): the trainable parameters
(LoRA/DoRA adapters, or the unfrozen weights of a full fine-tune) plus the optimizer state;
``--resume`` continues from them. With each checkpoint, and at the end, rank 0 also writes
``adapters.safetensors`` and ``adapter_config.json`` to ``--adapter-path`` (default
``<checkpoint dir>/adapters``), where ``mlx_lm.generate --model M --adapter-path DIR`` loads them.

Randomness (LoRA dropout, which draws from mx.random's global state): the model is initialised
from the seed alone, the same on every rank (lm_setup.prepare_model); then every step starts
from ``step_seed(seed, rank, step)``, so each rank draws its own dropout masks and a resumed run
draws what an unbroken one draws, with no RNG state to checkpoint (the checkpoint's ``rng``
metadata says so).

A NaN or infinite loss fails the run at the step it appears, before that step's update, as in
loop.py's examples (loop.check_loss, the same one line), unless ``--allow-nonfinite``
(``job.allow_nonfinite``): no checkpoint or adapters are written from that step on.

W&B (``job.wandb``): rank 0 sends every metrics line (loss, val_loss, tokens/s, memory) to the
run named after the job, through wandb_hook.logging_to_wandb as loop.py's examples do.
"""

from __future__ import annotations

import json
import os
import time
import types
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .lm_setup import (
    MissingPackage,
    extra_parser,
    load_datasets,
    make_optimizer,
    parse_lm_args,
    prepare_model,
    read_data,
)
from .loop import (
    TrainConfig,
    check_consistent,
    check_loss,
    checkpoint_dir,
    checkpoint_due,
    overlaps,
    resume,
    save_checkpoint,
)
from .wandb_hook import logging_to_wandb

__all__ = ["MissingPackage", "extra_parser", "run", "train_lm"]

NAME = "lm"


class _Comm:
    """What iterate_batches needs of a group (rank(), size())."""

    def __init__(self, rank: int, size: int):
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


class _Trainable:
    """The trainable part of the model as checkpoint.py sees a task's model."""

    def __init__(self, model: nn.Module):
        self.model = model

    def parameters(self):
        return self.model.trainable_parameters()

    def update(self, params) -> None:
        self.model.update(params, strict=False)


_STEP_SEED_TAG = 0xD0D0  # mixed into every step's seed so that it differs from other streams


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of ``rank``'s random stream at ``step``: a pure function of the three, so that
    nothing needs saving to resume, and ranks draw different dropout masks."""
    return int(np.random.SeedSequence([seed, rank, step, _STEP_SEED_TAG]).generate_state(1, np.uint64)[0])


class LmTask:
    """What checkpoint.save/restore need: name, model (trainable part), optimizer, fingerprint."""

    name = NAME
    # checkpoint.save adds this to its rng metadata: the whole random state, nothing to restore
    rng_metadata = {
        "data_order": "mlx-lm iterate_batches, numpy seeded with the seed, replayed to the step",
        "mx_random": "mx.random.seed(lm.step_seed(seed, rank, step)) before every step",
    }

    def __init__(self, model: nn.Module, optimizer: Any, fingerprint: str):
        self.full_model = model
        self.model = _Trainable(model)
        self.optimizer = optimizer
        self.fingerprint = fingerprint


def target_tokens(lengths: mx.array, width: int) -> int:
    """Tokens default_loss counts for a batch padded to ``width`` (its mask, without the model)."""
    lens = np.asarray(lengths)
    steps = np.arange(1, width)
    mask = (steps[None, :] >= lens[:, 0:1]) & (steps[None, :] <= lens[:, 1:])
    return int(mask.sum())


def token_loss(model, batch, lengths) -> tuple[mx.array, mx.array]:
    """mlx-lm's default_loss summed instead of averaged: (cross-entropy summed over the target
    tokens, their count). A batch with no target token gives (0, 0) and zero gradients, where
    default_loss's mean is 0/0 = NaN in its value and its gradient."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
    ce = nn.losses.cross_entropy(logits, targets) * mask
    return ce.astype(mx.float32).sum(), mask.sum()


def _scaled_loss(model, batch, lengths, scale):
    """(this rank's loss sum x N / global tokens, the sum): see the module docstring."""
    total, _ = token_loss(model, batch, lengths)
    return total * scale, total


def evaluate(group, model, dataset, args, comm) -> float | None:
    """Token-mean validation loss over all ranks (mlx-lm's evaluate, with our collective)."""
    from mlx_lm.tuner.trainer import iterate_batches

    n = group.size
    batch_size = min(args.batch_size, len(dataset) // n * n)
    if batch_size < n:
        return None
    model.eval()
    # iterate_batches shuffles with numpy's global RNG, which also orders the training batches:
    # keep validation from moving it, so a resumed run sees the same batches as an unbroken one.
    rng_state = np.random.get_state()
    total, tokens = mx.array(0.0), mx.array(0)
    limit = args.val_batches if args.val_batches != -1 else None
    batches = iterate_batches(dataset, batch_size, args.max_seq_length, comm_group=comm)
    for i, (batch, lengths) in enumerate(batches):
        if limit is not None and i >= limit:
            break
        ce_sum, ntoks = token_loss(model, batch, lengths)  # a rank's batch may have no target token
        total, tokens = total + ce_sum, tokens + ntoks
        mx.eval(total, tokens)
    np.random.set_state(rng_state)
    model.train()
    summed = group.all_sum(np.array([total.item(), tokens.item()], dtype=np.float32))
    return float(summed[0] / summed[1]) if summed[1] > 0 else None


def write_adapters(directory: Path, args: types.SimpleNamespace, model: nn.Module) -> Path:
    """adapters.safetensors + adapter_config.json, as mlx_lm.lora writes them, each atomically
    (a stop while they are written leaves the previous pair)."""
    from mlx_lm.utils import save_config

    from .checkpoint import atomic_write

    directory.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.eval(list(weights.values()))
    path = directory / "adapters.safetensors"
    atomic_write(path, lambda f: mx.save_safetensors(f, weights))
    # mlx-lm's save_config (sorted keys, its float encoding) into a staging file, then renamed.
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and _jsonable(v)}
    staging = directory / f".adapter_config.json.{os.getpid()}.staging"
    try:
        save_config(config, staging)
        atomic_write(directory / "adapter_config.json", lambda f: f.write(staging.read_bytes()))
    finally:
        staging.unlink(missing_ok=True)
    return path


def save_adapters(directory: Path, args: types.SimpleNamespace, model: nn.Module, step: int, log) -> None:
    path = write_adapters(directory, args, model)
    log(
        f"[rank 0] adapters at step {step}: {path} (mlx_lm.generate --model {_model_words(args.model)} "
        f"--adapter-path {directory})"
    )


def _model_words(model: str) -> str:
    """--model as the user can pass it from any folder: a local folder's absolute path, or the
    Hugging Face repo id as given."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.exists() else model


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def _log(msg: str) -> None:
    print(msg, flush=True)


def run(cfg: TrainConfig, extra: Sequence[str], log=_log) -> dict[int, float]:
    """Train on the group ``boltring.netio.init()`` joins; return {step: global loss}."""
    args = parse_lm_args(cfg, extra, log)  # before any network setup: bad flags fail fast
    from boltring.netio import init

    with init() as group:
        return train_lm(group, cfg, args, log=log)


def train_lm(group, cfg: TrainConfig, args: types.SimpleNamespace, log=_log) -> dict[int, float]:
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import iterate_batches
    from mlx_lm.utils import load

    from boltring.cluster.config.schema import default_global_batch

    rank, size = group.rank, group.size
    B = args.batch_size = args.batch_size or default_global_batch(size)  # by hand: the config's default
    if B % size:
        raise ValueError(
            f"the global batch {B} (--global-batch, or mlx-lm's --batch-size) is not divisible by "
            f"the world size {size}"
        )
    data = read_data(args)  # before the model: a bad line fails in a moment, naming file and line
    np.random.seed(args.seed)
    loaded: Any = load(args.model)
    model, tokenizer = loaded[0], loaded[1]
    train_rows, valid_rows = load_datasets(args, tokenizer, data)
    train_set = CacheDataset(train_rows)
    valid_set = CacheDataset(valid_rows) if len(valid_rows) else None
    if len(train_set) < B:
        where = f" {data['train'][0]}" if data else ""
        raise ValueError(
            f"the training set{where} has {len(train_set)} examples, fewer than the global batch {B} "
            "(--global-batch or job.global_batch, else mlx-lm's --batch-size)"
        )
    prepare_model(args, model)
    opt = make_optimizer(args)
    opt.init(model.trainable_parameters())
    mx.eval(model.parameters(), opt.state)
    flat: Any = tree_flatten(model.trainable_parameters())
    trainable: list[Any] = [leaf for _, leaf in flat]
    n_train = sum(leaf.size for leaf in trainable)
    fingerprint = json.dumps(
        [args.model, args.data, args.fine_tune_type, args.num_layers, args.max_seq_length, len(train_set)]
    )
    check_consistent(group, "the lm job (model, data, fine-tune type, layers)", fingerprint)
    task = LmTask(model, opt, fingerprint)

    ckpt_dir = checkpoint_dir(cfg, group)
    # absolute, so the log's mlx_lm.generate line works from any folder (the rank runs in the
    # folder boltring was started from: plan.rank_cwd)
    adapters = Path(args.adapter_path).expanduser().resolve() if args.adapter_path else ckpt_dir / "adapters"
    args.adapter_path = str(adapters)  # as mlx_lm.lora records it in adapter_config.json
    start = resume(group, cfg, task, ckpt_dir, log)[0] if cfg.resume else 0
    if cfg.resume and args._lr_given and not args.lr_schedule:
        # The restored optimizer state holds the rate the checkpoint was written with: the rate
        # given now wins, as in loop.train. A schedule needs nothing: the optimizer recomputes
        # the rate from the restored step at every update, with this run's schedule.
        opt.learning_rate = args.learning_rate
    comm = _Comm(rank, size)
    batches = iterate_batches(train_set, B, args.max_seq_length, loop=True, seed=args.seed, comm_group=comm)
    for _ in range(start):  # the data order is a pure function of the seed: replay it
        next(batches)
    log(
        f"[rank {rank}/{size}] lm {args.fine_tune_type}: {args.model}, {n_train / 1e6:.3f}M trainable "
        f"parameters, steps {start + 1}..{cfg.steps}, global batch {B}, backend "
        f"{getattr(group.job, 'backend', 'boltring')}"
    )

    loss_and_grad = nn.value_and_grad(model, _scaled_loss)

    # value_and_grad puts its traced parameters into the model, so the model state is an output
    # of the compiled gradient function too (as in mlx-lm's own step), not only an input. The
    # random state is an input, so that dropout draws from each step's seed (step_seed), not
    # from a key frozen into the compiled graph.
    grad_state = [model.state, mx.random.state]

    @partial(mx.compile, inputs=grad_state, outputs=grad_state)
    def grad_step(batch, lengths, scale):
        (_, ce), grads = loss_and_grad(model, batch, lengths, scale)
        return ce, grads

    update_state = [model.state, opt.state]

    @partial(mx.compile, inputs=update_state, outputs=update_state)
    def update_step(grads):
        opt.update(model, grads)

    model.train()
    # report() checks the loss too (a script's only check): the runner's --allow-nonfinite decides.
    group.allow_nonfinite = cfg.allow_nonfinite
    losses: dict[int, float] = {}
    saved_at = None  # the step whose adapters rank 0 wrote last
    tokens_since = 0
    eval_every = args.steps_per_eval or 0
    overlap = overlaps(group)
    run_config = {
        "task": NAME,
        "seed": args.seed,
        "global_batch": B,
        "lr": args.learning_rate,
        "steps": cfg.steps,
        "model": args.model,
        "fine_tune_type": args.fine_tune_type,
        "num_layers": args.num_layers,
    }
    with logging_to_wandb(group, run_config, log) as to_wandb:
        for step in range(start + 1, cfg.steps + 1):
            batch, lengths = next(batches)
            ntoks = target_tokens(lengths, batch.shape[1])
            global_toks = int(group.all_sum(np.array([ntoks], dtype=np.int32))[0])
            if not global_toks and rank == 0:
                log(f"[rank 0] step {step}: no target tokens in the global batch; its gradients are zero")
            scale = mx.array(size / max(global_toks, 1), dtype=mx.float32)
            mx.random.seed(step_seed(args.seed, rank, step))
            ce, grads = grad_step(batch, lengths, scale)  # ce: this rank's sum over its tokens
            # With ring.overlap the backward pass is left to average_gradients, which evaluates the
            # gradient buckets last layer first and reduces each as soon as it is ready.
            if overlap:
                mx.eval(ce, grad_state)
            else:
                mx.eval(ce, grads, grad_state)
            # Every rank, every step, before its gradients reach the ring and the update: a NaN
            # never reaches the model, a checkpoint or the adapters; the rank that saw it names
            # itself (the others then lose it in average_gradients).
            check_loss(ce.item(), step=step, rank=rank, allow=cfg.allow_nonfinite)
            grads = group.average_gradients(grads)
            update_step(grads)
            mx.eval(model.state, opt.state)
            tokens_since += ntoks
            last = step == cfg.steps
            val, val_s = None, 0.0
            if valid_set is not None and eval_every and (step % eval_every == 0 or last):
                t_val = time.perf_counter()
                val = evaluate(group, model, valid_set, args, comm)
                val_s = time.perf_counter() - t_val  # not training: left out of tokens/s
            # the run's first step too: the summary's first loss is where training began
            if step % cfg.log_every == 0 or last or val is not None or step == start + 1:
                summed = group.all_sum(np.array([ce.item()], dtype=np.float32))
                gloss = float(summed[0]) / max(global_toks, 1)
                losses[step] = gloss
                extra = {"peak_mem_mb": mx.get_peak_memory() / 1e6}
                if val is not None:
                    extra["val_loss"] = val
                rec = group.report(
                    step=step, loss=gloss, samples=B, tokens=tokens_since, exclude_s=val_s, **extra
                )
                to_wandb(rec)
                tokens_since = 0
                tps = rec.get("tokens_per_s")
                log(
                    f"[rank {rank}] step {step}/{cfg.steps} loss {gloss:.4f}"
                    + (f" val {val:.4f}" if val is not None else "")
                    + (f" {tps:.0f} tok/s" if tps else "")
                )
            if checkpoint_due(cfg, step) and rank == 0:
                save_checkpoint(
                    ckpt_dir,
                    task,
                    cfg,
                    step=step,
                    samples_seen=step * B,
                    global_batch=B,
                    world_size=size,
                    log=log,
                )
                # mlx_lm.lora's --save-every updates the adapters as it goes: so does each checkpoint,
                # so that a stopped job leaves adapters mlx_lm.generate loads (the checkpoint's keys
                # are boltring's, model.model.layers…, with the optimizer state beside them).
                save_adapters(adapters, args, model, step, log)
                saved_at = step
        if rank == 0 and saved_at != cfg.steps:
            save_adapters(adapters, args, model, max(start, cfg.steps), log)
    return losses
