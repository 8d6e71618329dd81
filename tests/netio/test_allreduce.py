"""Ring allreduce through the worker API, on real rank processes over loopback.

One launch of N ranks per world size (2, 3, 4) runs every case; the tests below then check
what each rank reported against numpy sums of the same seeded inputs:

* int32 sums are exact; float sums are bitwise identical on every rank (and on a repeat) and
  within rounding of the float64 reference;
* lengths 0, 1, 7 (not divisible by the world size), 1001 and ~3 MB (both ring directions,
  many 64 KiB chunks), plus 0-d, empty-multidim and transposed (non-contiguous) inputs;
* mx.array in -> mx.array out, numpy in -> numpy out, same shape and dtype, input untouched;
* average_gradients on a nested tree of mixed dtypes; barrier; report() -> metrics.jsonl.
"""

from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from .rank_worker import TREE_SPEC, bf16_bits, bits_to_float64, make_input, make_tree, tree_leaves
from .ranks import RankJob, expect_ok, no_leftover_processes  # noqa: F401 - autouse fixture

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4}
EPS = {
    "float32": float(np.finfo(np.float32).eps),
    "float16": float(np.finfo(np.float16).eps),
    "bfloat16": 2.0**-7,
}
CHUNK_MB = 0.0625  # 64 KiB chunks: the ~3 MB cases move as dozens of chunks per direction
BUCKET_MB = 0.0625  # the smallest bucket Group allows: the gradient tree spans several


def _large(dtype: str) -> int:
    # ~3 MiB, and 786437 / 1572869 elements are odd and not divisible by 3 or 4
    return (3 << 20) // ITEMSIZE[dtype] + 5


def _cases() -> list[dict]:
    cases = []

    def add(api, dtype, shape, transpose=False, repeat=False):
        sid = "x".join(map(str, shape)) or "scalar"
        cases.append(
            {
                "id": f"{api}-{dtype}-{sid}{'-T' if transpose else ''}",
                "api": api,
                "dtype": dtype,
                "shape": list(shape),
                "transpose": transpose,
                "repeat": repeat,
                "seed": 1000 + len(cases),
            }
        )

    for api, dtypes in (
        ("mx", ("float32", "float16", "bfloat16", "int32")),
        ("np", ("float32", "float16", "int32")),
    ):
        for dtype in dtypes:
            for n in (0, 1, 7, 1001):
                add(api, dtype, (n,))
            add(api, dtype, (_large(dtype),), repeat=True)
    add("mx", "float32", (3, 5, 7))
    add("mx", "bfloat16", ())
    add("mx", "float16", (2, 0, 3))
    add("mx", "int32", (6, 4), transpose=True)
    add("mx", "bfloat16", (33, 9), transpose=True)
    add("np", "float16", (5, 3), transpose=True)
    add("np", "int32", ())
    add("np", "float32", (2, 3, 4))
    return cases


CASES = _cases()
CASE_IDS = [c["id"] for c in CASES]


# (ranks, ring.directions, ways, ring.same_host): local ranks pick one direction by themselves
# (auto) and Unix sockets; 3 ranks are made to take the path of nodes cabled to both
# neighbours: two ways round, over TCP.
WORLDS = [(2, "auto", 1, "unix"), (3, "2", 2, "tcp"), (4, "auto", 1, "unix")]


@pytest.fixture(scope="module", params=WORLDS, ids=lambda w: f"world{w[0]}-{w[2]}way-{w[3]}")
def world(request, tmp_path_factory):
    size, directions, ways, same_host = request.param
    tmp = tmp_path_factory.mktemp(f"allreduce{size}")
    out_dir = tmp / "results"
    out_dir.mkdir()
    spec = {
        "cases": CASES,
        "out_dir": str(out_dir),
        "tree_seed": 7,
        "barrier_stagger": 0.15,
        "report": True,
        "max_seconds": 60,
    }
    with RankJob(
        tmp,
        size,
        timeout=20,
        connect_timeout=20,
        chunk_mb=CHUNK_MB,
        bucket_mb=BUCKET_MB,
        directions=directions,
        same_host=same_host,
    ) as job:
        job.start(spec)
        results = expect_ok(job.wait(timeout=75))
        return SimpleNamespace(
            size=size,
            ways=ways,
            transport=same_host,
            results=results,
            out_dir=out_dir,
            run_dirs={r: job.run_dir(r) for r in range(size)},
        )


def _inputs(case: dict, size: int) -> list[np.ndarray]:
    return [make_input(case["seed"], r, case["dtype"], case["shape"], case["transpose"]) for r in range(size)]


def _as_sent(a: np.ndarray, dtype: str) -> np.ndarray:
    """What the rank's input looks like as C-ordered numpy (bfloat16 as its bits)."""
    return bf16_bits(a) if dtype == "bfloat16" else np.asarray(a, order="C")


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(a, order="C").tobytes()).hexdigest()


def _check_close(
    got_bits: np.ndarray, inputs: list[np.ndarray], dtype: str, divide: int = 1, what: str = ""
) -> None:
    """got ≈ sum(inputs) / divide, within what n-1 roundings in `dtype` can explain."""
    xs = [bits_to_float64(_as_sent(a, dtype), dtype) for a in inputs]
    ref = np.sum(xs, axis=0) / divide
    mag = np.sum(np.abs(xs), axis=0) / divide
    got = bits_to_float64(got_bits, dtype)
    tol = EPS[dtype] * (len(inputs) * mag + np.abs(ref)) + 1e-30
    bad = ~(np.abs(got - ref) <= tol)
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {bad.size} elements off; first at "
        f"{np.argwhere(bad)[0].tolist()}: got {got[bad][:3]}, float64 reference {ref[bad][:3]}"
    )


def _pair_sum_bits(inputs: list[np.ndarray], dtype: str, divide: int = 1) -> np.ndarray:
    """With two ranks every element is one addition, so the result must be exactly what the
    framework computes for a + b in that dtype (numpy for float32/float16, MLX for bfloat16)."""
    a, b = inputs
    if dtype != "bfloat16":
        total = np.add(a, b)
        return np.asarray(total / np.asarray(divide, dtype=total.dtype) if divide != 1 else total, order="C")
    import mlx.core as mx

    total = mx.array(np.asarray(a, order="C")).astype(mx.bfloat16) + mx.array(
        np.asarray(b, order="C")
    ).astype(mx.bfloat16)
    if divide != 1:
        total = total / divide
    return np.asarray(np.array(total.view(mx.uint16)), order="C")


# -- all_sum ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_result_keeps_type_shape_and_dtype(world, case):
    for rank, res in world.results.items():
        got = res["cases"][case["id"]]
        assert got["type"] == ("mlx" if case["api"] == "mx" else "numpy"), (rank, got)
        assert got["shape"] == case["shape"], (rank, got)
        assert got["dtype"] == case["dtype"], (rank, got)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_result_is_bitwise_identical_on_every_rank(world, case):
    digests = {r: res["cases"][case["id"]]["digest"] for r, res in world.results.items()}
    assert len(set(digests.values())) == 1, f"ranks disagree on {case['id']}: {digests}"
    saved = np.load(world.out_dir / f"{case['id']}.npy", allow_pickle=False)
    assert _digest(saved) == digests[0]
    if case["repeat"]:  # the same inputs give the same bits again
        repeats = {r: res["cases"][case["id"]]["repeat_digest"] for r, res in world.results.items()}
        assert set(repeats.values()) == {digests[0]}, repeats


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sum_matches_numpy_reference(world, case):
    got = np.load(world.out_dir / f"{case['id']}.npy", allow_pickle=False)
    inputs = _inputs(case, world.size)
    assert got.shape == tuple(case["shape"])
    if case["dtype"] == "int32":
        exact = np.sum([a.astype(np.int64) for a in inputs], axis=0)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got.astype(np.int64), exact)
    else:
        _check_close(got, inputs, case["dtype"], what=case["id"])
        if world.size == 2:
            np.testing.assert_array_equal(
                got,
                _pair_sum_bits(inputs, case["dtype"]),
                err_msg=f"{case['id']}: not the correctly rounded sum",
            )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_caller_input_is_not_modified(world, case):
    for rank, res in world.results.items():
        original = _as_sent(_inputs(case, world.size)[rank], case["dtype"])
        assert res["cases"][case["id"]]["input_digest_after"] == _digest(original), (
            f"rank {rank}'s input to all_sum changed ({case['id']})"
        )


# -- average_gradients -------------------------------------------------------------------------
def _expected_structure(spec):
    if isinstance(spec, dict):
        return {k: _expected_structure(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return {"__list__": [_expected_structure(v) for v in spec]}
    shape, dtype = spec
    return {"__leaf__": [list(shape), dtype, "mlx"]}


def _leaf(tree, dotted: str):
    for part in dotted.split("."):
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    return tree


def test_average_gradients_structure_and_identity(world):
    expected = _expected_structure(TREE_SPEC)
    for rank, res in world.results.items():
        tree = res["tree"]
        assert tree["structure"] == expected, f"rank {rank} returned another tree structure"
        assert tree["is_mx"] and tree["inputs_unchanged"], (rank, tree["is_mx"], tree["inputs_unchanged"])
    keys = [k for k, _, _ in tree_leaves()]
    assert sorted(world.results[0]["tree"]["digests"]) == sorted(keys)
    for key in keys:
        digests = {r: res["tree"]["digests"][key] for r, res in world.results.items()}
        assert len(set(digests.values())) == 1, f"ranks disagree on leaf {key}: {digests}"


def test_average_gradients_is_the_mean(world):
    trees = [make_tree(7, r) for r in range(world.size)]
    for key, shape, dtype in tree_leaves():
        got = np.load(world.out_dir / f"tree.{key}.npy", allow_pickle=False)
        assert got.shape == shape, key
        inputs = [_leaf(t, key) for t in trees]
        if dtype == "int32":
            total = np.sum([a.astype(np.int64) for a in inputs], axis=0)
            np.testing.assert_array_equal(got, np.floor_divide(total, world.size), err_msg=key)
        else:
            _check_close(got, inputs, dtype, divide=world.size, what=f"leaf {key}")
            if world.size == 2:
                np.testing.assert_array_equal(
                    got,
                    _pair_sum_bits(inputs, dtype, divide=2),
                    err_msg=f"leaf {key}: not the correctly rounded mean",
                )


@pytest.mark.parametrize("variant", ["overlap", "bf16", "fp16", "bf16_overlap"])
def test_average_gradients_variants_agree_across_ranks_and_keep_inputs(world, variant):
    """overlap and half-precision wires: every rank gets the same bits, the caller's gradients
    are left alone, and every leaf keeps its dtype (a float32 leaf sent as bf16 comes back
    float32)."""
    want = {key: dtype for key, _, dtype in tree_leaves()}
    for rank, res in world.results.items():
        v = res["tree_variants"][variant]
        assert v["inputs_unchanged"], f"rank {rank}: average_gradients({variant}) changed its input"
        assert {k: d for k, (_, d) in v["leaves"].items()} == want, rank
    for key in want:
        digests = {r: res["tree_variants"][variant]["leaves"][key][0] for r, res in world.results.items()}
        assert len(set(digests.values())) == 1, f"{variant}: ranks disagree on leaf {key}"


@pytest.mark.parametrize("variant", ["overlap", "bf16", "fp16", "bf16_overlap"])
def test_average_gradients_variants_are_the_mean(world, variant):
    """Within the roundings of the wire dtype: n-1 float32-accumulated additions, each rounded
    once to bf16/fp16 (and the inputs rounded to it), then a float32 mean."""
    trees = [make_tree(7, r) for r in range(world.size)]
    wire = {"bf16": "bfloat16", "fp16": "float16", "bf16_overlap": "bfloat16"}.get(variant)
    for key, shape, dtype in tree_leaves():
        got = np.load(world.out_dir / f"tree-{variant}.{key}.npy", allow_pickle=False)
        assert got.shape == shape, key
        inputs = [_leaf(t, key) for t in trees]
        if dtype == "int32":
            total = np.sum([a.astype(np.int64) for a in inputs], axis=0)
            np.testing.assert_array_equal(got, np.floor_divide(total, world.size), err_msg=key)
        elif dtype == "float32" and wire is not None:
            ref = np.sum([a.astype(np.float64) for a in inputs], axis=0) / world.size
            mag = np.sum([np.abs(a.astype(np.float64)) for a in inputs], axis=0) / world.size
            tol = EPS[wire] * (world.size + 1) * mag + 1e-6
            bad = ~(np.abs(got.astype(np.float64) - ref) <= tol)
            assert not bad.any(), f"{variant} leaf {key}: {int(bad.sum())} elements off"
        else:
            _check_close(got, inputs, dtype, divide=world.size, what=f"{variant} leaf {key}")
            if world.size == 2 and variant == "overlap":  # one addition: order cannot matter
                np.testing.assert_array_equal(got, _pair_sum_bits(inputs, dtype, divide=2), err_msg=key)


def test_all_sum_async_gives_what_all_sum_gives(world):
    for rank, res in world.results.items():
        v = res["tree_variants"]
        assert v["async"] == v["sync"], f"rank {rank}: all_sum_async differs from all_sum"
    assert len({tuple(res["tree_variants"]["async"]) for res in world.results.values()}) == 1


# -- barrier and metrics ----------------------------------------------------------------------
def test_barrier_holds_every_rank_until_the_last_arrives(world):
    b = {r: res["barrier"] for r, res in world.results.items()}
    last_arrival = max(x["arrived"] for x in b.values())
    first_exit = min(x["left"] for x in b.values())
    # rank k arrives 0.15*k s late, so a barrier that did not wait would let rank 0 out first
    assert first_exit >= last_arrival, b


STEP_FIELDS = {
    "kind",
    "rank",
    "wall",
    "step",
    "loss",
    "samples",
    "steps_per_s",
    "samples_per_s",
    "allreduce_s",
    "allreduce_gbps",
    "bytes_sent",
    "bytes_recv",
    "mem_mb",
}


def _payload_bytes_before_first_report(size: int) -> int:
    total = 0
    for case in CASES:
        nbytes = int(np.prod(case["shape"], dtype=np.int64)) * ITEMSIZE[case["dtype"]]
        total += nbytes * (2 if case["repeat"] else 1)
    total += sum(int(np.prod(s, dtype=np.int64)) * ITEMSIZE[d] for _, s, d in tree_leaves())
    return total + 4  # the barrier's int32


def test_report_writes_metrics_lines(world):
    n = world.size
    per_rank = {}
    for rank in range(n):
        path = world.run_dirs[rank] / "metrics.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [x["kind"] for x in lines] == ["start", "step", "step", "end"], lines
        start, first, second, end = lines
        assert start["rank"] == rank and start["size"] == n and start["job"] == "netio-test"
        assert start["node"] == f"node{rank}"
        assert start["directions"] == world.ways  # the path the fixture's cases really took
        assert start["transport"] == world.transport
        for rec in (first, second):
            assert STEP_FIELDS <= rec.keys(), STEP_FIELDS - rec.keys()
            assert rec["rank"] == rank and rec["samples"] == 32
            assert rec["steps_per_s"] > 0 and rec["allreduce_s"] > 0
            assert rec["allreduce_gbps"] > 0 and rec["mem_mb"] > 0
            assert rec["samples_per_s"] == pytest.approx(32 * rec["steps_per_s"])
        assert (first["step"], first["loss"], second["step"], second["loss"]) == (1, 0.5, 3, 0.25)
        assert second["lr"] == 0.01  # extra fields pass through
        assert second["bytes_sent"] > first["bytes_sent"]
        # what report() returned is what it wrote
        returned = world.results[rank]["report"]
        assert returned["first"] == first and returned["second"] == second
        per_rank[rank] = (first, second)
    # Each element of an allreduce is sent 2(n-1) times in a ring, whatever the chunking and
    # direction split, so the ranks' payload counters must add up exactly.
    b1 = _payload_bytes_before_first_report(n)
    for key in ("bytes_sent", "bytes_recv"):
        assert sum(f[key] for f, _ in per_rank.values()) == 2 * (n - 1) * b1, key
        assert sum(s[key] - f[key] for f, s in per_rank.values()) == 2 * (n - 1) * 4040, key
    # After the second report, the tree variants (half-precision wires send float32 leaves as
    # 2 bytes) and three all_sum_async + all_sum pairs; close() counts them all.
    after = 0
    for variant in ("overlap", "bf16", "fp16", "bf16_overlap"):
        for _, shape, dtype in tree_leaves():
            item = 2 if dtype == "float32" and variant != "overlap" else ITEMSIZE[dtype]
            after += int(np.prod(shape, dtype=np.int64)) * item
    after += 2 * sum(5000 + i for i in range(3)) * 4
    for key in ("bytes_sent", "bytes_recv"):
        ends = [
            json.loads(p.read_text().splitlines()[-1])[key]
            for p in (world.run_dirs[r] / "metrics.jsonl" for r in range(n))
        ]
        assert sum(ends) - sum(s[key] for _, s in per_rank.values()) == 2 * (n - 1) * after, key


def test_run_alone_is_a_one_rank_group(tmp_path, monkeypatch):
    """Without the launcher's environment, init() gives a 1-rank group: collectives return
    (a copy of) their input, and nothing listens or connects."""
    import mlx.core as mx

    from boltring.netio import init

    for key in [k for k in os.environ if k.startswith("BOLTRING_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    with init({"BOLTRING_RUN_DIR": str(tmp_path)}) as group:
        assert (group.rank, group.size) == (0, 1)
        x = mx.arange(5, dtype=mx.float16)
        y = group.all_sum(x)
        assert y.dtype == mx.float16 and y.tolist() == x.tolist()
        n = np.arange(4, dtype=np.int32)
        assert group.all_sum(n).tolist() == [0, 1, 2, 3]
        grads = {"a": [mx.ones((2, 2))], "b": mx.zeros((3,), dtype=mx.int32)}
        assert group.average_gradients(grads) is grads
        group.barrier()
        rec = group.report(step=1, loss=1.0)
        assert rec["bytes_sent"] == 0 and rec["allreduce_gbps"] is None
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["start", "step", "end"]
