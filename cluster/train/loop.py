"""The data-parallel training loop every rank runs, shared by the built-in examples.

Data-parallel contract (what makes N ranks train the same model as one rank):

* **Data order depends only on the seed and the stream position**, never on the rank or the
  world size. The examples draw from an endless stream of example indices: epoch ``e`` is a
  permutation of ``range(num_examples)`` seeded by ``(seed, e)``, and the epochs are
  concatenated. Step ``s`` (1-based) consumes stream positions ``[(s-1)*B, s*B)`` for global
  batch ``B``. The position is saved in checkpoints, so resuming continues the stream exactly,
  for any world size.
* **Rank ``r`` of ``N`` takes rows ``[r*B/N, (r+1)*B/N)`` of the global batch** (``B % N == 0``
  is required). The union of the shards, in rank order, is the global batch.
* **Loss is the mean over the local batch**; gradients are averaged with
  ``group.average_gradients``. The mean of ``N`` equal-size means is the mean over the whole
  global batch, so the update equals the single-rank update (up to float rounding order).
* **Parameters are initialised from the seed** (``mx.random.seed(seed)`` before the model is
  built), identically on every rank; no broadcast is needed. Every rank applies the same
  averaged gradients (bitwise identical, per the netio contract) with the same optimizer, so
  parameters stay identical after every update.
* Every ``log_every`` steps (and at the first and last step of a run) every rank calls
  ``group.report(step, loss=<global mean loss>, samples=B)``; the global loss is
  ``all_sum(local loss) / N``, so every rank reports the same loss curve.

Randomness is stateless: the data order is a pure function of ``(seed, position)``, and any
per-step randomness a task needs should come from :func:`step_key`. Together with the saved
step and position this is the whole RNG state a checkpoint must carry.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from boltring.cluster.train import checkpoint
from boltring.cluster.train.wandb_hook import logging_to_wandb
from boltring.netio.group import NonFiniteLoss as NonFiniteLoss  # raised by train(), caught as loop's
from boltring.netio.group import check_loss

_DATA_ORDER_TAG = 0x0B017  # mixed into the data-order seed so it differs from other streams


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run (the runner's command line, minus example extras)."""

    steps: int = 200  # total steps; a resumed run continues until this step
    seed: int = 0
    global_batch: int | None = None  # None: schema.DEFAULT_BATCH_PER_RANK x world size, as the config
    lr: float | None = None  # None: the example's default
    checkpoint_every: int = 0  # 0 = no checkpoints
    checkpoint_dir: str | None = None  # None: <run dir>/checkpoints
    resume: bool = False
    log_every: int = 1
    data: str | None = None
    args: tuple[str, ...] = ()  # example-specific extra arguments (after "--")
    progress_every: int | None = None  # stdout progress line period; None: about every 10 %
    # Validation every N steps; 0: none; None: the example's own (lm: mlx-lm's flag, else none).
    steps_per_eval: int | None = None
    allow_nonfinite: bool = False  # True: a NaN/inf loss does not stop the run
    keep_checkpoints: int = 3  # newest checkpoints kept by rank 0; 0 keeps all

    def validate(self) -> None:
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if self.global_batch is not None and self.global_batch < 1:
            raise ValueError(f"--global-batch must be >= 1, got {self.global_batch}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.log_every < 1:
            raise ValueError(f"--log-every must be >= 1, got {self.log_every}")
        if self.steps_per_eval is not None and self.steps_per_eval < 0:
            raise ValueError(f"--steps-per-eval must be >= 0, got {self.steps_per_eval}")


class Task(Protocol):
    """What an example provides to :func:`train`."""

    name: str  # "mlp", "charlm"; stored in checkpoints and checked on resume
    model: nn.Module
    optimizer: optim.Optimizer
    num_examples: int  # size of the dataset the stream permutes
    fingerprint: str  # identifies the data and hyper-parameters; must match on all ranks
    # Language models may also set ``tokens_per_example`` (predicted tokens per example): the
    # loop then reports tokens/s (charlm: its context length).

    def batch(self, indices: np.ndarray) -> tuple[mx.array, ...]:
        """The model inputs for these example indices (the loss function's extra args)."""
        ...

    def loss(self, model: nn.Module, *batch: mx.array) -> mx.array:
        """Scalar mean loss over the batch."""
        ...


@dataclass
class TrainResult:
    start_step: int  # steps already done before this run (from a checkpoint)
    final_step: int
    samples_seen: int  # stream position after the last step
    losses: dict[int, float] = field(default_factory=dict)  # step -> global mean loss (logged steps)
    checkpoints: list[Path] = field(default_factory=list)  # written by this rank (rank 0 only)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Data order: pure functions of (seed, position), independent of rank and world size.


@lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, _DATA_ORDER_TAG])))
    perm = rng.permutation(num_examples).astype(np.int64)
    perm.setflags(write=False)
    return perm


def global_batch_indices(seed: int, position: int, global_batch: int, num_examples: int) -> np.ndarray:
    """Example indices at stream positions ``[position, position + global_batch)``."""
    if num_examples < 1:
        raise ValueError("the dataset is empty")
    out = np.empty(global_batch, dtype=np.int64)
    filled = 0
    while filled < global_batch:
        epoch, offset = divmod(position + filled, num_examples)
        take = min(global_batch - filled, num_examples - offset)
        out[filled : filled + take] = _epoch_permutation(seed, epoch, num_examples)[offset : offset + take]
        filled += take
    return out


def shard_bounds(global_batch: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of the global batch that ``rank`` of ``size`` trains on."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"bad rank {rank} for world size {size}")
    if global_batch % size:
        raise ValueError(
            f"global batch {global_batch} is not divisible by the world size {size}; "
            f"choose a multiple of {size}"
        )
    per = global_batch // size
    return rank * per, (rank + 1) * per


def local_batch_indices(
    seed: int, position: int, global_batch: int, num_examples: int, rank: int, size: int
) -> np.ndarray:
    """This rank's shard of the global batch at ``position``."""
    lo, hi = shard_bounds(global_batch, rank, size)
    return global_batch_indices(seed, position, global_batch, num_examples)[lo:hi]


def step_key(seed: int, step: int) -> mx.array:
    """A PRNG key for per-step randomness (dropout, sampling) that depends only on seed and step."""
    return mx.random.key((seed * 1_000_003 + step) % (2**63))


# ---------------------------------------------------------------------------------------------
# Collective helpers.


def global_mean(group: Any, value: float) -> float:
    """Mean of a per-rank scalar over all ranks (identical result on every rank)."""
    total = group.all_sum(mx.array([value], dtype=mx.float32))
    return float(np.asarray(total).reshape(-1)[0]) / group.size


def overlaps(group: Any) -> bool:
    """ring.overlap: leave the gradients unevaluated for average_gradients, which then reduces
    each finished bucket while MLX still computes the rest of the backward pass."""
    return bool(getattr(getattr(group, "job", None), "overlap", False))


def check_consistent(group: Any, what: str, token: str) -> None:
    """Raise on every rank if ``token`` differs between ranks (e.g. different data files).

    Two small collectives: the sum of a 20-bit hash of the token, then the count of ranks whose
    own hash differs from the mean. If all hashes equal the mean, they are all equal.
    """
    if group.size == 1:
        return
    h = int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "little") & 0xFFFFF
    total = int(np.asarray(group.all_sum(np.array([h], dtype=np.int32))).reshape(-1)[0])
    mismatch = int(total != h * group.size)
    bad = int(np.asarray(group.all_sum(np.array([mismatch], dtype=np.int32))).reshape(-1)[0])
    if bad:
        raise RuntimeError(
            f"{what} differs between ranks ({bad} of {group.size} ranks disagree "
            f"with the mean); every rank must run the same job on the same data"
        )


# ---------------------------------------------------------------------------------------------
# Checkpoints and resume, as every built-in example does them (loop.train and lm.py).


def checkpoint_dir(cfg: TrainConfig, group: Any) -> Path:
    """--checkpoint-dir, else <run dir>/checkpoints."""
    if cfg.checkpoint_dir:
        return Path(cfg.checkpoint_dir)
    return Path(getattr(group, "run_dir", ".")) / "checkpoints"


def checkpoint_due(cfg: TrainConfig, step: int) -> bool:
    """Every checkpoint_every steps and at the last step; never when checkpoint_every is 0."""
    return bool(cfg.checkpoint_every) and (step % cfg.checkpoint_every == 0 or step == cfg.steps)


def save_checkpoint(
    directory: Path,
    task: Any,
    cfg: TrainConfig,
    *,
    step: int,
    samples_seen: int,
    global_batch: int,
    world_size: int,
    log: Callable[[str], None],
) -> Path:
    """Rank 0: write the step's checkpoint, then delete all but the newest keep_checkpoints."""
    path = checkpoint.save(
        directory,
        task,
        step=step,
        samples_seen=samples_seen,
        seed=cfg.seed,
        global_batch=global_batch,
        world_size=world_size,
    )
    for old in checkpoint.prune(directory, keep=cfg.keep_checkpoints):
        log(f"[rank 0] removed old checkpoint {old.name} (keeping {cfg.keep_checkpoints})")
    log(f"[rank 0] checkpoint {path}")
    return path


def resume(
    group: Any, cfg: TrainConfig, task: Any, directory: Path, log: Callable[[str], None]
) -> tuple[int, int]:
    """--resume, collectively: load the newest checkpoint that verifies into ``task`` and return
    (step, samples seen), (0, 0) when there is none. Rank 0's lines are read by the controller
    (jobs/watch.py): the no-checkpoint and nothing-to-do lines become its warnings, so their
    wording is a contract."""
    rank = group.rank
    info = checkpoint.restore(group, directory, task, seed=cfg.seed)
    if info is None:
        log(f"[rank {rank}] resume: no checkpoint in {directory}; starting from step 0")
        if not cfg.checkpoint_every:
            log(f"[rank {rank}] resume: this job writes no checkpoints either (checkpoint_every is 0)")
        return 0, 0
    for why in info.skipped:
        log(f"[rank {rank}] resume: skipped {why}")
    if info.skipped and info.path is not None:
        log(f"[rank {rank}] resume: using {info.path.name}, the newest checkpoint that verifies")
    log(
        f"[rank {rank}] resumed from {info.path.name if info.path else 'rank 0'}: "
        f"step {info.step}, {info.samples_seen} samples seen"
    )
    if info.step >= cfg.steps:
        log(f"[rank {rank}] nothing to do: the checkpoint is at step {info.step}, --steps is {cfg.steps}")
    return info.step, info.samples_seen


# ---------------------------------------------------------------------------------------------
# The loop.


def _log(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)


def train(
    group: Any,
    cfg: TrainConfig,
    task: Task,
    *,
    log: Callable[[str], None] = _log,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``task`` for ``cfg.steps`` steps on ``group``; see the module docstring.

    ``on_step(step, local_loss)`` is called after every update (tests use it).
    """
    cfg.validate()
    rank, size = group.rank, group.size
    B = cfg.global_batch
    if B is None:  # run by hand without --global-batch: the config's own default
        from boltring.cluster.config.schema import default_global_batch

        B = default_global_batch(size)
    lo, hi = shard_bounds(B, rank, size)  # raises early with a clear message if B % size
    model, opt = task.model, task.optimizer

    check_consistent(
        group,
        "the job (example, seed, global batch, lr, steps, data)",
        json.dumps([task.name, cfg.seed, B, cfg.lr, cfg.steps, task.fingerprint]),
    )

    # Materialise parameters and optimizer state, so checkpoints (and resume broadcasts) see
    # the full state structure from step 0.
    opt.init(model.trainable_parameters())
    mx.eval(model.parameters(), opt.state)

    ckpt_dir = checkpoint_dir(cfg, group)
    start_step, position = 0, 0
    if cfg.resume:
        start_step, position = resume(group, cfg, task, ckpt_dir, log)
    if cfg.lr is not None:
        opt.learning_rate = cfg.lr  # the command line wins over a checkpoint's learning rate

    result = TrainResult(start_step=start_step, final_step=start_step, samples_seen=position)
    progress_every = cfg.progress_every or max(1, cfg.steps // 10)
    log(
        f"[rank {rank}/{size}] {task.name}: steps {start_step + 1}..{cfg.steps}, global batch {B} "
        f"(rows {lo}..{hi - 1} on this rank), {task.num_examples} examples, seed {cfg.seed}"
    )

    loss_and_grad = nn.value_and_grad(model, task.loss)
    # report() checks the loss too (a script's only check): the runner's --allow-nonfinite decides.
    group.allow_nonfinite = cfg.allow_nonfinite
    run_config = {"task": task.name, "seed": cfg.seed, "global_batch": B, "lr": cfg.lr, "steps": cfg.steps}
    with logging_to_wandb(group, run_config, log) as to_wandb:
        t0 = time.perf_counter()
        t_last, step_last = t0, start_step
        tokens_per_example = getattr(task, "tokens_per_example", None)
        step_reported = start_step
        overlap = overlaps(group)
        for step in range(start_step + 1, cfg.steps + 1):
            idx = global_batch_indices(cfg.seed, position, B, task.num_examples)[lo:hi]
            batch = task.batch(idx)
            loss, grads = loss_and_grad(model, *batch)
            if not overlap:  # else average_gradients evaluates them bucket by bucket
                mx.eval(loss, grads)
            grads = group.average_gradients(grads)
            opt.update(model, grads)
            mx.eval(model.parameters(), opt.state)
            position += B
            result.final_step, result.samples_seen = step, position
            local_loss = loss.item()
            # Checked on every rank at every step, before anything is logged or saved, so a bad
            # value never reaches a checkpoint; the rank that saw it names itself.
            check_loss(local_loss, step=step, rank=rank, allow=cfg.allow_nonfinite)
            if on_step is not None:
                on_step(step, local_loss)

            last = step == cfg.steps
            # The first step of a launch or resume is reported too: the summary's "loss first →
            # last" would otherwise start at step log_every, and say nothing of where it began.
            do_log = step % cfg.log_every == 0 or last or step == start_step + 1
            do_progress = step % progress_every == 0 or last or step == start_step + 1
            if do_log or do_progress:
                gloss = global_mean(group, local_loss)
                result.losses[step] = gloss
                if do_log:
                    tokens = None
                    if tokens_per_example:  # this rank's tokens since its previous report
                        tokens = (hi - lo) * tokens_per_example * (step - step_reported)
                    record = group.report(step=step, loss=gloss, samples=B, tokens=tokens)
                    to_wandb(record)
                    step_reported = step
                if do_progress:
                    now = time.perf_counter()
                    rate = (step - step_last) / max(now - t_last, 1e-9)
                    t_last, step_last = now, step
                    log(f"[rank {rank}] step {step}/{cfg.steps} loss {gloss:.4f} ({rate:.1f} steps/s)")

            if checkpoint_due(cfg, step) and rank == 0:
                path = save_checkpoint(
                    ckpt_dir,
                    task,
                    cfg,
                    step=step,
                    samples_seen=position,
                    global_batch=B,
                    world_size=size,
                    log=log,
                )
                result.checkpoints.append(path)

        result.seconds = time.perf_counter() - t0
    done = result.final_step - start_step
    if done:
        log(
            f"[rank {rank}] done: {done} steps in {result.seconds:.1f}s"
            + (
                f", final loss {result.losses[result.final_step]:.4f}"
                if result.final_step in result.losses
                else ""
            )
        )
    return result


def parse_extra(parser_factory: Callable[[], Any], args: Sequence[str]) -> Any:
    """Parse an example's extra arguments (after ``--``) with a clear error on unknown ones."""
    parser = parser_factory()
    ns, unknown = parser.parse_known_args(list(args))
    if unknown:
        options = sorted(
            {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
        )
        raise ValueError(
            f"unknown argument(s) for this example: {' '.join(unknown)} "
            f"(it takes {', '.join(options) or 'no options'}; `-- --help` explains them)"
        )
    return ns
