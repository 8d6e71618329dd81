"""One rank of a test job: `python rank_worker.py '<json spec>'`, with the BOLTRING_* environment.

Started by ranks.py, never by pytest directly. Every stdout line is one JSON object with an
"event" key; the last one is {"event": "result", ...}. A NetioError (or JobEnvError) is not a
crash here: it is the result the failure tests look for, so it is reported as
{"event": "result", "ok": false, "error_type": ..., "message": ..., "peer": ...}.

The deterministic inputs (`make_input`, `make_tree`) live here so the parent test can rebuild
exactly what each rank summed and check the results against numpy, not against boltring.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

FLOAT_DTYPES = ("float32", "float16", "bfloat16")


# -- deterministic data, shared with the parent ---------------------------------------------
def make_input(seed: int, rank: int, dtype: str, shape, transpose: bool = False) -> np.ndarray:
    """Rank `rank`'s input for one case, as numpy.

    bfloat16 is returned as float32 values that bfloat16 represents exactly, so converting
    it to mx.bfloat16 is lossless and `bf16_bits` gives the bits the rank actually held.
    With `transpose`, the array is the transpose of a C-ordered one (a non-contiguous view).
    """
    rng = np.random.default_rng([seed, rank])
    shape = tuple(shape)
    base_shape = shape[::-1] if transpose else shape
    if dtype == "int32":
        a = rng.integers(-(1 << 20), 1 << 20, size=base_shape, dtype=np.int64).astype(np.int32)
    else:
        a = (rng.standard_normal(size=base_shape) * 3.0).astype(np.float32)
        if dtype == "float16":
            a = a.astype(np.float16)
        elif dtype == "bfloat16":
            a = (a.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        elif dtype != "float32":
            raise ValueError(dtype)
    a = np.asarray(a)  # numpy turns 0-d results of `&` into scalars; keep arrays
    return a.T if transpose else a


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """The bfloat16 bits of float32 values that bfloat16 represents exactly."""
    bits = np.asarray(a, dtype=np.float32, order="C").view(np.uint32) >> np.uint32(16)
    return np.asarray(bits, dtype=np.uint16)


def bits_to_float64(bits_or_values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (bits_or_values.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits_or_values.astype(np.float64)


# The gradient tree: many small arrays of mixed dtypes, nested in dicts and lists. The 24
# float32 (64, 64) leaves are 384 KiB, so with a 64 KiB bucket they span several buckets.
TREE_SPEC = {
    "layers": [
        {
            "w": ((64, 64), "float32"),
            "b": ((64,), "float32"),
            "norm": [((5,), "float16"), ((3, 2), "bfloat16")],
        }
        for _ in range(24)
    ],
    "embed": ((17, 5), "bfloat16"),
    "head": {"w": ((5, 3), "float32"), "scale": ((), "float32")},
    "count": ((3,), "int32"),
    "misc": [((1,), "float16"), ((2, 2), "int32")],
}


def make_tree(seed: int, rank: int, spec=TREE_SPEC, path: str = ""):
    """Same structure as `spec`, leaves replaced by make_input arrays (numpy)."""
    if isinstance(spec, dict):
        return {k: make_tree(seed, rank, v, f"{path}.{k}") for k, v in spec.items()}
    if isinstance(spec, list) and not _is_leaf(spec):
        return [make_tree(seed, rank, v, f"{path}.{i}") for i, v in enumerate(spec)]
    shape, dtype = spec
    leaf_seed = seed * 1000003 + int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big")
    return make_input(leaf_seed, rank, dtype, shape)


def _is_leaf(spec) -> bool:
    return isinstance(spec, tuple)


def tree_leaves(spec=TREE_SPEC, path: str = ""):
    """[(dotted path, shape, dtype)] in the order tree_flatten uses, for spec trees."""
    if isinstance(spec, dict):
        return [x for k, v in spec.items() for x in tree_leaves(v, f"{path}.{k}")]
    if isinstance(spec, list):
        return [x for i, v in enumerate(spec) for x in tree_leaves(v, f"{path}.{i}")]
    shape, dtype = spec
    return [(path.lstrip("."), tuple(shape), dtype)]


# -- helpers inside the rank ------------------------------------------------------------------
def emit(**obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def to_mx(a: np.ndarray, dtype: str):
    """The same values as an mx.array; a transposed numpy view stays a transposed MLX view."""
    import mlx.core as mx

    transposed = a.ndim > 1 and not a.flags.c_contiguous
    base = np.asarray(a.T if transposed else a, order="C")
    x = mx.array(base)
    if dtype == "bfloat16":
        x = x.astype(mx.bfloat16)  # exact: make_input only makes bfloat16-representable values
    if transposed:
        x = x.T
    mx.eval(x)
    return x


def as_numpy(x) -> np.ndarray:
    """C-ordered numpy copy of an mx.array or ndarray; bfloat16 as its uint16 bits."""
    if isinstance(x, np.ndarray):
        return np.asarray(x, order="C")
    import mlx.core as mx

    if x.dtype == mx.bfloat16:
        x = x.view(mx.uint16)
    return np.asarray(np.array(x), order="C")


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(a, order="C").tobytes()).hexdigest()


def dtype_name(x) -> str:
    return x.dtype.name if isinstance(x, np.ndarray) else str(x.dtype).split(".")[-1]


def input_for(case: dict, rank: int):
    a = make_input(case["seed"], rank, case["dtype"], case["shape"], case.get("transpose", False))
    return to_mx(a, case["dtype"]) if case["api"] == "mx" else a


# -- scenarios --------------------------------------------------------------------------------
def run_cases(group, spec: dict, out_dir: str | None) -> dict:
    results = {}
    for case in spec.get("cases", []):
        x = input_for(case, group.rank)
        out = group.all_sum(x)
        res = as_numpy(out)
        entry = {
            "type": type(out).__module__.split(".")[0],
            "shape": list(out.shape),
            "dtype": dtype_name(out),
            "digest": digest(res),
            "input_digest_after": digest(as_numpy(x)),
        }
        if case.get("repeat"):
            entry["repeat_digest"] = digest(as_numpy(group.all_sum(x)))
        if out_dir is not None and group.rank == 0:
            np.save(os.path.join(out_dir, f"{case['id']}.npy"), res, allow_pickle=False)
        results[case["id"]] = entry
    return results


def run_tree(group, seed: int, out_dir: str | None) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    def convert(t, spec):
        if isinstance(spec, dict):
            return {k: convert(t[k], spec[k]) for k in spec}
        if isinstance(spec, list):
            return [convert(a, s) for a, s in zip(t, spec, strict=False)]
        return to_mx(t, spec[1])

    grads = convert(make_tree(seed, group.rank), TREE_SPEC)
    before = {k: digest(as_numpy(v)) for k, v in tree_flatten(grads)}
    avg = group.average_gradients(grads)

    def structure(t):
        if isinstance(t, dict):
            return {k: structure(v) for k, v in t.items()}
        if isinstance(t, (list, tuple)):
            return {"__list__": [structure(v) for v in t]}
        return {"__leaf__": [list(t.shape), dtype_name(t), type(t).__module__.split(".")[0]]}

    leaves = {}
    for key, v in tree_flatten(avg):
        res = as_numpy(v)
        leaves[key] = digest(res)
        if out_dir is not None and group.rank == 0:
            np.save(os.path.join(out_dir, f"tree.{key}.npy"), res, allow_pickle=False)
    after = {k: digest(as_numpy(v)) for k, v in tree_flatten(grads)}
    return {
        "structure": structure(avg),
        "digests": leaves,
        "inputs_unchanged": before == after,
        "is_mx": all(isinstance(v, mx.array) for _, v in tree_flatten(avg)),
    }


TREE_VARIANTS = {  # id -> average_gradients keyword arguments
    "overlap": {"overlap": True},
    "bf16": {"wire_dtype": "bfloat16"},
    "fp16": {"wire_dtype": "float16"},
    "bf16_overlap": {"wire_dtype": "bfloat16", "overlap": True},
}


def run_tree_variants(group, seed: int, out_dir: str | None) -> dict:
    """average_gradients with overlap and half-precision wires, and all_sum_async, on the
    same tree: digests per rank (they must agree), rank 0's leaves saved for the parent."""
    from mlx.utils import tree_flatten

    out: dict = {}
    for vid, kwargs in TREE_VARIANTS.items():
        grads = {k: v for k, v in make_tree(seed, group.rank).items()}
        grads = _to_mx_tree(grads, TREE_SPEC)
        before = {k: digest(as_numpy(v)) for k, v in tree_flatten(grads)}
        avg = group.average_gradients(grads, **kwargs)
        leaves = {}
        for key, v in tree_flatten(avg):
            res = as_numpy(v)
            leaves[key] = [digest(res), dtype_name(v)]
            if out_dir is not None and group.rank == 0:
                np.save(os.path.join(out_dir, f"tree-{vid}.{key}.npy"), res, allow_pickle=False)
        after = {k: digest(as_numpy(v)) for k, v in tree_flatten(grads)}
        out[vid] = {"leaves": leaves, "inputs_unchanged": before == after}
    # all_sum_async: three sums in flight at once, then waited for in order
    xs = [
        input_for({"seed": 11 + i, "dtype": "float32", "shape": [5000 + i], "api": "mx"}, group.rank)
        for i in range(3)
    ]
    handles = [group.all_sum_async(x) for x in xs]
    out["async"] = [digest(as_numpy(h.wait())) for h in handles]
    out["sync"] = [digest(as_numpy(group.all_sum(x))) for x in xs]
    return out


def _to_mx_tree(t, spec):
    if isinstance(spec, dict):
        return {k: _to_mx_tree(t[k], spec[k]) for k in spec}
    if isinstance(spec, list):
        return [_to_mx_tree(a, s) for a, s in zip(t, spec, strict=False)]
    return to_mx(t, spec[1])


def run_barrier(group, stagger_s: float) -> dict:
    # Ranks reach the barrier at different times; nobody may leave it before the last arrives.
    time.sleep(stagger_s * group.rank)
    arrived = time.time()
    group.barrier()
    return {"arrived": arrived, "left": time.time()}


def run_report(group) -> dict:
    """Two report() calls around known all_sums; the parent reads metrics.jsonl."""
    import mlx.core as mx

    first = group.report(step=1, loss=0.5, samples=32)
    group.all_sum(mx.ones((1000,), dtype=mx.float32))  # 4000 payload bytes
    group.all_sum(np.ones(10, dtype=np.int32))  # 40 payload bytes
    second = group.report(step=3, loss=0.25, samples=32, lr=0.01)
    return {"first": first, "second": second}


def run_loop(group, spec: dict) -> dict:
    """all_sum in a loop until an error or the time limit; announces itself once looping."""
    x = np.ones(spec.get("elems", 1 << 17), dtype=np.float32)
    deadline = time.monotonic() + spec.get("max_seconds", 30)
    ops = 0
    while time.monotonic() < deadline:
        out = group.all_sum(x)
        ops += 1
        if ops == 1:
            assert float(out[0]) == group.size, out[:4]
            emit(event="looping", rank=group.rank)
    return {"ops": ops}


def run_mismatch(group, spec: dict) -> dict:
    group.all_sum(np.ones(4, dtype=np.float32))  # the ring works first
    shape = spec["shapes"][group.rank]
    dtype = spec.get("dtypes", {}).get(str(group.rank), "float32")
    group.all_sum(np.ones(shape, dtype=dtype))
    return {}


def main() -> int:
    spec = json.loads(sys.argv[1])
    # Never outlive the test: die with the parent (Linux), and dump stacks then exit on a hang.
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != int(os.environ.get("RANKS_TEST_PARENT", os.getppid())):
            return 9  # the parent died before prctl took effect
    import faulthandler

    faulthandler.dump_traceback_later(spec.get("max_seconds", 60) + 15, exit=True)

    from boltring.netio import NetioError, init
    from boltring.netio.jobenv import JobEnvError

    result: dict = {"ok": True}
    t0 = time.time()
    group = None
    try:
        group = init()
        result["connected_after"] = time.time() - t0
        emit(event="ready", rank=group.rank)
        out_dir = spec.get("out_dir")
        if spec.get("cases"):
            result["cases"] = run_cases(group, spec, out_dir)
        if "tree_seed" in spec:
            result["tree"] = run_tree(group, spec["tree_seed"], out_dir)
        if "barrier_stagger" in spec:
            result["barrier"] = run_barrier(group, spec["barrier_stagger"])
        if spec.get("report"):
            result["report"] = run_report(group)
        if "tree_seed" in spec:  # after report(): its byte counts cover the cases above only
            result["tree_variants"] = run_tree_variants(group, spec["tree_seed"], out_dir)
        if "loop" in spec:
            result["loop"] = run_loop(group, spec["loop"])
        if "mismatch" in spec:
            result["mismatch"] = run_mismatch(group, spec["mismatch"])
    except (NetioError, JobEnvError) as e:
        result = {
            "ok": False,
            "error_type": type(e).__name__,
            "message": str(e),
            "peer": getattr(e, "peer", None),
            "t_error": time.time(),
            "elapsed": time.time() - t0,
        }
    finally:
        if group is not None:
            group.close()
    emit(event="result", **result)
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
