"""Built-in example ``charlm``: a small character-level transformer language model.

The data: a UTF-8 text file, ``--data PATH`` or by default the corpus shipped with boltring
(``corpus.txt`` next to this module: ~25 KB of original tales, sayings and letters written for
the project). The vocabulary is the sorted set of characters in the file. One example is a
window of ``context + 1`` characters starting at any position of the text (so the dataset has
``len(text) - context`` examples); the model predicts each next character of the window.

The model: token + learned position embeddings, ``--layers`` (2) pre-norm transformer blocks
(causal multi-head self-attention with ``--heads`` (2) heads, then a ReLU MLP ``--mlp-ratio``
(4) times wider) of width ``--dim`` (32), a final LayerNorm and a linear head: about 30 K
parameters with the defaults. It is trained with Adam on the mean next-character
cross-entropy, with a linear learning-rate warm-up (``--warmup``, 20 steps) and gradient-norm
clipping (``--clip``, 1.0). Default learning rate 0.003 (0.002-0.005 all work; 0.05 still
trains but ends much higher).

Why so small: MLX's CPU backend (the Linux ``mlx[cpu]`` build our tests use) runs matmuls at
a few GFLOP/s and transcendental ops (exp, erf) slowly, so the defaults (context 16, width 32,
ReLU rather than GELU) keep 200 steps of global batch 256 on 2 CPU ranks at about 15 s. With
the defaults the loss falls from about 4.2 (ln of the ~60-character vocabulary) to about 1.8 in
200 steps; ``-- --context 32`` reaches ~1.7 in about twice the time. On Apple Silicon (Metal)
use e.g. ``-- --context 64 --dim 128 --layers 4 --heads 4``. At the end rank 0 prints a sample.

Extra arguments go after ``--``, e.g. ``--example charlm -- --layers 3 --dim 96 --context 96``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from .loop import TrainConfig, parse_extra, step_key

NAME = "charlm"
DEFAULT_LR = 0.003
CORPUS = Path(__file__).with_name("corpus.txt")


def extra_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="--example charlm --", add_help=False, description="Extra arguments of the charlm example."
    )
    p.add_argument("--context", type=int, default=16, help="characters per window (default 16)")
    p.add_argument("--dim", type=int, default=32, help="model width (default 32)")
    p.add_argument("--layers", type=int, default=2, help="transformer blocks (default 2)")
    p.add_argument("--heads", type=int, default=2, help="attention heads (default 2)")
    p.add_argument("--mlp-ratio", type=int, default=4, help="MLP width / model width (default 4)")
    p.add_argument("--warmup", type=int, default=20, help="linear learning-rate warm-up steps (default 20)")
    p.add_argument(
        "--clip", type=float, default=1.0, help="clip the gradient norm to this value, 0 = off (default 1.0)"
    )
    p.add_argument(
        "--sample",
        type=int,
        default=160,
        help="characters to sample at the end on rank 0, 0 = none (default 160)",
    )
    return p


def load_text(path: str | Path | None) -> str:
    path = Path(path) if path else CORPUS
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    return text


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiHeadAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, mask=mask)
        return x + self.fc2(nn.relu(self.fc1(self.ln2(x))))


class CharTransformer(nn.Module):
    def __init__(self, vocab: int, context: int, dim: int, layers: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = [Block(dim, heads, mlp_ratio) for _ in range(layers)]
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def __call__(self, tokens: mx.array) -> mx.array:
        T = tokens.shape[1]
        mask = nn.MultiHeadAttention.create_additive_causal_mask(T)
        x = self.tok(tokens) + self.pos(mx.arange(T))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x))


class _ClippedAdam(optim.Adam):
    """Adam with optional global gradient-norm clipping (applied to the averaged gradients)."""

    def __init__(self, learning_rate, clip: float):
        super().__init__(learning_rate=learning_rate)
        self.clip = clip

    def apply_gradients(self, gradients, parameters):
        if self.clip > 0:
            gradients, _ = optim.clip_grad_norm(gradients, self.clip)
        return super().apply_gradients(gradients, parameters)


class CharLMTask:
    """The :class:`~boltring.cluster.train.loop.Task` of this example."""

    name = NAME

    def __init__(self, cfg: TrainConfig, args: Sequence[str] = ()):
        ns = parse_extra(extra_parser, args)
        for key in ("context", "dim", "layers", "heads", "mlp_ratio"):
            if getattr(ns, key) < 1:
                raise ValueError(f"--{key} must be >= 1")
        if ns.dim % ns.heads:
            raise ValueError(f"--dim {ns.dim} must be divisible by --heads {ns.heads}")
        self.options = ns
        self.seed = cfg.seed
        text = load_text(cfg.data)
        if len(text) < ns.context + 2:
            raise ValueError(
                f"the text has {len(text)} characters; need more than --context {ns.context} + 1"
            )
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.tokens = np.fromiter((self.stoi[c] for c in text), dtype=np.int32, count=len(text))
        self.context = ns.context
        self.tokens_per_example = ns.context  # next-character predictions per window (tokens/s)
        self.num_examples = len(text) - ns.context
        # Window offsets 0..context, added to the start index of each example.
        self._offsets = np.arange(ns.context + 1, dtype=np.int64)

        mx.random.seed(cfg.seed)  # identical initial parameters on every rank
        self.model = CharTransformer(len(self.chars), ns.context, ns.dim, ns.layers, ns.heads, ns.mlp_ratio)
        mx.eval(self.model.parameters())
        self.lr = cfg.lr if cfg.lr is not None else DEFAULT_LR
        schedule: float | Callable[[mx.array], mx.array] = self.lr
        if ns.warmup > 0:
            # Linear from lr/warmup to lr over `warmup` steps, then constant (it clamps).
            schedule = optim.linear_schedule(self.lr / ns.warmup, self.lr, ns.warmup)
        self.optimizer = _ClippedAdam(schedule, ns.clip)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self.fingerprint = json.dumps({"text_sha256": digest, "args": vars(ns)}, sort_keys=True)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def batch(self, indices: np.ndarray) -> tuple[mx.array, mx.array]:
        windows = self.tokens[indices[:, None] + self._offsets[None, :]]
        return mx.array(windows[:, :-1]), mx.array(windows[:, 1:])

    def loss(self, model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    def sample(self, prompt: str = "The ", length: int = 160, temperature: float = 0.8, step: int = 0) -> str:
        """Sample ``length`` characters after ``prompt`` (deterministic given seed and step)."""
        key = step_key(self.seed, step)
        ids = [self.stoi.get(c, 0) for c in prompt] or [0]
        for _ in range(length):
            ctx = mx.array([ids[-self.context :]])
            logits = self.model(ctx)[0, -1]
            key, sub = mx.random.split(key)
            ids.append(int(mx.random.categorical(logits / temperature, key=sub).item()))  # type: ignore[arg-type]  # item() is typed int | float | complex
        return "".join(self.chars[i] for i in ids)


def make_task(cfg: TrainConfig, args: Sequence[str] = ()) -> CharLMTask:
    return CharLMTask(cfg, args)


def summary(task: CharLMTask) -> str | None:
    if task.options.sample <= 0:
        return None
    return "sample: " + repr(task.sample(length=task.options.sample))
