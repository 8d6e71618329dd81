"""all_sum_async returns at once for a lazy mx.array (its evaluation waits on the communication
thread), and MLX's backend keeps float64 as float64."""

from __future__ import annotations

import threading
import time
from typing import cast

import numpy as np

from boltring.netio.group import Group
from boltring.netio.jobenv import JobEnv
from boltring.netio.mlx_group import MlxGroup

from .ranks import free_ports, write_secret


def _groups_in_threads(tmp_path, n: int, body) -> list[object]:
    ring = tuple(f"127.0.0.1:{p}" for p in free_ports(n))
    secret = write_secret(tmp_path / "job.secret")
    out: list[object] = [None] * n
    groups: list[Group | None] = [None] * n

    def go(r: int) -> None:
        try:
            run_dir = tmp_path / f"rank{r}"
            run_dir.mkdir()
            job = JobEnv(
                rank=r,
                size=n,
                job_id="async",
                ring=ring,
                secret_file=str(secret),
                run_dir=str(run_dir),
                timeout_s=20,
                connect_timeout_s=10,
                same_host="tcp",
            )
            groups[r] = Group(job, log=lambda m: None)
            out[r] = body(groups[r])
        except BaseException as e:
            out[r] = e

    threads = [threading.Thread(target=go, args=(r,), daemon=True) for r in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a rank hung"
    finally:
        for g in groups:
            if g is not None:
                g.close()
    return out


def _lazy(mx, a):
    y = a
    for _ in range(10):
        y = (y @ a) / 30.0
    return y


def test_all_sum_async_of_a_lazy_array_returns_before_it_is_evaluated(tmp_path):
    # One rank alone: two ranks in one process share MLX's scheduler, and one rank's queued
    # work can hold the other's mx.async_eval for a while (never so with a rank per process).
    import mlx.core as mx

    g = Group(JobEnv(run_dir=str(tmp_path)), log=lambda m: None)
    try:
        a = mx.random.normal((700, 700), key=mx.random.key(0))
        mx.eval(a)
        reference = _lazy(mx, a)
        t0 = time.perf_counter()
        mx.eval(reference)  # what the lazy graph costs to evaluate
        t_eval = time.perf_counter() - t0
        t0 = time.perf_counter()
        handle = g.all_sum_async(_lazy(mx, a))
        t_call = time.perf_counter() - t0
        summed = handle.wait()
    finally:
        g.close()
    assert t_call < t_eval / 4, (
        f"all_sum_async took {t_call:.3f} s; evaluating its input takes {t_eval:.3f} s"
    )
    assert np.array(summed).tobytes() == np.array(reference).tobytes()


def test_all_sum_async_of_lazy_arrays_gives_every_rank_the_same_sum(tmp_path):
    import mlx.core as mx

    def body(g: Group):
        a = mx.random.normal((300, 300), key=mx.random.key(g.rank))
        mx.eval(a)
        reference = _lazy(mx, a)
        mx.eval(reference)
        handles = [g.all_sum_async(_lazy(mx, a)), g.all_sum_async(_lazy(mx, a).T)]
        return np.array(reference), [np.array(h.wait()) for h in handles]

    out = _groups_in_threads(tmp_path, 2, body)
    for r in range(2):
        assert not isinstance(out[r], BaseException), out[r]
    (ref0, sums0), (ref1, sums1) = cast(list[tuple[np.ndarray, list[np.ndarray]]], out)
    for s0, s1 in zip(sums0, sums1, strict=True):
        assert s0.tobytes() == s1.tobytes()  # the same bits on every rank
    np.testing.assert_allclose(sums0[0], ref0 + ref1, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(sums0[1], (ref0 + ref1).T, rtol=1e-4, atol=1e-3)


def test_mlx_backend_sums_float64_as_float64(tmp_path):
    g = MlxGroup(JobEnv(backend="mlx-ring", run_dir=str(tmp_path)), log=lambda m: None)
    try:
        x = np.array([1.0 + 1e-12, 2.0**40 + 0.5], np.float64)
        y = g.all_sum(x)
        assert y.dtype == np.float64 and y.tolist() == x.tolist()
    finally:
        g.close()
