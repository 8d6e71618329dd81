"""Built-in example ``mlp``: an MLP classifier on a synthetic dataset fixed by the seed.

The data: ``--samples`` (4096) points of ``--features`` (32) standard-normal features, labelled
with ``--classes`` (4) classes by a random "teacher" network (32 -> 16 tanh -> 4, argmax),
with ``--label-noise`` (2 %) of the labels flipped at random. Everything is drawn from numpy
generators seeded by the job seed, so every rank builds the same dataset without any I/O.

The model: ``--depth`` (2) hidden ReLU layers of ``--hidden`` (64) units, trained with SGD
(momentum 0.9) on the mean cross-entropy. With the defaults (global batch 256, lr 0.05) the
loss falls from about 1.40 (= ln 4) to about 0.3 in 200 steps (train accuracy ~0.87).

Extra arguments go after ``--`` on the runner's command line, e.g.
``--example mlp -- --hidden 128 --depth 3``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from .loop import TrainConfig, parse_extra

NAME = "mlp"
DEFAULT_LR = 0.05
_DATA_TAG = 0x6D6C70  # "mlp": separates the dataset stream from other seeded streams


def extra_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="--example mlp --", add_help=False, description="Extra arguments of the mlp example."
    )
    p.add_argument("--samples", type=int, default=4096, help="dataset size (default 4096)")
    p.add_argument("--features", type=int, default=32, help="input features (default 32)")
    p.add_argument("--classes", type=int, default=4, help="number of classes (default 4)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units per layer (default 64)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers (default 2)")
    p.add_argument(
        "--label-noise", type=float, default=0.02, help="fraction of labels replaced at random (default 0.02)"
    )
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    return p


def make_dataset(
    seed: int, samples: int = 4096, features: int = 32, classes: int = 4, label_noise: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 [samples, features], y int32 [samples])``, a pure function of its arguments."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _DATA_TAG])))
    x = rng.standard_normal((samples, features)).astype(np.float32)
    w1 = rng.standard_normal((features, 16)) / np.sqrt(features)
    w2 = rng.standard_normal((16, classes))
    logits = np.tanh(x.astype(np.float64) @ w1 * 2.0) @ w2
    y = logits.argmax(axis=1)
    flip = rng.random(samples) < label_noise
    y[flip] = rng.integers(0, classes, int(flip.sum()))
    return x, y.astype(np.int32)


class MLP(nn.Module):
    def __init__(self, features: int, hidden: int, depth: int, classes: int):
        super().__init__()
        dims = [features] + [hidden] * depth
        self.layers = [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False)]
        self.head = nn.Linear(dims[-1], classes)

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = nn.relu(layer(x))
        return self.head(x)


class MLPTask:
    """The :class:`~boltring.cluster.train.loop.Task` of this example."""

    name = NAME

    def __init__(self, cfg: TrainConfig, args: Sequence[str] = ()):
        ns = parse_extra(extra_parser, args)
        for key in ("samples", "features", "classes", "hidden", "depth"):
            if getattr(ns, key) < 1:
                raise ValueError(f"--{key} must be >= 1")
        if ns.classes < 2:
            raise ValueError("--classes must be >= 2")
        self.options = ns
        x, y = make_dataset(cfg.seed, ns.samples, ns.features, ns.classes, ns.label_noise)
        self._x, self._y = x, y
        self.num_examples = ns.samples
        mx.random.seed(cfg.seed)  # identical initial parameters on every rank
        self.model = MLP(ns.features, ns.hidden, ns.depth, ns.classes)
        mx.eval(self.model.parameters())
        self.lr = cfg.lr if cfg.lr is not None else DEFAULT_LR
        self.optimizer = optim.SGD(learning_rate=self.lr, momentum=ns.momentum)
        self.fingerprint = json.dumps({"args": vars(ns)}, sort_keys=True)

    def batch(self, indices: np.ndarray) -> tuple[mx.array, mx.array]:
        return mx.array(self._x[indices]), mx.array(self._y[indices])

    def loss(self, model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    def accuracy(self) -> float:
        """Accuracy on the whole dataset (for a final summary line)."""
        pred = mx.argmax(self.model(mx.array(self._x)), axis=1)
        return float(mx.mean(pred == mx.array(self._y)).item())  # type: ignore[arg-type]  # item() is typed int | float | complex


def make_task(cfg: TrainConfig, args: Sequence[str] = ()) -> MLPTask:
    return MLPTask(cfg, args)


def summary(task: MLPTask) -> str:
    return f"train accuracy {task.accuracy():.3f}"
