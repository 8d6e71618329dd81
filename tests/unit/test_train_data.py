"""Data order and sharding of the training loop: pure functions, no group needed."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from boltring.cluster.train import loop, mlp


@pytest.mark.parametrize("num_examples,global_batch", [(4096, 256), (1000, 64), (10, 8), (7, 12)])
def test_union_of_shards_is_the_global_batch_for_any_world_size(num_examples, global_batch):
    for position in (0, global_batch * 3, num_examples - 1, 5 * num_examples + 3):
        full = loop.global_batch_indices(42, position, global_batch, num_examples)
        assert full.shape == (global_batch,)
        for n in (1, 2, 4):
            shards = [
                loop.local_batch_indices(42, position, global_batch, num_examples, r, n) for r in range(n)
            ]
            assert all(len(s) == global_batch // n for s in shards)
            np.testing.assert_array_equal(np.concatenate(shards), full)


def test_data_order_depends_only_on_seed_and_position():
    a = loop.global_batch_indices(1, 512, 256, 4096)
    np.testing.assert_array_equal(a, loop.global_batch_indices(1, 512, 256, 4096))
    assert not np.array_equal(a, loop.global_batch_indices(2, 512, 256, 4096))
    assert not np.array_equal(a, loop.global_batch_indices(1, 768, 256, 4096))
    # Two half batches are the same stream as one whole batch.
    np.testing.assert_array_equal(
        np.concatenate(
            [loop.global_batch_indices(1, 512, 128, 4096), loop.global_batch_indices(1, 640, 128, 4096)]
        ),
        a,
    )


def test_each_epoch_is_a_permutation_and_epochs_differ():
    n = 100
    stream = loop.global_batch_indices(3, 0, 3 * n, n)
    epochs = stream.reshape(3, n)
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), np.arange(n))
    assert not np.array_equal(epochs[0], epochs[1])
    # A batch crossing an epoch boundary takes the end of one epoch and the start of the next.
    cross = loop.global_batch_indices(3, n - 4, 8, n)
    np.testing.assert_array_equal(cross, stream[n - 4 : n + 4])


def test_shard_bounds_and_errors():
    assert loop.shard_bounds(256, 0, 1) == (0, 256)
    assert loop.shard_bounds(256, 3, 4) == (192, 256)
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        loop.shard_bounds(256, 0, 3)
    with pytest.raises(ValueError, match="bad rank"):
        loop.shard_bounds(256, 4, 4)


def test_cached_permutation_cannot_be_modified():
    loop.global_batch_indices(0, 0, 4, 16)
    perm = loop._epoch_permutation(0, 0, 16)
    with pytest.raises(ValueError):
        perm[0] = 99


def test_averaged_shard_gradients_equal_the_global_batch_gradient():
    """Mean of N equal-size shard means == mean over the global batch (what average_gradients does)."""
    cfg = loop.TrainConfig(seed=5, global_batch=64)
    task = mlp.make_task(cfg)
    grad_fn = nn.value_and_grad(task.model, task.loss)
    idx = loop.global_batch_indices(cfg.seed, 0, 64, task.num_examples)
    full_loss, full = grad_fn(task.model, *task.batch(idx))
    full = dict(tree_flatten(full))
    for n in (2, 4):
        parts = [
            grad_fn(
                task.model, *task.batch(loop.local_batch_indices(cfg.seed, 0, 64, task.num_examples, r, n))
            )
            for r in range(n)
        ]
        mean_loss = sum(p[0].item() for p in parts) / n
        assert abs(mean_loss - full_loss.item()) < 1e-5
        for key, g in full.items():
            avg = sum(dict(tree_flatten(p[1]))[key] for p in parts) / n
            assert mx.allclose(avg, g, atol=1e-6, rtol=1e-5).item(), key


def test_same_seed_same_initial_parameters_and_data():
    a = mlp.make_task(loop.TrainConfig(seed=9))
    b = mlp.make_task(loop.TrainConfig(seed=9))
    c = mlp.make_task(loop.TrainConfig(seed=10))
    pa, pb, pc = (dict(tree_flatten(t.model.parameters())) for t in (a, b, c))
    assert all(mx.array_equal(pa[k], pb[k]).item() for k in pa)
    assert not all(mx.array_equal(pa[k], pc[k]).item() for k in pa)
    np.testing.assert_array_equal(a._x, b._x)
    assert a.fingerprint == b.fingerprint
