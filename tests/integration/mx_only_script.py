"""A training script written only for mx.distributed (as for `mlx.launch`): no boltring import.

It checks its own collectives and exits non-zero on any mismatch; run with --backend mlx-ring.
"""

import sys

import mlx.core as mx
import mlx.nn as nn

group = mx.distributed.init()
rank, size = group.rank(), group.size()
failures = []

total = mx.distributed.all_sum(mx.array([rank + 1, 10 * rank], dtype=mx.int32))
expect = [size * (size + 1) // 2, 10 * size * (size - 1) // 2]
if total.tolist() != expect:
    failures.append(f"all_sum {total.tolist()} != {expect}")

gathered = mx.distributed.all_gather(mx.array([rank], dtype=mx.int32))
if gathered.tolist() != list(range(size)):
    failures.append(f"all_gather {gathered.tolist()} != {list(range(size))}")

grads = {"w": mx.full((3, 4), float(rank)), "b": [mx.array([2.0 * rank])]}
avg = nn.average_gradients(grads)
mean = (size - 1) / 2
if not mx.allclose(avg["w"], mx.full((3, 4), mean)).item() or abs(avg["b"][0].item() - 2 * mean) > 1e-6:
    failures.append(f"average_gradients {avg}")

# A small data-parallel regression: every rank must end with the same weights.
mx.random.seed(0)
model = nn.Linear(4, 1)
x = mx.random.normal((8 * size, 4))
y = x @ mx.array([[1.0], [-2.0], [0.5], [3.0]])
mine = slice(8 * rank, 8 * (rank + 1))
loss_grad = nn.value_and_grad(model, lambda m, a, b: nn.losses.mse_loss(m(a), b))
for _ in range(20):
    loss, g = loss_grad(model, x[mine], y[mine])
    g = nn.average_gradients(g)
    model.update({k: model[k] - 0.1 * g[k] for k in ("weight", "bias")})
    mx.eval(model.parameters())
spread = mx.distributed.all_max(model.weight) - mx.distributed.all_min(model.weight)
if mx.abs(spread).max().item() > 1e-6:
    failures.append(f"weights differ between ranks by {mx.abs(spread).max().item()}")

if failures:
    print(f"rank {rank}: FAILED: {'; '.join(failures)}", flush=True)
    sys.exit(1)
print(f"rank {rank}/{size}: mx.distributed checks passed", flush=True)
