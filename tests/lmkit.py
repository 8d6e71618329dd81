"""A tiny Llama model and a JSONL dataset, built offline in a second (nothing is downloaded).

The tokenizer is a byte-level BPE trained with `tokenizers` on generated sentences and saved as
a `PreTrainedTokenizerFast`; the model is `mlx_lm.models.llama.Model` with random weights, saved
as a model directory that `mlx_lm.utils.load` reads. Used by the lm tests and the lm bench.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the robot", "a bird", "the teacher", "our ship"]
VERBS = ["sees", "likes", "builds", "finds", "carries", "paints", "follows", "counts"]
OBJECTS = ["a red ball", "the blue door", "three apples", "a small boat", "the green hill", "two stars"]
PLACES = ["in the park", "at home", "by the sea", "on the road", "under the tree", "near the river"]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."
        for _ in range(n)
    ]


def write_dataset(
    directory: Path, train: int = 64, valid: int = 16, seed: int = 0, per_line: int = 2
) -> Path:
    """train.jsonl / valid.jsonl of {"text": ...} lines (a few sentences each)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = sentences((train + valid) * per_line, seed)
    texts = [" ".join(rows[i : i + per_line]) for i in range(0, len(rows), per_line)]
    for name, part in (("train", texts[:train]), ("valid", texts[train:])):
        with open(directory / f"{name}.jsonl", "w") as f:
            for t in part:
                f.write(json.dumps({"text": t}) + "\n")
    return directory


def write_model(
    directory: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    intermediate: int = 64,
    heads: int = 2,
    kv_heads: int = 2,
    vocab: int = 384,
    seed: int = 0,
) -> Path:
    """A llama model directory (config.json, model.safetensors, tokenizer files)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model, ModelArgs
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab, 384),
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences(2000, seed=seed + 1), trainer=trainer)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "model_max_length": 4096,
            }
        )
    )
    size = max(vocab, tok.get_vocab_size())
    cfg = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": intermediate,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": size,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    (directory / "config.json").write_text(json.dumps(cfg))
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(cfg))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(directory / "model.safetensors"), weights)
    return directory


def parameter_count(directory: Path) -> int:
    import mlx.core as mx

    return sum(a.size for a in mx.load(str(directory / "model.safetensors")).values())


# --- running boltring jobs on local ranks (tests and benches) ---------------------------------


def free_ports(count: int) -> int:
    """A first port such that `count` consecutive ports on 127.0.0.1 are free right now."""
    from boltring.cluster.config.ports import free_port_block

    return free_port_block(count)


def local_config(
    path: Path, ranks: int, *, name: str = "wl", backend: str = "boltring", overlap: bool = False
) -> Path:
    """A boltring.yaml with `ranks` local ranks on loopback, on a free block of ring ports."""
    path.write_text(
        f"name: {name}\n"
        "nodes:\n"
        "  - name: local\n"
        "    local: true\n"
        "    ring_ip: 127.0.0.1\n"
        f"    ranks: {ranks}\n"
        "ring:\n"
        f"  port: {free_ports(ranks)}\n"
        f"  backend: {backend}\n"
        f"  overlap: {'true' if overlap else 'false'}\n"
        "job:\n"
        "  global_batch: 12\n"  # divides by 1, 2, 3, 4 and 6 ranks
    )
    return path


# The benches' lm workload, in mlx-lm's own flags: every layer trained, short sequences.
FULL_FINETUNE_ARGS = (
    "--fine-tune-type",
    "full",
    "--num-layers",
    "-1",
    "--max-seq-length",
    "64",
    "--learning-rate",
    "1e-4",
)


def lm_controller_config(tmp_path: Path, model: Path, data: Path, backend: str):
    """A 2-rank LoRA job on the tiny model for a JobController, long enough to still run when
    a test re-attaches to it or kills it."""
    from boltring.cluster.config.load import load_config, with_overrides

    path = local_config(tmp_path / "boltring.yaml", 2, backend=backend)
    args = ["--model", str(model), "--data", str(data), "--fine-tune-type", "lora", "--num-layers", "1"]
    return with_overrides(load_config(path), example="lm", args=args, steps=100000, global_batch=4)


def run_job(config: Path, *args: str, timeout: float = 300):
    """`boltring --run --json --skip-checks -c CONFIG ARGS`: (CompletedProcess, events)."""
    import os
    import subprocess
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "boltring.tui.cli",
            "--run",
            "--json",
            "--skip-checks",
            "-c",
            str(config),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    events = []
    for line in res.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return res, events
