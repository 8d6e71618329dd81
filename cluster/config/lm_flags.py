"""An lm job's own mlx-lm flags that size it: `-- --iters N` and `-- --batch-size B` stand for
boltring's --steps and --global-batch where the user gave no boltring value (a user of
mlx_lm.lora keeps their flags), and a line for each one boltring's value overrides (those two,
and `-- --steps-per-eval N` under a job.steps_per_eval that is set, 0 included). Config
applies them (schema.Config.__post_init__), so the plan, the progress and the ranks agree."""

from __future__ import annotations

import dataclasses
from typing import Any

from boltring.cluster.config.schema import JobSpec

# mlx-lm's flags (after `--` of `--example lm`) that boltring's job values stand for:
# (mlx_lm.lora's flag, the JobSpec field, boltring's flag).
LM_SIZE_FLAGS = (("--iters", "steps", "--steps"), ("--batch-size", "global_batch", "--global-batch"))
# Not a size, but boltring's value wins over it in the same way once set (lm_setup.py).
LM_EVAL_FLAG = ("--steps-per-eval", "steps_per_eval", "--steps-per-eval")
READ_FLAGS = ("--iters", "--batch-size", "--steps-per-eval")


def lm_flags(args: tuple[str, ...] | list[str]) -> dict[str, int]:
    """{"--iters": 3, "--batch-size": 4, "--steps-per-eval": 50} as mlx-lm's parser reads them
    (the last one wins, "--iters=3" too); a value that is not a whole number is left to the
    ranks' own check."""
    found: dict[str, int] = {}
    words = list(args)
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if flag not in READ_FLAGS:
            continue
        if not eq:
            value = words[i + 1] if i + 1 < len(words) else ""
        try:
            found[flag] = int(value)
        except ValueError:
            found.pop(flag, None)
    return found


def _is_lm(job: JobSpec) -> bool:
    return job.example == "lm" and not job.script and not job.module


def with_lm_flags(job: JobSpec, world_size: int) -> JobSpec:
    """The lm job with mlx-lm's --iters as job.steps and --batch-size as job.global_batch, each
    where the user set no boltring value (a user of mlx_lm.lora keeps their flags). Raises
    ConfigError for a value boltring could not run."""
    if not _is_lm(job):
        return job
    from boltring.cluster.config.located import ConfigError

    changes: dict[str, Any] = {}
    for flag, field_name, _ in LM_SIZE_FLAGS:
        value = lm_flags(job.args).get(flag)
        if value is None or job.user_set(field_name) or value == getattr(job, field_name):
            continue
        where = f"{flag} {value} after --"
        if value < 1:
            raise ConfigError("--example lm", None, where, f"{value} is less than 1", "expected at least 1")
        if field_name == "global_batch" and value % world_size:
            lower = value // world_size * world_size
            such_as = f"{lower} or {lower + world_size}" if lower else str(world_size)
            raise ConfigError(
                "--example lm",
                None,
                where,
                f"the batch over all ranks is not divisible by the world size {world_size}",
                f"a multiple of {world_size} such as {such_as}, so every rank gets the same share",
            )
        changes.update({field_name: value, f"{field_name}_default": value})
    return dataclasses.replace(job, **changes) if changes else job


def lm_flag_conflicts(job: JobSpec) -> list[str]:
    """One line for each mlx-lm flag of an lm job that boltring's own value overrides (both
    given, different values), for the controller to say before the job starts."""
    if not _is_lm(job):
        return []
    lines = []
    for flag, field_name, ours in (*LM_SIZE_FLAGS, LM_EVAL_FLAG):
        value = lm_flags(job.args).get(flag)
        if value is not None and getattr(job, field_name) not in (None, value):
            lines.append(
                f"{ours} {getattr(job, field_name)} (job.{field_name}) wins over mlx-lm's {flag} {value} "
                f"after --: drop one of them to silence this"
            )
    return lines
