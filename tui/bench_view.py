"""`boltring bench` on the command line: runs each cell, then prints the table, or one JSON line
per backend and cell and one per ratio with --json.

The cells are measured in cluster/jobs: on local ranks (bench.py), or with --cluster as short
jobs on the config's nodes over their ring addresses (bench_cluster.py).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import sys

from rich.table import Table

from boltring.cluster.config.schema import Config
from boltring.cluster.jobs.bench import (
    ITEMSIZE,
    BenchError,
    BenchRefused,
    BenchResult,
    fits_local_memory,
    human_size,
    parse_ranks,
    parse_sizes,
    run_backend,
)
from boltring.cluster.jobs.bench_cluster import check_nodes, run_cell, slowest_link
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.states import CheckStatus

from .console import cli_console

LOCAL_ONLY = ("ranks", "directions", "same_host")  # options that --cluster takes from the config


Cell = tuple[int, int, str]  # ranks, bytes, backend


def run_bench_cli(args, config: Config | None = None) -> int:
    """`config`: with --cluster, the cluster whose nodes and ring run every cell."""
    console = cli_console(stderr=args.json)
    wire = getattr(args, "wire_dtype", "") or ""
    try:
        sizes = parse_sizes(args.sizes, ITEMSIZE[args.dtype])
        # On nodes, MLX's ring accepts anyone on the ring network (no job secret, no timeout
        # inside a collective): it runs there only when asked for by name.
        backend = args.backend or ("boltring" if config is not None else "both")
        backends = ["boltring", "mlx"] if backend == "both" else [backend]
        if config is not None and "mlx" in backends:
            console.print(
                "note: MLX's ring has no authentication: while its cells run, any host on the ring "
                "network can connect to the nodes' ring ports"
            )
        _refuse_unused(args, backends, wire, config is not None)
        counts = _cluster_ranks(args, config) if config is not None else parse_ranks(args.ranks or "2")
        if config is None:
            fits_local_memory(max(counts), max(sizes))
        # Both backends back to back for each size, in alternating order (ABBA): a ratio then
        # compares two measurements seconds apart, whichever way the machine drifts (a shared
        # VM's neighbours, a laptop warming up).
        cells = [
            (n, size, b)
            for n in counts
            for i, size in enumerate(sizes)
            for b in (backends if i % 2 == 0 else backends[::-1])
        ]

        def announce(cell: Cell) -> None:
            n, size, b = cell
            console.print(f"running {b}, {_where(n, config)}, {human_size(size)}, {args.repeat} repeats …")

        link: tuple[str, float] | None = None
        if config is None:
            results = _local_cells(args, cells, wire, announce)
        else:
            done = asyncio.run(_cluster_cells(args, config, cells, wire, announce, console))
            # the checks may have put the nodes in the order the cables dictate (ring.order)
            results, link, config = done if done is not None else (None, None, config)
    except BenchError as e:  # errors go to stderr: `bench > out.txt` must still show them
        print(f"boltring bench: {e}", file=sys.stderr)
        return 2 if isinstance(e, BenchRefused) else 1
    if results is None:
        print("boltring bench: interrupted; every rank it started was stopped", file=sys.stderr)
        return 130
    first = next(iter(results.values()))
    machine = first.machine
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for n in counts:
        for size in sizes:
            row = {b: results[n, size, b] for b in backends}
            ratio = (row["boltring"].busbw / row["mlx"].busbw) if len(row) == 2 else None
            rows.append((n, size, row, ratio))
    if args.json:
        for n, size, row, ratio in rows:
            for r in row.values():
                print(json.dumps({**r.to_dict(), **_of_link(r, link), "machine": r.machine, "date": stamp}))
            if ratio is not None:
                line = {"ranks": n, "bytes": size, "ratio_boltring_over_mlx": ratio, "machine": machine}
                print(json.dumps({**line, "date": stamp}))
        return 0
    on = f" on {config.source}" if config is not None else ""
    what = f"average_gradients{on}, {args.dtype} sent as {wire}" if wire else f"allreduce{on}, {args.dtype}"
    table = Table(
        title=f"{what}, median of {args.repeat}",
        title_justify="left",
    )
    cols = ["ranks", "size", "backend", "median ms", "algbw GB/s", "busbw GB/s", "extra MB", "boltring/mlx"]
    if link is not None:
        cols.insert(6, "of link")
    for col in cols:
        table.add_column(col, justify="right")
    for n, size, row, ratio in rows:
        for j, (b, r) in enumerate(row.items()):
            cells_ = [
                str(n) if j == 0 else "",
                human_size(size) if j == 0 else "",
                f"{b} ({r.transport})" if r.transport else b,
                f"{r.median_s * 1e3:.2f}",
                f"{r.algbw:.2f}",
                f"{r.busbw:.2f}",
                "" if r.extra_mem_bytes is None else f"{r.extra_mem_bytes / (1 << 20):.0f}",
                f"{ratio:.2f}×" if ratio is not None and j == len(row) - 1 else "",
            ]
            if link is not None:
                cells_.insert(6, f"{_of_link(r, link)['busbw_of_link']:.0%}")
            table.add_row(*cells_)
    console.print(table)
    if link is not None:
        console.print(
            f"of link: busbw against the slowest ring link, {link[0]} at {link[1]:.2f} Gbit/s of plain "
            "TCP, measured by the checks with every link sending at once, as the ring does"
        )
    console.print(f"{'rank 0 on ' + config.nodes[0].name if config else 'machine'}: {machine}; {stamp}")
    console.print(
        "extra MB: peak RSS during the timed calls minus the RSS before the first one (input "
        "allocated), on rank 0"
    )
    return 0


def _local_cells(args, cells: list[Cell], wire: str, announce) -> dict[Cell, BenchResult] | None:
    """Each cell on local ranks; None when interrupted (Ctrl-C or SIGTERM: run_backend kills the
    ranks it started, which live in their own sessions and would otherwise outlive us)."""
    results: dict[Cell, BenchResult] = {}
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for cell in cells:
            announce(cell)
            n, size, backend = cell
            results[cell] = run_backend(
                backend,
                n,
                [size],
                args.repeat,
                args.dtype,
                wire_dtype=wire,
                directions=args.directions or "auto",
                same_host=args.same_host or "unix",
            )[0]
    except KeyboardInterrupt:
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return results


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _refuse_unused(args, backends: list[str], wire: str, cluster: bool) -> None:
    """An option that would change nothing is refused: taken silently, it looks in effect."""
    if wire and backends != ["boltring"]:
        raise BenchRefused("--wire-dtype measures boltring's average_gradients: use --backend boltring")
    if wire and args.dtype != "float32":
        raise BenchRefused(
            f"--wire-dtype sends float32 gradients as {wire}: drop --dtype {args.dtype}, or drop --wire-dtype"
        )
    ours = [
        f"--{k.replace('_', '-')}" for k in ("directions", "same_host") if getattr(args, k, None) is not None
    ]
    if ours and "boltring" not in backends:
        raise BenchRefused(f"{', '.join(ours)}: set boltring's ring, and --backend mlx runs MLX's alone")
    if getattr(args, "skip_checks", False) and not cluster:
        raise BenchRefused("--skip-checks skips the checks of --cluster; local ranks have none")


def _cluster_ranks(args, config: Config) -> list[int]:
    given = [f"--{k.replace('_', '-')}" for k in LOCAL_ONLY if getattr(args, k, None) is not None]
    if given:
        raise BenchRefused(
            f"{', '.join(given)}: with --cluster the ranks come from the config's nodes, and "
            "ring.directions and ring.same_host from its ring section; drop them, or drop --cluster"
        )
    if config.world_size < 2:
        raise BenchRefused(
            f"{config.source} has {config.world_size} rank: an allreduce needs at least 2 "
            "(more nodes, or ranks: 2 on a node)"
        )
    return [config.world_size]


async def _cluster_cells(
    args, config: Config, cells: list[Cell], wire: str, announce, console
) -> tuple[dict[Cell, BenchResult], tuple[str, float] | None, Config] | None:
    """The checks `--run` makes (bandwidth included), then each cell as a job on the config's
    nodes: the results, the slowest link and the config the cells ran (its nodes in the order
    the checks found the cables in, with ring.order: cabling); None when interrupted. Ctrl-C
    or SIGTERM cancels the step under way; a cell's job then stops every rank (run_cell)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped: list[int] = []

    def stop(sig: int) -> None:
        stopped.append(sig)
        task.cancel()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop, sig)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    results: dict[Cell, BenchResult] = {}
    link = None
    try:
        if not args.skip_checks:
            console.print(f"running the checks on {', '.join(n.name for n in config.nodes)} …")
            config, checks = await check_nodes(config)
            _checked(checks, args.skip_checks, console)
            link = slowest_link(checks)
        for cell in cells:
            announce(cell)
            _, size, backend = cell
            results[cell] = await run_cell(config, backend, size, args.repeat, args.dtype, wire)
    except asyncio.CancelledError:
        if not stopped:
            raise
        return None
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return results, link, config


def _of_link(r: BenchResult, link: tuple[str, float] | None) -> dict:
    if link is None:
        return {}
    # Gbit/s, as links are rated (busbw_gbps and algbw_gbps are GB/s, as MLX and nccl-tests print)
    return {"link": link[0], "link_gbit_s": link[1], "busbw_of_link": r.busbw * 8 / link[1]}


def _checked(results: list[CheckResult], skip: bool, console) -> None:
    """Each check that is not ok, one line; failures stop the bench unless --skip-checks."""
    for r in results:
        if r.status in (CheckStatus.FAIL, CheckStatus.WARN):
            hint = f" — {r.hint}" if r.hint else ""
            console.print(f"{r.status} {r.node} {r.name}: {r.value or ''}{hint}", markup=False)
    failed = [r for r in results if r.status == CheckStatus.FAIL]
    if failed and not skip:
        raise BenchRefused(
            f"{len(failed)} check(s) failed; not benchmarking (fix them, or pass --skip-checks): "
            + "; ".join(f"{r.node} {r.name}" for r in failed[:5])
        )


def _where(n: int, config: Config | None) -> str:
    if config is None:
        return f"{n} local ranks"
    return f"{n} ranks on {', '.join(node.name for node in config.nodes)}"
